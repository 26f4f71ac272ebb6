"""The seed's checks for one sale, asked to Mercado Libre and the platform's product links (read-only).

``Verifier.assess`` is what every path runs before it decides anything: what the identifier is (asked to ML in the
order orders -> packs -> shipments, never guessed from its shape), the sale's status and payment, whether it is a
cart, and whether every line's product is linked, active and synced. ``attempt`` turns an assessment into a
verdict: import this record, blocked for this reason, or failed (transiently or not).

A cart (a pack of several sales) is checked whole: the pack must be released, and every sale of this seller in it
(other sellers' orders of a multi-seller pack are left out) must pass every check; the first one that does not
blocks the cart with its reason and its sale id. Its subject is the pack id: a verdict on a cart's sale id says
which pack to reprocess (``Verdict.cart``), and one on the pack id imports the cart as one record.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from shared.checks import (
    PACK_IN_ERROR,
    cart_detail,
    check_not_cancelled,
    check_not_cart,
    check_pack,
    check_pack_released,
    check_payment,
    check_products,
    first_blocking,
    is_kit_component,
    listing_keys,
)
from shared.errors import ConnectionNotFound, MarketplacePartialOrder, NotASaleId
from shared.identifiers import Resolution, parse_identifier, resolve, validate_connection_id
from shared.importer import build_cart_record, build_record
from shared.lifecycle.moves import WAITING_FOR_PRODUCT, Blocking, Failure, reauthorization_blocking
from shared.meli.errors import (
    ConnectionNeedsReauthorization,
    MeliError,
    MeliForbidden,
    MeliNotFound,
    MeliRateLimited,
    MeliTimeout,
    MeliTransientError,
    MeliUnavailable,
    TokenRefreshError,
)
from shared.meli.models import MeliOrder, MeliPack
from shared.meli.port import MarketplaceClient, MarketplaceClientFactory
from shared.models import (
    SELLER_ACTIONS,
    CartOrderReport,
    CartReport,
    Check,
    Connection,
    ErrorEntry,
    ErrorEvent,
    ErrorType,
    IdentifierKind,
    IdentifierResolution,
    ListingRef,
    NextAction,
    ProductLineCheck,
    Reason,
    ReflectedSale,
    Trigger,
    VerificationReport,
)
from shared.stores.base import AliasStore, ConnectionStore, ProductStore

CONNECTION_CACHE_SECONDS = 60.0


class MarketplacePackInError(MeliTransientError):
    """The sale's pack has status ``error``: a recoverable failure on ML's side (reference/meli-api.md §3). Transient:
    the sale is retried later, once ML releases (or cancels) the pack."""

    def __init__(self, sale_id: str, pack_id: str) -> None:
        super().__init__(
            f"Pack {pack_id} of sale {sale_id} has status error in Mercado Libre (a recoverable failure); the sale is "
            "retried later",
            error="pack_error",
            path=f"/packs/{pack_id}",
        )


def error_type_for(exc: MeliError) -> ErrorType:
    if isinstance(exc, MarketplacePartialOrder):
        return ErrorType.MARKETPLACE_PARTIAL_ORDER
    if isinstance(exc, MeliTimeout):
        return ErrorType.MARKETPLACE_TIMEOUT
    if isinstance(exc, MeliRateLimited):
        return ErrorType.MARKETPLACE_RATE_LIMITED
    if isinstance(exc, TokenRefreshError):
        return ErrorType.TOKEN_REFRESH_FAILED
    if isinstance(exc, MeliTransientError):
        return ErrorType.MARKETPLACE_UNAVAILABLE
    return ErrorType.MARKETPLACE_REFUSED


class Connections:
    """Connections change rarely; a warm container re-reads each one at most once a minute."""

    def __init__(self, store: ConnectionStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._known: dict[str, tuple[float, Connection]] = {}

    def get(self, connection_id: str) -> Connection:
        validate_connection_id(connection_id)
        cached = self._known.get(connection_id)
        if cached is not None and self._clock() - cached[0] < CONNECTION_CACHE_SECONDS:
            return cached[1]
        found = self._store.get(connection_id)
        if found is None:
            raise ConnectionNotFound(connection_id)
        self._known[connection_id] = (self._clock(), found)
        return found


@dataclass(frozen=True)
class Cart:
    """A pack of several sales as read to check it whole: this seller's orders in the pack's order."""

    pack: MeliPack
    orders: list[MeliOrder]
    lines: dict[str, list[ProductLineCheck]]
    report: CartReport
    checks: list[Check]  # pack_released, cart_sales

    @property
    def pack_id(self) -> str:
        return str(self.pack.id)


@dataclass(frozen=True)
class Assessment:
    """A verification plus what was read to make it, so an import does not ask ML twice."""

    report: VerificationReport
    order: MeliOrder | None
    lines: list[ProductLineCheck]
    cart: Cart | None = None
    known: tuple[str, list[str], Verdict] | None = None  # a sibling thread's verdict on this sale's cart (CartMemo)
    held: str | None = None  # the pack this thread holds in the CartMemo

    @property
    def is_cart_subject(self) -> bool:
        """The identifier is the cart's pack id (not one of its sale ids)."""
        return self.cart is not None and self.report.sale_id == self.cart.pack_id


