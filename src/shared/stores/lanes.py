"""Lanes in the jobs table (``shared.lanes``): a job's messages and each connection's slots.

- A job's message: ``job_id``, ``item_key`` ``!m<number>`` (before the header ``#``, so a job's items query never
  meets it), its ``sale_ids`` and ``lane_state``. While held it also carries ``held_lane`` (the connection) and
  ``held_order``, the keys of the sparse ``HeldMessagesIndex``: a connection's held messages, in release order.
- A connection's lane: ``job_id`` ``lane#<connection_id>``, ``item_key`` ``lane``, ``inflight`` a map of message ref
  -> epoch seconds the slot was taken (or last renewed).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from shared.lanes import LaneMessage, LaneState, Slot, parse_lane_ref
from shared.stores.dynamo import applied, conditional_failed, from_dynamo, iso, key_condition, retry_conflicts

HELD_INDEX = "HeldMessagesIndex"
LANE_PREFIX = "lane#"
LANE_KEY = "lane"  # not the job header's "#": a lane row is no job


def _deserialize(value: dict[str, Any]) -> Any:
    # boto3 imported here, not at module level: every function imports this module, and importing boto3 is what a
    # cold start defers to the first AWS call (README, cold start).
    from boto3.dynamodb.types import TypeDeserializer

    return TypeDeserializer().deserialize(value)


def _conditional(write: Any) -> bool:
    """A conditional write of a lane or message row: False when its condition did not hold. A transaction holding
    the row (a settling job, in the same table) is waited out with back-off."""
    return applied(lambda: retry_conflicts(write, what="a lane write"))


def message_key(number: int) -> str:
    return f"!m{number:05d}"


def held_message_item(message: LaneMessage, *, priority: int, created_at: datetime, expires_at: int) -> dict[str, Any]:
    """The ledger row of a job's message, held until its lane has room. ``priority`` 0 goes before 1 (schedules'
    jobs before people's), then the oldest job, then the job's own order."""
    return {
        "job_id": message.job_id,
        "item_key": message_key(message.number),
        "connection_id": message.connection_id,
        "sale_ids": message.sale_ids,
        "lane_state": LaneState.HELD.value,
        "held_lane": message.connection_id,
        "held_order": f"{priority}#{iso(created_at)}#{message.job_id}#{message.number:05d}",
        "expires_at": expires_at,
    }


class DynamoLaneStore:
    def __init__(self, table: Any) -> None:
        self._table = table

    @staticmethod
    def _lane_key(connection_id: str) -> dict[str, str]:
        return {"job_id": f"{LANE_PREFIX}{connection_id}", "item_key": LANE_KEY}

    @staticmethod
    def _message(item: dict[str, Any]) -> LaneMessage:
        data = from_dynamo(item)
        return LaneMessage(
            job_id=data["job_id"],
            number=int(str(data["item_key"])[2:]),
            connection_id=data["connection_id"],
            sale_ids=[str(s) for s in data["sale_ids"]],
            state=LaneState(data.get("lane_state", LaneState.HELD.value)),
        )

    def held(self, connection_id: str, *, limit: int) -> list[LaneMessage]:
        answer = self._table.query(IndexName=HELD_INDEX, **key_condition("held_lane", connection_id), Limit=limit)
        return [self._message(item) for item in answer.get("Items", [])]

    def take(self, connection_id: str, ref: str, *, limit: int, now: float) -> Slot:
        for _ in range(2):
            try:
                retry_conflicts(
                    lambda: self._table.update_item(
                        Key=self._lane_key(connection_id),
                        UpdateExpression="SET inflight.#ref = :now",
                        # attribute_exists first: the size of a map that is not there is no number to compare.
                        ConditionExpression="attribute_exists(inflight) AND attribute_not_exists(inflight.#ref) "
                        "AND size(inflight) < :limit",
                        ExpressionAttributeNames={"#ref": ref},
                        ExpressionAttributeValues={":now": Decimal(str(round(now, 3))), ":limit": limit},
                        ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    ),
                    what=f"taking a lane slot for {ref}",
                )
                return Slot.TAKEN
            except ClientError as exc:
                if not conditional_failed(exc):
                    raise
                old = _deserialize({"M": exc.response.get("Item") or {}})
                if "inflight" in old:
                    return Slot.ALREADY if ref in old["inflight"] else Slot.FULL
            # The connection's first paced message: its lane row, with an empty map, then the slot.
            _conditional(
                lambda: self._table.put_item(
                    Item={**self._lane_key(connection_id), "connection_id": connection_id, "inflight": {}},
                    ConditionExpression="attribute_not_exists(inflight)",
                )
            )
        return Slot.FULL

    def mark_sent(self, message: LaneMessage) -> None:
        _conditional(
            lambda: self._table.update_item(
                Key={"job_id": message.job_id, "item_key": message_key(message.number)},
                UpdateExpression="SET lane_state = :sent REMOVE held_lane, held_order",
                ConditionExpression="lane_state = :held",
                ExpressionAttributeValues={":sent": LaneState.SENT.value, ":held": LaneState.HELD.value},
            )
        )

    def mark(self, ref: str, state: LaneState) -> None:
        self._set_state(ref, state, unless_done=True)

    def touch(self, connection_id: str, ref: str, *, now: float) -> None:
        _conditional(
            lambda: self._table.update_item(
                Key=self._lane_key(connection_id),
                UpdateExpression="SET inflight.#ref = :now",
                ConditionExpression="attribute_exists(inflight.#ref)",
                ExpressionAttributeNames={"#ref": ref},
                ExpressionAttributeValues={":now": Decimal(str(round(now, 3)))},
            )
        )

    def finish(self, ref: str) -> None:
        self._set_state(ref, LaneState.DONE, unless_done=False)

    def _set_state(self, ref: str, state: LaneState, *, unless_done: bool) -> None:
        """A message's state past held (it leaves the held index); a message already done stays done when asked."""
        parsed = parse_lane_ref(ref)
        if parsed is None:
            return
        job_id, number = parsed
        condition, values = "attribute_exists(job_id)", {":state": state.value}
        if unless_done:
            condition += " AND lane_state <> :done"
            values[":done"] = LaneState.DONE.value
        _conditional(
            lambda: self._table.update_item(
                Key={"job_id": job_id, "item_key": message_key(number)},
                UpdateExpression="SET lane_state = :state REMOVE held_lane, held_order",
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
            )
        )

    def free(self, connection_id: str, ref: str) -> None:
        _conditional(
            lambda: self._table.update_item(
                Key=self._lane_key(connection_id),
                UpdateExpression="REMOVE inflight.#ref",
                ConditionExpression="attribute_exists(inflight.#ref)",
                ExpressionAttributeNames={"#ref": ref},
            )
        )

    def in_flight(self, connection_id: str) -> dict[str, float]:
        got = self._table.get_item(Key=self._lane_key(connection_id), ConsistentRead=True).get("Item") or {}
        return {ref: float(at) for ref, at in (got.get("inflight") or {}).items()}

    def message(self, ref: str) -> LaneMessage | None:
        parsed = parse_lane_ref(ref)
        if parsed is None:
            return None
        job_id, number = parsed
        got = self._table.get_item(Key={"job_id": job_id, "item_key": message_key(number)}, ConsistentRead=True)
        return self._message(got["Item"]) if "Item" in got else None
