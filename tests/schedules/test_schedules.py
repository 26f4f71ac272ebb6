"""The EventBridge schedules through their real handlers, with realistic scheduled events from events/schedules/:
the error sweep (due retries, escalation once, self-heal) and the reconciliation of paid ML sales that never arrived
(paging, overlapping hour windows, watermark, lease). Work travels through the real bulk queue (moto SQS) and the
real bulk worker; Mercado Libre is the simulator over HTTP.
"""

from __future__ import annotations

import copy
import json
import threading
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import boto3
import pytest

from devstack.simulator.scenario import Scenario
from devstack.simulator.server import MeliSimulator
from shared.identifiers import InvalidConnectionId
from shared.lifecycle import moves
from shared.lifecycle.table import Actor
from shared.models import ErrorEntry, ProductLink, ReflectedSale
from shared.recovery import ConnectionNotFound
from shared.schedules import HOUR, InvalidScheduleInput, InvalidWindow, ScheduleRunFailed
from tests.bulk.test_bulk import queued, queued_all, run_worker
from tests.conftest import Aws, build_service_for_tests, lambda_context, load_event

C = "mla-main"
TEMPLATE_SALE = 2000009101000011  # a healthy paid sale of the scenario: new sales are copies of it
LISTED_TIMEOUT = "2000009109000015"  # scenario: in the error list, marketplace_timeout (retryable)
LISTED_NOT_SYNCED = "2000009110000012"  # scenario: in the error list, product_not_synced (MLA1100000006)
NOT_SYNCED = "2000009108000018"  # scenario: its listing MLA1100000006 is linked to an unsynced product
CANCELLED = "2000009103000012"
UNFULFILLED = "2000009132000013"  # scenario: paid, tag unfulfilled (refunded to account money, never fulfilled)
FRAUD_RISK = "2000009133000010"  # scenario: paid, tag fraud_risk_detected
ALWAYS_503 = "2000009112000016"  # the simulator answers 503 for this order, always
HEALTHY = ["2000009101000021", "2000009101000031", "2000009101000041", "2000009101000051"]
ART = timezone(timedelta(hours=-3))


# --- helpers ----------------------------------------------------------------------------------------------------------


def sweep(event: Any = None) -> dict[str, Any]:
    from functions.error_sweep.app import lambda_handler

    result: dict[str, Any] = lambda_handler(
        load_event("schedules/error-sweep.json") if event is None else event,
        lambda_context("sales-recovery-test-error-sweep"),
    )
    return result


def reconcile(event: Any = None) -> dict[str, Any]:
    from functions.reconcile.app import lambda_handler

    result: dict[str, Any] = lambda_handler(
        load_event("schedules/reconcile.json") if event is None else event,
        lambda_context("sales-recovery-test-reconcile"),
    )
    return result


def run_of(result: dict[str, Any], connection_id: str = C) -> dict[str, Any]:
    run: dict[str, Any] = next(r for r in result["connections"] if r["connection_id"] == connection_id)
    return run


def queued_ids(aws: Aws) -> tuple[list[dict[str, Any]], list[str]]:
    messages = queued_all(aws)  # the held messages of the lanes too
    bodies = [json.loads(m["Body"]) for m in messages]
    assert all(len(b["sale_ids"]) <= 50 for b in bodies)
    return messages, [s for b in bodies for s in b["sale_ids"]]


def ml_date(when: datetime) -> str:
    return f"{when.astimezone(ART):%Y-%m-%dT%H:%M:%S}.000-03:00"


def new_order(meli: MeliSimulator, sale_id: int, updated: datetime, *, status: str = "paid") -> dict[str, Any]:
    """A copy of a healthy sale, as ML would serve a sale that arrived after the scenario was written."""
    order = copy.deepcopy(meli.order(TEMPLATE_SALE))
    assert order is not None
    order.update(
        id=sale_id,
        status=status,
        date_created=ml_date(updated - timedelta(minutes=3)),
        date_closed=ml_date(updated - timedelta(minutes=2)) if status == "paid" else None,
        last_updated=ml_date(updated),
        pack_id=None,
    )
    for payment in order["payments"]:
        payment["order_id"] = sale_id
        if status != "paid":
            payment["status"] = "pending" if status == "payment_required" else "cancelled"
    if status == "cancelled":
        order["cancel_detail"] = {"group": "buyer", "code": "buyer_cancel", "description": "Buyer cancelled"}
    meli.upsert_order(order)
    return order


