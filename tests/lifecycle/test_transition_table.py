"""The README's transition table is the code's: the lifecycle refuses any write that is not a row of
``shared.lifecycle.table``, and the README must show exactly that table."""

from __future__ import annotations

import re
from pathlib import Path

from shared.lifecycle.table import RULES, SETTLED, TABLE, Actor, State, Transition, render_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_shows_the_code_s_transition_table() -> None:
    text = README.read_text()
    assert render_markdown() in text, "README's Sale lifecycle table differs from shared/lifecycle/table.py"


def _readme_rows() -> dict[str, list[str]]:
    table = render_markdown().splitlines()[0]
    text = README.read_text()
    start = text.index(table)
    rows = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("| `"):
            break
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        rows[cells[0].strip("`")] = cells
    return rows


def test_every_readme_row_reads_back_as_the_rule() -> None:
    """Parsed cell by cell: the same transitions, from-states, to-states and actors as the rules in code."""
    rows = _readme_rows()
    assert set(rows) == {t.value for t in Transition}
    for transition, cells in rows.items():
        rule = TABLE[Transition(transition)]
        assert {State(s) for s in cells[1].split(", ")} == rule.sources
        targets = set() if cells[2] == "(unchanged)" else {State(s) for s in cells[2].split(", ")}
        assert targets == rule.targets
        assert {Actor(a) for a in cells[3].split(", ")} == rule.actors


def test_the_table_keeps_the_promises() -> None:
    """What the design promises, read off the table: nothing leaves reflected; only claim puts a sale in progress;
    the ones that settle in progress do it through reflect, block or escalate, or (a cart's sale) by taking its settled
    cart's outcome (follow_cart); escalation only by its owner's side
    (the escalate task, the reaper), the sweep, a person's resync or the worker; nothing else writes a page."""
    for rule in RULES:
        assert State.REFLECTED not in rule.sources, rule.transition
        if State.IN_PROGRESS in rule.targets and State.IN_PROGRESS not in rule.sources:
            assert rule.transition is Transition.CLAIM
    settles = {r.transition for r in RULES if r.targets & SETTLED and State.IN_PROGRESS in r.sources}
    assert settles == {Transition.REFLECT, Transition.BLOCK, Transition.ESCALATE, Transition.FOLLOW_CART}
    assert TABLE[Transition.ESCALATE].actors == {
        Actor.ESCALATE_TASK,
        Actor.REAPER,
        Actor.SWEEP,
        Actor.API_RESYNC,
        Actor.BULK_WORKER,
    }
    assert not re.search(
        r"page", " ".join(r.moves for r in RULES if r.transition not in {Transition.ESCALATE, Transition.PAGE_SENT})
    )
