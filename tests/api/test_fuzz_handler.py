"""The schema-driven run, for now: hypothesis generates path segments and bulk bodies from the shapes of DESIGN §3
and sends them through the real API handler. Whatever arrives, the answer is never a 5xx, a 4xx always carries an
error code and a message, and a 4xx writes nothing (no table item, no queued message).

schemathesis needs an OpenAPI document of the API, which a later issue adds; until then this is the schema-driven
run. Examples are derandomized, so CI sees the same ones on every run, and no example database is written.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.simulator.server import MeliSimulator
from tests.api.test_bad_input import queued, snapshot
from tests.conftest import Aws

C = "mla-main"
SETTINGS = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

NASTY = [
    "",
    " ",
    "..",
    "..%2F..%2Fetc%2Fpasswd",
    "' OR 1=1 --",
    "<script>alert(1)</script>",
    "%00",
    "\x00",
    "\uff11\uff12\uff13",
    "\u0661\u0662",
    "2000009101000011",
    "2000006105000019",
    "MEL44031010011FMXDF01",
    "-1",
    "1e16",
    "9" * 40,
    C,
    "nope",
]
segment = st.one_of(
    st.sampled_from(NASTY),
    st.from_regex(r"[0-9]{1,22}", fullmatch=True),
    st.text(max_size=40),
)
routes = st.sampled_from(
    [
        ("GET", "/connections/{c}/sales/{s}/verification"),
        ("POST", "/connections/{c}/sales/{s}/resync"),
        ("POST", "/connections/{c}/sales/{s}/relink"),
        ("GET", "/connections/{c}/sales/{s}"),
        ("GET", "/connections/{c}/sale-errors"),
        ("GET", "/connections/{c}/reprocessing-jobs/{s}"),
        ("DELETE", "/connections/{c}/sales/{s}"),
        ("PUT", "/connections/{c}/reprocessing-jobs"),
    ]
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**25), max_value=10**25)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(NASTY),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=25,
)
bulk_bodies = st.one_of(
    st.builds(lambda ids: json.dumps({"sale_ids": ids}), json_values),
    st.builds(lambda ids: json.dumps({"sale_ids": ", ".join(ids)}), st.lists(segment, max_size=12)),
    st.builds(json.dumps, json_values),
    st.text(max_size=80),
)


def check(aws: Aws, status: int, body: Any, before: dict[str, list[Any]], messages_before: int) -> None:
    assert status < 500, body
    if 400 <= status < 500:
        assert body["error"] and body["message"], body
        assert snapshot(aws) == before
        assert queued(aws) == messages_before


def test_generated_paths_never_answer_5xx_and_4xx_writes_nothing(call_api: Any, aws: Aws, meli: MeliSimulator) -> None:
    @SETTINGS
    @given(route=routes, connection=st.one_of(st.just(C), segment), sale=segment)
    def run(route: tuple[str, str], connection: str, sale: str) -> None:
        method, template = route
        before, messages = snapshot(aws), queued(aws)
        status, body, _ = call_api(method, template.format(c=connection, s=sale))
        check(aws, status, body, before, messages)

    run()


def test_generated_bulk_bodies_never_answer_5xx_and_4xx_writes_nothing(
    call_api: Any, aws: Aws, meli: MeliSimulator
) -> None:
    @settings(SETTINGS, max_examples=30)  # each accepted body writes a job: the slower half
    @given(body=bulk_bodies, content_type=st.sampled_from(["application/json", "application/json; charset=utf-8"]))
    def run(body: str, content_type: str) -> None:
        before, messages = snapshot(aws), queued(aws)
        status, answer, _ = call_api(
            "POST", f"/connections/{C}/reprocessing-jobs", body=body, headers={"Content-Type": content_type}
        )
        check(aws, status, answer, before, messages)
        if status == 202:  # accepted ids were queued; the rejected ones each say why
            assert answer["accepted"] >= 1
            assert all(r["reason"] and r["message"] for r in answer["rejected"])

    run()
