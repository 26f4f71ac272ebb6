"""ML's notifications: how fast the callback answers, against ML's 500 ms, and how long a new paid sale takes from its
creation in (simulated) Mercado Libre to ``reflected``.

1. **Callback.** The intake handler (``src/functions/notifications_intake/app.py``) on a warm function, invoked with
   whole API Gateway proxy events (the sample of events/notifications/, each with a new ``_id``) through the local
   Lambda runtime of the embedded stack (template.yaml on moto's server, IAM of its role enforced), after
   ``--warm`` warm-up calls. Measured per call: wall time and the handler's CPU (``time.thread_time`` in the handler's
   thread). ML's clock runs from its POST to our 200, so at 256 MB (the template's) the CPU stretches by
   1769 / 256 = 6.9x (Lambda gives one vCPU at 1,769 MB) and the one SendMessage waits ``--round-trip-ms`` in the
   region (the seller look-up is remembered while warm); the projection is CPU x 6.9 + one round trip.
2. **End to end.** ``--sales`` new paid orders, one at a time, each upserted in the simulator (ML notifies it, three
   copies, to the local API Gateway's callback): seconds from the upsert to the sale's record (``imported_at``),
   through the intake, the notifications queue (the processor's one-second batching window), the notification job,
   the bulk queue and the worker's ML read. Locally every queue is polled by the devstack's poller (1 s long polls).

Prints p50 / p99 / max and the ratios against 500 ms.

    .venv/bin/python benchmarks/notifications.py [--calls 400] [--warm 30] [--sales 8] [--round-trip-ms 20]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "1")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")

ML_DEADLINE_MS = 500.0  # "HTTP 200 within 500 milliseconds" (reference/meli-api.md §8)
FULL_CORE_MB = 1769
TEMPLATE_SALE = 2000009101000011


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def callback(stack: Any, calls: int, warm: int) -> tuple[list[float], list[float]]:
    sample = json.loads((ROOT / "events" / "notifications" / "post-notification.json").read_text())
    note = json.loads(sample["body"])
    cpu: list[float] = []
    runtime = stack.aws.runtime

    def probe(handler: Any) -> Any:
        def timed(event: dict[str, Any], context: Any) -> Any:
            started = time.thread_time()
            try:
                return handler(event, context)
            finally:
                cpu.append((time.thread_time() - started) * 1000)

        return timed

    walls: list[float] = []
    with runtime.intercept("NotificationsIntakeFunction", probe):
        for i in range(warm + calls):
            event = copy.deepcopy(sample)
            event["body"] = json.dumps({**note, "_id": uuid.uuid4().hex[:24]})
            started = time.perf_counter()
            answer = runtime.invoke("NotificationsIntakeFunction", event)
            elapsed = (time.perf_counter() - started) * 1000
            assert answer["statusCode"] == 200 and json.loads(answer["body"])["status"] == "queued", answer
            if i >= warm:
                walls.append(elapsed)
    return walls, cpu[warm:]


def end_to_end(stack: Any, sales: int) -> list[float]:
    template = stack.meli.order(TEMPLATE_SALE)
    service = stack.service()
    seconds = []
    for n in range(sales):
        order = copy.deepcopy(template)
        sale_id = 2000009800000000 + n * 10 + 7
        order.update(id=sale_id, pack_id=sale_id - 3_000_000_000_000)
        for payment in order.get("payments", []):
            payment["order_id"] = sale_id
        created = time.time()
        stack.meli.upsert_order(order, copies=3)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                state, _ = service.views.sale_state("mla-main", str(sale_id))
            except LookupError:
                state = None
            if state is not None and state.record is not None:
                seconds.append(state.record.imported_at.timestamp() - created)
                break
            time.sleep(0.02)
        else:
            raise TimeoutError(f"sale {sale_id} not reflected within 60 s")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--warm", type=int, default=30)
    parser.add_argument("--sales", type=int, default=8)
    parser.add_argument("--round-trip-ms", type=float, default=20.0, help="one SQS SendMessage in the region")
    parser.add_argument("--memory-mb", type=int, default=256, help="the intake function's MemorySize")
    args = parser.parse_args(argv)

    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger().setLevel(logging.ERROR)
    from devstack.simulator.scenario import Scenario
    from devstack.stack import EmbeddedStack
    from tests.conftest import default_scenario_data  # the default without its global rules (latency, OAuth 429s)

    data = default_scenario_data()
    data.pop("new_orders", None)
    data["notifications"] = {"copies": 3}
    with EmbeddedStack(Scenario.model_validate(data), notifications=True, log_level="ERROR") as stack:
        walls, cpu = callback(stack, args.calls, args.warm)
        e2e = end_to_end(stack, args.sales)
    stretch = FULL_CORE_MB / args.memory_mb
    projected = [c * stretch + args.round_trip_ms for c in cpu]
    print(f"callback, warm, {len(walls)} calls")
    for name, values in (
        ("wall (local runtime, moto over loopback)", walls),
        ("handler CPU (full core)", cpu),
        (f"projected at {args.memory_mb} MB (CPU x {stretch:.1f} + {args.round_trip_ms:.0f} ms SQS)", projected),
    ):
        p50, p99 = statistics.median(values), percentile(values, 0.99)
        print(
            f"  {name}: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(values):.1f} ms"
            f" -> p99 / 500 ms = {p99 / ML_DEADLINE_MS:.3f}"
        )
    print(
        f"end to end, {len(e2e)} new paid sales, creation in ML -> reflected: p50 {statistics.median(e2e):.2f} s, "
        f"max {max(e2e):.2f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