def add_orders(
    meli: MeliSimulator, first: int, count: int, *, status: str = "paid", hours_ago: float = 2, spread: float = 0
) -> list[str]:
    """``count`` orders last updated from ``hours_ago`` on, spread over ``spread`` hours (default: until now)."""
    now = datetime.now(UTC)
    spread = spread or hours_ago
    ids = []
    for n in range(count):
        updated = now - timedelta(hours=hours_ago) + timedelta(seconds=(n * 3600 * spread) / max(1, count))
        new_order(meli, first + n, updated, status=status)
        ids.append(str(first + n))
    return ids


def connection_row(aws: Aws, connection_id: str = C) -> dict[str, Any]:
    item: dict[str, Any] = aws.table("CONNECTIONS_TABLE").get_item(Key={"connection_id": connection_id})["Item"]
    return item


def error_entry(connection_id: str, sale_id: str) -> ErrorEntry | None:
    entry: ErrorEntry | None = build_service_for_tests().stores.errors.get(connection_id, sale_id)
    return entry


def put_entry(sale_id: str, *, attempts: int = 1, next_retry_at: datetime | None = None, **fields: Any) -> None:
    now = datetime.now(UTC)
    entry = ErrorEntry(
        connection_id=C,
        sale_id=sale_id,
        error_type=fields.pop("error_type", "marketplace_timeout"),
        message=fields.pop("message", "Timeout reading the order"),
        retryable=fields.pop("retryable", True),
        attempts=attempts,
        next_retry_at=next_retry_at,
        first_seen=now,
        last_seen=now,
        **fields,
    )
    # As the platform lists a sale whose own import failed (the scenario's sale_errors).
    lifecycle = build_service_for_tests().lifecycle
    snap = lifecycle.read(C, sale_id)
    assert lifecycle.apply(snap, moves.list_error(snap, Actor.PLATFORM, entry=entry)) is not None


# --- error sweep ------------------------------------------------------------------------------------------------------


def test_the_sweep_retries_only_what_is_due_and_retryable_through_the_bulk_queue(aws: Aws, call_api: Any) -> None:
    now = datetime.now(UTC)
    due_past, not_yet, spent = HEALTHY[0], HEALTHY[1], HEALTHY[2]
    put_entry(due_past, next_retry_at=now - timedelta(minutes=1))
    put_entry(not_yet, next_retry_at=now + timedelta(minutes=10))
    put_entry(spent, attempts=6)
    put_entry(CANCELLED, error_type="sale_cancelled", retryable=False, reason="sale_cancelled")
    put_entry(HEALTHY[3], escalated=True)

    result = run_of(sweep())
    messages, ids = queued_ids(aws)
    # Due and retryable: the scenario's listed timeout (never retried: no next_retry_at) and the one whose backoff
    # elapsed. Not yet due, blocked by the sale, escalated already: left alone. Spent: escalated once.
    assert sorted(ids) == sorted([LISTED_TIMEOUT, due_past])
    assert len(messages) == 1 and json.loads(messages[0]["Body"])["job_id"] == result["job_id"]
    assert (result["enqueued"], result["escalated"]) == (2, 1)
    assert result["found"] == result["enqueued"] + result["skipped"] + result["escalated"] == 7
    pages = aws.help_desk_messages()
    assert [(p["sale_id"], p["reason"]) for p in pages] == [(spent, "retries_exhausted")]

    # A second sweep before the work ran: the claimed entries are not queued twice, nobody is paged twice.
    again = run_of(sweep())
    assert (again["enqueued"], again["escalated"]) == (0, 0)
    assert queued_ids(aws)[1] == [] and aws.help_desk_messages() == []

    # The worker settles the job: both retried sales are reflected and leave the error list.
    assert run_worker(aws, messages) == {"batchItemFailures": []}
    _, job, _ = call_api("GET", f"/connections/{C}/reprocessing-jobs/{result['job_id']}")
    assert job["status"] == "completed" and job["trigger"] == "schedule"
    assert {i["sale_id"]: i["outcome"] for i in job["items"]} == {LISTED_TIMEOUT: "reflected", due_past: "reflected"}
    assert error_entry(C, LISTED_TIMEOUT) is None and error_entry(C, due_past) is None
    assert error_entry(C, not_yet) is not None


