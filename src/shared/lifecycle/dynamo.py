"""The sale lifecycle's DynamoDB side: reads a sale's row and error entry, and writes a change as one conditional
write (the row alone) or one transaction (the row, its entry and the job items that move with it).

Every write is conditional on the row's version as it was read; a write that loses raises ``RowMoved`` and the
lifecycle reads again and decides again. A transaction cancelled by throttling or a conflict, or a single put
refused by another transaction on its row (botocore retries none of those), is written again after a jittered
back-off, then raises ``StateWriteFailed``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from shared.jobs import Settlement
from shared.lifecycle.change import Change, EntryWrite, waiting_item
from shared.lifecycle.row import SaleRow, Snapshot
from shared.stores.base import StateWriteFailed
from shared.stores.dynamo import (
    WRITE_TRIES,
    back_off,
    cancellation_codes,
    conditional_failed,
    from_dynamo,
    get_sale_row,
    iso,
    key_condition,
    retry_conflicts,
    sale_rows,
    to_dynamo,
    transaction_cancelled,
)
from shared.stores.errors import entry_from_item, entry_item
from shared.stores.jobs import hand_over_writes, settle_waiting_writes

DUE_INDEX = "DueIndex"  # rows the reaper must look at, by connection and due time (sparse: only rows with due_at)


class RowMoved(Exception):
    """The row's version is not the one the change was decided from: read again, decide again."""


class JobsGone(Exception):
    """Waiting jobs whose items are no longer in progress (settled already, or expired): leave them out."""

    def __init__(self, job_ids: set[str]) -> None:
        super().__init__(", ".join(sorted(job_ids)))
        self.job_ids = job_ids


class JobItemMoved(Exception):
    """The job item the change hands over is no longer pending (an earlier delivery handed it over or settled it)."""


def row_item(row: SaleRow) -> dict[str, Any]:
    data = row.model_dump(mode="json", exclude_none=True)
    for name in ("lease_until", "due_at"):
        value = getattr(row, name)
        if value is not None:
            data[name] = iso(value)  # compared as strings (the due index's sort key)
    item: dict[str, Any] = to_dynamo(data)
    return item


def row_from_item(item: dict[str, Any]) -> SaleRow:
    return SaleRow.model_validate(from_dynamo(item))


