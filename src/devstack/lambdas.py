"""Runs the template's Lambda handlers in-process, in place of moto's Docker-based Lambda runtime.

``LocalLambdaRuntime.install()`` patches ``moto.awslambda.models.LambdaFunction._invoke_lambda`` (the one patch point
every moto invocation goes through: ``Invoke``, Step Functions ``lambda:invoke`` tasks, SQS event-source mappings,
SNS subscriptions), so those invocations run the real handler found from ``template.yaml``: ``CodeUri`` + ``Handler``
of each ``AWS::Serverless::Function``, loaded by file path under a unique module name.

Per invocation the function's environment (as moto holds it, i.e. resolved by CloudFormation) is layered over the
process environment for the calling thread only, and for threads the handler starts. There is deliberately no global
lock: invocations nest across threads (handler -> SQS -> event-source mapping -> handler) and a lock deadlocks.

Timeouts
--------
Each function's ``Timeout`` (as deployed: moto's configuration, i.e. the template's value or Globals', or what
``UpdateFunctionConfiguration`` set) is enforced, as Lambda enforces it. The handler runs in a thread of its own (in a
copy of the caller's ``contextvars`` context, with the invocation's environment overlay) while the invoking thread
waits up to the time left; ``get_remaining_time_in_millis`` reads the same clock. The module is imported before the
clock starts (Lambda's init phase is not part of the invoke timeout). An invocation that overruns is reported as Lambda
reports it, to whoever invoked it:

* ``runtime.invoke`` (API server, SQS poller, schedules, tests) raises ``LambdaTimedOut``, whose payload is what the
  ``Invoke`` API answers: ``{"errorType": "Sandbox.Timedout", "errorMessage": "RequestId: <id> Error: Task timed out
  after 3.00 seconds"}`` (Lambda's troubleshooting guide names the error ``Sandbox.Timedout``).
* ``Invoke`` through moto (boto3's ``lambda.invoke``, Step Functions ``lambda:invoke`` tasks) answers that payload with
  a function error. moto's Step Functions interpreter names a task's error after the payload's ``errorType``; Step
  Functions documents that Lambda's unhandled errors, function timeouts included, reach the state machine as
  ``Lambda.Unknown`` (Step Functions developer guide, "Handle Lambda service exceptions"), so a timed-out task fails
  with ``Lambda.Unknown`` (cause: the payload above). ``Lambda.Unknown`` matches ``States.ALL`` and
  ``States.TaskFailed``, none of the ``Lambda.*Exception`` service errors our ASL retries: a timed-out task goes to the
  ``States.ALL`` catcher, as it would in AWS. (``States.Timeout`` is the error of a state's own ``TimeoutSeconds``,
  which moto's interpreter already enforces; our tasks declare none.)
* The SQS poller (``devstack.sqs_poller``) treats a timed-out batch as Lambda's event source mapping does: nothing is
  deleted, nothing is made visible early; every message of the batch comes back after the queue's visibility timeout,
  and that receive counts toward the redrive policy's ``maxReceiveCount``.

Python cannot kill a thread, so the overrunning handler goes on in the background (an *orphan*). Lambda stops the
runtime process of a timed-out invocation: requests it had already sent still complete at the service, nothing later
happens. The orphan is marked abandoned, and every AWS call it (or a thread it started) makes from then on raises
``SandboxStopped`` before anything is sent; its return value is discarded. What can still land after the timeout is
what a killed sandbox could leave behind too: a request already in flight when the clock ran out. (HTTP calls to
Mercado Libre are reads and are not cut.)

A test that parks an invocation on purpose (tests/model stops actors at pause points for as long as it likes) wraps
the park in ``held()``: the invocation's clock stops for the block (a frozen sandbox spends no time either), so the
timeout still applies to the time the handler actually runs and ``get_remaining_time_in_millis`` does not see the
park. ``LocalLambdaRuntime(enforce_timeouts=False)``, ``runtime.enforce_timeouts = False`` or
``DEVSTACK_ENFORCE_TIMEOUTS=0`` switch enforcement off (the handler then runs in the caller's thread, as before).

``runtime.stats`` records, per function, the invocations, the timeouts and the longest invocation (held time
excluded) against the function's timeout; ``runtime.report()`` prints them ("longest invocation X s vs timeout Y s").

Sandboxes
---------
Lambda never runs two invocations in one execution environment, and handler modules keep per-request state at module
level (Powertools' resolver holds the current event and route arguments on its ``app``). So each function has a pool
of sandboxes: an invocation takes an idle one or initialises a new one (the handler module imported again under a name
of its own), and gives it back when it returns. A timed-out invocation's sandbox is never reused (Lambda resets it).
Two concurrent requests to the API therefore never share a resolver, as in AWS.

Other differences from Lambda, on purpose: handler stdout is not captured into the returned logs, the ``shared``
package and installed libraries are imported once per process and shared by every sandbox (their module state must
be safe for concurrent use; the handler module's is per sandbox), reserved concurrency is not enforced, and the
function folder is not put on ``sys.path`` (handlers import from ``shared`` and installed packages only).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import json
import logging
import os
import re
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devstack.template import ROOT, TEMPLATE_PATH

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from types import ModuleType

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 3  # Lambda's defaults when neither the function nor Globals set them
DEFAULT_MEMORY = 128
ENFORCE_TIMEOUTS_ENV = "DEVSTACK_ENFORCE_TIMEOUTS"
TIMEOUT_ERROR_TYPE = "Sandbox.Timedout"  # what Lambda's Invoke answers for an invocation that ran out of time
SFN_TIMEOUT_ERROR = "Lambda.Unknown"  # how Step Functions names it in a lambda:invoke task (module docstring)
_HELD_RECHECK_SECONDS = 0.5  # while an invocation is held, how often its watchdog looks again


def timeouts_default() -> bool:
    """On unless ``DEVSTACK_ENFORCE_TIMEOUTS=0`` (or false/off/no)."""
    return os.environ.get(ENFORCE_TIMEOUTS_ENV, "1").strip().lower() not in ("0", "false", "off", "no")


class Invocation:
    """One invocation's clock and fate: its deadline (stopped while held), and whether its invoker gave up on it."""

    def __init__(self, function: str, timeout: float, request_id: str | None = None) -> None:
        self.function = function
        self.timeout = timeout
        self.request_id = request_id or str(uuid.uuid4())
        self.abandoned = False  # timed out: its invoker has the failure, anything it still does is discarded
        self.finished = threading.Event()
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._holds = 0
        self._held_since = 0.0
        self._held_for = 0.0

    def elapsed(self) -> float:
        """Seconds of the invocation so far, the time it was held excluded."""
        with self._lock:
            now = time.monotonic()
            held = self._held_for + (now - self._held_since if self._holds else 0.0)
            return now - self._started - held

    def remaining(self) -> float:
        return self.timeout - self.elapsed()

    @property
    def held(self) -> bool:
        with self._lock:
            return self._holds > 0

    def hold(self) -> None:
        with self._lock:
            if self._holds == 0:
                self._held_since = time.monotonic()
            self._holds += 1

    def release(self) -> None:
        with self._lock:
            self._holds -= 1
            if self._holds == 0:
                self._held_for += time.monotonic() - self._held_since

    def finish(self) -> bool:
        """The handler returned (or raised); True when its invoker had already given up on it."""
        with self._lock:
            self.finished.set()
            return self.abandoned

    def abandon(self) -> bool:
        """Give up on a handler that has not finished; False when it finished meanwhile."""
        with self._lock:
            if self.finished.is_set():
                return False
            self.abandoned = True
            return True


