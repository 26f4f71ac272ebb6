"""Cold start of every Lambda handler: import time, import + first invocation, peak RSS, and where the time goes.

Each measurement runs in a fresh interpreter (one Lambda sandbox), N times, interleaved; the table shows medians.
The first invocation is real: AWS is moto's server and Mercado Libre the simulator, both started here, on loopback.

    .venv/bin/python benchmarks/cold_start.py [--runs 5] [--functions api verify ...] [--tracing on|off]
        [--layer makefile|pip-builder|source]

For a function with SnapStart in template.yaml (the API), it also emulates a restored sandbox in one process: import,
the before-snapshot hooks (what Lambda runs when it publishes the version), then the after-restore hooks and the first
invocation, timed from the restore on. That is the Python side of a restore only: Lambda's resume of the microVM
(``Restore Duration`` in the function's REPORT log line) is not in it, nor the page faults of reading the snapshot's
memory back, which a local process cannot reproduce.

What the child looks like, on purpose:
- Lambda's environment: ``LAMBDA_TASK_ROOT``, ``AWS_LAMBDA_FUNCTION_NAME``, ``_X_AMZN_TRACE_ID`` and the template's
  variables, so Powertools Tracer is enabled as with ``Tracing: Active`` (``--tracing off`` sets
  ``POWERTOOLS_TRACE_DISABLED``). Segments go over UDP to a port where no X-Ray daemon listens (UDP does not fail).
- Only what Lambda has is importable: the runtime's boto3 and the layer's requirements (``src/layer/requirements.txt``)
  with their dependencies; the dev venv's other packages (rich, click, moto, ...) are hidden, because some libraries
  import them when present (httpx imports rich and click for its CLI).
- The function folder first on ``sys.path`` (``/var/task``), then the layer (``/opt/python``), built for this
  machine's Python and platform by the deploy's own script (``src/layer/build_layer.py``) into a scratch folder:
  ``--layer makefile`` (the default) as ``sam build`` builds it now, with unchecked-hash bytecode for every module;
  ``--layer pip-builder`` the same files without bytecode, as SAM's Python builder shipped it; ``--layer source`` the
  dev tree (the venv's packages, with pip's bytecode, and ``src/shared``, compiled on import), as earlier rounds
  measured. The runtime's ``boto3`` of the baseline is the venv's, compiled, as the managed runtime ships it. No
  bytecode is written, as ``/var/task`` and ``/opt`` are read-only in Lambda.
- Timings are taken inside the child (``perf_counter`` around the import and the handler call), so interpreter start-up
  is left out of the function and of the baseline alike. "CPU ms" is the child's own CPU time over the same span: it
  leaves out waiting on moto, the simulator and other processes, so it moves less on a busy machine.
- Peak RSS is the child's ``VmHWM`` (``ru_maxrss`` of an exec'd child on Linux still counts the parent's pages).

Not in these numbers: TLS. Loopback is plain HTTP, so the handshakes and the CA-bundle load botocore pays on the first
call to each AWS service in Lambda are missing (httpx builds its TLS context anyway, so that part is counted).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.metadata
import json
import logging
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
sys.path.insert(0, str(SRC))

STAGE = "bench"
CONNECTION = "mla-main"
RATIO_TARGET = 2.0  # a function's import against `import boto3` (issue 14)
# What the python3.12 managed runtime ships besides the layer: boto3, and the SnapStart runtime-hooks library.
RUNTIME_PROVIDED = ("boto3", "snapshot-restore-py")
TOP_IMPORTS = 8

# The recorded events name sale 2000009713473608, which the default scenario does not hold; each is re-aimed at a
# scenario sale that takes the function's main path (scenarios/README.md), so the first call does the real work.
FUNCTIONS: dict[str, tuple[str, str]] = {  # function -> (event, sale id)
    "api": ("api/get-verification.json", "2000009101000011"),  # case a: paid, fine, not reflected -> relink
    "verify": ("tasks/verify.json", "2000009101000011"),  # case a -> next_action relink
    "resync": ("tasks/resync.json", "2000009109000015"),  # case i: in the error list, retryable -> reflected
    "relink": ("tasks/relink.json", "2000009101000011"),  # case a -> reflected
    "escalate": ("tasks/escalate.json", "2000009112000016"),  # case l: ML 503 every time -> escalated, one page
    # ML's callback: ML wants its 200 within 500 ms, a cold start included (a miss is retried by ML, not lost).
    "notifications_intake": ("notifications/post-notification.json", "2000009101000011"),  # case a: queued
}

# The other functions, whose events (SQS batches, schedules, Step Functions status changes) need a state of their own to
# do real work: their import is measured, not a first invocation.
IMPORT_ONLY = ("bulk_worker", "error_sweep", "reconcile", "execution_events", "notifications", "missed_feeds")

# Runs in the child: ``python -c CHILD mode function_dir event_file result_file``.
CHILD = r"""
import json, os, resource, sys, time

