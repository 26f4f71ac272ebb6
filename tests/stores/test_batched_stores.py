"""The batched store paths the bulk worker uses, against moto tables created from template.yaml: reading many rows
in one BatchGetItem, storing a record with one conditional put when no row exists, settling many job items per
transaction, and the per-message memo of product links.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.jobs import Job, Settlement
from shared.models import (
    ErrorEvent,
    ErrorType,
    ExecutionRef,
    Outcome,
    ProductLink,
    Reason,
    ReflectedSale,
    SaleLine,
    Trigger,
)
from shared.stores.base import ListingKey
from shared.stores.dynamodb import DynamoErrorStore, DynamoJobStore, DynamoProductStore, DynamoSaleStore
from shared.stores.memo import ProductLinkMemo
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


def test_sale_get_many_returns_the_present_rows_as_get_does(tables: dict[str, str]) -> None:
    """Mixed present and absent ids, with duplicates: one entry per present id, each equal to ``get``'s answer."""
    table = _table(tables, "SALES_TABLE")
    sales = DynamoSaleStore(table)
    sales.reflect(_record(_sale_id(1)))
    sales.set_outcome(C, _sale_id(2), Outcome.NOT_REFLECTABLE, reason=Reason.PRODUCT_NOT_FOUND, detail="no link")
    sales.set_execution(C, _sale_id(3), ExecutionRef(execution_arn="arn:aws:states:x:exec-3", name="exec-3"))
    sales.reflect(ReflectedSale(connection_id="other", sale_id=_sale_id(4)))  # same sale id, another connection
    calls = _count_batch_gets(table)
    wanted = [_sale_id(1), _sale_id(2), _sale_id(9), _sale_id(1), _sale_id(3), _sale_id(4), _sale_id(2)]
    got = sales.get_many(C, wanted)
    assert set(got) == {_sale_id(1), _sale_id(2), _sale_id(3)}
    for sale_id, state in got.items():
        assert state == sales.get(C, sale_id)
    assert got[_sale_id(1)].record == _record(_sale_id(1))
    assert got[_sale_id(2)].reason is Reason.PRODUCT_NOT_FOUND
    assert got[_sale_id(3)].latest_execution is not None
    assert calls == [5]  # the 5 distinct ids, asked once each, in one call


def test_sale_get_many_of_more_than_100_ids_takes_two_calls(tables: dict[str, str]) -> None:
    """BatchGetItem takes 100 keys at most: 130 distinct ids (plus duplicates) are asked in two calls, 100 + 30."""
    table = _table(tables, "SALES_TABLE")
    sales = DynamoSaleStore(table)
    present = [_sale_id(n) for n in range(0, 130, 3)]
    for sale_id in present:
        sales.reflect(_record(sale_id, total_amount=float(int(sale_id[-3:]))))
    calls = _count_batch_gets(table)
    wanted = [_sale_id(n) for n in range(130)] + [_sale_id(n) for n in range(0, 130, 10)]
    got = sales.get_many(C, wanted)
    assert calls == [100, 30]
    assert sorted(got) == present
    for sale_id in present:
        assert got[sale_id] == sales.get(C, sale_id)
        record = got[sale_id].record
        assert record is not None and record.total_amount == float(int(sale_id[-3:]))


def test_sale_get_many_of_no_ids_asks_nothing(tables: dict[str, str]) -> None:
    table = _table(tables, "SALES_TABLE")
    calls = _count_batch_gets(table)
    assert DynamoSaleStore(table).get_many(C, []) == {}
    assert calls == []