class LambdaContext:
    """The context object Lambda's Python runtime passes to a handler (the attributes Powertools reads)."""

    def __init__(
        self,
        *,
        function_name: str,
        function_arn: str,
        memory_limit_in_mb: int,
        timeout_seconds: float,
        log_group_name: str,
        function_version: str = "$LATEST",
        invocation: Invocation | None = None,
    ) -> None:
        self.function_name = function_name
        self.function_version = function_version
        self.invoked_function_arn = function_arn
        self.memory_limit_in_mb = memory_limit_in_mb
        self._invocation = invocation or Invocation(function_name, timeout_seconds)
        self.aws_request_id = self._invocation.request_id
        self.log_group_name = log_group_name
        now = datetime.now(UTC)
        self.log_stream_name = f"{now:%Y/%m/%d}/[{function_version}]{uuid.uuid4().hex}"
        self.identity: Any = None
        self.client_context: Any = None
        self.tenant_id: str | None = None

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self._invocation.remaining() * 1000))


@dataclass
class FunctionStats:
    """What the invocations of one function took, against its timeout (held time excluded)."""

    logical_id: str
    timeout: float
    invocations: int = 0
    timeouts: int = 0
    longest: float = 0.0
    orphans_finished: int = 0  # timed-out handlers that have since returned (their result discarded)

    def line(self) -> str:
        return (
            f"{self.logical_id}: longest invocation {self.longest:.2f} s vs timeout {self.timeout:g} s "
            f"({self.invocations} invocations, {self.timeouts} timed out)"
        )