def test_a_failing_retry_backs_off_and_escalates_once_when_spent(aws: Aws, call_api: Any) -> None:
    put_entry(ALWAYS_503, attempts=1)
    result = run_of(sweep())
    assert sorted(result["sale_ids"]) == sorted([ALWAYS_503, LISTED_TIMEOUT])
    run_worker(aws, queued(aws))
    entry = error_entry(C, ALWAYS_503)
    assert entry is not None and entry.attempts == 2 and not entry.escalated
    # Backoff from the attempts: base 300 s x 2^(2-1).
    assert entry.next_retry_at is not None
    assert timedelta(seconds=590) < entry.next_retry_at - entry.last_seen <= timedelta(seconds=601)
    _, job, _ = call_api("GET", f"/connections/{C}/reprocessing-jobs/{result['job_id']}")
    items = {i["sale_id"]: i for i in job["items"]}
    assert (items[ALWAYS_503]["outcome"], items[ALWAYS_503]["deferred"]) == ("in_progress", True)
    assert items[LISTED_TIMEOUT]["outcome"] == "reflected" and job["status"] == "in_progress"
    assert aws.help_desk_messages() == []
    assert run_of(sweep())["enqueued"] == 0  # not due yet

    # Retries spent (the configured max, 6): the next sweep escalates it once, then leaves it to the help desk.
    aws.table("SALE_ERRORS_TABLE").update_item(
        Key={"connection_id": C, "sale_id": ALWAYS_503},
        UpdateExpression="SET attempts = :six",
        ExpressionAttributeValues={":six": 6},
    )
    assert run_of(sweep())["escalated"] == 1
    assert run_of(sweep())["escalated"] == 0
    pages = aws.help_desk_messages()
    assert len(pages) == 1 and pages[0]["sale_id"] == ALWAYS_503 and pages[0]["attempts"] == 6
    _, state, _ = call_api("GET", f"/connections/{C}/sales/{ALWAYS_503}")
    assert (state["outcome"], state["reason"]) == ("escalated", "retries_exhausted")
    # The first sweep's job waited for that sale: the escalation settles its item, and the job completes.
    _, job, _ = call_api("GET", f"/connections/{C}/reprocessing-jobs/{result['job_id']}")
    items = {i["sale_id"]: i for i in job["items"]}
    assert (items[ALWAYS_503]["outcome"], items[ALWAYS_503]["reason"]) == ("escalated", "retries_exhausted")
    assert job["status"] == "completed" and job["counts"]["in_progress"] == 0


def _deferred_by_a_sweep(aws: Aws, call_api: Any) -> str:
    """A sweep whose retry of ALWAYS_503 fails again: its job item is left in progress, deferred. Returns the job."""
    put_entry(ALWAYS_503, attempts=1)
    job_id = str(run_of(sweep())["job_id"])
    run_worker(aws, queued(aws))
    _, job, _ = call_api("GET", f"/connections/{C}/reprocessing-jobs/{job_id}")
    assert job["status"] == "in_progress"
    assert {i["sale_id"]: i["outcome"] for i in job["items"]}[ALWAYS_503] == "in_progress"
    return job_id


def _settled_item(call_api: Any, job_id: str, sale_id: str) -> tuple[str, dict[str, Any]]:
    _, job, _ = call_api("GET", f"/connections/{C}/reprocessing-jobs/{job_id}")
    assert sum(job["counts"].values()) == job["accepted"]
    return job["status"], {i["sale_id"]: i for i in job["items"]}[sale_id]


