"""`python -m devstack run|serve --scenario PATH`: the embedded default (DESIGN §4) on one machine.

run    starts the stack, reprocesses the scenario's failing sales through the REST API, prints the result.
serve  starts the stack and keeps the REST API (and the console at /console) up on http://127.0.0.1:PORT until Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from pathlib import Path

from rich.console import Console

DEFAULT_SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "default.json"


def _quiet() -> None:
    # Lambda-style JSON logs and EMF metrics are for CloudWatch; locally the table is the output.
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "1")
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "sales-recovery")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")  # the shared Logger is built at import
    warnings.filterwarnings("ignore")
    logging.getLogger().setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "serve"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--scenario", type=Path, default=DEFAULT_SCENARIO, help="scenario file (DESIGN §4)")
        cmd.add_argument("--relink-wait", type=int, default=1, help="seconds between relink attempts")
    sub.choices["serve"].add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)

    _quiet()
    console = Console()
    if not console.is_terminal:  # piped or CI: a wide table beats a folded one
        console = Console(width=150)
    from devstack.simulator.scenario import ScenarioError, load_scenario

    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        console.print(f"[red]Scenario {args.scenario}: {exc}[/]")
        return 2

    from devstack.stack import EmbeddedStack

    port = args.port if args.command == "serve" else 0
    started = time.monotonic()
    with console.status("starting the simulated Mercado Libre and the stack of template.yaml on moto..."):
        stack = EmbeddedStack(
            scenario,
            relink_wait_seconds=args.relink_wait,
            meli_timeout_seconds=1.0,
            api_port=port,
            log_level="ERROR" if args.command == "run" else "INFO",
            notifications=True,  # ML's notifications reach the callback; the scenario's new_orders appear
        ).start()
    try:
        assert stack.api is not None
        console.print(
            f"Stack up in {time.monotonic() - started:.1f}s. Mercado Libre (simulated): {stack.meli.url}  "
            f"REST API: {stack.api.url}  scenario: {args.scenario}"
        )
        if args.command == "serve":
            return _serve(stack.api.url, console)
        from devstack.main_job import failing_sales, render, run_job

        sales = failing_sales(scenario)
        console.print(f"Reprocessing {len(sales)} failing sales as bulk jobs through the REST API.")
        report = run_job(stack.api.url, sales, console=console)
        render(
            report,
            console,
            help_desk_pages=len(stack.help_desk_messages()),
            meli_requests=stack.meli.count(),
        )
        from devstack.main_job import TERMINAL
        from devstack.notifications_demo import show_notified_sales
        from devstack.schedules_demo import reconcile_unnotified_sale

        notified = show_notified_sales(stack, console)
        reconciled = reconcile_unnotified_sale(stack, console)
        return 0 if notified and reconciled and all(row.outcome in TERMINAL for row in report.rows) else 1
    finally:
        stack.stop()


def _serve(url: str, console: Console) -> int:
    console.print(
        "Try:\n"
        f"  curl {url}/connections/mla-main/sales/2000009101000011/verification\n"
        f"  curl -X POST {url}/connections/mla-main/sales/2000009101000011/relink\n"
        f"  curl {url}/connections/mla-main/sales/2000009101000011\n"
        f"  curl '{url}/connections/mla-main/sale-errors?limit=10'\n"
        f"  curl -X POST -H 'Content-Type: application/json' {url}/connections/mla-main/reprocessing-jobs "
        """-d '{"sale_ids": "2000009101000021, 2000009101000031"}'\n"""
        f"  open {url}/docs for the API page\n"
        f"  open {url}/console/ for the recovery console (support staff's screens)\n"
        f"  curl -X POST -H 'Content-Type: application/json' {url}/notifications/mercadolibre -d "
        + "'"
        + '{"_id": "a1", "resource": "/orders/2000009101000021", "user_id": 123456789, "topic": "orders_v2", '
        + '"application_id": 5503910054141466, "attempts": 1}'
        + "'   # as ML notifies a sale\n"
        "Ctrl-C stops."
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.print("stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
