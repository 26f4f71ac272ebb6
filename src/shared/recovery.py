"""The help article as a service: its use cases, wired once per warm container (``shared.wiring``).

Each use case lives in its own module under ``shared/usecases``; every write of per-sale state goes through the
sale lifecycle (``shared.lifecycle``). The rules (DESIGN §3):
- only transient failures (timeouts, 5xx, 429, token refresh trouble) are retried;
- a sale blocked by its product or its ML status is never escalated: the answer says what the seller must do;
- a sale is reflected once, whoever imports it; the help desk is paged once per sale and episode;
- every sale ends in one terminal outcome per episode, and a rerun of a settled sale starts a new episode.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.connection_state import ConnectionGate, ConnectionView, reauthorization_report
from shared.errors import ConnectionNotFound, NotASaleId, NotInErrorList, SaleNeverSeen
from shared.escalation import HelpDeskNotifier
from shared.identifiers import parse_identifier
from shared.jobs import JobStore
from shared.lifecycle import SaleLifecycle
from shared.lifecycle.moves import WAITING_FOR_PRODUCT
from shared.meli.errors import ConnectionNeedsReauthorization
from shared.meli.port import MarketplaceClientFactory
from shared.models import Connection, ErrorEntry, VerificationReport
from shared.stores.base import AliasStore, ConnectionStore, ErrorStore, ProductStore
from shared.usecases.bulk_sales import BulkSales
from shared.usecases.context import Context
from shared.usecases.escalations import Escalations
from shared.usecases.reaper import Reaper
from shared.usecases.relink_requests import RelinkRequests
from shared.usecases.resync_requests import ResyncRequests
from shared.usecases.sale_views import SaleViews
from shared.usecases.workflow_tasks import WorkflowTasks
from shared.verification import Connections, Verifier
from shared.workflow import RelinkWorkflow

__all__ = [
    "WAITING_FOR_PRODUCT",
    "ConnectionNotFound",
    "NotASaleId",
    "NotInErrorList",
    "RecoveryService",
    "SaleNeverSeen",
    "Stores",
]


@dataclass
class Stores:
    """The read side of the platform's state (per-sale state is read and written by the lifecycle)."""

    errors: ErrorStore
    products: ProductStore
    connections: ConnectionStore
    aliases: AliasStore


class RecoveryService:
    """The use cases over one set of stores and clients."""

    def __init__(
        self,
        stores: Stores,
        lifecycle: SaleLifecycle,
        marketplace: MarketplaceClientFactory,
        notifier: HelpDeskNotifier | None = None,
        workflow: RelinkWorkflow | None = None,
        *,
        jobs: JobStore | None = None,
        max_attempts: int = 6,
        gate: ConnectionGate | None = None,
    ) -> None:
        self.stores = stores
        self.lifecycle = lifecycle
        self.marketplace = marketplace
        self.workflow = workflow
        self.verifier = Verifier(
            products=stores.products,
            aliases=stores.aliases,
            marketplace=marketplace,
            connections=Connections(stores.connections),
        )
        # The connection's state (shared.connection_state); an active row is read from the verifier's 60 s cache.
        self.gate = gate or ConnectionGate(stores.connections)
        self.gate.cached = self.verifier.connections.get
        context = Context(
            lifecycle=lifecycle,
            verifier=self.verifier,
            errors=stores.errors,
            products=stores.products,
            jobs=jobs,
            notifier=notifier,
            workflow=workflow,
            gate=self.gate,
        )
        self.escalations = Escalations(context)
        self.reaper = Reaper(context, self.escalations)
        self.relinks = RelinkRequests(context)
        self.resyncs = ResyncRequests(context, self.escalations)
        self.tasks = WorkflowTasks(context, self.escalations)
        self.bulk_sales = BulkSales(context, self.escalations, max_attempts=max_attempts)
        self.views = SaleViews(context, self.reaper)

    def connection(self, connection_id: str) -> Connection:
        return self.verifier.connections.get(connection_id)

    def verify(self, connection_id: str, sale_id: str) -> VerificationReport:
        """The seed's checks, read-only (GET .../verification). Transient ML failures propagate."""
        self.connection(connection_id)
        sale_id = parse_identifier(sale_id).raw  # junk: 400 before anything is read
        snap = self.lifecycle.read(connection_id, sale_id)

        def cart_state(pack_id: str) -> tuple[bool, ErrorEntry | None]:
            cart = self.lifecycle.read(connection_id, pack_id)
            return cart.reflected, cart.entry

        try:
            return self.verifier.assess(
                connection_id, sale_id, reflected=snap.reflected, entry=snap.entry, state_of=cart_state
            ).report
        except ConnectionNeedsReauthorization as refusal:
            return reauthorization_report(connection_id, sale_id, refusal, reflected=snap.reflected, entry=snap.entry)

    def connection_view(self, connection_id: str) -> ConnectionView:
        """GET /connections/{c}: the connection's state, read now (a reconnection is noticed here too)."""
        self.connection(connection_id)  # junk and unknown connections: 400 / 404
        row = self.gate.current(connection_id, check_tokens=True)
        if row is None:
            raise ConnectionNotFound(connection_id)
        return ConnectionView.of(row)
