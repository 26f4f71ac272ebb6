"""The recovery console (/console) in headless Chromium, clicking through each screen on the whole local stack.

One stack and one browser for the module. Every screen is checked against the API's own answers, screenshotted to
test-artifacts/console-*.png (shown in the README), and run through axe-core: no serious or critical violation.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.simulator.scenario import Scenario
from devstack.stack import EmbeddedStack
from sales_recovery_cli.client import ApiClient
from sales_recovery_cli.forwarder import ConsoleForwarder
from shared.identifiers import InvalidIdentifier, parse_identifier
from shared.models import SELLER_ACTIONS, Reason
from tests.conftest import DEFAULT_SCENARIO, ROOT
from tests.stack.support import list_sale, running_stack
from tests.ui.axe import axe_source
from tests.ui.cdp import Page, chromium_page, find_chromium

pytestmark = pytest.mark.stack
ARTIFACTS = ROOT / "test-artifacts"
C = "mla-main"
REVOKED = "mla-revoked"  # the seller removed the application: ML refuses its tokens
CLONES = [str(2000009190000000 + n) for n in range(1, 41)]  # healthy sales added to the default scenario
BLOCKED = "2000009108000018"  # product_not_synced
LISTED = "2000009109000015"  # in the error list as marketplace_timeout; a resync reflects it
PACK = "2000006105000019"  # the cart's pack: two sales
TRACKING = "MEL44031010011FMXDF01"
UNAVAILABLE = [str(2000009199000000 + n) for n in range(1, 25)]  # listed by the platform, never clicked
JUNK = ["abc", "-5", "00123", "MLA1100000001", "1234567890123456789012"]
SALES = [
    *CLONES,
    *(f"20000091010000{n}1" for n in range(2, 9)),
    "2000009103000012",
    "2000009104000017",
    "2000009106000014",
    "2000009107000011",
    BLOCKED,
]


def _scenario() -> Scenario:
    data = json.loads(DEFAULT_SCENARIO.read_text())
    data["faults"] = []
    model = next(o for o in data["orders"] if o["id"] == 2000009101000011)
    for sale_id in CLONES:
        order = json.loads(json.dumps(model))
        order["id"] = int(sale_id)
        order["pack_id"] = int(sale_id) - 2000009190000000 + 2000006190000000
        order["shipping"] = {"id": None}
        order["payments"][0]["order_id"] = int(sale_id)
        data["orders"].append(order)
    revoked = {
        **data["connections"][0],
        "connection_id": REVOKED,
        "seller_id": 223456789,
        "access_token": "APP_USR-1111111111111111-110409-00000000000000000000000000000000-223456789",
        "refresh_token": "TG-000000000000000000000000-223456789",
        "revoked": True,
    }
    if all(c["connection_id"] != REVOKED for c in data["connections"]):  # the default scenario may have it already
        data["connections"].append(revoked)
    return Scenario.model_validate(data)


@pytest.fixture(scope="module")
def stack() -> Iterator[EmbeddedStack]:
    with running_stack(_scenario()) as running:
        for sale_id in UNAVAILABLE:  # enough entries for a second page of the error list
            list_sale(running, sale_id, "marketplace_unavailable", f"Mercado Libre answered 503 for {sale_id}")
        yield running


@pytest.fixture(scope="module")
def axe() -> str:
    return axe_source()


@pytest.fixture(scope="module")
def page(stack: EmbeddedStack) -> Iterator[Page]:
    executable = find_chromium()
    if executable is None:
        pytest.fail("Chromium is not installed: `make venv` installs Debian's chromium when run as root.")
    assert stack.api is not None
    with chromium_page(executable) as tab:
        tab.navigate(f"{stack.api.url}/console/")
        tab.wait_for("document.body.dataset.ready === 'true'", what="the console to start")
        yield tab


@pytest.fixture(scope="module")
def api(stack: EmbeddedStack) -> Iterator[httpx.Client]:
    assert stack.api is not None
    with httpx.Client(base_url=stack.api.url, timeout=30) as client:
        yield client


def _q(selector: str) -> str:
    return f"document.querySelector({json.dumps(selector)})"


def _click(page: Page, selector: str) -> None:
    assert page.evaluate(
        f"(() => {{ const el = {_q(selector)}; if (!el) return false; el.click(); return true; }})()"
    ), f"nothing to click at {selector}"


def _text(page: Page, selector: str) -> str:
    return str(page.evaluate(f"({_q(selector)} || {{}}).textContent || ''"))


def _serious_violations(page: Page, axe: str) -> list[dict[str, Any]]:
    if not page.evaluate("typeof window.axe === 'object'"):
        page.evaluate(axe)
    found = page.evaluate(
        "axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.map(v => "
        "({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)})))"
    )
    return [v for v in found if v["impact"] in ("serious", "critical")]


def _shot(
    page: Page, name: str, width: int = 1280, mobile: bool = False, max_height: int = 1800, top: str | None = None
) -> None:
    """The page as tall as its content (at most ``max_height``), from its top or from the ``top`` element."""
    metrics = {"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": mobile}
    page.send("Emulation.setDeviceMetricsOverride", metrics)
    page.evaluate("window.scrollTo(0, 0)")
    full = int(page.evaluate("document.documentElement.scrollHeight"))
    start = int(page.evaluate(f"{_q(top)}.getBoundingClientRect().top")) if top else 0
    page.send("Emulation.setDeviceMetricsOverride", {**metrics, "height": min(full, 6000)})
    clip = {"x": 0, "y": start, "width": width, "height": min(full - start, max_height), "scale": 1}
    data = page.send("Page.captureScreenshot", {"format": "png", "clip": clip})["data"]
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / name).write_bytes(base64.b64decode(data))


def _download(page: Page, selector: str, folder: Path) -> str:
    """Click a download link as a person would and read the file the browser saved."""
    page.send("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(folder)})
    _click(page, selector)
    name = str(page.evaluate(f"{_q(selector)}.download"))
    deadline = time.monotonic() + 20
    while not (folder / name).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return (folder / name).read_text(encoding="utf-8")


def _open(page: Page, fragment: str, ready: str) -> None:
    page.evaluate(f"window.location.hash = {json.dumps(fragment)}")
    page.wait_for(f"!!({ready})", what=f"{fragment} to render")


def test_pick_a_connection_and_see_its_state(page: Page, axe: str) -> None:
    page.type_text("#connection-input", "no-such-connection")
    page.press("Enter")  # the keyboard submits the form
    page.wait_for(f"!!{_q('#connection-state [role=alert]')}", what="the unknown connection's message")
    assert "no-such-connection" in _text(page, "#connection-state")
    page.type_text("#connection-input", C)
    page.press("Enter")
    page.wait_for(f"({_q('#connection-badge')} || {{}}).dataset?.state === 'active'", what="the connection's state")
    assert "123456789" in _text(page, "#connection-state")
    assert _serious_violations(page, axe) == []


def test_sales_with_errors_resync_a_listed_sale_and_see_reflected(page: Page, axe: str, api: httpx.Client) -> None:
    rows = "Array.from(document.querySelectorAll('#errors-table tbody tr')).map(r => r.dataset.sale)"
    first = api.get(f"/connections/{C}/sale-errors", params={"limit": 20}).json()
    second = api.get(f"/connections/{C}/sale-errors", params={"limit": 20, "cursor": first["next_cursor"]}).json()
    _open(page, f"#/c/{C}/errors", _q("#errors-table"))
    assert page.evaluate(rows) == [e["sale_id"] for e in first["items"]]
    _click(page, "#next-page")  # the API's cursor, page by page
    page.wait_for(f"{rows}[0] === {json.dumps(second['items'][0]['sale_id'])}", what="the second page")
    assert page.evaluate(rows) == [e["sale_id"] for e in second["items"]]
    assert LISTED in [e["sale_id"] for e in first["items"] + second["items"]]
    _click(page, "#first-page")
    page.wait_for(f"{rows}[0] === {json.dumps(first['items'][0]['sale_id'])}", what="the first page again")
    page.evaluate(f"{_q('#error-type')}.value = 'marketplace_timeout'")
    _click(page, "#errors-filter button[type=submit]")
    page.wait_for("document.querySelectorAll('#errors-table tbody tr').length === 1", what="the filtered list")
    row = f'#errors-table tr[data-sale="{LISTED}"]'
    assert "1" in _text(page, f"{row} td:nth-child(4)")  # attempts
    _click(page, f"{row} button.resync")
    page.wait_for(f"!!{_q(row + ' [data-outcome]')}", what="the resync's outcome in place")
    assert page.evaluate(f"{_q(row + ' [data-outcome]')}.dataset.outcome") == "reflected"
    assert api.get(f"/connections/{C}/sales/{LISTED}").json()["outcome"] == "reflected"
    _shot(page, "console-errors.png")
    assert _serious_violations(page, axe) == []


def test_reprocess_sixty_pasted_ids_precheck_progress_outcomes_and_csv(
    page: Page, axe: str, api: httpx.Client, tmp_path: Path
) -> None:
    entries = [*SALES[:3], *JUNK[:2], PACK, *SALES[3:30], TRACKING, SALES[10], *JUNK[2:], *SALES[30:]]
    assert len(entries) == 60
    _open(page, f"#/c/{C}/reprocess", _q("#ids"))
    page.type_text("#ids", ", ".join(entries[:20]) + "\n" + " ".join(entries[20:40]) + "\n" + "\n".join(entries[40:]))
    # Shape first (instant), then what Mercado Libre says the numeric ids are: the pack is found among them.
    page.wait_for(f"!!{_q('#asked-ml')}", timeout=60, what="Mercado Libre's answer about the numeric ids")
    counts = page.evaluate(
        "Object.fromEntries(Array.from(document.querySelectorAll('#precheck-summary li'))"
        ".map(li => [li.dataset.count, parseInt(li.textContent)]))"
    )
    assert counts == {"entries": 60, "sale_ids": len(SALES), "duplicates": 1, "not_sale": 7}
    kinds = page.evaluate(
        "Object.fromEntries(Array.from(document.querySelectorAll('#not-sale-table tbody tr'))"
        ".map(tr => [tr.dataset.entry, tr.querySelector('.kind').dataset.kind]))"
    )
    assert kinds == {
        "abc": "junk",
        "-5": "junk",
        "00123": "junk",
        "1234567890123456789012": "junk",
        "MLA1100000001": "unknown",
        TRACKING: "tracking",
        PACK: "pack",
    }
    assert "2000009105000011, 2000009105000028" in _text(page, f'#not-sale-table tr[data-entry="{PACK}"]')
    _shot(page, "console-reprocess-precheck.png")

    _click(page, "#submit-job")
    page.wait_for(f"!!{_q('#job-progress')}", what="the job to be accepted")
    page.wait_for(f"!!{_q('#outcomes-table')}", timeout=120, what="the job to complete")
    assert page.evaluate(f"{_q('#job-progress')}.value === {_q('#job-progress')}.max")
    assert "100%" in _text(page, "#job-progress-text")

    job_id = page.evaluate("document.querySelector('#job-title').textContent.split(' ').pop()")
    view = api.get(f"/connections/{C}/reprocessing-jobs/{job_id}", params={"limit": 1000}).json()
    assert view["status"] == "completed" and view["accepted"] == len(SALES) + 1  # the sales and the pack
    outcome_rows = (
        "Array.from(document.querySelectorAll('#outcomes-table tbody tr')).map(tr => [tr.dataset.sale,"
        " tr.querySelector('[data-outcome]').dataset.outcome, tr.querySelector('[data-reason]').dataset.reason])"
    )
    shown = page.evaluate(outcome_rows)
    assert sorted(map(tuple, shown)) == sorted(
        (i["sale_id"], i["outcome"], i.get("reason") or "") for i in view["items"]
    )
    blocked_row = f'#outcomes-table tr[data-sale="{BLOCKED}"]'
    assert SELLER_ACTIONS[Reason.PRODUCT_NOT_SYNCED] in _text(page, blocked_row)
    rejected = page.evaluate("document.querySelectorAll('#rejected-table tbody tr').length")
    assert rejected == 6  # the five junk entries and the tracking number; the duplicate is counted, not rejected

    csv_text = _download(page, "#download-csv", tmp_path)
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    by_id = {r["sale_id"]: r for r in rows if r["outcome"] != "rejected"}
    assert {k: (v["outcome"], v["reason"]) for k, v in by_id.items()} == {
        i["sale_id"]: (i["outcome"], i.get("reason") or "") for i in view["items"]
    }
    assert by_id[BLOCKED]["seller_action"] == SELLER_ACTIONS[Reason.PRODUCT_NOT_SYNCED]
    assert sum(r["outcome"] == "rejected" for r in rows) == 6
    assert page.evaluate(f"{_q('#download-csv')}.download") == f"job-{job_id}.csv"
    _shot(page, "console-reprocess-job.png", top="#job", max_height=1100)
    assert _serious_violations(page, axe) == []

    # The job's link: a reload (or a colleague) finds the same outcomes.
    assert page.evaluate("window.location.hash") == f"#/c/{C}/reprocess/{job_id}"
    page.send("Page.reload")
    page.wait_for(f"!!{_q('#outcomes-table')}", what="the job's outcomes after a reload")
    assert sorted(map(tuple, page.evaluate(outcome_rows))) == sorted(map(tuple, shown))


def test_a_blocked_sale_shows_the_failing_check_with_the_seller_action(page: Page, axe: str, api: httpx.Client) -> None:
    _open(page, f"#/c/{C}/sale", _q("#sale-input"))
    page.type_text("#sale-input", BLOCKED)
    page.press("Enter")
    page.wait_for(f"!!{_q('#checks')}", what="the sale's checks")
    checks = page.evaluate(
        "Array.from(document.querySelectorAll('#checks li')).map(li => [li.dataset.check, li.dataset.ok === 'true'])"
    )
    report = api.get(f"/connections/{C}/sales/{BLOCKED}/verification").json()
    assert checks == [[c["name"], c["ok"]] for c in report["checks"]]
    failing = '#checks li[data-check="products"]'
    assert page.evaluate(f"{_q(failing)}.dataset.ok") == "false"
    assert SELLER_ACTIONS[Reason.PRODUCT_NOT_SYNCED] in _text(page, failing)
    assert page.evaluate(f"{_q('#next-action')}.dataset.next") == "blocked"
    # Resync is offered only while the sale waits in the error list (the job above left it there, for its product).
    assert page.evaluate(f"{_q('#resync')}.disabled") is not report["in_error_list"]
    _shot(page, "console-sale.png")
    assert _serious_violations(page, axe) == []


def test_relink_from_the_sale_screen_follows_the_execution_to_its_outcome(page: Page, api: httpx.Client) -> None:
    sale_id = "2000009101000011"
    _open(page, f"#/c/{C}/sale/{sale_id}", _q("#checks"))
    _click(page, "#relink")
    page.wait_for(f"!!{_q('#sale-outcome [data-outcome]')}", timeout=60, what="the relink's outcome")
    assert page.evaluate(f"{_q('#sale-outcome [data-outcome]')}.dataset.outcome") == "reflected"
    state = api.get(f"/connections/{C}/sales/{sale_id}").json()
    assert state["outcome"] == "reflected"
    page.wait_for(f"!!{_q('#execution-link')}", what="the latest execution")
    link = page.evaluate(f"{_q('#execution-link')}.href")
    arn = state["latest_execution"]["execution_arn"]
    region = arn.split(":")[3]
    assert link.startswith(f"https://{region}.console.aws.amazon.com/states/home?region={region}#/v2/executions/")
    assert link.endswith(httpx.URL("x", params={"a": arn}).query.decode().split("=", 1)[1])


def test_a_pack_id_on_the_sale_screen_links_the_sales_it_holds(page: Page) -> None:
    _open(page, f"#/c/{C}/sale/{PACK}", _q("#identifier"))
    assert page.evaluate(f"{_q('#identifier')}.dataset.kind") == "pack"
    links = page.evaluate(
        "Array.from(document.querySelectorAll('#identifier a:not(#open-cart)')).map(a => a.textContent)"
    )
    assert links == ["2000009105000011", "2000009105000028"]
    assert page.evaluate(f"{_q('#open-cart')}.getAttribute('href')") == f"#/c/{C}/pack/{PACK}"  # and the cart whole
    _click(page, "#identifier a")
    page.wait_for(f"({_q('#sale-title')} || {{}}).textContent?.endsWith('2000009105000011')", what="the cart's sale")


CART_BLOCKED = "2000006174000017"  # case ai: a cart of two, its second sale's product not synced
CART_BLOCKED_SALES = ["2000009174000014", "2000009174000021"]
CART_SHARED = "2000006172000013"  # case ag: two sales of mla-main's seller and one of mlb-second's
ONE_ORDER_PACK = "2000006114000011"  # case n: a pack of one order is a single sale, not a cart
_LINKS = "Array.from(document.querySelectorAll({})).map(a => a.textContent)"


def test_a_cart_opened_from_its_sale_and_relinked_whole_in_spanish(page: Page, axe: str, api: httpx.Client) -> None:
    _open(page, f"#/c/{C}/sale/{CART_BLOCKED_SALES[1]}", _q("#cart-link a"))
    _click(page, '.lang-button[data-lang="es"]')
    page.wait_for("document.documentElement.lang === 'es'", what="Spanish")
    assert "pertenece al carrito" in _text(page, "#cart-link")
    _click(page, "#cart-link a")
    page.wait_for(f"!!{_q('#pack-never-seen')}", what="the cart, never reprocessed yet")
    assert page.evaluate("window.location.hash") == f"#/c/{C}/pack/{CART_BLOCKED}"
    assert page.evaluate(_LINKS.format(json.dumps("#pack-sales a"))) == CART_BLOCKED_SALES
    assert "aún no reprocesó este carrito" in _text(page, "#pack-never-seen")
    _click(page, "#pack-relink")
    page.wait_for(f"!!{_q('#pack-outcome [data-outcome]')}", timeout=60, what="the cart's outcome")
    cart = api.get(f"/connections/{C}/packs/{CART_BLOCKED}").json()
    assert (cart["outcome"], cart["reason"], cart["sale_id"]) == (
        "not_reflectable",
        "product_not_synced",
        CART_BLOCKED_SALES[1],
    )
    assert page.evaluate(f"{_q('#pack-outcome [data-outcome]')}.dataset.outcome") == "not_reflectable"
    assert cart["latest_execution"]["name"] in _text(page, "#pack-execution")  # the 202's execution
    page.wait_for(f"!!{_q('#blocking-sale a')}", what="the blocking sale")
    assert _text(page, "#blocking-sale a") == CART_BLOCKED_SALES[1]
    assert "bloqueado por la venta" in _text(page, "#blocking-sale")
    assert "producto no sincronizado" in _text(page, "#pack-state [data-reason]")
    report = api.get(f"/connections/{C}/sales/{CART_BLOCKED}/verification").json()  # the cart's checks, as ML has it
    checks = (
        "Array.from(document.querySelectorAll('#checks li')).map(li => [li.dataset.check, li.dataset.ok === 'true'])"
    )
    assert page.evaluate(checks) == [[c["name"], c["ok"]] for c in report["checks"]]
    assert [c["name"] for c in report["checks"] if not c["ok"]] == ["cart_sales"]
    assert "Sincroniza el producto vinculado" in _text(page, "#pack-state")
    # The API's own words stay beside the translation, marked as English.
    assert page.evaluate(f"{_q('#pack-state .detail')}.lang") == "en"
    assert _text(page, "#pack-state .detail") == cart["detail"]
    history = _text(page, "#history-table tbody")
    assert "Un producto de la venta no está sincronizado" in history
    assert cart["error_entry"]["history"][0]["message"] in history
    _shot(page, "console-pack-es.png")
    assert _serious_violations(page, axe) == []
    # The error list holds the cart once, under its pack id; its row opens the cart.
    _open(page, f"#/c/{C}/errors", _q("#error-type"))
    page.evaluate(f"{_q('#error-type')}.value = 'product_not_synced'")
    _click(page, "#errors-filter button[type=submit]")
    row = f'#errors-table tr[data-sale="{CART_BLOCKED}"] a'
    page.wait_for(f"!!{_q(row)}", what="the cart's entry")
    assert page.evaluate(f"{_q(row)}.getAttribute('href')") == f"#/c/{C}/pack/{CART_BLOCKED}"
    _click(page, row)
    page.wait_for(f"!!{_q('#pack-state [data-reason]')}", what="the cart again")
    phone = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}
    page.send("Emulation.setDeviceMetricsOverride", phone)
    page.wait_for("document.documentElement.clientWidth === 390", what="the phone's width")
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")

    # A 4xx, said in Spanish with the API's words kept: a one-order pack is not a cart; its sale is one click away.
    _open(page, f"#/c/{C}/pack/{ONE_ORDER_PACK}", _q("#not-a-cart"))
    _click(page, "#pack-relink")
    page.wait_for(f"!!{_q('#pack-result [role=alert]')}", what="the refusal")
    refused = api.post(f"/connections/{C}/packs/{ONE_ORDER_PACK}/relink")
    assert (refused.status_code, refused.json()["error"]) == (422, "not_a_cart")
    assert page.evaluate(f"{_q('#pack-result [role=alert]')}.dataset.error") == "not_a_cart"
    assert "422" in _text(page, "#pack-result") and "no es el pack de un carrito" in _text(page, "#pack-result")
    assert _text(page, "#pack-result .detail[lang=en]") == refused.json()["message"]
    assert page.evaluate(_LINKS.format(json.dumps("#pack-result a"))) == refused.json()["sale_ids"]
    assert _serious_violations(page, axe) == []
    _click(page, '.lang-button[data-lang="en"]')
    page.wait_for("document.documentElement.lang === 'en'", what="English")
    assert "is not the pack of a cart" in _text(page, "#pack-result [role=alert] p")


def test_a_cart_typed_by_its_pack_id_relinks_whole_then_answers_already_reflected(
    page: Page, axe: str, api: httpx.Client
) -> None:
    _open(page, f"#/c/{C}/pack", _q("#pack-input"))
    page.type_text("#pack-input", CART_SHARED)
    page.press("Enter")
    page.wait_for(f"!!{_q('#other-sellers')}", what="the cart with the other seller's sale")
    assert page.evaluate(_LINKS.format(json.dumps("#pack-sales a"))) == ["2000009172000010", "2000009172000027"]
    assert page.evaluate(_LINKS.format(json.dumps("#other-sellers a"))) == ["2000009172000034"]
    assert page.evaluate("document.querySelectorAll('#checks li[data-ok=true]').length") == 3  # sale id, pack, sales
    _click(page, "#pack-relink")
    page.wait_for(f"!!{_q('#pack-outcome [data-outcome]')}", timeout=60, what="the cart's outcome")
    cart = api.get(f"/connections/{C}/packs/{CART_SHARED}").json()
    assert cart["outcome"] == "reflected" == page.evaluate(f"{_q('#pack-outcome [data-outcome]')}.dataset.outcome")
    assert cart["latest_execution"]["name"] in _text(page, "#pack-execution")
    page.wait_for(f"!!{_q('#execution-link')}", what="the latest execution")
    _shot(page, "console-pack.png")
    assert _serious_violations(page, axe) == []
    _click(page, "#pack-relink")  # settled: the API answers 200 already_reflected, nothing started
    page.wait_for(f"!!{_q('#pack-outcome [data-outcome=already_reflected]')}", what="already reflected")
    assert page.evaluate(f"!{_q('#pack-execution')}")
    _click(page, "#pack-sales a")  # each sale of the cart opens its sale view, which links back to its cart
    page.wait_for(f"!!{_q('#cart-link a')}", what="the cart's sale")
    assert _text(page, "#sale-title").endswith("2000009172000010")
    assert _text(page, "#cart-link a") == CART_SHARED


ANSWER_THE_NEXT_POST = """((status, body) => {
  const real = window.fetch;
  window.fetch = async (url, init) => {
    if (!(init && init.method === "POST")) return real(url, init);
    window.fetch = real;
    return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
  };
})"""


def test_an_error_code_the_page_does_not_know_shows_the_apis_own_words(page: Page) -> None:
    _open(page, f"#/c/{C}/pack/{CART_SHARED}", _q("#pack-sales a"))
    said = {"error": "a_code_added_later", "message": "Something the API says in its own words."}
    page.evaluate(f"{ANSWER_THE_NEXT_POST}(409, {json.dumps(said)})")
    _click(page, "#pack-relink")
    page.wait_for(f"!!{_q('#pack-result [role=alert]')}", what="the answer")
    assert _text(page, "#pack-result [role=alert]") == f"Error 409: {said['message']}"
    assert page.evaluate(f"!{_q('#pack-result .detail')}")  # nothing to put beside: the API's words are the text


def test_switch_language_to_spanish_and_back(page: Page, axe: str) -> None:
    _open(page, f"#/c/{C}/sale/{BLOCKED}", _q("#checks"))
    _click(page, '.lang-button[data-lang="es"]')
    page.wait_for("document.documentElement.lang === 'es'", what="Spanish")
    assert _text(page, "#nav-errors") == "Ventas con errores"
    assert page.evaluate(f"{_q('.lang-button[data-lang=es]')}.getAttribute('aria-pressed')") == "true"
    assert "Sincroniza el producto vinculado" in _text(page, '#checks li[data-check="products"]')
    assert "Bloqueada" in _text(page, "#next-action")
    _shot(page, "console-sale-es.png")
    assert _serious_violations(page, axe) == []
    # On a phone: nothing wider than the screen (tables scroll inside their own region).
    page.send(
        "Emulation.setDeviceMetricsOverride", {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}
    )
    page.wait_for("document.documentElement.clientWidth === 390", what="the phone's width")
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    assert _serious_violations(page, axe) == []
    _shot(page, "console-phone-es.png", width=390, mobile=True)
    _click(page, '.lang-button[data-lang="en"]')
    page.wait_for("document.documentElement.lang === 'en'", what="English")
    assert _text(page, "#nav-errors") == "Sales with errors"
    assert SELLER_ACTIONS[Reason.PRODUCT_NOT_SYNCED] in _text(page, '#checks li[data-check="products"]')


LOSE_THE_FIRST_ANSWER = """((ending) => {
  const real = window.fetch;
  window.lost = [];
  window.fetch = async (url, init) => {
    const answer = await real(url, init);
    if (init && init.method === "POST" && String(url).endsWith(ending) && !window.lost.length) {
      window.lost.push(await answer.clone().json());
      window.fetch = real;
      throw new TypeError("Failed to fetch");  // the API did it; its answer never arrived
    }
    return answer;
  };
})"""


def test_a_submission_whose_answer_was_lost_is_sent_again_as_the_same_job(page: Page) -> None:
    _open(page, f"#/c/{C}/reprocess", _q("#ids"))
    page.type_text("#ids", "2000009101000041 2000009101000051")
    page.wait_for(f"!!{_q('#asked-ml')}", what="the pre-check")
    page.evaluate(f"{LOSE_THE_FIRST_ANSWER}('/reprocessing-jobs')")
    _click(page, "#submit-job")
    page.wait_for(f"!!{_q('#job [role=alert]')}", what="the lost answer's message")
    _click(page, "#submit-job")  # the person tries again
    page.wait_for(f"!!{_q('#outcomes-table')}", timeout=60, what="the job's outcomes")
    job_title = "document.querySelector('#job-title').textContent.split(' ').pop()"
    first = page.evaluate(job_title)
    assert first == page.evaluate("window.lost[0].job_id")  # the same job, not a second one
    _click(page, "#submit-job")  # answered: the same ids again are a new job
    page.wait_for(f"!!{_q('#outcomes-table')} && {job_title} !== {json.dumps(first)}", timeout=60, what="a new job")


def test_a_relink_whose_answer_was_lost_starts_no_second_episode(page: Page, api: httpx.Client) -> None:
    sale_id = "2000009103000012"  # cancelled: every relink is a rerun of a settled sale, a new episode
    before = api.get(f"/connections/{C}/sales/{sale_id}").json().get("episode", 0)
    _open(page, f"#/c/{C}/sale/{sale_id}", _q("#checks"))
    page.evaluate(f"{LOSE_THE_FIRST_ANSWER}('/relink')")
    _click(page, "#relink")
    page.wait_for(f"!!{_q('#sale-result [role=alert]')}", what="the lost answer's message")
    assert page.evaluate(f"{_q('#sale-result [role=alert]')}.dataset.error") == "network"  # said by the page
    _click(page, "#relink")  # the person tries again
    page.wait_for(f"!!{_q('#sale-outcome [data-outcome]')}", timeout=60, what="the relink's outcome")
    state = api.get(f"/connections/{C}/sales/{sale_id}").json()
    assert (state["outcome"], state.get("reason")) == ("not_reflectable", "sale_cancelled")
    assert state["episode"] == before + 1  # one rerun, however many clicks its lost answer took


def test_thousands_of_ids_are_prechecked_at_once_and_ml_is_asked_only_on_request(
    page: Page, stack: EmbeddedStack
) -> None:
    many = [str(2000009300000000 + n) for n in range(3000)]
    _open(page, f"#/c/{C}/reprocess", _q("#ids"))
    before = stack.meli.count()
    page.type_text("#ids", ",".join([*many, "junk!", many[0]]))
    page.wait_for(f"!!{_q('#ask-ml')}", what="the offer to ask Mercado Libre")
    time.sleep(1.5)  # longer than the pause after which up to 100 numeric ids are asked by themselves
    counts = page.evaluate(
        "Object.fromEntries(Array.from(document.querySelectorAll('#precheck-summary li'))"
        ".map(li => [li.dataset.count, parseInt(li.textContent.replace(/\\D+/g, ''))]))"
    )
    assert counts == {"entries": 3002, "sale_ids": 3000, "duplicates": 1, "not_sale": 1}
    assert "3000" in _text(page, "#precheck .row .hint")
    assert stack.meli.count() == before  # nothing asked without the click


def test_a_connection_ml_refuses_shows_what_the_seller_must_do(page: Page, api: httpx.Client) -> None:
    _open(page, f"#/c/{REVOKED}/sale/2000009101000031", _q("#checks"))
    page.wait_for(
        f"({_q('#connection-badge')} || {{}}).dataset?.state === 'needs_reauthorization'", what="the refused state"
    )
    action = SELLER_ACTIONS[Reason.CONNECTION_NEEDS_REAUTHORIZATION]
    assert action in _text(page, "#connection-state")
    assert api.get(f"/connections/{REVOKED}").json()["state"] == "needs_reauthorization"
    assert page.evaluate(f"{_q('#checks li[data-check=connection]')}.dataset.ok") == "false"
    assert action in _text(page, "#checks li[data-check=connection]")
    # ML's refusal (its code, the cause) said by the page, with ML's own words kept beside it.
    view = api.get(f"/connections/{REVOKED}").json()
    assert page.evaluate(f"{_q('#connection-state .said')}.dataset.code") == view["cause"]
    assert view["cause"] in _text(page, "#connection-state .detail[lang=en]")


CORPUS = [
    "2000009101000011",
    " 42 ",
    "0",
    "00123",
    "-5",
    "-0",
    "9223372036854775807",
    "9223372036854775808",
    "12345678901234567890",
    "١٢٣",
    "\uff12\uff10\uff10\uff10",  # fullwidth digits
    "²³",
    "MLA1234567890",
    "mla1234567890",
    "MLBU1458960576",
    "MEL44031010011FMXDF01",
    "mel44031010011fmxdf01",
    "ABC-12345",
    "A-1",
    "ab",
    "ABCDEFG",
    "ÑANDU12345",
    "12-34-56",
    "-ABC123",
    "ABC123-",
    "X" * 41 + "1",
    "TRACK" + "1" * 35,
    "1e10",
    "0x1F",
    "12.5",
    "<script>",
]


def test_the_precheck_classifies_ids_as_the_api_does(page: Page) -> None:
    shown = page.evaluate(f"{json.dumps(CORPUS)}.map(v => window.consoleIds.classify(v).kind)")
    expected = []
    for value in CORPUS:
        try:
            expected.append(parse_identifier(value).kind.value)
        except InvalidIdentifier:
            expected.append("junk")
    assert dict(zip(CORPUS, shown, strict=True)) == dict(zip(CORPUS, expected, strict=True))


def test_the_same_page_works_behind_the_signing_forwarder(page: Page, stack: EmbeddedStack) -> None:
    """``sales-recovery console`` in front of the local stack (loopback: nothing to sign): the page reads the run's
    token from config.json and every API call carries it, or the forwarder would refuse it."""
    assert stack.api is not None
    with ApiClient(stack.api.url) as client, ConsoleForwarder(client, port=0, connections=[C]) as forwarder:
        page.navigate(f"{forwarder.url}#/c/{C}/errors")
        page.wait_for(f"!!{_q('#errors-table')}", what="the error list through the forwarder")
        page.wait_for(f"({_q('#connection-badge')} || {{}}).dataset?.state === 'active'", what="the state")
        assert stack.api.url in _text(page, "#mode")
