"""The schedules on the whole local stack (template.yaml on moto, the SQS poller driving the worker): what `make run`
shows after the main job. moto never fires EventBridge rules, so the rules' functions are invoked directly with the
sample scheduled events, as the cloud would invoke them.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
from rich.console import Console

from devstack.schedules_demo import UNNOTIFIED_SALE, reconcile_unnotified_sale, scheduled_event
from devstack.simulator.scenario import Scenario
from devstack.stack import EmbeddedStack
from devstack.template import load_template
from tests.conftest import DEFAULT_SCENARIO

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def stack() -> Iterator[EmbeddedStack]:
    data = json.loads(DEFAULT_SCENARIO.read_text())
    data["faults"] = [f for f in data["faults"] if f["kind"] != "latency"]
    data.pop("quota", None)
    with EmbeddedStack(Scenario.model_validate(data), timeout_hold_seconds=1.0, meli_timeout_seconds=0.5) as running:
        yield running


def test_the_template_schedules_both_functions_with_configurable_rates() -> None:
    resources = load_template()["Resources"]
    for function, parameter in (
        ("ErrorSweepFunction", "ErrorSweepSchedule"),
        ("ReconcileFunction", "ReconcileSchedule"),
    ):
        events = resources[function]["Properties"]["Events"]
        (event,) = events.values()
        assert event["Type"] == "Schedule" and event["Properties"]["Schedule"] == {"Ref": parameter}
        assert "Input" not in event["Properties"]  # a scheduled event means: every connection


def test_reconciliation_reflects_a_sale_nobody_notified(stack: EmbeddedStack) -> None:
    out = io.StringIO()
    assert reconcile_unnotified_sale(stack, Console(file=out, width=150))
    text = out.getvalue()
    assert f"1 missing enqueued: {UNNOTIFIED_SALE}" in text and f"Sale {UNNOTIFIED_SALE}: reflected" in text
    state, _ = stack.service().views.sale_state("mla-main", str(UNNOTIFIED_SALE))
    assert state.record is not None and state.record.imported_by == "schedule"


def test_the_error_sweep_runs_on_the_stack(stack: EmbeddedStack) -> None:
    result = stack.aws.runtime.invoke("ErrorSweepFunction", scheduled_event(stack, "error-sweep"))
    runs = {run["connection_id"]: run for run in result["connections"]}
    assert set(runs) == {c.connection_id for c in stack.scenario.connections}
    assert runs["mla-main"]["sale_ids"] == ["2000009109000015"]  # the scenario's listed timeout, due at once
    assert stack.poller is not None
    stack.poller.wait_idle(timeout=60)
    state, entry = stack.service().views.sale_state("mla-main", "2000009109000015")
    assert state.outcome == "reflected" and entry is None
