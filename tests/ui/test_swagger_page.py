"""The API page (/docs, Swagger UI) in a real headless Chromium, against the whole local stack.

Chromium is Debian's (``make venv`` installs it when root); without it this test FAILS, on purpose: the page is part
of what `make serve` promises. The screenshot goes to test-artifacts/swagger.png (gitignored) for a person to look at.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.simulator.scenario import Scenario
from devstack.stack import EmbeddedStack
from tests.conftest import DEFAULT_SCENARIO, ROOT
from tests.ui.cdp import CdpError, Page, chromium_page, find_chromium

pytestmark = pytest.mark.stack
ARTIFACT = ROOT / "test-artifacts" / "swagger.png"
CONTRACT = {  # DESIGN §3 and §3.1's connection state and packs: path -> method
    "/connections/{connection_id}": "GET",
    "/connections/{connection_id}/sales/{sale_id}/verification": "GET",
    "/connections/{connection_id}/sales/{sale_id}/resync": "POST",
    "/connections/{connection_id}/sales/{sale_id}/relink": "POST",
    "/connections/{connection_id}/sales/{sale_id}": "GET",
    "/connections/{connection_id}/packs/{pack_id}/relink": "POST",  # §3.1: a cart reprocessed whole
    "/connections/{connection_id}/packs/{pack_id}": "GET",
    "/connections/{connection_id}/sale-errors": "GET",
    "/connections/{connection_id}/reprocessing-jobs": "POST",
    "/connections/{connection_id}/reprocessing-jobs/{job_id}": "GET",
}
VERIFY_OP = "#operations-default-get_verification_connections__connection_id__sales__sale_id__verification_get"


@pytest.fixture(scope="module")
def stack() -> Iterator[EmbeddedStack]:
    data = json.loads(DEFAULT_SCENARIO.read_text())
    data["faults"] = [f for f in data["faults"] if f["kind"] != "latency"]
    with EmbeddedStack(Scenario.model_validate(data), api_port=0) as running:
        yield running


@pytest.fixture(scope="module")
def chromium() -> str:
    executable = find_chromium()
    if executable is None:
        pytest.fail(
            "Chromium is not installed: `make venv` installs Debian's chromium when run as root "
            "(apt-get install -y chromium); install it, then run the tests again."
        )
    return executable


def _js(selector: str) -> str:
    return json.dumps(selector)


def test_the_api_page_lists_every_contract_route_and_try_it_out_answers_200(
    stack: EmbeddedStack, chromium: str
) -> None:
    assert stack.api is not None
    with chromium_page(chromium) as page:
        page.navigate(f"{stack.api.url}/docs")
        page.wait_for("document.querySelectorAll('.opblock').length >= 7", what="the operations to render")
        listed = page.evaluate(
            "Array.from(document.querySelectorAll('.opblock')).map(op => ["
            " op.querySelector('.opblock-summary-method').textContent,"
            " op.querySelector('.opblock-summary-path').getAttribute('data-path')])"
        )
        assert sorted((path, method) for method, path in listed) == sorted(CONTRACT.items())
        status, body, url = _try_verification(page, "mla-main", "2000009101000021")
        page.evaluate(f"document.querySelector({_js(VERIFY_OP)}).scrollIntoView()")
        page.screenshot(ARTIFACT)
    assert status == "200", body[:500]
    assert url == f"{stack.api.url}/connections/mla-main/sales/2000009101000021/verification"
    report = json.loads(body)
    assert report["sale_id"] == "2000009101000021" and report["next_action"] == "relink"
    assert ARTIFACT.stat().st_size > 10_000


def _try_verification(page: Page, connection_id: str, sale_id: str) -> tuple[str, str, str]:
    """Expand the verification route, "Try it out", fill both path parameters, Execute; (status, body, URL)."""
    op = VERIFY_OP
    page.evaluate(f"document.querySelector({_js(op + ' .opblock-summary-control')}).click()")
    page.wait_for(f"!!document.querySelector({_js(op + ' .try-out__btn')})", what="Try it out")
    page.evaluate(f"document.querySelector({_js(op + ' .try-out__btn')}).click()")
    field = op + ' tr[data-param-name="{}"] input'
    page.wait_for(f"!!document.querySelector({_js(field.format('sale_id'))})", what="the parameter inputs")
    page.type_text(field.format("connection_id"), connection_id)
    page.type_text(field.format("sale_id"), sale_id)
    live = op + " .live-responses-table tbody"
    for _ in range(20):  # Swagger UI debounces its inputs: Execute again until it takes both values
        time.sleep(0.3)
        page.evaluate(f"document.querySelector({_js(op + ' .btn.execute')}).click()")
        try:
            page.wait_for(f"!!document.querySelector({_js(live + ' .response-col_status')})", timeout=3)
            break
        except CdpError:
            continue
    status = page.wait_for(
        f"document.querySelector({_js(live + ' .response-col_status')}).textContent.trim()", what="the response"
    )
    body = page.evaluate(f"document.querySelector({_js(live + ' .response-col_description pre')}).textContent")
    url = page.evaluate(f"document.querySelector({_js(op + ' .request-url pre')}).textContent")
    return str(status), str(body), str(url)


def test_the_artifact_folder_is_gitignored() -> None:
    assert "test-artifacts/" in (ROOT / ".gitignore").read_text().splitlines()
    assert Path(ARTIFACT).parent.name == "test-artifacts"
