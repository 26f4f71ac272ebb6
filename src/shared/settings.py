"""Configuration, read once from the environment the template sets (template.yaml Globals)."""

from __future__ import annotations

import os
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    stage: str = "dev"
    meli_api_url: str = "https://api.mercadolibre.com"
    meli_timeout_seconds: float = Field(default=5.0, gt=0)
    meli_max_tries: int = Field(default=3, ge=1, le=10)
    meli_app_secret_id: str = ""
    meli_connection_secret_prefix: str = "sales-recovery/dev/connections/"
    sales_table: str = "sales"
    sale_errors_table: str = "sale-errors"
    product_links_table: str = "product-links"
    connections_table: str = "connections"
    identifier_aliases_table: str = "identifier-aliases"
    idempotency_table: str = "idempotency"
    jobs_table: str = "jobs"
    help_desk_topic_arn: str = ""
    relink_state_machine_arn: str = ""
    bulk_queue_url: str = ""
    # ML's notifications: the queue the callback and the missed-feeds schedule feed, and our application's id.
    notifications_queue_url: str = ""
    meli_application_id: str = Field(default="", pattern=r"^[0-9]*$")
    # A notification of a sale a job or an execution holds comes back after this, doubling each time (max 900 s).
    notification_defer_seconds: int = Field(default=60, ge=0, le=900)
    bulk_max_ids: int = Field(default=10_000, ge=1)
    bulk_worker_threads: int = Field(default=8, ge=1, le=64)
    # Messages of one connection on the bulk queue or in a worker at once; the rest wait held (shared.lanes). 0: off.
    bulk_lane_messages: int = Field(default=2, ge=0, le=100)
    meli_requests_per_second: float = Field(default=0.0, ge=0)
    # Error sweep: automatic retries of listed sales with exponential backoff, then the help desk.
    error_retry_base_seconds: float = Field(default=300.0, gt=0)
    error_retry_max_seconds: float = Field(default=21_600.0, gt=0)
    error_max_attempts: int = Field(default=6, ge=1, le=50)
    sweep_max_ids: int = Field(default=5_000, ge=1)
    sweep_claim_seconds: int = Field(default=900, ge=60)
    # Reconciliation of paid ML orders that never arrived.
    reconcile_lookback_hours: int = Field(default=24, ge=1, le=24 * 365)
    reconcile_overlap_hours: int = Field(default=1, ge=1, le=48)
    reconcile_max_pages: int = Field(default=100, ge=1)
    reconcile_max_ids: int = Field(default=1_000, ge=1)
    reconcile_max_seconds: float = Field(default=240.0, gt=0)
    reconcile_claim_seconds: int = Field(default=3_600, ge=60)
    # The sale lifecycle: how long an execution owns a sale (the state machine's TimeoutSeconds, 4 h, plus a
    # margin; tests/statemachine checks it covers the ASL's), when the reaper checks a claimed execution started,
    # and when it sends a page that could not be sent at once.
    execution_lease_seconds: int = Field(default=14_400 + 300, ge=60)
    start_check_seconds: int = Field(default=300, ge=1)
    page_retry_seconds: int = Field(default=300, ge=1)

    @property
    def application_id(self) -> int | None:
        return int(self.meli_application_id) if self.meli_application_id else None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values = {name: env[name.upper()] for name in cls.model_fields if name.upper() in env}
        return cls.model_validate(values)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()
