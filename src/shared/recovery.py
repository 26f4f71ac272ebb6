"""The help article as a service: verify a sale, resync it from the error list, relink it, escalate it.

Every public method takes and returns models; no event, no HTTP, no boto3 here. The rules (DESIGN §3):
- only transient failures (timeouts, 5xx, 429, token refresh trouble) are retried;
- a sale blocked by its product or its ML status is never escalated: the answer says what the seller must do;
- a sale is reflected once, whoever imports it; the help desk is paged once per sale and failure episode.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from shared.checks import (
    check_not_cancelled,
    check_not_cart,
    check_payment,
    check_products,
    first_blocking,
    listing_keys,
)
from shared.escalation import EscalationMessage, HelpDeskNotifier
from shared.identifiers import Resolution, parse_identifier, resolve, validate_connection_id
from shared.importer import build_record
from shared.jobs import JobStore, settle_result
from shared.meli.errors import (
    MeliError,
    MeliForbidden,
    MeliNotFound,
    MeliRateLimited,
    MeliTimeout,
    MeliTransientError,
    TokenRefreshError,
)
from shared.meli.models import MeliOrder, MeliPack
from shared.meli.port import MarketplaceClientFactory
from shared.models import (
    SELLER_ACTIONS,
    Check,
    Connection,
    ErrorEntry,
    ErrorEvent,
    ErrorType,
    ExecutionRef,
    IdentifierKind,
    IdentifierResolution,
    ListingRef,
    NextAction,
    Outcome,
    ProductLineCheck,
    Reason,
    RecoveryResult,
    SaleState,
    Trigger,
    VerificationReport,
)
from shared.stores.base import AliasStore, ConnectionStore, ErrorStore, Page, ProductStore, SaleStore
from shared.workflow import RelinkWorkflow, execution_name

CONNECTION_CACHE_SECONDS = 60.0
_UNREAD: Any = object()  # "not read yet", distinct from a read that found nothing (None)

# Blocked sales that stay in the error list, waiting for the seller to fix the product (self-heal picks them up).
WAITING_FOR_PRODUCT = frozenset({Reason.PRODUCT_NOT_FOUND, Reason.PRODUCT_INACTIVE, Reason.PRODUCT_NOT_SYNCED})


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
    """A tracking number or listing id given where only a sale id works."""

    def __init__(self, resolution: IdentifierResolution) -> None:
        super().__init__(
            f"'{resolution.identifier}' is not a sale id ({resolution.kind.value}). {resolution.detail or ''} "
            + (f"Its sale ids: {', '.join(resolution.sale_ids)}." if resolution.sale_ids else "")
        )
        self.resolution = resolution


def error_type_for(exc: MeliError) -> ErrorType:
    if isinstance(exc, MeliTimeout):
        return ErrorType.MARKETPLACE_TIMEOUT
    if isinstance(exc, MeliRateLimited):
        return ErrorType.MARKETPLACE_RATE_LIMITED
    if isinstance(exc, TokenRefreshError):
        return ErrorType.TOKEN_REFRESH_FAILED
    if isinstance(exc, MeliTransientError):
        return ErrorType.MARKETPLACE_UNAVAILABLE
    return ErrorType.MARKETPLACE_REFUSED


@dataclass(frozen=True)
class Assessment:
    """A verification plus what was read to make it, so an import does not ask ML twice."""

    report: VerificationReport
    order: MeliOrder | None
    lines: list[ProductLineCheck]


@dataclass(frozen=True)
class RelinkStart:
    outcome: Outcome  # ALREADY_REFLECTED (nothing started) or IN_PROGRESS
    execution: ExecutionRef | None = None


@dataclass(frozen=True)
class KnownReads:
    """What a caller working through many sales already read for one of them (the bulk worker reads a message's
    states and error entries in one BatchGetItem each), so an attempt does not read it again. A read a few
    seconds old is safe: the import is a conditional write, and resolving a vanished entry changes nothing.
    ``products`` may be a per-message memo of the product links (sales of one message share listings)."""

    state: SaleState | None
    entry: ErrorEntry | None
    products: ProductStore | None = None


@dataclass
class Stores:
    sales: SaleStore
    errors: ErrorStore
    products: ProductStore
    connections: ConnectionStore
    aliases: AliasStore


class RecoveryService:
    def __init__(
        self,
        stores: Stores,
        marketplace: MarketplaceClientFactory,
        notifier: HelpDeskNotifier | None = None,
        workflow: RelinkWorkflow | None = None,
        *,
        jobs: JobStore | None = None,
        clock: Any = time.time,
    ) -> None:
        self._stores = stores
        self._marketplace = marketplace
        self._notifier = notifier
        self._workflow = workflow
        self._jobs = jobs
        self._clock = clock
        # Connections change rarely; a warm container re-reads each one at most once a minute.
        self._known_connections: dict[str, tuple[float, Connection]] = {}

    @property
    def stores(self) -> Stores:
        """The stores, for the schedules (error sweep, reconciliation) that read the lists in bulk."""
        return self._stores

    @property
    def marketplace(self) -> MarketplaceClientFactory:
        return self._marketplace

    # --- helpers --------------------------------------------------------------------------------------------------

    def connection(self, connection_id: str) -> Connection:
        validate_connection_id(connection_id)
        cached = self._known_connections.get(connection_id)
        if cached is not None and self._clock() - cached[0] < CONNECTION_CACHE_SECONDS:
            return cached[1]
        found = self._stores.connections.get(connection_id)
        if found is None:
            raise ConnectionNotFound(connection_id)
        self._known_connections[connection_id] = (self._clock(), found)
        return found

    def _require_sale_id(self, connection_id: str, sale_id: str) -> str:
        """The syntactic gate of every single-sale route: junk raises InvalidIdentifier, non-sale ids NotASaleId."""
        parsed = parse_identifier(sale_id)
        if not parsed.numeric:
            sale_ids = (
                self._stores.aliases.sale_ids_for(connection_id, parsed.raw)
                if parsed.kind is IdentifierKind.TRACKING
                else []
            )
            raise NotASaleId(
                IdentifierResolution(identifier=parsed.raw, kind=parsed.kind, sale_ids=sale_ids, detail=parsed.detail)
            )
        return parsed.raw

    # --- verify ---------------------------------------------------------------------------------------------------

    def verify(self, connection_id: str, sale_id: str) -> VerificationReport:
        """The seed's checks, read-only. Transient ML failures propagate as MeliTransientError."""
        self.connection(connection_id)
        return self._assess(connection_id, sale_id.strip()).report

    def _assess(
        self,
        connection_id: str,
        sale_id: str,
        *,
        state: Any = _UNREAD,
        entry: Any = _UNREAD,
        products: ProductStore | None = None,
    ) -> Assessment:
        """Callers that already read the sale's state or error entry pass them, so nothing is read twice."""
        client = self._marketplace.for_connection(connection_id)
        if state is _UNREAD:
            state = self._stores.sales.get(connection_id, sale_id)
        if entry is _UNREAD:
            entry = self._stores.errors.get(connection_id, sale_id)
        resolution = resolve(client, self._stores.aliases, connection_id, sale_id)
        checks = [_identifier_check(resolution)]
        lines: list[ProductLineCheck] = []
        pack: MeliPack | None = None
        order = resolution.order
        if order is not None:
            checks += [check_not_cancelled(order), check_payment(order)]
            if order.pack_id is not None and order.pack_id != order.id:
                try:
                    pack = client.get_pack(str(order.pack_id))
                except (MeliNotFound, MeliForbidden):
                    pack = None
            checks.append(check_not_cart(order, pack))
            links = (products or self._stores.products).get_links(connection_id, listing_keys(order))
            product_check, lines = check_products(order, links)
            checks.append(product_check)
        blocking = first_blocking(checks)
        reflected = bool(state and state.record)
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
            pack_id=str(order.pack_id) if order and order.pack_id else None,
            pack_sale_ids=pack.order_ids if pack else None,
        )
        return Assessment(report=report, order=order, lines=lines)

    def triage(self, connection_id: str, sale_id: str, *, trigger: Trigger) -> tuple[NextAction, RecoveryResult | None]:
        """The state machine's first step: what to do next, settling at once what needs no attempt
        (already reflected, or blocked by the seller's side). Transient ML failures propagate."""
        self.connection(connection_id)
        sale_id = sale_id.strip()
        parse_identifier(sale_id)
        state = self._stores.sales.get(connection_id, sale_id)
        if state is not None and state.record is not None:
            return NextAction.NONE, self._result(connection_id, sale_id, Outcome.ALREADY_REFLECTED)
        report = self._assess(connection_id, sale_id, state=state).report
        if report.reflected:
            return NextAction.NONE, self._result(connection_id, sale_id, Outcome.ALREADY_REFLECTED)
        if report.blocked:
            return NextAction.BLOCKED, self._settle_blocked(report, trigger)
        return report.next_action, None

    # --- one attempt: verify, then import ---------------------------------------------------------------------------

    def _attempt(
        self,
        connection_id: str,
        sale_id: str,
        trigger: Trigger,
        attempt_key: str | None,
        *,
        attempt: int = 1,
        known: KnownReads | None = None,
    ) -> RecoveryResult:
        if known is None:
            known = KnownReads(
                state=self._stores.sales.get(connection_id, sale_id),
                entry=self._stores.errors.get(connection_id, sale_id),
            )
        state, entry = known.state, known.entry
        if state is not None and state.record is not None:
            resolved = self._stores.errors.resolve(connection_id, sale_id) if entry is not None else None
            if attempt_key is not None and state.record.import_key == attempt_key:
                # This very attempt imported it before (a redelivered message, a retried task): still its result.
                done = self._result(connection_id, sale_id, Outcome.REFLECTED, record=state.record)
            else:
                done = self._result(
                    connection_id, sale_id, Outcome.ALREADY_REFLECTED, detail="Already in the platform."
                )
            return self._release_waiting(resolved, done)
        try:
            assessment = self._assess(connection_id, sale_id, state=state, entry=entry, products=known.products)
        except MeliError as exc:
            return self._record_failure(connection_id, sale_id, exc, trigger, attempt_key)
        report = assessment.report
        if report.reflected:
            return self._result(connection_id, sale_id, Outcome.ALREADY_REFLECTED, detail="Already in the platform.")
        if report.blocked:
            return self._settle_blocked(report, trigger)
        assert assessment.order is not None  # not blocked means ML confirmed the sale
        record = build_record(connection_id, assessment.order, assessment.lines, trigger, attempt_key)
        stored = self._stores.sales.reflect(record, attempts=attempt, row_absent=state is None)
        resolved = self._stores.errors.resolve(connection_id, sale_id) if entry is not None else None
        if not stored and attempt_key is not None:
            # Lost the conditional write: to a duplicate of this very attempt (SQS redelivery, task retry), or to
            # someone else. Only the latter makes it "already reflected" for this request.
            current = self._stores.sales.get(connection_id, sale_id)
            stored = bool(current and current.record and current.record.import_key == attempt_key)
        outcome = Outcome.REFLECTED if stored else Outcome.ALREADY_REFLECTED
        return self._release_waiting(resolved, self._result(connection_id, sale_id, outcome, record=record))

    def _release_waiting(self, entry: ErrorEntry | None, result: RecoveryResult) -> RecoveryResult:
        """Jobs that deferred this sale to a later sweep (their item was left in progress) get its outcome now,
        whichever path reached it: a later sweep, a person's resync or relink, the state machine, escalation."""
        if self._jobs is not None and entry is not None and result.outcome.terminal:
            for job_id in entry.waiting_jobs:
                settle_result(self._jobs, job_id, result, handed_over=True)
        return result

    def _record_failure(
        self, connection_id: str, sale_id: str, exc: MeliError, trigger: Trigger, attempt_key: str | None
    ) -> RecoveryResult:
        error_type = error_type_for(exc)
        entry = self._stores.errors.record_failure(
            connection_id,
            sale_id,
            ErrorEvent(error_type=error_type, message=str(exc), trigger=trigger, attempt_key=attempt_key),
            retryable=exc.transient,
        )
        return RecoveryResult(
            connection_id=connection_id,
            sale_id=sale_id,
            outcome=Outcome.IN_PROGRESS,
            reason=None if exc.transient else Reason.MARKETPLACE_REFUSED,
            detail=str(exc),
            attempts=entry.attempts,
            retryable=exc.transient,
            error_type=error_type.value,
        )

    def _settle_blocked(self, report: VerificationReport, trigger: Trigger) -> RecoveryResult:
        reason = report.reason or Reason.NOT_A_SALE_ID
        blocking = first_blocking(report.checks)
        detail = blocking.detail if blocking else None
        kind = report.identifier.kind if reason is Reason.NOT_A_SALE_ID else None
        sale_ids = report.identifier.sale_ids if reason is Reason.NOT_A_SALE_ID else None
        pack_id = None
        if reason is Reason.CART_SALE:  # the cart procedure needs the pack and every sale in it
            sale_ids, pack_id = report.pack_sale_ids, report.pack_id
        self._stores.sales.set_outcome(
            report.connection_id,
            report.sale_id,
            Outcome.NOT_REFLECTABLE,
            reason=reason,
            detail=detail,
            identifier_kind=kind,
            sale_ids=sale_ids,
            pack_id=pack_id,
        )
        if report.in_error_list or reason in WAITING_FOR_PRODUCT:
            # The sale waits in the error list, not retryable, until the seller fixes what the reason names.
            # The blocking listings are kept on the entry: when they are fixed, the error sweep heals the sale.
            listings = (
                [
                    ListingRef(item_id=line.item_id, variation_id=line.variation_id)
                    for line in report.lines
                    if line.reason
                ]
                if reason in WAITING_FOR_PRODUCT
                else None
            )
            self._stores.errors.record_failure(
                report.connection_id,
                report.sale_id,
                ErrorEvent(error_type=reason.value, message=detail or reason.value, trigger=trigger),
                retryable=False,
                reason=reason,
                count_attempt=False,
                listings=listings,
            )
        result = self._result(
            report.connection_id,
            report.sale_id,
            Outcome.NOT_REFLECTABLE,
            reason=reason,
            detail=detail,
            identifier_kind=kind,
            sale_ids=sale_ids,
            pack_id=pack_id,
        )
        return self._release_waiting(report.error_entry, result)

    @staticmethod
    def _result(connection_id: str, sale_id: str, outcome: Outcome, **fields: Any) -> RecoveryResult:
        reason = fields.get("reason")
        if reason is not None and "seller_action" not in fields:
            fields["seller_action"] = SELLER_ACTIONS.get(reason)
        return RecoveryResult(connection_id=connection_id, sale_id=sale_id, outcome=outcome, **fields)

    # --- resync (seed step 3) ---------------------------------------------------------------------------------------

    def resync(
        self,
        connection_id: str,
        sale_id: str,
        *,
        trigger: Trigger = Trigger.API,
        attempt_key: str | None = None,
        escalate_on_failure: bool = True,
        require_listed: bool = True,
        execution_id: str | None = None,
        known: KnownReads | None = None,
    ) -> RecoveryResult:
        """Re-run the import of a sale in the error list. Still failing afterwards → the help desk (seed step 3).

        ``require_listed=False`` (the state machine) tolerates an entry that vanished since verification."""
        self.connection(connection_id)
        sale_id = self._require_sale_id(connection_id, sale_id)
        if require_listed and self._stores.errors.get(connection_id, sale_id) is None:
            state = self._stores.sales.get(connection_id, sale_id)
            if state is not None and state.record is not None:
                return self._result(
                    connection_id, sale_id, Outcome.ALREADY_REFLECTED, detail="Already in the platform."
                )
            raise NotInErrorList(connection_id, sale_id)
        result = self._attempt(connection_id, sale_id, trigger, attempt_key, known=known)
        if result.outcome is Outcome.IN_PROGRESS and escalate_on_failure:
            return self.escalate(
                connection_id,
                sale_id,
                reason=Reason.RESYNC_FAILED if result.retryable else Reason.MARKETPLACE_REFUSED,
                attempts=1,
                execution_id=execution_id,
            )
        return result.model_copy(update={"attempts": 1})

    def retry_listed(self, connection_id: str, sale_id: str, *, attempt_key: str, max_attempts: int) -> RecoveryResult:
        """An automatic retry of a listed sale (the error sweep, self-heal). Unlike a person's resync, a transient
        failure is not escalated at once: the entry keeps its backoff and the next sweep retries it, until
        ``max_attempts`` are spent; then the help desk is paged (once per episode). ``IN_PROGRESS`` = retry later."""
        result = self.resync(
            connection_id,
            sale_id,
            trigger=Trigger.SCHEDULE,
            attempt_key=attempt_key,
            escalate_on_failure=False,
            require_listed=False,
        )
        if result.outcome is not Outcome.IN_PROGRESS:
            return result
        entry = self._stores.errors.get(connection_id, sale_id)
        attempts = entry.attempts if entry is not None else max_attempts
        if result.retryable and attempts < max_attempts:
            return result.model_copy(update={"attempts": attempts})
        return self.escalate(
            connection_id,
            sale_id,
            reason=Reason.RETRIES_EXHAUSTED if result.retryable else Reason.MARKETPLACE_REFUSED,
            attempts=attempts,
            last_error=result.detail,
        )

    # --- relink (seed step 4) ---------------------------------------------------------------------------------------

    def relink_attempt(
        self,
        connection_id: str,
        sale_id: str,
        *,
        attempt: int,
        trigger: Trigger = Trigger.STATE_MACHINE,
        attempt_key: str | None = None,
        known: KnownReads | None = None,
    ) -> RecoveryResult:
        """One relink attempt: fetch the sale from ML by id and import it. A failure is returned, not raised:
        ``outcome`` stays IN_PROGRESS and ``retryable`` says whether another attempt can succeed."""
        self.connection(connection_id)
        parse_identifier(sale_id)
        result = self._attempt(connection_id, sale_id.strip(), trigger, attempt_key, attempt=attempt, known=known)
        return result.model_copy(update={"attempts": attempt})

    def start_relink(self, connection_id: str, sale_id: str, *, request_key: str | None = None) -> RelinkStart:
        """Start the relink state machine for one sale (API). One execution per sale and request."""
        if self._workflow is None:
            raise RuntimeError("no relink workflow configured")
        self.connection(connection_id)
        sale_id = self._require_sale_id(connection_id, sale_id)
        state = self._stores.sales.get(connection_id, sale_id)
        if state is not None and state.record is not None:
            return RelinkStart(Outcome.ALREADY_REFLECTED)
        running = state.latest_execution if state else None
        if running is not None and running.status == "RUNNING":
            status = self._workflow.status(running.execution_arn)
            if status == "RUNNING":
                return RelinkStart(Outcome.IN_PROGRESS, running)
        # Without a client key, a double click inside the same minute maps to the same execution name.
        key = request_key or f"minute-{int(self._clock() // 60)}"
        ref = self._workflow.start(
            execution_name(connection_id, sale_id, key), {"connection_id": connection_id, "sale_id": sale_id}
        )
        self._stores.sales.set_execution(connection_id, sale_id, ref)
        self._stores.sales.set_outcome(connection_id, sale_id, Outcome.IN_PROGRESS)
        return RelinkStart(Outcome.IN_PROGRESS, ref)

    def track_execution(self, connection_id: str, sale_id: str, ref: ExecutionRef) -> None:
        """The sale continues in a relink execution (started by a bulk job): show it on the sale's state."""
        self._stores.sales.set_execution(connection_id, sale_id, ref)
        self._stores.sales.set_outcome(connection_id, sale_id, Outcome.IN_PROGRESS)

    # --- escalate ---------------------------------------------------------------------------------------------------

    def escalate(
        self,
        connection_id: str,
        sale_id: str,
        *,
        reason: Reason,
        attempts: int,
        execution_id: str | None = None,
        last_error: str | None = None,
    ) -> RecoveryResult:
        """Page the help desk once for this failure episode and settle the sale as escalated."""
        if self._notifier is None:
            raise RuntimeError("no help-desk notifier configured")
        errors = self._stores.errors
        entry = errors.get(connection_id, sale_id)
        if entry is None:
            entry = errors.record_failure(
                connection_id,
                sale_id,
                ErrorEvent(error_type=ErrorType.IMPORT_FAILED, message=last_error or reason.value),
                retryable=True,
                count_attempt=False,
            )
        if errors.claim_escalation(connection_id, sale_id, entry.episode):
            try:
                self._notifier.publish(_escalation_message(entry, reason, attempts, execution_id))
            except Exception:
                errors.release_escalation(connection_id, sale_id, entry.episode)
                raise
        self._stores.sales.set_outcome(
            connection_id, sale_id, Outcome.ESCALATED, reason=reason, detail=entry.message, attempts=attempts
        )
        result = self._result(
            connection_id, sale_id, Outcome.ESCALATED, reason=reason, detail=entry.message, attempts=attempts
        )
        return self._release_waiting(entry, result)

    # --- reads ------------------------------------------------------------------------------------------------------

    def sale_state(self, connection_id: str, sale_id: str) -> tuple[SaleState, ErrorEntry | None]:
        self.connection(connection_id)
        sale_id = self._require_sale_id(connection_id, sale_id)
        state = self._stores.sales.get(connection_id, sale_id)
        entry = self._stores.errors.get(connection_id, sale_id)
        if state is None and entry is None:
            raise SaleNeverSeen(connection_id, sale_id)
        if state is None:
            assert entry is not None
            blocked = entry.reason is not None and not entry.retryable
            state = SaleState(
                connection_id=connection_id,
                sale_id=sale_id,
                outcome=Outcome.NOT_REFLECTABLE if blocked else Outcome.PENDING,
                reason=entry.reason if blocked else None,
                detail=entry.message,
                attempts=entry.attempts,
            )
        execution = state.latest_execution
        if execution is not None and execution.status == "RUNNING" and self._workflow is not None:
            execution = execution.model_copy(update={"status": self._workflow.status(execution.execution_arn)})
            state = state.model_copy(update={"latest_execution": execution})
        return state, entry

    def stored_outcome(self, connection_id: str, sale_id: str) -> RecoveryResult | None:
        """The terminal outcome the service recorded for the sale, if it has one."""
        state = self._stores.sales.get(connection_id, sale_id)
        if state is None or not state.outcome.terminal:
            return None
        return self._result(
            connection_id,
            sale_id,
            state.outcome,
            reason=state.reason,
            detail=state.detail,
            attempts=state.attempts,
            record=state.record,
        )

    def list_errors(
        self, connection_id: str, *, error_type: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> Page[ErrorEntry]:
        self.connection(connection_id)
        return self._stores.errors.list(connection_id, error_type=error_type, limit=limit, cursor=cursor)


def _identifier_check(resolution: Resolution) -> Check:
    ident = resolution.identifier
    if resolution.is_sale:
        return Check(name="sale_id", ok=True, detail="Mercado Libre confirms this is a sale id of this connection.")
    detail = ident.detail or "Not a sale id."
    if ident.sale_ids:
        detail += f" Sale ids: {', '.join(ident.sale_ids)}."
    return Check(name="sale_id", ok=False, detail=detail.strip(), reason=resolution.reason)


def _escalation_message(
    entry: ErrorEntry, reason: Reason, attempts: int, execution_id: str | None
) -> EscalationMessage:
    return EscalationMessage(
        connection_id=entry.connection_id,
        sale_id=entry.sale_id,
        reason=reason,
        summary=f"Sale {entry.sale_id} of connection {entry.connection_id}: {SELLER_ACTIONS[reason]}",
        attempts=attempts,
        error_type=entry.error_type,
        last_error=entry.message,
        first_seen=entry.first_seen,
        episode=entry.episode,
        history=entry.history,
        execution_id=execution_id,
    )
