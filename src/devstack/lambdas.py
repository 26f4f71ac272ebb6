"""Runs the template's Lambda handlers in-process, in place of moto's Docker-based Lambda runtime.

``LocalLambdaRuntime.install()`` patches ``moto.awslambda.models.LambdaFunction._invoke_lambda`` (the one patch point
every moto invocation goes through: ``Invoke``, Step Functions ``lambda:invoke`` tasks, SQS event-source mappings,
SNS subscriptions), so those invocations run the real handler found from ``template.yaml``: ``CodeUri`` + ``Handler``
of each ``AWS::Serverless::Function``, loaded by file path under a unique module name.

Per invocation the function's environment (as moto holds it, i.e. resolved by CloudFormation) is layered over the
process environment for the calling thread only, and for threads the handler starts. There is deliberately no global
lock: invocations nest across threads (handler -> SQS -> event-source mapping -> handler) and a lock deadlocks.

Differences from Lambda, on purpose: no timeout is enforced (``get_remaining_time_in_millis`` still counts down),
handler stdout is not captured into the returned logs, module state (including the ``shared`` package, imported once
per process) is shared by all functions and concurrent invocations (Lambda would use separate sandboxes), and the
function folder is not put on ``sys.path`` (handlers import from ``shared`` and installed packages only).
"""

from __future__ import annotations

import contextlib
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
    ) -> None:
        self.function_name = function_name
        self.function_version = function_version
        self.invoked_function_arn = function_arn
        self.memory_limit_in_mb = memory_limit_in_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = log_group_name
        now = datetime.now(UTC)
        self.log_stream_name = f"{now:%Y/%m/%d}/[{function_version}]{uuid.uuid4().hex}"
        self.identity: Any = None
        self.client_context: Any = None
        self.tenant_id: str | None = None
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


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


def _thread_start_inheriting_overlay(self: threading.Thread) -> None:
    overlay = _current_overlay()
    if overlay is not None:
        run = self.run

        def run_with_overlay() -> None:
            _overlay_stack().append(overlay)
            try:
                run()
            finally:
                _overlay_stack().pop()

        self.run = run_with_overlay  # type: ignore[method-assign]
    _original_thread_start(self)


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


def _patched_invoke_lambda(self: Any, event: Any = None) -> tuple[str, bool, str]:
    for runtime in reversed(_installed):
        spec = runtime.spec_for_function_name(self.function_name)
        if spec is not None:
            return runtime._invoke_moto_function(spec, self, event)
    message = f"no in-process handler for Lambda function {self.function_name!r} (not in the SAM template?)"
    return json.dumps({"errorType": "Runtime.HandlerNotFound", "errorMessage": message}), True, message


def _install_patches() -> None:
    global _original_invoke_lambda
    from moto.awslambda.models import LambdaFunction

    _original_invoke_lambda = LambdaFunction.__dict__["_invoke_lambda"]
    LambdaFunction._invoke_lambda = _patched_invoke_lambda  # type: ignore[method-assign]
    os.environ.__class__ = _OverlayEnviron
    threading.Thread.start = _thread_start_inheriting_overlay  # type: ignore[method-assign]


def _remove_patches() -> None:
    from moto.awslambda.models import LambdaFunction

    LambdaFunction._invoke_lambda = _original_invoke_lambda  # type: ignore[method-assign]
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

    def __init__(self, template: Path | Mapping[str, Any] = TEMPLATE_PATH, repo_root: Path | None = None) -> None:
        if isinstance(template, Path):
            from samtranslator.yaml_helper import yaml_parse  # understands !Ref, !Sub, !GetAtt

            self.repo_root = repo_root or template.resolve().parent
            parsed: Mapping[str, Any] = yaml_parse(template.read_text())
        else:
            self.repo_root = repo_root or ROOT
            parsed = template
        self.specs = function_specs(parsed, self.repo_root)
        self._names: dict[str, str] = {}  # deployed function name -> logical id
        self._handlers: dict[str, Callable[[Any, Any], Any]] = {}
        self._load_locks = {logical_id: threading.Lock() for logical_id in self.specs}
        self.region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"

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
        original = self.handler(logical_id)
        self._handlers[logical_id] = wrap(original)
        try:
            yield
        finally:
            self._handlers[logical_id] = original

    def handler(self, logical_id: str) -> Callable[[Any, Any], Any]:
        """The handler callable (imported on first use, in the process environment)."""
        return self._load(self.specs[logical_id])

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
        context = LambdaContext(
            function_name=target.function_name,
            function_arn=target.function_arn,
            memory_limit_in_mb=target.memory,
            timeout_seconds=target.timeout,
            log_group_name=f"/aws/lambda/{target.function_name}",
            function_version=target.version,
        )
        env = {
            # what Lambda's runtime sets (Powertools reads some of them, e.g. the idempotency key prefix)
            "AWS_LAMBDA_FUNCTION_NAME": target.function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": target.version,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(target.memory),
            "AWS_LAMBDA_LOG_GROUP_NAME": context.log_group_name,
            "AWS_LAMBDA_LOG_STREAM_NAME": context.log_stream_name,
            "_HANDLER": target.spec.handler,
            "AWS_REGION": os.environ.get("AWS_REGION", self.region),
            **target.environment,
        }
        with environment_overlay(env):
            handler = self._load(target.spec)
            return handler(event, context)

    def _load(self, spec: FunctionSpec) -> Callable[[Any, Any], Any]:
        cached = self._handlers.get(spec.logical_id)
        if cached is not None:
            return cached
        with self._load_locks[spec.logical_id]:  # one import per function, never held during an invocation
            cached = self._handlers.get(spec.logical_id)
            if cached is not None:
                return cached
            for layer_dir in spec.layer_dirs:
                if str(layer_dir) not in sys.path:
                    sys.path.append(str(layer_dir))  # after src/, so the package already imported wins
            try:
                module = _import_by_path(spec.module_name, spec.module_path)
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
