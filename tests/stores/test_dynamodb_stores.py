"""The read-side DynamoDB adapters against moto tables created from template.yaml (the writes of per-sale state are
the lifecycle's: tests/stores/test_sale_lifecycle.py)."""

from __future__ import annotations

import pytest

from shared.models import ErrorType, ProductLink
from shared.stores.dynamo import InvalidCursor
from shared.stores.errors import DynamoErrorStore
from shared.stores.products import DynamoProductStore
from tests.stores.conftest import lifecycle_on, list_sale
from tests.stores.conftest import table as _table


def test_error_list_filters_by_type_and_paginates(tables: dict[str, str]) -> None:
    errors = DynamoErrorStore(_table(tables, "SALE_ERRORS_TABLE"))
    lifecycle = lifecycle_on(tables)
    for n in range(7):
        kind = ErrorType.MARKETPLACE_TIMEOUT if n % 2 == 0 else ErrorType.PRODUCT_NOT_SYNCED
        list_sale(lifecycle, "c", f"10{n}", kind, str(n))
    list_sale(lifecycle, "other", "1", ErrorType.MARKETPLACE_TIMEOUT, "o")
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
