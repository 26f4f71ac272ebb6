"""The DynamoDB adapters against moto tables created from template.yaml: the once-only guarantees."""

from __future__ import annotations

import threading

import boto3
import pytest

from shared.models import ErrorEvent, ErrorType, Outcome, ProductLink, Reason, ReflectedSale, Trigger
from shared.stores.dynamodb import (
    DynamoErrorStore,
    DynamoProductStore,
    DynamoSaleStore,
    InvalidCursor,
)
from tests.stores.conftest import table as _table


def test_reflecting_the_same_sale_twice_stores_it_once(tables: dict[str, str]) -> None:
    # Given a sale store
    sales = DynamoSaleStore(_table(tables, "SALES_TABLE"))
    record = ReflectedSale(connection_id="mla-main", sale_id="2000001", total_amount=125.92, imported_by=Trigger.API)
    # When two imports of the same sale happen one after the other
    first = sales.reflect(record)
    second = sales.reflect(record.model_copy(update={"imported_by": Trigger.BULK}))
    # Then only the first one stored it, and the stored copy is the first one
    assert (first, second) == (True, False)
    state = sales.get("mla-main", "2000001")
    assert state is not None and state.record is not None
    assert state.outcome is Outcome.REFLECTED
    assert state.record.imported_by is Trigger.API
    assert state.record.total_amount == 125.92


def test_concurrent_imports_from_threads_store_the_sale_once(tables: dict[str, str]) -> None:
    sales = DynamoSaleStore(_table(tables, "SALES_TABLE"))
    wins: list[bool] = []
    barrier = threading.Barrier(8)

    def importer(n: int) -> None:
        barrier.wait()
        record = ReflectedSale(connection_id="mla-main", sale_id="2000002", buyer_id=n)
        wins.append(sales.reflect(record))

    threads = [threading.Thread(target=importer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1
    items = boto3.resource("dynamodb").Table(tables["SALES_TABLE"]).scan()["Items"]
    assert len(items) == 1


def test_a_reflected_sale_is_never_downgraded(tables: dict[str, str]) -> None:
    sales = DynamoSaleStore(_table(tables, "SALES_TABLE"))
    sales.reflect(ReflectedSale(connection_id="c", sale_id="1"))
    sales.set_outcome("c", "1", Outcome.ESCALATED, reason=Reason.RETRIES_EXHAUSTED)
    state = sales.get("c", "1")
    assert state is not None and state.outcome is Outcome.REFLECTED and state.reason is None


def test_failures_accumulate_history_once_per_attempt_key(tables: dict[str, str]) -> None:
    errors = DynamoErrorStore(_table(tables, "SALE_ERRORS_TABLE"))
    event = ErrorEvent(error_type=ErrorType.MARKETPLACE_TIMEOUT, message="timeout", attempt_key="exec-1#1")
    first = errors.record_failure("c", "9", event, retryable=True)
    again = errors.record_failure("c", "9", event, retryable=True)  # a retried Lambda writes the same attempt
    second = errors.record_failure(
        "c", "9", event.model_copy(update={"attempt_key": "exec-1#2", "message": "503"}), retryable=True
    )
    assert (first.attempts, again.attempts, second.attempts) == (1, 1, 2)
    assert [e.message for e in second.history] == ["timeout", "503"]
    assert first.episode == second.episode


def test_escalation_is_claimed_once_per_episode(tables: dict[str, str]) -> None:
    errors = DynamoErrorStore(_table(tables, "SALE_ERRORS_TABLE"))
    entry = errors.record_failure("c", "9", ErrorEvent(error_type="marketplace_timeout", message="x"), retryable=True)
    assert errors.claim_escalation("c", "9", entry.episode) is True
    assert errors.claim_escalation("c", "9", entry.episode) is False
    assert errors.claim_escalation("c", "9", "another-episode") is False
    # A sale reflected later leaves the list; a new failure opens a new episode, which may page again.
    errors.resolve("c", "9")
    reopened = errors.record_failure(
        "c", "9", ErrorEvent(error_type="marketplace_timeout", message="y"), retryable=True
    )
    assert reopened.episode != entry.episode and reopened.escalated is False
    assert errors.claim_escalation("c", "9", reopened.episode) is True


def test_error_list_filters_by_type_and_paginates(tables: dict[str, str]) -> None:
    errors = DynamoErrorStore(_table(tables, "SALE_ERRORS_TABLE"))
    for n in range(7):
        kind = ErrorType.MARKETPLACE_TIMEOUT if n % 2 == 0 else ErrorType.PRODUCT_NOT_SYNCED
        errors.record_failure("c", f"10{n}", ErrorEvent(error_type=kind, message=str(n)), retryable=kind.retryable)
    errors.record_failure("other", "1", ErrorEvent(error_type="marketplace_timeout", message="o"), retryable=True)
    seen: list[str] = []
    cursor = None
    while True:
        page = errors.list("c", error_type="marketplace_timeout", limit=2, cursor=cursor)
        seen += [e.sale_id for e in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == ["100", "102", "104", "106"]
    assert len(errors.list("c").items) == 7
    with pytest.raises(InvalidCursor):
        errors.list("c", cursor="not-a-cursor")


def test_product_links_fall_back_to_the_item_level_link(tables: dict[str, str]) -> None:
    products = DynamoProductStore(_table(tables, "PRODUCT_LINKS_TABLE"))
    products.put(ProductLink(connection_id="c", item_id="MLA1", sku="A"))
    products.put(ProductLink(connection_id="c", item_id="MLA2", variation_id=7, sku="B7", synced=False))
    found = products.get_links("c", [("MLA1", 5), ("MLA2", 7), ("MLA2", 8), ("MLA3", None)])
    assert found[("MLA1", 5)].sku == "A"
    assert found[("MLA2", 7)].synced is False
    assert ("MLA2", 8) not in found and ("MLA3", None) not in found
