"""Which identifier did the person type? Only the sale id (ML's order id) works for every procedure.

Shape alone decides only what can never be a sale id: sale ids are ASCII digits, so anything else is rejected or
recognised as a tracking number / listing id. A numeric id is never classified by its shape (order and pack ids
look alike): ``resolve`` asks Mercado Libre, in the order orders → packs → shipments (DESIGN §5).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared.meli.errors import MeliForbidden, MeliNotFound
from shared.meli.models import MeliOrder, MeliPack
from shared.meli.port import MarketplaceClient
from shared.models import IdentifierKind, IdentifierResolution, Reason
from shared.stores.base import AliasStore

# int64 bound: ML ids are JSON integers; anything longer is not an id at all.
MAX_ID = 2**63 - 1
_TRACKING = re.compile(r"^[A-Z0-9][A-Z0-9-]{5,38}[A-Z0-9]$")
_LISTING = re.compile(r"^[A-Z]{3}U?\d{6,14}$")  # MLA1234567890 (item), MLBU1458960576 (user product)
_CONNECTION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class InvalidIdentifier(ValueError):
    """Input that is no identifier at all; the message tells the person what a sale id looks like."""


class InvalidConnectionId(ValueError):
    pass


@dataclass(frozen=True)
class ParsedIdentifier:
    raw: str
    kind: IdentifierKind  # SALE means "numeric, to be confirmed by ML"; TRACKING / UNKNOWN are final
    detail: str | None = None

    @property
    def numeric(self) -> bool:
        return self.kind is IdentifierKind.SALE


def validate_connection_id(connection_id: str) -> str:
    if not _CONNECTION_ID.fullmatch(connection_id or ""):
        raise InvalidConnectionId(
            f"'{_clip(connection_id)}' is not a connection id: use 1-64 letters, digits, '-' or '_' "
            "(for example 'mla-main')."
        )
    return connection_id


def parse_identifier(raw: str) -> ParsedIdentifier:
    """Classify typed input without asking anyone. Raises InvalidIdentifier for input that is no identifier."""
    value = (raw or "").strip()
    if not value:
        raise InvalidIdentifier("The sale id is empty. A sale id is the number of the sale (order) in Mercado Libre.")
    if value.isascii() and value.isdigit():
        if len(value) > 19 or int(value) > MAX_ID:
            raise InvalidIdentifier(
                f"'{_clip(value)}' has {len(value)} digits; Mercado Libre sale ids are much shorter (about 16)."
            )
        if value.startswith("0"):
            raise InvalidIdentifier(f"'{_clip(value)}' starts with 0; Mercado Libre sale ids never do.")
        return ParsedIdentifier(value, IdentifierKind.SALE)
    if value.startswith("-") and value[1:].isascii() and value[1:].isdigit():
        raise InvalidIdentifier(f"'{_clip(value)}' is negative; a sale id is a positive number.")
    upper = value.upper()
    if value.isascii() and _LISTING.fullmatch(upper):
        return ParsedIdentifier(
            value, IdentifierKind.UNKNOWN, detail="This looks like a listing (item) id, not a sale id."
        )
    if value.isascii() and _TRACKING.fullmatch(upper) and any(c.isdigit() for c in upper):
        return ParsedIdentifier(value, IdentifierKind.TRACKING, detail="This looks like a shipment tracking number.")
    raise InvalidIdentifier(
        f"'{_clip(value)}' is not a sale id: a sale id is the number of the sale in Mercado Libre, digits only "
        "(for example 2000001234567890)."
    )


def _clip(value: str, limit: int = 40) -> str:
    printable = "".join(c if c.isprintable() else "?" for c in value)
    return printable if len(printable) <= limit else printable[: limit - 1] + "…"


@dataclass(frozen=True)
class Resolution:
    identifier: IdentifierResolution
    order: MeliOrder | None = None  # set when the identifier is a sale of this connection
    not_found: bool = False  # numeric, but ML knows no sale, pack or shipment with it for this seller
    pack: MeliPack | None = None  # set when the identifier is a pack id

    @property
    def is_sale(self) -> bool:
        return self.order is not None

    @property
    def reason(self) -> Reason | None:
        if self.order is not None:
            return None
        return Reason.SALE_NOT_FOUND if self.not_found else Reason.NOT_A_SALE_ID


def resolve(client: MarketplaceClient, aliases: AliasStore, connection_id: str, raw: str) -> Resolution:
    """Ask ML what ``raw`` is. Transient ML failures propagate (the caller records and retries them)."""
    parsed = parse_identifier(raw)
    if parsed.kind is IdentifierKind.TRACKING:
        known = aliases.sale_ids_for(connection_id, parsed.raw)
        detail = parsed.detail or ""
        if not known:
            detail += " Mercado Libre has no look-up by tracking number; use the sale id shown in the sale."
        return Resolution(IdentifierResolution(identifier=parsed.raw, kind=parsed.kind, sale_ids=known, detail=detail))
    if parsed.kind is IdentifierKind.UNKNOWN:
        return Resolution(IdentifierResolution(identifier=parsed.raw, kind=parsed.kind, detail=parsed.detail))

    try:
        order = client.get_order(parsed.raw)
        return Resolution(
            IdentifierResolution(identifier=parsed.raw, kind=IdentifierKind.SALE, sale_ids=[parsed.raw]), order
        )
    except MeliForbidden as exc:
        # not_owned_order: the sale exists but belongs to another seller, i.e. not to this connection.
        return Resolution(
            IdentifierResolution(
                identifier=parsed.raw,
                kind=IdentifierKind.UNKNOWN,
                detail=f"Not a sale of this connection: {exc.message}",
            ),
            not_found=True,
        )
    except MeliNotFound:
        pass

    try:
        pack = client.get_pack(parsed.raw)
        return Resolution(
            IdentifierResolution(
                identifier=parsed.raw,
                kind=IdentifierKind.PACK,
                sale_ids=pack.order_ids,
                detail=f"This is a pack (cart) id with {len(pack.order_ids)} sale(s).",
            ),
            pack=pack,
        )
    except (MeliNotFound, MeliForbidden):
        pass

    try:
        shipment = client.get_shipment(parsed.raw)
    except (MeliNotFound, MeliForbidden):
        return Resolution(
            IdentifierResolution(
                identifier=parsed.raw,
                kind=IdentifierKind.UNKNOWN,
                detail="Mercado Libre knows no sale, pack or shipment with this id for this connection.",
            ),
            not_found=True,
        )
    # The shipment's items name every order it carries (a cart's shipment carries several); each seller sees only
    # its own lines (reference/meli-api.md §4). An old shipment without items falls back on its order_id.
    sale_ids: list[str] = []
    try:
        sale_ids = client.get_shipment_items(parsed.raw).order_ids()
    except (MeliNotFound, MeliForbidden):
        sale_ids = []
    if not sale_ids and shipment.order_id:
        sale_ids = [str(shipment.order_id)]
    if shipment.tracking_number and sale_ids:
        # Remember it: ML cannot look sales up by tracking number, so this is how we can answer next time.
        aliases.remember(connection_id, shipment.tracking_number, IdentifierKind.TRACKING, sale_ids)
    logistic = shipment.logistic_type
    return Resolution(
        IdentifierResolution(
            identifier=parsed.raw,
            kind=IdentifierKind.SHIPMENT,
            sale_ids=sale_ids,
            detail="This is a shipment id"
            + (f" with {len(sale_ids)} sales" if len(sale_ids) > 1 else "")
            + "."
            + (f" Tracking number {shipment.tracking_number}." if shipment.tracking_number else "")
            + (f" Logistic type {logistic}." if logistic else ""),
            logistic_type=logistic,
        )
    )