class DynamoLifecycleStore:
    def __init__(self, sales_table: Any, errors_table: Any, jobs_table_name: str) -> None:
        self._sales = sales_table
        self._errors = errors_table
        self._jobs = jobs_table_name
        self._client = sales_table.meta.client  # the resource's client (de)serialises attribute values itself

    # --- reads --------------------------------------------------------------------------------------------------------

    def read(self, connection_id: str, sale_id: str) -> Snapshot:
        row = get_sale_row(self._sales, connection_id, sale_id)
        entry = get_sale_row(self._errors, connection_id, sale_id)
        return Snapshot(
            row=row_from_item(row) if row else SaleRow(connection_id=connection_id, sale_id=sale_id),
            entry=entry_from_item(entry) if entry else None,
        )

    def read_many(self, connection_id: str, sale_ids: list[str]) -> dict[str, Snapshot]:
        rows = {r.sale_id: r for r in map(row_from_item, sale_rows(self._sales, connection_id, sale_ids))}
        entries = {e.sale_id: e for e in map(entry_from_item, sale_rows(self._errors, connection_id, sale_ids))}
        return {
            sale_id: Snapshot(
                row=rows.get(sale_id) or SaleRow(connection_id=connection_id, sale_id=sale_id),
                entry=entries.get(sale_id),
            )
            for sale_id in dict.fromkeys(sale_ids)
        }

    def due(self, connection_id: str, until: datetime, *, limit: int) -> list[str]:
        """Sales of the connection whose ``due_at`` is not later than ``until`` (oldest first)."""
        found: list[str] = []
        kwargs: dict[str, Any] = {
            "IndexName": DUE_INDEX,
            **key_condition("connection_id", connection_id, "due_at", "<=", iso(until)),
        }
        while len(found) < limit:
            page = self._sales.query(**kwargs, Limit=limit - len(found))
            found += [str(item["sale_id"]) for item in page.get("Items", [])]
            if not page.get("LastEvaluatedKey"):
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return found

    # --- the write ----------------------------------------------------------------------------------------------------

    def write(self, seen: Snapshot, change: Change, waiting: list[tuple[str, Settlement]]) -> None:
        """Write ``change`` (its row already carries the new version) if the row is still at ``seen``'s version,
        with the waiting jobs' items settled (``waiting``: job id, settlement) in the same transaction."""
        condition = self._row_condition(seen)
        items: list[dict[str, Any]] = [
            {"Put": {"TableName": self._sales.name, "Item": row_item(change.row), **condition}}
        ]
        key = {"connection_id": seen.connection_id, "sale_id": seen.sale_id}
        if change.entry_write is EntryWrite.PUT:
            assert change.entry is not None
            items.append({"Put": {"TableName": self._errors.name, "Item": entry_item(change.entry)}})
        elif change.entry_write is EntryWrite.DELETE and seen.entry is not None:
            items.append({"Delete": {"TableName": self._errors.name, "Key": key}})
        job_at = len(items) if change.job is not None else -1
        if change.job is not None:
            job = change.job
            items += hand_over_writes(
                self._jobs,
                job.job_id,
                job.item or seen.sale_id,
                attempts=job.attempts,
                episode=change.row.episode,
                execution_arn=job.execution_arn,
                detail=job.detail,
                retry_at=job.retry_at,
                deferred=job.deferred,
            )
        waiting_at = len(items)
        for ref, settlement in waiting:
            items += settle_waiting_writes(self._jobs, waiting_item(ref, seen.sale_id)[0], settlement)
        if len(items) == 1:
            self._put_row(items[0]["Put"])
            return
        self._transact(items, job_at=job_at, waiting_at=waiting_at, waiting=[job_id for job_id, _ in waiting])

    @staticmethod
    def _row_condition(seen: Snapshot) -> dict[str, Any]:
        if seen.row.version == 0:
            return {"ConditionExpression": "attribute_not_exists(sale_id)"}
        return {
            "ConditionExpression": "#version = :version",
            "ExpressionAttributeNames": {"#version": "version"},
            "ExpressionAttributeValues": {":version": seen.row.version},
        }

    def _put_row(self, put: dict[str, Any]) -> None:
        # A single write's throttling is retried by botocore itself. A row a transaction holds (another writer's
        # transaction with this row) refuses the put with TransactionConflictException, which botocore does not
        # retry: like a cancelled transaction's conflict, the same put goes again after a back-off (it is
        # conditional on the version read, so a row that moved meanwhile fails it and the lifecycle decides again).
        row = {k: v for k, v in put.items() if k != "TableName"}
        try:
            retry_conflicts(
                lambda: self._sales.put_item(**row),
                what=f"sale {row['Item']['sale_id']} of {row['Item']['connection_id']}",
            )
        except ClientError as exc:
            if conditional_failed(exc):
                raise RowMoved from exc
            raise

    def _transact(self, items: list[dict[str, Any]], *, job_at: int, waiting_at: int, waiting: list[str]) -> None:
        for attempt in range(WRITE_TRIES):
            try:
                self._client.transact_write_items(TransactItems=items)
                return
            except ClientError as exc:
                if not transaction_cancelled(exc):
                    raise
                codes = cancellation_codes(exc)
                failed = {n for n, code in enumerate(codes) if code == "ConditionalCheckFailed"}
                if 0 in failed:
                    raise RowMoved from exc
                if job_at in failed:
                    raise JobItemMoved from exc
                gone = {waiting[(n - waiting_at) // 2] for n in failed if n >= waiting_at}
                if gone:
                    raise JobsGone(gone) from exc
                if attempt + 1 >= WRITE_TRIES:  # throttled or conflicting every time: nothing was written
                    row = items[0]["Put"]["Item"]
                    raise StateWriteFailed(
                        f"could not write the state of sale {row['sale_id']} of {row['connection_id']}: {codes}"
                    ) from exc
                back_off(attempt)
