"""AWS limits the design touches, checked on the template as CloudFormation receives it (README, "Known limits").

What a service refuses at run time (item size, reused execution names, IAM, timeouts) is refused by the local stack
and tested where it happens; what is decided by the template's numbers is checked here.
"""

from __future__ import annotations

from typing import Any

from shared.bulk import BulkMessage
from shared.jobs import MESSAGE_SIZE
from shared.lifecycle.row import MAX_NAME, execution_name
from tests.security.test_template_policies import resources, translated

API_GATEWAY_TIMEOUT_S = 29  # REST API integration timeout
SQS_MESSAGE_BYTES = 256 * 1024  # the SQS message size every SDK and event source mapping accepts
ACCOUNT_CONCURRENCY = 1000  # an account's default concurrent executions per region
UNRESERVED_MINIMUM = 100  # Lambda refuses a reservation that leaves fewer unreserved


def default(value: Any) -> int:
    """A property's number at the template's defaults (a literal or a parameter's Default)."""
    if isinstance(value, dict) and "Ref" in value:
        return int(translated()["Parameters"][value["Ref"]]["Default"])
    return int(value)


def functions() -> dict[str, dict[str, Any]]:
    return {k: r["Properties"] for k, r in resources("AWS::Lambda::Function").items()}


def test_the_api_function_stops_when_api_gateway_stops_waiting() -> None:
    assert default(functions()["ApiFunction"]["Timeout"]) <= API_GATEWAY_TIMEOUT_S


def test_each_queue_hides_a_message_six_times_its_workers_timeout() -> None:
    # Lambda's guidance for SQS event sources: a visibility timeout of at least six times the function's timeout, so
    # a message a throttled or retried batch holds is not delivered twice while it is still being worked on.
    queues = {k: r["Properties"] for k, r in resources("AWS::SQS::Queue").items()}
    for queue, worker in (("BulkQueue", "BulkWorkerFunction"), ("NotificationsQueue", "NotificationsFunction")):
        assert default(queues[queue]["VisibilityTimeout"]) >= 6 * default(functions()[worker]["Timeout"])
        assert queues[queue]["RedrivePolicy"]["maxReceiveCount"] >= 3


def test_the_worker_mappings_stay_within_what_lambda_accepts() -> None:
    mappings = [r["Properties"] for r in resources("AWS::Lambda::EventSourceMapping").values()]
    assert len(mappings) == 2  # the bulk worker and the notification processor
    for mapping in mappings:
        window = default(mapping.get("MaximumBatchingWindowInSeconds", 0))
        # Up to 10 without a batching window; more (to 10,000) only with one of at least a second.
        assert 1 <= mapping["BatchSize"] <= (10_000 if window >= 1 else 10)
        assert 2 <= default(mapping["ScalingConfig"]["MaximumConcurrency"]) <= 1000  # Lambda's range for SQS


def test_reserved_concurrency_at_the_defaults_leaves_the_accounts_unreserved_minimum() -> None:
    reserved = sum(default(p["ReservedConcurrentExecutions"]) for p in functions().values())
    assert ACCOUNT_CONCURRENCY - reserved >= UNRESERVED_MINIMUM, reserved


def test_a_full_bulk_message_is_far_under_the_sqs_limit() -> None:
    longest = BulkMessage(job_id="j" * 64, connection_id="c" * 64, sale_ids=["9" * 19] * MESSAGE_SIZE)
    assert len(longest.model_dump_json().encode()) < SQS_MESSAGE_BYTES // 100


def test_execution_names_fit_step_functions_and_never_repeat_across_episodes() -> None:
    names = {execution_name("c" * 64, "9" * 19, episode) for episode in range(1, 1000)}
    assert len(names) == 999
    assert all(len(n) <= MAX_NAME == 80 for n in names)
