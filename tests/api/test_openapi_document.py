"""GET /openapi.json and GET /docs: the OpenAPI document Powertools generates from the routes, and its page."""

from __future__ import annotations

from typing import Any

from functions.api.app import ROUTES
from tests.conftest import api_event, lambda_context

Api = Any
CONTRACT = {  # DESIGN §3: the seven routes, and §3.1's connection state; nothing else
    "/connections/{connection_id}": {"get"},
    "/connections/{connection_id}/sales/{sale_id}/verification": {"get"},
    "/connections/{connection_id}/sales/{sale_id}/resync": {"post"},
    "/connections/{connection_id}/sales/{sale_id}/relink": {"post"},
    "/connections/{connection_id}/packs/{pack_id}/relink": {"post"},
    "/connections/{connection_id}/packs/{pack_id}": {"get"},
    "/connections/{connection_id}/sales/{sale_id}": {"get"},
    "/connections/{connection_id}/sale-errors": {"get"},
    "/connections/{connection_id}/reprocessing-jobs": {"post"},
    "/connections/{connection_id}/reprocessing-jobs/{job_id}": {"get"},
}


def test_the_openapi_document_lists_every_contract_route(call_api: Api) -> None:
    status, document, headers = call_api("GET", "/openapi.json")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "sales-recovery" and document["info"]["description"]
    assert {path: set(ops) for path, ops in document["paths"].items()} == CONTRACT
    errors = document["paths"]["/connections/{connection_id}/sale-errors"]["get"]
    assert {p["name"] for p in errors["parameters"]} == {"connection_id", "error_type", "limit", "cursor"}


def test_the_document_names_the_stage_as_its_server_on_the_execute_api_host(call_api: Api) -> None:
    _, document, _ = call_api("GET", "/openapi.json")
    assert document["servers"] == [{"url": "/dev"}]  # the sample events' stage, in requestContext.path


def test_the_docs_page_is_swagger_ui_with_its_assets_inline(aws: Any) -> None:
    from functions.api.app import lambda_handler

    response = lambda_handler(api_event("GET", "/docs"), lambda_context())
    assert response["statusCode"] == 200
    html = response["body"]
    assert "SwaggerUIBundle" in html and "<style>" in html
    assert "https://" not in html.split("<body")[0]  # no CDN: the page works offline
    for path in CONTRACT:
        assert path in html


def test_the_new_routes_are_get_only_and_known_to_the_router(call_api: Api) -> None:
    assert ROUTES["/docs"] == {"GET"} and ROUTES["/openapi.json"] == {"GET"}
    status, _, headers = call_api("POST", "/openapi.json", body="{}")
    assert status == 405 and headers["Allow"] == "GET"
