"""The Mercado Libre quota (DynamoTokenBucket) on a moto connections table: the rate holds across processes, the
bucket costs few DynamoDB calls, and it fails loudly instead of waiting forever.

Time is a fake clock whose sleep advances it, so the rate is measured exactly and no test sleeps, except the
threaded one, which uses the real clock and only asserts a lower bound on the time taken.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from devstack.template import create_tables, table_env
from shared.ratelimit import DynamoTokenBucket, QuotaWaitTooLong

KEY = "mla-main"
MIN_SLEEP = 1e-6


class FakeClock:
    """A clock that only moves when told to; ``sleep`` moves it by the time slept, and by at least a microsecond,
    as a real sleep does (a wait shorter than the float resolution of the time would otherwise never pass)."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0, f"asked to sleep a negative time: {seconds}"
        seconds = max(seconds, MIN_SLEEP)
        self.now += seconds
        self.slept += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The connections table of a moto account, holding the row of connection ``mla-main``."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        create_tables(boto3.client("dynamodb"), "quota")
        table = boto3.resource("dynamodb").Table(table_env("quota")["CONNECTIONS_TABLE"])
        table.put_item(Item={"connection_id": KEY})
        yield table


def _bucket(table: Any, clock: FakeClock, rate: float, **kwargs: Any) -> DynamoTokenBucket:
    return DynamoTokenBucket(table, rate=rate, sleep=clock.sleep, clock=clock, **kwargs)


def _burst(rate: float) -> float:
    """What the bucket may save up (module docstring): 1/20 s of tokens, at least one."""
    return max(1.0, rate / 20)


def test_acquires_are_spaced_at_the_configured_rate(connections: Any) -> None:
    """N acquires at rate r take (N - burst) / r of time: only the saved-up tokens come for free."""
    clock = FakeClock()
    rate, n = 5.0, 26
    bucket = _bucket(connections, clock, rate)
    start = clock()
    for _ in range(n):
        bucket.acquire(KEY)
    elapsed = clock() - start
    fastest = (n - _burst(rate)) / rate  # 5.0 s: the first token was saved up, 25 more at 0.2 s each
    assert fastest - 0.01 <= elapsed <= fastest + 0.2 + 0.01, elapsed
    assert 4.8 <= elapsed <= 5.4
    assert bucket.waited_seconds == pytest.approx(clock.slept)
    assert bucket.reads == 1  # it read the bucket once, then wrote against what it had written
    assert bucket.conflicts == 0  # alone on the row, no write can lose
    assert bucket.writes == n  # at 5/s every take is one token, one write
    row = connections.get_item(Key={"connection_id": KEY}, ConsistentRead=True)["Item"]
    assert float(row["bucket_at"]) == pytest.approx(clock(), abs=1e-5)
    assert float(row["bucket_tokens"]) == pytest.approx(0.0, abs=1e-5)


def test_the_bucket_keeps_no_more_than_its_burst_after_a_pause(connections: Any) -> None:
    """A long quiet spell does not bank more than burst tokens: after it, only ``burst`` acquires are free."""
    clock = FakeClock()
    rate = 40.0  # burst 2, batch 2
    bucket = _bucket(connections, clock, rate)
    bucket.acquire(KEY)
    clock.advance(3_600)  # an hour of silence
    start = clock()
    for _ in range(12):
        bucket.acquire(KEY)
    elapsed = clock() - start
    assert elapsed == pytest.approx((12 - _burst(rate)) / rate, abs=0.01)


def test_two_processes_on_one_row_share_the_rate_and_learn_from_failed_writes(connections: Any) -> None:
    """Two Lambdas on the same connection row: together they stay at the rate; each reads the row once at most and
    afterwards learns the bucket from the condition that failed, not from another read."""
    clock = FakeClock()
    rate, per_process = 5.0, 15
    first = _bucket(connections, clock, rate)
    second = _bucket(connections, clock, rate)
    start = clock()
    for _ in range(per_process):
        first.acquire(KEY)
        second.acquire(KEY)
    elapsed = clock() - start
    total = 2 * per_process
    fastest = (total - _burst(rate)) / rate  # 5.8 s
    assert fastest - 0.01 <= elapsed <= fastest + 1 / rate + 0.01, elapsed
    assert first.reads <= 1 and second.reads <= 1
    assert first.reads + second.reads >= 1  # somebody had to look at the row once
    # Every acquire ends in one successful write; a lost write is a conflict, counted on top.
    assert first.writes == per_process + first.conflicts
    assert second.writes == per_process + second.conflicts
    assert first.conflicts + second.conflicts > 0  # they did compete for the row
    assert first.conflicts <= per_process and second.conflicts <= per_process


def test_a_second_process_does_not_get_free_tokens_from_its_stale_view(connections: Any) -> None:
    """A process whose last write is outdated must not spend the tokens another process already took."""
    clock = FakeClock()
    rate = 1.0
    first = _bucket(connections, clock, rate)
    second = _bucket(connections, clock, rate)
    first.acquire(KEY)  # takes the one saved-up token at t=0
    clock.advance(1.0)
    second.acquire(KEY)  # the token that refilled during that second
    before = clock()
    first.acquire(KEY)  # its view says one token is there; the row says none: it must wait a full second
    assert clock() - before == pytest.approx(1.0, abs=1e-3)
    assert first.conflicts == 1 and first.reads == 1 and second.reads == 1


