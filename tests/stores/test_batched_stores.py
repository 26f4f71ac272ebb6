"""The batched store paths the bulk worker uses, against moto tables created from template.yaml: reading many sales
in one BatchGetItem per table, storing a record with one conditional put when nothing else moves, settling many job
items per transaction, and the per-message memo of product links.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.jobs import Job, Settlement
from shared.lifecycle import moves
from shared.lifecycle.table import Actor
from shared.models import (
    ErrorType,
    Outcome,
    ProductLink,
    Reason,
    ReflectedSale,
    SaleLine,
    Trigger,
)
from shared.stores.base import ListingKey, StateWriteFailed
from shared.stores.errors import DynamoErrorStore
from shared.stores.jobs import DynamoJobStore, hand_over_writes
from shared.stores.memo import ProductLinkMemo
from shared.stores.products import DynamoProductStore
from tests.stores.conftest import lifecycle_on, list_sale
from tests.stores.conftest import table as _table

C = "mla-main"
IMPORTED_AT = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _count_batch_gets(table: Any) -> list[int]:
    """Records the number of keys of every BatchGetItem call made through ``table``'s client."""
    calls: list[int] = []

    def count(params: dict[str, Any], **_: Any) -> None:
        calls.append(sum(len(request["Keys"]) for request in params["RequestItems"].values()))

    table.meta.client.meta.events.register("before-parameter-build.dynamodb.BatchGetItem", count)
    return calls


def _record(sale_id: str, **changes: Any) -> ReflectedSale:
    fields: dict[str, Any] = {
        "connection_id": C,
        "sale_id": sale_id,
        "seller_id": 7001,
        "status": "paid",
        "total_amount": 125.92,
        "currency_id": "ARS",
        "buyer_id": 42,
        "lines": [SaleLine(item_id="MLA1", variation_id=5, sku="A-5", quantity=2, unit_price=62.96)],
        "imported_at": IMPORTED_AT,
        "imported_by": Trigger.BULK,
    }
    return ReflectedSale(**{**fields, **changes})


def _sale_id(n: int) -> str:
    return f"2000{n:08d}"


# --- get_many ---------------------------------------------------------------------------------------------------------


def _reflected(lifecycle: Any, connection_id: str, sale_id: str, **record: Any) -> None:
    snap = lifecycle.read(connection_id, sale_id)
    change = moves.reflect(
        snap, Actor.PLATFORM, record=_record(sale_id, connection_id=connection_id, **record), attempts=1, settled_by="t"
    )
    assert lifecycle.apply(snap, change) is not None


def test_read_many_returns_what_read_does_in_one_call_per_table(tables: dict[str, str]) -> None:
    """Mixed present and absent ids, with duplicates: one snapshot per distinct id, each equal to ``read``'s, from
    one BatchGetItem on the sales table and one on the error list."""
    lifecycle = lifecycle_on(tables)
    _reflected(lifecycle, C, _sale_id(1))
    list_sale(lifecycle, C, _sale_id(2), ErrorType.PRODUCT_NOT_FOUND, "no link")
    list_sale(lifecycle, C, _sale_id(3), ErrorType.MARKETPLACE_TIMEOUT, "timeout")
    _reflected(lifecycle, "other", _sale_id(4))  # same sale id, another connection
    sales_calls = _count_batch_gets(lifecycle._store._sales)
    errors_calls = _count_batch_gets(lifecycle._store._errors)
    wanted = [_sale_id(1), _sale_id(2), _sale_id(9), _sale_id(1), _sale_id(3), _sale_id(4), _sale_id(2)]
    got = lifecycle.read_many(C, wanted)
    assert list(got) == [_sale_id(n) for n in (1, 2, 9, 3, 4)]
    for sale_id, snap in got.items():
        read = lifecycle.read(C, sale_id)
        assert snap.entry == read.entry
        assert snap.row.model_dump(exclude={"updated_at"}) == read.row.model_dump(exclude={"updated_at"})
        assert snap.row.version == 0 or snap.row.updated_at == read.row.updated_at  # a row never written has no time
    assert got[_sale_id(1)].reflected and got[_sale_id(1)].row.record == _record(_sale_id(1))
    assert got[_sale_id(2)].row.reason is Reason.PRODUCT_NOT_FOUND and got[_sale_id(2)].entry is not None
    assert got[_sale_id(3)].row.outcome is Outcome.PENDING
    assert got[_sale_id(9)].row.version == 0 and got[_sale_id(4)].row.version == 0  # never seen in this connection
    assert sales_calls == errors_calls == [5]  # the 5 distinct ids, asked once each: one call per table


