"""What every use case works with: the lifecycle (the only writer of per-sale state), the verifier (the seed's
checks against ML), the read-side stores, the job ledger, the help desk and the relink state machine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.connection_state import ConnectionGate
from shared.escalation import HelpDeskNotifier
from shared.jobs import JobStore
from shared.lifecycle import SaleLifecycle
from shared.lifecycle.moves import Backoff
from shared.lifecycle.row import Snapshot
from shared.models import SELLER_ACTIONS, Outcome, RecoveryResult
from shared.stores.base import ErrorStore, ProductStore
from shared.verification import Verifier
from shared.workflow import RelinkWorkflow


@dataclass
class Context:
    lifecycle: SaleLifecycle
    verifier: Verifier
    errors: ErrorStore
    products: ProductStore
    jobs: JobStore | None = None
    notifier: HelpDeskNotifier | None = None
    workflow: RelinkWorkflow | None = None
    gate: ConnectionGate | None = None  # whether the connection may call ML (shared.connection_state)

    @property
    def backoff(self) -> Backoff:
        timing = self.lifecycle.timing
        return Backoff(base=timing.retry_base, maximum=timing.retry_max)

    def require_workflow(self) -> RelinkWorkflow:
        if self.workflow is None:
            raise RuntimeError("no relink workflow configured")
        return self.workflow


def result(connection_id: str, sale_id: str, outcome: Outcome, **fields: Any) -> RecoveryResult:
    """A use case's answer; a reason brings what the seller must do."""
    reason = fields.get("reason")
    if reason is not None and "seller_action" not in fields:
        fields["seller_action"] = SELLER_ACTIONS.get(reason)
    return RecoveryResult(connection_id=connection_id, sale_id=sale_id, outcome=outcome, **fields)


def stored(snap: Snapshot, *, by: str | None = None, import_key: str | None = None) -> RecoveryResult:
    """The sale's current outcome as an answer. A reflected sale is ``reflected`` for whoever reflected it (``by``
    is the writer, or the record's import key is this attempt's) and ``already_reflected`` for everyone else."""
    row = snap.row
    assert row.outcome is not None
    outcome = row.outcome
    if row.record is not None:
        mine = (by is not None and row.settled_by == by) or (
            import_key is not None and row.record.import_key == import_key
        )
        outcome = Outcome.REFLECTED if mine else Outcome.ALREADY_REFLECTED
        return result(
            row.connection_id,
            row.sale_id,
            outcome,
            record=row.record,
            pack_id=row.record.pack_id if row.record.sale_ids is not None else None,
            sale_ids=row.record.sale_ids,
            attempts=row.attempts,
            episode=row.episode,
            detail=None if mine else "Already in the platform.",
        )
    return result(
        row.connection_id,
        row.sale_id,
        outcome,
        reason=row.reason,
        detail=row.detail,
        identifier_kind=row.identifier_kind,
        sale_ids=row.sale_ids,
        pack_id=row.pack_id,
        blocking_sale_id=row.blocking_sale_id,
        attempts=row.attempts,
        episode=row.episode,
    )
