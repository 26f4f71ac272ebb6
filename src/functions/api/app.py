"""REST API of DESIGN §3: verification, resync, relink, sale state and the error list.

Thin: each route parses, calls one domain function and maps the answer. Domain exceptions become 4xx/5xx bodies
``{"message", "error", ...}`` in one place (the exception handlers below) that a person can act on.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict
from snapshot_restore_py import register_after_restore, register_before_snapshot

from shared.answers import (
    BODY_ERRORS,
    ConnectionAnswer,
    JobAccepted,
    JobView,
    PackAnswer,
    PackRelinkAnswer,
    RecoveryAnswer,
    RelinkAnswer,
    SaleAnswer,
    SaleErrorsPage,
    VerificationReport,
    documented,
)
from shared.bulk_errors import NOT_QUEUED, NOT_QUEUED_MESSAGE, NoSaleIds, NoValidSaleIds, QueueSendError, TooManyIds
from shared.errors import (
    ConnectionNotFound,
    MarketplacePartialOrder,
    NotACart,
    NotASaleId,
    NotInErrorList,
    PackNeverSeen,
    SaleNeverSeen,
)
from shared.identifiers import InvalidConnectionId, InvalidIdentifier
from shared.jobs import RejectedId
from shared.meli.deadline import meli_deadline
from shared.meli.errors import MeliDeadlineReached, MeliError, MeliTransientError
from shared.models import Outcome, Reason
from shared.observability import logger, metrics, record_outcome, tracer
from shared.settings import Settings
from shared.snapstart import LAZY_MODULES, after_restore, warm
from shared.stores.dynamo import InvalidCursor
from shared.wiring import build_bulk_service, build_service

if TYPE_CHECKING:
    from shared.bulk import BulkService
    from shared.recovery import RecoveryService

app = APIGatewayRestResolver(enable_validation=True)
API_TITLE, API_VERSION = "sales-recovery", "0.1.0"
API_DESCRIPTION = (
    "Recovers Mercado Libre sales that never reached the seller platform: verify a sale, resync it from the error "
    "list, relink it by sale id, reprocess many in bulk, follow a job. AWS_IAM (SigV4) on every route in the cloud."
)

SALE = "/connections/<connection_id>/sales/<sale_id>"
PACK = "/connections/<connection_id>/packs/<pack_id>"
ROUTES = {  # path template -> methods; used to tell a wrong method (405) from an unknown path (404)
    "/connections/{connection_id}": {"GET"},
    "/connections/{connection_id}/sales/{sale_id}/verification": {"GET"},
    "/connections/{connection_id}/sales/{sale_id}/resync": {"POST"},
    "/connections/{connection_id}/sales/{sale_id}/relink": {"POST"},
    "/connections/{connection_id}/sales/{sale_id}": {"GET"},
    "/connections/{connection_id}/packs/{pack_id}/relink": {"POST"},
    "/connections/{connection_id}/packs/{pack_id}": {"GET"},
    "/connections/{connection_id}/sale-errors": {"GET"},
    "/connections/{connection_id}/reprocessing-jobs": {"POST"},
    "/connections/{connection_id}/reprocessing-jobs/{job_id}": {"GET"},
    "/docs": {"GET"},  # the API page (Swagger UI)
    "/openapi.json": {"GET"},  # its OpenAPI document
}
MAX_BODY_BYTES = 64 * 1024
ANSWER_SECONDS = 3.0  # kept from Mercado Libre's share of a request's time: the writes after its reads, the answer
# Imported by a request only when it needs them (the /docs and /openapi.json routes, the job routes, a keyed job
# submission): the before-snapshot hook imports them.
API_LAZY_MODULES = (
    "aws_lambda_powertools.event_handler.openapi.models",
    "aws_lambda_powertools.event_handler.openapi.swagger_ui",
    "shared.bulk",
    "aws_lambda_powertools.utilities.idempotency",
    "aws_lambda_powertools.utilities.idempotency.serialization.custom_dict",
)
MAX_JOB_BODY_BYTES = 1024 * 1024  # 10,000 ids as text fit with room to spare
JOB_ID = re.compile(r"^[0-9a-f]{32}$")


class BadRequestBody(ValueError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def service() -> RecoveryService:
    return build_service(Settings.from_env(), notifier=True, workflow=True)


def bulk_service() -> BulkService:
    return build_bulk_service(Settings.from_env(), queue=True)


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response[str]:
    return Response(
        status_code=status, content_type=content_types.APPLICATION_JSON, body=json.dumps(body), headers=headers
    )


def _optional_json_object_body(max_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """POST routes take no body, or a JSON object (reserved for options); anything else is a client error."""
    event = app.current_event
    raw = event.body or ""
    if not raw.strip():
        return {}
    if len(raw.encode()) > max_bytes:
        raise BadRequestBody(f"The body is larger than {max_bytes} bytes.", status=413)
    content_type = (event.headers or {}).get("content-type") or (event.headers or {}).get("Content-Type") or ""
    if content_type and "json" not in content_type.lower():
        raise BadRequestBody(
            f"Send JSON (Content-Type: application/json), not '{content_type}'. "
            "With curl, add -H 'Content-Type: application/json' (curl -d sends a form by default).",
            status=415,
        )
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadRequestBody(f"The body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}.") from exc
    if not isinstance(body, dict):
        raise BadRequestBody("The body must be a JSON object (or empty).")
    return body


# --- routes -------------------------------------------------------------------------------------------------------


@app.get(
    "/connections/<connection_id>",
    responses=documented(200, ConnectionAnswer, "The connection and whether it may call Mercado Libre"),
)
def get_connection(connection_id: str) -> Response[str]:
    view = service().connection_view(connection_id)
    return _json(200, view.model_dump(mode="json", exclude_none=True))


@app.get(
    f"{SALE}/verification",
    responses=documented(200, VerificationReport, "What the seed's checks found, and what to do next"),
)
def get_verification(connection_id: str, sale_id: str) -> Response[str]:
    report = service().verify(connection_id, sale_id)
    return _json(200, report.model_dump(mode="json", exclude_none=True))


@app.post(
    f"{SALE}/resync",
    responses=documented(
        200,
        RecoveryAnswer,
        "The sale's outcome after the resync (escalated to the help desk if it still fails)",
        e409="The sale is not in the error list: resync only applies to listed sales; relink it",
        **BODY_ERRORS,
    ),
)
def post_resync(connection_id: str, sale_id: str) -> Response[str]:
    _optional_json_object_body()
    result = service().resyncs.resync(connection_id, sale_id)
    record_outcome(result, operation="resync")
    return _json(200, result.to_public())


@app.post(
    f"{SALE}/relink",
    responses={
        **documented(202, RelinkAnswer, "The relink state machine runs; follow status_url", **BODY_ERRORS),
        200: {
            "description": "Already in the platform: nothing started",
            "content": {"application/json": {"model": RelinkAnswer}},
        },
    },
)
def post_relink(connection_id: str, sale_id: str) -> Response[str]:
    _optional_json_object_body()
    started = service().relinks.start(connection_id, sale_id, request_key=_request_key())
    sale_id = sale_id.strip()
    body: dict[str, Any] = {"connection_id": connection_id, "sale_id": sale_id, "outcome": started.outcome.value}
    if started.pack_id is not None:  # a cart's sale: the whole cart was relinked
        body |= {"pack_id": started.pack_id, "sale_ids": started.sale_ids or []}
    if started.settled is not None:  # the request's episode is settled: its outcome, nothing started
        body |= started.settled.model_dump(
            mode="json", include={"reason", "seller_action", "episode"}, exclude_none=True
        )
    if started.outcome is Outcome.ALREADY_REFLECTED:
        return _json(200, body)
    if started.execution is not None:
        body |= {"execution_id": started.execution.execution_arn, "execution_name": started.execution.name}
    body["status_url"] = f"/connections/{connection_id}/sales/{sale_id}"
    status = 202 if started.outcome is Outcome.IN_PROGRESS else 200
    return _json(status, body)


def _request_key() -> str | None:
    request_key = (app.current_event.get_header_value("Idempotency-Key", case_sensitive=False) or "").strip() or None
    if request_key is not None and len(request_key) > 128:
        raise BadRequestBody("The Idempotency-Key header is longer than 128 characters.")
    return request_key


@app.post(
    f"{PACK}/relink",
    responses={
        **documented(
            202,
            PackRelinkAnswer,
            "The relink state machine runs for the whole cart; follow status_url",
            e422="The id is not the pack of a cart of this connection (its kind and sale ids are given)",
            **BODY_ERRORS,
        ),
        200: {
            "description": "Already in the platform: nothing started",
            "content": {"application/json": {"model": PackRelinkAnswer}},
        },
    },
)
def post_pack_relink(connection_id: str, pack_id: str) -> Response[str]:
    _optional_json_object_body()
    started = service().relinks.start_pack(connection_id, pack_id, request_key=_request_key())
    pack_id = pack_id.strip()
    body: dict[str, Any] = {
        "connection_id": connection_id,
        "pack_id": pack_id,
        "sale_ids": started.sale_ids or [],
        "outcome": started.outcome.value,
    }
    if started.settled is not None:
        body |= started.settled.model_dump(
            mode="json", include={"reason", "seller_action", "episode"}, exclude_none=True
        )
    if started.outcome is Outcome.ALREADY_REFLECTED:
        return _json(200, body)
    if started.execution is not None:
        body |= {"execution_id": started.execution.execution_arn, "execution_name": started.execution.name}
    body["status_url"] = f"/connections/{connection_id}/packs/{pack_id}"
    return _json(202 if started.outcome is Outcome.IN_PROGRESS else 200, body)


@app.get(PACK, responses=documented(200, PackAnswer, "Where the cart stands"))
def get_pack(connection_id: str, pack_id: str) -> Response[str]:
    state = service().views.pack_state(connection_id, pack_id)
    return _json(200, state.model_dump(mode="json", exclude_none=True))


@app.get(SALE, responses=documented(200, SaleAnswer, "Where the sale stands"))
def get_sale(connection_id: str, sale_id: str) -> Response[str]:
    state, entry = service().views.sale_state(connection_id, sale_id)
    body = state.model_dump(mode="json", exclude_none=True)
    if state.reason is not None:
        from shared.models import SELLER_ACTIONS

        body["seller_action"] = SELLER_ACTIONS.get(state.reason)
    if entry is not None:
        body["error_entry"] = entry.model_dump(mode="json", exclude_none=True)
    return _json(200, body)


@app.get(
    "/connections/<connection_id>/sale-errors",
    responses=documented(200, SaleErrorsPage, "One page of the error list", e422="A query parameter is out of range"),
)
def get_sale_errors(
    connection_id: str,
    error_type: Annotated[str | None, Query(pattern=r"^[a-z][a-z_]{0,63}$")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> Response[str]:
    page = service().views.list_errors(connection_id, error_type=error_type, limit=limit, cursor=cursor)
    return _json(
        200,
        {
            "connection_id": connection_id,
            "error_type": error_type,
            "count": len(page.items),
            "items": [entry.model_dump(mode="json", exclude_none=True) for entry in page.items],
            "next_cursor": page.next_cursor,
        },
    )


@app.post(
    "/connections/<connection_id>/reprocessing-jobs",
    responses=documented(
        202,
        JobAccepted,
        "The job is written and its ids are queued",
        e409="A request with this Idempotency-Key is in progress; retry shortly",
        e422="No valid sale id, too many ids, or an Idempotency-Key reused with other ids",
        **BODY_ERRORS,
    ),
)
def post_reprocessing_job(connection_id: str) -> Response[str]:
    body = _optional_json_object_body(MAX_JOB_BODY_BYTES)
    if "sale_ids" not in body:
        raise BadRequestBody(
            'Send {"sale_ids": ["2000001234567890", ...]} or {"sale_ids": "2000001234567890, 2000001234567891"}.'
        )
    unknown = sorted(set(body) - {"sale_ids"})
    if unknown:
        raise BadRequestBody(f'Unknown field(s) {", ".join(unknown)}; the body takes only "sale_ids".')
    key = app.current_event.get_header_value("Idempotency-Key", case_sensitive=False)
    if key:
        if len(key) > 128:
            raise BadRequestBody("The Idempotency-Key header is longer than 128 characters.")
        # A retried submission with the same key answers the first job instead of queueing every id again.
        submit_once = _idempotent_submission()
        answer = submit_once(request=JobRequest(connection_id=connection_id, key=key, sale_ids=body["sale_ids"]))
        if "rejected" not in answer:  # a replay: the record keeps the job, the rejections are derived again
            answer = _with_rejections(answer, body["sale_ids"])
    else:
        answer = _submit_job(connection_id, body["sale_ids"])
    return _json(202, answer)


class JobRequest(BaseModel):
    model_config = ConfigDict(defer_build=True)

    connection_id: str
    key: str
    sale_ids: Any


class IdempotencyKeyReused(ValueError):
    """The Idempotency-Key came before with other sale ids (Powertools' IdempotencyValidationError)."""


class IdempotencyKeyInFlight(RuntimeError):
    """A request with this Idempotency-Key is running (Powertools' IdempotencyAlreadyInProgressError)."""


# The idempotency record is one DynamoDB item (400 KB at most) and Powertools stores the whole answer in it. The
# answer lists every rejected value with its message: 10,000 values of 80 random characters (clipped to 64) make
# about 3 MB of JSON, 609 KB even gzipped (812 KB in base64), so compressing cannot bound it. The record keeps the
# answer without that list instead (a few hundred bytes whatever the request), and a replay derives the list again
# from the request's sale_ids: Powertools has checked that they hash the same as the first request's
# (payload_validation_jmespath), and parsing is deterministic and cheap (about 0.1 s for 10,000 values). Only a
# deploy that changes the parsing between a request and its replay (within the record's 24 hours) can make the two
# lists differ: logged.
# Ids the queue refused (``not_queued``: the job runs without them) depend on that moment, not on the request: the
# record keeps them (at most the accepted ids, 10,000 x 19 digits).
def _stored_job_answer(answer: dict[str, Any]) -> dict[str, Any]:
    return {
        **{k: v for k, v in answer.items() if k != "rejected"},
        "not_queued": [r["sale_id"] for r in answer["rejected"] if r["reason"] == NOT_QUEUED],
    }


@lru_cache(maxsize=1)
def _idempotent_submission() -> Callable[..., dict[str, Any]]:
    """``_submit_job`` behind Powertools idempotency, built on the first keyed submission: Powertools' idempotency
    package imports boto3 and builds a DynamoDB client, which no other request needs at that moment."""
    import boto3
    from aws_lambda_powertools.utilities.idempotency import (
        DynamoDBPersistenceLayer,
        IdempotencyConfig,
        idempotent_function,
    )
    from aws_lambda_powertools.utilities.idempotency.serialization.custom_dict import CustomDictSerializer

    persistence = DynamoDBPersistenceLayer(table_name="idempotency", boto3_client=boto3.client("dynamodb"))
    config = IdempotencyConfig(
        event_key_jmespath="[connection_id, key]",
        payload_validation_jmespath="sale_ids",
        expires_after_seconds=24 * 3600,
    )

    @idempotent_function(
        data_keyword_argument="request",
        persistence_store=persistence,
        config=config,
        output_serializer=CustomDictSerializer(to_dict=_stored_job_answer, from_dict=dict),
    )
    def submit_job_once(request: JobRequest) -> dict[str, Any]:
        return _submit_job(request.connection_id, request.sale_ids)

    def submit(request: JobRequest) -> dict[str, Any]:
        from aws_lambda_powertools.utilities.idempotency.exceptions import (
            IdempotencyAlreadyInProgressError,
            IdempotencyValidationError,
        )

        persistence.table_name = Settings.from_env().idempotency_table  # per request: the stack's, from env
        config.register_lambda_context(app.lambda_context)  # the in-progress lease ends with this invocation
        try:
            return submit_job_once(request=request)
        except IdempotencyValidationError as exc:
            raise IdempotencyKeyReused(str(exc)) from exc
        except IdempotencyAlreadyInProgressError as exc:
            raise IdempotencyKeyInFlight(str(exc)) from exc

    return submit


def _submit_job(connection_id: str, sale_ids: Any) -> dict[str, Any]:
    submitted = bulk_service().submit(connection_id, sale_ids)
    job = submitted.job
    counts = job.model_dump(include={"job_id", "connection_id", "accepted", "duplicates", "messages"})
    status_url = f"/connections/{connection_id}/reprocessing-jobs/{job.job_id}"
    answer = JobAccepted(
        **counts,
        status=job.status,
        rejected=submitted.rejected,
        rejected_count=len(submitted.rejected),
        status_url=status_url,
    )
    return answer.model_dump(mode="json", exclude_none=True)


def _with_rejections(stored: dict[str, Any], sale_ids: Any) -> dict[str, Any]:
    """A replayed answer made whole again: the rejections of the (same) request, in the first answer's order."""
    from shared.bulk import parse_sale_ids  # the bulk service's module: imported by the job routes only

    rejected = parse_sale_ids(sale_ids, max_ids=sys.maxsize).rejected
    rejected += [
        RejectedId(sale_id=s, reason=NOT_QUEUED, message=NOT_QUEUED_MESSAGE) for s in stored.get("not_queued", [])
    ]
    if len(rejected) != stored.get("rejected_count"):
        logger.warning(
            "replayed job answer: the request's rejections differ from the first answer's",
            extra={"job_id": stored.get("job_id"), "then": stored.get("rejected_count"), "now": len(rejected)},
        )
    whole = {**stored, "rejected": [r.model_dump(mode="json", exclude_none=True) for r in rejected]}
    return {name: whole[name] for name in JobAccepted.model_fields if name in whole}


@app.get(
    "/connections/<connection_id>/reprocessing-jobs/<job_id>",
    responses=documented(
        200, JobView, "The job, its counts and one page of items", e422="A query parameter is out of range"
    ),
)
def get_reprocessing_job(
    connection_id: str,
    job_id: str,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> Response[str]:
    if not JOB_ID.fullmatch(job_id):
        return _error(400, "invalid_job_id", f"'{job_id[:40]}' is not a job id (32 hexadecimal characters).")
    service = bulk_service()
    job = service.job(connection_id, job_id)
    if job is None:
        return _error(404, "job_not_found", f"No reprocessing job {job_id} in connection {connection_id}.")
    page = service.job_items(job_id, limit=limit, cursor=cursor)
    body = job.model_dump(mode="json", exclude_none=True, exclude={"counts", "handed_over"})
    body |= {
        "status": job.status.value,
        "counts": job.all_counts(),
        "items": [item.model_dump(mode="json", exclude_none=True, exclude={"updated_at"}) for item in page.items],
        "next_cursor": page.next_cursor,
    }
    return _json(200, body)


# --- the API page -----------------------------------------------------------------------------------------------------
# GET /docs: Swagger UI, its JS and CSS inlined (no CDN); GET /openapi.json: the document. The page is what
# Powertools' ``enable_swagger`` serves, as a route of ours: ``enable_swagger`` imports the OpenAPI models (67-140 ms)
# when it is called, on every cold start; here they are imported by the first request for the page or the document.


def _openapi_document() -> str:
    """The OpenAPI document of the contract routes, as JSON, its server the base path the request came by."""
    from aws_lambda_powertools.event_handler.openapi.models import Server

    base = app._get_base_path()  # "/<stage>" on the execute-api host, "" on the local server or a custom domain
    return app.get_openapi_json_schema(
        title=API_TITLE, version=API_VERSION, description=API_DESCRIPTION, servers=[Server(url=base or "/")]
    )


@app.get("/openapi.json", include_in_schema=False)
def get_openapi_document() -> Response[str]:
    """The OpenAPI document of the contract routes, the same one the /docs page shows."""
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=_openapi_document())


@app.get("/docs", include_in_schema=False)
def get_docs_page() -> Response[str]:
    """Swagger UI over the document, as Powertools' ``enable_swagger`` serves it (``?format=json``: the document;
    ``?format=oauth2-redirect``: Swagger UI's OAuth2 redirect page)."""
    from aws_lambda_powertools.event_handler.openapi import swagger_ui

    query = app.current_event.query_string_parameters or {}
    if query.get("format") == "oauth2-redirect":
        return Response(status_code=200, content_type="text/html", body=swagger_ui.generate_oauth2_redirect_html())
    # "<\/": a "</script>" inside the JSON would otherwise end the page's script element.
    document = _openapi_document().replace("</", "<\\/")
    if query.get("format") == "json":
        return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=document)
    assets = Path(swagger_ui.__file__).parent
    js = (assets / "swagger-ui-bundle.min.js").read_text(encoding="utf-8")
    css = (assets / "swagger-ui.min.css").read_text(encoding="utf-8")
    html = swagger_ui.generate_swagger_html(
        document, js, css, swagger_base_url="", oauth2_config=None, persist_authorization=False
    )
    return Response(status_code=200, content_type="text/html", body=html)