def test_read_many_of_more_than_100_ids_takes_two_calls_per_table(tables: dict[str, str]) -> None:
    """BatchGetItem takes 100 keys at most: 130 distinct ids (plus duplicates) are asked in 100 + 30."""
    lifecycle = lifecycle_on(tables)
    present = [_sale_id(n) for n in range(0, 130, 3)]
    for sale_id in present:
        _reflected(lifecycle, C, sale_id, total_amount=float(int(sale_id[-3:])))
    calls = _count_batch_gets(lifecycle._store._sales)
    wanted = [_sale_id(n) for n in range(130)] + [_sale_id(n) for n in range(0, 130, 10)]
    got = lifecycle.read_many(C, wanted)
    assert calls == [100, 30]
    assert sorted(s for s, snap in got.items() if snap.reflected) == present
    for sale_id in present:
        record = got[sale_id].row.record
        assert record is not None and record.total_amount == float(int(sale_id[-3:]))


def test_read_many_of_no_ids_asks_nothing(tables: dict[str, str]) -> None:
    lifecycle = lifecycle_on(tables)
    calls = _count_batch_gets(lifecycle._store._sales)
    assert lifecycle.read_many(C, []) == {}
    assert calls == []


def test_reflecting_a_sale_never_seen_is_one_conditional_put(tables: dict[str, str]) -> None:
    """The bulk path's healthy sale: no row, no entry, no job waiting: one PutItem, no transaction."""
    lifecycle = lifecycle_on(tables)
    client = lifecycle._store._sales.meta.client
    operations: list[str] = []
    client.meta.events.register("before-call.dynamodb", lambda model, **_: operations.append(model.name))
    _reflected(lifecycle, C, _sale_id(7))
    assert operations == ["GetItem", "PutItem"]  # the row read and written (the entry is read on its own table)


def test_error_get_many_returns_the_present_entries_as_get_does(tables: dict[str, str]) -> None:
    """The error list's get_many: mixed ids, duplicates, more than 100 ids; the entries equal ``get``'s."""
    table = _table(tables, "SALE_ERRORS_TABLE")
    errors = DynamoErrorStore(table)
    lifecycle = lifecycle_on(tables)
    present = [_sale_id(n) for n in range(0, 120, 7)]
    for n, sale_id in enumerate(present):
        kind = ErrorType.MARKETPLACE_TIMEOUT if n % 2 == 0 else ErrorType.PRODUCT_NOT_SYNCED
        list_sale(lifecycle, C, sale_id, kind, f"m{n}")
    list_sale(lifecycle, "other", _sale_id(1), ErrorType.MARKETPLACE_TIMEOUT, "o")
    calls = _count_batch_gets(table)
    wanted = [_sale_id(n) for n in range(120)] + present  # 120 distinct, 17 of them asked twice
    got = errors.get_many(C, wanted)
    assert calls == [100, 20]
    assert sorted(got) == present
    for sale_id in present:
        assert got[sale_id] == errors.get(C, sale_id)
    assert [e.message for e in got[present[0]].history] == ["m0"]
    assert got[present[1]].error_type == ErrorType.PRODUCT_NOT_SYNCED.value
    assert _sale_id(1) not in got  # only the other connection has it