@dataclass(frozen=True)
class Verdict:
    """What one attempt found: exactly one of an import record, a blocking reason or a failure."""

    record: ReflectedSale | None = None
    blocking: Blocking | None = None
    failure: Failure | None = None
    error: MeliError | None = None  # the failure's cause
    # The sale is part of a cart: the pack id to reprocess instead, its sales, and the cart's own verdict (read in the
    # same go: the subject of the write is the cart's row, keyed by the pack id). Nothing else is set.
    cart: str | None = None
    cart_sale_ids: list[str] | None = None
    whole: Verdict | None = None

    @property
    def transient(self) -> bool:
        return self.error is not None and self.error.transient


class CartMemo:
    """The carts that the threads of one bulk message meet: the first thread to read a pack holds it while it reads
    the cart, the others wait and take its verdict, so several sales of one cart in a message read it once."""

    WAIT_SECONDS = 120.0  # a holder that takes longer (its ML reads retrying) lets the waiter read for itself

    def __init__(self) -> None:
        self._known: dict[str, tuple[str, list[str], Verdict]] = {}  # pack or sale id -> the cart's verdict
        self._busy: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def cart_of(self, sale_id: str) -> tuple[str, list[str], Verdict] | None:
        with self._lock:
            return self._known.get(sale_id)

    def join(self, pack_id: str) -> tuple[str, list[str], Verdict] | None:
        """The pack's cart verdict if a sibling thread has it (waiting while one reads it); None: this thread holds
        the pack now and must ``remember`` or ``release`` it."""
        while True:
            with self._lock:
                if pack_id in self._known:
                    return self._known[pack_id]
                busy = self._busy.get(pack_id)
                if busy is None:
                    self._busy[pack_id] = threading.Event()
                    return None
            if not busy.wait(self.WAIT_SECONDS):
                return None

    def remember(self, pack_id: str, sale_ids: list[str], whole: Verdict) -> None:
        with self._lock:
            for key in [pack_id, *sale_ids]:
                self._known.setdefault(key, (pack_id, sale_ids, whole))
            busy = self._busy.pop(pack_id, None)
        if busy is not None:
            busy.set()

    def release(self, pack_id: str) -> None:
        with self._lock:
            busy = self._busy.pop(pack_id, None)
        if busy is not None:
            busy.set()


