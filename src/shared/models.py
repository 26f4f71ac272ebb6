"""The service's vocabulary: outcomes, reasons and the records every boundary exchanges.

These models are the contract of DESIGN §3. Handlers serialise them, the stores persist them, the state
machine passes them between tasks. Nothing here performs I/O.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared import clock


def utc_now() -> datetime:
    """The service's clock (``shared.clock``): the system clock, which the model-based tests can move forward."""
    return clock.now()


class Outcome(StrEnum):
    """Where a sale stands. The first four are terminal: every sale ends in exactly one of them."""

    REFLECTED = "reflected"
    ALREADY_REFLECTED = "already_reflected"
    NOT_REFLECTABLE = "not_reflectable"
    ESCALATED = "escalated"
    PENDING = "pending"
    IN_PROGRESS = "in_progress"

    @property
    def terminal(self) -> bool:
        return self not in (Outcome.PENDING, Outcome.IN_PROGRESS)


class Reason(StrEnum):
    """Why a sale is not reflectable (or why it was escalated). The seller must act on the blocking ones."""

    SALE_CANCELLED = "sale_cancelled"
    PAYMENT_NOT_VERIFIED = "payment_not_verified"
    # Legacy: before carts were reprocessed whole, a cart sale was settled with this reason. No longer written; rows
    # stored with it still read.
    CART_SALE = "cart_sale"
    NOT_A_SALE_ID = "not_a_sale_id"
    SALE_NOT_FOUND = "sale_not_found"
    PRODUCT_NOT_FOUND = "product_not_found"
    PRODUCT_INACTIVE = "product_inactive"
    PRODUCT_NOT_SYNCED = "product_not_synced"
    # The connection cannot call ML until the seller authorises the application again (shared.connection_state).
    CONNECTION_NEEDS_REAUTHORIZATION = "connection_needs_reauthorization"
    # ML split the sale's pack (shipment split): the order is cancelled (cancel_detail.code pack_splitted) and new
    # orders replace it; ``sale_ids`` carries them when known (reference/meli-api.md §1.2, §13).
    SALE_SUPERSEDED_BY_SPLIT = "sale_superseded_by_split"
    # The sale's pack is cancelled (or pending_cancel: an unrecoverable error), whatever the order still shows.
    PACK_CANCELLED = "pack_cancelled"
    # A cart's pack is not released yet (ML releases it once its orders and shipment are paid; filling, error, ...).
    PACK_NOT_RELEASED = "pack_not_released"
    # Escalation reasons: a person at the help desk must look.
    RETRIES_EXHAUSTED = "retries_exhausted"
    RESYNC_FAILED = "resync_failed"
    MARKETPLACE_REFUSED = "marketplace_refused"
    UNEXPECTED_ERROR = "unexpected_error"
    EXECUTION_FAILED = "execution_failed"