# --- settle_many ------------------------------------------------------------------------------------------------------

_MIX: list[tuple[Outcome, Reason | None, str | None]] = [
    (Outcome.REFLECTED, None, None),
    (Outcome.ALREADY_REFLECTED, None, "was there already"),
    (Outcome.NOT_REFLECTABLE, Reason.PRODUCT_NOT_FOUND, "link the listing"),
    (Outcome.ESCALATED, Reason.RETRIES_EXHAUSTED, "help desk paged"),
]


def _settlement(sale_id: str, n: int) -> Settlement:
    outcome, reason, detail = _MIX[n % len(_MIX)]
    return Settlement(sale_id=sale_id, outcome=outcome, reason=reason, attempts=n % 3 + 1, detail=detail)


def _job(jobs: DynamoJobStore, job_id: str, sale_ids: list[str]) -> Job:
    job = Job(job_id=job_id, connection_id=C, accepted=len(sale_ids))
    jobs.create(job, sale_ids)
    return job


def _zero_counts() -> dict[str, int]:
    return {o.value: 0 for o in Outcome if o.terminal}


def test_settle_many_settles_a_batch_and_counts_it_on_the_header(tables: dict[str, str]) -> None:
    """120 settlements in one call (two transactions): all settled, header counts per outcome add up, items carry
    outcome, reason, attempts and detail; the 30 others stay pending."""
    jobs = DynamoJobStore(_table(tables, "JOBS_TABLE"))
    ids = [_sale_id(n) for n in range(150)]
    job = _job(jobs, "job-1", ids)
    settlements = [_settlement(sale_id, n) for n, sale_id in enumerate(ids[:120])]
    assert jobs.settle_many(job, settlements) == 120
    header = jobs.get("job-1")
    assert header is not None
    assert header.settled == 120
    assert header.counts == {
        **_zero_counts(),
        "reflected": 30,
        "already_reflected": 30,
        "not_reflectable": 30,
        "escalated": 30,
    }
    assert sum(header.counts.values()) == header.settled
    assert header.handed_over == 0
    items = jobs.get_items("job-1", ids)
    assert len(items) == 150
    for settlement in settlements:
        item = items[settlement.sale_id]
        assert (item.outcome, item.reason, item.attempts, item.detail) == (
            settlement.outcome,
            settlement.reason,
            settlement.attempts,
            settlement.detail,
        )
    assert all(items[s].outcome is Outcome.PENDING and items[s].attempts == 0 for s in ids[120:])
    assert header.all_counts()["pending"] == 30
    # The settled items keep the job's TTL (a settled item replaced whole must not lose it, nor live for ever).
    table = _table(tables, "JOBS_TABLE")
    ttl = table.get_item(Key={"job_id": "job-1", "item_key": "#"})["Item"]["expires_at"]
    for sale_id in (ids[0], ids[119], ids[149]):
        assert table.get_item(Key={"job_id": "job-1", "item_key": sale_id})["Item"]["expires_at"] == ttl


