"""One DynamoDB resource serves every thread of a process (``shared.wiring.dynamodb_resource``): the bulk worker's
records and ids, the lifecycle's writers, and in the local stack two invocations of one function.

boto3 says clients are thread-safe and resources are not. The part that bites is the condition builder. A resource
turns ``Key(...)`` / ``Attr(...)`` conditions into text with one ``ConditionExpressionBuilder``, which every request
resets, so two threads building conditions at once get each other's placeholders. DynamoDB then refuses the query
("Query condition missed key schema element"). This happened in ``make test``: two overlapping reconciliations, in
``has_open_item``. Or the query runs with a value from the other thread. So the stores write every key condition as
a string with its own names and values (``shared.stores.dynamo.key_condition``).

The control chooses the interleaving that collides (deterministic); the stores are offered the same interleaving,
then four threads switching every microsecond, as a busy process may.
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
CALLS = 60  # per thread


@pytest.fixture
def busy_switching() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def hammer(call: Callable[[int], None], *, calls: int = CALLS) -> list[str]:
    """``call(thread_number)`` ``calls`` times in each of THREADS threads at once; what went wrong."""
    problems: list[str] = []
    start = threading.Barrier(THREADS)

    def run(n: int) -> None:
        start.wait()
        for _ in range(calls):
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


class Interleaving:
    """Chooses the interleaving on the resource's one condition builder: thread "a" pauses between its first and
    second name placeholders; thread "b" starts a request, whose reset of the builder comes then, and waits while
    "a" finishes. Counts every placeholder the builder hands out, by anyone."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from boto3.dynamodb.conditions import ConditionExpressionBuilder

        self.placeholders = 0
        self.a_named, self.b_reset, self.a_done = threading.Event(), threading.Event(), threading.Event()
        self.me = threading.local()
        name, reset = ConditionExpressionBuilder._get_name_placeholder, ConditionExpressionBuilder.reset

        def name_placeholder(builder: Any) -> str:
            self.placeholders += 1
            # "a" has named its partition key (the builder counted it) and is about to name its sort key.
            if getattr(self.me, "name", None) == "a" and self.placeholders == 2 and not self.a_named.is_set():
                self.a_named.set()
                self.b_reset.wait(5)
            answer: str = name(builder)
            return answer

        def reset_builder(builder: Any) -> None:
            reset(builder)
            if getattr(self.me, "name", None) == "b" and not self.b_reset.is_set():
                self.b_reset.set()
                self.a_done.wait(5)

        monkeypatch.setattr(ConditionExpressionBuilder, "_get_name_placeholder", name_placeholder)
        monkeypatch.setattr(ConditionExpressionBuilder, "reset", reset_builder)

    def run(self, a: Callable[[], Any], b: Callable[[], Any]) -> dict[str, BaseException | None]:
        errors: dict[str, BaseException | None] = {"a": None, "b": None}

        def thread_a() -> None:
            self.me.name = "a"
            try:
                a()
            except Exception as exc:
                errors["a"] = exc
            finally:
                self.a_done.set()

        def thread_b() -> None:
            self.a_named.wait(2)  # never set when "a" builds no condition: then "b" goes anyway
            self.me.name = "b"
            try:
                b()
            except Exception as exc:
                errors["b"] = exc
            finally:
                self.b_reset.set()

        threads = [threading.Thread(target=thread_a), threading.Thread(target=thread_b)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        return errors


def test_boto3s_own_conditions_collide_across_threads_of_one_resource(
    tables: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: two threads querying with boto3's Key() conditions through one resource, in the interleaving
    above. The second request's reset makes the first reuse "#n0" for its sort key: DynamoDB refuses it."""
    from boto3.dynamodb.conditions import Key

    table = boto3.resource("dynamodb").Table(tables["JOBS_TABLE"])
    interleaving = Interleaving(monkeypatch)
    errors = interleaving.run(
        lambda: table.query(KeyConditionExpression=Key("job_id").eq("job-a") & Key("item_key").gt("#")),
        lambda: table.query(KeyConditionExpression=Key("job_id").eq("job-b") & Key("item_key").gt("#")),
    )
    assert "Query condition missed key schema element: job_id" in str(errors["a"]), errors
    assert errors["b"] is None


def test_the_stores_never_ask_the_shared_builder_for_placeholders(
    tables: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same interleaving offered to the stores: their conditions are strings, so the builder hands out nothing
    and neither query is disturbed."""
    jobs = DynamoJobStore(boto3.resource("dynamodb").Table(tables["JOBS_TABLE"]))
    sale_of = {"a": "2000000000000001", "b": "2000000000000002"}
    for name, sale_id in sale_of.items():
        jobs.create(Job(job_id=f"job-{name}", connection_id=f"conn-{name}", accepted=1), [sale_id])
    interleaving = Interleaving(monkeypatch)
    answers: dict[str, list[str]] = {}

    def items_of(name: str) -> None:
        answers[name] = [item.sale_id for item in jobs.items(f"job-{name}").items]

    errors = interleaving.run(lambda: items_of("a"), lambda: items_of("b"))
    assert errors == {"a": None, "b": None}
    assert answers == {name: [sale_id] for name, sale_id in sale_of.items()}
    assert interleaving.placeholders == 0


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
