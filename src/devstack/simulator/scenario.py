"""The scenario file of the simulated Mercado Libre API (DESIGN §4 "The scenario file").

The scenario's own structures (connections, products, reflected_sales, sale_errors, faults, quota) are strict: an
unknown key is an error that names the key and where it is, so a typo never passes silently. Marketplace objects
(orders, packs, shipments) are kept as raw dicts exactly as ML returns them, so a payload copied from ML's
documentation drops in unchanged; only the ids the simulator routes on are checked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ScenarioError(ValueError):
    """The scenario file is missing, is not JSON, or does not validate. The message says where."""


def _is_int(value: Any) -> bool:
    # bool is an int subclass in Python; an id of `true` is a typo, not an id.
    return isinstance(value, int) and not isinstance(value, bool)


def check_order(order: dict[str, Any]) -> dict[str, Any]:
    if not _is_int(order.get("id")):
        raise ValueError("an order needs an integer 'id'")
    seller = order.get("seller")
    if not isinstance(seller, dict) or not _is_int(seller.get("id")):
        raise ValueError("an order needs an integer 'seller.id' (it routes the order to a connection)")
    return order


def check_pack(pack: dict[str, Any]) -> dict[str, Any]:
    if not _is_int(pack.get("id")):
        raise ValueError("a pack needs an integer 'id'")
    orders = pack.get("orders", [])
    if not isinstance(orders, list) or not all(isinstance(o, dict) and _is_int(o.get("id")) for o in orders):
        raise ValueError("a pack's 'orders' must be a list of {\"id\": <integer>}")
    return pack


def check_shipment(shipment: dict[str, Any]) -> dict[str, Any]:
    if not _is_int(shipment.get("id")):
        raise ValueError("a shipment needs an integer 'id'")
    order_id = shipment.get("order_id")
    if order_id is not None and not _is_int(order_id):
        raise ValueError("a shipment's 'order_id' must be an integer or null")
    return shipment


Order = Annotated[dict[str, Any], AfterValidator(check_order)]
Pack = Annotated[dict[str, Any], AfterValidator(check_pack)]
Shipment = Annotated[dict[str, Any], AfterValidator(check_shipment)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Connection(_Strict):
    connection_id: str = Field(min_length=1)
    seller_id: int
    site_id: str = Field(min_length=3, max_length=3)
    access_token: str = Field(min_length=1)
    refresh_token: str = Field(min_length=1)
    expires_in: int = Field(default=21600, gt=0)
    # The seller removed the application (or changed the password): every call with its tokens answers 401 and the
    # refresh token answers 400 invalid_grant, until the seller authorises again (MeliSimulator.reconnect).
    revoked: bool = False
    # The ML user the tokens really belong to, when not the connection's seller (a connection linked with another
    # account's tokens). ML serves that user's data; the platform stores this user id with the tokens.
    token_user_id: int | None = None


class Product(_Strict):
    """A platform product linked to an ML listing (and variation) in one connection."""

    connection_id: str
    item_id: str
    variation_id: int | None = None
    sku: str | None = None
    status: Literal["active", "inactive"] = "active"
    synced: bool = True


class ReflectedSale(_Strict):
    connection_id: str
    sale_id: str

    @field_validator("sale_id", mode="before")
    @classmethod
    def _digits_as_text(cls, value: Any) -> Any:
        # Sale ids are ML order ids: JSON numbers in ML's payloads, strings in the platform.
        return str(value) if _is_int(value) else value


class SaleError(_Strict):
    connection_id: str
    sale_id: str
    error_type: str
    message: str
    retryable: bool | None = None
    attempts: int = Field(default=0, ge=0)

    @field_validator("sale_id", mode="before")
    @classmethod
    def _digits_as_text(cls, value: Any) -> Any:
        return str(value) if _is_int(value) else value


FaultKind = Literal["timeout", "status", "latency", "token_expired", "partial"]
# The sections ML names in X-Content-Missing when it answers an order 206 (reference/meli-api.md §1.2).
ORDER_SECTIONS = ("buyer", "feedback", "mediations", "seller", "shipping")


class Fault(_Strict):
    """One fault rule. Rules are evaluated in order for every request whose method and path match."""

    method: str | None = None
    path: str
    kind: FaultKind
    status: int | None = Field(default=None, ge=400, le=599)
    ms: float | None = Field(default=None, ge=0)
    times: int | None = Field(default=None, ge=0)
    probability: float | None = Field(default=None, ge=0.0, le=1.0)
    seed: int | None = None
    connection_id: str | None = None
    # kind "status": ML's error body's "error" and "message" (e.g. 403 access_denied); the status's usual body else.
    error: str | None = Field(default=None, min_length=1)
    message: str | None = Field(default=None, min_length=1)
    # kind "partial": GET /orders/{id} answers 206 without these sections, named in X-Content-Missing.
    missing: list[str] | None = None

    @field_validator("path")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"'path' is not a valid regular expression: {exc}") from exc
        return value

    @field_validator("method")
    @classmethod
    def _upper(cls, value: str | None) -> str | None:
        return value.upper() if value else value

    @model_validator(mode="after")
    def _kind_needs(self) -> Self:
        if self.kind == "status" and self.status is None:
            raise ValueError("a fault of kind 'status' needs 'status' (an HTTP status 400-599)")
        if (self.error is not None or self.message is not None) and self.kind != "status":
            raise ValueError("'error' and 'message' apply only to a fault of kind 'status'")
        if self.kind == "latency" and self.ms is None:
            raise ValueError("a fault of kind 'latency' needs 'ms'")
        if self.kind == "partial":
            if not self.missing:
                raise ValueError(f"a fault of kind 'partial' needs 'missing' (some of {', '.join(ORDER_SECTIONS)})")
            unknown = [s for s in self.missing if s not in ORDER_SECTIONS]
            if unknown:
                raise ValueError(
                    f"'missing' names {', '.join(map(repr, unknown))}; ML's sections are {', '.join(ORDER_SECTIONS)}"
                )
        elif self.missing is not None:
            raise ValueError("'missing' applies only to a fault of kind 'partial'")
        return self


class Quota(_Strict):
    requests_per_second: float = Field(gt=0)


# The application id of ML's own notification sample (reference/meli-api.md §8); the local stack's app is this one.
DEFAULT_APPLICATION_ID = 5503910054141466
# ML tries a notification eight times within an hour, "at exponential intervals" (§8): the seven waits between tries.
ML_RETRY_SECONDS = (10.0, 30.0, 60.0, 180.0, 300.0, 900.0, 2100.0)


class Outage(_Strict):
    """A window, in seconds after the notifications start, in which the callback cannot be reached (every try in it
    fails as a refused connection would, and no request reaches the callback)."""

    from_seconds: float = Field(ge=0)
    to_seconds: float = Field(gt=0)

    @model_validator(mode="after")
    def _order(self) -> Self:
        if self.to_seconds <= self.from_seconds:
            raise ValueError("'to_seconds' must be after 'from_seconds'")
        return self


class Notifications(_Strict):
    """ML's notifications to the application's callback URL (topic orders_v2): one per order created or changed."""

    application_id: int = Field(default=DEFAULT_APPLICATION_ID, gt=0)
    topic: str = "orders_v2"
    callback_url: str | None = None  # default: the local stack's POST /notifications/mercadolibre
    copies: int = Field(default=1, ge=1, le=20)  # notifications per change: ML sends duplicates (5 for one order)
    retry_seconds: list[float] = Field(default_factory=lambda: list(ML_RETRY_SECONDS), max_length=20)
    timeout_ms: float = Field(default=500.0, gt=0)  # ML wants the 200 within 500 ms
    outages: list[Outage] = Field(default_factory=list)

    @field_validator("retry_seconds")
    @classmethod
    def _waits(cls, value: list[float]) -> list[float]:
        if any(w < 0 for w in value):
            raise ValueError("'retry_seconds' are waits in seconds, none negative")
        return value


class NewOrder(_Strict):
    """An order that appears in ML ``after_seconds`` after the notifications start (and is notified then)."""

    after_seconds: float = Field(ge=0)
    order: Order
    copies: int | None = Field(default=None, ge=1, le=20)  # this order's notifications (default: notifications.copies)


class Scenario(_Strict):
    connections: list[Connection] = Field(default_factory=list)
    products: list[Product] = Field(default_factory=list)
    orders: list[Order] = Field(default_factory=list)
    packs: list[Pack] = Field(default_factory=list)
    shipments: list[Shipment] = Field(default_factory=list)
    reflected_sales: list[ReflectedSale] = Field(default_factory=list)
    sale_errors: list[SaleError] = Field(default_factory=list)
    faults: list[Fault] = Field(default_factory=list)
    quota: Quota | None = None
    # Additive (the notifications issue): without them no notification is sent and no order appears over time.
    notifications: Notifications | None = None
    new_orders: list[NewOrder] = Field(default_factory=list)

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Self:
        """Pydantic's model_validate, with errors rewritten to name the key and its place (``scenario.faults[2]``)."""
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            raise ScenarioError(format_errors(exc)) from None

    @model_validator(mode="after")
    def _references(self) -> Self:
        problems: list[str] = []
        seen: dict[str, Any] = {}
        for kind, rows, key in (
            ("connections", self.connections, "connection_id"),
            ("connections", self.connections, "seller_id"),
            ("connections", self.connections, "access_token"),
            ("connections", self.connections, "refresh_token"),
        ):
            seen.clear()
            for i, row in enumerate(rows):
                value = getattr(row, key)
                if value in seen:
                    problems.append(f"{kind}[{i}].{key} {value!r} repeats {kind}[{seen[value]}]")
                seen.setdefault(value, i)
        if self.new_orders and self.notifications is None:
            problems.append("new_orders need 'notifications' (they appear when the notifications start)")
        order_ids = {o["id"] for o in self.orders}
        for i, new in enumerate(self.new_orders):
            if new.order["id"] in order_ids:
                problems.append(f"new_orders[{i}].order.id {new.order['id']} is already one of the orders")
            order_ids.add(new.order["id"])
        for kind, objects in (("orders", self.orders), ("packs", self.packs), ("shipments", self.shipments)):
            seen.clear()
            for i, obj in enumerate(objects):
                if obj["id"] in seen:
                    problems.append(f"{kind}[{i}].id {obj['id']} repeats {kind}[{seen[obj['id']]}]")
                seen.setdefault(obj["id"], i)
        known = {c.connection_id for c in self.connections}
        refs: list[tuple[str, list[Any]]] = [
            ("products", self.products),
            ("reflected_sales", self.reflected_sales),
            ("sale_errors", self.sale_errors),
            ("faults", self.faults),
        ]
        for kind, rows in refs:
            for i, row in enumerate(rows):
                if row.connection_id is not None and row.connection_id not in known:
                    problems.append(f"{kind}[{i}].connection_id {row.connection_id!r} is not one of the connections")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @classmethod
    def from_file(cls, path: str | Path) -> Scenario:
        return load_scenario(path)

    def connection(self, connection_id: str) -> Connection:
        for c in self.connections:
            if c.connection_id == connection_id:
                return c
        raise KeyError(connection_id)

    def connection_for_seller(self, seller_id: int) -> Connection | None:
        return next((c for c in self.connections if c.seller_id == seller_id), None)

    def orders_by_id(self) -> dict[int, dict[str, Any]]:
        return {o["id"]: o for o in self.orders}

    def packs_by_id(self) -> dict[int, dict[str, Any]]:
        return {p["id"]: p for p in self.packs}

    def shipments_by_id(self) -> dict[int, dict[str, Any]]:
        return {s["id"]: s for s in self.shipments}

    def products_for(self, connection_id: str) -> list[Product]:
        return [p for p in self.products if p.connection_id == connection_id]


def _where(loc: tuple[int | str, ...]) -> str:
    out = "scenario"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def format_errors(exc: ValidationError) -> str:
    """One line per problem: ``scenario.faults[2]: unknown key 'tims'``."""
    lines: list[str] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden" and loc:
            lines.append(f"{_where(loc[:-1])}: unknown key {loc[-1]!r}")
            continue
        # Strip pydantic's "Value error, " prefix: our own messages are already sentences.
        msg = str(err["msg"]).removeprefix("Value error, ")
        lines.append(f"{_where(loc)}: {msg}")
    return "invalid scenario:\n  " + "\n  ".join(lines)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; every failure is a ScenarioError that names the file and the place."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"scenario file not found: {p}") from None
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario file {p}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScenarioError(f"{p}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{p}: a scenario is a JSON object, not {type(data).__name__}")
    try:
        return Scenario.model_validate(data)
    except ScenarioError as exc:
        raise ScenarioError(f"{p}: {exc}") from None