def test_settle_many_again_settles_only_the_new_ids_and_never_counts_twice(tables: dict[str, str]) -> None:
    """A redelivered batch overlapping settled ids: only the still-pending ones are settled, settled ones keep their
    first outcome, and the header counts grow by the new ones only."""
    jobs = DynamoJobStore(_table(tables, "JOBS_TABLE"))
    ids = [_sale_id(n) for n in range(150)]
    job = _job(jobs, "job-2", ids)
    assert jobs.settle_many(job, [_settlement(s, n) for n, s in enumerate(ids[:120])]) == 120
    first = jobs.get("job-2")
    assert first is not None
    # ids 90..139: 30 already settled, 20 new; all as escalated, which would change the counts if applied twice.
    again = [
        Settlement(sale_id=s, outcome=Outcome.ESCALATED, reason=Reason.UNEXPECTED_ERROR, attempts=9)
        for s in ids[90:140]
    ]
    assert jobs.settle_many(job, again) == 20
    header = jobs.get("job-2")
    assert header is not None
    assert header.settled == 140
    assert header.counts == {**first.counts, "escalated": first.counts["escalated"] + 20}
    assert sum(header.counts.values()) == 140
    items = jobs.get_items("job-2", ids[90:140])
    for n, sale_id in enumerate(ids[90:120], start=90):
        assert items[sale_id].outcome is _settlement(sale_id, n).outcome  # the first outcome stays
        assert items[sale_id].attempts == _settlement(sale_id, n).attempts
    for sale_id in ids[120:140]:
        assert (items[sale_id].outcome, items[sale_id].reason, items[sale_id].attempts) == (
            Outcome.ESCALATED,
            Reason.UNEXPECTED_ERROR,
            9,
        )
    # The very same batch once more (a third delivery): nothing changes.
    assert jobs.settle_many(job, again) == 0
    assert jobs.get("job-2") == header


def test_settle_many_leaves_handed_over_items_alone(tables: dict[str, str]) -> None:
    """Items handed over to a state machine execution are not the worker's to settle: they stay in_progress, with
    their execution, and are not counted."""
    jobs = DynamoJobStore(_table(tables, "JOBS_TABLE"))
    ids = [_sale_id(n) for n in range(10)]
    job = _job(jobs, "job-3", ids)
    handed = ids[2:5]
    client = _table(tables, "JOBS_TABLE").meta.client
    for sale_id in handed:  # as the lifecycle hands them over, in its own transaction
        client.transact_write_items(
            TransactItems=hand_over_writes(
                jobs.table_name, "job-3", sale_id, attempts=1, episode=1, execution_arn=f"arn:exec:{sale_id}"
            )
        )
    settlements = [Settlement(sale_id=s, outcome=Outcome.REFLECTED, attempts=1) for s in ids]
    read_back = jobs.get("job-3")  # the worker settles with the header it read, not the one it created
    assert read_back is not None and read_back.created_at == job.created_at
    assert jobs.settle_many(read_back, settlements) == 7
    header = jobs.get("job-3")
    assert header is not None
    assert header.settled == 7
    assert header.counts["reflected"] == 7
    assert header.handed_over == 3
    assert header.all_counts()["in_progress"] == 3 and header.all_counts()["pending"] == 0
    items = jobs.get_items("job-3", ids)
    for sale_id in handed:
        assert items[sale_id].outcome is Outcome.IN_PROGRESS
        assert items[sale_id].execution_arn == f"arn:exec:{sale_id}"
    assert {s for s, item in items.items() if item.outcome is Outcome.REFLECTED} == set(ids) - set(handed)


def test_settle_many_counts_a_duplicate_inside_one_call_once(tables: dict[str, str]) -> None:
    """The same id twice in one call is settled and counted once."""
    jobs = DynamoJobStore(_table(tables, "JOBS_TABLE"))
    ids = [_sale_id(n) for n in range(5)]
    job = _job(jobs, "job-4", ids)
    same = Settlement(sale_id=ids[0], outcome=Outcome.REFLECTED, attempts=1)
    settlements = [
        same,
        Settlement(sale_id=ids[1], outcome=Outcome.NOT_REFLECTABLE, reason=Reason.SALE_CANCELLED, attempts=1),
        same,
        Settlement(sale_id=ids[2], outcome=Outcome.REFLECTED, attempts=2),
        Settlement(sale_id=ids[2], outcome=Outcome.ESCALATED, reason=Reason.RETRIES_EXHAUSTED, attempts=3),
    ]
    assert jobs.settle_many(job, settlements) == 3
    header = jobs.get("job-4")
    assert header is not None
    assert header.settled == 3
    assert sum(header.counts.values()) == 3
    items = jobs.get_items("job-4", ids)
    assert items[ids[0]].outcome is Outcome.REFLECTED
    # Whichever of the two settlements of ids[2] was kept, the header counts exactly that one.
    kept = items[ids[2]].outcome
    assert kept in (Outcome.REFLECTED, Outcome.ESCALATED)
    assert header.counts["reflected"] == 1 + (kept is Outcome.REFLECTED)
    assert header.counts["escalated"] == (kept is Outcome.ESCALATED)
    assert header.counts["not_reflectable"] == 1
    assert [items[s].outcome for s in ids[3:]] == [Outcome.PENDING, Outcome.PENDING]


