"""Configuration, read once from the environment the template sets (template.yaml Globals)."""

from __future__ import annotations

import os
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

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
    bulk_max_ids: int = Field(default=10_000, ge=1)
    bulk_worker_threads: int = Field(default=8, ge=1, le=64)
    meli_requests_per_second: float = Field(default=0.0, ge=0)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values = {name: env[name.upper()] for name in cls.model_fields if name.upper() in env}
        return cls.model_validate(values)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()