def test_a_deferred_item_settles_when_a_later_sweep_reflects_the_sale(
    aws: Aws, call_api: Any, meli: MeliSimulator
) -> None:
    """The sale's outcome, when a later sweep reaches it, also settles the item of the sweep that deferred it."""
    first = _deferred_by_a_sweep(aws, call_api)
    meli.clear_faults()  # Mercado Libre answers again
    aws.table("SALE_ERRORS_TABLE").update_item(
        Key={"connection_id": C, "sale_id": ALWAYS_503},
        UpdateExpression="SET next_retry_at = :due",
        ExpressionAttributeValues={":due": "2000-01-01T00:00:00.000000+00:00"},
    )
    second = run_of(sweep())
    assert ALWAYS_503 in second["sale_ids"]
    run_worker(aws, queued(aws))
    for job_id in (first, second["job_id"]):
        status, item = _settled_item(call_api, job_id, ALWAYS_503)
        assert (status, item["outcome"]) == ("completed", "reflected")
    assert error_entry(C, ALWAYS_503) is None
    assert (
        len(
            aws.table("SALES_TABLE").query(
                KeyConditionExpression="connection_id = :c AND sale_id = :s",
                ExpressionAttributeValues={":c": C, ":s": ALWAYS_503},
            )["Items"]
        )
        == 1
    )


def test_a_deferred_item_settles_when_a_person_resyncs_the_sale(aws: Aws, call_api: Any, meli: MeliSimulator) -> None:
    """However the sale reaches its outcome (here a person's resync through the API), the waiting job gets it."""
    first = _deferred_by_a_sweep(aws, call_api)
    meli.clear_faults()
    status, body, _ = call_api("POST", f"/connections/{C}/sales/{ALWAYS_503}/resync")
    assert status == 200 and body["outcome"] == "reflected", body
    job_status, item = _settled_item(call_api, first, ALWAYS_503)
    assert (job_status, item["outcome"]) == ("completed", "reflected")


def test_a_fixed_product_heals_its_waiting_sales_without_a_human(aws: Aws, call_api: Any) -> None:
    # A sale blocked by its product reaches the error list with the listing that blocks it.
    call_api("POST", f"/connections/{C}/reprocessing-jobs", body=json.dumps({"sale_ids": [NOT_SYNCED]}))
    run_worker(aws, queued(aws))
    entry = error_entry(C, NOT_SYNCED)
    assert entry is not None and entry.reason == "product_not_synced" and not entry.retryable
    assert [(ref.item_id, ref.variation_id) for ref in entry.listings or []] == [("MLA1100000006", None)]

    # Still unsynced: the sweep leaves both waiting sales alone (it retries only the scenario's listed timeout).
    before = run_of(sweep())
    assert before["sale_ids"] == [LISTED_TIMEOUT] and before["healed"] == 0
    run_worker(aws, queued(aws))

    # The seller synchronises the product: the next sweep queues both sales, the worker reflects them.
    build_service_for_tests().stores.products.put(
        ProductLink(connection_id=C, item_id="MLA1100000006", sku="TER-ACE-1L", status="active", synced=True)
    )
    healed = run_of(sweep())
    messages, ids = queued_ids(aws)
    assert sorted(ids) == sorted([NOT_SYNCED, LISTED_NOT_SYNCED]) and healed["healed"] == 2
    run_worker(aws, messages)
    for sale_id in (NOT_SYNCED, LISTED_NOT_SYNCED):
        _, state, _ = call_api("GET", f"/connections/{C}/sales/{sale_id}")
        assert state["outcome"] == "reflected", state
        assert error_entry(C, sale_id) is None
    assert aws.help_desk_messages() == []


# --- reconciliation ---------------------------------------------------------------------------------------------------


