"""A connection's state: ``active``, or ``needs_reauthorization`` until the seller authorises the application again.

Mercado Libre stops accepting a connection for reasons no retry can cure: the refresh token is refused
(``invalid_grant``: the seller removed the application, changed the password, the token expired unused), ML answers a
connection-level 403 (``access_denied``, missing scopes, a blocked application, an IP not allow-listed, an inactive
user), or the connection's tokens belong to another ML user. Retrying each sale would page the help desk once per
sale; instead the connection changes state, once (a conditional write on its row), and:

- no ML call is made for it while it needs reauthorization (``ConnectionGate.require_active``, checked by the ML
  client before every request and by the token manager before every refresh);
- its sales answer ``not_reflectable`` / ``connection_needs_reauthorization`` with what the seller must do, and wait
  in the error list for the reconnection;
- the help desk gets one message for the revocation: the writer that moved the state takes it (``claim_alert``) and
  sends it; a function without the help desk's topic leaves it due and the error sweep sends it;
- storing tokens newer than the refused ones (the seller reconnected) makes it active again, noticed by whoever looks
  next (the sweep always looks, and then retries the waiting sales).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Protocol

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field

from shared import clock
from shared.meli.errors import ConnectionNeedsReauthorization, MeliError
from shared.models import (
    SELLER_ACTIONS,
    Check,
    Connection,
    ConnectionState,
    ErrorEntry,
    IdentifierKind,
    IdentifierResolution,
    NextAction,
    Reason,
    VerificationReport,
)
from shared.stores.base import ConnectionStore

logger = Logger(child=True)

DECIDING_WAIT_SECONDS = 10.0  # a refusal's verdict: a Secrets Manager read and two DynamoDB writes, with retries
ACTIVE_CACHE_SECONDS = 60.0  # an active row is trusted this long (a stale one costs one refused ML call, no more)
TOKEN_CHECK_SECONDS = 2.0  # how often a process reads a non-active connection's stored tokens for a reconnection

TOKEN_OWNER_MISMATCH = "token_owner_mismatch"


class ConnectionAlert(BaseModel):
    """The help desk's one message for a connection that needs the seller to reconnect (not a sale's page)."""

    model_config = ConfigDict(defer_build=True)

    kind: str = "connection_needs_reauthorization"
    connection_id: str
    seller_id: int
    site_id: str
    reason: Reason = Reason.CONNECTION_NEEDS_REAUTHORIZATION
    cause: str
    message: str
    seller_action: str
    since: datetime | None = None
    dedup_key: str = ""
    sent_at: datetime = Field(default_factory=clock.now)


class ConnectionAlerts(Protocol):
    def publish(self, alert: ConnectionAlert) -> str: ...


class SnsConnectionAlerts:
    """On the help-desk topic, beside the sales' pages (a message without ``sale_id``, with ``kind``)."""

    def __init__(self, sns_client: Any, topic_arn: str) -> None:
        self._sns = sns_client
        self._topic_arn = topic_arn

    def publish(self, alert: ConnectionAlert) -> str:
        response = self._sns.publish(
            TopicArn=self._topic_arn,
            Subject=f"Connection {alert.connection_id} needs the seller to reconnect Mercado Libre"[:100],
            Message=json.dumps(alert.model_dump(mode="json")),
            MessageAttributes={
                "connection_id": {"DataType": "String", "StringValue": alert.connection_id},
                "reason": {"DataType": "String", "StringValue": alert.reason.value},
                "dedup_key": {"DataType": "String", "StringValue": alert.dedup_key},
            },
        )
        return str(response["MessageId"])


def needs_reauthorization(connection: Connection) -> ConnectionNeedsReauthorization:
    cause = connection.state_cause or "unknown"
    said = f" ({connection.state_message})" if connection.state_message else ""
    return ConnectionNeedsReauthorization(
        f"Connection {connection.connection_id} needs the seller to authorise the application again: Mercado Libre "
        f"refused it ({cause}){said}. No Mercado Libre call is made for it until it is reconnected.",
        connection_id=connection.connection_id,
        cause_code=cause,
    )


