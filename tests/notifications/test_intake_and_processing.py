"""The notification callback and the processor as Lambda sees them: whole API Gateway proxy events (the sample of
events/notifications/, re-aimed) through the intake handler, whole SQS events through the processor, moto for AWS
(tables from template.yaml) and the simulated ML over HTTP."""

from __future__ import annotations

import base64
import copy
import json
import sys
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from devstack.simulator.server import MeliSimulator
from devstack.template import queue_attributes
from shared.models import Trigger
from shared.settings import Settings
from shared.wiring import build_bulk_service, build_notification_intake, build_notified_sales
from tests.bulk.test_bulk import queued, run_worker
from tests.conftest import Aws, build_service_for_tests, lambda_context, load_event

APP_ID = 5503910054141466
SELLER = 123456789  # mla-main


@pytest.fixture
def queues(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    sqs = boto3.client("sqs")
    url = sqs.create_queue(
        QueueName="sales-recovery-test-notifications", Attributes=queue_attributes("NotificationsQueue")
    )["QueueUrl"]
    monkeypatch.setenv("NOTIFICATIONS_QUEUE_URL", url)
    monkeypatch.setenv("MELI_APPLICATION_ID", str(APP_ID))
    monkeypatch.setenv("BULK_LANE_MESSAGES", "0")  # the processor's job goes straight to the bulk queue here
    for built in (build_notification_intake, build_notified_sales, build_bulk_service):
        built.cache_clear()
    yield {"notifications": url, "bulk": aws.env["BULK_QUEUE_URL"]}
    for built in (build_notification_intake, build_notified_sales, build_bulk_service):
        built.cache_clear()


def _drain(url: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs")
    bodies: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not got:
            return bodies
        for message in got:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def _post(body: str | bytes | None, *, base64_encoded: bool = False, content_type: str = "application/json") -> Any:
    from functions.notifications_intake.app import lambda_handler

    event = copy.deepcopy(load_event("notifications/post-notification.json"))
    if isinstance(body, bytes):
        body = base64.b64encode(body).decode() if base64_encoded else body.decode("utf-8", "replace")
    event["body"] = body
    event["isBase64Encoded"] = base64_encoded
    event["headers"]["Content-Type"] = content_type
    event["multiValueHeaders"]["Content-Type"] = [content_type]
    response = lambda_handler(event, lambda_context("sales-recovery-test-notifications-intake"))
    return response["statusCode"], json.loads(response["body"])


def _notification(**changes: Any) -> dict[str, Any]:
    sample: dict[str, Any] = json.loads(load_event("notifications/post-notification.json")["body"])
    return {**sample, **changes}


def test_the_sample_notification_is_queued_for_its_connection(queues: dict[str, str]) -> None:
    status, body = _post(json.dumps(_notification()))
    assert status == 200 and body == {"status": "queued", "notification_id": "6745f2ac5b35b865994cfd7d"}
    (queued,) = _drain(queues["notifications"])
    assert queued["connection_id"] == "mla-main" and queued["sale_id"] == "2000009101000011"
    assert queued["source"] == "callback"


def test_a_user_id_as_text_and_a_base64_body_are_ml_notifications_too(queues: dict[str, str]) -> None:
    raw = json.dumps(_notification(user_id=str(SELLER))).encode()
    assert _post(raw, base64_encoded=True)[0] == 200
    assert len(_drain(queues["notifications"])) == 1


def test_fields_ml_may_add_or_change_never_refuse_a_notification(queues: dict[str, str]) -> None:
    # The sub-topic model's "id" and "actions", and a "sent" in a format of its own: still queued.
    changed = _notification(id="d7d8b0f2-5b1e-4c55-9e61-0d7a1b2c3d4e", actions=["created"], sent="30/10/2019 16:19")
    status, body = _post(json.dumps(changed))
    assert status == 200 and body["status"] == "queued"
    (queued,) = _drain(queues["notifications"])
    assert queued["sent"] == "30/10/2019 16:19"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"application_id": 3486171129139063}, "foreign_application"),
        ({"user_id": 468424240}, "unknown_seller"),
        ({"topic": "items", "resource": "/items/MLA820048955"}, "other_topic"),
        ({"topic": "questions", "resource": "/questions/5036111111"}, "other_topic"),
        ({"resource": "/orders/2000009101000011/feedback"}, "not_an_order"),
        ({"resource": "/collections/3043111111"}, "not_an_order"),
    ],
)
def test_well_formed_notifications_not_ours_are_acknowledged_and_nothing_is_queued(
    queues: dict[str, str], changes: dict[str, Any], reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, body = _post(json.dumps(_notification(**changes)))
    assert status == 200 and body["status"] == "ignored" and body["reason"] == reason
    assert _drain(queues["notifications"]) == []
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert [m["result"] for m in metrics if "Notifications" in m] == [reason]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "error"),
    [
        ("", "application/json", 400, "empty_body"),
        ("{not json", "application/json", 400, "malformed_json"),
        ("[1, 2]", "application/json", 400, "not_a_notification"),
        (json.dumps({"resource": "/orders/1"}), "application/json", 400, "not_a_notification"),
        (json.dumps({**_notification(), "user_id": "12a"}), "application/json", 400, "not_a_notification"),
        (json.dumps({**_notification(), "user_id": True}), "application/json", 400, "not_a_notification"),
        (json.dumps({**_notification(), "padding": "x" * 5000}), "application/json", 413, "too_large"),
        (json.dumps(_notification()), "text/plain", 415, "unsupported_media_type"),
    ],
    ids=["empty", "not-json", "not-an-object", "missing-fields", "user-id-not-digits", "user-id-bool", "big", "text"],
)
def test_what_is_not_an_ml_notification_gets_a_4xx_that_says_why_and_nothing_is_queued(
    queues: dict[str, str], body: str, content_type: str, status: int, error: str
) -> None:
    answered, payload = _post(body, content_type=content_type)
    assert answered == status and payload["error"] == error and payload["message"]
    assert _drain(queues["notifications"]) == []