# --- errors: one place, bodies a person can act on -------------------------------------------------------------------


def _error(status: int, error: str, message: str, **extra: Any) -> Response[str]:
    return _json(status, {"error": error, "message": message, **extra})


@app.exception_handler(InvalidIdentifier)
def _invalid_identifier(exc: InvalidIdentifier) -> Response[str]:
    return _error(400, "invalid_sale_id", str(exc))


@app.exception_handler(InvalidConnectionId)
def _invalid_connection(exc: InvalidConnectionId) -> Response[str]:
    return _error(400, "invalid_connection_id", str(exc))


@app.exception_handler(InvalidCursor)
def _invalid_cursor(exc: InvalidCursor) -> Response[str]:
    return _error(400, "invalid_cursor", str(exc))


@app.exception_handler(BadRequestBody)
def _bad_body(exc: BadRequestBody) -> Response[str]:
    return _error(exc.status, "invalid_body", str(exc))


@app.exception_handler(IdempotencyKeyReused)
def _key_reused(exc: IdempotencyKeyReused) -> Response[str]:
    return _error(422, "idempotency_key_reused", "This Idempotency-Key was used with a different list of sale ids.")


@app.exception_handler(IdempotencyKeyInFlight)
def _key_in_flight(exc: IdempotencyKeyInFlight) -> Response[str]:
    return _error(409, "request_in_progress", "A request with this Idempotency-Key is in progress; retry shortly.")