@dataclass(frozen=True)
class FunctionSpec:
    """Where a template function's handler lives and what the template says about its limits."""

    logical_id: str
    code_dir: Path
    handler: str
    module_name: str
    layer_dirs: tuple[Path, ...] = ()
    timeout: int = DEFAULT_TIMEOUT
    memory: int = DEFAULT_MEMORY

    @property
    def module_path(self) -> Path:
        module, _, _ = self.handler.rpartition(".")
        return self.code_dir.joinpath(*module.split(".")).with_suffix(".py")

    @property
    def function_attr(self) -> str:
        return self.handler.rpartition(".")[2]


@dataclass
class _Target:
    """One invocation's view of the function: moto's configuration when deployed, the template's otherwise."""

    spec: FunctionSpec
    function_name: str
    function_arn: str
    timeout: float
    memory: int
    environment: dict[str, str] = field(default_factory=dict)
    version: str = "$LATEST"


class LambdaInvocationError(Exception):
    """A handler failed; carries Lambda's error payload (``errorType`` is the Python exception class name)."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__(f"{payload.get('errorType')}: {payload.get('errorMessage')}")
        self.payload = payload


class LambdaTimedOut(LambdaInvocationError):
    """The invocation overran its function's ``Timeout``; the payload is the one Lambda's ``Invoke`` answers."""

    def __init__(self, invocation: Invocation) -> None:
        super().__init__(
            {
                "errorType": TIMEOUT_ERROR_TYPE,
                "errorMessage": f"RequestId: {invocation.request_id} Error: Task timed out after "
                f"{invocation.timeout:.2f} seconds",
            }
        )
        self.invocation = invocation


class SandboxStopped(RuntimeError):
    """An AWS call from an invocation that already timed out: Lambda stopped that sandbox, the call never leaves."""


# --------------------------------------------------------------------------------------------------------------------
# Per-thread environment overlay.
#
# os.environ's class is swapped (same object, so every module holding a reference sees it) for a subclass that reads a
# thread-local overlay first. Threads started during an invocation inherit the overlay (e.g. a handler's thread pool).

_tls = threading.local()


def _overlay_stack() -> list[dict[str, str | None]]:
    stack: list[dict[str, str | None]] | None = getattr(_tls, "stack", None)
    if stack is None:
        stack = _tls.stack = []
    return stack


def _current_overlay() -> dict[str, str | None] | None:
    stack = _overlay_stack()
    return stack[-1] if stack else None


class _OverlayEnviron(os._Environ[str]):
    """os.environ with a per-thread overlay on top; ``None`` in the overlay means "unset for this invocation"."""

    def __getitem__(self, key: str) -> str:
        overlay = _current_overlay()
        if overlay is not None and key in overlay:
            value = overlay[key]
            if value is None:
                raise KeyError(key)
            return value
        return str(super().__getitem__(key))

    def __setitem__(self, key: str, value: str) -> None:
        overlay = _current_overlay()
        if overlay is None:
            super().__setitem__(key, value)
        else:  # like Lambda: a handler's writes stay in its own sandbox
            overlay[key] = str(value)

    def __delitem__(self, key: str) -> None:
        overlay = _current_overlay()
        if overlay is None:
            super().__delitem__(key)
            return
        if key not in self:
            raise KeyError(key)
        overlay[key] = None

    def __iter__(self) -> Iterator[str]:
        overlay = _current_overlay()
        base = list(super().__iter__())
        if overlay is None:
            yield from base
            return
        yield from (k for k in base if k not in overlay)
        yield from (k for k, v in overlay.items() if v is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def copy(self) -> dict[str, str]:
        return dict(self)

    def __repr__(self) -> str:
        return f"environ({dict(self)!r})"


_original_environ_class = type(os.environ)
_original_thread_start = threading.Thread.start


def current_invocation() -> Invocation | None:
    """The invocation the calling thread works for (threads a handler starts inherit it), if any."""
    invocation: Invocation | None = getattr(_tls, "invocation", None)
    return invocation


def _thread_start_inheriting_overlay(self: threading.Thread) -> None:
    overlay = _current_overlay()
    invocation = current_invocation()
    if overlay is not None or invocation is not None:
        run = self.run

        def run_with_overlay() -> None:
            if overlay is not None:
                _overlay_stack().append(overlay)
            _tls.invocation = invocation
            try:
                run()
            finally:
                _tls.invocation = None
                if overlay is not None:
                    _overlay_stack().pop()

        self.run = run_with_overlay  # type: ignore[method-assign]
    _original_thread_start(self)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Stop the calling invocation's clock while the block lasts: for a test that parks an invocation on purpose.
    Outside an invocation it does nothing."""
    invocation = current_invocation()
    if invocation is None:
        yield
        return
    invocation.hold()
    try:
        yield
    finally:
        invocation.release()


