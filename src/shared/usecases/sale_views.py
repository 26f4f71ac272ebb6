"""Reads: where a sale stands (GET .../sales/{s}), its stored outcome, the error list.

A sale shown in progress always has a live owner behind it: when the owner's execution is found closed while the
sale still says in progress (its status event not handled yet), the read settles it first (the reaper's rule).
A sale of a cart stands where its cart stands (the row keyed by the pack id): its answer is the cart's, with the
pack id and the cart's sale ids.
"""

from __future__ import annotations

from shared.errors import NotACart, PackNeverSeen, SaleNeverSeen
from shared.lifecycle.moves import is_cart_row
from shared.lifecycle.row import Snapshot
from shared.lifecycle.table import State
from shared.models import (
    SELLER_ACTIONS,
    ErrorEntry,
    IdentifierKind,
    IdentifierResolution,
    PackState,
    RecoveryResult,
    SaleState,
)
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
        if not snap.reflected and not is_cart_row(snap.row):
            cart = ctx.verifier.cart_of(connection_id, sale_id)
            if cart is not None:
                cart_snap = ctx.lifecycle.read(connection_id, cart[0])
                if cart_snap.state is not State.NEVER_SEEN:
                    cart_snap = self._with_execution_status(cart_snap)
                    view = cart_snap.row.view().model_copy(
                        update={
                            "sale_id": sale_id,
                            "identifier_kind": None,
                            "pack_id": cart[0],
                            "sale_ids": cart_snap.row.sale_ids or cart[1],
                        }
                    )
                    return view, cart_snap.entry
        if snap.state is State.NEVER_SEEN:
            raise SaleNeverSeen(connection_id, sale_id)
        snap = self._with_execution_status(snap)
        return snap.row.view(), snap.entry

    def pack_state(self, connection_id: str, pack_id: str) -> PackState:
        """GET .../packs/{p}: where the cart stands (its row, keyed by the pack id)."""
        ctx = self._ctx
        ctx.verifier.connections.get(connection_id)
        pack_id = ctx.verifier.require_sale_id(connection_id, pack_id)
        snap = ctx.lifecycle.read(connection_id, pack_id)
        if snap.state is State.NEVER_SEEN:
            of_cart = ctx.verifier.cart_of(connection_id, pack_id)  # a cart's sale the service has met (no ML call)
            if of_cart is not None and of_cart[0] != pack_id:
                cart_id = of_cart[0]
                raise not_a_cart_but_a_sale(
                    pack_id,
                    f"It is a sale of cart {cart_id}: GET /connections/{connection_id}/packs/{cart_id} says where the "
                    "cart stands.",
                )
            raise PackNeverSeen(connection_id, pack_id)
        if held_as_a_sale(snap):
            cart = f" of cart {snap.row.pack_id}" if snap.row.pack_id else ""
            raise not_a_cart_but_a_sale(
                pack_id,
                f"The service holds it as a sale{cart}: GET /connections/{connection_id}/sales/{pack_id} says where "
                "it stands.",
            )
        snap = self._with_execution_status(snap)
        row = snap.row
        assert row.outcome is not None
        return PackState(
            connection_id=connection_id,
            pack_id=pack_id,
            sale_ids=row.sale_ids or (row.record.sale_ids if row.record else None) or [],
            outcome=row.outcome,
            reason=row.reason,
            sale_id=row.blocking_sale_id,
            detail=row.detail,
            seller_action=SELLER_ACTIONS.get(row.reason) if row.reason else None,
            attempts=row.attempts,
            episode=row.episode,
            updated_at=row.updated_at,
            latest_execution=row.latest_execution,
            record=row.record,
            error_entry=snap.entry,
        )

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


def held_as_a_sale(snap: Snapshot) -> bool:
    """The row is known to be a sale's, not a cart's: it follows a cart (its ``pack_id`` is another id), or it holds a
    single sale's record. A cart's row does not always say it is one (a console run's claim, before the cart is read,
    carries no pack id), so a row that says neither is answered as the cart's."""
    row = snap.row
    if row.pack_id is not None and row.pack_id != row.sale_id:
        return True
    return row.record is not None and row.record.sale_id == row.sale_id and row.record.pack_id != row.sale_id


def not_a_cart_but_a_sale(sale_id: str, detail: str) -> NotACart:
    """The pack routes' 422 for an id the service knows as a sale; ``detail`` names the route that answers it."""
    return NotACart(
        IdentifierResolution(identifier=sale_id, kind=IdentifierKind.SALE, sale_ids=[sale_id], detail=detail)
    )