def test_error_get_many_returns_the_present_entries_as_get_does(tables: dict[str, str]) -> None:
    """The error list's get_many: mixed ids, duplicates, more than 100 ids; the entries equal ``get``'s."""
    table = _table(tables, "SALE_ERRORS_TABLE")
    errors = DynamoErrorStore(table)
    present = [_sale_id(n) for n in range(0, 120, 7)]
    for n, sale_id in enumerate(present):
        kind = ErrorType.MARKETPLACE_TIMEOUT if n % 2 == 0 else ErrorType.PRODUCT_NOT_SYNCED
        errors.record_failure(C, sale_id, ErrorEvent(error_type=kind, message=f"m{n}"), retryable=kind.retryable)
    errors.record_failure(
        C, present[0], ErrorEvent(error_type=ErrorType.MARKETPLACE_TIMEOUT, message="again"), retryable=True
    )
    errors.record_failure(
        "other", _sale_id(1), ErrorEvent(error_type="marketplace_timeout", message="o"), retryable=True
    )
    calls = _count_batch_gets(table)
    wanted = [_sale_id(n) for n in range(120)] + present  # 120 distinct, 17 of them asked twice
    got = errors.get_many(C, wanted)
    assert calls == [100, 20]
    assert sorted(got) == present
    for sale_id in present:
        assert got[sale_id] == errors.get(C, sale_id)
    assert got[present[0]].attempts == 2
    assert [e.message for e in got[present[0]].history] == ["m0", "again"]
    assert got[present[1]].error_type == ErrorType.PRODUCT_NOT_SYNCED.value
    assert _sale_id(1) not in got  # only the other connection has it


# --- reflect(row_absent=True) -----------------------------------------------------------------------------------------


def _raw(table: Any, sale_id: str) -> dict[str, Any]:
    item: dict[str, Any] = table.get_item(Key={"connection_id": C, "sale_id": sale_id}, ConsistentRead=True)["Item"]
    return item


def test_reflect_on_an_absent_row_stores_the_same_row_as_the_update_path(tables: dict[str, str]) -> None:
    """The conditional put for an absent row writes what the default update would have: same attributes, same
    values (timestamps and the key aside)."""
    table = _table(tables, "SALES_TABLE")
    sales = DynamoSaleStore(table)
    put_id, update_id = _sale_id(1), _sale_id(2)
    assert sales.reflect(_record(put_id), attempts=3, row_absent=True) is True
    assert sales.reflect(_record(update_id), attempts=3) is True
    by_put, by_update = sales.get(C, put_id), sales.get(C, update_id)
    assert by_put is not None and by_update is not None
    assert by_put.outcome is Outcome.REFLECTED and by_put.attempts == 3
    assert by_put.record == _record(put_id)
    ignore = {"sale_id", "updated_at", "record"}
    assert by_put.model_dump(exclude=ignore) == by_update.model_dump(exclude=ignore)
    assert by_put.record is not None and by_update.record is not None
    assert by_put.record.model_dump(exclude={"sale_id"}) == by_update.record.model_dump(exclude={"sale_id"})
    raw_put, raw_update = _raw(table, put_id), _raw(table, update_id)
    assert set(raw_put) == set(raw_update)
    volatile = {"sale_id", "updated_at", "reflected_at", "record"}
    assert {k: v for k, v in raw_put.items() if k not in volatile} == {
        k: v for k, v in raw_update.items() if k not in volatile
    }
    assert raw_put["reflected_at"] == raw_put["updated_at"]


def test_reflect_with_row_absent_on_an_existing_row_keeps_its_other_attributes(tables: dict[str, str]) -> None:
    """The caller's "no row" was out of date (an execution started, an outcome was set): the record is still
    stored, the row keeps latest_execution, and the reasons of the earlier outcome are cleared."""
    sales = DynamoSaleStore(_table(tables, "SALES_TABLE"))
    sale_id = _sale_id(5)
    execution = ExecutionRef(execution_arn="arn:aws:states:us-east-1:1:execution:relink:e5", name="e5")
    sales.set_execution(C, sale_id, execution)
    sales.set_outcome(
        C, sale_id, Outcome.NOT_REFLECTABLE, reason=Reason.PRODUCT_NOT_SYNCED, detail="sync it", pack_id="P1"
    )
    assert sales.reflect(_record(sale_id), attempts=2, row_absent=True) is True
    state = sales.get(C, sale_id)
    assert state is not None
    assert state.outcome is Outcome.REFLECTED
    assert state.record == _record(sale_id)
    assert state.attempts == 2
    assert state.latest_execution is not None
    assert state.latest_execution.execution_arn == execution.execution_arn
    assert state.latest_execution.name == "e5"
    assert (state.reason, state.detail) == (None, None)
    assert state.pack_id == "P1"