@contextlib.contextmanager
def environment_overlay(variables: Mapping[str, str]) -> Iterator[None]:
    """Layer ``variables`` over os.environ for the current thread (and threads it starts) until exit."""
    _overlay_stack().append(dict(variables))
    try:
        yield
    finally:
        _overlay_stack().pop()


# --------------------------------------------------------------------------------------------------------------------
# The moto patch. Installed once; dispatches to whichever installed runtime knows the function.

_installed: list[LocalLambdaRuntime] = []
_install_lock = threading.Lock()  # guards install/uninstall only, never an invocation
_original_invoke_lambda: Any = None
_original_make_api_call: Any = None
_original_sfn_lambda_from_error: Any = None


def _patched_invoke_lambda(self: Any, event: Any = None) -> tuple[str, bool, str]:
    for runtime in reversed(_installed):
        spec = runtime.spec_for_function_name(self.function_name)
        if spec is not None:
            return runtime._invoke_moto_function(spec, self, event)
    message = f"no in-process handler for Lambda function {self.function_name!r} (not in the SAM template?)"
    return json.dumps({"errorType": "Runtime.HandlerNotFound", "errorMessage": message}), True, message


def _api_call_unless_stopped(self: Any, operation_name: str, api_params: Any) -> Any:
    """botocore's ``_make_api_call``, refused for an invocation that timed out (its sandbox is gone in AWS)."""
    invocation = current_invocation()
    if invocation is not None and invocation.abandoned:
        service = self.meta.service_model.service_name
        raise SandboxStopped(
            f"{service}:{operation_name} from {invocation.function} (request {invocation.request_id}) after it timed "
            f"out at {invocation.timeout:g} s: Lambda stopped that sandbox"
        )
    return _original_make_api_call(self, operation_name, api_params)


def _sfn_lambda_from_error(self: Any, env: Any, ex: Exception) -> Any:
    """moto's Step Functions Lambda task error mapping, with a timed-out function reported as ``Lambda.Unknown``."""
    from moto.stepfunctions.parser.api import HistoryEventType, TaskFailedEventDetails
    from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import CustomErrorName
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import FailureEvent
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.lambda_eval_utils import (
        LambdaFunctionErrorException,
    )
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

    if isinstance(ex, LambdaFunctionErrorException) and _is_timeout_payload(ex.payload):
        return FailureEvent(
            env=env,
            error_name=CustomErrorName(SFN_TIMEOUT_ERROR),
            event_type=HistoryEventType.TaskFailed,
            event_details=EventDetails(  # type: ignore[typeddict-item]  # one key set, as moto sets it
                taskFailedEventDetails=TaskFailedEventDetails(
                    error=SFN_TIMEOUT_ERROR,
                    cause=ex.payload,
                    resource=self._get_sfn_resource(),
                    resourceType=self._get_sfn_resource_type(),
                )
            ),
        )
    return _original_sfn_lambda_from_error(self, env, ex)


def _is_timeout_payload(payload: str) -> bool:
    try:
        return bool(json.loads(payload).get("errorType") == TIMEOUT_ERROR_TYPE)
    except (ValueError, AttributeError):
        return False


def _install_patches() -> None:
    global _original_invoke_lambda, _original_make_api_call, _original_sfn_lambda_from_error
    from botocore.client import BaseClient
    from moto.awslambda.models import LambdaFunction
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_lambda import (
        StateTaskServiceLambda,
    )

    _original_invoke_lambda = LambdaFunction.__dict__["_invoke_lambda"]
    LambdaFunction._invoke_lambda = _patched_invoke_lambda  # type: ignore[method-assign]
    _original_sfn_lambda_from_error = StateTaskServiceLambda.__dict__["_from_error"]
    StateTaskServiceLambda._from_error = _sfn_lambda_from_error  # type: ignore[method-assign]
    if _original_make_api_call is None:
        # Once per process, never removed: others wrap it after us (devstack.iam, tests' mock.patch) and unwrap in
        # their own order; outside a timed-out invocation it is one thread-local read.
        _original_make_api_call = BaseClient.__dict__["_make_api_call"]
        BaseClient._make_api_call = _api_call_unless_stopped
    os.environ.__class__ = _OverlayEnviron
    threading.Thread.start = _thread_start_inheriting_overlay  # type: ignore[method-assign]


