"""A cart's sales follow their cart: the cart (a pack of several sales) is reprocessed and stored whole on the row
keyed by its pack id, and a sale of it that has a row of its own (listed in the error list by the platform, handed
to an execution before the cart was known) takes the cart's settled outcome (``follow_cart``): its entry leaves
the error list, so a failed cart is listed once, under its pack id.
"""

from __future__ import annotations

from shared.lifecycle import moves
from shared.lifecycle.change import Decision
from shared.lifecycle.row import Snapshot
from shared.lifecycle.table import Actor, State
from shared.models import RecoveryResult
from shared.usecases.context import Context


def follow(
    ctx: Context,
    connection_id: str,
    sale_id: str,
    pack_id: str,
    *,
    actor: Actor,
    settled_by: str,
    owner: str | None = None,
    seen: Snapshot | None = None,
) -> Snapshot | None:
    """The sale's row moved to its cart's settled outcome, if it has a row that does not say so yet. ``owner``: the
    execution that owns the sale (only it may settle a sale in progress). None when the cart is not settled."""
    cart = ctx.lifecycle.read(connection_id, pack_id).row
    if cart.outcome is None or not cart.outcome.terminal:
        return None

    def decide(snap: Snapshot) -> Decision[None]:
        if snap.state is State.NEVER_SEEN or snap.reflected:  # no row, or reflected alone before it was a cart
            return Decision(None)
        if snap.state is State.IN_PROGRESS and not (owner is not None and snap.owned_by(owner)):
            return Decision(None)
        row = snap.row
        same = row.pack_id == pack_id and row.outcome == cart.outcome and row.reason == cart.reason
        if snap.state.settled and same and snap.entry is None:
            return Decision(None)  # follows it already
        return Decision(None, moves.follow_cart(snap, actor, cart=cart, settled_by=settled_by))

    snap, _ = ctx.lifecycle.run(connection_id, sale_id, decide, seen=seen)
    return snap


def for_sale(answer: RecoveryResult, sale_id: str, pack_id: str, sale_ids: list[str] | None) -> RecoveryResult:
    """The cart's answer as the answer about one of its sales: the cart's outcome, with its pack and sales."""
    return answer.model_copy(update={"sale_id": sale_id, "pack_id": pack_id, "sale_ids": answer.sale_ids or sale_ids})