mode, function_dir, event_file, result_file = sys.argv[1:5]
hidden = frozenset(filter(None, os.environ.pop("BENCH_HIDDEN_MODULES", "").split(",")))


class NotInLambda:
    # Packages of the dev venv that neither the Lambda runtime nor the layer ship.
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in hidden:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NotInLambda())


class Context:
    function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "bench")
    function_version = "$LATEST"
    invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
    memory_limit_in_mb = 256
    aws_request_id = "6f1c2a3b-0000-4000-8000-000000000001"
    log_group_name = f"/aws/lambda/{function_name}"
    log_stream_name = "2026/11/27/[$LATEST]0123456789abcdef"

    def get_remaining_time_in_millis(self):
        return 30_000


def peak_rss_kb():
    # VmHWM is this process's own peak; ru_maxrss would include the parent's RSS at fork (Linux keeps it over exec).
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


event = json.loads(open(event_file).read()) if event_file != "-" else None
answer = None
t0, c0 = time.perf_counter(), time.process_time()
if mode == "boto3":
    import boto3
elif mode == "boto3-client":
    import boto3

    boto3.client("dynamodb")
else:
    sys.path.insert(0, function_dir)
    import app
t1 = time.perf_counter()
# Where the layer's packages came from: the parent checks they are the layer it built, not the dev tree.
origins = {name: getattr(sys.modules.get(name), "__file__", None) for name in ("shared", "pydantic", "boto3")}
snapshot_ms = restore_ms = 0.0
if mode == "restore":
    # What Lambda does with a SnapStart version: the before-snapshot hooks (last registered first) when it publishes
    # the version; later, in each restored sandbox, the after-restore hooks (in order of registration), then the
    # request. Timing restarts at the restore: the import and the before-snapshot hooks ran at publish time.
    import snapshot_restore_py

    for hook, args, kwargs in reversed(snapshot_restore_py.get_before_snapshot()):
        hook(*args, **kwargs)
    snapshot_ms = (time.perf_counter() - t1) * 1000
    t0, c0 = time.perf_counter(), time.process_time()
    for hook, args, kwargs in snapshot_restore_py.get_after_restore():
        hook(*args, **kwargs)
    restore_ms = (time.perf_counter() - t0) * 1000
print("@@bench: invoke", file=sys.stderr, flush=True)  # splits -X importtime output into import / first invoke
if mode in ("invoke", "restore"):
    answer = app.lambda_handler(event, Context())
t2, c2 = time.perf_counter(), time.process_time()
with open(result_file, "w") as out:
    json.dump(
        {
            "import_ms": (t1 - t0) * 1000 if mode != "restore" else 0.0,
            "snapshot_ms": snapshot_ms,
            "restore_ms": restore_ms,
            "total_ms": (t2 - t0) * 1000,
            "total_cpu_ms": (c2 - c0) * 1000,
            "rss_kb": peak_rss_kb(),
            "answer": answer,
            "origins": origins,
        },
        out,
        default=str,
    )