def test_a_queue_that_refuses_fails_the_request_so_ml_retries(queues: dict[str, str]) -> None:
    boto3.client("sqs").delete_queue(QueueUrl=queues["notifications"])
    from functions.notifications_intake.app import lambda_handler

    with pytest.raises(ClientError):  # API Gateway answers 502: ML retries it, then keeps it in the missed feeds
        lambda_handler(load_event("notifications/post-notification.json"), lambda_context())


def _sqs_event(*queued: dict[str, Any] | str) -> dict[str, Any]:
    event = copy.deepcopy(load_event("notifications/sqs-notifications.json"))
    template = event["Records"][0]
    records = []
    for i, body in enumerate(queued):
        record = copy.deepcopy(template)
        record["messageId"] = f"{template['messageId'][:-2]}{i:02d}"
        record["body"] = body if isinstance(body, str) else json.dumps(body)
        records.append(record)
    event["Records"] = records
    return event


def _process(event: dict[str, Any]) -> dict[str, Any]:
    from functions.notifications.app import lambda_handler

    result: dict[str, Any] = lambda_handler(event, lambda_context("sales-recovery-test-notifications"))
    return result


def test_the_sample_sqs_event_collapses_into_one_notification_job_item(queues: dict[str, str]) -> None:
    assert _process(load_event("notifications/sqs-notifications.json")) == {"batchItemFailures": []}
    (message,) = _drain(queues["bulk"])
    assert message["connection_id"] == "mla-main" and message["sale_ids"] == ["2000009101000011"]
    job = build_bulk_service(Settings.from_env()).job("mla-main", message["job_id"])
    assert job is not None and job.trigger == "notification" and job.accepted == 1
    # Redelivered (the processor died before deleting the messages): the job's open item holds the sale.
    assert _process(load_event("notifications/sqs-notifications.json")) == {"batchItemFailures": []}
    assert _drain(queues["bulk"]) == []


def test_reflected_listed_and_blocked_sales_are_left_alone(queues: dict[str, str]) -> None:
    queued = [
        {"connection_id": "mla-main", "sale_id": sale_id, "notification_id": f"n{i}", "source": "missed_feeds"}
        for i, sale_id in enumerate(["2000009102000015", "2000009109000015", "2000009110000012"])
    ]
    assert _process(_sqs_event(*queued)) == {"batchItemFailures": []}
    assert _drain(queues["bulk"]) == []  # reflected; listed with retries (the sweep's); blocked by its product


def test_a_record_that_is_not_a_queued_notification_fails_alone(queues: dict[str, str]) -> None:
    good = {"connection_id": "mla-main", "sale_id": "2000009101000021", "notification_id": "n1"}
    event = _sqs_event("not json", good)
    assert _process(event) == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
    (message,) = _drain(queues["bulk"])
    assert message["sale_ids"] == ["2000009101000021"]


