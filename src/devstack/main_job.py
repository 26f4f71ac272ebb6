"""The main job (`make run`): reprocess the scenario's failing sales end to end, over the REST API.

It talks HTTP to the API like any client (so it can target a deployed stack's URL as well): it submits the
failing sales of each connection as one bulk reprocessing job (`POST .../reprocessing-jobs`; the API splits them
into 50-id SQS messages, the worker resyncs the listed ones and relinks the rest, the relink state machine takes
over what fails transiently and escalates what still fails), follows each job with a progress bar until every
id is terminal, and prints a per-sale table and a summary.
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
    by_connection: dict[str, list[str]] = {}
    for connection_id, sale_id in sales:
        by_connection.setdefault(connection_id, []).append(sale_id)
    client = http or httpx.Client(base_url=api_url, timeout=30.0)
    started = time.monotonic()
    rows: dict[tuple[str, str], SaleRow] = {}
    jobs: dict[str, str] = {}
    for connection_id, sale_ids in by_connection.items():
        response = client.post(f"/connections/{connection_id}/reprocessing-jobs", json={"sale_ids": sale_ids})
        body: dict[str, Any] = response.json()
        if response.status_code != 202:
            raise RuntimeError(f"{connection_id}: the job was refused: {body}")
        jobs[connection_id] = body["job_id"]
        console.print(
            f"{connection_id}: job {body['job_id']} accepted {body['accepted']} ids "
            f"in {body['messages']} message(s) of at most 50; rejected {len(body['rejected'])}."
        )
        for sale_id in sale_ids:
            rows[(connection_id, sale_id)] = SaleRow(connection_id=connection_id, sale_id=sale_id)
    with Progress(
        TextColumn("[bold]reprocessing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[summary]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("sales", total=len(rows), summary="")
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            done = all(_poll_job(client, connection_id, job_id, rows) for connection_id, job_id in jobs.items())
            settled = [r for r in rows.values() if r.outcome in TERMINAL]
            progress.update(task, completed=len(settled), summary=_summary(list(rows.values())))
            if done:
                break
            time.sleep(0.25)
    if http is None:
        client.close()
    ordered = sorted(rows.values(), key=lambda r: (r.connection_id, r.sale_id))
    return JobReport(rows=ordered, seconds=time.monotonic() - started, counts=Counter(r.outcome for r in ordered))


def _poll_job(client: httpx.Client, connection_id: str, job_id: str, rows: dict[tuple[str, str], SaleRow]) -> bool:
    """Refresh the rows of one job from its items (every page); True once the job is completed."""
    cursor: str | None = None
    status = "pending"
    while True:
        params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
        body = client.get(f"/connections/{connection_id}/reprocessing-jobs/{job_id}", params=params).json()
        status = body["status"]
        for item in body["items"]:
            row = rows[(connection_id, item["sale_id"])]
            row.outcome = item["outcome"]
            row.reason = item.get("reason")
            row.attempts = item.get("attempts")
            row.detail = item.get("detail")
        cursor = body.get("next_cursor")
        if not cursor:
            return bool(status == "completed")


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
