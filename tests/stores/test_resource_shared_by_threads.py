"""One DynamoDB resource serves every thread of a process (``shared.wiring.dynamodb_resource``): the bulk worker's
records and ids, the lifecycle's writers, and in the local stack two invocations of one function.

boto3 says clients are thread-safe and resources are not. The part that bites is the condition builder. A resource
turns ``Key(...)`` / ``Attr(...)`` conditions into text with one ``ConditionExpressionBuilder``, which every request
resets, so two threads building conditions at once get each other's placeholders. DynamoDB then refuses the query
("Query condition missed key schema element"). This happened in ``make test``: two overlapping reconciliations, in
``has_open_item``. Or the query runs with a value from the other thread. So the stores write every key condition as
a string with its own names and values (``shared.stores.dynamo.key_condition``).

The threads switch every microsecond here, as a busy process may: the race shows in a fraction of a second.
"""

from __future__ import annotations

import ast
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from devstack.template import ROOT
from shared.jobs import Job
from shared.stores.jobs import DynamoJobStore

THREADS = 4
CALLS = 60  # per thread, for the stores; the control stops at its first collision (at most 1,000 calls a thread)


@pytest.fixture
def busy_switching() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def hammer(call: Callable[[int], None], *, calls: int = CALLS, until_first: bool = False) -> list[str]:
    """``call(thread_number)`` ``calls`` times in each of THREADS threads at once; what went wrong."""
    problems: list[str] = []
    start = threading.Barrier(THREADS)

    def run(n: int) -> None:
        start.wait()
        for _ in range(calls):
            if until_first and problems:
                return
            try:
                call(n)
            except Exception as exc:
                problems.append(f"thread {n}: {exc!r}"[:200])

    threads = [threading.Thread(target=run, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return problems


def test_boto3s_own_conditions_collide_across_threads_of_one_resource(
    tables: dict[str, str], busy_switching: None
) -> None:
    """The control: with boto3's Key() conditions on one shared resource, the same load goes wrong."""
    from boto3.dynamodb.conditions import Key

    table = boto3.resource("dynamodb").Table(tables["JOBS_TABLE"])
    problems = hammer(
        lambda n: table.query(KeyConditionExpression=Key("job_id").eq(f"job-{n}") & Key("item_key").gt("#")),
        calls=1000,
        until_first=True,
    )
    # Mostly DynamoDB's ValidationException; a request can also fail inside boto3 while another thread resets it.
    assert problems, "no collision in this run: the control did not exercise the race"


def test_the_stores_queries_are_right_from_many_threads_on_one_resource(
    tables: dict[str, str], busy_switching: None
) -> None:
    """Each thread reads its own job through the stores that share one resource: no refusal, no other job's data."""
    jobs = DynamoJobStore(boto3.resource("dynamodb").Table(tables["JOBS_TABLE"]))
    sale_ids = {n: [f"2000{n:04d}{k:04d}" for k in range(3)] for n in range(THREADS)}
    for n, ids in sale_ids.items():
        jobs.create(Job(job_id=f"job-{n}", connection_id=f"conn-{n}", accepted=len(ids)), ids)
    long_ago = datetime.now(UTC) - timedelta(days=1)

    def read_own(n: int) -> None:
        page = jobs.items(f"job-{n}")
        assert [item.sale_id for item in page.items] == sale_ids[n], f"job-{n} got {page.items}"
        assert jobs.has_open_item(f"conn-{n}", sale_ids[n][0], updated_after=long_ago)
        assert not jobs.has_open_item(f"conn-{n}", sale_ids[(n + 1) % THREADS][0], updated_after=long_ago)

    assert hammer(read_own) == []


def conditions_imported(path: Any) -> bool:
    tree = ast.parse(path.read_text())
    return any(
        (isinstance(node, ast.ImportFrom) and node.module == "boto3.dynamodb.conditions")
        or (isinstance(node, ast.Import) and any(a.name == "boto3.dynamodb.conditions" for a in node.names))
        for node in ast.walk(tree)
    )


def test_no_product_code_builds_boto3_conditions() -> None:
    product = [*(ROOT / "src" / "shared").rglob("*.py"), *(ROOT / "src" / "functions").rglob("*.py")]
    assert [str(p.relative_to(ROOT)) for p in product if conditions_imported(p)] == []