# What the seller must do for each blocking reason; shown in every answer that carries the reason.
SELLER_ACTIONS: dict[Reason, str] = {
    Reason.SALE_CANCELLED: "The sale is cancelled in Mercado Libre; cancelled sales are never reflected.",
    Reason.PAYMENT_NOT_VERIFIED: (
        "Mercado Libre does not show the sale as paid yet (only status paid counts; a confirmed sale may be unpaid or "
        "marked not completed); retry once it shows paid."
    ),
    Reason.CART_SALE: "This is a cart sale: relink it (or its pack) and the whole cart is reprocessed.",
    Reason.NOT_A_SALE_ID: "Use the sale id (the order id), not a pack, shipment or tracking number.",
    Reason.SALE_NOT_FOUND: "Mercado Libre does not know this id for this connection; check the id and the connection.",
    Reason.PRODUCT_NOT_FOUND: "Create the product and link the listing in this Mercado Libre connection, then retry.",
    Reason.PRODUCT_INACTIVE: "Activate the linked product in the platform, then retry.",
    Reason.PRODUCT_NOT_SYNCED: "Synchronise the linked product with this Mercado Libre connection, then retry.",
    Reason.CONNECTION_NEEDS_REAUTHORIZATION: (
        "Mercado Libre no longer accepts this connection's authorization (the seller revoked the application, changed "
        "the password, or the account or application is blocked): reconnect the Mercado Libre account in the "
        "platform. Its sales are retried by themselves once it is reconnected."
    ),
    Reason.SALE_SUPERSEDED_BY_SPLIT: (
        "Mercado Libre split this sale's shipment: the original sale was cancelled and new sales replace it. "
        "Reprocess the new sale ids (listed when known; otherwise see the sale in Mercado Libre), not this one."
    ),
    Reason.PACK_CANCELLED: (
        "The sale's pack is cancelled in Mercado Libre (or being cancelled after an unrecoverable error); "
        "its sales are never reflected."
    ),
    Reason.PACK_NOT_RELEASED: (
        "Mercado Libre has not released the cart's pack yet (it does once every sale and the shipment are paid); "
        "relink the cart once the pack shows released."
    ),
    Reason.RETRIES_EXHAUSTED: "Three relink attempts failed; the help desk has been notified.",
    Reason.RESYNC_FAILED: "The resync failed again; the help desk has been notified.",
    Reason.MARKETPLACE_REFUSED: "Mercado Libre refused the request; the help desk has been notified.",
    Reason.UNEXPECTED_ERROR: "An unexpected error stopped the recovery; the help desk has been notified.",
    Reason.EXECUTION_FAILED: "The relink execution stopped before an outcome; the help desk has been notified.",
}

# Reasons that only the seller (or ML) can clear. A sale blocked by one of them is never escalated.
BLOCKING_REASONS = frozenset(
    {
        Reason.SALE_CANCELLED,
        Reason.PAYMENT_NOT_VERIFIED,
        Reason.CART_SALE,
        Reason.NOT_A_SALE_ID,
        Reason.SALE_NOT_FOUND,
        Reason.PRODUCT_NOT_FOUND,
        Reason.PRODUCT_INACTIVE,
        Reason.PRODUCT_NOT_SYNCED,
        Reason.CONNECTION_NEEDS_REAUTHORIZATION,
        Reason.SALE_SUPERSEDED_BY_SPLIT,
        Reason.PACK_CANCELLED,
        Reason.PACK_NOT_RELEASED,
    }
)


class IdentifierKind(StrEnum):
    SALE = "sale"
    PACK = "pack"
    SHIPMENT = "shipment"
    TRACKING = "tracking"
    UNKNOWN = "unknown"


class NextAction(StrEnum):
    NONE = "none"
    RESYNC = "resync"
    RELINK = "relink"
    BLOCKED = "blocked"


class ErrorType(StrEnum):
    """Error-list types. Transient ones are retryable; the rest wait for the seller."""

    MARKETPLACE_TIMEOUT = "marketplace_timeout"
    MARKETPLACE_UNAVAILABLE = "marketplace_unavailable"
    MARKETPLACE_RATE_LIMITED = "marketplace_rate_limited"
    # ML answered 206: some sections of the order (buyer, shipping, ...) could not be fetched. Imported only whole.
    MARKETPLACE_PARTIAL_ORDER = "marketplace_partial_order"
    TOKEN_REFRESH_FAILED = "token_refresh_failed"
    MARKETPLACE_REFUSED = "marketplace_refused"
    SALE_CANCELLED = "sale_cancelled"
    PAYMENT_NOT_VERIFIED = "payment_not_verified"
    CART_SALE = "cart_sale"
    SALE_NOT_FOUND = "sale_not_found"
    PRODUCT_NOT_FOUND = "product_not_found"
    PRODUCT_INACTIVE = "product_inactive"
    PRODUCT_NOT_SYNCED = "product_not_synced"
    # Waits for the seller to reconnect; the error sweep retries it once the connection is active again.
    CONNECTION_NEEDS_REAUTHORIZATION = "connection_needs_reauthorization"
    SALE_SUPERSEDED_BY_SPLIT = "sale_superseded_by_split"
    PACK_CANCELLED = "pack_cancelled"
    PACK_NOT_RELEASED = "pack_not_released"
    IMPORT_FAILED = "import_failed"

    @property
    def retryable(self) -> bool:
        return self in TRANSIENT_ERROR_TYPES


