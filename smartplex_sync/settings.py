"""The one settings object. Every variable is `SMARTPLEX_<NAME>`; `.env.example` lists them all."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from smartplex_sync.models import SERVICE_OF, Deployment, Source

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
        description="Secret every webhook must carry, for the sources without a token of their own. "
        "Unset: only local clients (loopback, not forwarded by a proxy) are accepted.",
    )
    plex_webhook_token: SecretStr | None = Field(None, description="Plex's own webhook token (`?token=`).")
    tautulli_webhook_token: SecretStr | None = Field(None, description="Tautulli's own webhook token.")
    sonarr_webhook_token: SecretStr | None = Field(None, description="Sonarr's own webhook token.")
    radarr_webhook_token: SecretStr | None = Field(None, description="Radarr's own webhook token.")
    overseerr_webhook_token: SecretStr | None = Field(None, description="Overseerr's own webhook token.")
    admin_token: SecretStr | None = Field(
        None,
        description="Bearer token of the admin endpoints (status, replay). A webhook token never opens them. "
        "Unset (and no Supabase sign-in): only local clients.",
    )
    supabase_url: str | None = Field(
        None,
        description="https://<ref>.supabase.co: lets SmartPlex admins signed in with Supabase Auth use the "
        "admin endpoints with their session token.",
    )
    supabase_role_claim: str | None = Field(
        None,
        description="Dotted claim holding the user's role (e.g. app_metadata.role). Unset: the role is read "
        "from SmartPlex's users table (users.role of the token's sub).",
    )
    supabase_users_table: str = Field(
        "users", description="SmartPlex's users table (schema-qualified if needed, e.g. public.users)."
    )
    supabase_admin_roles: Annotated[list[str], NoDecode] = Field(
        ["admin"], description="Roles that may use the admin endpoints (comma-separated)."
    )
    supabase_jwt_audience: str = "authenticated"
    supabase_jwks_cache_seconds: float = Field(
        600, gt=0, description="How long the project's signing keys are kept before they are fetched again."
    )
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1, description="Larger bodies are answered 413.")
    body_timeout_seconds: float = Field(
        30.0, gt=0, description="A body not complete this long after its headers is answered 408."
    )
    database_wait_seconds: float = Field(
        10.0,
        gt=0,
        description="The gateway waits this long for the database (a locked SQLite file, an unreachable "
        "PostgreSQL) before it answers 503 with Retry-After.",
    )
    rate_limit_per_second: float = Field(
        10.0, ge=0, description="Deliveries per second each source may send after its burst; 0: no limit."
    )
    rate_limit_burst: int = Field(
        300, ge=1, description="Deliveries each source may send at once before the rate limit applies."
    )
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
    prefect_call_seconds: float = Field(
        5.0,
        gt=0,
        description="How long the dispatcher waits for one call to Prefect (its retries included) before "
        "it backs off and tries again.",
    )
    plex_scan_grace_seconds: int = Field(
        120,
        ge=0,
        description="Library syncs and removal checks asked for by Sonarr/Radarr wait this long for Plex's scan.",
    )

    owner_email: str = Field(
        "owner@smartplex-sync.local",
        description="The SmartPlex user that the settings below create (or update) at start-up, and who owns "
        "the Plex server and services they name. Webhooks with SMARTPLEX_WEBHOOK_TOKEN (or no token, from "
        "this machine) are theirs.",
    )
    plex_server_name: str = Field("Plex", description="The name of that Plex server in SmartPlex.")
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

    @field_validator("supabase_admin_roles", mode="before")
    @classmethod
    def _split_roles(cls, value: object) -> object:
        if isinstance(value, str):
            return [role.strip() for role in value.split(",") if role.strip()]
        return value

    @field_validator("plex_url", "tautulli_url", "sonarr_url", "radarr_url", "overseerr_url", "supabase_url")
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
        open_sources = [source for source in Source if self.source_token(source) is None]
        if open_sources and self.gateway_host not in LOOPBACK_HOSTS:
            names = ", ".join(f"SMARTPLEX_{source.upper()}_WEBHOOK_TOKEN" for source in open_sources)
            raise ValueError(
                "SMARTPLEX_WEBHOOK_TOKEN (or each of " + names + ") must be set when "
                "SMARTPLEX_GATEWAY_HOST is not a loopback address"
            )
        return self

    def coalescing_window(self, deployment: Deployment) -> tuple[float, float]:
        """`(quiet, max_wait)` seconds of a sync deployment: its service's (SMARTPLEX_PLEX_* for Plex's)."""
        service = SERVICE_OF[deployment].value
        return getattr(self, f"{service}_quiet_seconds"), getattr(self, f"{service}_max_wait_seconds")

    def source_token(self, source: str) -> SecretStr | None:
        """The token `source`'s webhooks must carry: its own, else the shared one, else None (local only)."""
        own: SecretStr | None = getattr(self, f"{source}_webhook_token")
        return own or self.webhook_token

    def secret_values(self) -> list[str]:
        """Every configured secret (our tokens, the services' keys, the database password): what must never
        be shown or logged."""
        from sqlalchemy.engine import make_url  # here: most users of the settings never need SQLAlchemy

        values = (getattr(self, name) for name in type(self).model_fields)
        secrets = [value.get_secret_value() for value in values if isinstance(value, SecretStr) and value]
        password = make_url(self.sqlalchemy_url).password
        return [*secrets, password] if password else secrets

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