def test_reconciliation_finds_exactly_the_missing_paid_sales_across_pages(
    aws: Aws, meli: MeliSimulator, call_api: Any
) -> None:
    missing = add_orders(meli, 2000009800000000, 120, hours_ago=2.5)
    cancelled = add_orders(meli, 2000009810000000, 5, status="cancelled", hours_ago=1)
    unpaid = add_orders(meli, 2000009820000000, 5, status="payment_required", hours_ago=1)
    reflected = add_orders(meli, 2000009830000000, 3, hours_ago=1)
    listed = add_orders(meli, 2000009840000000, 2, hours_ago=1)
    lifecycle = build_service_for_tests().lifecycle
    for sale_id in reflected:
        snap = lifecycle.read(C, sale_id)
        record = ReflectedSale(connection_id=C, sale_id=sale_id)
        assert lifecycle.apply(snap, moves.reflect(snap, Actor.PLATFORM, record=record, attempts=0, settled_by="t"))
    for sale_id in listed:
        put_entry(sale_id)
    meli.reset_log()

    hour_before = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    result = run_of(reconcile())
    hour_after = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    messages, ids = queued_ids(aws)
    assert sorted(ids) == sorted(missing)  # each once, none of the others
    assert len(messages) == 3 and {json.loads(m["Body"])["job_id"] for m in messages} == {result["job_id"]}
    assert (result["found"], result["enqueued"], result["skipped"]) == (125, 120, 5)
    assert result["complete"] and result["pages"] > 5
    searches = [r for r in meli.requests if r.path == "/orders/search"]
    assert all(r.query["order.status"] == "paid" and r.query["limit"] == "50" for r in searches)
    assert any(int(r.query["offset"]) >= 50 for r in searches)  # paged past a first page of 50
    assert set(cancelled + unpaid).isdisjoint(ids)

    # The watermark is the current hour; the next run re-reads the hour before it (overlap) and queues nothing.
    watermark = datetime.fromisoformat(connection_row(aws)["reconcile_watermark"])
    assert watermark in (hour_before, hour_after)
    second = run_of(reconcile())
    assert second["window_from"] < result["window_to"]  # overlapping windows
    assert second["enqueued"] == 0 and second["found"] > 0 and queued(aws) == []

    # The worker relinks them; each sale is reflected, once.
    run_worker(aws, messages)
    _, job, _ = call_api("GET", f"/connections/{C}/reprocessing-jobs/{result['job_id']}")
    assert job["status"] == "completed" and job["counts"]["reflected"] == 120
    _, state, _ = call_api("GET", f"/connections/{C}/sales/{missing[0]}")
    assert state["outcome"] == "reflected" and state["record"]["imported_by"] == "schedule"


def test_two_overlapping_runs_enqueue_each_missing_sale_once(aws: Aws, meli: MeliSimulator) -> None:
    missing = add_orders(meli, 2000009850000000, 60, hours_ago=3)
    meli.add_fault({"path": "^/orders/search", "kind": "latency", "ms": 80})
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(run_of(reconcile()))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    _, ids = queued_ids(aws)
    assert sorted(ids) == sorted(missing)  # once each
    assert sorted(r["enqueued"] for r in results) == [0, 60]
    # Whichever came second either found the lease taken or found every sale claimed already.
    loser = next(r for r in results if r["enqueued"] == 0)
    assert "another reconciliation" in (loser.get("note") or "") or loser["found"] == 60

    # And a run right after (windows overlap, the watermark re-read) queues nothing again.
    assert run_of(reconcile())["enqueued"] == 0


