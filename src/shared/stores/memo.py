"""A short-lived memo over the product links, for one bulk message.

The sales of one message usually sell the same few listings; reading their links once per message instead of
once per sale saves a BatchGetItem per sale. The memo lives only as long as the message (seconds), so a seller
who fixes a product is seen by the next message.
"""

from __future__ import annotations

import threading

from shared.models import ProductLink
from shared.stores.base import ListingKey, ProductStore


class ProductLinkMemo:
    def __init__(self, store: ProductStore) -> None:
        self._store = store
        self._known: dict[tuple[str, ListingKey], ProductLink | None] = {}
        # Misses are read one at a time: the threads of a message that sell the same listing wait for the first
        # read instead of each asking DynamoDB.
        self._lock = threading.Lock()

    def get_links(self, connection_id: str, keys: list[ListingKey]) -> dict[ListingKey, ProductLink]:
        with self._lock:
            missing = [key for key in dict.fromkeys(keys) if (connection_id, key) not in self._known]
            if missing:
                found = self._store.get_links(connection_id, missing)
                for key in missing:
                    self._known[(connection_id, key)] = found.get(key)
            return {key: link for key in keys if (link := self._known[(connection_id, key)]) is not None}

    def put(self, link: ProductLink) -> None:
        self._store.put(link)
        with self._lock:
            for known in [k for k in self._known if k == (link.connection_id, (link.item_id, k[1][1]))]:
                del self._known[known]