TRANSIENT_ERROR_TYPES = frozenset(
    {
        ErrorType.MARKETPLACE_TIMEOUT,
        ErrorType.MARKETPLACE_UNAVAILABLE,
        ErrorType.MARKETPLACE_RATE_LIMITED,
        ErrorType.MARKETPLACE_PARTIAL_ORDER,
        ErrorType.TOKEN_REFRESH_FAILED,
        ErrorType.IMPORT_FAILED,
    }
)


def error_type_for_reason(reason: Reason) -> ErrorType:
    return ErrorType(reason.value)


class Trigger(StrEnum):
    """Who asked for the work; kept on records and history for the help desk."""

    API = "api"
    STATE_MACHINE = "state_machine"
    BULK = "bulk"
    SCHEDULE = "schedule"
    SEED = "seed"
    NOTIFICATION = "notification"  # Mercado Libre said so: an orders_v2 notification, or one of its missed feeds


class Model(BaseModel):
    # defer_build (here and on every model of shared/): a schema is built on the model's first use, not at import, so
    # a cold start builds only the models its request touches; the API's before-snapshot hook builds them all.
    model_config = ConfigDict(extra="forbid", frozen=False, use_enum_values=False, defer_build=True)


# --- Platform state -------------------------------------------------------------------------------------------------


class ProductLink(Model):
    """A platform product linked to an ML listing (item + optional variation) in one connection."""

    connection_id: str
    item_id: str
    variation_id: int | None = None
    sku: str | None = None
    status: str = "active"  # "active" | "inactive"
    synced: bool = True
    updated_at: datetime = Field(default_factory=utc_now)

    @property
    def active(self) -> bool:
        return self.status == "active"


class ConnectionState(StrEnum):
    """Whether a connection may call Mercado Libre (shared.connection_state)."""

    ACTIVE = "active"
    NEEDS_REAUTHORIZATION = "needs_reauthorization"


class Connection(Model):
    """A seller's ML account as known to the platform. Its OAuth tokens live in Secrets Manager, never here."""

    connection_id: str
    seller_id: int
    site_id: str
    secret_id: str
    # The connection's state, on its row (a row without it is active). While it needs reauthorization no ML call is
    # made for it; storing tokens newer than ``revoked_token_version`` (the seller reconnected) makes it active again.
    state: ConnectionState = ConnectionState.ACTIVE
    state_cause: str | None = None  # invalid_grant, access_denied, token_owner_mismatch, ...
    state_message: str | None = None  # what ML said, for the help desk
    state_changed_at: datetime | None = None
    revoked_token_version: int | None = None  # the stored tokens' version that ML refused
    active_token_version: int | None = None  # the version that made it active again (older refusals are stale)
    alert_due: bool = False  # the help desk's one message for this revocation is still to be sent


class SaleLine(Model):
    item_id: str
    sale_id: str | None = None  # in a cart's record: the order (sale) the line belongs to
    variation_id: int | None = None
    title: str | None = None
    sku: str | None = None
    quantity: int = 1
    unit_price: float | None = None
    currency_id: str | None = None


class ReflectedSale(Model):
    """The platform's copy of an ML sale, linked to its products. Stored once per (connection, sale)."""

    connection_id: str
    sale_id: str
    seller_id: int | None = None
    status: str | None = None
    date_created: str | None = None
    total_amount: float | None = None
    currency_id: str | None = None
    buyer_id: int | None = None
    pack_id: str | None = None
    # A cart (a pack of several sales) is one record keyed by its pack id (``sale_id`` is the pack id) holding every
    # sale of this seller in it; None for a single sale.
    sale_ids: list[str] | None = None
    shipment_id: str | None = None
    lines: list[SaleLine] = Field(default_factory=list)
    imported_at: datetime = Field(default_factory=utc_now)
    imported_by: Trigger = Trigger.API
    # The attempt that stored it (job or execution + attempt): its retries and duplicates answer "reflected" too.
    import_key: str | None = None


