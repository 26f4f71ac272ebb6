"""The console's files and texts, without a browser: what /console serves, and catalogues that cover the API's words.

The page translates the API's codes (reasons, error types, check names, outcomes) itself; a code the catalogues lack
would show raw, so every code the domain defines must be in both languages, and the English seller actions must be
the API's own (``SELLER_ACTIONS``), word for word.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from sales_recovery_cli.console_site import ASSETS, ConsoleSite
from shared.models import SELLER_ACTIONS, ErrorType, IdentifierKind, NextAction, Outcome, Reason, Trigger
from tests.conftest import ROOT

CATALOGUES = {lang: json.loads((ASSETS / "i18n" / f"{lang}.json").read_text()) for lang in ("en", "es")}


def _keys(node: dict[str, Any], prefix: str = "") -> set[str]:
    found: set[str] = set()
    for key, value in node.items():
        found |= _keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key}
    return found


def _check_names() -> set[str]:
    """Every ``Check(name="...")`` the domain can answer, read from its source."""
    names: set[str] = set()
    for path in (ROOT / "src" / "shared").rglob("*.py"):
        names |= set(re.findall(r'Check\(\s*name="([a-z_]+)"', path.read_text()))
    return names


def test_both_languages_have_the_same_texts() -> None:
    assert _keys(CATALOGUES["en"]) == _keys(CATALOGUES["es"])
    for lang, catalogue in CATALOGUES.items():
        empty = [key for key in _keys(catalogue) if not _lookup(catalogue, key).strip()]
        assert empty == [], lang


def _lookup(catalogue: dict[str, Any], key: str) -> str:
    node: Any = catalogue
    for part in key.split("."):
        node = node[part]
    return str(node)


def test_every_code_the_api_answers_has_a_text() -> None:
    en = CATALOGUES["en"]
    assert {r.value for r in Reason} <= set(en["reason"])
    assert {r.value for r in Reason} == set(en["action"])
    assert {e.value for e in ErrorType} == set(en["error_type"])
    assert {o.value for o in Outcome} == set(en["outcome"])
    assert {n.value for n in NextAction} == set(en["next"])
    assert {k.value for k in IdentifierKind} <= set(en["kind"])
    assert {k.value for k in Trigger} == set(en["trigger"])
    checks = _check_names()
    assert {"sale_id", "products", "payment_verified"} <= checks  # the source scan finds them
    assert checks == set(en["check"])


@pytest.mark.parametrize("lang", ["en", "es"])
def test_every_reason_and_outcome_of_the_domain_is_said_in_each_language(lang: str) -> None:
    # The page says a reason, its seller action and an outcome from these; a missing one would show the raw code.
    catalogue = CATALOGUES[lang]
    groups = (
        ("reason", Reason),
        ("action", Reason),
        ("outcome", Outcome),
        ("next", NextAction),
        ("next_cart", NextAction),
    )
    for group, codes in groups:
        missing = sorted(code.value for code in codes if not str(catalogue[group].get(code.value, "")).strip())
        assert missing == [], (lang, group)
    missing_types = sorted(e.value for e in ErrorType if not str(catalogue["error_text"].get(e.value, "")).strip())
    assert missing_types == [], lang


def _api_error_codes() -> set[str]:
    """Every ``error`` code a 4xx/5xx body can carry to the page: the API's handlers, the signing forwarder's refusals
    and the console's own files, read from their source."""
    src = ROOT / "src"
    app = (src / "functions" / "api" / "app.py").read_text()
    codes = set(re.findall(r'_error\(\s*[\w.]+,\s*"([a-z_]+)"', app))
    codes |= set(re.findall(r'_unavailable\(\s*"([a-z_]+)"', app))
    codes |= set(re.findall(r'"error": "([a-z_]+)"', app))
    codes |= set(
        re.findall(r'_refuse\(\s*\d+,\s*"([a-z_]+)"', (src / "sales_recovery_cli" / "forwarder.py").read_text())
    )
    codes |= set(re.findall(r'"error": "([a-z_]+)"', (src / "sales_recovery_cli" / "console_site.py").read_text()))
    return codes


def _rejection_reasons() -> set[str]:
    """Every reason a bulk job rejects an entry with (``RejectedId(..., reason=...)`` in shared/bulk.py)."""
    from shared import bulk_errors

    found: set[str] = set()
    for value in re.findall(
        r"RejectedId\((?:[^()]|\([^()]*\))*?reason=([\w.\"]+)", (ROOT / "src" / "shared" / "bulk.py").read_text()
    ):
        if value.startswith('"'):
            found.add(value.strip('"'))
        elif value.startswith("Reason."):
            found.add(Reason[value.split(".")[1]].value)
        else:
            found.add(getattr(bulk_errors, value))
    return found


