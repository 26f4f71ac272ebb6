"""Bulk submission: the API handler's CPU per 1,000 sale ids, and what it means at 256 MB against API Gateway's 29 s.

``POST /connections/{c}/reprocessing-jobs`` validates the ids, writes the job (header and one pending item per id)
and sends the 50-id SQS messages before it answers 202. How long that takes in Lambda is set by three things:

1. CPU: Lambda gives a function CPU in proportion to its memory, one full vCPU at 1,769 MB, so the template's
   256 MB gets 256 / 1769 = 0.145 vCPU. CPU measured here on a full core stretches by 1769 / 256 = 6.9x there.
2. Round trips: every DynamoDB and SQS call waits for the service (the calls are counted here, per operation).
3. DynamoDB's per-partition ceiling: every item of a job shares the job's partition key, and one partition takes
   at most 1,000 write units per second, so N items of at most 1 KB need at least N / 1,000 seconds however the
   calls are issued.

Each measurement is one fresh interpreter running the real API handler (``src/functions/api/app.py``) once to warm
up (a one-id job: imports and clients, which the cold-start benchmark measures) and then once with N ids, against
moto's server in this process (so moto's work is not in the handler's CPU) with the tables from template.yaml.
The handler's CPU is ``time.process_time()`` around the call. Prints CPU per 1,000 ids (least-squares slope over
the sizes), the calls per 1,000 ids, and the projection for 10,000 ids at 256 MB as a ratio of the 29 s limit.

    .venv/bin/python benchmarks/submission.py [--sizes 1000 2500 5000 10000] [--round-trip-ms 20]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT), str(ROOT / "benchmarks")]

from cold_start import CONNECTION, Stack, lambda_env  # noqa: E402  (moto server + simulator, Lambda's environment)

from tests.conftest import api_event  # noqa: E402  (whole API Gateway events, as the tests send)

FULL_CORE_MB = 1769  # Lambda: one vCPU's worth of CPU at 1,769 MB (AWS Lambda docs, "Memory and computing power")
API_GATEWAY_LIMIT_S = 29.0  # REST API integration timeout (API Gateway quotas)
PARTITION_WCU_PER_S = 1000  # DynamoDB: write units per second one partition takes
FIRST_ID = 2000009900000000

CHILD = r"""
import json, sys, time
from collections import Counter

function_dir, warm_file, event_file, result_file = sys.argv[1:5]
sys.path.insert(0, function_dir)

import botocore.client

calls = Counter()
original = botocore.client.BaseClient._make_api_call


def counted(self, operation_name, api_params):
    calls[operation_name] += 1
    return original(self, operation_name, api_params)


botocore.client.BaseClient._make_api_call = counted


class Context:
    function_name = "sales-recovery-bench-api"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:sales-recovery-bench-api"
    memory_limit_in_mb = 256
    aws_request_id = "00000000-0000-4000-8000-000000000000"
    log_group_name = "/aws/lambda/sales-recovery-bench-api"
    log_stream_name = "bench"

    def get_remaining_time_in_millis(self):
        return 29_000


import app