def test_settle_many_of_nothing_settles_nothing(tables: dict[str, str]) -> None:
    jobs = DynamoJobStore(_table(tables, "JOBS_TABLE"))
    job = _job(jobs, "job-5", [_sale_id(1)])
    assert jobs.settle_many(job, []) == 0
    header = jobs.get("job-5")
    assert header is not None and header.settled == 0 and header.counts == _zero_counts()


# --- ProductLinkMemo --------------------------------------------------------------------------------------------------


class CountingProducts:
    """The real DynamoDB product store, recording every get_links call it serves."""

    def __init__(self, store: DynamoProductStore) -> None:
        self._store = store
        self.calls: list[tuple[str, list[ListingKey]]] = []
        self._lock = threading.Lock()

    def get_links(self, connection_id: str, keys: list[ListingKey]) -> dict[ListingKey, ProductLink]:
        with self._lock:
            self.calls.append((connection_id, list(keys)))
        return self._store.get_links(connection_id, keys)

    def put(self, link: ProductLink) -> None:
        self._store.put(link)


@pytest.fixture
def products(tables: dict[str, str]) -> CountingProducts:
    store = DynamoProductStore(_table(tables, "PRODUCT_LINKS_TABLE"))
    store.put(ProductLink(connection_id=C, item_id="MLA1", variation_id=5, sku="A-5"))
    store.put(ProductLink(connection_id=C, item_id="MLA2", sku="B"))
    return CountingProducts(store)


def test_the_memo_reads_a_listing_once_for_two_sales(products: CountingProducts) -> None:
    """Two sales of the same listing through one memo: one underlying read, the same link for both."""
    memo = ProductLinkMemo(products)
    first = memo.get_links(C, [("MLA1", 5), ("MLA2", None)])
    second = memo.get_links(C, [("MLA1", 5)])
    assert first[("MLA1", 5)].sku == "A-5" and first[("MLA2", None)].sku == "B"
    assert second == {("MLA1", 5): first[("MLA1", 5)]}
    assert products.calls == [(C, [("MLA1", 5), ("MLA2", None)])]
    # A third sale adding a new listing asks only for the new one.
    third = memo.get_links(C, [("MLA2", None), ("MLA2", 9)])
    assert third[("MLA2", 9)].sku == "B"  # the item-level link
    assert products.calls[1:] == [(C, [("MLA2", 9)])]


def test_the_memo_remembers_absent_links_too(products: CountingProducts) -> None:
    """A listing without a link is read once; later sales get "absent" from the memo."""
    memo = ProductLinkMemo(products)
    assert memo.get_links(C, [("MLA9", None), ("MLA1", 6)]) == {}
    assert memo.get_links(C, [("MLA9", None)]) == {}
    assert memo.get_links(C, [("MLA1", 6), ("MLA9", None)]) == {}
    assert len(products.calls) == 1


def test_the_memo_keeps_connections_apart(products: CountingProducts) -> None:
    """The same listing under another connection is another key: read separately, answered separately."""
    memo = ProductLinkMemo(products)
    assert memo.get_links(C, [("MLA2", None)])[("MLA2", None)].sku == "B"
    assert memo.get_links("mla-other", [("MLA2", None)]) == {}
    assert [connection for connection, _ in products.calls] == [C, "mla-other"]