class Verifier:
    def __init__(
        self,
        *,
        products: ProductStore,
        aliases: AliasStore,
        marketplace: MarketplaceClientFactory,
        connections: Connections,
    ) -> None:
        self._products = products
        self._aliases = aliases
        self._marketplace = marketplace
        self.connections = connections

    def cart_of(self, connection_id: str, sale_id: str) -> tuple[str, list[str]] | None:
        """The cart (pack id, sale ids) a sale belongs to, if the service has read it before (no ML call)."""
        return self._aliases.cart_of(connection_id, sale_id)

    def require_sale_id(self, connection_id: str, sale_id: str) -> str:
        """The syntactic gate of every single-sale route: junk raises InvalidIdentifier, non-sale ids NotASaleId."""
        parsed = parse_identifier(sale_id)
        if not parsed.numeric:
            sale_ids = (
                self._aliases.sale_ids_for(connection_id, parsed.raw) if parsed.kind is IdentifierKind.TRACKING else []
            )
            raise NotASaleId(
                IdentifierResolution(identifier=parsed.raw, kind=parsed.kind, sale_ids=sale_ids, detail=parsed.detail)
            )
        return parsed.raw

    def assess(
        self,
        connection_id: str,
        sale_id: str,
        *,
        reflected: bool,
        entry: ErrorEntry | None,
        products: ProductStore | None = None,
        state_of: Callable[[str], tuple[bool, ErrorEntry | None]] | None = None,
        memo: CartMemo | None = None,
    ) -> Assessment:
        """The seed's checks. Transient ML failures propagate as MeliTransientError (a partial order, which could not
        be imported, as MarketplacePartialOrder); ``products`` may be a memo; ``state_of`` says whether a cart (by
        its pack id) is reflected, and its error entry: a cart's sale stands where its cart stands."""
        client = self._marketplace.for_connection(connection_id)
        resolution = resolve(client, self._aliases, connection_id, sale_id)
        order = resolution.order
        held: str | None = None
        if memo is not None and order is not None and order.pack_id is not None and order.pack_id != order.id:
            known = memo.join(str(order.pack_id))
            if known is not None:  # a sibling thread read this sale's pack: its cart's verdict stands
                report = VerificationReport(
                    connection_id=connection_id,
                    sale_id=sale_id,
                    identifier=resolution.identifier,
                    checks=[_identifier_check(resolution)],
                    in_error_list=entry is not None,
                    reflected=reflected,
                    next_action=NextAction.RELINK,
                )
                return Assessment(report=report, order=order, lines=[], known=known)
            held = str(order.pack_id)
        try:
            assessment = self._assess(
                client,
                connection_id,
                sale_id,
                resolution,
                reflected=reflected,
                entry=entry,
                products=products,
                state_of=state_of,
            )
        except BaseException:
            if held is not None and memo is not None:
                memo.release(held)
            raise
        return replace(assessment, held=held)

    def _assess(
        self,
        client: MarketplaceClient,
        connection_id: str,
        sale_id: str,
        resolution: Resolution,
        *,
        reflected: bool,
        entry: ErrorEntry | None,
        products: ProductStore | None,
        state_of: Callable[[str], tuple[bool, ErrorEntry | None]] | None,
    ) -> Assessment:
        checks = [_identifier_check(resolution)]
        lines: list[ProductLineCheck] = []
        pack: MeliPack | None = None
        cart: Cart | None = None
        order = resolution.order
        if resolution.pack is not None and len(resolution.pack.order_ids) > 1:
            cart = self._cart_of_pack(client, connection_id, resolution.pack, products)
            if cart is not None:  # the pack id of a cart: the subject is the whole cart
                pack = resolution.pack
                checks = [
                    Check(
                        name="sale_id",
                        ok=True,
                        detail=(
                            f"Mercado Libre confirms this is the pack id of a cart of {len(cart.orders)} sale(s) of "
                            "this connection: the cart is reprocessed whole."
                        ),
                    ),
                    *cart.checks,
                ]
                lines = [line for o in cart.orders for line in cart.lines.get(str(o.id), [])]
        if order is not None:
            if order.pack_id is not None and order.pack_id != order.id:
                try:
                    pack = client.get_pack(str(order.pack_id))
                except (MeliNotFound, MeliForbidden):  # not_owned_order: ML shows this seller no such pack
                    pack = None
            checks.append(check_not_cancelled(order))
            pack_check = check_pack(order, pack)
            if pack_check is not None:
                checks.append(pack_check)
            checks.append(check_payment(order))
            kit_order_ids: set[str] | None = None
            if pack is not None and len(pack.order_ids) > 1 and is_kit_component(order):
                # Only this kit's own orders are exempt from "several orders = cart": ML lists them (kits-virtuales).
                try:
                    kit_order_ids = client.get_order_bundles(str(order.id)).kit_order_ids()
                except (MeliNotFound, MeliForbidden):
                    kit_order_ids = None
            why_cart = cart_detail(order, pack, kit_order_ids) if pack is not None else None
            links = (products or self._products).get_links(connection_id, listing_keys(order))
            product_check, lines = check_products(order, links)
            if why_cart is not None and pack is not None:
                # A cart's sale: the whole cart is checked (and reprocessed) through its pack.
                cart = self._cart_of_pack(client, connection_id, pack, products, known={str(order.id): order})
            if cart is not None:
                checks = [checks[0], Check(name="cart", ok=True, detail=why_cart or ""), *cart.checks]
            else:
                checks.append(check_not_cart(order, pack, kit_order_ids))
                checks.append(product_check)
        if cart is not None:
            if state_of is not None and str(cart.pack.id) != sale_id:
                reflected, entry = state_of(cart.pack_id)  # a cart's sale stands where its cart stands
            self._aliases.remember_cart(connection_id, cart.pack_id, cart.report.sale_ids)
        blocking = first_blocking(checks)
        partial = [o for o in (cart.orders if cart else [order] if order else []) if o.missing_sections]
        if partial and blocking is None and not reflected:
            # The checks read only what a 206 keeps (status, payments, tags, lines), so a blocked sale is settled
            # as it is; one to import needs the whole order, which a later read brings.
            raise MarketplacePartialOrder(str(partial[0].id), partial[0].missing_sections)
        if cart is None and pack is not None and pack.status == PACK_IN_ERROR and blocking is None and not reflected:
            # ML's "recoverable failure" of a pack (reference/meli-api.md §3): it may still be released, so the sale
            # is retried later rather than imported from a pack in error.
            raise MarketplacePackInError(str(order.id) if order else sale_id, str(pack.id))
        if reflected:
            next_action = NextAction.NONE
        elif blocking is not None:
            next_action = NextAction.BLOCKED
        elif entry is not None:
            next_action = NextAction.RESYNC
        else:
            next_action = NextAction.RELINK
        reason = blocking.reason if blocking and not reflected else None
        report = VerificationReport(
            connection_id=connection_id,
            sale_id=sale_id,
            identifier=resolution.identifier,
            checks=checks,
            lines=lines,
            in_error_list=entry is not None,
            error_entry=entry,
            reflected=reflected,
            next_action=next_action,
            reason=reason,
            seller_action=SELLER_ACTIONS.get(reason) if reason else None,
            pack_id=cart.pack_id if cart else str(order.pack_id) if order and order.pack_id else None,
            pack_sale_ids=cart.report.sale_ids if cart else pack.order_ids if pack else None,
            cart=cart.report if cart else None,
        )
        return Assessment(report=report, order=order, lines=lines, cart=cart)

    def _cart_of_pack(
        self,
        client: MarketplaceClient,
        connection_id: str,
        pack: MeliPack,
        products: ProductStore | None,
        *,
        known: dict[str, MeliOrder] | None = None,
    ) -> Cart | None:
        """The pack checked whole, or None when it is no cart (one sale of this seller, or one kit's components).
        Reads every order of the pack; another seller's (403 ``not_owned_order``, or another seller id) is left out,
        and an order ML lists but cannot find (404) fails the read: transient, never half a cart."""
        seller_id = self.connections.get(connection_id).seller_id
        orders: list[MeliOrder] = []
        others: list[str] = []
        for order_id in pack.order_ids:
            order = (known or {}).get(order_id)
            if order is None:
                try:
                    order = client.get_order(order_id)
                except MeliForbidden:  # not_owned_order: a multi-seller pack's order of another seller
                    others.append(order_id)
                    continue
                except MeliNotFound as exc:
                    # ML lists the order in the pack yet says it does not exist: reading it later may succeed, and a
                    # cart is never reflected without one of its orders (half a cart), so the attempt fails.
                    raise MeliUnavailable(
                        f"Mercado Libre lists order {order_id} in pack {pack.id} but answers 404 for it; the cart "
                        "is not reflected without it. Retried.",
                        status=404,
                        path=exc.path,
                    ) from exc
            if order.seller.id is not None and order.seller.id != seller_id:
                others.append(order_id)
                continue
            orders.append(order)
        if len(orders) < 2 and not others:
            return None
        if orders and all(is_kit_component(o) for o in orders):
            try:
                kit = client.get_order_bundles(str(orders[0].id)).kit_order_ids()
            except (MeliNotFound, MeliForbidden):
                kit = None
            if cart_detail(orders[0], pack, kit) is None:
                return None  # one kit's components: not a cart
        if not orders:
            return None
        links = (products or self._products).get_links(
            connection_id, list(dict.fromkeys(k for o in orders for k in listing_keys(o)))
        )
        reports: list[CartOrderReport] = []
        lines: dict[str, list[ProductLineCheck]] = {}
        for order in orders:
            product_check, order_lines = check_products(order, links)
            order_checks = [check_not_cancelled(order), check_payment(order), product_check]
            failing = first_blocking(order_checks)
            lines[str(order.id)] = order_lines
            reports.append(
                CartOrderReport(
                    sale_id=str(order.id),
                    checks=order_checks,
                    lines=order_lines,
                    reason=failing.reason if failing else None,
                )
            )
        released = check_pack_released(pack)
        blocker = next((r for r in reports if r.reason is not None), None)
        if blocker is None:
            sales_check = Check(
                name="cart_sales",
                ok=True,
                detail=f"Every sale of the cart passes every check ({', '.join(r.sale_id for r in reports)}).",
            )
        else:
            failing = first_blocking(blocker.checks)
            assert failing is not None
            sales_check = Check(
                name="cart_sales",
                ok=False,
                detail=f"Sale {blocker.sale_id} of the cart blocks it: {failing.detail}",
                reason=failing.reason,
            )
        report = CartReport(
            pack_id=str(pack.id),
            status=pack.status,
            shipment_id=str(pack.shipment.id) if pack.shipment and pack.shipment.id else None,
            sale_ids=[str(o.id) for o in orders],
            other_sellers_sale_ids=others,
            orders=reports,
            blocking_sale_id=blocker.sale_id if blocker is not None and released.ok else None,
        )
        return Cart(pack=pack, orders=orders, lines=lines, report=report, checks=[released, sales_check])

    def attempt(
        self,
        connection_id: str,
        sale_id: str,
        *,
        entry: ErrorEntry | None,
        trigger: Trigger,
        attempt_key: str | None,
        products: ProductStore | None = None,
        memo: CartMemo | None = None,
    ) -> Verdict:
        """Verify and build the import in one go, reading the order once. Writes no per-sale state (it remembers a
        cart's sales, as resolving remembers tracking numbers). ``memo``: the carts the sibling threads of a bulk
        message read (a cart is read once per message)."""
        try:
            assessment = self.assess(connection_id, sale_id, reflected=False, entry=entry, products=products, memo=memo)
        except ConnectionNeedsReauthorization as refusal:  # the connection's, not the sale's: no ML call was made
            return Verdict(blocking=reauthorization_blocking(str(refusal)))
        except MeliError as exc:
            event = ErrorEvent(
                error_type=error_type_for(exc), message=str(exc), trigger=trigger, attempt_key=attempt_key
            )
            return Verdict(failure=Failure(event=event, retryable=exc.transient), error=exc)
        if assessment.known is not None:
            pack_id, sale_ids, whole = assessment.known
            return Verdict(cart=pack_id, cart_sale_ids=sale_ids, whole=whole)
        held = assessment.held if memo is not None else None
        try:
            verdict = self._verdict(connection_id, assessment, trigger, attempt_key)
            if memo is not None and held is not None and verdict.cart is not None and verdict.whole is not None:
                memo.remember(verdict.cart, verdict.cart_sale_ids or [], verdict.whole)  # wakes the waiters
        finally:
            if memo is not None and held is not None:
                memo.release(held)  # not a cart, or it failed: a waiter reads it itself (a no-op once remembered)
        return verdict

    def _verdict(
        self, connection_id: str, assessment: Assessment, trigger: Trigger, attempt_key: str | None
    ) -> Verdict:
        report = assessment.report
        cart = assessment.cart
        if cart is not None:
            if report.blocked:
                whole = Verdict(blocking=blocking_of(report))
            else:
                record = build_cart_record(connection_id, cart.pack, cart.orders, cart.lines, trigger, attempt_key)
                whole = Verdict(record=record)
            if assessment.is_cart_subject:
                return whole
            return Verdict(cart=cart.pack_id, cart_sale_ids=cart.report.sale_ids, whole=whole)  # reprocess the cart
        if report.blocked:
            return Verdict(blocking=blocking_of(report))
        assert assessment.order is not None  # not blocked means ML confirmed the sale
        return Verdict(record=build_record(connection_id, assessment.order, assessment.lines, trigger, attempt_key))


