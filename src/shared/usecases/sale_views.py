"""Reads: where a sale stands (GET .../sales/{s}), its stored outcome, the error list.

A sale shown in progress always has a live owner behind it: when the owner's execution is found closed while the
sale still says in progress (its status event not handled yet), the read settles it first (the reaper's rule).
"""

from __future__ import annotations

from shared.errors import SaleNeverSeen
from shared.lifecycle.row import Snapshot
from shared.lifecycle.table import State
from shared.models import ErrorEntry, RecoveryResult, SaleState
from shared.stores.base import Page
from shared.usecases.context import Context, stored
from shared.usecases.reaper import ENDED_BADLY, Reaper


class SaleViews:
    def __init__(self, context: Context, reaper: Reaper) -> None:
        self._ctx = context
        self._reaper = reaper

    def sale_state(self, connection_id: str, sale_id: str) -> tuple[SaleState, ErrorEntry | None]:
        ctx = self._ctx
        ctx.verifier.connections.get(connection_id)
        sale_id = ctx.verifier.require_sale_id(connection_id, sale_id)
        snap = ctx.lifecycle.read(connection_id, sale_id)
        if snap.state is State.NEVER_SEEN:
            raise SaleNeverSeen(connection_id, sale_id)
        snap = self._with_execution_status(snap)
        return snap.row.view(), snap.entry

    def _with_execution_status(self, snap: Snapshot) -> Snapshot:
        execution = snap.row.latest_execution
        workflow = self._ctx.workflow
        if workflow is None or execution is None or execution.status != "RUNNING":
            return snap
        status = workflow.status(execution.execution_arn)
        if status is None:  # claimed, not started yet (or its starter died: the reaper starts it)
            status = "STARTING"
        if snap.owned_by(execution.name) and status in ENDED_BADLY:
            self._reaper.execution_ended(snap.connection_id, snap.sale_id, execution_name=execution.name, status=status)
            snap = self._ctx.lifecycle.read(snap.connection_id, snap.sale_id)
            execution = snap.row.latest_execution
            if execution is None:
                return snap
        updated = execution.model_copy(update={"status": status})
        return Snapshot(row=snap.row.model_copy(update={"latest_execution": updated}), entry=snap.entry)

    def stored_outcome(self, connection_id: str, sale_id: str) -> RecoveryResult | None:
        """The terminal outcome the service recorded for the sale, if it has one."""
        snap = self._ctx.lifecycle.read(connection_id, sale_id)
        if snap.row.outcome is None or not snap.row.outcome.terminal:
            return None
        return stored(snap)

    def list_errors(
        self, connection_id: str, *, error_type: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> Page[ErrorEntry]:
        self._ctx.verifier.connections.get(connection_id)
        return self._ctx.errors.list(connection_id, error_type=error_type, limit=limit, cursor=cursor)
