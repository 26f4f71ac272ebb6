"""The platform's product links: which platform product an ML listing (item + variation) is linked to."""

from __future__ import annotations

from typing import Any

from shared.models import ProductLink
from shared.stores.base import ListingKey
from shared.stores.dynamo import batch_get, from_dynamo, to_dynamo


def listing_key(item_id: str, variation_id: int | None) -> str:
    return f"{item_id}#{variation_id if variation_id is not None else '-'}"


class DynamoProductStore:
    def __init__(self, table: Any) -> None:
        self._table = table

    def get_links(self, connection_id: str, keys: list[ListingKey]) -> dict[ListingKey, ProductLink]:
        wanted = {listing_key(item, var) for item, var in keys} | {listing_key(item, None) for item, _ in keys}
        found: dict[str, ProductLink] = {}
        requested = [{"connection_id": connection_id, "listing_key": key} for key in sorted(wanted)]
        for row in batch_get(self._table, requested):
            data = from_dynamo(row)
            stored_key = data.pop("listing_key")
            found[stored_key] = ProductLink.model_validate(data)
        result: dict[ListingKey, ProductLink] = {}
        for item_id, variation_id in keys:
            link = found.get(listing_key(item_id, variation_id)) or found.get(listing_key(item_id, None))
            if link is not None:
                result[(item_id, variation_id)] = link
        return result

    def put(self, link: ProductLink) -> None:
        item = link.model_dump(mode="json")
        item["listing_key"] = listing_key(link.item_id, link.variation_id)
        self._table.put_item(Item=to_dynamo(item))
