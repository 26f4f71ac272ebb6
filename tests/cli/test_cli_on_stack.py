"""The `sales-recovery` CLI against the whole local stack (the REST API over HTTP, moto, the simulated ML):
every command, --json, and the exit codes a script relies on (0 ok, 1 not ok / blocked, 2 usage / 4xx, 3 unavailable).

Sale ids are the default scenario's (scenarios/README.md lists each case); each test uses its own.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.aws import instant_retries
from devstack.simulator.scenario import Scenario
from devstack.stack import EmbeddedStack
from sales_recovery_cli.main import CONNECTION_ENV, main
from tests.conftest import DEFAULT_SCENARIO, ROOT

pytestmark = pytest.mark.stack
C = "mla-main"
CANCELLED, NOT_SYNCED, NO_PRODUCT = "2000009103000012", "2000009108000018", "2000009106000014"
LISTED_TIMEOUT, LISTED_NOT_SYNCED, ALWAYS_503 = "2000009109000015", "2000009110000012", "2000009112000016"
ALREADY_REFLECTED, TRACKING = "2000009102000015", "MEL44031010011FMXDF01"
# Carts (cases af, ag, ah, ai): pack id -> this seller's sale ids.
CART_OK, CART_OK_SALES = "2000006171000016", ["2000009171000013", "2000009171000020", "2000009171000037"]
MULTI_SELLER, OURS, THEIRS = "2000006172000013", ["2000009172000010", "2000009172000027"], "2000009172000034"
PENDING_CANCEL = "2000006173000010"
BLOCKED_CART, BLOCKED_SALES = "2000006174000017", ["2000009174000014", "2000009174000021"]
OTHER, BLOCKING = BLOCKED_SALES


@pytest.fixture(scope="module")
def stack() -> Iterator[EmbeddedStack]:
    data = json.loads(DEFAULT_SCENARIO.read_text())
    data["faults"] = [f for f in data["faults"] if f["kind"] != "latency"]
    data.pop("quota", None)
    with (
        EmbeddedStack(
            Scenario.model_validate(data), api_port=0, timeout_hold_seconds=1.0, meli_timeout_seconds=0.5
        ) as running,
        instant_retries(),
    ):
        yield running


class Run:
    def __init__(self, stack: EmbeddedStack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
        assert stack.api is not None
        self.url = stack.api.url
        self.capsys = capsys
        monkeypatch.setenv(CONNECTION_ENV, C)
        monkeypatch.delenv("SALES_RECOVERY_API_URL", raising=False)
        self.code = 0
        self.out = ""
        self.err = ""

    def __call__(self, *argv: str) -> Run:
        self.capsys.readouterr()
        self.code = main(["--api-url", self.url, *argv])
        captured = self.capsys.readouterr()
        # The stack's handlers run in this process; Powertools' single_metric prints EMF lines even when metrics are
        # disabled. They are not the CLI's output (a real CLI process never has them): leave them out.
        self.out = "".join(line for line in captured.out.splitlines(keepends=True) if not line.startswith('{"_aws":'))
        self.err = captured.err
        return self

    @property
    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cli(stack: EmbeddedStack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    return Run(stack, capsys, monkeypatch)


# --- verify -------------------------------------------------------------------------------------------------------


def test_verify_prints_the_checks_and_exits_0(cli: Run) -> None:
    run = cli("verify", "2000009101000011")
    assert run.code == 0, run.err
    assert "sale_not_cancelled" in run.out and "payment_verified" in run.out
    assert "next action: relink" in run.out


def test_verify_of_a_blocked_sale_exits_1_and_says_what_to_do(cli: Run) -> None:
    run = cli("--json", "verify", NOT_SYNCED)
    assert run.code == 1
    report = run.json
    assert report["next_action"] == "blocked" and report["reason"] == "product_not_synced"
    human = cli("verify", NOT_SYNCED)
    assert human.code == 1 and "what to do:" in human.out


def test_global_options_go_before_or_after_the_command(cli: Run) -> None:
    assert cli("verify", "2000009101000011", "--json", "--connection", C).json["sale_id"] == "2000009101000011"


# --- usage and 4xx: exit 2 ----------------------------------------------------------------------------------------


def test_an_unknown_connection_exits_2_with_the_apis_message(cli: Run) -> None:
    run = cli("--connection", "nope", "verify", "2000009101000011")
    assert run.code == 2
    assert "unknown_connection" in run.err and "Unknown connection 'nope'" in run.err
    assert run.out == ""


def test_no_connection_and_bad_usage_exit_2(cli: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONNECTION_ENV)
    run = cli("verify", "2000009101000011")
    assert run.code == 2 and CONNECTION_ENV in run.err
    assert cli().code == 2  # no command
    assert cli("verify").code == 2  # no sale id
    assert cli("frobnicate", "1").code == 2


def test_a_tracking_number_is_refused_with_exit_2_and_the_json_body(cli: Run) -> None:
    run = cli("--json", "relink", TRACKING)
    assert run.code == 2
    assert run.json["reason"] == "not_a_sale_id" and run.json["identifier_kind"] == "tracking"


def test_resync_of_a_sale_not_in_the_error_list_exits_2_and_says_relink(cli: Run) -> None:
    run = cli("resync", "2000009101000071")
    assert run.code == 2 and "not_in_error_list" in run.err and "relink" in run.err


def test_a_sale_never_seen_exits_2(cli: Run) -> None:
    run = cli("status", "2000009999999999")
    assert run.code == 2 and "sale_not_seen" in run.err


# --- service unavailable: exit 3 ----------------------------------------------------------------------------------


def test_ml_down_answers_503_and_exits_3(cli: Run) -> None:
    run = cli("verify", ALWAYS_503)
    assert run.code == 3 and "marketplace_unavailable" in run.err


def test_an_unreachable_api_exits_3(cli: Run) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cli.capsys.readouterr()
    code = main(["--api-url", f"http://127.0.0.1:{port}", "verify", "2000009101000011"])
    assert code == 3 and "cannot reach the API" in cli.capsys.readouterr().err


# --- resync, relink, status -----------------------------------------------------------------------------------------


def test_resync_of_a_listed_sale_reflects_it(cli: Run) -> None:
    run = cli("--json", "resync", LISTED_TIMEOUT)
    assert run.code == 0, run.err
    assert run.json["outcome"] == "reflected"


def test_resync_of_a_sale_blocked_by_its_product_exits_1(cli: Run) -> None:
    run = cli("resync", LISTED_NOT_SYNCED)
    assert run.code == 1 and "not_reflectable" in run.out and "product_not_synced" in run.out


def test_relink_wait_follows_the_state_machine_to_reflected(cli: Run) -> None:
    run = cli("--json", "relink", "2000009101000021", "--wait", "--poll", "0.1", "--timeout", "60")
    assert run.code == 0, run.err
    assert run.json["outcome"] == "reflected" and run.json["latest_execution"]
    again = cli("relink", "2000009101000021")
    assert again.code == 0 and "already_reflected" in again.out
    status = cli("--json", "status", "2000009101000021")
    assert status.code == 0 and status.json["outcome"] == "reflected"


def test_relink_without_wait_answers_the_execution(cli: Run) -> None:
    run = cli("--json", "relink", "2000009101000081")
    assert run.code == 0 and run.json["execution_id"].startswith("arn:aws:states:")


def test_relink_wait_of_a_cancelled_sale_exits_1(cli: Run) -> None:
    run = cli("relink", CANCELLED, "--wait", "--poll", "0.1", "--timeout", "60")
    assert run.code == 1
    assert "not_reflectable (sale_cancelled)" in run.out and "what to do:" in run.out


# --- carts: pack-status, pack-relink, a cart's sale -------------------------------------------------------------------


def test_pack_relink_wait_reflects_a_cart_whole_and_pack_status_lists_its_sales(cli: Run) -> None:
    run = cli("--json", "pack-relink", CART_OK, "--wait", "--poll", "0.1", "--timeout", "60")
    assert run.code == 0, run.err
    cart = run.json
    assert cart["pack_id"] == CART_OK and cart["outcome"] == "reflected" and cart["sale_ids"] == CART_OK_SALES
    assert cart["record"]["sale_id"] == CART_OK and cart["record"]["sale_ids"] == CART_OK_SALES
    status = cli("pack-status", CART_OK)
    assert status.code == 0, status.err
    assert f"cart {CART_OK} in {C}: reflected" in status.out
    assert all(sale_id in status.out for sale_id in CART_OK_SALES) and "blocks the cart" not in status.out
    assert "record: one sale of the platform keyed by the pack, 3 order(s)" in status.out
    assert "shipment 44031071001" in status.out
    again = cli("pack-relink", CART_OK, "--wait")
    assert again.code == 0 and f"cart {CART_OK} in {C}: already_reflected" in again.out


def test_status_of_a_cart_sale_names_its_cart_and_the_cart_commands(cli: Run) -> None:
    cli("pack-relink", CART_OK, "--wait", "--poll", "0.1", "--timeout", "60")  # whatever the test order
    run = cli("status", CART_OK_SALES[1])
    assert run.code == 0, run.err
    assert f"{CART_OK_SALES[1]}: reflected" in run.out
    assert f"part of cart {CART_OK} ({', '.join(CART_OK_SALES)}), reprocessed whole" in run.out
    assert f"sales-recovery pack-status {CART_OK}" in run.out and f"pack-relink {CART_OK}" in run.out
    assert cli("--json", "status", CART_OK_SALES[1]).json["pack_id"] == CART_OK


def test_a_cart_blocked_by_one_sale_exits_1_and_names_the_blocking_sale(cli: Run) -> None:
    run = cli("pack-relink", BLOCKED_CART, "--wait", "--poll", "0.1", "--timeout", "60")
    assert run.code == 1
    assert f"cart {BLOCKED_CART} in {C}: not_reflectable (product_not_synced)" in run.out
    rows = {line.split()[1]: line for line in run.out.splitlines() if line.split()[1:2] in ([BLOCKING], [OTHER])}
    assert "blocks the cart (product_not_synced)" in rows[BLOCKING], run.out
    assert "blocks the cart" not in rows[OTHER], run.out
    assert f"blocked by sale {BLOCKING}: sales-recovery verify {BLOCKING}" in run.out
    assert f"in the error list as {BLOCKED_CART}: product_not_synced" in run.out and "what to do:" in run.out
    state = cli("--json", "pack-status", BLOCKED_CART)
    assert state.code == 1
    assert state.json["sale_id"] == BLOCKING and state.json["sale_ids"] == BLOCKED_SALES
    other = cli("status", OTHER)  # the sale that passes its own checks answers the cart's outcome
    assert other.code == 1
    assert f"{OTHER}: not_reflectable (product_not_synced)" in other.out
    assert f"blocked by sale {BLOCKING}" in other.out and f"pack-status {BLOCKED_CART}" in other.out


def test_pack_relink_without_wait_answers_the_execution_and_wait_follows_it(cli: Run) -> None:
    started = cli("--json", "pack-relink", PENDING_CANCEL)
    assert started.code == 0, started.err
    assert started.json["execution_id"].startswith("arn:aws:states:")
    assert started.json["status_url"] == f"/connections/{C}/packs/{PENDING_CANCEL}"
    waited = cli("pack-relink", PENDING_CANCEL, "--wait", "--poll", "0.1", "--timeout", "60")
    assert waited.code == 1
    assert f"cart {PENDING_CANCEL} in {C}: not_reflectable (pack_cancelled)" in waited.out
    assert "what to do:" in waited.out
    human = cli("relink", "2000009105000011")  # a cart's sale (case e): the whole cart is relinked
    assert human.code == 0, human.err
    assert "the sale is part of cart 2000006105000019" in human.out and "pack-status 2000006105000019" in human.out


def test_verify_of_a_multi_seller_cart_lists_the_other_sellers_sales(cli: Run) -> None:
    run = cli("verify", MULTI_SELLER)
    assert run.code == 0, run.err
    assert f"cart {MULTI_SELLER}, pack status released; its sales:" in run.out
    assert all(sale_id in run.out for sale_id in OURS)
    assert f"other sellers' sales in the pack (left out): {THEIRS}" in run.out
    relinked = cli("--json", "pack-relink", MULTI_SELLER, "--wait", "--poll", "0.1", "--timeout", "60")
    assert relinked.code == 0, relinked.err
    assert relinked.json["outcome"] == "reflected" and relinked.json["sale_ids"] == OURS


def test_a_pack_never_seen_exits_2_and_says_to_relink_the_cart(cli: Run) -> None:
    run = cli("pack-status", "2000006999999999")
    assert run.code == 2 and run.out == ""
    assert "404 pack_not_seen" in run.err and "never reprocessed pack 2000006999999999" in run.err
    assert "relink the cart with: sales-recovery pack-relink 2000006999999999" in run.err
    assert cli("--json", "pack-status", "2000006999999999").json["error"] == "pack_not_seen"


def test_a_bad_pack_id_exits_2_with_a_message_to_act_on(cli: Run) -> None:
    junk = cli("pack-status", "not-a-pack")
    assert junk.code == 2 and "400 invalid_sale_id" in junk.err and "digits only" in junk.err
    single = cli("pack-relink", "2000006101000011")  # a single sale's pack is not a cart
    assert single.code == 2
    assert "422 not_a_cart" in single.err and "a single sale's pack" in single.err
    assert "relink it as a sale with: sales-recovery relink 2000009101000011" in single.err
    tracking = cli("--json", "pack-relink", TRACKING)
    assert tracking.code == 2 and tracking.json["identifier_kind"] == "tracking"
    assert cli("pack-status").code == 2  # no pack id


def test_a_relink_settled_without_starting_exits_1_with_the_reason(cli: Run) -> None:
    # case ac: the first relink finds the connection revoked; later relinks are refused before anything starts (200)
    first = cli("--connection", "mla-revoked", "relink", "2000009151000011", "--wait", "--poll", "0.1")
    assert first.code == 1 and "connection_needs_reauthorization" in first.out
    sale = cli("--connection", "mla-revoked", "relink", "2000009151000021")
    assert sale.code == 1
    assert "2000009151000021: not_reflectable (connection_needs_reauthorization)" in sale.out
    assert "what to do: Mercado Libre no longer accepts" in sale.out
    cart = cli("--connection", "mla-revoked", "--json", "pack-relink", "2000006151000021")
    assert cart.code == 1 and cart.json["reason"] == "connection_needs_reauthorization"


# --- bulk and job -----------------------------------------------------------------------------------------------------


def test_bulk_from_stdin_then_job_follows_it_to_completion(cli: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", _Stdin("2000009101000031\n2000009101000041, " + ALREADY_REFLECTED + "\n"))
    submitted = cli("--json", "bulk")
    assert submitted.code == 0, submitted.err
    assert submitted.json["accepted"] == 3 and submitted.json["rejected"] == []
    job_id = submitted.json["job_id"]
    followed = cli("job", job_id, "--poll", "0.1", "--timeout", "60")
    assert followed.code == 0, followed.err
    assert "completed" in followed.out and "2000009101000031" in followed.out
    now = cli("--json", "job", job_id, "--no-wait")
    assert now.code == 0
    assert {i["sale_id"]: i["outcome"] for i in now.json["items"]} == {
        "2000009101000031": "reflected",
        "2000009101000041": "reflected",
        ALREADY_REFLECTED: "already_reflected",
    }


def test_bulk_from_a_file_and_arguments_with_wait_exits_1_when_a_sale_is_blocked(cli: Run, tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text(f"2000009101000051\n{NO_PRODUCT}\n")
    run = cli("--json", "bulk", "2000009101000061,not-an-id", "--file", str(ids), "--wait", "--poll", "0.1")
    assert run.code == 1
    view = run.json
    assert view["status"] == "completed"
    assert {i["sale_id"]: i["outcome"] for i in view["items"]} == {
        "2000009101000051": "reflected",
        "2000009101000061": "reflected",
        NO_PRODUCT: "not_reflectable",
    }
    assert [r["sale_id"] for r in view["rejected"]] == ["not-an-id"]
    assert "rejected not-an-id: invalid_sale_id" in run.err


def test_bulk_without_ids_exits_2(cli: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", _Stdin(""))
    run = cli("bulk")
    assert run.code == 2 and "No sale ids" in run.err
    assert cli("bulk", "--file", "/nonexistent/ids.txt").code == 2


def test_an_unknown_job_exits_2(cli: Run) -> None:
    assert cli("job", "0" * 32).code == 2
    assert cli("job", "not-a-job").code == 2


# --- errors ---------------------------------------------------------------------------------------------------------


def test_errors_as_a_table_with_a_type_filter(cli: Run) -> None:
    run = cli("errors", "--type", "product_not_synced")
    assert run.code == 0, run.err
    assert LISTED_NOT_SYNCED in run.out and "product_not_synced" in run.out
    assert "marketplace_timeout" not in run.out


def test_errors_paginate_with_a_cursor_or_all(cli: Run) -> None:
    cli("relink", NOT_SYNCED, "--wait", "--poll", "0.1")  # a second entry, whatever the test order
    everything = cli("--json", "errors", "--limit", "100").json
    assert everything["count"] >= 2
    first = cli("errors", "--limit", "1")
    assert first.code == 0 and "--cursor" in first.err
    cursor = first.err.split("--cursor ", 1)[1].split()[0]
    second = cli("--json", "errors", "--limit", "1", "--cursor", cursor)
    assert second.code == 0 and second.json["count"] == 1
    assert second.json["items"][0]["sale_id"] != everything["items"][0]["sale_id"]
    paged = cli("--json", "errors", "--limit", "1", "--all").json
    assert [i["sale_id"] for i in paged["items"]] == [i["sale_id"] for i in everything["items"]]
    assert cli("errors", "--type", "Not A Type").code == 2


# --- the installed command --------------------------------------------------------------------------------------------


def test_the_installed_sales_recovery_command(stack: EmbeddedStack) -> None:
    script = Path(sys.executable).parent / "sales-recovery"
    assert script.exists(), f"{script} is missing: `make venv` installs the project (pip install -e .)"
    assert stack.api is not None
    done = subprocess.run(
        [str(script), "--api-url", stack.api.url, "--connection", C, "--json", "verify", "2000009101000011"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["sale_id"] == "2000009101000011"


class _Stdin:
    def __init__(self, text: str) -> None:
        self.text = text

    def isatty(self) -> bool:
        return False

    def read(self) -> str:
        return self.text
