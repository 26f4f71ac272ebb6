"""Bulk throughput against the simulated Mercado Libre, in one run, three ways over the same sale ids:

1. naive: a sequential loop over the ids, one sale at a time (its own reads, its ML read, its own write: what a
   script without the bulk path does);
2. bulk, generous quota: the real API submission (50-id SQS messages) and the real worker handler, driven by
   ``--workers`` concurrent pollers (Lambda concurrency), each message processed by ``BULK_WORKER_THREADS``;
3. bulk, tight quota: the same with the simulator's quota tight and the shared token bucket set just under it.

Prints sales/s, ML requests per sale, the achieved request rate as a fraction of the quota, 429s received, lost and
duplicated ids, the speed-up over the naive loop, the CPU per sale of the whole process, and the DynamoDB calls per
sale by operation (a botocore event hook on the default session). AWS is moto in-process (the account of
``devstack.account``: tables from template.yaml), ML is the simulator over HTTP on loopback with ``--latency-ms``
on every request.

    .venv/bin/python benchmarks/bulk_throughput.py [--sales 300] [--latency-ms 50] [--tight-quota 8]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]
os.environ.update(
    {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "ERROR",
        "POWERTOOLS_SERVICE_NAME": "sales-recovery",
    }
)
os.environ.pop("AWS_ENDPOINT_URL", None)

import boto3  # noqa: E402
from moto import mock_aws  # noqa: E402

from devstack import moto_fidelity  # noqa: E402
from devstack.account import provision  # noqa: E402
from devstack.simulator.scenario import Scenario  # noqa: E402
from devstack.simulator.server import MeliSimulator  # noqa: E402
from devstack.sqs_poller import sqs_record  # noqa: E402
from devstack.template import load_template  # noqa: E402
from tests.conftest import api_event, lambda_context  # noqa: E402  (whole API Gateway events, as the tests send)

C, SELLER, ITEM = "mla-main", 123456789, "MLA1100000001"
FIRST_ID = 2000009700000000
WORKER_TIMEOUT = float(load_template()["Resources"]["BulkWorkerFunction"]["Properties"]["Timeout"])


def worker_context() -> Any:
    """A worker invocation's context: its time left counts down from the template's Timeout, as in Lambda (the worker
    stops taking ids when that time cannot cover one more: shared.bulk.Deadline)."""
    context = lambda_context("bench-worker")
    deadline = time.monotonic() + WORKER_TIMEOUT
    context.get_remaining_time_in_millis = lambda: max(0, int((deadline - time.monotonic()) * 1000))
    return context


@dataclass
class AwsCallCounter:
    """Counts the DynamoDB calls every client of the default boto3 session makes (a botocore event hook)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def attach(self) -> None:
        """On the default session as it is now (moto's mock_aws replaces it when it starts)."""
        boto3.setup_default_session()
        boto3.DEFAULT_SESSION.events.register("before-call.dynamodb", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        with self._lock:
            self.calls[model.name] += 1

    def take(self) -> dict[str, int]:
        with self._lock:
            taken, self.calls = dict(self.calls), Counter()
        return taken


CALLS: AwsCallCounter | None = None


@dataclass
class Result:
    name: str
    sales: int
    seconds: float
    ml_requests: int
    throttled: int
    quota: float | None
    lost: int
    duplicated: int
    cpu_seconds: float  # CPU of this whole process during the run: worker, moto and the simulator alike
    dynamodb_calls: dict[str, int]  # operation -> calls made during the run

    @property
    def per_second(self) -> float:
        return self.sales / self.seconds

    @property
    def requests_per_sale(self) -> float:
        return self.ml_requests / self.sales

    @property
    def cpu_ms_per_sale(self) -> float:
        return self.cpu_seconds * 1000 / self.sales

    @property
    def quota_use(self) -> str:
        return f"{self.ml_requests / self.seconds / self.quota:.2f}" if self.quota else "-"


def scenario(count: int, latency_ms: float) -> tuple[Scenario, list[str]]:
    template = json.loads((ROOT / "scenarios" / "default.json").read_text())
    order = next(o for o in template["orders"] if o["id"] == 2000009101000011)
    orders, ids = [], []
    for n in range(count):
        copy_ = copy.deepcopy(order)
        copy_["id"] = FIRST_ID + n
        copy_["pack_id"] = None  # a sale of its own: a copy must not join the template's pack
        copy_["shipping"] = {"id": None}
        orders.append(copy_)
        ids.append(str(copy_["id"]))
    data = {
        "connections": [c for c in template["connections"] if c["connection_id"] == C],
        "products": [p for p in template["products"] if p["connection_id"] == C],
        "orders": orders,
        "faults": [{"path": ".*", "kind": "latency", "ms": latency_ms}] if latency_ms else [],
    }
    return Scenario.model_validate(data), ids


class Account:
    """One moto account built from template.yaml, seeded from the scenario, with the handlers' environment."""

    def __init__(self, sim: MeliSimulator, scn: Scenario, *, rate: float, threads: int) -> None:
        self._mock = mock_aws()
        self._mock.start()
        assert CALLS is not None
        CALLS.attach()
        account = provision(
            "bench",
            sim.url,
            scn,
            BULK_WORKER_THREADS=str(threads),
            MELI_REQUESTS_PER_SECOND=str(rate),
        )
        self.env, self.queue_url, self.queue_arn = account.env, account.bulk_queue_url, account.bulk_queue_arn
        os.environ.update(self.env)
        self.clear_caches()

    @staticmethod
    def clear_caches() -> None:
        from shared.wiring import build_bulk_service, build_job_store, build_service

        for cache in (build_service, build_bulk_service, build_job_store):
            cache.cache_clear()

    @staticmethod
    def service() -> Any:
        from shared.settings import Settings
        from shared.wiring import build_service

        return build_service(Settings.from_env(), notifier=True)

    def stored_sales(self) -> int:
        return int(boto3.client("dynamodb").scan(TableName=self.env["SALES_TABLE"], Select="COUNT")["Count"])

    def close(self) -> None:
        self.clear_caches()
        self._mock.stop()


def _one_sale_at_a_time(service: Any, sale_id: str) -> str:
    """The naive path: the sale's own reads (row, entry, product links), its ML read, its own write."""
    from shared.lifecycle import moves
    from shared.lifecycle.table import Actor
    from shared.models import Trigger

    snap = service.lifecycle.read(C, sale_id)
    verdict = service.verifier.attempt(
        C, sale_id, entry=snap.entry, trigger=Trigger.BULK, attempt_key=f"naive#{sale_id}"
    )
    if verdict.record is None:
        return "not_reflected"
    change = moves.reflect(snap, Actor.BULK_WORKER, record=verdict.record, attempts=1, settled_by="naive")
    return "reflected" if service.lifecycle.apply(snap, change) is not None else "lost_a_race"


def naive(sim: MeliSimulator, scn: Scenario, ids: list[str]) -> Result:
    account = Account(sim, scn, rate=0, threads=1)
    try:
        service = account.service()
        sim.reset_log()
        assert CALLS is not None
        CALLS.take()
        started, cpu = time.perf_counter(), time.process_time()
        outcomes = [_one_sale_at_a_time(service, sale_id) for sale_id in ids]
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        calls = CALLS.take()
        return Result(
            "naive sequential loop",
            len(ids),
            seconds,
            sim.count(),
            sim.count(status=429),
            None,
            lost=sum(1 for o in outcomes if o != "reflected"),
            duplicated=max(0, account.stored_sales() - len(ids)),
            cpu_seconds=cpu,
            dynamodb_calls=calls,
        )
    finally:
        account.close()


def bulk(
    sim: MeliSimulator, scn: Scenario, ids: list[str], *, quota: float | None, workers: int, threads: int
) -> Result:
    sim.set_quota(quota)
    # The shared bucket runs just under the quota, as production should under ML's.
    account = Account(sim, scn, rate=round(quota * 0.95, 3) if quota else 0, threads=threads)
    try:
        from functions.api.app import lambda_handler as api
        from functions.bulk_worker.app import lambda_handler as worker

        sim.reset_log()
        assert CALLS is not None
        CALLS.take()
        started, cpu = time.perf_counter(), time.process_time()
        response = api(
            api_event("POST", f"/connections/{C}/reprocessing-jobs", body=json.dumps({"sale_ids": ids})),
            lambda_context(),
        )
        job_id = json.loads(response["body"])["job_id"]
        sqs = boto3.client("sqs")

        def poll() -> None:  # one Lambda instance of the worker: receive up to 5 messages, process, delete
            while True:
                got = sqs.receive_message(QueueUrl=account.queue_url, MaxNumberOfMessages=5, AttributeNames=["All"])
                messages = got.get("Messages", [])
                if not messages:
                    return
                event = {"Records": [sqs_record(m, account.queue_arn, "us-east-1") for m in messages]}
                failed = {f["itemIdentifier"] for f in worker(event, worker_context())["batchItemFailures"]}
                for m in messages:
                    if m["MessageId"] not in failed:
                        sqs.delete_message(QueueUrl=account.queue_url, ReceiptHandle=m["ReceiptHandle"])

        pollers = [threading.Thread(target=poll) for _ in range(workers)]
        for t in pollers:
            t.start()
        for t in pollers:
            t.join()
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        calls = CALLS.take()
        from shared.settings import Settings
        from shared.wiring import build_job_store

        job = build_job_store(Settings.from_env()).get(job_id)
        assert job is not None
        settled = sum(job.counts.values())
        return Result(
            f"bulk, quota {quota:g} rps" if quota else "bulk, no quota",
            len(ids),
            seconds,
            sim.count(),
            sim.count(status=429),
            quota,
            lost=len(ids) - settled,
            duplicated=max(0, account.stored_sales() - len(ids)) + max(0, settled - len(ids)),
            cpu_seconds=cpu,
            dynamodb_calls=calls,
        )
    finally:
        account.close()
        sim.set_quota(None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sales", type=int, default=300)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--generous-quota", type=float, default=1000.0)
    parser.add_argument("--tight-quota", type=float, default=8.0, help="ML answers 429 at 5-7 rps (meli-api.md 9)")
    parser.add_argument("--workers", type=int, default=4, help="concurrent worker instances (Lambda concurrency)")
    parser.add_argument("--threads", type=int, default=16, help="sales processed concurrently per message")
    args = parser.parse_args()

    moto_fidelity.install()
    global CALLS
    CALLS = AwsCallCounter()
    scn, ids = scenario(args.sales, args.latency_ms)
    with MeliSimulator(scn, timeout_hold_seconds=5) as sim:
        base = naive(sim, scn, ids)
        fast = bulk(sim, scn, ids, quota=args.generous_quota, workers=args.workers, threads=args.threads)
        tight = bulk(sim, scn, ids, quota=args.tight_quota, workers=args.workers, threads=args.threads)

    print(
        f"bulk throughput: {args.sales} healthy sales, ML latency {args.latency_ms:g} ms, "
        f"{args.workers} workers x {args.threads} threads"
    )
    header = (
        f"{'run':<26}{'sales/s':>9}{'ML req/sale':>13}{'rate/quota':>12}"
        f"{'429s':>6}{'lost':>6}{'dup':>5}{'speed-up':>10}{'CPU ms/sale':>13}"
    )
    print(header)
    print("-" * len(header))
    for r in (base, fast, tight):
        print(
            f"{r.name:<26}{r.per_second:>9.1f}{r.requests_per_sale:>13.2f}{r.quota_use:>12}{r.throttled:>6}"
            f"{r.lost:>6}{r.duplicated:>5}{r.per_second / base.per_second:>9.1f}x{r.cpu_ms_per_sale:>13.1f}"
        )
    for r in (base, fast):
        ops = sorted(r.dynamodb_calls.items(), key=lambda item: -item[1])
        per_sale = ", ".join(f"{op} {n / r.sales:.2f}" for op, n in ops)
        print(f"DynamoDB calls per sale, {r.name}: {sum(r.dynamodb_calls.values()) / r.sales:.2f} ({per_sale})")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    print(
        f"CPU ceiling: this process runs the worker, moto and the simulator under one GIL; at "
        f"{fast.cpu_ms_per_sale:.1f} ms of CPU per sale it cannot pass {1000 / fast.cpu_ms_per_sale:.0f} sales/s "
        f"(machine: {cores} cores)."
    )
    checks = {
        "speed-up over the naive loop >= 10x (generous quota)": fast.per_second / base.per_second >= 10,
        "tight quota: rate >= 0.9 of the quota": tight.ml_requests / tight.seconds / args.tight_quota >= 0.9,
        "no lost and no duplicated ids": not any(r.lost or r.duplicated for r in (base, fast, tight)),
        "ML requests per healthy sale <= 1.2": max(fast.requests_per_sale, tight.requests_per_sale) <= 1.2,
    }
    for name, ok in checks.items():
        print(f"  [{'ok' if ok else 'MISSED'}] {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
