"""The pause point of the sale lifecycle: called right before every write of per-sale state, and before the side
effects that follow one (starting a claimed execution, paging the help desk).

In production nothing is registered and the call costs one attribute read. A test registers a hook to choose the
order in which concurrent writers land (tests/model): the hook may block the calling thread until the test lets it
go on, or raise to simulate a process that dies right before this write (a crash after the previous one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class PendingWrite:
    """What is about to be written: the transition (a row of the README's transition table) and the sale."""

    transition: str
    connection_id: str
    sale_id: str


Hook = Callable[[PendingWrite], None]
_hook: Hook | None = None


def set_hook(hook: Hook | None) -> None:
    """Register (or, with None, remove) the process-wide pause hook."""
    global _hook
    _hook = hook


def before_write(transition: str, connection_id: str, sale_id: str) -> None:
    hook = _hook
    if hook is not None:
        hook(PendingWrite(transition, connection_id, sale_id))