def test_threads_of_one_message_share_one_read(products: CountingProducts) -> None:
    """8 threads asking for the same listing at once cause one underlying read."""
    memo = ProductLinkMemo(products)
    barrier = threading.Barrier(8)
    answers: list[dict[ListingKey, ProductLink]] = []

    def sale() -> None:
        barrier.wait()
        answers.append(memo.get_links(C, [("MLA1", 5)]))

    threads = [threading.Thread(target=sale) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(products.calls) == 1
    assert len(answers) == 8 and all(a[("MLA1", 5)].sku == "A-5" for a in answers)


def test_a_put_through_the_memo_forgets_that_items_entries(products: CountingProducts) -> None:
    """After the seller links a product through the memo, that item's listings are read again (and show the new
    link); other items stay memoised."""
    memo = ProductLinkMemo(products)
    assert memo.get_links(C, [("MLA3", 4), ("MLA3", None), ("MLA2", None)]).keys() == {("MLA2", None)}
    assert len(products.calls) == 1
    memo.put(ProductLink(connection_id=C, item_id="MLA3", sku="C"))  # an item-level link: every variation gains it
    after = memo.get_links(C, [("MLA3", 4), ("MLA3", None), ("MLA2", None)])
    assert after[("MLA3", 4)].sku == "C" and after[("MLA3", None)].sku == "C" and after[("MLA2", None)].sku == "B"
    assert len(products.calls) == 2
    assert sorted(products.calls[1][1], key=str) == [("MLA3", 4), ("MLA3", None)]  # MLA2 came from the memo


def test_a_put_through_the_memo_replaces_a_memoised_link(products: CountingProducts) -> None:
    """A link that changes (now unsynced) is seen changed by the next sale of the same message."""
    memo = ProductLinkMemo(products)
    assert memo.get_links(C, [("MLA1", 5)])[("MLA1", 5)].synced is True
    memo.put(ProductLink(connection_id=C, item_id="MLA1", variation_id=5, sku="A-5", synced=False))
    assert memo.get_links(C, [("MLA1", 5)])[("MLA1", 5)].synced is False
    assert len(products.calls) == 2


def test_throttled_transactions_never_report_an_unwritten_outcome(
    tables: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DynamoDB cancels a transaction whose item is throttled (reason ThrottlingError; botocore does not retry it).
    Under heavy throttling every call either settles what it says or raises StateWriteFailed; the header's counts are
    always exactly the items that are terminal, and a later call finishes the rest."""
    import shared.stores.jobs as jobs_module
    from devstack.faults import dynamodb_throttling

    monkeypatch.setattr(jobs_module, "back_off", lambda attempt: None)
    jobs = DynamoJobStore(_table(tables, "JOBS_TABLE"))
    ids = [_sale_id(n) for n in range(60)]
    job = _job(jobs, "throttled-job", ids)
    reported, failures = 0, 0
    with dynamodb_throttling(0.3, seed=3) as throttled:
        for start in range(0, 60, 10):
            try:
                reported += jobs.settle_many(job, [_settlement(s, n) for n, s in enumerate(ids[start : start + 10])])
            except StateWriteFailed:
                failures += 1
    assert throttled.injected > 0
    header = jobs.get("throttled-job")
    assert header is not None
    terminal = [i for i in jobs.get_items("throttled-job", ids).values() if i.outcome.terminal]
    assert header.settled == sum(header.counts.values()) == len(terminal) == reported
    # What failed comes back (as its SQS message would) and settles; nothing is counted twice.
    left = [s for s in ids if s not in {i.sale_id for i in terminal}]
    assert (failures > 0) == bool(left)
    jobs.settle_many(job, [_settlement(s, ids.index(s)) for s in left])
    header = jobs.get("throttled-job")
    assert header is not None and header.settled == sum(header.counts.values()) == 60
