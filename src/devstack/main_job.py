"""The main job (`make run`): reprocess the scenario's failing sales end to end, over the REST API.

It talks HTTP to the API like any client (so it can target a deployed stack's URL as well), starts a relink per
sale (the state machine resyncs the listed ones, relinks the rest, escalates what still fails), follows each
sale to its terminal outcome with a progress bar, and prints a per-sale table and a summary.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from devstack.simulator.scenario import Scenario

TERMINAL = {"reflected", "already_reflected", "not_reflectable", "escalated"}
STYLE = {"reflected": "green", "already_reflected": "cyan", "not_reflectable": "yellow", "escalated": "red"}


@dataclass
class SaleRow:
    connection_id: str
    sale_id: str
    outcome: str = "pending"
    reason: str | None = None
    attempts: int | None = None
    detail: str | None = None


@dataclass
class JobReport:
    rows: list[SaleRow]
    seconds: float
    counts: Counter[str] = field(default_factory=Counter)


def failing_sales(scenario: Scenario) -> list[tuple[str, str]]:
    """Every scenario sale the platform does not have: orders not reflected, plus the listed errors."""
    reflected = {(r.connection_id, r.sale_id) for r in scenario.reflected_sales}
    sellers = {c.seller_id: c.connection_id for c in scenario.connections}
    wanted: set[tuple[str, str]] = {(e.connection_id, e.sale_id) for e in scenario.sale_errors}
    for order in scenario.orders:
        connection = sellers.get(int(order["seller"]["id"]))
        if connection is not None:
            wanted.add((connection, str(order["id"])))
    return sorted(wanted - reflected)


def run_job(
    api_url: str,
    sales: Iterable[tuple[str, str]],
    *,
    console: Console | None = None,
    timeout_seconds: float = 300.0,
    http: httpx.Client | None = None,
) -> JobReport:
    console = console or Console()
    rows = [SaleRow(connection_id=c, sale_id=s) for c, s in sales]
    client = http or httpx.Client(base_url=api_url, timeout=30.0)
    started = time.monotonic()
    with Progress(
        TextColumn("[bold]reprocessing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[summary]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("sales", total=len(rows), summary="")
        for row in rows:
            _start(client, row)
        pending = [row for row in rows if row.outcome not in TERMINAL]
        progress.update(task, completed=len(rows) - len(pending), summary=_summary(rows))
        deadline = time.monotonic() + timeout_seconds
        while pending and time.monotonic() < deadline:
            time.sleep(0.2)
            for row in list(pending):
                _poll(client, row)
                if row.outcome in TERMINAL:
                    pending.remove(row)
            progress.update(task, completed=len(rows) - len(pending), summary=_summary(rows))
    if http is None:
        client.close()
    return JobReport(rows=rows, seconds=time.monotonic() - started, counts=Counter(r.outcome for r in rows))


def _start(client: httpx.Client, row: SaleRow) -> None:
    response = client.post(f"/connections/{row.connection_id}/sales/{row.sale_id}/relink")
    body: dict[str, Any] = response.json()
    if response.status_code in (200, 202):
        row.outcome = body.get("outcome", "in_progress")
    else:  # a 4xx says why (for example an identifier that is not a sale id)
        row.outcome = body.get("outcome", "not_reflectable")
        row.reason = body.get("reason") or body.get("error")
        row.detail = body.get("message")


def _poll(client: httpx.Client, row: SaleRow) -> None:
    response = client.get(f"/connections/{row.connection_id}/sales/{row.sale_id}")
    if response.status_code != 200:
        return
    body = response.json()
    row.outcome = body["outcome"]
    row.reason = body.get("reason")
    row.attempts = body.get("attempts")
    row.detail = body.get("seller_action") or body.get("detail")


def _summary(rows: list[SaleRow]) -> str:
    counts = Counter(r.outcome for r in rows if r.outcome in TERMINAL)
    return "  ".join(f"[{STYLE[o]}]{o} {n}[/]" for o, n in sorted(counts.items()))


def render(report: JobReport, console: Console, *, help_desk_pages: int, meli_requests: int) -> None:
    table = Table(title="Sales reprocessed", show_lines=False)
    for column in ("connection", "sale id", "outcome", "reason", "attempts", "what to do"):
        table.add_column(column, overflow="fold")
    for row in report.rows:
        style = STYLE.get(row.outcome, "")
        table.add_row(
            row.connection_id,
            row.sale_id,
            f"[{style}]{row.outcome}[/]" if style else row.outcome,
            row.reason or "",
            "" if row.attempts is None else str(row.attempts),
            row.detail or "" if row.outcome != "reflected" else "",
        )
    console.print(table)
    unsettled = sum(1 for r in report.rows if r.outcome not in TERMINAL)
    parts = [f"{n} {o}" for o, n in sorted(report.counts.items())]
    console.print(
        f"[bold]{len(report.rows)} sales[/] in {report.seconds:.1f}s: {', '.join(parts)}. "
        f"Help-desk pages: {help_desk_pages}. Mercado Libre requests: {meli_requests}."
        + (f" [red]{unsettled} sale(s) did not settle.[/]" if unsettled else "")
    )