warm = app.lambda_handler(json.load(open(warm_file)), Context())
assert warm["statusCode"] == 202, warm
event = json.load(open(event_file))
calls.clear()
cpu, wall = time.process_time(), time.perf_counter()
answer = app.lambda_handler(event, Context())
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
body = json.loads(answer["body"])
json.dump(
    {"status": answer["statusCode"], "accepted": body.get("accepted"), "messages": body.get("messages"),
     "cpu_s": cpu, "wall_s": wall, "calls": dict(calls)},
    open(result_file, "w"),
)
"""


@dataclass
class Sample:
    ids: int
    cpu_s: float
    wall_s: float
    calls: dict[str, int]


def submission_event(ids: list[str]) -> dict[str, Any]:
    return api_event("POST", f"/connections/{CONNECTION}/reprocessing-jobs", body=json.dumps({"sale_ids": ids}))


def measure(stack: Stack, n: int) -> Sample:
    env = lambda_env("api", stack.provision(), stack.url, tracing=False)
    env["POWERTOOLS_LOG_LEVEL"] = "WARNING"  # one log line per request is not what is measured here
    ids = [str(FIRST_ID + i) for i in range(n)]
    with tempfile.TemporaryDirectory(prefix="submission-") as tmp:
        warm, event, result = Path(tmp) / "warm.json", Path(tmp) / "event.json", Path(tmp) / "result.json"
        warm.write_text(json.dumps(submission_event([str(FIRST_ID - 1)])))
        event.write_text(json.dumps(submission_event(ids)))
        cmd = [sys.executable, "-c", CHILD, str(ROOT / "src" / "functions" / "api"), str(warm), str(event), str(result)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not result.exists():
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
            raise RuntimeError(f"submission of {n} ids failed (exit {proc.returncode}):\n{tail}")
        data = json.loads(result.read_text())
    if data["status"] != 202 or data["accepted"] != n:
        raise RuntimeError(f"submission of {n} ids answered {data['status']} with {data['accepted']} accepted")
    return Sample(n, data["cpu_s"], data["wall_s"], data["calls"])


def slope(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares line through the points: (slope, intercept)."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return b, my - b * mx


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2500, 5000, 10000])
    parser.add_argument("--memory-mb", type=int, default=256, help="the API function's MemorySize")
    parser.add_argument(
        "--round-trip-ms", type=float, default=20.0, help="assumed in-region latency of one DynamoDB or SQS call"
    )
    args = parser.parse_args(argv)

    samples: list[Sample] = []
    with Stack() as stack:
        for n in args.sizes:
            print(f"  {n} ids ...", file=sys.stderr, flush=True)
            samples.append(measure(stack, n))

    print("ids     handler CPU   wall (loopback)   calls")
    for s in samples:
        calls = ", ".join(f"{op} {k}" for op, k in sorted(s.calls.items()))
        print(f"{s.ids:>6}  {s.cpu_s * 1000:>9.0f} ms  {s.wall_s * 1000:>12.0f} ms    {calls}")
    cpu_per_k, _ = slope([s.ids / 1000 for s in samples], [s.cpu_s for s in samples])
    largest = max(samples, key=lambda s: s.ids)
    calls_per_k = sum(largest.calls.values()) / (largest.ids / 1000)
    print(f"\nhandler CPU per 1,000 ids: {cpu_per_k * 1000:.0f} ms on a full core (least-squares slope over the sizes)")
    print(f"AWS calls per 1,000 ids: {calls_per_k:.1f}")

    n = 10_000
    share = args.memory_mb / FULL_CORE_MB
    full_core = largest.cpu_s * n / largest.ids  # the largest run, scaled linearly (the slope shows it is linear)
    cpu_s = full_core / share
    trips_s = calls_per_k * n / 1000 * args.round_trip_ms / 1000
    writes = largest.calls.get("BatchWriteItem", 0) * 25 + largest.calls.get("PutItem", 0)
    per_largest = writes / largest.ids if largest.ids else 0.0
    partition_s = per_largest * n / PARTITION_WCU_PER_S
    total = cpu_s + trips_s
    trips = calls_per_k * n / 1000
    print(f"\nprojection for {n:,} ids at {args.memory_mb} MB ({share:.3f} vCPU):")
    print(f"  CPU         {cpu_s:6.1f} s = {full_core:.2f} s on a full core / {share:.3f}")
    print(f"  round trips {trips_s:6.1f} s = {trips:.0f} calls x {args.round_trip_ms:g} ms, one at a time")
    print(f"  partition   {partition_s:6.1f} s = {per_largest * n:,.0f} item writes on one job_id / 1,000 WCU/s")
    bound = max(total, partition_s)
    limit = API_GATEWAY_LIMIT_S
    print(f"  handler  >= {bound:6.1f} s -> {bound / limit:.2f}x API Gateway's {limit:g} s integration timeout")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