class ConnectionGate:
    """Knows whether a connection may call ML, changes its state, and sends the help desk's one message.

    ``cached`` is the process's 60-second cache of connection rows (the verifier's); ``token_version`` reads the
    version of the connection's stored tokens (to notice a reconnection); ``alerts`` is the help desk, if this
    function may publish to it. Thread-safe.
    """

    def __init__(
        self,
        store: ConnectionStore,
        *,
        token_version: Callable[[str], int] | None = None,
        alerts: ConnectionAlerts | None = None,
        cached: Callable[[str], Connection] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = clock.now,
    ) -> None:
        self._store = store
        self._token_version = token_version
        self.alerts = alerts
        self.cached = cached
        self._monotonic = monotonic
        self._now = now
        self._known: dict[str, tuple[float, Connection]] = {}  # rows this process read fresh or wrote
        self._tokens_checked: dict[str, float] = {}
        self._lock = threading.Lock()
        self._on_reactivated: list[Callable[[str], None]] = []
        self._accepted: set[str] = set()  # connections ML accepted a request of, in this process
        self._probes: dict[str, threading.Lock] = {}
        self._deciding: dict[str, threading.Event] = {}  # ML refused the connection; the verdict is being written

    @contextmanager
    def first_calls(self, connection_id: str) -> Iterator[None]:
        """Until ML has accepted one request of the connection in this process, its requests go one at a time: if
        ML refuses the connection (a revoked refresh token, a connection-level 403), the threads queued behind the
        first request find it out without calling ML. Once one is accepted (``accepted``), requests run freely."""
        if connection_id in self._accepted:
            yield
            return
        with self._lock:
            probe = self._probes.setdefault(connection_id, threading.Lock())
        probe.acquire()
        held = True
        if connection_id in self._accepted:
            probe.release()
            held = False
        try:
            yield
        finally:
            if held:
                probe.release()

    @contextmanager
    def deciding(self, connection_id: str) -> Iterator[None]:
        """ML just refused the connection (a refresh token, a connection-level 403) and this thread is settling what
        that means (re-reading the stored tokens, writing the state). Meanwhile no other thread of the process sends
        a request for it: ``require_active`` waits for the verdict (``DECIDING_WAIT_SECONDS`` at most)."""
        event = threading.Event()
        with self._lock:
            self._deciding[connection_id] = event
        try:
            yield
        finally:
            with self._lock:
                if self._deciding.get(connection_id) is event:
                    del self._deciding[connection_id]
            event.set()

    def accepted(self, connection_id: str) -> None:
        """ML answered a request of the connection with anything but 401/403."""
        self._accepted.add(connection_id)

    def on_reactivated(self, listener: Callable[[str], None]) -> None:
        """Called with the connection id when this process sees the connection active again (forget old tokens)."""
        self._on_reactivated.append(listener)

    # --- reading ------------------------------------------------------------------------------------------------------

    def require_active(self, connection_id: str, *, fresh: bool = False) -> None:
        """Raise ConnectionNeedsReauthorization unless the connection may call ML. Makes no ML call; costs nothing
        for an active connection seen in the last minute, one read of its row otherwise (or with ``fresh``)."""
        with self._lock:
            pending = self._deciding.get(connection_id)
        if pending is not None:
            pending.wait(DECIDING_WAIT_SECONDS)  # the verdict lands in _known (revoke remembers the row)
        with self._lock:
            known = None if fresh else self._known.get(connection_id)
        if fresh:
            pass
        elif known is not None:
            seen_at, row = known
            if row.state is ConnectionState.ACTIVE and self._monotonic() - seen_at < ACTIVE_CACHE_SECONDS:
                return
        elif self.cached is not None:
            try:
                row = self.cached(connection_id)
            except LookupError:
                return  # an unknown connection: the caller's own look-up says so
            if row.state is ConnectionState.ACTIVE:
                return
        row_or_none = self.current(connection_id)
        if row_or_none is not None and row_or_none.state is not ConnectionState.ACTIVE:
            raise needs_reauthorization(row_or_none)

    def current(self, connection_id: str, *, check_tokens: bool = False) -> Connection | None:
        """The connection's row read now (None: no such connection). A connection that needs reauthorization is made
        active again when newer tokens are stored (read at most every ``TOKEN_CHECK_SECONDS``, or now with
        ``check_tokens``)."""
        row = self._store.get(connection_id)
        if row is None:
            return None
        if row.state is not ConnectionState.ACTIVE:
            row = self._maybe_reconnected(row, force=check_tokens)
        self._remember(row)
        return row

    def _maybe_reconnected(self, row: Connection, *, force: bool) -> Connection:
        if self._token_version is None:
            return row
        connection_id = row.connection_id
        now = self._monotonic()
        with self._lock:
            last = self._tokens_checked.get(connection_id)
            if not force and last is not None and now - last < TOKEN_CHECK_SECONDS:
                return row
            self._tokens_checked[connection_id] = now
        try:
            version = self._token_version(connection_id)
        except MeliError as exc:  # no secret, or Secrets Manager trouble: not reconnected as far as we can tell
            logger.warning(
                "could not read a connection's stored tokens",
                extra={"connection_id": connection_id, "error": type(exc).__name__},
            )
            return row
        refused = row.revoked_token_version if row.revoked_token_version is not None else -1
        if version <= refused:
            return row
        if self._store.mark_active(connection_id, token_version=version, at=self._now()):
            logger.info(
                "connection reconnected: active again",
                extra={"connection_id": connection_id, "token_version": version},
            )
        fresh = self._store.get(connection_id) or row
        if fresh.state is ConnectionState.ACTIVE:
            self._accepted.discard(connection_id)  # the first calls with the new tokens go one at a time again
            for listener in self._on_reactivated:
                listener(connection_id)
        return fresh

    def seller_id(self, connection_id: str) -> int | None:
        """The connection's seller (the ML user its tokens must belong to)."""
        with self._lock:
            known = self._known.get(connection_id)
        if known is not None:
            return known[1].seller_id
        if self.cached is not None:
            try:
                return self.cached(connection_id).seller_id
            except LookupError:
                return None
        row = self.current(connection_id)
        return row.seller_id if row is not None else None

    def _remember(self, row: Connection) -> None:
        with self._lock:
            self._known[row.connection_id] = (self._monotonic(), row)

    # --- changing ---------------------------------------------------------------------------------------------------

    def revoke(self, connection_id: str, *, token_version: int, cause: str, message: str) -> bool:
        """ML refused the connection (tokens of ``token_version``): it needs reauthorization. The one writer of this
        revocation sends the help desk its message (or leaves it due). True if the connection now needs
        reauthorization; False if it was reconnected with newer tokens meanwhile (the refusal is stale)."""
        moved = self._store.mark_needs_reauthorization(
            connection_id, token_version=token_version, cause=cause, message=message, at=self._now()
        )
        row = self._store.get(connection_id)
        if row is None:
            return True
        self._remember(row)
        if row.state is not ConnectionState.ACTIVE:
            self._accepted.discard(connection_id)
        if moved:
            logger.warning(
                "connection needs reauthorization: no Mercado Libre call is made for it until it is reconnected",
                extra={"connection_id": connection_id, "cause": cause, "token_version": token_version},
            )
            self.send_due_alert(connection_id)
        return row.state is not ConnectionState.ACTIVE

    def send_due_alert(self, connection_id: str) -> bool:
        """Send the revocation's message if it is due and this function may publish; True if sent now."""
        if self.alerts is None:
            return False
        try:
            taken = self._store.claim_alert(connection_id)
        except (ClientError, BotoCoreError):
            logger.warning("could not take a connection's alert", extra={"connection_id": connection_id})
            return False
        if taken is None:
            return False
        alert = ConnectionAlert(
            connection_id=taken.connection_id,
            seller_id=taken.seller_id,
            site_id=taken.site_id,
            cause=taken.state_cause or "unknown",
            message=taken.state_message or "",
            seller_action=SELLER_ACTIONS[Reason.CONNECTION_NEEDS_REAUTHORIZATION],
            since=taken.state_changed_at,
            dedup_key=f"connection:{taken.connection_id}:{taken.revoked_token_version}",
        )
        try:
            self.alerts.publish(alert)
        except (ClientError, BotoCoreError) as exc:
            logger.warning(
                "could not send a connection's alert; the error sweep sends it",
                extra={"connection_id": connection_id, "error": type(exc).__name__},
            )
            try:
                self._store.restore_alert(connection_id)
            except (ClientError, BotoCoreError):
                logger.error(
                    "a connection's alert was neither sent nor kept due", extra={"connection_id": connection_id}
                )
            return False
        return True


