"""The read-side DynamoDB adapters against moto tables created from template.yaml (the writes of per-sale state are
the lifecycle's: tests/stores/test_sale_lifecycle.py)."""

from __future__ import annotations

from typing import Any

import pytest

from shared.lifecycle import moves
from shared.lifecycle.table import Actor
from shared.models import ErrorEntry, ErrorType, ProductLink, Reason
from shared.stores.dynamo import InvalidCursor
from shared.stores.errors import DynamoErrorStore
from shared.stores.products import DynamoProductStore
from tests.stores.conftest import lifecycle_on
from tests.stores.conftest import table as _table


def _list(lifecycle: Any, connection_id: str, sale_id: str, error_type: ErrorType, message: str) -> None:
    snap = lifecycle.read(connection_id, sale_id)
    entry = ErrorEntry(
        connection_id=connection_id,
        sale_id=sale_id,
        error_type=error_type.value,
        message=message,
        retryable=error_type.retryable,
        reason=Reason(error_type.value) if not error_type.retryable else None,
    )
    assert lifecycle.apply(snap, moves.list_error(snap, Actor.PLATFORM, entry=entry)) is not None


def test_error_list_filters_by_type_and_paginates(tables: dict[str, str]) -> None:
    errors = DynamoErrorStore(_table(tables, "SALE_ERRORS_TABLE"))
    lifecycle = lifecycle_on(tables)
    for n in range(7):
        kind = ErrorType.MARKETPLACE_TIMEOUT if n % 2 == 0 else ErrorType.PRODUCT_NOT_SYNCED
        _list(lifecycle, "c", f"10{n}", kind, str(n))
    _list(lifecycle, "other", "1", ErrorType.MARKETPLACE_TIMEOUT, "o")
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
