"""The embedded default (DESIGN §4): the simulated Mercado Libre, moto with the stack of template.yaml, the scenario's
platform state, and optionally the REST API on loopback. Used by `make run`, `make serve` and the stack tests.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Self

from devstack import moto_fidelity
from devstack.api_server import LocalApiServer
from devstack.aws import LocalAws, SnsInbox
from devstack.execution_events import ExecutionEventsDelivery
from devstack.seed import seed
from devstack.simulator.scenario import DEFAULT_APPLICATION_ID, Scenario, load_scenario
from devstack.simulator.server import MeliSimulator
from devstack.sqs_poller import SqsPoller
from sales_recovery_cli.console_site import ConsoleSite
from shared.recovery import RecoveryService
from shared.settings import Settings
from shared.wiring import (
    build_bulk_service,
    build_job_store,
    build_missed_feeds,
    build_notification_intake,
    build_notified_sales,
    build_service,
)

CALLBACK_PATH = "/notifications/mercadolibre"  # the template's route for ML's notifications
TERMINAL_EXECUTION = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}


class EmbeddedStack:
    def __init__(
        self,
        scenario: Scenario | Path | str,
        *,
        relink_wait_seconds: int = 0,
        relink_follow_seconds: int = 1,
        meli_timeout_seconds: float = 1.0,
        meli_max_tries: int = 3,
        timeout_hold_seconds: float = 3.0,
        api_port: int | None = None,
        log_level: str = "WARNING",
        parameters: dict[str, str] | None = None,
        worker_concurrency: int | None = None,
        poll_queues: bool = True,
        deliver_execution_events: bool = True,
        enforce_iam: bool | None = None,
        enforce_timeouts: bool | None = None,
        notifications: bool = False,
    ) -> None:
        self.scenario = scenario if isinstance(scenario, Scenario) else load_scenario(Path(scenario))
        self.meli = MeliSimulator(self.scenario, timeout_hold_seconds=timeout_hold_seconds)
        # enforce_iam: each function's AWS calls are authorised against its own role (devstack.iam); None = the
        # process default (on unless DEVSTACK_ENFORCE_IAM=0), False for a test that must run without it.
        # enforce_timeouts: each function's Timeout holds (devstack.lambdas); None = the process default (on unless
        # DEVSTACK_ENFORCE_TIMEOUTS=0).
        self.aws = LocalAws(enforce_iam=enforce_iam, enforce_timeouts=enforce_timeouts)
        self._parameters = {
            "Stage": "local",
            "RelinkWaitSeconds": str(relink_wait_seconds),
            "MeliTimeoutSeconds": str(meli_timeout_seconds),
            "MeliMaxTries": str(meli_max_tries),
            "RelinkFollowSeconds": str(relink_follow_seconds),
            "LogLevel": log_level,
            # The application whose notifications the callback accepts (the scenario's, or ML's sample app id).
            "MeliApplicationId": str(
                self.scenario.notifications.application_id if self.scenario.notifications else DEFAULT_APPLICATION_ID
            ),
            # Stay under the simulated ML's quota with a margin, as production stays under ML's.
            "MeliRequestsPerSecond": str(round(0.9 * self.scenario.quota.requests_per_second, 3))
            if self.scenario.quota
            else "0",
            **(parameters or {}),
        }
        # notifications: ML's notifications reach the local callback, and the scenario's new_orders appear (when the
        # scenario has "notifications"); the callback needs the REST API on loopback, on a free port unless given.
        self._notifications = notifications and self.scenario.notifications is not None
        self._api_port = 0 if api_port is None and self._notifications else api_port
        self.api: LocalApiServer | None = None
        self.inbox: SnsInbox | None = None
        self.poller: SqsPoller | None = None
        self.execution_events: ExecutionEventsDelivery | None = None
        self._worker_concurrency = worker_concurrency  # None: each mapping's MaximumConcurrency (the template's)
        self._poll_queues = poll_queues
        self._deliver_events = deliver_execution_events

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> Self:
        try:
            return self._start()
        except BaseException:
            self.stop()  # a half-started stack must not leak moto state into the next one
            raise

    def _start(self) -> Self:
        moto_fidelity.install()
        self.meli.start()
        self.aws.start()
        self.aws.deploy({**self._parameters, "MeliApiUrl": self.meli.url})
        self.inbox = self.aws.help_desk_inbox("HelpDeskTopic")
        settings = self.settings()
        service = self.service()
        seed(
            self.scenario,
            service.stores,
            service.lifecycle,
            secrets_client=self.aws.client("secretsmanager"),
            secret_prefix=settings.meli_connection_secret_prefix,
        )
        if self._poll_queues:
            self.poller = SqsPoller(self.aws, concurrency=self._worker_concurrency).start()
        # Step Functions status changes reach their EventBridge rule's function, as in the cloud (or, for a test that
        # drives delivery itself, only when it calls deliver_now()).
        self.execution_events = ExecutionEventsDelivery(self.aws).start(poll=self._deliver_events)
        if self._api_port is not None:
            # The console offers the scenario's connections: the API has no route listing them.
            console = ConsoleSite(connections=[c.connection_id for c in self.scenario.connections])
            self.api = LocalApiServer(self.aws, port=self._api_port, console=console).start()
        if self._notifications:
            assert self.api is not None
            self.meli.start_notifications(f"{self.api.url}{CALLBACK_PATH}")
        return self

    def stop(self) -> None:
        if self.api is not None:
            self.api.stop()
        if self.poller is not None:
            self.poller.stop()
        if self.execution_events is not None:
            self.execution_events.stop()
        self.aws.stop()
        self.meli.stop()
        for cache in (
            build_service,
            build_bulk_service,
            build_job_store,
            build_notification_intake,
            build_notified_sales,
            build_missed_feeds,
        ):
            cache.cache_clear()  # their clients point at this stack's endpoint

    def settings(self) -> Settings:
        return Settings.from_env(self.aws.function_env("ApiFunction"))

    def service(self) -> RecoveryService:
        """The domain service wired exactly as the API function is, for drivers and assertions."""
        return build_service(self.settings(), notifier=True, workflow=True)

    @property
    def state_machine_arn(self) -> str:
        return self.aws.state_machine_arn("RelinkStateMachine")

    def run_execution(self, payload: dict[str, Any], *, name: str, timeout: float = 60.0) -> dict[str, Any]:
        """Start the relink state machine and wait for it; returns describe_execution with parsed output."""
        sfn = self.aws.client("stepfunctions")
        arn = sfn.start_execution(stateMachineArn=self.state_machine_arn, name=name, input=json.dumps(payload))[
            "executionArn"
        ]
        return self.wait(arn, timeout=timeout)

    def wait(self, execution_arn: str, *, timeout: float = 60.0) -> dict[str, Any]:
        sfn = self.aws.client("stepfunctions")
        deadline = time.monotonic() + timeout
        while True:
            described: dict[str, Any] = sfn.describe_execution(executionArn=execution_arn)
            if described["status"] in TERMINAL_EXECUTION:
                if described.get("output"):
                    described["output"] = json.loads(described["output"])
                return described
            if time.monotonic() > deadline:
                raise TimeoutError(f"execution {execution_arn} still {described['status']} after {timeout}s")
            time.sleep(0.05)

    def help_desk_messages(self) -> list[dict[str, Any]]:
        assert self.inbox is not None
        return self.inbox.messages()
