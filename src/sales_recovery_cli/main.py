"""sales-recovery: the operators' command line for the REST API (DESIGN §3), local (make serve) or deployed.

Exit codes: 0 ok; 1 the sale, cart or job ended not ok or is blocked (not_reflectable, escalated, next action
"blocked", still running at --timeout); 2 bad usage or a 4xx answer (unknown connection, not a sale id, not a
cart's pack, a sale or pack never seen, not in the error list...); 3 the service is unavailable (5xx, 429,
network, time-out). Messages go to stderr; with --json, stdout carries the API's answer as JSON and nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sales_recovery_cli.auth import is_loopback
from sales_recovery_cli.client import NOT_OK, OK, USAGE, ApiClient, CliError

DEFAULT_API_URL = "http://127.0.0.1:3000"
CONNECTION_ENV = "SALES_RECOVERY_CONNECTION"
API_URL_ENV = "SALES_RECOVERY_API_URL"
TERMINAL = {"reflected", "already_reflected", "not_reflectable", "escalated"}
GOOD = {"reflected", "already_reflected"}
STYLE = {"reflected": "green", "already_reflected": "cyan", "not_reflectable": "yellow", "escalated": "red"}
_SPLIT = re.compile(r"[\s,;]+")


class Cli:
    def __init__(self, args: argparse.Namespace, out: Console, err: Console) -> None:
        self.args = args
        self.out = out
        self.err = err

    # --- helpers ---------------------------------------------------------------------------------------------------

    @property
    def connection(self) -> str:
        connection = (self.args.connection or "").strip()
        if not connection:
            raise CliError(f"No connection: pass --connection ID or set {CONNECTION_ENV}.", code=USAGE)
        return connection

    def sale_path(self, sale_id: str, suffix: str = "") -> str:
        return f"/connections/{self.connection}/sales/{sale_id.strip()}{suffix}"

    def pack_path(self, pack_id: str, suffix: str = "") -> str:
        return f"/connections/{self.connection}/packs/{pack_id.strip()}{suffix}"

    def emit_json(self, body: Any) -> None:
        sys.stdout.write(json.dumps(body, indent=2, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def note(self, text: str) -> None:
        self.err.print(text, highlight=False, soft_wrap=True)

    def client(self) -> ApiClient:
        return ApiClient(self.args.api_url, region=self.args.region, timeout=self.args.http_timeout)

    # --- commands --------------------------------------------------------------------------------------------------

    def verify(self, api: ApiClient) -> int:
        report = api.request("GET", self.sale_path(self.args.sale_id, "/verification")).body
        if self.args.json:
            self.emit_json(report)
        else:
            table = Table(title=f"Sale {report['sale_id']} in {report['connection_id']}", show_header=True)
            for column in ("check", "ok", "detail"):
                table.add_column(column, overflow="fold")
            for check in report.get("checks", []):
                table.add_row(check["name"], "[green]yes[/]" if check["ok"] else "[red]no[/]", check["detail"])
            self.out.print(table)
            self.out.print(
                f"reflected: {report['reflected']}  in error list: {report['in_error_list']}  "
                f"next action: [bold]{report['next_action']}[/]"
                + (f"  reason: {report['reason']}" if report.get("reason") else "")
            )
            if report.get("seller_action"):
                self.out.print(f"what to do: {report['seller_action']}")
            if report.get("cart"):
                self._render_cart_checks(report["cart"])
        return NOT_OK if report.get("next_action") == "blocked" else OK

    def resync(self, api: ApiClient) -> int:
        result = api.request("POST", self.sale_path(self.args.sale_id, "/resync")).body
        return self._outcome(result)

    def relink(self, api: ApiClient) -> int:
        answer = api.request("POST", self.sale_path(self.args.sale_id, "/relink"))
        body = answer.body
        if answer.status == 200 and body.get("outcome") not in GOOD:
            return self._outcome(body)  # settled with nothing started (the connection must be reconnected first)
        if answer.status == 200 or not self.args.wait:
            if self.args.json:
                self.emit_json(body)
            elif answer.status == 200:
                self.out.print(f"{body['sale_id']}: [cyan]{body['outcome']}[/] (nothing to do)")
            else:
                self.out.print(
                    f"{body['sale_id']}: relink started, execution {body.get('execution_name', '')}; "
                    f"follow it with: sales-recovery status {body['sale_id']}"
                )
                if body.get("pack_id"):
                    self.out.print(
                        f"the sale is part of cart {body['pack_id']} ({', '.join(body.get('sale_ids') or [])}): "
                        f"the whole cart is relinked; sales-recovery pack-status {body['pack_id']}"
                    )
            return OK
        self.note(f"relink started ({body.get('execution_name', '')}); waiting for the outcome...")
        deadline = time.monotonic() + self.args.timeout
        while True:
            state = api.request("GET", self.sale_path(self.args.sale_id)).body
            if state.get("outcome") in TERMINAL:
                return self._outcome(state)
            if time.monotonic() > deadline:
                if self.args.json:
                    self.emit_json(state)
                self.note(f"still {state.get('outcome')} after {self.args.timeout:g}s; check again later.")
                return NOT_OK
            time.sleep(self.args.poll)

    def status(self, api: ApiClient) -> int:
        state = api.request("GET", self.sale_path(self.args.sale_id)).body
        if state.get("outcome") in TERMINAL:
            return self._outcome(state)
        if self.args.json:
            self.emit_json(state)
        else:
            self.out.print(f"{state['sale_id']}: {state['outcome']}")
            self._cart_of_sale(state)
        return OK

    def pack_status(self, api: ApiClient) -> int:
        state = api.request("GET", self.pack_path(self.args.pack_id)).body
        return self._pack_outcome(state)

    def pack_relink(self, api: ApiClient) -> int:
        answer = api.request("POST", self.pack_path(self.args.pack_id, "/relink"))
        body = answer.body
        if answer.status == 200:  # nothing started: already in the platform, or the connection must be reconnected
            return self._pack_outcome(body)
        if not self.args.wait:
            if self.args.json:
                self.emit_json(body)
            else:
                self.out.print(
                    f"cart {body['pack_id']} ({', '.join(body.get('sale_ids') or [])}): relink started, execution "
                    f"{body.get('execution_name', '')}\nfollow it with: sales-recovery pack-status {body['pack_id']}"
                )
            return OK
        self.note(f"cart relink started ({body.get('execution_name', '')}); waiting for the outcome...")
        deadline = time.monotonic() + self.args.timeout
        while True:
            state = api.request("GET", self.pack_path(self.args.pack_id)).body
            if state.get("outcome") in TERMINAL:
                return self._pack_outcome(state)
            if time.monotonic() > deadline:
                if self.args.json:
                    self.emit_json(state)
                self.note(f"cart still {state.get('outcome')} after {self.args.timeout:g}s; check again later.")
                return NOT_OK
            time.sleep(self.args.poll)

    def bulk(self, api: ApiClient) -> int:
        ids = self._read_ids()
        if not ids:
            raise CliError("No sale ids: give them as arguments, with --file PATH, or on stdin.", code=USAGE)
        answer = api.request(
            "POST", f"/connections/{self.connection}/reprocessing-jobs", json_body={"sale_ids": ids}
        ).body
        for rejected in answer.get("rejected", []):
            self.note(f"rejected {rejected['sale_id']}: {rejected['reason']} - {rejected.get('message', '')}")
        if not self.args.wait:
            if self.args.json:
                self.emit_json(answer)
            else:
                self.out.print(
                    f"job {answer['job_id']}: accepted {answer['accepted']} id(s) in {answer['messages']} "
                    f"message(s), rejected {len(answer.get('rejected', []))}, duplicates {answer.get('duplicates', 0)}."
                    f"\nfollow it with: sales-recovery job {answer['job_id']}"
                )
            return OK
        code = self._follow_job(api, answer["job_id"], submitted=answer)
        return code if code != OK or not answer.get("rejected") else NOT_OK

    def job(self, api: ApiClient) -> int:
        if not self.args.wait:
            view = self._job_view(api, self.args.job_id)
            if self.args.json:
                self.emit_json(view)
            else:
                self._render_job(view)
            return OK
        return self._follow_job(api, self.args.job_id)

    def errors(self, api: ApiClient) -> int:
        params = {"limit": str(self.args.limit)}
        if self.args.type:
            params["error_type"] = self.args.type
        if self.args.cursor:
            params["cursor"] = self.args.cursor
        items: list[dict[str, Any]] = []
        next_cursor: str | None = None
        while True:
            page = api.request("GET", f"/connections/{self.connection}/sale-errors", params=params).body
            items.extend(page.get("items", []))
            next_cursor = page.get("next_cursor")
            if not (self.args.all and next_cursor):
                break
            params["cursor"] = next_cursor
        if self.args.json:
            self.emit_json(
                {
                    "connection_id": self.connection,
                    "error_type": self.args.type,
                    "count": len(items),
                    "items": items,
                    "next_cursor": next_cursor,
                }
            )
            return OK
        table = Table(
            title=f"Sales with errors in {self.connection}" + (f" ({self.args.type})" if self.args.type else "")
        )
        for column in ("sale id", "error type", "retryable", "attempts", "escalated", "last seen", "message"):
            table.add_column(column, overflow="fold")
        for item in items:
            table.add_row(
                item["sale_id"],
                item["error_type"],
                "yes" if item.get("retryable") else "no",
                str(item.get("attempts", 0)),
                "[red]yes[/]" if item.get("escalated") else "no",
                str(item.get("last_seen", ""))[:19],
                item.get("message", ""),
            )
        self.out.print(table)
        self.out.print(f"{len(items)} sale(s).")
        if next_cursor:
            self.note(f"more: sales-recovery errors --cursor {next_cursor}   (or --all)")
        return OK

    def console(self, api: ApiClient) -> int:
        from sales_recovery_cli.forwarder import ConsoleForwarder, NotLoopback

        offered = [*self.args.offer, *([self.args.connection] if self.args.connection else [])]
        try:
            forwarder = ConsoleForwarder(api, host=self.args.host, port=self.args.port, connections=offered)
        except NotLoopback as exc:
            raise CliError(str(exc), code=USAGE) from exc
        except OSError as exc:
            raise CliError(f"Cannot listen on {self.args.host}:{self.args.port}: {exc.strerror}.", code=USAGE) from exc
        signed = "unsigned (a loopback API)" if is_loopback(api.api_url) else "signed with your AWS credentials (SigV4)"
        self.note(f"Console: {forwarder.url}\nAPI calls go to {api.api_url}, {signed}. Ctrl-C stops.")
        try:
            forwarder.serve_forever()
        finally:
            forwarder.stop()
        return OK

    # --- shared pieces ---------------------------------------------------------------------------------------------

    def hint(self, body: Any) -> str | None:
        """The CLI command for what a 4xx answer says to do (the API's messages name its routes)."""
        if not isinstance(body, dict):
            return None
        error, ids = body.get("error"), body.get("sale_ids") or []
        if error == "pack_not_seen" and getattr(self.args, "pack_id", None):
            return f"relink the cart with: sales-recovery pack-relink {self.args.pack_id.strip()}"
        if error == "not_a_cart" and ids:  # a single sale's pack, or a sale id: relink its sales as sales
            return f"relink it as a sale with: sales-recovery {'relink' if len(ids) == 1 else 'bulk'} {','.join(ids)}"
        return None

    def _outcome(self, result: dict[str, Any]) -> int:
        outcome = result.get("outcome", "")
        if self.args.json:
            self.emit_json(result)
        else:
            style = STYLE.get(outcome, "")
            line = (
                f"{result.get('sale_id', '')}: [{style}]{outcome}[/]"
                if style
                else f"{result.get('sale_id')}: {outcome}"
            )
            if result.get("reason"):
                line += f" ({result['reason']})"
            self.out.print(line)
            self._cart_of_sale(result)
            action = result.get("seller_action") or (result.get("detail") if outcome not in GOOD else None)
            if action:
                self.out.print(f"what to do: {action}")
        return OK if outcome in GOOD else NOT_OK

    def _cart_of_sale(self, state: dict[str, Any]) -> None:
        """A cart's sale answers the cart's outcome: name the cart, the sale that blocks it, the cart's commands."""
        pack_id = state.get("pack_id")
        if not pack_id:
            return
        blocking = state.get("blocking_sale_id")
        self.out.print(
            f"part of cart {pack_id} ({', '.join(state.get('sale_ids') or [])}), reprocessed whole"
            + (f"; blocked by sale {blocking}" if blocking else "")
            + f"\nthe cart: sales-recovery pack-status {pack_id}   sales-recovery pack-relink {pack_id}"
        )

    def _pack_outcome(self, state: dict[str, Any]) -> int:
        """A cart's answer (GET or POST .../packs/{p}); the exit code by its outcome, as a sale's. ``sale_id`` of a
        cart's answer is the sale that blocks it, never the cart's subject."""
        outcome = state.get("outcome", "")
        code = NOT_OK if outcome in TERMINAL - GOOD else OK  # in progress: as a sale's status, 0
        if self.args.json:
            self.emit_json(state)
            return code
        style = STYLE.get(outcome)
        line = f"cart {state.get('pack_id', '')} in {state.get('connection_id', '')}: " + (
            f"[{style}]{outcome}[/]" if style else outcome
        )
        if state.get("reason"):
            line += f" ({state['reason']})"
        self.out.print(line)
        blocking = state.get("sale_id")
        table = Table()
        table.add_column("sale id")
        table.add_column("note", overflow="fold")
        for sale_id in state.get("sale_ids") or []:
            table.add_row(sale_id, f"[red]blocks the cart[/] ({state.get('reason')})" if sale_id == blocking else "")
        self.out.print(table)
        if blocking:
            self.out.print(f"blocked by sale {blocking}: sales-recovery verify {blocking}")
        record = state.get("record")
        if record:
            total = record.get("total_amount")
            self.out.print(
                f"record: one sale of the platform keyed by the pack, {len(record.get('sale_ids') or [])} order(s)"
                + (f", total {total:g} {record.get('currency_id') or ''}".rstrip() if total is not None else "")
                + (f", shipment {record['shipment_id']}" if record.get("shipment_id") else "")
            )
        execution = state.get("latest_execution")
        if execution:
            self.out.print(
                f"attempts: {state.get('attempts', 0)}  episode: {state.get('episode', 0)}  "
                f"execution: {execution.get('name', '')} ({execution.get('status', '')})"
            )
        entry = state.get("error_entry")
        if entry:
            self.out.print(f"in the error list as {entry['sale_id']}: {entry['error_type']}")
        action = state.get("seller_action") or (state.get("detail") if outcome in TERMINAL - GOOD else None)
        if action:
            self.out.print(f"what to do: {action}")
        return code

    def _render_cart_checks(self, cart: dict[str, Any]) -> None:
        """A verification's cart: each of this seller's orders checked, the one that blocks it, and the orders ML
        lists in the pack that are another seller's (left out of this seller's cart)."""
        blocking = cart.get("blocking_sale_id")
        self.out.print(f"cart {cart['pack_id']}, pack status {cart.get('status') or 'unknown'}; its sales:")
        table = Table()
        for column in ("sale id", "ok", "reason"):
            table.add_column(column, overflow="fold")
        for order in cart.get("orders", []):
            ok = all(check["ok"] for check in order.get("checks", [])) and not order.get("reason")
            reason = order.get("reason") or ""
            if order["sale_id"] == blocking:
                reason = f"{reason} [red](blocks the cart)[/]".strip()
            table.add_row(order["sale_id"], "[green]yes[/]" if ok else "[red]no[/]", reason)
        self.out.print(table)
        others = cart.get("other_sellers_sale_ids") or []
        if others:
            self.out.print(f"other sellers' sales in the pack (left out): {', '.join(others)}")

    def _read_ids(self) -> list[str]:
        chunks = list(self.args.sale_ids)
        if self.args.file:
            try:
                chunks.append(Path(self.args.file).read_text())
            except OSError as exc:
                raise CliError(f"Cannot read {self.args.file}: {exc.strerror}.", code=USAGE) from exc
        if not chunks and not sys.stdin.isatty():
            chunks.append(sys.stdin.read())
        return [s for chunk in chunks for s in _SPLIT.split(chunk) if s]

    def _job_view(self, api: ApiClient, job_id: str, *, all_items: bool = True) -> dict[str, Any]:
        """The job with every item (all pages); ``all_items=False``: the header and counts only (cheap, for polling)."""
        path = f"/connections/{self.connection}/reprocessing-jobs/{job_id}"
        view: dict[str, Any] = api.request("GET", path, params={"limit": "1000" if all_items else "1"}).body
        if not all_items:
            return view
        items = list(view.get("items", []))
        cursor = view.get("next_cursor")
        while cursor:
            page = api.request("GET", path, params={"limit": "1000", "cursor": cursor}).body
            items.extend(page.get("items", []))
            cursor = page.get("next_cursor")
        view["items"], view["next_cursor"] = items, None
        return view

    def _follow_job(self, api: ApiClient, job_id: str, submitted: dict[str, Any] | None = None) -> int:
        deadline = time.monotonic() + self.args.timeout
        view = self._job_view(api, job_id, all_items=False)
        total = int(view.get("accepted", 0))
        show_bar = not self.args.json
        with Progress(
            TextColumn(f"[bold]job {job_id[:8]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[summary]}"),
            TimeElapsedColumn(),
            console=self.err,
            disable=not show_bar,
        ) as progress:
            task = progress.add_task("job", total=total, summary="")
            while True:
                counts: dict[str, int] = view.get("counts", {})
                settled = sum(n for o, n in counts.items() if o in TERMINAL)
                summary = "  ".join(f"[{STYLE[o]}]{o} {counts[o]}[/]" for o in sorted(TERMINAL) if counts.get(o))
                progress.update(task, completed=settled, summary=summary)
                if view.get("status") == "completed" or time.monotonic() > deadline:
                    break
                time.sleep(self.args.poll)
                view = self._job_view(api, job_id, all_items=False)
        view = self._job_view(api, job_id)  # every item, once, at the end
        if submitted is not None:
            view["rejected"] = submitted.get("rejected", [])
        if self.args.json:
            self.emit_json(view)
        else:
            self._render_job(view)
        if view.get("status") != "completed":
            self.note(f"job {job_id} still {view.get('status')} after {self.args.timeout:g}s; check again later.")
            return NOT_OK
        outcomes = Counter(item.get("outcome") for item in view.get("items", []))
        return OK if set(outcomes) <= GOOD else NOT_OK

    def _render_job(self, view: dict[str, Any]) -> None:
        table = Table(title=f"Job {view['job_id']} ({view['status']})")
        for column in ("sale id", "outcome", "reason", "attempts", "detail"):
            table.add_column(column, overflow="fold")
        for item in view.get("items", []):
            outcome = item.get("outcome", "")
            style = STYLE.get(outcome)
            table.add_row(
                item["sale_id"],
                f"[{style}]{outcome}[/]" if style else outcome,
                item.get("reason") or "",
                str(item.get("attempts", "")),
                item.get("detail") or "" if outcome not in GOOD else "",
            )
        self.out.print(table)
        counts = {o: n for o, n in view.get("counts", {}).items() if n}
        self.out.print(
            f"{view['status']}: " + ", ".join(f"{n} {o}" for o, n in sorted(counts.items())) + f" of {view['accepted']}"
        )


def _common_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Options valid before or after the command (``sales-recovery --json verify X`` = ``verify X --json``)."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("global options")
    group.add_argument(
        "--connection",
        "-c",
        default=default(os.environ.get(CONNECTION_ENV)),
        help=f"connection id (default: ${CONNECTION_ENV})",
    )
    group.add_argument(
        "--api-url",
        default=default(os.environ.get(API_URL_ENV) or DEFAULT_API_URL),
        help=f"the API's base URL (default: ${API_URL_ENV} or {DEFAULT_API_URL}, the local stack of make serve); "
        "requests to a non-loopback URL are signed with SigV4",
    )
    group.add_argument("--region", default=default(None), help="AWS region for signing (default: from the URL)")
    group.add_argument("--json", action="store_true", default=default(False), help="machine output on stdout")
    group.add_argument(
        "--http-timeout", type=float, default=default(30.0), help="seconds per HTTP request (default 30)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sales-recovery",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        _common_options(cmd, suppress=True)
        return cmd

    def waiting(cmd: argparse.ArgumentParser, default_timeout: float) -> None:
        cmd.add_argument(
            "--timeout", type=float, default=default_timeout, help=f"seconds to wait (default {default_timeout:g})"
        )
        cmd.add_argument("--poll", type=float, default=1.0, help="seconds between polls (default 1)")

    cmd = command("verify", "the help article's checks for one sale (read-only)")
    cmd.add_argument("sale_id")
    cmd = command("resync", "resync a sale from the error list")
    cmd.add_argument("sale_id")
    cmd = command("relink", "relink a sale by id (the state machine: up to three attempts, then escalation)")
    cmd.add_argument("sale_id")
    cmd.add_argument("--wait", action="store_true", help="wait until the sale's outcome is terminal")
    waiting(cmd, 300)
    cmd = command("status", "where one sale stands (a cart's sale: the cart's outcome, and its pack)")
    cmd.add_argument("sale_id")
    cmd = command("pack-status", "where a cart stands: its outcome, its sales, the sale that blocks it")
    cmd.add_argument("pack_id", help="the cart's pack id (a sale's status names it)")
    cmd = command(
        "pack-relink", "relink a cart whole by its pack id (one execution for all its sales, one record if it passes)"
    )
    cmd.add_argument("pack_id", help="the cart's pack id (a sale's status names it)")
    cmd.add_argument("--wait", action="store_true", help="wait until the cart's outcome is terminal")
    waiting(cmd, 300)
    cmd = command("bulk", "reprocess many sales as one job (ids: arguments, --file, or stdin; comma or newline)")
    cmd.add_argument("sale_ids", nargs="*", help="sale ids, or comma-separated lists of them")
    cmd.add_argument("--file", "-f", help="read ids from this file")
    cmd.add_argument("--wait", action="store_true", help="follow the job with a progress bar until it completes")
    waiting(cmd, 900)
    cmd = command("job", "a reprocessing job's progress: a live bar until every id is terminal, then the results")
    cmd.add_argument("job_id")
    cmd.add_argument("--no-wait", dest="wait", action="store_false", help="print the job as it is now and exit")
    waiting(cmd, 900)
    cmd = command("errors", "the error list (sales with errors) as a table")
    cmd.add_argument("--type", help="only this error type (e.g. marketplace_timeout, product_not_synced)")
    cmd.add_argument("--limit", type=int, default=50, help="entries per page, 1 to 100 (default 50)")
    cmd.add_argument("--cursor", help="the page after this cursor (printed at the end of a page)")
    cmd.add_argument("--all", action="store_true", help="every page")
    cmd = command(
        "console",
        "the recovery console in your browser: served on 127.0.0.1, its API calls signed like the CLI's and sent to "
        "--api-url",
    )
    cmd.add_argument("--port", type=int, default=8765, help="local port (default 8765; 0 picks a free one)")
    cmd.add_argument("--host", default="127.0.0.1", help="loopback address to listen on (127.0.0.1 or ::1)")
    cmd.add_argument(
        "--offer", action="append", default=[], metavar="CONNECTION", help="a connection to offer in the page (repeat)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 0 for --help, 2 for bad usage
        return int(exc.code or 0)
    err = Console(stderr=True, highlight=False)
    out = Console(highlight=False) if sys.stdout.isatty() else Console(highlight=False, width=160)
    cli = Cli(args, out, err)
    handler: Callable[[ApiClient], int] = getattr(cli, args.command.replace("-", "_"))
    try:
        with cli.client() as api:
            return handler(api)
    except CliError as exc:
        if args.json and exc.body is not None:
            cli.emit_json(exc.body)
        err.print(f"sales-recovery {args.command}: {exc}", highlight=False, markup=False, soft_wrap=True)
        hint = cli.hint(exc.body)
        if hint:
            err.print(hint, highlight=False, markup=False, soft_wrap=True)
        return exc.code
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