def test_at_a_high_rate_one_write_serves_a_batch_of_acquires(connections: Any) -> None:
    """At 1000/s with the clock nearly still, a write takes up to rate/20 tokens that the process hands out, so
    200 acquires cost a handful of writes and at most one read."""
    clock = FakeClock()
    rate, n = 1000.0, 200
    batch = int(rate / 20)  # 50
    bucket = _bucket(connections, clock, rate)
    start = clock()
    for _ in range(n):
        bucket.acquire(KEY)
        clock.advance(0.001)
    assert bucket.reads <= 1
    assert n / batch <= bucket.writes <= n // 10, bucket.writes  # at most `batch` tokens per write, so >= 4 writes
    assert bucket.conflicts == 0
    # The rate still holds: no more than burst + rate x elapsed tokens handed out.
    assert n <= _burst(rate) + rate * (clock() - start) + 1e-6


def test_a_local_batch_does_not_outlive_its_moment(connections: Any) -> None:
    """Spare tokens from one write are good for 1/20 s only; after that the process goes back to the bucket."""
    clock = FakeClock()
    bucket = _bucket(connections, clock, 1000.0)
    bucket.acquire(KEY)
    assert bucket.writes == 1
    bucket.acquire(KEY)  # same instant: a spare token from the batch
    assert bucket.writes == 1
    clock.advance(1.0)
    bucket.acquire(KEY)
    assert bucket.writes == 2


def test_a_missing_connection_row_raises_lookup_error(connections: Any) -> None:
    """No row for the key: the bucket says so (with the key) instead of retrying the write for ever."""
    clock = FakeClock()
    bucket = _bucket(connections, clock, 5.0)
    with pytest.raises(LookupError, match="mla-ghost"):
        bucket.acquire("mla-ghost")
    assert bucket.writes == 1
    assert clock.slept == 0.0
    assert "Item" not in connections.get_item(Key={"connection_id": "mla-ghost"})  # and it created no row


def test_a_wait_longer_than_the_limit_raises_without_sleeping_it(connections: Any) -> None:
    """At 0.01/s the second token is 100 s away; with max_wait 5 s the bucket raises QuotaWaitTooLong at once."""
    clock = FakeClock()
    bucket = _bucket(connections, clock, 0.01, max_wait_seconds=5.0)
    bucket.acquire(KEY)  # the saved-up token
    with pytest.raises(QuotaWaitTooLong, match=KEY):
        bucket.acquire(KEY)
    assert clock.slept == 0.0
    assert bucket.waited_seconds == 0.0


def test_a_wait_within_the_limit_is_slept(connections: Any) -> None:
    """The same bucket with max_wait above the 100 s gap sleeps it and succeeds."""
    clock = FakeClock()
    bucket = _bucket(connections, clock, 0.01, max_wait_seconds=150.0)
    bucket.acquire(KEY)
    bucket.acquire(KEY)
    assert clock.slept == pytest.approx(100.0, abs=1e-3)


def test_threads_of_one_process_share_the_rate_with_the_real_clock(connections: Any) -> None:
    """8 threads x 10 acquires on one bucket at 200/s, real clock: all succeed, and no faster than the rate allows
    (80 tokens, of which at most ``burst`` were saved up). Only a lower time bound is asserted."""
    rate, threads, each = 200.0, 8, 10
    bucket = DynamoTokenBucket(connections, rate=rate)
    errors: list[BaseException] = []
    done: list[int] = []
    barrier = threading.Barrier(threads)

    def worker() -> None:
        barrier.wait()
        try:
            for _ in range(each):
                bucket.acquire(KEY)
                done.append(1)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    start = time.monotonic()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.monotonic() - start
    assert errors == []
    assert len(done) == threads * each
    # bucket_at is stored rounded to the microsecond: allow a few milliseconds for clock and rounding noise.
    assert elapsed >= (threads * each - _burst(rate)) / rate - 0.005, elapsed
    assert bucket.reads == 1
    assert bucket.conflicts == 0  # the threads queue on the local lock, they never collide on the row


class ExactClock(FakeClock):
    """Sleeps exactly what is asked, however tiny, and gives up after too many sleeps (a spinning bucket)."""

    def __init__(self, start: float) -> None:
        super().__init__(start)
        self.sleeps = 0

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        assert self.sleeps < 10_000, "the bucket keeps asking to sleep: it spins"
        self.now += seconds
        self.slept += seconds


def test_a_token_lost_to_float_rounding_does_not_make_the_bucket_spin(connections: Any) -> None:
    """0.99999999999 tokens is a whole token; a wait too short to move the clock would repeat forever."""
    clock = ExactClock(start=4600.025)
    bucket = DynamoTokenBucket(connections, rate=7.6, sleep=clock.sleep, clock=clock)
    for _ in range(40):
        bucket.acquire(KEY)
    assert clock.sleeps <= 80
    assert 39 / 7.6 - 0.01 <= clock.now - 4600.025 <= 40 / 7.6 + 0.01
