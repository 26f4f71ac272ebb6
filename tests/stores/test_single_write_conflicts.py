"""Single-item writes that meet a transaction on their item (issue 12, case 6): DynamoDB refuses them with
``TransactionConflictException``, which botocore does not retry (tests/devstack/test_faults.py). The sale lifecycle's
single put and the job header's updates write again after a jittered back-off (shared.stores.dynamo.retry_conflicts);
a write that meets one every time fails loudly (``StateWriteFailed``), having written nothing."""

from __future__ import annotations

import pytest

from devstack.faults import dynamodb_transaction_conflicts
from shared.jobs import Job
from shared.lifecycle import SaleLifecycle
from shared.stores.base import StateWriteFailed
from shared.stores.dynamo import WRITE_TRIES
from shared.stores.jobs import DynamoJobStore
from tests.stores.conftest import lifecycle_on
from tests.stores.conftest import table as _table
from tests.stores.test_sale_lifecycle import C, _reflect


@pytest.fixture
def lifecycle(tables: dict[str, str]) -> SaleLifecycle:
    return lifecycle_on(tables)


def test_a_sale_put_meeting_a_transaction_is_written_again(lifecycle: SaleLifecycle) -> None:
    seen = lifecycle.read(C, "31")
    with dynamodb_transaction_conflicts(0.5, seed=1) as conflicts:
        written = lifecycle.apply(seen, _reflect(seen))  # the row alone: one PutItem, not a transaction
    assert conflicts.injected >= 1 and conflicts.calls == conflicts.injected + 1
    assert written is not None and lifecycle.read(C, "31").reflected


def test_a_sale_put_meeting_a_transaction_every_time_fails_loudly_and_writes_nothing(lifecycle: SaleLifecycle) -> None:
    seen = lifecycle.read(C, "32")
    with dynamodb_transaction_conflicts(1.0) as conflicts, pytest.raises(StateWriteFailed):
        lifecycle.apply(seen, _reflect(seen))
    assert conflicts.injected == conflicts.calls == WRITE_TRIES
    assert lifecycle.read(C, "32").row.version == 0


def test_mark_started_is_written_again_past_a_transaction_and_an_unknown_job_stays_unknown(
    tables: dict[str, str],
) -> None:
    jobs = DynamoJobStore(_table(tables, "JOBS_TABLE"))
    job = Job(job_id="a" * 32, connection_id=C, accepted=2, messages=1)
    jobs.create(job, ["1", "2"])
    with dynamodb_transaction_conflicts(0.5, seed=1) as conflicts:
        started = jobs.mark_started(job.job_id)
        missing = jobs.mark_started("b" * 32)
    assert conflicts.injected >= 1
    assert started is not None and started.started_at is not None and started.messages == 1
    assert missing is None  # a lost condition is not a conflict: no header is made up for a job that is not there
    with dynamodb_transaction_conflicts(1.0), pytest.raises(StateWriteFailed):
        jobs.mark_started(job.job_id)
