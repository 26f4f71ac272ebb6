"""Peak memory of the bulk worker processing a full batch of 50-id messages (as many as the event source's
BatchSize in template.yaml, processed side by side; target: under 128 MB, so 256 MB functions have room), in a
fresh Lambda-like interpreter, against a bare `import boto3` interpreter measured in the same run.

The parent runs moto's server and the simulated ML (the cold-start harness of benchmarks/cold_start.py), submits a
job of healthy sales through the bulk service, takes the real SQS messages off the queue and hands the child a
whole SQS event; the child imports the worker, processes the messages and reports its own peak RSS (VmHWM).

    .venv/bin/python benchmarks/worker_memory.py [--runs 3] [--messages N]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cold_start as harness

FIRST_ID = 2000009900000000
IDS_PER_MESSAGE = 50


def batch_size() -> int:
    """The worker's event source BatchSize: the most messages one invocation receives."""
    from devstack.template import resources

    worker = resources("AWS::Serverless::Function")["BulkWorkerFunction"]
    return int(next(iter(worker["Properties"]["Events"].values()))["Properties"]["BatchSize"])


def message_event(stack: harness.Stack, env: dict[str, str], messages: int, first_id: int) -> dict[str, object]:
    """Submit a job of ``messages`` x 50 sales and return the SQS event that carries its messages."""
    import boto3

    from devstack.sqs_poller import sqs_record
    from shared.settings import Settings
    from shared.wiring import build_bulk_service, build_job_store, build_service

    template = stack.meli.order(2000009101000011)
    assert template is not None
    ids = []
    for n in range(messages * IDS_PER_MESSAGE):
        order = copy.deepcopy(template)
        order["id"] = first_id + n
        order["pack_id"] = None  # a sale of its own: a copy must not join the template's pack
        order["shipping"] = {"id": None}
        stack.meli.upsert_order(order)
        ids.append(str(order["id"]))
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="bench-bulk")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    for cache in (build_service, build_bulk_service, build_job_store):
        cache.cache_clear()
    settings = Settings.from_env({**env, "BULK_QUEUE_URL": url})
    job = build_bulk_service(settings, queue=True).submit(harness.CONNECTION, ids).job
    assert job.messages == messages
    received: list[dict[str, object]] = []
    while len(received) < messages:
        received += sqs.receive_message(QueueUrl=url, AttributeNames=["All"], MaxNumberOfMessages=10)["Messages"]
    return {"Records": [sqs_record(message, arn, "us-east-1") for message in received]}


def run(mode: str, env: dict[str, str], event: dict[str, object] | None, hidden: list[str]) -> dict[str, float]:
    import subprocess

    with tempfile.TemporaryDirectory(prefix="worker-memory-") as tmp:
        event_file, result_file = Path(tmp) / "event.json", Path(tmp) / "result.json"
        if event is not None:
            event_file.write_text(json.dumps(event))
        function_dir = str(harness.SRC / "functions" / "bulk_worker")
        cmd = [
            sys.executable,
            "-c",
            harness.CHILD,
            mode,
            function_dir,
            str(event_file) if event else "-",
            str(result_file),
        ]
        proc = subprocess.run(
            cmd, env={**env, "BENCH_HIDDEN_MODULES": ",".join(hidden)}, capture_output=True, text=True
        )
        if proc.returncode != 0 or not result_file.exists():
            raise RuntimeError(f"{mode} failed:\n{proc.stderr[-3000:]}")
        data: dict[str, float] = json.loads(result_file.read_text())
        return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=None, help="messages per invocation (default: BatchSize)")
    args = parser.parse_args()
    messages = args.messages or batch_size()
    hidden = harness.hidden_modules()
    baseline, worker, settled = [], [], []
    with harness.Stack() as stack:
        for run_number in range(args.runs):
            app_env = stack.provision()
            env = harness.lambda_env("bulk_worker", {**app_env, "BULK_WORKER_THREADS": "8"}, stack.url, tracing=True)
            first_id = FIRST_ID + run_number * messages * IDS_PER_MESSAGE
            event = message_event(stack, env, messages, first_id)
            baseline.append(run("boto3", env, None, hidden)["rss_kb"] / 1024)
            result = run("invoke", env, event, hidden)
            worker.append(result["rss_kb"] / 1024)
            settled.append(result["total_ms"])
    peak, base = statistics.median(worker), statistics.median(baseline)
    print(
        f"bulk worker, {messages} x {IDS_PER_MESSAGE}-id messages in one invocation, {args.runs} fresh interpreters, "
        "tracing on (median):"
    )
    print(f"  peak RSS of the worker          {peak:6.1f} MB   (max {max(worker):.1f} MB)")
    print(f"  peak RSS of `import boto3`      {base:6.1f} MB")
    print(f"  import + processing the batch   {statistics.median(settled):6.0f} ms")
    print(f"  [{'ok' if max(worker) < 128 else 'MISSED'}] under 128 MB, so the 256 MB functions have room")
    return 0


if __name__ == "__main__":
    sys.exit(main())
