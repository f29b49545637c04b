"""The one settings object. Every variable is `SMARTPLEX_<NAME>`; `.env.example` lists them all."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def normalize_database_url(url: str) -> str:
    """Accept a Supabase/Heroku style `postgres://` URL as it is and point it at the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SMARTPLEX_", env_file=".env", env_ignore_empty=True, extra="ignore"
    )

    data_dir: Path = Field(Path("data"), description="Where the embedded SQLite files live.")
    database_url: str = Field("", description="SQLAlchemy URL; empty means SQLite in data_dir.")

    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    prefect_port: int = Field(4200, description="Port of the Prefect server that `make run` starts.")
    prefect_api_url: str | None = Field(
        None,
        validation_alias=AliasChoices("PREFECT_API_URL", "SMARTPLEX_PREFECT_API_URL"),
        description="A Prefect server to use instead of starting one (Prefect's own variable).",
    )

    webhook_token: SecretStr | None = Field(
        None,
        description="Shared secret every webhook must carry. Unset: only loopback clients are accepted.",
    )
    max_body_bytes: int = 10 * 1024 * 1024
    coalesce_strategy: Literal["merge", "bucket"] = Field(
        "merge",
        description="merge: one run per deployment per burst (windows below); bucket: the earlier rule, "
        "one run per parameter set and fixed COALESCE_SECONDS bucket (kept to measure against).",
    )
    coalesce_seconds: int = Field(10, ge=1, description="Bucket width of the bucket strategy.")
    plex_quiet_seconds: float = Field(2.0, ge=0, description="plex-library-sync: run after this quiet.")
    plex_max_wait_seconds: float = Field(20.0, ge=0, description="plex-library-sync: run by then anyway.")
    tautulli_quiet_seconds: float = Field(2.0, ge=0)
    tautulli_max_wait_seconds: float = Field(20.0, ge=0)
    sonarr_quiet_seconds: float = Field(2.0, ge=0)
    sonarr_max_wait_seconds: float = Field(20.0, ge=0)
    radarr_quiet_seconds: float = Field(2.0, ge=0)
    radarr_max_wait_seconds: float = Field(20.0, ge=0)
    overseerr_quiet_seconds: float = Field(2.0, ge=0)
    overseerr_max_wait_seconds: float = Field(20.0, ge=0)
    dispatch_poll_seconds: float = Field(
        5.0, gt=0, description="How often the dispatcher looks for work when nothing wakes it."
    )
    run_poll_seconds: float = Field(
        1.0, gt=0, description="How often the dispatcher asks Prefect about the runs it is waiting for."
    )
    plex_scan_grace_seconds: int = Field(
        120,
        ge=0,
        description="Library syncs and removal checks asked for by Sonarr/Radarr wait this long for Plex's scan.",
    )

    plex_url: str | None = None
    plex_token: SecretStr | None = None
    tautulli_url: str | None = None
    tautulli_api_key: SecretStr | None = None
    sonarr_url: str | None = None
    sonarr_api_key: SecretStr | None = None
    radarr_url: str | None = None
    radarr_api_key: SecretStr | None = None
    overseerr_url: str | None = None
    overseerr_api_key: SecretStr | None = None

    http_timeout_seconds: float = 30.0
    plex_page_size: int = Field(500, ge=1)
    incremental_overlap_seconds: int = Field(600, ge=0)
    delete_guard_fraction: float = Field(
        0.2, ge=0, le=1, description="A full sync refuses to delete more than this share of a section."
    )
    webhook_retention_days: int = Field(30, ge=1)

    @field_validator("database_url")
    @classmethod
    def _normalize_url(cls, value: str) -> str:
        return normalize_database_url(value.strip())

    @field_validator("plex_url", "tautulli_url", "sonarr_url", "radarr_url", "overseerr_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} must start with http:// or https://")
        return value

    @model_validator(mode="after")
    def _refuse_open_gateway(self) -> Settings:
        if self.webhook_token is None and self.gateway_host not in LOOPBACK_HOSTS:
            raise ValueError(
                "SMARTPLEX_WEBHOOK_TOKEN must be set when SMARTPLEX_GATEWAY_HOST is not a loopback address"
            )
        return self

    def coalescing_window(self, deployment: str) -> tuple[float, float]:
        """`(quiet, max_wait)` seconds of a deployment (`plex-library-sync` → SMARTPLEX_PLEX_*)."""
        service = deployment.split("-", 1)[0]
        return getattr(self, f"{service}_quiet_seconds"), getattr(self, f"{service}_max_wait_seconds")

    @property
    def prefect_api(self) -> str:
        """The configured Prefect API, else the one `make run` starts on this machine."""
        return self.prefect_api_url or f"http://127.0.0.1:{self.prefect_port}/api"

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'smartplex.db').resolve()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
