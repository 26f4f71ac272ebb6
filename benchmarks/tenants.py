"""Many sellers at once: does a small seller wait behind a big seller's backlog? (issue 14)

On the whole local stack (moto's server from template.yaml, the real handlers in-process with each function's IAM
role and ``Timeout`` enforced, the SQS poller with the template's ``BatchSize`` and ``MaximumConcurrency``, the
simulated Mercado Libre over HTTP), every parameter at the template's default except the per-connection ML quota
(``MeliRequestsPerSecond``, scaled so a run takes minutes):

1. one small job alone (5 ids of a seller of its own, after another warmed the functions up): how long a small job
   takes when nobody else works;
2. one big seller submits ``--big`` ids; ``--delay`` seconds later ten small sellers submit 5 ids each.

Each small job's completion time (from its own POST to every item terminal) is compared with the job alone; the big
job's ML request rate with its quota. The same run is made with lanes (``BulkLaneMessages``, the template's default)
and without (``BulkLaneMessages=0``, every message on the queue at submission, as before issue 14), each on a fresh
stack. Also printed: every function's longest invocation against its timeout, the DLQ, and the lost / duplicated
count (every accepted id must end with exactly one terminal item).

    .venv/bin/python benchmarks/tenants.py [--big 2000] [--small 10] [--quota-rps 20] [--delay 3] [--only on|off]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "sales-recovery")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")

import httpx  # noqa: E402

from benchmarks.bulk_at_defaults import defaults_stack, template_defaults  # noqa: E402
from devstack.simulator.scenario import Scenario  # noqa: E402
from devstack.template import load_template  # noqa: E402
from tests.conftest import DEFAULT_SCENARIO  # noqa: E402

BIG = "mla-main"
HEALTHY = 2000009101000011  # scenario case a: paid, its listing linked -> reflected
BIG_FIRST_ID, BIG_FIRST_PACK = 2000009700000000, 2000006700000000
SMALL_SELLER = 600_000_000
SMALL_IDS = 5


def small_name(n: int) -> str:
    return f"small-{n:02d}"


def build_scenario(big: int, smalls: int) -> Scenario:
    """The default scenario (no latency faults, no ML-side quota: each connection's quota is our limiter's), plus
    ``2 * smalls + 2`` sellers with 5 paid sales each (``smalls`` of them run beside the big job; the next one warms
    the functions up, the next is timed alone; the last ``smalls`` run together with no big job) and ``big`` sales of
    mla-main."""
    import json

    data = json.loads(DEFAULT_SCENARIO.read_text())
    data["faults"], data["quota"] = [], None
    template = next(o for o in data["orders"] if o["id"] == HEALTHY)
    listing = template["order_items"][0]["item"]["id"]
    for n in range(big):
        order = copy.deepcopy(template)
        order.update(id=BIG_FIRST_ID + n, pack_id=BIG_FIRST_PACK + n, shipping={"id": None})
        data["orders"].append(order)
    for s in range(2 * smalls + 2):
        seller = SMALL_SELLER + s
        name = small_name(s)
        data["connections"].append(
            {
                "connection_id": name,
                "seller_id": seller,
                "site_id": "MLA",
                "access_token": f"APP_USR-6092312345678901-110409-{s:032x}-{seller}",
                "refresh_token": f"TG-6728a1f0c3e4b500{s:08x}-{seller}",
                "expires_in": 21600,
            }
        )
        data["products"].append(
            {
                "connection_id": name,
                "item_id": listing,
                "variation_id": None,
                "sku": f"SKU-{s}",
                "status": "active",
                "synced": True,
            }
        )
        for k in range(SMALL_IDS):
            order = copy.deepcopy(template)
            order_id = 2000009800000000 + s * 100 + k
            order.update(id=order_id, pack_id=2000006800000000 + s * 100 + k, shipping={"id": None})
            order["seller"] = {**order["seller"], "id": seller}
            for payment in order.get("payments", []):
                payment["collector"] = {"id": seller}
                payment["order_id"] = order_id
            data["orders"].append(order)
    return Scenario.model_validate(data)


def small_ids(s: int) -> list[str]:
    return [str(2000009800000000 + s * 100 + k) for k in range(SMALL_IDS)]


POLL_SECONDS = [0.25]  # how often each job is polled (--poll); every poll is an API invocation on this process


def wait_completed(http: httpx.Client, connection: str, job_id: str, limit_s: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        view = http.get(f"/connections/{connection}/reprocessing-jobs/{job_id}").json()
        if view["status"] == "completed":
            return time.monotonic()
        time.sleep(POLL_SECONDS[0])
    return None


def queue_wait(http: httpx.Client, connection: str, job_id: str) -> float:
    """Seconds from the job's creation to a worker's first run over one of its messages (the header's started_at):
    the time the job waited for a worker, whatever the machine's speed once it ran."""
    view = http.get(f"/connections/{connection}/reprocessing-jobs/{job_id}").json()
    created, started = view["created_at"], view.get("started_at")
    if not started:
        return float("nan")
    from datetime import datetime

    return (datetime.fromisoformat(started) - datetime.fromisoformat(created)).total_seconds()


def items_of(http: httpx.Client, connection: str, job_id: str) -> list[dict[str, Any]]:
    items, cursor = [], None
    while True:
        params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
        page = http.get(f"/connections/{connection}/reprocessing-jobs/{job_id}", params=params).json()
        items += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return items


def submit_and_follow(
    http: httpx.Client, api_url: str, sellers: range, args: argparse.Namespace
) -> tuple[dict[str, tuple[str, float]], dict[str, float | None], list[threading.Thread]]:
    """Submit each seller's small job and follow each in a thread of its own (started, not joined)."""
    submitted: dict[str, tuple[str, float]] = {}
    finished: dict[str, float | None] = {}
    for s in sellers:
        name = small_name(s)
        answer = http.post(f"/connections/{name}/reprocessing-jobs", json={"sale_ids": small_ids(s)}).json()
        submitted[name] = (answer["job_id"], time.monotonic())

    def follow(name: str) -> None:
        with httpx.Client(base_url=api_url, timeout=120) as own:
            finished[name] = wait_completed(own, name, submitted[name][0], args.timeout_minutes * 60)

    threads = [threading.Thread(target=follow, args=(n,)) for n in submitted]
    for t in threads:
        t.start()
    return submitted, finished, threads


def elapsed(submitted: dict[str, tuple[str, float]], finished: dict[str, float | None]) -> list[float]:
    """Each job's seconds from its POST to completion; a job never completed counts its time so far."""
    return sorted((finished[n] or time.monotonic()) - submitted[n][1] for n in submitted)


def together_waits(http: httpx.Client, api_url: str, sellers: range, args: argparse.Namespace) -> list[float]:
    submitted, finished, threads = submit_and_follow(http, api_url, sellers, args)
    for t in threads:
        t.join()
    return elapsed(submitted, finished)


def run(args: argparse.Namespace, lanes: int) -> dict[str, Any]:
    parameters = {**template_defaults(), "MeliRequestsPerSecond": str(args.quota_rps), "BulkLaneMessages": str(lanes)}
    stack = defaults_stack(build_scenario(args.big, args.small), parameters)
    with stack:
        assert stack.api is not None
        http = httpx.Client(base_url=stack.api.url, timeout=120)
        # 1. A small job alone, once the functions are warm (the first job pays their cold starts).
        for s in (args.small + 1, args.small):
            name = small_name(s)
            t0 = time.monotonic()
            alone = http.post(f"/connections/{name}/reprocessing-jobs", json={"sale_ids": small_ids(s)})
            done = wait_completed(http, name, alone.json()["job_id"], 300)
            alone_s = (done or time.monotonic()) - t0
        # 1b. As many small jobs as below, together, and nobody else: what this one process takes to serve them side
        # by side. The big job's own effect on them is the ratio of phase 2 to this, whatever the machine.
        together = together_waits(http, stack.api.url, range(args.small + 2, 2 * args.small + 2), args)
        # 2. The big job, then the small ones.
        ml_before = len(stack.meli.requests)
        big_ids = [str(BIG_FIRST_ID + n) for n in range(args.big)]
        big_started = time.monotonic()
        cpu_before = time.process_time()
        big = http.post(f"/connections/{BIG}/reprocessing-jobs", json={"sale_ids": big_ids}).json()
        time.sleep(args.delay)
        submitted, finished, threads = submit_and_follow(http, stack.api.url, range(args.small), args)
        big_done = wait_completed(http, BIG, big["job_id"], args.timeout_minutes * 60)
        for t in threads:
            t.join()
        big_elapsed = (big_done or time.monotonic()) - big_started
        cpu_share = (time.process_time() - cpu_before) / big_elapsed  # this process runs every function and moto
        queue_waits = sorted(queue_wait(http, n, submitted[n][0]) for n in submitted)
        waits = elapsed(submitted, finished)
        ml = list(stack.meli.requests[ml_before:])
        big_requests = sum(1 for r in ml if r.connection_id == BIG)
        # Every accepted id: exactly one terminal item.
        outcomes: Counter[str] = Counter()
        per_job: list[tuple[str, str, int]] = [(BIG, big["job_id"], args.big)] + [
            (n, submitted[n][0], SMALL_IDS) for n in submitted
        ]
        lost = duplicated = 0
        for connection, job_id, expected in per_job:
            items = items_of(http, connection, job_id)
            ids = Counter(i["sale_id"] for i in items)
            duplicated += sum(c - 1 for c in ids.values() if c > 1)
            terminal = [i for i in items if i["outcome"] not in ("pending", "in_progress")]
            lost += expected - len({i["sale_id"] for i in terminal})
            outcomes.update(i["outcome"] for i in items)
        http.close()
        time.sleep(2)
        sqs = stack.aws.client("sqs")
        dlq = int(
            sqs.get_queue_attributes(
                QueueUrl=stack.aws.physical_id("BulkDeadLetterQueue"), AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]["ApproximateNumberOfMessages"]
        )
        report = stack.aws.runtime.report()
        timeouts = sum(s.timeouts for s in stack.aws.runtime.stats.values())
    return {
        "lanes": lanes,
        "alone_s": alone_s,
        "together": together,
        "waits": waits,
        "queue_waits": queue_waits,
        "cpu_share": cpu_share,
        "big_elapsed": big_elapsed,
        "big_rate": big_requests / big_elapsed,
        "big_requests": big_requests,
        "lost": lost,
        "duplicated": duplicated,
        "dlq": dlq,
        "outcomes": dict(outcomes),
        "report": report,
        "timeouts": timeouts,
    }


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1 else values[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big", type=int, default=2000)
    parser.add_argument("--small", type=int, default=10)
    parser.add_argument("--quota-rps", type=float, default=20.0, help="each connection's ML quota (template: 10)")
    parser.add_argument("--delay", type=float, default=3.0, help="seconds between the big job and the small ones")
    parser.add_argument("--only", choices=["on", "off"], help="run with lanes only on, or only off")
    parser.add_argument("--timeout-minutes", type=float, default=30.0)
    parser.add_argument("--poll", type=float, default=0.25, help="seconds between two reads of a job's state")
    args = parser.parse_args(argv)
    POLL_SECONDS[0] = args.poll
    lanes_default = int(load_template()["Parameters"]["BulkLaneMessages"]["Default"])
    modes = {"on": [lanes_default], "off": [0]}.get(args.only or "", [lanes_default, 0])
    print(
        f"big seller {args.big} ids, {args.small} small sellers x {SMALL_IDS} ids {args.delay:g} s later; "
        f"quota {args.quota_rps:g} rps per connection; template defaults otherwise; IAM and timeouts enforced",
        flush=True,
    )
    results = []
    for lanes in modes:
        r = run(args, lanes)
        results.append(r)
        waits = r["waits"]
        label = f"lanes {r['lanes']}" if r["lanes"] else "lanes off"
        print(f"\n== {label} ==")
        print(f"one small job alone: {r['alone_s']:.1f} s")
        tw = r["together"]
        print(
            f"{len(tw)} small jobs together, no big job: p50 {statistics.median(tw):.1f} s, p95 {p95(tw):.1f} s "
            f"(= {p95(tw) / r['alone_s']:.1f}x alone: what this one process takes to serve them side by side)"
        )
        print(
            f"small jobs beside the big one: p50 {statistics.median(waits):.1f} s, p95 {p95(waits):.1f} s, "
            f"max {max(waits):.1f} s -> p95 = {p95(waits) / r['alone_s']:.1f}x alone (target <= 5x)"
        )
        print(f"  the big seller's own effect: p95 beside it / p95 together without it = {p95(waits) / p95(tw):.2f}x")
        qw = r["queue_waits"]
        print(
            f"  of which waiting for a worker (job created -> first run): p50 {statistics.median(qw):.1f} s, "
            f"p95 {p95(qw):.1f} s, max {max(qw):.1f} s"
        )
        print(f"this process (every function, moto, the simulator) used {r['cpu_share']:.2f} CPU-seconds per second")
        print(
            f"big job: {r['big_elapsed']:.0f} s, {r['big_requests']} ML requests, {r['big_rate']:.1f} rps = "
            f"{r['big_rate'] / args.quota_rps:.2f} of its quota (target >= 0.9)"
        )
        print(
            f"lost {r['lost']}, duplicated {r['duplicated']}, DLQ {r['dlq']}, invocations over their timeout "
            f"{r['timeouts']}; outcomes {r['outcomes']}"
        )
        for line in r["report"]:
            print(f"  {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
