"""Reprocessing jobs in DynamoDB: one header item (item_key "#") and one item per accepted sale id.

Besides the store, this module builds the job writes that the sale lifecycle puts in its own transactions: an
item handed over to a relink execution (or to a later sweep) and an item settled with its sale's outcome.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from shared import clock
from shared.jobs import Job, JobItem, Settlement
from shared.lanes import LaneMessage
from shared.models import Outcome, Trigger
from shared.stores.base import Page, StateWriteFailed
from shared.stores.dynamo import (
    TRANSACTION_ITEMS,
    WRITE_TRIES,
    InvalidCursor,
    back_off,
    batch_get,
    batch_write,
    conditional_failed,
    decode_cursor,
    encode_cursor,
    from_dynamo,
    iso,
    key_condition,
    retry_conflicts,
    to_dynamo,
    transaction_cancelled,
)
from shared.stores.lanes import held_message_item

HEADER_KEY = "#"  # sorts before every digit, so a query for items starts right after the header
JOB_TTL = timedelta(days=30)
OPEN_ITEMS_INDEX = "OpenItemsIndex"  # open items (pending / in progress) by sale: "<connection_id>#<sale_id>"
_TERMINAL = tuple(o.value for o in Outcome if o.terminal)


def _now() -> str:
    return iso(clock.now())


def expires_at(job: Job) -> int:
    """The TTL of a job's header and items: derived from the job, so a write that replaces an item keeps it."""
    return int((job.created_at + JOB_TTL).timestamp())


def open_sale_key(connection_id: str, sale_id: str) -> str:
    return f"{connection_id}#{sale_id}"


def header_update(table_name: str, job_id: str, counts: Counter[str], *, handed: int = 0) -> dict[str, Any]:
    """``settled`` and ``count_<outcome>`` grow by the items settled; ``handed_over`` by ``handed`` (an item handed
    over: +1; a handed-over item settled: -1)."""
    names = {f"#c{n}": f"count_{outcome}" for n, outcome in enumerate(counts)}
    values: dict[str, Any] = {}
    adds = []
    if counts:
        adds.append("settled :settled")
        values[":settled"] = sum(counts.values())
    for n, outcome in enumerate(counts):
        adds.append(f"#c{n} :c{n}")
        values[f":c{n}"] = counts[outcome]
    if handed:
        adds.append("handed_over :handed")
        values[":handed"] = handed
    update: dict[str, Any] = {
        "TableName": table_name,
        "Key": {"job_id": job_id, "item_key": HEADER_KEY},
        "UpdateExpression": "ADD " + ", ".join(adds),
        "ExpressionAttributeValues": values,
    }
    if names:
        update["ExpressionAttributeNames"] = names
    return {"Update": update}


def hand_over_writes(
    table_name: str,
    job_id: str,
    sale_id: str,
    *,
    attempts: int,
    episode: int,
    execution_arn: str | None = None,
    detail: str | None = None,
    retry_at: datetime | None = None,
    deferred: bool = False,
) -> list[dict[str, Any]]:
    """pending -> in_progress: the item waits for its sale's outcome (a relink execution, or a later sweep)."""
    fields: dict[str, Any] = {"attempts": attempts, "episode": episode, "updated_at": _now()}
    if execution_arn is not None:
        fields["execution_arn"] = execution_arn
    if detail is not None:
        fields["detail"] = detail
    if deferred:
        fields["deferred"] = True
    if retry_at is not None:
        fields["retry_at"] = iso(retry_at)
    sets = ", ".join(f"#{k} = :{k}" for k in fields)
    return [
        {
            "Update": {
                "TableName": table_name,
                "Key": {"job_id": job_id, "item_key": sale_id},
                "UpdateExpression": f"SET #outcome = :ip, {sets}",
                "ConditionExpression": "#outcome = :pending",
                "ExpressionAttributeNames": {"#outcome": "outcome", **{f"#{k}": k for k in fields}},
                "ExpressionAttributeValues": {
                    ":ip": Outcome.IN_PROGRESS.value,
                    ":pending": Outcome.PENDING.value,
                    **{f":{k}": v for k, v in fields.items()},
                },
            }
        },
        header_update(table_name, job_id, Counter(), handed=1),
    ]