def _remove_patches() -> None:
    from moto.awslambda.models import LambdaFunction
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_lambda import (
        StateTaskServiceLambda,
    )

    LambdaFunction._invoke_lambda = _original_invoke_lambda  # type: ignore[method-assign]
    StateTaskServiceLambda._from_error = _original_sfn_lambda_from_error  # type: ignore[method-assign]
    os.environ.__class__ = _original_environ_class
    threading.Thread.start = _original_thread_start  # type: ignore[method-assign]


# --------------------------------------------------------------------------------------------------------------------


def _literal_int(value: Any, default: int) -> int:
    """Template numbers may be intrinsics (``!Ref Param``); those resolve only once deployed."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _identifier(text: str) -> str:
    return re.sub(r"\W+", "_", text).strip("_")


def function_specs(template: Mapping[str, Any], repo_root: Path) -> dict[str, FunctionSpec]:
    """Every ``AWS::Serverless::Function`` with local code, by logical id (Globals applied)."""
    resources: Mapping[str, Any] = template.get("Resources", {})
    globals_fn: Mapping[str, Any] = template.get("Globals", {}).get("Function", {})
    layer_dirs: dict[str, Path] = {}
    for logical_id, res in resources.items():
        content_uri = res.get("Properties", {}).get("ContentUri")
        if res.get("Type") == "AWS::Serverless::LayerVersion" and isinstance(content_uri, str):
            layer_dir = repo_root / content_uri
            # Lambda mounts a layer's python/ folder on sys.path; a layer built by SAM from a flat folder has it too.
            layer_dirs[logical_id] = layer_dir / "python" if (layer_dir / "python").is_dir() else layer_dir

    specs = {}
    for logical_id, res in resources.items():
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        props = {**globals_fn, **res.get("Properties", {})}
        code_uri, handler = props.get("CodeUri"), props.get("Handler")
        if not isinstance(code_uri, str) or not isinstance(handler, str):
            continue  # InlineCode or image functions have nothing to load from disk
        layers = [*globals_fn.get("Layers", []), *res.get("Properties", {}).get("Layers", [])]
        refs = [layer.get("Ref") for layer in layers if isinstance(layer, dict)]
        code_dir = (repo_root / code_uri).resolve()
        module = handler.rpartition(".")[0]
        specs[logical_id] = FunctionSpec(
            logical_id=logical_id,
            code_dir=code_dir,
            handler=handler,
            # e.g. functions_api_app: every function's handler is app.py, so the name must be unique
            module_name=_identifier("_".join([*Path(code_uri).parts[-2:], module])),
            layer_dirs=tuple(layer_dirs[ref] for ref in refs if ref in layer_dirs),
            timeout=_literal_int(props.get("Timeout"), DEFAULT_TIMEOUT),
            memory=_literal_int(props.get("MemorySize"), DEFAULT_MEMORY),
        )
    return specs


class LocalLambdaRuntime:
    """In-process Lambda runtime for the functions of a SAM template."""

    def __init__(
        self,
        template: Path | Mapping[str, Any] = TEMPLATE_PATH,
        repo_root: Path | None = None,
        *,
        enforce_timeouts: bool | None = None,
    ) -> None:
        if isinstance(template, Path):
            from samtranslator.yaml_helper import yaml_parse  # understands !Ref, !Sub, !GetAtt

            self.repo_root = repo_root or template.resolve().parent
            parsed: Mapping[str, Any] = yaml_parse(template.read_text())
        else:
            self.repo_root = repo_root or ROOT
            parsed = template
        self.specs = function_specs(parsed, self.repo_root)
        self._names: dict[str, str] = {}  # deployed function name -> logical id
        self._handlers: dict[str, Callable[[Any, Any], Any]] = {}  # each function's first sandbox
        self._load_locks = {logical_id: threading.Lock() for logical_id in self.specs}
        self._intercepts: dict[str, Callable[[Any, Any], Any]] = {}
        self._idle: dict[str, list[Callable[[Any, Any], Any]]] = {logical_id: [] for logical_id in self.specs}
        self._sandboxes: dict[str, int] = dict.fromkeys(self.specs, 0)  # sandboxes initialised per function
        self._pool_lock = threading.Lock()
        self.region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
        # Each function's Timeout is enforced unless switched off here (None: DEVSTACK_ENFORCE_TIMEOUTS, default on).
        self.enforce_timeouts = timeouts_default() if enforce_timeouts is None else enforce_timeouts
        self.stats: dict[str, FunctionStats] = {}  # logical id -> what its invocations took
        self._stats_lock = threading.Lock()

    # -- wiring -------------------------------------------------------------------------------------------------------

    def install(self) -> None:
        """Route moto's Lambda invocations of this template's functions to the in-process handlers."""
        with _install_lock:
            if self in _installed:
                return
            if not _installed:
                _install_patches()
            _installed.append(self)

    def uninstall(self) -> None:
        with _install_lock:
            if self not in _installed:
                return
            _installed.remove(self)
            if not _installed:
                _remove_patches()

    def __enter__(self) -> LocalLambdaRuntime:
        self.install()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.uninstall()

    def bind(self, logical_id: str, function_name: str) -> None:
        """Record the deployed (physical) name of a template function."""
        if logical_id not in self.specs:
            raise KeyError(f"{logical_id!r} is not a function of the template (have: {sorted(self.specs)})")
        self._names[function_name] = logical_id

    def function_name(self, logical_id: str) -> str:
        for name, bound in self._names.items():
            if bound == logical_id:
                return name
        return logical_id

    def spec_for_function_name(self, function_name: str) -> FunctionSpec | None:
        logical_id = self._names.get(function_name, function_name)
        return self.specs.get(logical_id)

    # -- invocation ---------------------------------------------------------------------------------------------------

    def invoke(self, logical_id_or_function_name: str, event: Any) -> Any:
        """Call a handler directly (API server, scheduled sweeps) with the function's deployed environment.

        Returns what the handler returns; a handler exception propagates unchanged.
        """
        spec = self.spec_for_function_name(logical_id_or_function_name)
        if spec is None:
            raise KeyError(f"unknown function {logical_id_or_function_name!r} (have: {sorted(self.specs)})")
        moto_fn = self._moto_function(self.function_name(spec.logical_id))
        target = self._target(spec, moto_fn)
        started = time.monotonic()
        try:
            result = self._call(target, event)
        except Exception as exc:
            self._save_logs(moto_fn, target, started, error=exc)
            raise
        self._save_logs(moto_fn, target, started, error=None)
        return result

    @contextlib.contextmanager
    def intercept(
        self, logical_id: str, wrap: Callable[[Callable[[Any, Any], Any]], Callable[[Any, Any], Any]]
    ) -> Iterator[None]:
        """Run ``wrap(handler)`` instead of the handler while the block lasts: a test seam to act between two
        state machine tasks (for example, make ML fail right after verification)."""
        self._intercepts[logical_id] = wrap(self.handler(logical_id))
        try:
            yield
        finally:
            del self._intercepts[logical_id]

    def handler(self, logical_id: str) -> Callable[[Any, Any], Any]:
        """The handler callable (imported on first use, in the process environment)."""
        return self._load(self.specs[logical_id])

    def report(self) -> list[str]:
        """One line per function invoked so far: "X: longest invocation 1.20 s vs timeout 30 s (...)"."""
        with self._stats_lock:
            return [self.stats[k].line() for k in sorted(self.stats)]

    def _invoke_moto_function(self, spec: FunctionSpec, moto_fn: Any, event: Any) -> tuple[str, bool, str]:
        """The ``_invoke_lambda`` contract: (response payload as JSON text, function errored?, log text)."""
        if isinstance(event, str | bytes):
            event = json.loads(event or "{}")  # moto passes "{}" (a string) for an empty payload
        target = self._target(spec, moto_fn)
        started = time.monotonic()
        error: BaseException | None = None
        try:
            result = self._call(target, event)
            try:
                payload = json.dumps(result)
            except (TypeError, ValueError) as exc:
                error = exc
                payload = json.dumps(
                    {"errorType": "Runtime.MarshalError", "errorMessage": f"Unable to marshal response: {exc}"}
                )
        except LambdaInvocationError as exc:  # import failure, already in Lambda's shape
            error = exc
            payload = json.dumps(exc.payload)
        except Exception as exc:
            error = exc
            payload = json.dumps(_error_payload(exc))
        logs = self._save_logs(moto_fn, target, started, error=error)
        return payload, error is not None, logs

    def _target(self, spec: FunctionSpec, moto_fn: Any | None) -> _Target:
        if moto_fn is None:
            name = self.function_name(spec.logical_id)
            return _Target(
                spec=spec,
                function_name=name,
                function_arn=f"arn:aws:lambda:{self.region}:{_account_id()}:function:{name}",
                timeout=spec.timeout,
                memory=spec.memory,
            )
        env = {str(k): str(v) for k, v in (moto_fn.environment_vars or {}).items() if v is not None}
        return _Target(
            spec=spec,
            function_name=moto_fn.function_name,
            function_arn=moto_fn.function_arn,
            timeout=float(moto_fn.timeout or spec.timeout),
            memory=int(moto_fn.memory_size or spec.memory),
            environment=env,
        )

    def _call(self, target: _Target, event: Any) -> Any:
        env = {
            # what Lambda's runtime sets (Powertools reads some of them, e.g. the idempotency key prefix)
            "AWS_LAMBDA_FUNCTION_NAME": target.function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": target.version,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(target.memory),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{target.function_name}",
            "_HANDLER": target.spec.handler,
            "AWS_REGION": os.environ.get("AWS_REGION", self.region),
            **target.environment,
        }
        with environment_overlay(env):  # the init phase: its own limit in Lambda, not part of the invoke timeout
            handler, pooled = self._acquire(target.spec)
        invocation = Invocation(target.spec.logical_id, target.timeout)
        context = LambdaContext(
            function_name=target.function_name,
            function_arn=target.function_arn,
            memory_limit_in_mb=target.memory,
            timeout_seconds=target.timeout,
            log_group_name=env["AWS_LAMBDA_LOG_GROUP_NAME"],
            function_version=target.version,
            invocation=invocation,
        )
        env["AWS_LAMBDA_LOG_STREAM_NAME"] = context.log_stream_name

        def run() -> Any:
            previous = current_invocation()
            _tls.invocation = invocation
            try:
                with environment_overlay(env):
                    return handler(event, context)
            finally:
                _tls.invocation = previous

        if not self.enforce_timeouts:
            try:
                return run()
            finally:
                self._record(target, invocation, timed_out=False)
                if pooled:
                    self._give_back(target.spec, handler)
        try:
            result = self._run_within_timeout(target, invocation, run)
        except LambdaTimedOut:
            raise  # its sandbox still runs the orphan: never reused
        except BaseException:
            if pooled:
                self._give_back(target.spec, handler)
            raise
        if pooled:
            self._give_back(target.spec, handler)
        return result

    def _acquire(self, spec: FunctionSpec) -> tuple[Callable[[Any, Any], Any], bool]:
        """An idle sandbox's handler, or a new sandbox's (its init runs here, outside the invoke timeout); and
        whether it goes back to the pool afterwards (a test's intercepting wrapper does not)."""
        intercepted = self._intercepts.get(spec.logical_id)
        if intercepted is not None:
            return intercepted, False
        with self._pool_lock:
            idle = self._idle[spec.logical_id]
            if idle:
                return idle.pop(), True
            number = self._sandboxes[spec.logical_id]
            self._sandboxes[spec.logical_id] = number + 1
        if number == 0:
            return self._load(spec), True
        return self._load(spec, f"{spec.module_name}__sandbox{number}"), True

    def _give_back(self, spec: FunctionSpec, handler: Callable[[Any, Any], Any]) -> None:
        with self._pool_lock:
            self._idle[spec.logical_id].append(handler)

    def sandbox_count(self, logical_id: str) -> int:
        """How many sandboxes of the function have been initialised (Lambda's concurrent executions, at most)."""
        with self._pool_lock:
            return self._sandboxes[logical_id]

    def _run_within_timeout(self, target: _Target, invocation: Invocation, run: Callable[[], Any]) -> Any:
        """Run the handler in a thread of its own; wait for it until the invocation's time is up."""
        outcome: dict[str, Any] = {}
        caller_context = contextvars.copy_context()  # e.g. a test's actor id, read by its pause hook

        def body() -> None:
            try:
                outcome["result"] = caller_context.run(run)
            except BaseException as exc:  # handed to the invoker (or dropped, for an orphan)
                outcome["error"] = exc
            finally:
                if invocation.finish():
                    self._orphan_finished(invocation, outcome.get("error"))

        name = f"lambda-{target.spec.logical_id}-{invocation.request_id[:8]}"
        threading.Thread(target=body, name=name, daemon=True).start()
        while True:
            left = invocation.remaining()
            if invocation.held:
                left = max(left, _HELD_RECHECK_SECONDS)  # a parked invocation's clock stands still
            if invocation.finished.wait(max(left, 0.0)):
                break
            if not invocation.held and invocation.remaining() <= 0 and invocation.abandon():
                self._record(target, invocation, timed_out=True)
                log.warning(
                    "%s timed out after %g s (request %s): its handler goes on, an orphan whose AWS calls fail",
                    target.spec.logical_id,
                    target.timeout,
                    invocation.request_id,
                )
                raise LambdaTimedOut(invocation)
        self._record(target, invocation, timed_out=False)
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("result")

    def _record(self, target: _Target, invocation: Invocation, *, timed_out: bool) -> None:
        took = invocation.timeout if timed_out else invocation.elapsed()
        with self._stats_lock:
            stats = self.stats.get(target.spec.logical_id)
            if stats is None:
                stats = self.stats[target.spec.logical_id] = FunctionStats(target.spec.logical_id, target.timeout)
            stats.timeout = target.timeout
            stats.invocations += 1
            stats.timeouts += int(timed_out)
            stats.longest = max(stats.longest, took)

    def _orphan_finished(self, invocation: Invocation, error: BaseException | None) -> None:
        with self._stats_lock:
            stats = self.stats.get(invocation.function)
            if stats is not None:
                stats.orphans_finished += 1
        log.info(
            "%s request %s, timed out, has now returned after %.2f s (%s); its result is discarded",
            invocation.function,
            invocation.request_id,
            invocation.elapsed(),
            f"{type(error).__name__}: {error}" if error is not None else "no error",
        )

    def _load(self, spec: FunctionSpec, module_name: str | None = None) -> Callable[[Any, Any], Any]:
        """The handler of the function's first sandbox, or (``module_name``) of another one, imported anew."""
        cached = self._handlers.get(spec.logical_id) if module_name is None else None
        if cached is not None:
            return cached
        with self._load_locks[spec.logical_id]:  # one import at a time per function, never held during an invocation
            cached = self._handlers.get(spec.logical_id) if module_name is None else None
            if cached is not None:
                return cached
            for layer_dir in spec.layer_dirs:
                if str(layer_dir) not in sys.path:
                    sys.path.append(str(layer_dir))  # after src/, so the package already imported wins
            try:
                module = _import_by_path(module_name or spec.module_name, spec.module_path)
                fn = getattr(module, spec.function_attr)
            except Exception as exc:
                module_name = spec.handler.rpartition(".")[0]
                raise LambdaInvocationError(
                    {
                        "errorType": "Runtime.ImportModuleError",
                        "errorMessage": f"Unable to import module '{module_name}': {exc}",
                        "stackTrace": traceback.format_tb(exc.__traceback__),
                    }
                ) from exc
            if module_name is None:
                self._handlers[spec.logical_id] = fn
            return fn

    def _moto_function(self, function_name: str) -> Any | None:
        try:
            from moto.awslambda.utils import get_backend

            return get_backend(_account_id(), self.region).get_function(function_name)
        except Exception:  # not deployed (or moto not in use): fall back to the template's values
            return None

    @staticmethod
    def _save_logs(moto_fn: Any, target: _Target, started: float, *, error: BaseException | None) -> str:
        request_id = uuid.uuid4()
        lines = [f"START RequestId: {request_id} Version: {target.version}"]
        if error is not None:
            lines.extend(traceback.format_exception(error))
        duration = (time.monotonic() - started) * 1000
        lines += [
            f"END RequestId: {request_id}",
            f"REPORT RequestId: {request_id}\tDuration: {duration:.2f} ms\tMemory Size: {target.memory} MB",
        ]
        text = "\n".join(line.rstrip("\n") for line in lines)
        if moto_fn is None:
            return text
        try:  # CloudWatch Logs in moto, like the real service; never fail an invocation over it
            moto_fn.logs_backend.ensure_log_group(moto_fn.logs_group_name)
            moto_fn.save_logs(text)
        except Exception:
            log.debug("could not store the logs of %s", target.function_name, exc_info=True)
        return text


def _import_by_path(module_name: str, path: Path) -> ModuleType:
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _error_payload(exc: BaseException) -> dict[str, Any]:
    """Lambda's Python runtime error shape; Step Functions matches Retry/Catch on ``errorType``."""
    own = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]  # drop the runtime's frames
    frames = traceback.format_list(own)
    return {"errorMessage": str(exc), "errorType": type(exc).__name__, "requestId": "", "stackTrace": frames}


def _account_id() -> str:
    from moto.core import DEFAULT_ACCOUNT_ID

    return str(DEFAULT_ACCOUNT_ID)
