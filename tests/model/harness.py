"""A deterministic scheduler over the whole local stack, for the model-based test of the sale lifecycle.

Every piece of product code that writes per-sale state runs as an *actor*: an API request, a bulk worker delivery,
a sweep or reconciliation run, the delivery of execution status events, and each Lambda task that moto's Step
Functions interpreter invokes. An actor stops ("parks") where it starts and right before each write of per-sale
state (``shared.lifecycle.pause``: the lifecycle's writes, a job's settlements, starting an execution, a page), and
goes on only when the test says so, so the test, not the thread scheduler, chooses the order of the writes. The
test can also crash an actor at a parked write: that write and every later one of the actor fail, as if its
process died right after its previous write.

After each step the scheduler waits for quiescence: the released actor parked again or finished, and every
running execution has a task parked (executions move between tasks on their own, writing nothing of ours).
"""

from __future__ import annotations

import contextvars
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from devstack.lambdas import held
from shared.lifecycle import pause
from shared.lifecycle.pause import PendingWrite

CURRENT: contextvars.ContextVar[int | None] = contextvars.ContextVar("model_actor", default=None)
QUIESCENCE_TIMEOUT = 60.0


class Crash(Exception):
    """The actor's process died right before this write (raised at the parked write and every later one)."""


class Deadlock(AssertionError):
    """The world did not come to rest: an actor neither parked nor finished, or an execution never reached a task."""


@dataclass
class Actor:
    id: int
    kind: str
    execution_arn: str | None = None
    order: tuple[int, str, int] = (0, "", 0)  # a replay-stable sort key (ids depend on thread timing for tasks)
    at: str = "start"
    parked: bool = False
    go: bool = False
    crash: bool = False
    crashed: bool = False
    done: bool = False
    result: Any = None
    error: BaseException | None = None
    writes: int = 0
    released: int = 0  # how many times it was let go

    def describe(self) -> str:
        where = "done" if self.done else self.at
        return f"#{self.id} {self.kind} at {where}"