def settle_waiting_writes(table_name: str, job_id: str, settlement: Settlement) -> list[dict[str, Any]]:
    """in_progress -> the sale's terminal outcome, counted on the header (and no longer handed over)."""
    fields: dict[str, Any] = {
        "outcome": settlement.outcome.value,
        "attempts": settlement.attempts,
        "updated_at": _now(),
        "reason": settlement.reason.value if settlement.reason else None,
        "detail": settlement.detail,
        "episode": settlement.episode,
    }
    sets = {k: v for k, v in fields.items() if v is not None}
    removes = [k for k, v in fields.items() if v is None] + ["open_sale", "deferred", "retry_at"]
    return [
        {
            "Update": {
                "TableName": table_name,
                "Key": {"job_id": job_id, "item_key": settlement.sale_id},
                "UpdateExpression": "SET "
                + ", ".join(f"#{k} = :{k}" for k in sets)
                + " REMOVE "
                + ", ".join(f"#{k}" for k in removes),
                "ConditionExpression": "#outcome = :ip",
                "ExpressionAttributeNames": {f"#{k}": k for k in [*sets, *removes]},
                "ExpressionAttributeValues": {
                    ":ip": Outcome.IN_PROGRESS.value,
                    **{f":{k}": v for k, v in sets.items()},
                },
            }
        },
        header_update(table_name, job_id, Counter({settlement.outcome.value: 1}), handed=-1),
    ]