@app.exception_handler(NoSaleIds)
def _no_ids(exc: NoSaleIds) -> Response[str]:
    return _error(422, "no_sale_ids", str(exc))


@app.exception_handler(NoValidSaleIds)
def _no_valid_ids(exc: NoValidSaleIds) -> Response[str]:
    rejected = [r.model_dump(exclude_none=True) for r in exc.rejected[:100]]
    return _error(422, "no_valid_sale_ids", str(exc), rejected=rejected, rejected_count=len(exc.rejected))


@app.exception_handler(TooManyIds)
def _too_many(exc: TooManyIds) -> Response[str]:
    return _error(422, "too_many_sale_ids", str(exc))


@app.exception_handler(ConnectionNotFound)
def _unknown_connection(exc: ConnectionNotFound) -> Response[str]:
    return _error(404, "unknown_connection", str(exc))


@app.exception_handler(SaleNeverSeen)
def _never_seen(exc: SaleNeverSeen) -> Response[str]:
    return _error(404, "sale_not_seen", str(exc))


@app.exception_handler(PackNeverSeen)
def _pack_never_seen(exc: PackNeverSeen) -> Response[str]:
    return _error(404, "pack_not_seen", str(exc))


@app.exception_handler(NotACart)
def _not_a_cart(exc: NotACart) -> Response[str]:
    ident = exc.resolution
    return _error(422, "not_a_cart", str(exc).strip(), identifier_kind=ident.kind.value, sale_ids=ident.sale_ids)


