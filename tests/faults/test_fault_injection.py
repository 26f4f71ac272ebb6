"""Fault injection on the whole local stack (API over HTTP, SQS driven by the poller, the worker, the relink state
machine, the simulated ML). After every case: each accepted id has exactly one terminal outcome, no sale is
stored twice, no sale pages the help desk twice, and the DLQ holds nothing (no poison was sent).

The summary table (case, ids, faults injected, lost, duplicated, escalated) is printed at the end of the run.
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from devstack.faults import dynamodb_throttling, dynamodb_transaction_conflicts, lambda_service_exceptions
from devstack.seed import store_reconnected_tokens
from devstack.stack import EmbeddedStack
from tests.faults.conftest import FaultRow
from tests.stack.support import running_stack, stack_scenario, wait_for_job

pytestmark = pytest.mark.stack
C = "mla-main"
TEMPLATE_ORDER = 2000009101000011
_next = iter(range(1, 100_000))


@pytest.fixture(scope="module")
def stack() -> Iterator[EmbeddedStack]:
    with running_stack(stack_scenario(), worker_concurrency=4) as running:
        yield running


@pytest.fixture
def http(stack: EmbeddedStack) -> Iterator[httpx.Client]:
    assert stack.api is not None
    with httpx.Client(base_url=stack.api.url, timeout=60) as client:
        yield client


def new_sales(stack: EmbeddedStack, count: int) -> list[str]:
    """Fresh healthy sales in the simulator, so each case owns its ids."""
    template = stack.meli.order(TEMPLATE_ORDER)
    assert template is not None
    ids = []
    base = 2000009800000000 + next(_next) * 1000
    for n in range(count):
        order = copy.deepcopy(template)
        order["id"] = base + n
        order["pack_id"] = None  # a sale of its own: a copy must not join the template's pack
        order["shipping"] = {"id": None}
        stack.meli.upsert_order(order)
        ids.append(str(order["id"]))
    return ids


def run_job(http: httpx.Client, ids: list[str], timeout: float = 120.0) -> dict[str, Any]:
    submitted = http.post(f"/connections/{C}/reprocessing-jobs", json={"sale_ids": ids})
    assert submitted.status_code == 202, submitted.text
    return wait_for_job(http, submitted.json()["job_id"], timeout)


def stored(stack: EmbeddedStack, ids: list[str]) -> int:
    """Sales of these ids that the platform holds (the key makes two copies impossible; this counts records)."""
    ddb = stack.aws.client("dynamodb")
    table = stack.settings().sales_table
    count = 0
    for sale_id in ids:
        item = ddb.get_item(TableName=table, Key={"connection_id": {"S": C}, "sale_id": {"S": sale_id}}).get("Item")
        count += bool(item and "record" in item)
    return count


def check(
    stack: EmbeddedStack,
    case: str,
    ids: list[str],
    view: dict[str, Any],
    faults: str,
    report: Callable[[FaultRow], None],
) -> FaultRow:
    items = {i["sale_id"]: i for i in view["items"]}
    lost = sum(1 for s in ids if s not in items or items[s]["outcome"] in ("pending", "in_progress"))
    counted = sum(view["counts"].values())
    pages: dict[str, int] = {}
    for message in stack.help_desk_messages():
        if message.get("sale_id") in items:
            pages[message["sale_id"]] = pages.get(message["sale_id"], 0) + 1
    escalated = sum(1 for i in items.values() if i["outcome"] == "escalated")
    reflected = sum(1 for i in items.values() if i["outcome"] == "reflected")
    duplicated = max(0, counted - len(ids)) + sum(n - 1 for n in pages.values() if n > 1)
    duplicated += max(0, reflected - stored(stack, ids))  # an id counted reflected twice would show here
    dlq = stack.aws.physical_id("BulkDeadLetterQueue")
    in_dlq = int(
        stack.aws.client("sqs").get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])[
            "Attributes"
        ]["ApproximateNumberOfMessages"]
    )
    wrong_pages = sum(1 for sale_id in pages if items[sale_id]["outcome"] != "escalated")
    row = FaultRow(case, len(ids), faults, lost, duplicated, escalated, in_dlq, wrong_pages)
    report(row)
    assert view["status"] == "completed", view["counts"]
    assert (lost, duplicated, in_dlq, wrong_pages) == (0, 0, 0, 0)
    assert counted == len(ids) and stored(stack, ids) == reflected
    assert all(n == 1 for n in pages.values()) and len(pages) == escalated
    return row


def test_ml_timeouts_on_a_fraction_of_calls(stack: EmbeddedStack, http: httpx.Client, fault_table: Any) -> None:
    ids = new_sales(stack, 30)
    stack.meli.add_fault({"path": "^/orders/2000009", "kind": "timeout", "probability": 0.25, "seed": 11})
    try:
        view = run_job(http, ids)
    finally:
        stack.meli.clear_faults()
    timeouts = stack.meli.count(status=None, path_regex="^/orders/")
    check(stack, "ML timeouts (25% of order reads)", ids, view, f"{timeouts} timeouts", fault_table)


def test_5xx_bursts(stack: EmbeddedStack, http: httpx.Client, fault_table: Any) -> None:
    ids = new_sales(stack, 30)
    stack.meli.reset_log()
    stack.meli.add_fault({"path": "^/orders/", "kind": "status", "status": 503, "times": 40})
    stack.meli.add_fault({"path": "^/orders/", "kind": "status", "status": 500, "probability": 0.1, "seed": 5})
    try:
        view = run_job(http, ids)
    finally:
        stack.meli.clear_faults()
    injected = stack.meli.count(status=503) + stack.meli.count(status=500)
    check(stack, "5xx burst (40 x 503) + 10% 500", ids, view, f"{injected} 5xx", fault_table)


def test_429_storm(stack: EmbeddedStack, http: httpx.Client, fault_table: Any) -> None:
    ids = new_sales(stack, 30)
    stack.meli.reset_log()
    stack.meli.set_quota(8)  # far below what the workers ask for: the simulator throttles
    try:
        view = run_job(http, ids)
    finally:
        stack.meli.set_quota(None)
    check(stack, "429 storm (quota 8 rps)", ids, view, f"{stack.meli.count(status=429)} 429s", fault_table)


def test_expired_access_tokens_refresh_once_each_time(
    stack: EmbeddedStack, http: httpx.Client, fault_table: Any
) -> None:
    ids = new_sales(stack, 30)
    stack.meli.reset_log()
    stack.meli.expire_token(C)  # every worker thread meets a 401 at once: one refresh spends the token
    view = run_job(http, ids)
    refreshes = stack.meli.count(method="POST", path_regex="^/oauth/token$")
    assert refreshes == 1
    assert stack.meli.count(method="POST", path_regex="^/oauth/token$", status=400) == 0  # no refresh token reused
    check(stack, "expired token, concurrent 401s", ids, view, f"1 expiry, {refreshes} refresh", fault_table)


def test_dynamodb_throttling(stack: EmbeddedStack, http: httpx.Client, fault_table: Any) -> None:
    ids = new_sales(stack, 20)
    with dynamodb_throttling(0.05, seed=3) as throttled:
        view = run_job(http, ids)
    assert throttled.injected > 0
    check(stack, "DynamoDB throttling (5% of calls)", ids, view, f"{throttled.injected} throttles", fault_table)


def test_dynamodb_transaction_conflicts(stack: EmbeddedStack, http: httpx.Client, fault_table: Any) -> None:
    """Writes meeting another transaction on an item: cancelled transactions and refused single writes on the tables
    transactions write (sales, sale errors, jobs), which botocore does not retry; the product writes them again."""
    ids = new_sales(stack, 20)
    env = stack.aws.function_env("BulkWorkerFunction")
    held = {env["SALES_TABLE"], env["SALE_ERRORS_TABLE"], env["JOBS_TABLE"]}
    with dynamodb_transaction_conflicts(0.2, seed=5, tables=held) as conflicts:
        view = run_job(http, ids)
    assert conflicts.injected > 0
    check(stack, "DynamoDB transaction conflicts (20%)", ids, view, f"{conflicts.injected} conflicts", fault_table)


def test_a_worker_crashing_after_half_its_outcomes(stack: EmbeddedStack, http: httpx.Client, fault_table: Any) -> None:
    ids = new_sales(stack, 40)
    crashes = [0]

    def crash_once(handler: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def wrapped(event: Any, context: Any) -> Any:
            if crashes[0]:
                return handler(event, context)
            crashes[0] += 1
            half = copy.deepcopy(event)
            for record in half["Records"]:
                body = json.loads(record["body"])
                body["sale_ids"] = body["sale_ids"][: len(body["sale_ids"]) // 2]
                record["body"] = json.dumps(body)
            handler(half, context)  # half of the outcomes are written...
            raise RuntimeError("worker killed mid-message")  # ...then the instance dies: the batch comes back

        return wrapped

    with stack.aws.runtime.intercept("BulkWorkerFunction", crash_once):
        view = run_job(http, ids)
    check(stack, "worker killed after half its outcomes", ids, view, f"{crashes[0]} crash", fault_table)


def test_duplicate_sqs_deliveries(stack: EmbeddedStack, http: httpx.Client, fault_table: Any) -> None:
    ids = new_sales(stack, 60)
    submitted = http.post(f"/connections/{C}/reprocessing-jobs", json={"sale_ids": ids}).json()
    sqs = stack.aws.client("sqs")
    queue = stack.aws.physical_id("BulkQueue")
    duplicates = 0
    for start in range(0, len(ids), 50):  # SQS delivers at least once: every message again, twice
        body = json.dumps({"job_id": submitted["job_id"], "connection_id": C, "sale_ids": ids[start : start + 50]})
        for _ in range(2):
            sqs.send_message(QueueUrl=queue, MessageBody=body)
            duplicates += 1
    view = wait_for_job(http, submitted["job_id"])
    assert stack.poller is not None
    stack.poller.wait_idle()
    view = wait_for_job(http, submitted["job_id"])
    check(stack, "duplicate SQS deliveries", ids, view, f"{duplicates} duplicate messages", fault_table)


def test_a_state_machine_task_failing_with_a_lambda_service_exception(
    stack: EmbeddedStack, http: httpx.Client, fault_table: Any
) -> None:
    ids = new_sales(stack, 10)
    # Half of the sales fail their bulk attempt transiently and continue in the state machine...
    for sale_id in ids[:5]:
        stack.meli.add_fault({"path": f"^/orders/{sale_id}$", "kind": "status", "status": 503, "times": 3})
    # ...whose first Lambda invocations fail in the Lambda service itself. Three can never exhaust one task's
    # Retry (1 + 3 tries), wherever they land: every one must be absorbed.
    with lambda_service_exceptions(3, function_name_contains="local-") as failures:
        view = run_job(http, ids)
    stack.meli.clear_faults()
    assert failures.injected == 3
    row = check(
        stack, "Lambda.ServiceException in tasks", ids, view, f"{failures.injected} service exceptions", fault_table
    )
    assert row.escalated == 0


def test_a_console_rerun_racing_an_api_relink(stack: EmbeddedStack, http: httpx.Client, fault_table: Any) -> None:
    ids = new_sales(stack, 8)
    sfn = stack.aws.client("stepfunctions")
    executions: list[str] = []
    lock = threading.Lock()

    def api(sale_id: str) -> None:
        arn = http.post(f"/connections/{C}/sales/{sale_id}/relink").json()["execution_id"]
        with lock:
            executions.append(arn)

    def console(sale_id: str) -> None:
        arn = sfn.start_execution(
            stateMachineArn=stack.state_machine_arn,
            name=f"console-{uuid.uuid4().hex[:10]}",
            input=json.dumps({"connection_id": C, "sale_id": sale_id}),
        )["executionArn"]
        with lock:
            executions.append(arn)

    threads = [threading.Thread(target=f, args=(s,)) for s in ids for f in (api, console)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outcomes: dict[str, list[str]] = {}
    for arn in set(executions):  # the API answers the console's execution when that one claimed the sale first
        result = stack.wait(arn)
        outcomes.setdefault(result["output"]["sale_id"], []).append(result["output"]["outcome"])
    # One execution owns each sale and reflects it; a second one (the console's, started without a claim) follows
    # the owner and answers already_reflected.
    assert all(sorted(o) in (["reflected"], ["already_reflected", "reflected"]) for o in outcomes.values()), outcomes
    assert stored(stack, ids) == len(ids)
    view = {
        "status": "completed",
        "items": [{"sale_id": s, "outcome": "reflected"} for s in ids],
        "counts": {"reflected": len(ids)},
    }
    check(stack, "console rerun racing API relink", ids, view, f"{len(ids)} races", fault_table)


# --- reruns, keys and races (the sale lifecycle) ------------------------------------------------------------------


def _sale_state(http: httpx.Client, sale_id: str) -> dict[str, Any]:
    body: dict[str, Any] = http.get(f"/connections/{C}/sales/{sale_id}").json()
    return body


def _executions_of(stack: EmbeddedStack, sale_id: str) -> list[dict[str, Any]]:
    sfn = stack.aws.client("stepfunctions")
    found = []
    for execution in sfn.list_executions(stateMachineArn=stack.state_machine_arn, maxResults=1000)["executions"]:
        described = sfn.describe_execution(executionArn=execution["executionArn"])
        if json.loads(described["input"]).get("sale_id") == sale_id:
            found.append(described)
    return found


def check_sales(
    stack: EmbeddedStack,
    http: httpx.Client,
    case: str,
    ids: list[str],
    faults: str,
    report: Callable[[FaultRow], None],
    *,
    started: dict[str, list[str]],
) -> FaultRow:
    """Single-sale cases: every sale terminal (lost otherwise), at most one execution per sale and episode
    (duplicated otherwise), at most one page per episode and none for a sale that ended reflected or blocked."""
    for arns in started.values():
        for arn in arns:
            stack.wait(arn)
    if stack.poller is not None:
        stack.poller.wait_idle()
    states = {s: _sale_state(http, s) for s in ids}
    lost = sum(1 for s in states.values() if s["outcome"] in ("pending", "in_progress"))
    duplicated = 0
    for sale_id in ids:
        per_episode: dict[int, set[str]] = {}
        for arn in started.get(sale_id, []):
            name = arn.rsplit(":", 1)[-1]  # relink-<sale>-e<episode>-<digest>, or a console run's own name
            parts = name.split("-")
            episode = int(parts[2][1:]) if name.startswith("relink-") and len(parts) > 3 else 0
            per_episode.setdefault(episode, set()).add(arn)
        duplicated += sum(len(arns) - 1 for arns in per_episode.values())
    pages: dict[tuple[str, int], int] = {}
    for message in stack.help_desk_messages():
        if message.get("sale_id") in states:
            key = (message["sale_id"], int(message["episode"]))
            pages[key] = pages.get(key, 0) + 1
    wrong = sum(n - 1 for n in pages.values() if n > 1)
    # A page for the sale's last episode needs that episode escalated (an earlier episode's page stands: a rerun
    # may have reflected the sale since).
    wrong += sum(
        1
        for (sale_id, episode) in pages
        if episode == states[sale_id]["episode"] and states[sale_id]["outcome"] != "escalated"
    )
    escalated = sum(1 for s in states.values() if s["outcome"] == "escalated")
    row = FaultRow(case, len(ids), faults, lost, duplicated, escalated, 0, wrong)
    report(row)
    assert (lost, duplicated, wrong) == (0, 0, 0), (row, states)
    return row


def _relink(http: httpx.Client, sale_id: str, key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return http.post(f"/connections/{C}/sales/{sale_id}/relink", headers=headers)


def test_a_rerun_of_a_settled_sale_is_a_new_episode(stack: EmbeddedStack, http: httpx.Client, fault_table: Any) -> None:
    ids = new_sales(stack, 8)
    cancelled, unavailable = ids[:4], ids[4:]
    for sale_id in cancelled:
        order = copy.deepcopy(stack.meli.order(int(sale_id)))
        assert order is not None
        order.update(status="cancelled", cancel_detail={"group": "buyer", "code": "buyer_cancel", "description": "x"})
        stack.meli.upsert_order(order)
    for sale_id in unavailable:
        stack.meli.add_fault({"path": f"^/orders/{sale_id}$", "kind": "status", "status": 503})
    started: dict[str, list[str]] = {}
    try:
        for _ in range(2):  # the first run settles each sale; the second click reruns it
            for sale_id in ids:
                answer = _relink(http, sale_id)
                assert answer.status_code == 202, answer.text
                started.setdefault(sale_id, []).append(answer.json()["execution_id"])
                stack.wait(answer.json()["execution_id"])
    finally:
        stack.meli.clear_faults()
    row = check_sales(stack, http, "rerun of a settled sale", ids, "2 runs each, 4 x 503", fault_table, started=started)
    assert row.escalated == 4
    for sale_id in ids:
        state = _sale_state(http, sale_id)
        assert state["episode"] == 2 and len(set(started[sale_id])) == 2, state  # two episodes, two executions
    pages = [m for m in stack.help_desk_messages() if m.get("sale_id") in unavailable]
    assert sorted((m["sale_id"], m["episode"]) for m in pages) == sorted((s, e) for s in unavailable for e in (1, 2))


def test_the_same_key_after_its_execution_ended_answers_the_outcome(
    stack: EmbeddedStack, http: httpx.Client, fault_table: Any
) -> None:
    ids = new_sales(stack, 6)
    started: dict[str, list[str]] = {}
    for sale_id in ids:
        first = _relink(http, sale_id, key=f"ticket-{sale_id}")
        assert first.status_code == 202, first.text
        started[sale_id] = [first.json()["execution_id"]]
        stack.wait(first.json()["execution_id"])
        again = _relink(http, sale_id, key=f"ticket-{sale_id}")
        # Reflected by then: 200 already_reflected, nothing started (a closed execution's name is never reused).
        assert again.status_code == 200 and again.json()["outcome"] == "already_reflected", again.text
    assert all(len(_executions_of(stack, s)) == 1 for s in ids)
    check_sales(stack, http, "same key after the execution ended", ids, "6 retried keys", fault_table, started=started)


def test_ten_concurrent_reruns_run_once(stack: EmbeddedStack, http: httpx.Client, fault_table: Any) -> None:
    ids = new_sales(stack, 3)
    for sale_id in ids:
        stack.meli.add_fault({"path": f"^/orders/{sale_id}$", "kind": "status", "status": 503})
    started: dict[str, list[str]] = {}
    try:
        for sale_id in ids:  # episode 1: escalated after three attempts
            answer = _relink(http, sale_id)
            started[sale_id] = [answer.json()["execution_id"]]
            stack.wait(answer.json()["execution_id"])
        lock = threading.Lock()

        def click(sale_id: str) -> None:
            answer = _relink(http, sale_id)
            assert answer.status_code in (200, 202), answer.text
            if answer.status_code == 202:
                with lock:
                    started[sale_id].append(answer.json()["execution_id"])

        threads = [threading.Thread(target=click, args=(s,)) for s in ids for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for arns in started.values():  # the reruns fail too (ML still down): each episode escalates once
            for arn in set(arns):
                stack.wait(arn)
    finally:
        stack.meli.clear_faults()
    for sale_id in ids:
        assert len(set(started[sale_id])) == 2, started[sale_id]  # ten clicks, one rerun: episode 2 only
    row = check_sales(
        stack,
        http,
        "ten concurrent reruns",
        ids,
        "30 concurrent clicks",
        fault_table,
        started={s: sorted(set(arns)) for s, arns in started.items()},
    )
    assert row.escalated == 3
    pages = sorted((m["sale_id"], m["episode"]) for m in stack.help_desk_messages() if m.get("sale_id") in ids)
    assert pages == sorted((s, e) for s in ids for e in (1, 2))


def test_an_escalation_racing_a_resync_pages_nobody(stack: EmbeddedStack, http: httpx.Client, fault_table: Any) -> None:
    ids = new_sales(stack, 4)
    for sale_id in ids:
        stack.meli.add_fault({"path": f"^/orders/{sale_id}$", "kind": "status", "status": 503})

    def resync_first(handler: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def wrapped(event: Any, context: Any) -> Any:
            sale_id = event["sale_id"]
            stack.meli.clear_faults()
            for other in ids:
                if other != sale_id:
                    stack.meli.add_fault({"path": f"^/orders/{other}$", "kind": "status", "status": 503})
            resynced = http.post(f"/connections/{C}/sales/{sale_id}/resync")
            assert resynced.json()["outcome"] == "reflected", resynced.text
            return handler(event, context)

        return wrapped

    started: dict[str, list[str]] = {}
    with stack.aws.runtime.intercept("EscalateFunction", resync_first):
        for sale_id in ids:
            answer = _relink(http, sale_id)
            started[sale_id] = [answer.json()["execution_id"]]
            ended = stack.wait(answer.json()["execution_id"])
            assert ended.get("output", {}).get("outcome") in ("reflected", "already_reflected"), (
                ended.get("error"),
                ended.get("cause"),
            )
    stack.meli.clear_faults()
    row = check_sales(
        stack, http, "escalation racing a resync", ids, "4 resyncs during Escalate", fault_table, started=started
    )
    assert row.escalated == 0


def test_an_execution_failed_in_a_task_settles_its_sale_and_job(
    stack: EmbeddedStack, http: httpx.Client, fault_table: Any
) -> None:
    ids = new_sales(stack, 4)
    for sale_id in ids:
        stack.meli.add_fault({"path": f"^/orders/{sale_id}$", "kind": "status", "status": 503})

    def killed(handler: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def wrapped(event: Any, context: Any) -> Any:
            raise RuntimeError("the escalate task was killed (injected)")

        return wrapped

    try:
        with stack.aws.runtime.intercept("EscalateFunction", killed):
            submitted = http.post(f"/connections/{C}/reprocessing-jobs", json={"sale_ids": ids}).json()
            view = wait_for_job(http, submitted["job_id"])  # settled by the status events of the FAILED executions
    finally:
        stack.meli.clear_faults()
    started = {s: [e["executionArn"] for e in _executions_of(stack, s)] for s in ids}
    assert all(e["status"] == "FAILED" for s in ids for e in _executions_of(stack, s))
    row = check_sales(
        stack, http, "execution FAILED in a task", ids, "4 Escalate tasks killed", fault_table, started=started
    )
    assert view["status"] == "completed" and row.escalated == 4
    assert {i["reason"] for i in view["items"]} == {"execution_failed"}
    check(stack, "execution FAILED in a task (job)", ids, view, "4 FAILED executions", lambda _row: None)


def test_a_revoked_connection_is_one_alert_and_no_ml_calls(
    stack: EmbeddedStack, http: httpx.Client, fault_table: Any
) -> None:
    """Issue #13: the seller revoked the application with 30 sales pending in a bulk job. 0 ML calls after the first
    invalid_grant, exactly one alert, every item terminal with connection_needs_reauthorization; once new tokens are
    stored, the next sweep reflects them (and the connection is active again for the cases after this one)."""

    from shared.meli.tokens import SecretsManagerTokenStore

    ids = new_sales(stack, 30)
    stack.meli.revoke(C)
    stack.meli.reset_log()
    try:
        view = run_job(http, ids)
        requests = stack.meli.requests
        refusal = next(r for r in requests if r.path == "/oauth/token" and r.status == 400)
        after = [r for r in requests if r.started_at > refusal.started_at + refusal.duration_ms / 1000]
        alerts = [m for m in stack.help_desk_messages() if m.get("kind") == "connection_needs_reauthorization"]
        assert {(i["outcome"], i.get("reason")) for i in view["items"]} == {
            ("not_reflectable", "connection_needs_reauthorization")
        }, view["counts"]
        assert after == [] and len(alerts) == 1, (after, alerts)
        assert http.get(f"/connections/{C}").json()["state"] == "needs_reauthorization"
        check(
            stack,
            f"revoked: {len(after)} ML calls after refusal",
            ids,
            view,
            f"1 invalid_grant, {len(alerts)} alert",
            fault_table,
        )
    finally:
        # The seller reconnects: the platform stores the new pair (a newer version of the secret).
        store = SecretsManagerTokenStore(
            stack.aws.client("secretsmanager"), stack.settings().meli_connection_secret_prefix
        )
        store_reconnected_tokens(store, C, *stack.meli.reconnect(C))
    swept = stack.aws.runtime.invoke("ErrorSweepFunction", {"connection_id": C})["connections"][0]
    assert swept["resumed"] == 30 and swept.get("job_id"), swept
    retried = wait_for_job(http, swept["job_id"])
    items = {i["sale_id"]: i for i in retried["items"]}
    assert {items[s]["outcome"] for s in ids} == {"reflected"}, retried["counts"]
    assert http.get(f"/connections/{C}").json()["state"] == "active"
    # The inbox keeps every message delivered so far: still the one alert, nothing for the reconnection.
    assert [m for m in stack.help_desk_messages() if m.get("kind") == "connection_needs_reauthorization"] == alerts