class DynamoJobStore:
    def __init__(self, table: Any) -> None:
        self._table = table
        self._client = table.meta.client  # the resource's client (de)serialises attribute values itself

    @property
    def table_name(self) -> str:
        return str(self._table.name)

    def create(self, job: Job, sale_ids: list[str], *, held: list[LaneMessage] | None = None) -> None:
        expires = expires_at(job)
        # Schedules' jobs go first in their lane: a sweep's retries are few and have waited already; so do
        # notifications' (one or a few sales each, and the buyer is waiting for them now).
        priority = 0 if job.trigger in (Trigger.SCHEDULE, Trigger.NOTIFICATION) else 1
        messages = [
            held_message_item(m, priority=priority, created_at=job.created_at, expires_at=expires) for m in held or []
        ]
        message_keys = [m["item_key"] for m in messages]
        # No empty attributes: a null started_at would make "if_not_exists(started_at, ...)" never set it.
        header = job.model_dump(mode="json", exclude={"counts"}, exclude_none=True)
        header.update({"item_key": HEADER_KEY, "expires_at": expires})
        header.update({f"count_{outcome}": 0 for outcome in _TERMINAL})
        # Items first: a header that exists promises that every accepted id has its item. The header is small
        # whatever the request (a bounded sample of its rejections, shared.jobs.REJECTED_SAMPLE), so DynamoDB does
        # not refuse it for its size; if it is refused all the same (or the items' batch fails half-way), what was
        # written is deleted before the error goes up: a refused job leaves no pending item holding an id.
        now = _now()
        try:
            batch_write(
                self._table,
                puts=(
                    {
                        "job_id": job.job_id,
                        "item_key": sale_id,
                        "outcome": Outcome.PENDING.value,
                        "attempts": 0,
                        "updated_at": now,
                        "expires_at": expires,
                        "open_sale": open_sale_key(job.connection_id, sale_id),
                    }
                    for sale_id in sale_ids
                ),
            )
            if messages:
                batch_write(self._table, puts=messages)
            retry_conflicts(
                lambda: self._table.put_item(
                    Item=to_dynamo(header), ConditionExpression="attribute_not_exists(job_id)"
                ),
                what=f"the header of job {job.job_id}",
            )
        except BaseException:
            # The header too: a put that landed but whose answer was lost (botocore's retry then fails the
            # condition) must not leave a header promising items that are gone. The job id is new: nobody else's.
            self._delete(job.job_id, [*sale_ids, *message_keys, HEADER_KEY])
            raise

    def withdraw(self, job: Job, sale_ids: list[str], *, messages: int) -> None:
        if messages >= job.messages:  # none of the job's messages went out: nothing of it stays
            self._delete(job.job_id, [*sale_ids, HEADER_KEY])
            return
        self._delete(job.job_id, sale_ids)
        # One update takes back the ids and the messages that never went out, so the header never promises a message
        # or an item that is not there. A settling transaction may hold the header this instant (the ids that went
        # out are being worked on): TransactionConflictException, retried after a back-off.
        retry_conflicts(
            lambda: self._table.update_item(
                Key={"job_id": job.job_id, "item_key": HEADER_KEY},
                UpdateExpression="ADD accepted :ids, messages :messages",
                ExpressionAttributeValues={":ids": -len(set(sale_ids)), ":messages": -messages},
            ),
            what=f"withdrawing {messages} unsent message(s) from job {job.job_id}",
        )

    def _delete(self, job_id: str, item_keys: list[str]) -> None:
        batch_write(self._table, deletes=({"job_id": job_id, "item_key": k} for k in dict.fromkeys(item_keys)))

    def get(self, job_id: str) -> Job | None:
        got = self._table.get_item(Key={"job_id": job_id, "item_key": HEADER_KEY}, ConsistentRead=True)
        return self._job(got["Item"]) if "Item" in got else None

    @staticmethod
    def _job(item: dict[str, Any]) -> Job:
        data = from_dynamo(item)
        counts = {o: int(data.pop(f"count_{o}", 0)) for o in _TERMINAL}
        data.setdefault("rejected_count", len(data.get("rejected", [])))  # a header written with every rejection
        for internal in ("item_key", "expires_at"):
            data.pop(internal, None)
        return Job.model_validate({**data, "counts": counts})

    @staticmethod
    def _item(data: dict[str, Any]) -> JobItem:
        data = from_dynamo(data)
        data["sale_id"] = data.pop("item_key")
        for internal in ("job_id", "expires_at", "open_sale"):
            data.pop(internal, None)
        return JobItem.model_validate(data)

    def items(self, job_id: str, *, limit: int = 100, cursor: str | None = None) -> Page[JobItem]:
        kwargs: dict[str, Any] = {
            **key_condition("job_id", job_id, "item_key", ">", HEADER_KEY),
            "Limit": limit,
            "ConsistentRead": True,
        }
        start = decode_cursor(cursor, required_keys={"job_id", "item_key"})
        if start:
            if start["job_id"] != job_id:
                raise InvalidCursor("the cursor belongs to another job; start again without it")
            kwargs["ExclusiveStartKey"] = start
        result = self._table.query(**kwargs)
        return Page(
            items=[self._item(item) for item in result.get("Items", [])],
            next_cursor=encode_cursor(result.get("LastEvaluatedKey")),
        )

    def get_items(self, job_id: str, sale_ids: list[str]) -> dict[str, JobItem]:
        keys = [{"job_id": job_id, "item_key": s} for s in dict.fromkeys(sale_ids)]
        return {item.sale_id: item for item in map(self._item, batch_get(self._table, keys))}

    def mark_started(self, job_id: str) -> Job | None:
        # Settling transactions hold the header while they count on it: an update meeting one is refused with
        # TransactionConflictException (botocore does not retry it) and is written again after a back-off.
        try:
            answer = retry_conflicts(
                lambda: self._table.update_item(
                    Key={"job_id": job_id, "item_key": HEADER_KEY},
                    UpdateExpression="SET started_at = if_not_exists(started_at, :now)",
                    ConditionExpression="attribute_exists(job_id)",  # no header is created for a job not there
                    ExpressionAttributeValues={":now": _now()},
                    ReturnValues="ALL_NEW",
                ),
                what=f"starting job {job_id}",
            )
        except ClientError as exc:
            if conditional_failed(exc):
                return None
            raise
        return self._job(answer["Attributes"])

    def has_open_item(self, connection_id: str, sale_id: str, *, updated_after: datetime) -> bool:
        found = self._table.query(
            IndexName=OPEN_ITEMS_INDEX,
            **key_condition("open_sale", open_sale_key(connection_id, sale_id), "updated_at", ">", iso(updated_after)),
            Limit=1,
        )
        return bool(found.get("Items"))

    def settle_many(self, job: Job, settlements: list[Settlement]) -> int:
        # One transaction per 99 items plus the header, whose counts are the sums of the items it carries.
        if any(not s.outcome.terminal for s in settlements):
            raise ValueError("settle_many records terminal outcomes only")
        unique = list({s.sale_id: s for s in settlements}.values())
        step = TRANSACTION_ITEMS - 1
        return sum(self._settle_chunk(job, unique[start : start + step]) for start in range(0, len(unique), step))

    def _settle_chunk(self, job: Job, chunk: list[Settlement]) -> int:
        from shared.lifecycle.pause import before_write

        conflicts = 0
        while chunk:
            counts = Counter(s.outcome.value for s in chunk)
            items = [self._pending_item_put(job, s) for s in chunk]
            before_write("settle_job_items", job.connection_id, ",".join(s.sale_id for s in chunk))
            try:
                self._client.transact_write_items(
                    TransactItems=[*items, header_update(self.table_name, job.job_id, counts)]
                )
                return len(chunk)
            except ClientError as exc:
                if not transaction_cancelled(exc):
                    raise
                # Items settled or handed over meanwhile (a duplicate delivery of the message) fail their
                # condition: they are dropped, by the cancellation reasons, and the rest is written again.
                reasons = exc.response.get("CancellationReasons") or []
                done = {
                    s.sale_id
                    for s, why in zip(chunk, reasons, strict=False)
                    if why.get("Code") == "ConditionalCheckFailed"
                }
                chunk = [s for s in chunk if s.sale_id not in done]
                if done:
                    continue
                # Throttled or conflicting: nothing was written; wait and write again, and fail the caller (its
                # message comes back) rather than drop an outcome.
                if conflicts + 1 >= WRITE_TRIES:
                    raise StateWriteFailed(
                        f"could not settle {len(chunk)} item(s) of job {job.job_id}: "
                        + ", ".join(s.sale_id for s in chunk[:10])
                    ) from exc
                back_off(conflicts)
                conflicts += 1
        return 0

    def _pending_item_put(self, job: Job, settlement: Settlement) -> dict[str, Any]:
        """A pending item holds nothing but its key, outcome, attempts and TTL, so settling it replaces it whole
        (a put is the cheaper write, and without ``open_sale`` it leaves the open-items index) under the
        condition that it is still pending."""
        item: dict[str, Any] = {
            "job_id": job.job_id,
            "item_key": settlement.sale_id,
            "outcome": settlement.outcome.value,
            "attempts": settlement.attempts,
            "updated_at": _now(),
            "expires_at": expires_at(job),
        }
        if settlement.reason is not None:
            item["reason"] = settlement.reason.value
        if settlement.detail is not None:
            item["detail"] = settlement.detail
        if settlement.episode is not None:
            item["episode"] = settlement.episode
        return {
            "Put": {
                "TableName": self.table_name,
                "Item": item,
                "ConditionExpression": "outcome = :pending",
                "ExpressionAttributeValues": {":pending": Outcome.PENDING.value},
            }
        }