"""


@dataclass
class Sample:
    import_ms: float
    total_ms: float
    total_cpu_ms: float  # this process's CPU: leaves out waiting on moto, ML and other processes
    rss_mb: float
    answer: Any = None
    ml_requests: int = 0
    snapshot_ms: float = 0.0  # restore mode: import + before-snapshot hooks happen at publish time; this is the hooks
    restore_ms: float = 0.0  # restore mode: the after-restore hooks (total_ms = these + the first invocation)


@dataclass
class Series:
    samples: list[Sample] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(s, attr) for s in self.samples)

    def spread(self, attr: str) -> tuple[float, float]:
        values = [getattr(s, attr) for s in self.samples]
        return min(values), max(values)


# --- what Lambda can import ------------------------------------------------------------------------------------------


def lambda_distributions() -> set[str]:
    """The distributions Lambda has: the runtime's (boto3, snapshot-restore-py) plus the layer's requirements, with
    their dependencies."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    lines = (SRC / "layer" / "requirements.txt").read_text().splitlines()
    todo = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    todo += [Requirement(name) for name in RUNTIME_PROVIDED]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = importlib.metadata.distribution(req.name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for raw in requires:
            sub = Requirement(raw)
            extras = req.extras or {""}
            if sub.marker is None or any(sub.marker.evaluate({"extra": extra}) for extra in extras):
                todo.append(sub)
    return {name for name, _ in seen}


def hidden_modules() -> list[str]:
    """Top-level modules of the venv that no Lambda distribution provides (``shared`` comes from ``src``)."""
    from packaging.utils import canonicalize_name

    keep = lambda_distributions()
    hidden = [
        module
        for module, dists in importlib.metadata.packages_distributions().items()
        if not any(canonicalize_name(d) in keep for d in dists)
    ]
    return sorted(set(hidden) - {"shared"})


# --- the local AWS and Mercado Libre ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Stack:
    """moto's server and the simulated ML, re-provisioned and re-seeded before each invocation (same state each run)."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        from devstack.simulator.scenario import Scenario
        from devstack.simulator.server import MeliSimulator

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        data = json.loads((ROOT / "scenarios" / "default.json").read_text())
        data["faults"] = [f for f in data.get("faults", []) if f.get("kind") != "latency"]
        self.scenario = Scenario.model_validate(data)
        self.meli = MeliSimulator(self.scenario, timeout_hold_seconds=1.0)
        self.env: dict[str, str] = {}

    def __enter__(self) -> Stack:
        from devstack import moto_fidelity

        # DynamoDB's atomic conditional writes and per-item transactions, as every local stack has them (without
        # them moto's transactions deep-copy whole tables while other threads write: "dictionary changed size").
        moto_fidelity.install()
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request otherwise
        os.environ.update(aws_env(self.url))  # this process seeds through the same endpoint
        self.moto.start()
        self.meli.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.meli.stop()
        self.moto.stop()

    def provision(self, function: str | None = None) -> dict[str, str]:
        """A clean account: reset moto, create the template's tables and the rest, seed the scenario; for a task
        after Verify, the sale claimed by the event's execution, as its Verify task would leave it."""
        from devstack.account import provision

        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")).close()
        env = provision(STAGE, self.meli.url, self.scenario).env
        if function in ("relink", "resync", "escalate"):
            claim_for_the_event(env, event_for(function))
        if function == "notifications_intake":  # its queue, and the sample notification's application as ours
            import boto3

            sqs = boto3.client("sqs", endpoint_url=self.url, region_name="us-east-1")
            url = sqs.create_queue(QueueName=f"sales-recovery-{STAGE}-notifications")["QueueUrl"]
            notification = json.loads(event_for(function)["body"])
            env |= {"NOTIFICATIONS_QUEUE_URL": url, "MELI_APPLICATION_ID": str(notification["application_id"])}
        return env


def claim_for_the_event(env: dict[str, str], event: dict[str, Any]) -> None:
    """The sale owned by the event's execution (relink, resync and escalate write only for their own execution)."""
    from shared.lifecycle.table import Actor
    from shared.models import ExecutionRef
    from shared.settings import Settings
    from shared.wiring import build_service

    service = build_service(Settings.from_env(env))
    try:
        lifecycle = service.lifecycle
        snap = lifecycle.read(event["connection_id"], event["sale_id"])
        arn = event["execution_id"]
        execution = ExecutionRef(
            execution_arn=arn, name=arn.rsplit(":", 1)[-1], start_attempts=event.get("attempts", 0)
        )
        assert lifecycle.apply(snap, lifecycle.claim(snap, Actor.VERIFY_TASK, execution)) is not None
    finally:
        build_service.cache_clear()


def aws_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_ENDPOINT_URL": endpoint,
    }