def test_reflect_with_row_absent_after_set_execution_only(tables: dict[str, str]) -> None:
    """A row holding only a started execution (outcome pending) is reflected over, execution kept."""
    sales = DynamoSaleStore(_table(tables, "SALES_TABLE"))
    sale_id = _sale_id(6)
    sales.set_execution(C, sale_id, ExecutionRef(execution_arn="arn:e6", name="e6"))
    assert sales.reflect(_record(sale_id), row_absent=True) is True
    state = sales.get(C, sale_id)
    assert state is not None and state.outcome is Outcome.REFLECTED
    assert state.latest_execution is not None and state.latest_execution.execution_arn == "arn:e6"


def test_a_second_reflect_with_row_absent_changes_nothing(tables: dict[str, str]) -> None:
    """Once reflected, reflect (either path) answers False and the first record stays."""
    sales = DynamoSaleStore(_table(tables, "SALES_TABLE"))
    sale_id = _sale_id(7)
    assert sales.reflect(_record(sale_id, buyer_id=1), row_absent=True) is True
    assert sales.reflect(_record(sale_id, buyer_id=2), row_absent=True) is False
    assert sales.reflect(_record(sale_id, buyer_id=3)) is False
    state = sales.get(C, sale_id)
    assert state is not None and state.record is not None
    assert state.record.buyer_id == 1
    assert state.attempts == 1


def test_threads_racing_reflect_with_row_absent_store_the_sale_once(tables: dict[str, str]) -> None:
    """8 threads, each sure the row is absent: exactly one stores its record, and the stored record is the winner's."""
    table = _table(tables, "SALES_TABLE")
    sales = DynamoSaleStore(table)
    sale_id = _sale_id(8)
    wins: dict[int, bool] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def importer(n: int) -> None:
        barrier.wait()
        try:
            wins[n] = sales.reflect(_record(sale_id, buyer_id=n), row_absent=True)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=importer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(wins) == 8
    winners = [n for n, won in wins.items() if won]
    assert len(winners) == 1
    state = sales.get(C, sale_id)
    assert state is not None and state.record is not None and state.record.buyer_id == winners[0]
    assert len(table.scan()["Items"]) == 1


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
    for sale_id in handed:
        jobs.hand_over("job-3", sale_id, f"arn:exec:{sale_id}", attempts=1)
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
    Under heavy throttling every call either settles what it says or raises SettleFailed; the header's counts are
    always exactly the items that are terminal, and a later call finishes the rest."""
    import shared.stores.dynamodb as stores_module
    from devstack.faults import dynamodb_throttling

    monkeypatch.setattr(stores_module, "_back_off", lambda attempt: None)
    jobs = DynamoJobStore(_table(tables, "JOBS_TABLE"))
    ids = [_sale_id(n) for n in range(60)]
    job = _job(jobs, "throttled-job", ids)
    reported, failures = 0, 0
    with dynamodb_throttling(0.08, seed=11) as throttled:
        for start in range(0, 60, 10):
            try:
                reported += jobs.settle_many(job, [_settlement(s, n) for n, s in enumerate(ids[start : start + 10])])
            except stores_module.SettleFailed as exc:
                failures += 1
                assert exc.sale_ids
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


def test_a_single_settle_that_stays_throttled_raises_instead_of_answering_already_settled(
    tables: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Throttled on every try (the transaction, or an item inside it): an exception, never False ("already")."""
    from botocore.exceptions import ClientError

    import shared.stores.dynamodb as stores_module
    from devstack.faults import dynamodb_throttling

    monkeypatch.setattr(stores_module, "_back_off", lambda attempt: None)
    jobs = DynamoJobStore(_table(tables, "JOBS_TABLE"))
    _job(jobs, "stuck-job", [_sale_id(1)])
    with dynamodb_throttling(1.0, seed=1), pytest.raises((stores_module.SettleFailed, ClientError)):
        jobs.settle("stuck-job", _sale_id(1), Outcome.REFLECTED, handed_over=False)
    item = jobs.get_items("stuck-job", [_sale_id(1)])[_sale_id(1)]
    assert item.outcome is Outcome.PENDING