@dataclass
class Scheduler:
    running_executions: Callable[[], set[str]]  # the ARNs of executions Step Functions says are RUNNING
    actors: dict[int, Actor] = field(default_factory=dict)
    cond: threading.Condition = field(default_factory=threading.Condition)
    ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    log: list[str] = field(default_factory=list)
    steps: int = 0
    crashes: int = 0
    _tasks: dict[str, int] = field(default_factory=dict)

    # --- wiring -------------------------------------------------------------------------------------------------------

    def install(self) -> None:
        pause.set_hook(self._hook)

    def uninstall(self) -> None:
        pause.set_hook(None)

    def _hook(self, write: PendingWrite) -> None:
        actor_id = CURRENT.get()
        if actor_id is None:
            return  # the test's own setup (the platform listing a sale): not an actor
        self._park(actor_id, f"{write.transition} {write.sale_id}")
        with self.cond:
            self.actors[actor_id].writes += 1

    def _park(self, actor_id: int, at: str) -> None:
        with self.cond:
            actor = self.actors[actor_id]
            if actor.crashed:
                raise Crash(f"{actor.kind} is dead ({at})")
            actor.at, actor.parked, actor.go = at, True, False
            self.cond.notify_all()
            with held():  # a parked Lambda invocation's clock stands still: its Timeout counts the time it runs
                while not actor.go:
                    self.cond.wait()
            actor.parked = False
            actor.released += 1
            self.cond.notify_all()
            if actor.crash:
                actor.crashed = True
                self.crashes += 1
                raise Crash(f"{actor.kind} crashed before {at}")

    def _new(self, kind: str, execution_arn: str | None = None) -> Actor:
        with self.cond:
            actor = Actor(id=next(self.ids), kind=kind, execution_arn=execution_arn)
            if execution_arn is None:  # spawned by the test thread, one after the other: their ids are stable
                actor.order = (0, "", actor.id)
            else:  # an execution's tasks run one after the other: the n-th task of this execution
                self._tasks[execution_arn] = self._tasks.get(execution_arn, 0) + 1
                actor.order = (1, execution_arn.rsplit(":", 1)[-1], self._tasks[execution_arn])
            self.actors[actor.id] = actor
            return actor

    def _finish(self, actor: Actor, result: Any, error: BaseException | None) -> None:
        with self.cond:
            actor.done, actor.result, actor.error = True, result, error
            self.cond.notify_all()

    # --- actors -------------------------------------------------------------------------------------------------------

    def spawn(self, kind: str, work: Callable[[], Any]) -> Actor:
        """Start an actor parked at its start; it runs only when advanced."""
        actor = self._new(kind)

        def run() -> None:
            CURRENT.set(actor.id)
            result, error = None, None
            try:
                self._park(actor.id, "start")
                result = work()
            except BaseException as exc:  # the actor's own failure is an outcome the test reads, not a test error
                error = exc
            self._finish(actor, result, error)

        threading.Thread(target=run, name=f"actor-{actor.id}-{kind}", daemon=True).start()
        self._wait(lambda: actor.parked or actor.done)
        return actor

    def gate(self, logical_id: str) -> Callable[[Callable[[Any, Any], Any]], Callable[[Any, Any], Any]]:
        """A wrapper for a state machine task's handler: every invocation is an actor, parked at its start."""

        def wrap(handler: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
            def gated(event: Any, context: Any) -> Any:
                actor = self._new(f"task:{logical_id}", execution_arn=(event or {}).get("execution_id"))
                token = CURRENT.set(actor.id)
                try:
                    self._park(actor.id, "start")
                    result = handler(event, context)
                except BaseException as exc:
                    self._finish(actor, None, exc)
                    raise
                finally:
                    CURRENT.reset(token)
                self._finish(actor, result, None)
                return result

            return gated

        return wrap

    def parked(self) -> list[Actor]:
        with self.cond:
            return sorted((a for a in self.actors.values() if a.parked and not a.done), key=lambda a: a.order)

    def advance(self, actor: Actor, *, crash: bool = False) -> None:
        """Let a parked actor do its next write (or crash before it), then wait until the world is at rest."""
        with self.cond:
            if not actor.parked:
                raise AssertionError(f"{actor.describe()} is not parked")
            self.steps += 1
            self.log.append(f"{'crash' if crash else 'step'} {actor.describe()}")
            before = actor.released
            actor.crash, actor.go = crash, True
            self.cond.notify_all()
            if not self.cond.wait_for(lambda: actor.released > before, timeout=QUIESCENCE_TIMEOUT):
                raise Deadlock(f"{actor.describe()} did not wake up")
        self.settle()

    def settle(self) -> None:
        """Until every actor is parked or done and every running execution has a task parked."""
        deadline = time.monotonic() + QUIESCENCE_TIMEOUT
        while True:
            with self.cond:
                moving = [a for a in self.actors.values() if not a.parked and not a.done]
                parked_executions = {a.execution_arn for a in self.actors.values() if a.parked and a.execution_arn}
            if not moving:
                running = self.running_executions()
                if running <= parked_executions:
                    return
                waiting_for = sorted(running - parked_executions)
            else:
                waiting_for = [a.describe() for a in moving]
            if time.monotonic() > deadline:
                raise Deadlock(f"not at rest after {QUIESCENCE_TIMEOUT}s: {waiting_for}; log: {self.log[-20:]}")
            time.sleep(0.005)

    def _wait(self, ready: Callable[[], bool]) -> None:
        with self.cond:
            if not self.cond.wait_for(ready, timeout=QUIESCENCE_TIMEOUT):
                raise Deadlock("an actor never reached its start")
        self.settle()

    def finish_all(self, *, steps: int = 400) -> bool:
        """Advance the parked actors (in order, no crash) until none is left; False if some still wait after
        ``steps`` (an execution following another that cannot end before time passes or an event is delivered)."""
        for _ in range(steps):
            parked = self.parked()
            if not parked:
                return True
            self.advance(parked[0])
        return not self.parked()


def new_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def body_of(message: dict[str, Any]) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(message["Body"])
    return parsed
