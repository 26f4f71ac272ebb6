"""`make run`'s epilogue: a paid sale reaches Mercado Libre after the main job and nobody notifies the platform.
The reconciliation schedule (an EventBridge rule in the cloud; moto never fires rules, so it is invoked directly
with a real scheduled event) finds it, queues it through the bulk path, and the worker reflects it.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from rich.console import Console

from devstack.stack import EmbeddedStack
from devstack.template import ROOT
from shared.models import Outcome

TEMPLATE_SALE = 2000009101000011  # a healthy sale of the default scenario
UNNOTIFIED_SALE = 2000009199000017
UNNOTIFIED_PACK = 2000006199000017
ART = timezone(timedelta(hours=-3))


def _ml_date(when: datetime) -> str:
    return f"{when.astimezone(ART):%Y-%m-%dT%H:%M:%S}.000-03:00"


def scheduled_event(stack: EmbeddedStack, rule: str) -> dict[str, Any]:
    """The sample event of events/schedules/, stamped now and aimed at this stack's rule."""
    event: dict[str, Any] = json.loads((ROOT / "events" / "schedules" / f"{rule}.json").read_text())
    now = datetime.now(UTC)
    stage = stack.aws.parameters.get("Stage", "local")
    event.update(
        id=str(uuid.uuid4()),
        time=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        region=stack.aws.region,
        resources=[f"arn:aws:events:{stack.aws.region}:123456789012:rule/sales-recovery-{stage}-{rule}"],
    )
    return event


def add_unnotified_sale(stack: EmbeddedStack) -> str | None:
    """A copy of a healthy sale with a new id, paid a few minutes ago: it arrived in ML after the job."""
    template = stack.meli.order(TEMPLATE_SALE)
    if template is None:  # another scenario: nothing to copy
        return None
    order = copy.deepcopy(template)
    now = datetime.now(UTC)
    order.update(
        id=UNNOTIFIED_SALE,
        date_created=_ml_date(now - timedelta(minutes=12)),
        date_closed=_ml_date(now - timedelta(minutes=11)),
        last_updated=_ml_date(now - timedelta(minutes=10)),
        pack_id=UNNOTIFIED_PACK,  # a pack of its own, as ML gives every order
    )
    for payment in order.get("payments", []):
        payment["order_id"] = UNNOTIFIED_SALE
    stack.meli.upsert_order(order, notify=False)  # ML never notified it (a topic it disabled meanwhile, §8)
    return str(UNNOTIFIED_SALE)


def reconcile_unnotified_sale(stack: EmbeddedStack, console: Console, *, timeout: float = 60.0) -> bool:
    """Returns False only when the reconciled sale did not reach a terminal outcome."""
    sale_id = add_unnotified_sale(stack)
    if sale_id is None:
        return True
    console.print(f"\nSale {sale_id} is paid in Mercado Libre after the job; nobody notifies the platform.")
    result = stack.aws.runtime.invoke("ReconcileFunction", scheduled_event(stack, "reconcile"))
    runs = {run["connection_id"]: run for run in result["connections"]}
    found = sum(run["found"] for run in runs.values())
    enqueued = sum(run["enqueued"] for run in runs.values())
    console.print(
        f"Reconciliation (scheduled event): {found} paid sale(s) found in the trailing window, {enqueued} missing "
        f"enqueued: {', '.join(s for run in runs.values() for s in run.get('sale_ids', [])) or '-'}."
    )
    service = stack.service()
    connection_id = next((c for c, run in runs.items() if sale_id in run.get("sale_ids", [])), "mla-main")
    deadline = time.monotonic() + timeout
    outcome = None
    while time.monotonic() < deadline:
        try:
            state, _ = service.views.sale_state(connection_id, sale_id)
        except LookupError:
            state = None
        outcome = state.outcome if state is not None else None
        if outcome is not None and outcome.terminal:
            break
        time.sleep(0.2)
    colour = "green" if outcome in (Outcome.REFLECTED, Outcome.ALREADY_REFLECTED) else "red"
    console.print(f"Sale {sale_id}: [{colour}]{outcome.value if outcome else 'never seen'}[/] (without a human).")
    return outcome is not None and outcome.terminal