def reauthorization_report(
    connection_id: str,
    sale_id: str,
    refusal: ConnectionNeedsReauthorization,
    *,
    reflected: bool,
    entry: ErrorEntry | None,
) -> VerificationReport:
    """The verification of a sale whose connection needs reauthorization: blocked by the connection, with nothing
    asked to ML (the identifier is not confirmed)."""
    reason = None if reflected else Reason.CONNECTION_NEEDS_REAUTHORIZATION
    return VerificationReport(
        connection_id=connection_id,
        sale_id=sale_id,
        identifier=IdentifierResolution(
            identifier=sale_id,
            kind=IdentifierKind.SALE,
            sale_ids=[sale_id],
            detail="Not confirmed with Mercado Libre: the connection needs reauthorization.",
        ),
        checks=[
            Check(name="connection", ok=False, detail=str(refusal), reason=Reason.CONNECTION_NEEDS_REAUTHORIZATION)
        ],
        in_error_list=entry is not None,
        error_entry=entry,
        reflected=reflected,
        next_action=NextAction.NONE if reflected else NextAction.BLOCKED,
        reason=reason,
        seller_action=SELLER_ACTIONS[reason] if reason else None,
    )


class ConnectionView(BaseModel):
    """``GET /connections/{connection_id}``: the connection and whether it may call Mercado Libre."""

    model_config = ConfigDict(defer_build=True)

    connection_id: str
    seller_id: int
    site_id: str
    state: ConnectionState
    reason: Reason | None = Field(default=None, description="connection_needs_reauthorization when not active")
    cause: str | None = Field(
        default=None, description="What Mercado Libre answered: invalid_grant, access_denied, ..."
    )
    detail: str | None = None
    since: datetime | None = Field(default=None, description="When the connection entered this state")
    seller_action: str | None = Field(default=None, description="What the seller must do, when not active")

    @classmethod
    def of(cls, connection: Connection) -> ConnectionView:
        active = connection.state is ConnectionState.ACTIVE
        return cls(
            connection_id=connection.connection_id,
            seller_id=connection.seller_id,
            site_id=connection.site_id,
            state=connection.state,
            reason=None if active else Reason.CONNECTION_NEEDS_REAUTHORIZATION,
            cause=None if active else connection.state_cause,
            detail=None if active else connection.state_message,
            since=connection.state_changed_at,
            seller_action=None if active else SELLER_ACTIONS[Reason.CONNECTION_NEEDS_REAUTHORIZATION],
        )
