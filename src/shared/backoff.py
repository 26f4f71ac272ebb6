"""Capped exponential backoff with full jitter, for the retries botocore does not make itself.

botocore retries a *call* that fails (throttling, 5xx). What a call that succeeds leaves undone is the caller's:
DynamoDB's ``UnprocessedKeys`` (BatchGetItem) and ``UnprocessedItems`` (BatchWriteItem), the ``Failed`` entries of
SQS ``SendMessageBatch``, a transaction cancelled by throttling or a conflict. AWS asks for the treatment botocore
gives a call: before each new round wait exponentially longer, with full jitter (a uniform draw in
``[0, min(cap, base * 2**n)]``, so that many Lambdas retrying at once spread out), for a bounded number of rounds,
and then fail, naming what is left. Re-sending at once only meets the same throttle again.

The defaults are botocore's own for DynamoDB (its legacy retry mode: 50 ms base, doubling) capped at 1 s: six tries
wait at most 0.05 + 0.1 + 0.2 + 0.4 + 0.8 = 1.55 s in all, small next to API Gateway's 29 s and any task's timeout.
Sleep and jitter are injectable: tests record the waits instead of sleeping them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

TRIES = 6  # calls in all, the first included: at most five waits, 1.55 s at the defaults


def full_jitter(ceiling: float) -> float:
    return random.uniform(0, ceiling)


@dataclass(frozen=True)
class Rounds:
    """``for attempt in Rounds(): ...`` yields 0 .. tries-1 and waits before every attempt after the first; the loop
    breaks when nothing is left, and code after it raises if something still is."""

    tries: int = TRIES
    base: float = 0.05  # seconds
    cap: float = 1.0  # seconds
    sleep: Callable[[float], None] = time.sleep
    jitter: Callable[[float], float] = full_jitter  # ceiling -> the wait actually taken, in [0, ceiling]

    def ceiling(self, retry: int) -> float:
        """The longest wait before re-send number ``retry`` (0: the first re-send)."""
        return min(self.cap, self.base * 2**retry)

    def wait(self, retry: int) -> float:
        delay = self.jitter(self.ceiling(retry))
        self.sleep(delay)
        return delay

    def __iter__(self) -> Iterator[int]:
        for attempt in range(self.tries):
            if attempt:
                self.wait(attempt - 1)
            yield attempt


DEFAULT = Rounds()
