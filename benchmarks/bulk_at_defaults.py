"""A 10,000-id reprocessing job at the template's default parameters, on the whole local stack, timeouts enforced.

The proof of issue #12: the embedded default (moto's server from template.yaml, the real handlers in-process with
each function's IAM role and ``Timeout`` enforced, the SQS poller with the template's ``BatchSize`` and
``MaximumConcurrency``, the simulated Mercado Libre over HTTP) takes one ``POST .../reprocessing-jobs`` of 10,000 ids
through the local API and runs it to the end. Every parameter is the template's default except the ML quota, which
is scaled (``--quota-rps``; the template's is 10 requests per second per connection, i.e. ~17 minutes for 10,000
healthy sales) so that the run takes minutes. The ids are a mix: healthy sales not yet on the platform (reflected),
cancelled ones (blocked) and ids ML does not know (an order, a pack and a shipment look-up each).

Prints: the API's answer time against API Gateway's 29 s, every id's outcome, the DLQ, the achieved ML rate as a
fraction of the quota, and per function the longest invocation against its timeout (``devstack.lambdas``).

    .venv/bin/python benchmarks/bulk_at_defaults.py [--ids 10000] [--quota-rps 40]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]
# As `make run`: EMF metrics and JSON logs are for CloudWatch; here the printed lines are the output.
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "sales-recovery")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")

import httpx  # noqa: E402

from devstack.stack import EmbeddedStack  # noqa: E402
from devstack.template import load_template  # noqa: E402
from tests.stack.support import C, stack_scenario  # noqa: E402  (the default scenario without latency faults)

HEALTHY = 2000009101000011  # scenario case a: paid, fine, not on the platform -> reflected
CANCELLED = 2000009103000012  # scenario case c: cancelled by the buyer -> not_reflectable / sale_cancelled
FIRST_ID = 2000009600000000
FIRST_PACK_ID = 2000006600000000
API_GATEWAY_LIMIT_S = 29.0
# The parameters the embedded stack sets for quick tests, put back to the template's defaults here.
DEFAULTED = ("RelinkWaitSeconds", "RelinkFollowSeconds", "MeliTimeoutSeconds", "MeliMaxTries")


def template_defaults() -> dict[str, str]:
    parameters = load_template()["Parameters"]
    return {name: str(parameters[name]["Default"]) for name in DEFAULTED}


def defaults_stack(scenario: Any, parameters: dict[str, str]) -> EmbeddedStack:
    """The whole local stack with IAM and every function's timeout enforced, and the ML client's settings and the
    state machine's waits taken from ``parameters`` (the embedded stack's quick-test values otherwise)."""
    return EmbeddedStack(
        scenario,
        api_port=0,
        parameters=parameters,
        enforce_iam=True,
        enforce_timeouts=True,
        meli_timeout_seconds=float(parameters["MeliTimeoutSeconds"]),
        meli_max_tries=int(parameters["MeliMaxTries"]),
        relink_wait_seconds=int(parameters["RelinkWaitSeconds"]),
        relink_follow_seconds=int(parameters["RelinkFollowSeconds"]),
    )


def seed_sales(stack: EmbeddedStack, n: int, *, cancelled_every: int, unknown_every: int) -> list[str]:
    healthy, cancelled = stack.meli.order(HEALTHY), stack.meli.order(CANCELLED)
    assert healthy is not None and cancelled is not None
    ids = []
    for k in range(n):
        sale_id = FIRST_ID + k
        ids.append(str(sale_id))
        if k % unknown_every == unknown_every - 1:
            continue  # ML has no such order
        order = copy.deepcopy(cancelled if k % cancelled_every == cancelled_every - 1 else healthy)
        order["id"] = sale_id
        order["pack_id"] = FIRST_PACK_ID + k  # a pack of its own (ML gives every order one), read as ML does
        order["shipping"] = {"id": None}  # no shipment of another sale
        stack.meli.upsert_order(order)
    return ids


def queue_depth(stack: EmbeddedStack, logical_id: str) -> int:
    sqs = stack.aws.client("sqs")
    attributes = sqs.get_queue_attributes(
        QueueUrl=stack.aws.physical_id(logical_id),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=10_000)
    parser.add_argument("--quota-rps", type=float, default=40.0, help="the simulated ML's quota (template: 10)")
    parser.add_argument("--timeout-minutes", type=float, default=45.0)
    args = parser.parse_args(argv)

    parameters = template_defaults()
    stack = defaults_stack(stack_scenario(quota=args.quota_rps), parameters)
    with stack:
        assert stack.api is not None
        ids = seed_sales(stack, args.ids, cancelled_every=20, unknown_every=50)
        defaults = ", ".join(f"{k}={v}" for k, v in parameters.items())
        print(
            f"{len(ids):,} ids; parameters at the template's defaults ({defaults}),"
            f" ML quota {args.quota_rps:g} rps (limiter at 90 %), IAM and timeouts enforced",
            flush=True,
        )
        ml_before = len(stack.meli.requests)
        started = time.monotonic()
        with httpx.Client(base_url=stack.api.url, timeout=120) as http:
            answer = http.post(f"/connections/{C}/reprocessing-jobs", json={"sale_ids": ids})
            answered = time.monotonic() - started
            if answer.status_code != 202:
                print(f"submission answered {answer.status_code}: {answer.text[:500]}")
                return 1
            job_id = answer.json()["job_id"]
            print(f"POST answered 202 in {answered:.1f} s ({answered / API_GATEWAY_LIMIT_S:.2f}x API Gateway's 29 s)")
            deadline = started + args.timeout_minutes * 60
            last = ""
            while True:
                view: dict[str, Any] = http.get(f"/connections/{C}/reprocessing-jobs/{job_id}").json()
                line = f"  {time.monotonic() - started:6.0f} s  {view['status']}  " + ", ".join(
                    f"{k} {v}" for k, v in view["counts"].items() if v
                )
                if line.split("  ", 2)[-1] != last:
                    print(line, flush=True)
                    last = line.split("  ", 2)[-1]
                if view["status"] == "completed" or time.monotonic() > deadline:
                    break
                time.sleep(5)
            elapsed = time.monotonic() - started
            outcomes: Counter[str] = Counter()
            cursor = None
            while True:
                params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
                page = http.get(f"/connections/{C}/reprocessing-jobs/{job_id}", params=params).json()
                outcomes.update(i["outcome"] for i in page["items"])
                cursor = page.get("next_cursor")
                if not cursor:
                    break
        ml = list(stack.meli.requests[ml_before:])
        throttled = sum(1 for r in ml if r.status == 429)
        time.sleep(2)  # let the last deletes land before the queues are read
        dlq, queue = queue_depth(stack, "BulkDeadLetterQueue"), queue_depth(stack, "BulkQueue")
        report = stack.aws.runtime.report()
        stats = dict(stack.aws.runtime.stats)
        assert stack.aws.iam is not None
        # The worker's SendMessage calls: each hands back the ids its invocation's time could not cover.
        handbacks = sum(
            n
            for (function, action, _resource, allowed), n in stack.aws.iam.checked().items()
            if function == "BulkWorkerFunction" and action == "sqs:SendMessage" and allowed
        )

    terminal = sum(v for k, v in outcomes.items() if k not in ("pending", "in_progress"))
    print(f"\njob {view['status']} in {elapsed:.0f} s: {terminal:,} of {len(ids):,} items terminal {dict(outcomes)}")
    rate = len(ml) / elapsed
    print(f"ML: {len(ml):,} requests, {rate:.1f} rps = {rate / args.quota_rps:.2f} of the quota, {throttled} x 429")
    print(f"bulk queue {queue} messages left, DLQ {dlq} messages; the worker handed back ids {handbacks} times")
    for line in report:
        print(f"  {line}")
    timeouts = sum(s.timeouts for s in stats.values())
    checks = {
        "every id terminal": terminal == len(ids) and view["status"] == "completed",
        "nothing in the DLQ, nothing left queued": dlq == 0 and queue == 0,
        "no invocation over its timeout": timeouts == 0,
        "the submission answered within API Gateway's 29 s": answered < API_GATEWAY_LIMIT_S,
    }
    for name, ok in checks.items():
        print(f"  [{'ok' if ok else 'FAILED'}] {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