def test_a_held_sales_notification_comes_back_and_relinks_what_its_holder_read_unpaid(
    queues: dict[str, str], aws: Aws, meli: MeliSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race a skip alone loses: a person's job holds the sale and reads the order before ML's "paid" change; the
    "paid" notification, processed while the job held the sale, is put back (delayed) instead of dropped, and when it
    comes back after the job settled the sale unpaid, it relinks it."""
    monkeypatch.setenv("NOTIFICATION_DEFER_SECONDS", "0")  # the cloud waits 60 s, then 120 s, ...
    build_notified_sales.cache_clear()
    sale_id = 2000009305000019
    order = copy.deepcopy(meli.order(2000009101000011))
    assert order is not None
    order.update(id=sale_id, pack_id=None, status="payment_required")
    for payment in order["payments"]:
        payment.update(order_id=sale_id, status="pending", status_detail="pending_waiting_payment")
    meli.upsert_order(order, notify=False)
    bulk = build_bulk_service(Settings.from_env(), queue=True)
    person = bulk.submit_ids("mla-main", [str(sale_id)], trigger=Trigger.BULK)
    notification = {"connection_id": "mla-main", "sale_id": str(sale_id), "notification_id": "paid-1"}

    assert _process(_sqs_event(notification)) == {"batchItemFailures": []}  # the job holds the sale
    (back,) = _drain(queues["notifications"])
    assert back["sale_id"] == str(sale_id) and back["deferrals"] == 1
    run_worker(aws, queued(aws))  # the person's job read the order before ML's change: unpaid
    assert bulk.job_items(person.job_id).items[0].reason == "payment_not_verified"

    paid = copy.deepcopy(meli.order(2000009101000011))
    assert paid is not None
    paid.update(id=sale_id, pack_id=None)
    for payment in paid["payments"]:
        payment["order_id"] = sale_id
    meli.upsert_order(paid, notify=False)
    assert _process(_sqs_event(back)) == {"batchItemFailures": []}  # it comes back: the sale is free now
    (message,) = queued(aws)
    assert json.loads(message["Body"])["sale_ids"] == [str(sale_id)]
    run_worker(aws, [message])
    state, _ = build_service_for_tests().views.sale_state("mla-main", str(sale_id))
    assert state.outcome == "reflected"
    assert _drain(queues["notifications"]) == []  # nothing held it this time: nothing put back


def test_a_notification_held_through_every_deferral_is_left_to_reconciliation(
    queues: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFICATION_DEFER_SECONDS", "0")
    build_notified_sales.cache_clear()
    bulk = build_bulk_service(Settings.from_env(), queue=True)
    bulk.submit_ids("mla-main", ["2000009101000031"], trigger=Trigger.BULK)  # holds the sale, never processed here
    last = {"connection_id": "mla-main", "sale_id": "2000009101000031", "notification_id": "n", "deferrals": 8}
    assert _process(_sqs_event(last)) == {"batchItemFailures": []}
    assert _drain(queues["notifications"]) == []


def test_the_callback_answers_from_a_restored_snapshot_with_its_own_clients(queues: dict[str, str]) -> None:
    """SnapStart (template.yaml): the hooks the callback registers warm what every sandbox may share, and a restored
    sandbox makes its own clients before it answers ML."""
    import gc

    import snapshot_restore_py

    from functions.notifications_intake import app

    assert app._before_snapshot in [hook for hook, _, _ in snapshot_restore_py.get_before_snapshot()]
    assert app._after_restore in [hook for hook, _, _ in snapshot_restore_py.get_after_restore()]
    assert _post(json.dumps(_notification()))[0] == 200  # a request served before the snapshot: clients built
    built = build_notification_intake(Settings.from_env())
    try:
        app._before_snapshot()
        assert [m for m in app.INTAKE_LAZY_MODULES if m not in sys.modules] == []
        app._after_restore()
    finally:
        gc.unfreeze()
    assert build_notification_intake(Settings.from_env()) is not built  # the sandbox's own, with new clients
    status, body = _post(json.dumps(_notification(_id="after-restore")))
    assert status == 200 and body["status"] == "queued"
    assert [m["sale_id"] for m in _drain(queues["notifications"])] == ["2000009101000011"] * 2