def blocking_of(report: VerificationReport) -> Blocking:
    """Why a blocked verification blocks, with what the answer and the error list show for it."""
    reason = report.reason or Reason.NOT_A_SALE_ID
    check = first_blocking(report.checks)
    kind = report.identifier.kind if reason is Reason.NOT_A_SALE_ID else None
    sale_ids = report.identifier.sale_ids if reason is Reason.NOT_A_SALE_ID else None
    pack_id = None
    if report.cart is not None:  # a cart: blocked as a whole, by its pack or by one of its sales
        cart = report.cart
        blocker = next((o for o in cart.orders if o.sale_id == cart.blocking_sale_id), None)
        listings = None
        if blocker is not None and reason in WAITING_FOR_PRODUCT:
            listings = [
                ListingRef(item_id=line.item_id, variation_id=line.variation_id)
                for line in blocker.lines
                if line.reason
            ]
        return Blocking(
            reason=reason,
            detail=check.detail if check else None,
            identifier_kind=IdentifierKind.PACK,
            sale_ids=cart.sale_ids,
            pack_id=cart.pack_id,
            listings=listings,
            blocking_sale_id=cart.blocking_sale_id,
        )
    if reason in (Reason.PACK_CANCELLED, Reason.SALE_SUPERSEDED_BY_SPLIT):
        # The pack that was cancelled or split. A split's new sale ids reach us only by ML's notifications (the
        # old order and pack do not name them; child packs point back through family_pack_id): none here.
        pack_id = report.pack_id
    listings = None
    if reason in WAITING_FOR_PRODUCT:
        listings = [
            ListingRef(item_id=line.item_id, variation_id=line.variation_id) for line in report.lines if line.reason
        ]
    return Blocking(
        reason=reason,
        detail=check.detail if check else None,
        identifier_kind=kind,
        sale_ids=sale_ids,
        pack_id=pack_id,
        listings=listings,
    )


def _identifier_check(resolution: Resolution) -> Check:
    ident = resolution.identifier
    if resolution.is_sale:
        return Check(name="sale_id", ok=True, detail="Mercado Libre confirms this is a sale id of this connection.")
    detail = ident.detail or "Not a sale id."
    if ident.sale_ids:
        detail += f" Sale ids: {', '.join(ident.sale_ids)}."
    return Check(name="sale_id", ok=False, detail=detail.strip(), reason=resolution.reason)