class ErrorEvent(Model):
    """One failure in a sale's error history."""

    at: datetime = Field(default_factory=utc_now)
    error_type: ErrorType | str
    message: str
    trigger: Trigger = Trigger.API
    attempt_key: str | None = None  # de-duplicates retried writes of the same attempt


class ListingRef(Model):
    """An ML listing (item + optional variation) an order line uses; kept on entries blocked by their product."""

    item_id: str
    variation_id: int | None = None


def retry_delay_seconds(attempts: int, *, base_seconds: float, max_seconds: float) -> float:
    """Exponential backoff between automatic retries of a listed sale: base, 2 x base, 4 x base, ... capped."""
    return float(min(max_seconds, base_seconds * 2 ** max(0, attempts - 1)))


class ErrorEntry(Model):
    """A sale in the "sales with errors" list of one connection (seed step 3)."""

    connection_id: str
    sale_id: str
    error_type: str
    message: str
    retryable: bool
    attempts: int = 0
    first_seen: datetime = Field(default_factory=utc_now)
    last_seen: datetime = Field(default_factory=utc_now)
    next_retry_at: datetime | None = None
    history: list[ErrorEvent] = Field(default_factory=list)
    # The sale's episode when the entry was last written (0: the platform listed it before the service saw it).
    # Escalation happens at most once per episode, and a rerun starts a new one.
    episode: int = 0
    escalated: bool = False
    escalated_at: datetime | None = None
    reason: Reason | None = None
    # The listings that blocked the sale (product_not_found / inactive / not_synced): self-heal watches them.
    listings: list[ListingRef] | None = None
    # The latest attempts that wrote here (execution#attempt, job#relink, ...): a retried task writes nothing twice.
    # Internal: not in API answers; bounded like the history.
    attempt_keys: list[str] = Field(default_factory=list, exclude=True)
    # A cart's entry (keyed by its pack id: a failed cart is listed once): the pack and its sales.
    pack_id: str | None = None
    sale_ids: list[str] | None = None


class ExecutionRef(Model):
    execution_arn: str
    name: str
    started_at: datetime = Field(default_factory=utc_now)
    status: str = "RUNNING"
    episode: int | None = None  # the sale's episode this execution owns (None: not known, e.g. a console run)
    start_attempts: int = 0  # relink attempts already spent when it started (a bulk hand-over: 1)
    cart: bool = False  # started for a whole cart: its input is {connection_id, pack_id}


class SaleState(Model):
    """The service's own record of where a sale stands (GET /connections/{c}/sales/{s})."""

    connection_id: str
    sale_id: str
    outcome: Outcome
    reason: Reason | None = None
    detail: str | None = None
    identifier_kind: IdentifierKind | None = None
    sale_ids: list[str] | None = None  # what a non-sale identifier holds, or the sales of a cart's pack
    pack_id: str | None = None  # a cart sale's pack
    blocking_sale_id: str | None = None  # a cart blocked by one of its sales: that sale
    attempts: int = 0
    episode: int = 0  # 1 for the first request about the sale; every rerun of a settled sale adds one
    updated_at: datetime = Field(default_factory=utc_now)
    latest_execution: ExecutionRef | None = None
    record: ReflectedSale | None = None


class PackState(Model):
    """Where a cart stands (GET /connections/{c}/packs/{p}): reprocessed whole, one outcome for all its sales."""

    connection_id: str
    pack_id: str
    sale_ids: list[str] = Field(default_factory=list)
    outcome: Outcome
    reason: Reason | None = None
    sale_id: str | None = None  # the sale that blocks the cart
    detail: str | None = None
    seller_action: str | None = None
    attempts: int = 0
    episode: int = 0
    updated_at: datetime = Field(default_factory=utc_now)
    latest_execution: ExecutionRef | None = None
    record: ReflectedSale | None = None
    error_entry: ErrorEntry | None = None


