"""What the order-state tests read through the API (whole API Gateway events through ``call_api``)."""

from __future__ import annotations

from typing import Any

C = "mla-main"
Api = Any


def verification(call_api: Api, sale_id: Any) -> dict[str, Any]:
    status, body, _ = call_api("GET", f"/connections/{C}/sales/{sale_id}/verification")
    assert status == 200, body
    return dict(body)


def check(report: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(next(c for c in report["checks"] if c["name"] == name))


def sale(call_api: Api, sale_id: Any) -> dict[str, Any]:
    status, body, _ = call_api("GET", f"/connections/{C}/sales/{sale_id}")
    assert status == 200, body
    return dict(body)