def _connection_causes() -> set[str]:
    """The causes a refused connection is stored with: the fixed ones and the fallbacks when ML names none."""
    causes: set[str] = set()
    for path in (ROOT / "src" / "shared").rglob("*.py"):
        text = path.read_text()
        causes |= set(re.findall(r'cause="([a-z_]+)"', text))
        causes |= set(re.findall(r'cause = [\w.]+ or "([a-z_]+)"', text))
        causes |= set(re.findall(r'cause=[\w.]+ or "([a-z_]+)"', text))
    return causes


@pytest.mark.parametrize("lang", ["en", "es"])
def test_every_error_code_rejection_and_cause_the_page_can_receive_is_said_in_each_language(lang: str) -> None:
    catalogue = CATALOGUES[lang]
    codes = _api_error_codes()
    assert {"not_a_cart", "pack_not_seen", "not_in_error_list", "missing_console_token", "console"} <= codes  # found
    assert sorted(codes - set(catalogue["api_error"])) == [], lang
    assert "network" in catalogue["api_error"]  # the page's own: no answer arrived
    rejections = _rejection_reasons()
    assert {"invalid_sale_id", "not_a_sale_id", "not_queued"} <= rejections
    assert sorted(rejections - set(catalogue["rejected"])) == [], lang
    causes = _connection_causes()
    assert {"invalid_grant", "forbidden", "token_owner_mismatch", "unknown"} <= causes
    assert sorted(causes - set(catalogue["cause"])) == [], lang


def test_a_translation_keeps_the_placeholders_of_its_english() -> None:
    en, es = CATALOGUES["en"], CATALOGUES["es"]
    differ = [
        key
        for key in _keys(en)
        if set(re.findall(r"\{(\w+)\}", _lookup(en, key))) != set(re.findall(r"\{(\w+)\}", _lookup(es, key)))
    ]
    assert differ == []


def test_every_text_the_script_asks_for_is_in_the_catalogues() -> None:
    script = (ASSETS / "console.js").read_text()
    asked = set(re.findall(r'\bt\("([a-z_]+\.[a-z_]+)"', script)) | set(
        re.findall(r'linkedText\("([a-z_]+\.[a-z_]+)"', script)
    )
    asked |= set(re.findall(r'data-i18n="([a-z_]+\.[a-z_]+)"', (ASSETS / "index.html").read_text()))
    assert {"ui.nav_pack", "ui.relink_cart", "ui.in_cart"} <= asked
    assert sorted(asked - _keys(CATALOGUES["en"])) == []


def test_the_english_seller_actions_are_the_apis_own() -> None:
    assert CATALOGUES["en"]["action"] == {reason.value: text for reason, text in SELLER_ACTIONS.items()}


def test_the_site_serves_its_files_and_nothing_else() -> None:
    site = ConsoleSite(connections=["mla-main", "mlb-second"])
    status, headers, body = site.answer("GET", "/console/") or (0, [], b"")
    assert status == 200 and b'src="console.js"' in body
    assert dict(headers)["Content-Type"].startswith("text/html")
    assert "frame-ancestors 'none'" in dict(headers)["Content-Security-Policy"]
    assert (site.answer("GET", "/console") or (0,))[0] == 308
    config = json.loads((site.answer("GET", "/console/config.json") or (0, [], b""))[2])
    assert config == {"connections": ["mla-main", "mlb-second"], "mode": "local", "api_url": None}
    for outside in (
        "/console/../pyproject.toml",
        "/console/%2e%2e/pyproject.toml",
        "/console/i18n/../../console_site.py",
    ):
        assert (site.answer("GET", outside) or (0,))[0] == 404, outside
    assert (site.answer("POST", "/console/") or (0,))[0] == 405
    assert site.answer("GET", "/connections/mla-main") is None
    assert site.answer("GET", "/consoles") is None


@pytest.mark.parametrize("name", ["index.html", "console.js", "console.css", "i18n/en.json", "i18n/es.json"])
def test_the_page_loads_nothing_from_elsewhere(name: str) -> None:
    # The one absolute URL is a link out, never loaded: the execution in the AWS console.
    text = (ASSETS / name).read_text().replace("https://${region}.console.aws.amazon.com/states/", "")
    assert re.search(r"https?:|//[a-z]", text) is None, name


def test_the_assets_ship_with_the_package() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    for pattern in re.findall(r'"(console/[^"]+)"', pyproject):
        assert list(Path(ASSETS.parent).glob(pattern)), pattern
    shipped = {p.relative_to(ASSETS.parent).as_posix() for p in ASSETS.rglob("*") if p.is_file()}
    patterns = re.findall(r'"(console/[^"]+)"', pyproject)
    assert all(any(Path(f).match(p) for p in patterns) for f in shipped), shipped
