"""What a bulk request can run into (``shared.bulk`` raises them, the API answers them): a module of its own, light,
so the API can name them in its exception handlers without importing the bulk service on every cold start."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.bulk import BulkMessage
    from shared.jobs import Job, RejectedId


class TooManyIds(ValueError):
    pass


class QueueSendError(RuntimeError):
    """Messages that could not be queued; ``unsent`` are the ones that did not go out."""

    def __init__(self, message: str, *, unsent: list[BulkMessage]) -> None:
        super().__init__(message)
        self.unsent = unsent


class PartlyQueued(QueueSendError):
    """Some of a job's messages went out, others not: ``job`` is the job as it now stands (the ids of ``sale_ids``
    withdrawn from it)."""

    def __init__(self, message: str, *, unsent: list[BulkMessage], job: Job, sale_ids: list[str]) -> None:
        super().__init__(message, unsent=unsent)
        self.job = job
        self.sale_ids = sale_ids


NOT_QUEUED = "not_queued"
NOT_QUEUED_MESSAGE = "The queue refused this id's message; the job runs without it. Submit it again."


class NoSaleIds(ValueError):
    pass


class NoValidSaleIds(NoSaleIds):
    """Every id of a request was rejected: nothing to queue, so no job is written (the answer lists each reason)."""

    def __init__(self, rejected: list[RejectedId]) -> None:
        super().__init__(
            f'No sale id among the {len(rejected)} value(s) sent; each one\'s reason is under "rejected". '
            "Nothing was queued: send the sale ids (digits only, e.g. 2000001234567890)."
        )
        self.rejected = rejected