def test_a_bounded_run_resumes_from_its_watermark(
    aws: Aws, meli: MeliSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = add_orders(meli, 2000009860000000, 130, hours_ago=3)
    monkeypatch.setenv("RECONCILE_MAX_PAGES", "2")
    current_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    seen: list[str] = []
    watermarks: list[str] = []
    bounded = 0
    for _ in range(20):
        result = run_of(reconcile())
        assert result["pages"] <= 2
        seen += queued_ids(aws)[1]
        watermarks.append(connection_row(aws)["reconcile_watermark"])
        if result["complete"] or (datetime.fromisoformat(watermarks[-1]) == current_hour and result["enqueued"] == 0):
            break  # the window is read to its end: the last run may complete it
        bounded += 1  # stopped by its page budget, to be resumed from the watermark
    assert bounded >= 2 and watermarks == sorted(watermarks)  # several bounded runs, never backwards
    assert sorted(seen) == sorted(missing)  # every missing sale, each once, over several bounded runs


def test_the_watermark_moves_only_after_the_enqueue_succeeded(
    aws: Aws, meli: MeliSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lanes off (every message sent at once): a queue that refuses the send fails the run, and nothing moves."""
    monkeypatch.setenv("BULK_LANE_MESSAGES", "0")
    missing = add_orders(meli, 2000009870000000, 10, hours_ago=1)
    monkeypatch.setenv("BULK_QUEUE_URL", aws.env["BULK_QUEUE_URL"].rsplit("/", 1)[0] + "/no-such-queue")
    with pytest.raises(ScheduleRunFailed, match="mla-main"):
        reconcile()
    row = connection_row(aws)
    assert "reconcile_watermark" not in row and "reconcile_lease_owner" not in row
    sales = aws.table("SALES_TABLE")
    assert all("Item" not in sales.get_item(Key={"connection_id": C, "sale_id": s}) for s in missing)  # released

    monkeypatch.setenv("BULK_QUEUE_URL", aws.env["BULK_QUEUE_URL"])
    result = run_of(reconcile())
    assert sorted(queued_ids(aws)[1]) == sorted(missing) and result["enqueued"] == 10
    assert "reconcile_watermark" in connection_row(aws)


def test_with_lanes_a_queue_down_leaves_the_reconciled_sales_held_and_the_sweep_sends_them(
    aws: Aws, meli: MeliSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lanes on (the default): the run's job is accepted once its ledger is written, messages held in it, so the
    watermark moves; SQS refusing the send only delays it, and the next error sweep sends it once SQS is back."""
    missing = add_orders(meli, 2000009880000000, 10, hours_ago=1)
    monkeypatch.setenv("BULK_QUEUE_URL", aws.env["BULK_QUEUE_URL"].rsplit("/", 1)[0] + "/no-such-queue")
    result = run_of(reconcile())
    assert result["enqueued"] == 10 and "reconcile_watermark" in connection_row(aws)
    assert queued(aws) == []
    monkeypatch.setenv("BULK_QUEUE_URL", aws.env["BULK_QUEUE_URL"])
    swept = run_of(sweep())
    assert swept["lane_released"] >= 1
    messages, ids = queued_ids(aws)
    assert set(missing) <= set(ids)
    assert run_worker(aws, messages) == {"batchItemFailures": []}


def test_a_manual_window_reconciles_that_window_only_and_keeps_the_watermark(
    aws: Aws, meli: MeliSimulator, scenario: Scenario
) -> None:
    known = {r.sale_id for r in scenario.reflected_sales} | {e.sale_id for e in scenario.sale_errors}
    unseen_paid = [
        str(o["id"])
        for o in scenario.orders
        if o["status"] == "paid"
        and o["seller"]["id"] == 123456789
        and not o.get("cancel_detail")
        and not {"fraud_risk_detected", "unfulfilled"} & set(o.get("tags", []))
        and str(o["id"]) not in known
    ]
    # The sample manual run: the scenario's own sales (November 2024) that nobody notified and nobody listed.
    sample = run_of(reconcile(load_event("schedules/reconcile-manual.json")))
    assert sorted(sample["sale_ids"]) == sorted(unseen_paid)
    # Paid in ML's search but never to be fulfilled (refunded to account money, or a fraud alert): never relinked.
    assert not {UNFULFILLED, FRAUD_RISK} & set(sample["sale_ids"])
    now = datetime.now(UTC)
    recent = add_orders(meli, 2000009880000000, 3, hours_ago=30, spread=1)
    add_orders(meli, 2000009881000000, 3, hours_ago=20, spread=1)  # after the window
    window = {"from": (now - timedelta(hours=31)).isoformat(), "to": (now - timedelta(hours=28)).isoformat()}
    result = run_of(reconcile({"connection_id": C, "window": window}))
    assert sorted(result["sale_ids"]) == sorted(recent)
    assert "reconcile_watermark" not in connection_row(aws)
    assert [r["connection_id"] for r in reconcile({"connection_id": C, "window": window})["connections"]] == [C]


@pytest.mark.parametrize(
    ("handler", "event", "error", "words"),
    [
        (reconcile, {"connection_id": "mla-nope"}, ConnectionNotFound, "Unknown connection 'mla-nope'"),
        (sweep, {"connection_id": "mla-nope"}, ConnectionNotFound, "Unknown connection"),
        (reconcile, {"connection_id": "mla main!"}, InvalidConnectionId, "not a connection id"),
        (
            reconcile,
            {"connection_id": C, "window": {"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}},
            InvalidWindow,
            "must be before window.to",
        ),
        (
            reconcile,
            {"connection_id": C, "window": {"from": "2026-01-01T00:00:00", "to": "2026-01-02T00:00:00"}},
            InvalidScheduleInput,
            "timezone",
        ),
        (reconcile, {"connection_id": C, "windw": {}}, InvalidScheduleInput, "windw"),
        (
            sweep,
            {"connection_id": C, "window": {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}},
            InvalidScheduleInput,
            "takes no",
        ),
        (reconcile, ["mla-main"], InvalidScheduleInput, "JSON object"),
        (sweep, {"source": "aws.events", "detail-type": "Scheduled Event"}, InvalidScheduleInput, "scheduled event"),
    ],
)
def test_bad_manual_input_is_a_clear_error_and_changes_nothing(
    aws: Aws, meli: MeliSimulator, handler: Any, event: Any, error: type[Exception], words: str
) -> None:
    add_orders(meli, 2000009890000000, 3, hours_ago=1)
    meli.reset_log()
    with pytest.raises(error, match=words):
        handler(event)
    assert queued(aws) == []
    assert aws.table("JOBS_TABLE").scan()["Items"] == []
    assert not {"reconcile_watermark", "reconcile_lease_owner"} & set(connection_row(aws))
    assert meli.count() == 0


def test_the_sample_scheduled_events_drive_both_handlers(aws: Aws, scenario: Scenario) -> None:
    for name, handler in (("error-sweep", sweep), ("reconcile", reconcile)):
        event = load_event(f"schedules/{name}.json")
        assert event["detail-type"] == "Scheduled Event" and event["source"] == "aws.events"
        result = handler(event)
        assert {r["connection_id"] for r in result["connections"]} == {c.connection_id for c in scenario.connections}
    assert (
        boto3.client("sqs").get_queue_attributes(
            QueueUrl=aws.env["BULK_QUEUE_URL"], AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]["ApproximateNumberOfMessages"]
        == "1"
    )  # the sweep's job for the scenario's listed timeout


def test_the_reconcile_cursor_is_leased_and_never_moves_backwards(aws: Aws) -> None:
    from shared.stores.base import ReconcileCursor

    connections = build_service_for_tests().stores.connections
    hour = datetime(2026, 1, 1, 10, tzinfo=UTC)
    assert connections.acquire_reconcile_lease(C, "run-a", 300) == ReconcileCursor(watermark=None, offset=0)
    assert connections.acquire_reconcile_lease(C, "run-b", 300) is None  # a live lease is someone else's
    assert connections.acquire_reconcile_lease("mla-nope", "run-b", 300) is None  # no such connection row
    assert connections.advance_reconcile_cursor(C, "run-a", ReconcileCursor(hour, 100))
    assert not connections.advance_reconcile_cursor(C, "run-b", ReconcileCursor(hour + HOUR, 0))  # not the holder
    assert not connections.advance_reconcile_cursor(C, "run-a", ReconcileCursor(hour, 50))  # backwards (offset)
    assert not connections.advance_reconcile_cursor(C, "run-a", ReconcileCursor(hour - HOUR, 900))  # backwards
    assert connections.advance_reconcile_cursor(C, "run-a", ReconcileCursor(hour + HOUR, 0))
    connections.release_reconcile_lease(C, "run-a")
    assert connections.acquire_reconcile_lease(C, "run-b", 300) == ReconcileCursor(hour + HOUR, 0)
    assert connections.get(C) is not None  # the connection still reads as a connection