# --- Verification -----------------------------------------------------------------------------------------------


class IdentifierResolution(Model):
    """What an identifier turned out to be, as ML says (never guessed from its shape)."""

    identifier: str
    kind: IdentifierKind
    sale_ids: list[str] = Field(default_factory=list)
    detail: str | None = None
    # A shipment's logistic.type as ML gives it (drop_off, xd_drop_off, cross_docking, fulfillment, self_service, ...).
    logistic_type: str | None = None


class ProductLineCheck(Model):
    item_id: str
    variation_id: int | None = None
    sku: str | None = None
    linked: bool
    active: bool
    synced: bool
    reason: Reason | None = None


class Check(Model):
    name: str
    ok: bool
    detail: str
    reason: Reason | None = None


class CartOrderReport(Model):
    """One sale of a cart, checked as a single sale would be."""

    sale_id: str
    checks: list[Check]
    lines: list[ProductLineCheck] = Field(default_factory=list)
    reason: Reason | None = None


class CartReport(Model):
    """A cart (a pack of several sales), checked whole: the pack's status and every sale of this seller in it."""

    pack_id: str
    status: str | None = None
    shipment_id: str | None = None
    sale_ids: list[str]  # this seller's sales in the pack
    other_sellers_sale_ids: list[str] = Field(default_factory=list)  # listed by ML, not this seller's: left out
    orders: list[CartOrderReport] = Field(default_factory=list)
    blocking_sale_id: str | None = None


class VerificationReport(Model):
    connection_id: str
    sale_id: str
    identifier: IdentifierResolution
    checks: list[Check]
    lines: list[ProductLineCheck] = Field(default_factory=list)
    in_error_list: bool
    error_entry: ErrorEntry | None = None
    reflected: bool
    next_action: NextAction
    reason: Reason | None = None
    seller_action: str | None = None
    pack_id: str | None = None
    pack_sale_ids: list[str] | None = None
    cart: CartReport | None = None  # a cart sale (or a cart's pack id): the whole cart's checks

    @property
    def blocked(self) -> bool:
        return self.next_action is NextAction.BLOCKED


# --- Results of the recovery operations ----------------------------------------------------------------------------


class RecoveryResult(Model):
    """The answer of resync / relink / escalate for one sale. `outcome` is terminal unless `retryable`."""

    connection_id: str
    sale_id: str
    outcome: Outcome
    reason: Reason | None = None
    detail: str | None = None
    seller_action: str | None = None
    identifier_kind: IdentifierKind | None = None
    sale_ids: list[str] | None = None
    pack_id: str | None = None
    blocking_sale_id: str | None = None  # a cart blocked by one of its sales: that sale
    attempts: int = 0
    retryable: bool = False
    error_type: str | None = None
    episode: int | None = None  # the sale's episode this outcome belongs to
    record: ReflectedSale | None = None

    def to_output(self) -> dict[str, Any]:
        """The state machine's output shape (DESIGN §3): {connection_id, sale_id, outcome, reason?, attempts}."""
        out: dict[str, Any] = {
            "connection_id": self.connection_id,
            "sale_id": self.sale_id,
            "outcome": self.outcome.value,
            "attempts": self.attempts,
        }
        if self.reason is not None:
            out["reason"] = self.reason.value
        if self.is_cart:
            # An execution started with {connection_id, pack_id}: the cart's shape (DESIGN §3.1).
            del out["sale_id"]
            out["pack_id"] = self.pack_id
            out["sale_ids"] = self.sale_ids or []
            if self.blocking_sale_id is not None:
                out["sale_id"] = self.blocking_sale_id
        return out

    @property
    def is_cart(self) -> bool:
        """The answer is about a whole cart (its subject is the pack)."""
        return self.pack_id is not None and self.pack_id == self.sale_id

    def to_public(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True, exclude={"record", "retryable"})