@app.exception_handler(NotInErrorList)
def _not_listed(exc: NotInErrorList) -> Response[str]:
    return _error(409, "not_in_error_list", str(exc), next_action="relink")


@app.exception_handler(NotASaleId)
def _not_a_sale(exc: NotASaleId) -> Response[str]:
    ident = exc.resolution
    return _error(
        422,
        "not_a_sale_id",
        str(exc).strip(),
        outcome=Outcome.NOT_REFLECTABLE.value,
        reason=Reason.NOT_A_SALE_ID.value,
        identifier_kind=ident.kind.value,
        sale_ids=ident.sale_ids,
    )


@app.exception_handler(QueueSendError)
def _queue_refused(exc: QueueSendError) -> Response[str]:
    # Only when no message of the job went out (a job partly queued is answered 202): nothing of it was kept.
    logger.warning("bulk queue refused a job's messages", extra={"error": str(exc)})
    return _unavailable(
        "queue_unavailable",
        "The job's messages could not be queued, so no job was created and nothing was kept. "
        "Try again in a minute (the same Idempotency-Key may be sent).",
    )


def _unavailable(error: str, message: str) -> Response[str]:
    """503 for a dependency that did not answer: nothing was changed, the same request may be sent again."""
    return _json(503, {"error": error, "message": message, "retryable": True}, headers={"Retry-After": "30"})


