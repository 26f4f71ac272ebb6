"""What a request can run into that the person who sent it can fix: the API answers each with a 4xx that says how."""

from __future__ import annotations

from shared.meli.errors import MeliTransientError
from shared.models import ErrorType, IdentifierResolution


class ConnectionNotFound(LookupError):
    def __init__(self, connection_id: str) -> None:
        super().__init__(
            f"Unknown connection '{connection_id}'. Use the id of a Mercado Libre connection of the platform."
        )
        self.connection_id = connection_id


class NotInErrorList(LookupError):
    def __init__(self, connection_id: str, sale_id: str) -> None:
        super().__init__(
            f"Sale {sale_id} is not in the error list of connection {connection_id}; resync only applies to listed "
            f"sales. Use relink instead: POST /connections/{connection_id}/sales/{sale_id}/relink"
        )


class SaleNeverSeen(LookupError):
    def __init__(self, connection_id: str, sale_id: str) -> None:
        super().__init__(
            f"The service has never seen sale {sale_id} in connection {connection_id}. "
            f"Check it with GET /connections/{connection_id}/sales/{sale_id}/verification."
        )


class NotASaleId(ValueError):
    """A pack, shipment or tracking number given where only a sale id works."""

    def __init__(self, resolution: IdentifierResolution) -> None:
        super().__init__(
            f"'{resolution.identifier}' is not a sale id ({resolution.kind.value}). {resolution.detail or ''} "
            + (f"Its sale ids: {', '.join(resolution.sale_ids)}." if resolution.sale_ids else "")
        )
        self.resolution = resolution


class NotACart(ValueError):
    """A pack route given an id that is not the pack of a cart (a single sale's pack, a sale, a shipment...)."""

    def __init__(self, resolution: IdentifierResolution) -> None:
        kind = resolution.kind.value
        what = "a single sale's pack" if kind == "pack" else f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} id"
        super().__init__(
            f"'{resolution.identifier}' is not the pack of a cart of this connection ({what}). "
            + (resolution.detail or "")
            + (f" Use its sale ids: {', '.join(resolution.sale_ids)}." if resolution.sale_ids else "")
        )
        self.resolution = resolution


class PackNeverSeen(LookupError):
    def __init__(self, connection_id: str, pack_id: str) -> None:
        super().__init__(
            f"The service has never reprocessed pack {pack_id} in connection {connection_id}. Relink the cart with "
            f"POST /connections/{connection_id}/packs/{pack_id}/relink."
        )


class MarketplacePartialOrder(MeliTransientError):
    """ML answered the order with 206 Partial Content: the sections named by ``X-Content-Missing`` (buyer, shipping,
    feedback, mediations, seller) could not be fetched (reference/meli-api.md §1.2). A sale is imported only whole, so
    this is a transient failure: a later read (the next relink attempt, the error sweep) gets the whole order."""

    def __init__(self, sale_id: str, missing: list[str]) -> None:
        sections = ", ".join(missing)
        super().__init__(
            f"Mercado Libre could not fetch the {sections} of sale {sale_id} (HTTP 206, X-Content-Missing: "
            f"{sections}); a sale is imported only complete, so it is retried later",
            status=206,
            error=ErrorType.MARKETPLACE_PARTIAL_ORDER.value,
            path=f"/orders/{sale_id}",
        )
        self.missing = list(missing)

    def __str__(self) -> str:
        return self.message