def lambda_env(
    function: str, app_env: dict[str, str], endpoint: str, *, tracing: bool, layer: Path = SRC
) -> dict[str, str]:
    """What Lambda sets for a python3.12 function with ``Tracing: Active``, plus the template's variables."""
    name = f"sales-recovery-{STAGE}-{function}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(layer),
        "PYTHONDONTWRITEBYTECODE": "1",
        "LAMBDA_TASK_ROOT": str(SRC / "functions" / function),
        "_HANDLER": "app.lambda_handler",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "_X_AMZN_TRACE_ID": "Root=1-6745f2ac-7c1e2f3a4b5c6d7e8f901234;Parent=53995c3f42cd8ad8;Sampled=1",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{free_port()}",  # nobody listens; UDP sends do not fail
        "POWERTOOLS_SERVICE_NAME": "sales-recovery",
        "POWERTOOLS_METRICS_NAMESPACE": "SalesRecovery",
        "POWERTOOLS_LOG_LEVEL": "INFO",
        **aws_env(endpoint),
        **app_env,
    }
    if not tracing:
        env["POWERTOOLS_TRACE_DISABLED"] = "1"
    return env


# --- children ---------------------------------------------------------------------------------------------------------


def event_for(function: str) -> dict[str, Any]:
    if function in IMPORT_ONLY:
        return {}
    name, sale_id = FUNCTIONS[function]
    event: dict[str, Any] = copy.deepcopy(json.loads((ROOT / "events" / name).read_text()))
    if function == "notifications_intake":  # ML's sample, about the sale id above
        body = json.loads(event["body"])
        event["body"] = json.dumps({**body, "resource": f"/orders/{sale_id}"})
        return event
    if function != "api":
        event["sale_id"] = sale_id
        return event
    path = f"/connections/{CONNECTION}/sales/{sale_id}/verification"
    event["path"] = path
    event["pathParameters"] = {"connection_id": CONNECTION, "sale_id": sale_id}
    event["requestContext"]["path"] = f"/dev{path}"
    return event


