"""The sale's lifecycle as a table: every transition of per-sale state, from which states, to which, who may ask.

The lifecycle (``shared.lifecycle.SaleLifecycle``) refuses a write that is not a row of this table, so the table is
what the code does; the README's "Sale lifecycle" section is this table rendered (``render_markdown``) and a test
checks the two are the same text.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    """Where a sale stands in its current episode. ``never_seen``: the service holds no row for it yet."""

    NEVER_SEEN = "never_seen"
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    REFLECTED = "reflected"
    NOT_REFLECTABLE = "not_reflectable"
    ESCALATED = "escalated"

    @property
    def settled(self) -> bool:
        return self in SETTLED


SETTLED = frozenset({State.REFLECTED, State.NOT_REFLECTABLE, State.ESCALATED})


class Actor(StrEnum):
    """Who asks for a transition."""

    API_RELINK = "api_relink"  # POST .../relink
    API_RESYNC = "api_resync"  # POST .../resync
    BULK_WORKER = "bulk_worker"  # one sale of a bulk message (API jobs, sweep and reconciliation jobs)
    VERIFY_TASK = "verify_task"  # the relink state machine's tasks
    RELINK_TASK = "relink_task"
    RESYNC_TASK = "resync_task"
    ESCALATE_TASK = "escalate_task"
    SWEEP = "sweep"  # the error sweep (schedule)
    REAPER = "reaper"  # an execution ended, a lease ran out, a page is still due (sweep, status event, a read)
    PLATFORM = "platform"  # the platform's own state, loaded by the scenario seeder


class Transition(StrEnum):
    CLAIM = "claim"
    ATTACH = "attach"
    NOTE_FAILURE = "note_failure"
    REFLECT = "reflect"
    BLOCK = "block"
    ESCALATE = "escalate"
    DEFER = "defer"
    SCHEDULE_RETRY = "schedule_retry"
    RENEW = "renew"
    PAGE_SENT = "page_sent"
    LIST_ERROR = "list_error"
    FOLLOW_CART = "follow_cart"


@dataclass(frozen=True)
class Rule:
    transition: Transition
    sources: frozenset[State]
    targets: frozenset[State]  # empty: the state does not change
    actors: frozenset[Actor]
    guard: str  # what must also hold, in words (checked by the deciding code)
    moves: str  # what else changes in the same write

    def allows(self, source: State, target: State, actor: Actor) -> bool:
        expected = self.targets or {source}
        return source in self.sources and target in expected and actor in self.actors


_ANY_UNREFLECTED = frozenset(
    {State.NEVER_SEEN, State.PENDING, State.IN_PROGRESS, State.NOT_REFLECTABLE, State.ESCALATED}
)

RULES: tuple[Rule, ...] = (
    Rule(
        Transition.CLAIM,
        _ANY_UNREFLECTED,
        frozenset({State.IN_PROGRESS}),
        frozenset({Actor.API_RELINK, Actor.BULK_WORKER, Actor.VERIFY_TASK}),
        "no live owner: not in progress, or the owner's lease ran out",
        "an execution becomes the owner (named after the sale and episode; a lease); a new episode unless the sale "
        "was pending; the Idempotency-Key's episode; a bulk job's item handed over; the entry's escalation mark "
        "cleared",
    ),
    Rule(
        Transition.ATTACH,
        frozenset({State.IN_PROGRESS}),
        frozenset(),
        frozenset({Actor.API_RELINK, Actor.BULK_WORKER}),
        "the owner is live",
        "a job's item waits for the owner's outcome, or an Idempotency-Key maps to this episode",
    ),
    Rule(
        Transition.NOTE_FAILURE,
        frozenset({State.IN_PROGRESS}),
        frozenset(),
        frozenset({Actor.RELINK_TASK, Actor.RESYNC_TASK, Actor.API_RESYNC}),
        "a task: its own execution owns the sale; the API's resync: while an execution owns it",
        "the entry: opened or updated (type, message, attempts, history, next retry)",
    ),
    Rule(
        Transition.REFLECT,
        _ANY_UNREFLECTED,
        frozenset({State.REFLECTED}),
        frozenset(
            {Actor.API_RESYNC, Actor.BULK_WORKER, Actor.RELINK_TASK, Actor.RESYNC_TASK, Actor.PLATFORM},
        ),
        "the import is written once (the record never changes after)",
        "the entry removed; every waiting job's item settled; the owner's lease released; a new episode if settled",
    ),
    Rule(
        Transition.BLOCK,
        _ANY_UNREFLECTED,
        frozenset({State.NOT_REFLECTABLE}),
        frozenset(
            {
                Actor.API_RELINK,
                Actor.API_RESYNC,
                Actor.BULK_WORKER,
                Actor.VERIFY_TASK,
                Actor.RELINK_TASK,
                Actor.RESYNC_TASK,
            },
        ),
        "the writer verified it against ML and the product links just now, or found its connection needing "
        "reauthorization (api_relink: only then, and no live owner)",
        "the entry kept or opened for a listed, product-blocked or connection-blocked sale (with the listings); "
        "every waiting job's item settled; the owner's lease released; a new episode if settled",
    ),
    Rule(
        Transition.ESCALATE,
        _ANY_UNREFLECTED,
        frozenset({State.ESCALATED}),
        frozenset({Actor.ESCALATE_TASK, Actor.BULK_WORKER, Actor.API_RESYNC, Actor.SWEEP, Actor.REAPER}),
        "in progress: only its owner, or the reaper once the owner's execution ended",
        "the entry marked escalated, with the failure; the page due (sent after this write); "
        "every waiting job's item settled; the owner's lease released; a new episode if settled",
    ),
    Rule(
        Transition.DEFER,
        frozenset({State.NEVER_SEEN, State.PENDING, State.NOT_REFLECTABLE}),
        frozenset({State.PENDING}),
        frozenset({Actor.BULK_WORKER}),
        "a sweep job's retry failed transiently and retries are left",
        "the entry: failure, attempts, next retry; the sweep job's item waits for the sale",
    ),
    Rule(
        Transition.SCHEDULE_RETRY,
        frozenset({State.NEVER_SEEN, State.PENDING, State.NOT_REFLECTABLE}),
        frozenset({State.PENDING}),
        frozenset({Actor.SWEEP}),
        "the entry's retry is due (its backoff passed) and no owner is live",
        "the entry's next retry moved forward, so one sweep queues it once",
    ),
    Rule(
        Transition.RENEW,
        frozenset({State.IN_PROGRESS}),
        frozenset(),
        frozenset({Actor.REAPER}),
        "the owner's check is due: its execution runs, or was never started and is started now",
        "the next check moved (and the lease, for an execution started late)",
    ),
    Rule(
        Transition.PAGE_SENT,
        frozenset({State.ESCALATED}),
        frozenset(),
        frozenset({Actor.ESCALATE_TASK, Actor.BULK_WORKER, Actor.API_RESYNC, Actor.SWEEP, Actor.REAPER}),
        "the help desk accepted the page of this episode",
        "the page no longer due",
    ),
    Rule(
        Transition.LIST_ERROR,
        frozenset({State.NEVER_SEEN}),
        frozenset({State.PENDING, State.NOT_REFLECTABLE}),
        frozenset({Actor.PLATFORM}),
        "the platform's own import of the sale failed (not_reflectable: for a reason the seller must fix)",
        "the entry opened",
    ),
    Rule(
        Transition.FOLLOW_CART,
        frozenset({State.PENDING, State.IN_PROGRESS, State.NOT_REFLECTABLE, State.ESCALATED}),
        frozenset({State.REFLECTED, State.NOT_REFLECTABLE, State.ESCALATED}),
        frozenset(
            {Actor.API_RESYNC, Actor.BULK_WORKER, Actor.VERIFY_TASK, Actor.RELINK_TASK, Actor.RESYNC_TASK},
        ),
        "the sale is part of a cart whose row (keyed by its pack id) is settled; in progress: only its owner",
        "the row takes the cart's outcome and names the pack (no record of its own: the cart's is the one); the "
        "entry removed (a cart's is keyed by its pack); every waiting job's item settled; the owner's lease "
        "released; a new episode if settled",
    ),
)

TABLE: dict[Transition, Rule] = {rule.transition: rule for rule in RULES}

# Who may start a new episode of a settled sale (a rerun): the requests of people and schedules. A task, the
# escalation and the reaper only ever finish the episode their execution owns.
RERUNNERS = frozenset({Actor.API_RELINK, Actor.API_RESYNC, Actor.BULK_WORKER, Actor.VERIFY_TASK, Actor.SWEEP})


def _states(states: frozenset[State]) -> str:
    return ", ".join(state.value for state in State if state in states)


def render_markdown() -> str:
    """The table as the README shows it (a test compares the two)."""
    lines = [
        "| transition | from | to | who may | only when | in the same write |",
        "|---|---|---|---|---|---|",
    ]
    for rule in RULES:
        target = _states(rule.targets) if rule.targets else "(unchanged)"
        actors = ", ".join(actor.value for actor in Actor if actor in rule.actors)
        lines.append(
            f"| `{rule.transition.value}` | {_states(rule.sources)} | {target} | {actors} | {rule.guard} | "
            f"{rule.moves} |"
        )
    rerunners = ", ".join(actor.value for actor in Actor if actor in RERUNNERS)
    lines += ["", f"A write may start a new episode of a settled sale (a rerun) only if it comes from: {rerunners}."]
    return "\n".join(lines)
