"""One Logger / Metrics / Tracer per process, shared by every handler and the domain."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric

if TYPE_CHECKING:
    from shared.models import RecoveryResult

logger = Logger()
metrics = Metrics()
# With tracing on, every AWS call (botocore) and Mercado Libre call (httpx) is a subsegment. Powertools' default
# patch_all imports both libraries right here; the tracer patches each when it is first imported instead, so an
# import that builds no client (and a function that never calls ML) does not load them. We use no other library that
# patch_all would patch.
tracer = Tracer(auto_patch=False)
# module whose import triggers the patch -> the library X-Ray patches. Every AWS client here comes from boto3, and once
# boto3 is imported botocore.client is whole (a hook on botocore.client itself runs before it is bound to botocore).
TRACED_LIBRARIES = {"boto3": "botocore", "httpx": "httpx"}


def _patch_when_imported() -> None:
    if tracer.disabled:
        return
    import wrapt  # aws_xray_sdk's own dependency, already loaded by the tracer

    def patcher(library: str) -> Callable[[ModuleType], None]:
        return lambda _module: tracer.patch([library])

    for module, library in TRACED_LIBRARIES.items():
        # Runs at once if the module is already imported, else right after its import, before anyone uses it.
        wrapt.register_post_import_hook(patcher(library), module)


_patch_when_imported()


def dimensioned_metrics_enabled() -> bool:
    """``single_metric`` prints even when metrics are disabled; honour POWERTOOLS_METRICS_DISABLED for it too."""
    from aws_lambda_powertools.metrics.functions import is_metrics_disabled

    return not is_metrics_disabled()


def record_outcome(result: RecoveryResult, *, operation: str) -> None:
    """One EMF metric per settled sale, dimensioned by operation and outcome."""
    if not dimensioned_metrics_enabled():
        return
    with single_metric(name="SaleOutcome", unit=MetricUnit.Count, value=1, namespace=metrics.namespace) as metric:
        metric.add_dimension(name="operation", value=operation)
        metric.add_dimension(name="outcome", value=result.outcome.value)


def record_schedule_run(schedule: str, summaries: list[Any]) -> None:
    """Metrics for one scheduled run (found, enqueued, skipped, escalated; per run, dimensioned by schedule) and
    one structured log line with the run's summary."""
    totals = {name: sum(getattr(s, name) for s in summaries) for name in ("found", "enqueued", "skipped", "escalated")}
    metrics.add_dimension(name="schedule", value=schedule)
    for name, value in totals.items():
        metrics.add_metric(name=f"Schedule{name.capitalize()}", unit=MetricUnit.Count, value=value)
    failed = [s for s in summaries if getattr(s, "error", None)]
    log = logger.error if failed else logger.info
    log(
        f"{schedule} run",
        extra={"schedule": schedule, **totals, "failed": len(failed), "connections": [s.log_view() for s in summaries]},
    )