def run_child(
    mode: str,
    function: str | None,
    env: dict[str, str],
    hidden: list[str],
    *,
    importtime: bool = False,
    layer: Path | None = None,
) -> tuple[Sample, str]:
    """One fresh interpreter; returns its sample and its stderr."""
    with tempfile.TemporaryDirectory(prefix="cold-start-") as tmp:
        event_file, result_file = Path(tmp) / "event.json", Path(tmp) / "result.json"
        if function is not None:
            event_file.write_text(json.dumps(event_for(function)))
        function_dir = str(SRC / "functions" / function) if function else "-"
        cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), "-c", CHILD]
        cmd += [mode, function_dir, str(event_file) if function else "-", str(result_file)]
        proc = subprocess.run(
            cmd, env={**env, "BENCH_HIDDEN_MODULES": ",".join(hidden)}, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0 or not result_file.exists():
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
            raise RuntimeError(f"{mode} {function or ''} failed (exit {proc.returncode}):\n{tail}")
        data = json.loads(result_file.read_text())
    if layer is not None:  # a function's child: its packages must be the layer's
        strays = {m: f for m, f in data["origins"].items() if f is not None and not f.startswith(str(layer))}
        if strays:
            raise RuntimeError(f"{function}: imported from outside the layer {layer}: {strays}")
    sample = Sample(
        data["import_ms"], data["total_ms"], data["total_cpu_ms"], data["rss_kb"] / 1024, summarize(data["answer"])
    )
    sample.snapshot_ms, sample.restore_ms = data["snapshot_ms"], data["restore_ms"]
    return sample, proc.stderr


def summarize(answer: Any) -> str:
    """A few words on what the handler answered, so the table shows the first call did the real work."""
    if not isinstance(answer, dict):
        return ""
    if "statusCode" in answer:
        body = json.loads(answer.get("body") or "{}")
        if "status" in body:  # the notification callback's answer
            return f"{answer['statusCode']} {body['status']}"
        return f"{answer['statusCode']} next_action={body.get('next_action', body.get('error', '?'))}"
    if "next_action" in answer:
        return f"next_action={answer['next_action']}"
    return str(answer.get("outcome", "?"))


@dataclass
class Imported:
    module: str
    cumulative_ms: float
    phase: str
    children: list[Imported] = field(default_factory=list)


def parse_importtime(stderr: str) -> list[Imported]:
    """The costliest imports of ``-X importtime`` output, tagged by phase (module import or first call).

    A module whose time is mostly one child's (>= 80 %) is left out for that child, so a chain like
    botocore.waiter > botocore.docs > botocore.docs.service shows once, by the module that does the work.
    """
    phase, nodes = "import", []
    pending: list[tuple[int, Imported]] = []  # -X importtime prints children before their parent, indented by depth
    pattern = re.compile(r"^import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)")
    for line in stderr.splitlines():
        if line.startswith("@@bench: invoke"):
            phase = "first call"
            continue
        match = pattern.match(line)
        if not match:
            continue
        depth = len(match.group(2)) // 2
        node = Imported(match.group(3), int(match.group(1)) / 1000, phase)
        while pending and pending[-1][0] > depth:
            node.children.append(pending.pop()[1])
        pending.append((depth, node))
        nodes.append(node)
    telling = [
        n for n in nodes if n.module != "app" and not any(c.cumulative_ms >= 0.8 * n.cumulative_ms for c in n.children)
    ]
    return sorted(telling, key=lambda i: i.cumulative_ms, reverse=True)


# --- the run ----------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def progress(label: str) -> Iterator[None]:
    print(f"  {label} ...", end="", file=sys.stderr, flush=True)
    started = time.perf_counter()
    yield
    print(f" {time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh interpreters per measurement (median reported)")
    parser.add_argument("--functions", nargs="+", choices=list(FUNCTIONS), default=list(FUNCTIONS))
    parser.add_argument("--tracing", choices=["on", "off"], default="on", help="on = Lambda's Tracing: Active")
    parser.add_argument("--no-importtime", action="store_true", help="skip the -X importtime breakdown")
    parser.add_argument("--no-import-only", action="store_true", help=f"skip the import of {', '.join(IMPORT_ONLY)}")
    parser.add_argument(
        "--layer",
        choices=list(LAYERS),
        default="makefile",
        help="makefile: as sam build builds it (bytecode); pip-builder: as SAM's Python builder did (none); "
        "source: the dev tree",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cold-start-layer-") as scratch:
        layer = build_bench_layer(args.layer, Path(scratch) / "python")
        return measure(args, layer)


# How the functions' layer is laid out in the children (see the module's docstring).
LAYERS = {
    "makefile": "the layer as `sam build` builds it (src/layer/Makefile): pinned wheels and `shared`, unchecked-hash "
    "bytecode for every module",
    "pip-builder": "the layer as SAM's Python builder built it: the same files, no bytecode (every module compiled on "
    "import)",
    "source": "the dev tree: the venv's packages (pip's bytecode) and src/shared (compiled on import)",
}


def build_bench_layer(kind: str, target: Path) -> Path | None:
    """The layer for this machine's Python and platform, by the deploy's script; None for the dev tree."""
    if kind == "source":
        return None
    from layer.build_layer import build

    with progress(f"building the layer ({kind})"):
        build(
            target,
            python_version=f"{sys.version_info.major}.{sys.version_info.minor}",
            platform="native",
            bytecode=kind == "makefile",
        )
    return target


def measure(args: argparse.Namespace, layer: Path | None) -> int:
    tracing = args.tracing == "on"
    path = layer or SRC

    stale = sorted({str(p.parent.relative_to(ROOT)) for p in SRC.rglob("__pycache__/*.pyc")})
    if stale and layer is None:
        print(
            f"note: bytecode caches under src/ ({', '.join(stale[:3])}, ...) make the imports look faster than "
            "in Lambda; delete them for the honest number",
            file=sys.stderr,
        )

    hidden = hidden_modules()
    baseline = {"boto3": Series(), "boto3-client": Series()}
    imports = {f: Series() for f in args.functions}
    invokes = {f: Series() for f in args.functions}
    restores = {f: Series() for f in args.functions if f in snapstart_functions()}
    import_only = {} if args.no_import_only else {f: Series() for f in IMPORT_ONLY}
    breakdown: dict[str, list[Imported]] = {}

    print(f"cold start: {args.runs} runs x {len(args.functions)} functions, tracing {args.tracing}", file=sys.stderr)
    with Stack() as stack:
        base_env = lambda_env("api", {}, stack.url, tracing=tracing)
        for run in range(1, args.runs + 1):
            with progress(f"run {run}/{args.runs}"):
                for mode, series in baseline.items():
                    series.samples.append(run_child(mode, None, base_env, hidden)[0])
                for function in args.functions:
                    env = lambda_env(function, stack.provision(function), stack.url, tracing=tracing, layer=path)
                    imports[function].samples.append(run_child("import", function, env, hidden, layer=layer)[0])
                    before = len(stack.meli.requests)
                    sample, _ = run_child("invoke", function, env, hidden, layer=layer)
                    sample.ml_requests = len(stack.meli.requests) - before
                    invokes[function].samples.append(sample)
                    if function in restores:
                        env = lambda_env(function, stack.provision(function), stack.url, tracing=tracing, layer=path)
                        env["AWS_LAMBDA_INITIALIZATION_TYPE"] = "snap-start"
                        before = len(stack.meli.requests)
                        sample, _ = run_child("restore", function, env, hidden, layer=layer)
                        sample.ml_requests = len(stack.meli.requests) - before
                        restores[function].samples.append(sample)
                for function, series in import_only.items():
                    # Nothing is called: no state.
                    env = lambda_env(function, {}, stack.url, tracing=tracing, layer=path)
                    series.samples.append(run_child("import", function, env, hidden, layer=layer)[0])
        if not args.no_importtime:
            with progress("-X importtime"):
                for function in args.functions:
                    env = lambda_env(function, stack.provision(function), stack.url, tracing=tracing, layer=path)
                    _, stderr = run_child("invoke", function, env, hidden, importtime=True, layer=layer)
                    breakdown[function] = parse_importtime(stderr)

    print(f"\nLayer: {LAYERS[args.layer]}.")
    report(args.runs, tracing, baseline, imports, invokes, breakdown, hidden)
    if import_only:
        report_import_only(baseline, import_only)
    if restores:
        report_restores(baseline, invokes, restores)
    return 0


def report_import_only(baseline: dict[str, Series], imports: dict[str, Series]) -> None:
    boto3_ms = baseline["boto3"].median("total_ms")
    print("\nThe other functions, import only (same children, same runs):")
    target = f"import <= {RATIO_TARGET:.1f}x"
    print(f"| function | import ms | (min-max) | import / `import boto3` | {target} | peak RSS MB |")
    print("|---|--:|--:|--:|:-:|--:|")
    for function, series in imports.items():
        imp = series.median("total_ms")
        low, high = series.spread("total_ms")
        ratio = imp / boto3_ms
        print(
            f"| {function} | {imp:.0f} | ({low:.0f}-{high:.0f}) | {ratio:.1f}x "
            f"| {'met' if ratio <= RATIO_TARGET else 'above'} | {series.median('rss_mb'):.0f} |"
        )


def snapstart_functions() -> set[str]:
    """The benchmark's functions (named by their folder) with SnapStart in template.yaml."""
    from devstack.template import resources

    return {
        Path(str(res["Properties"]["CodeUri"])).name
        for res in resources("AWS::Serverless::Function").values()
        if res["Properties"].get("SnapStart", {}).get("ApplyOn") == "PublishedVersions"
    }


def report_restores(baseline: dict[str, Series], invokes: dict[str, Series], restores: dict[str, Series]) -> None:
    boto3_ms = baseline["boto3"].median("total_ms")
    print(
        "\nSnapStart, emulated locally (one process: import and the before-snapshot hooks as at publish time, then "
        "the after-restore hooks and the first invocation, timed from the restore; Lambda's own microVM restore is "
        "not in it):"
    )
    print(
        "| function | before-snapshot hooks ms (at publish) | after-restore hooks ms | first answer after restore ms "
        "| (min-max) | / `import boto3` | on-demand import + first invoke ms | first answer answered |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|---|")
    for function, series in restores.items():
        total = series.median("total_ms")
        low, high = series.spread("total_ms")
        print(
            f"| {function} | {series.median('snapshot_ms'):.0f} | {series.median('restore_ms'):.0f} | {total:.0f} "
            f"| ({low:.0f}-{high:.0f}) | {total / boto3_ms:.1f}x | {invokes[function].median('total_ms'):.0f} "
            f"| {series.samples[-1].answer} |"
        )


def report(
    runs: int,
    tracing: bool,
    baseline: dict[str, Series],
    imports: dict[str, Series],
    invokes: dict[str, Series],
    breakdown: dict[str, list[Imported]],
    hidden: list[str],
) -> None:
    boto3_ms = baseline["boto3"].median("total_ms")
    client_ms = baseline["boto3-client"].median("total_ms")
    boto3_cpu = baseline["boto3"].median("total_cpu_ms")
    mode = "on (Tracing: Active)" if tracing else "off (POWERTOOLS_TRACE_DISABLED=1)"
    print(f"\nCold start: median of {runs} fresh interpreters each; Python {sys.version.split()[0]}; tracing {mode}.")
    print(
        f"Baseline: `import boto3` {boto3_ms:.0f} ms ({boto3_cpu:.0f} ms CPU), "
        f'`import boto3; boto3.client("dynamodb")` {client_ms:.0f} ms '
        f"(peak RSS {baseline['boto3'].median('rss_mb'):.0f} / {baseline['boto3-client'].median('rss_mb'):.0f} MB)."
    )
    print()
    print(
        "| function | import ms | import + first invoke ms | (min-max) | of which CPU ms | import / `import boto3` "
        f"| import + first invoke / `import boto3` | import <= {RATIO_TARGET:.1f}x | same, CPU / CPU | peak RSS MB "
        "| first invoke answered | ML requests |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|:-:|--:|--:|---|--:|")
    for function in imports:
        imp, inv = imports[function].median("total_ms"), invokes[function].median("total_ms")
        low, high = invokes[function].spread("total_ms")
        ratio = inv / boto3_ms
        last, cpu, rss = (
            invokes[function].samples[-1],
            invokes[function].median("total_cpu_ms"),
            invokes[function].median("rss_mb"),
        )
        print(
            f"| {function} | {imp:.0f} | {inv:.0f} | ({low:.0f}-{high:.0f}) | {cpu:.0f} "
            f"| {imp / boto3_ms:.1f}x | {ratio:.1f}x | {'met' if imp / boto3_ms <= RATIO_TARGET else 'above'} "
            f"| {cpu / boto3_cpu:.1f}x | {rss:.0f} "
            f"| {last.answer} | {last.ml_requests} |"
        )
    if breakdown:
        print(
            f"\nTop {TOP_IMPORTS} imports by cumulative ms (`python -X importtime`, one child per function, import + "
            "first invoke; a module's time includes its children's; [call] = imported during the first invocation):"
        )
        for function, items in breakdown.items():
            top = ", ".join(
                f"{i.module} {i.cumulative_ms:.0f}" + (" [call]" if i.phase != "import" else "")
                for i in items[:TOP_IMPORTS]
            )
            print(f"- {function}: {top}")
    print(f"\nHidden from the children (in the dev venv, not in Lambda): {', '.join(hidden)}.")


if __name__ == "__main__":
    raise SystemExit(main())
