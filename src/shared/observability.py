"""One Logger / Metrics / Tracer per process, shared by every handler and the domain."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from shared.models import RecoveryResult

logger = Logger()
metrics = Metrics()
tracer = Tracer()


def record_outcome(result: RecoveryResult, *, operation: str) -> None:
    """One EMF metric per settled sale, dimensioned by operation and outcome."""
    with single_metric(name="SaleOutcome", unit=MetricUnit.Count, value=1, namespace=metrics.namespace) as metric:
        metric.add_dimension(name="operation", value=operation)
        metric.add_dimension(name="outcome", value=result.outcome.value)