@app.exception_handler(MeliTransientError)
def _marketplace_down(exc: MeliTransientError) -> Response[str]:
    logger.warning("Mercado Libre unavailable", extra={"error": str(exc)})
    what = "in the time this request has" if isinstance(exc, MeliDeadlineReached) else "after several tries"
    return _unavailable(
        "marketplace_unavailable",
        f"Mercado Libre did not answer {what} ({exc}). Nothing was changed; try again in a minute.",
    )


@app.exception_handler(MarketplacePartialOrder)
def _marketplace_partial_order(exc: MarketplacePartialOrder) -> Response[str]:
    # ML answered 206: the sale is not blocked, but only a whole order is imported. Nothing was changed.
    logger.warning("Mercado Libre answered a partial order", extra={"missing": exc.missing})
    return _unavailable("marketplace_partial_order", f"{exc}. Nothing was changed; try again in a minute.")


@app.exception_handler(MeliError)
def _marketplace_refused(exc: MeliError) -> Response[str]:
    return _error(502, "marketplace_error", f"Mercado Libre refused the request: {exc}.")


@app.exception_handler(RequestValidationError)
def _invalid_request(exc: RequestValidationError) -> Response[str]:
    problems = [
        f"{'.'.join(str(p) for p in err.get('loc', ())[1:]) or 'request'}: {err.get('msg', 'invalid')}"
        for err in exc.errors()
    ]
    return _error(422, "invalid_request", "; ".join(problems), details=problems)


