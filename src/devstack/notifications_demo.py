"""`make run`'s notifications part: sales that appear in Mercado Libre while the main job runs (the scenario's
``new_orders``). ML notifies each to the callback (``POST /notifications/mercadolibre`` on the local API); one arrives
while the callback is down (the scenario's outage), spends ML's tries and waits in ML's missed feeds, which the
missed-feeds schedule (an EventBridge rule in the cloud; moto never fires rules, so it is invoked directly with a
real scheduled event) reads and feeds to the same processing.
"""

from __future__ import annotations

import time
from datetime import datetime

from rich.console import Console

from devstack.schedules_demo import scheduled_event
from devstack.stack import EmbeddedStack
from shared.models import Outcome


def _reflected_at(stack: EmbeddedStack, connection_id: str, sale_id: str, timeout: float) -> datetime | None:
    """When the sale's record was imported, once it is reflected (waits up to ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state, _ = stack.service().views.sale_state(connection_id, sale_id)
        except LookupError:
            state = None
        if state is not None and state.record is not None:
            return state.record.imported_at
        if state is not None and state.outcome is not None and state.outcome.terminal:
            return None
        time.sleep(0.1)
    return None


def show_notified_sales(stack: EmbeddedStack, console: Console, *, timeout: float = 60.0) -> bool:
    """Returns False when a sale that appeared did not get reflected."""
    notifier = stack.meli.notifier
    if notifier is None or not stack.scenario.new_orders:
        return True
    deadline = time.monotonic() + timeout
    while not notifier.idle() and time.monotonic() < deadline:
        time.sleep(0.1)
    sellers = {c.seller_id: c.connection_id for c in stack.scenario.connections}
    console.print("\n[bold]Sales that appeared in Mercado Libre during the job[/] (orders_v2 notifications):")
    ok = True
    missed: list[tuple[str, str, float]] = []
    for new in stack.scenario.new_orders:
        sale_id, connection_id = str(new.order["id"]), sellers[new.order["seller"]["id"]]
        deliveries = [d for d in notifier.deliveries if d.notification["resource"] == f"/orders/{sale_id}"]
        appeared = notifier.appeared.get(new.order["id"], time.time())
        if any(d.delivered for d in deliveries):
            at = _reflected_at(stack, connection_id, sale_id, timeout)
            ok &= at is not None
            seconds = f"{at.timestamp() - appeared:.1f}s after it appeared" if at else "[red]not reflected[/]"
            reads = stack.meli.count("GET", rf"^/orders/{sale_id}$")
            console.print(
                f"Sale {sale_id}: {len(deliveries)} notifications, each answered 200 at once "
                f"-> [green]reflected[/] {seconds}; Mercado Libre reads of the order: {reads}."
            )
        else:
            tries = sum(len(d.tries) for d in deliveries) // max(1, len(deliveries))
            console.print(
                f"Sale {sale_id}: the callback was down; {len(deliveries)} notifications x {tries} tries failed "
                "-> kept in Mercado Libre's missed feeds."
            )
            missed.append((connection_id, sale_id, appeared))
    if missed:
        result = stack.aws.runtime.invoke("MissedFeedsFunction", scheduled_event(stack, "missed-feeds"))
        runs = result["connections"]
        queued = [s for run in runs for s in run.get("sale_ids", [])]
        console.print(
            f"Missed-feeds schedule (scheduled event): {sum(r['found'] for r in runs)} missed notification(s) of "
            f"orders found, {sum(r['enqueued'] for r in runs)} queued for sale(s) {', '.join(queued) or '-'}."
        )
        for connection_id, sale_id, _appeared in missed:
            at = _reflected_at(stack, connection_id, sale_id, timeout)
            ok &= at is not None
            try:
                state, _ = stack.service().views.sale_state(connection_id, sale_id)
                outcome = state.outcome
            except LookupError:
                outcome = None
            colour = "green" if outcome is Outcome.REFLECTED else "red"
            reads = stack.meli.count("GET", rf"^/orders/{sale_id}$")
            console.print(
                f"Sale {sale_id}: [{colour}]{outcome.value if outcome else 'never seen'}[/] from the missed feeds "
                f"(without a human); Mercado Libre reads of the order: {reads}."
            )
    return ok