@app.not_found
def _no_route(exc: NotFoundError) -> Response[str]:
    method = app.current_event.http_method
    path = app.current_event.path
    empty = _empty_parameter(path)
    if empty:
        return _error(400, "missing_path_parameter", f"The {empty} in {path} is empty; put the {empty} in the path.")
    allowed = _allowed_methods(path)
    if allowed:
        return _json(
            405,
            {
                "error": "method_not_allowed",
                "message": f"{method} is not allowed on {path}; use {', '.join(sorted(allowed))}.",
            },
            headers={"Allow": ", ".join(sorted(allowed))},
        )
    return _error(404, "not_found", f"No route {method} {path}. The routes are listed in the README (API).")


def _empty_parameter(path: str) -> str | None:
    """The name of a route's path parameter left empty (``/sales//verification``), in words; else None."""
    parts = path.rstrip("/").split("/")
    for template in ROUTES:
        tparts = template.split("/")
        if len(tparts) == len(parts) and all(t.startswith("{") or t == p for t, p in zip(tparts, parts, strict=True)):
            empty = [t[1:-1] for t, p in zip(tparts, parts, strict=True) if t.startswith("{") and not p.strip()]
            if empty:
                return empty[0].replace("_", " ")
    return None


def _allowed_methods(path: str) -> set[str]:
    parts = path.rstrip("/").split("/")
    for template, methods in ROUTES.items():
        tparts = template.split("/")
        if len(tparts) == len(parts) and all(t.startswith("{") or t == p for t, p in zip(tparts, parts, strict=True)):
            return methods
    return set()


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, log_event=False, clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # API Gateway waits 29 s for the answer, and the function may run as long: Mercado Libre gets what is left less
    # the time to write and answer, so a slow ML gives a 503 that says so, not API Gateway's bare 504.
    with meli_deadline(context.get_remaining_time_in_millis() / 1000 - ANSWER_SECONDS):
        return app.resolve(event, context)


# --- Lambda SnapStart (template.yaml: SnapStart on the published versions behind the `live` alias) ------------------


@register_before_snapshot
def _before_snapshot() -> None:
    """Run once per published version, before Lambda snapshots the sandbox: everything in it every restored sandbox
    starts with (shared.snapstart.warm), plus the routes' validation models and the OpenAPI document's schemas."""
    app.get_openapi_schema(title=API_TITLE, version=API_VERSION)  # builds every route's request/response models
    warmed = warm(modules=(*LAZY_MODULES, *API_LAZY_MODULES), packages=("shared", __name__.partition(".")[0]))
    logger.info("warmed before the snapshot", extra=warmed)


@register_after_restore
def _after_restore() -> None:
    """Run in every sandbox restored from the snapshot, before its first request: new clients, credentials and
    connections (the idempotency layer's client too), fresh randomness."""
    after_restore()
    _idempotent_submission.cache_clear()
