"""One exception hierarchy for the whole project.

SmartPlexError
├── PayloadError            bad webhook input: the gateway answers 4xx and still records the row
├── ConfigurationError      a setting a sync needs is missing or invalid: fail at once, no retry
└── ServiceError            a call to Plex, Tautulli, Sonarr, Radarr, Overseerr or Prefect failed
    ├── TransientServiceError   connection errors, timeouts, 429, 5xx: worth retrying
    └── PermanentServiceError   401/403/404 and answers that make no sense: retrying will not help
DeletionGuardError          a full sync would delete more than the guard allows: nothing deleted
SyncFailedError             a run's part failed on some servers (the other servers' parts were done)
"""

from __future__ import annotations


class SmartPlexError(Exception):
    """Base of every error this project raises on purpose."""


class PayloadError(SmartPlexError):
    """A delivery we cannot take. `status_code` is the 4xx to answer; `event_type` what could be read of
    it; `code` the answer's `error` when the status alone does not say it (`unattributed`)."""

    def __init__(
        self, message: str, status_code: int = 400, event_type: str = "unknown", code: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.event_type = event_type
        self.code = code


class ConfigurationError(SmartPlexError):
    """A setting is missing or wrong; the message names the `SMARTPLEX_*` variable to set."""


class ServiceError(SmartPlexError):
    """An external service did not give us what we asked for."""

    def __init__(self, service: str, message: str, status_code: int | None = None) -> None:
        super().__init__(f"{service}: {message}")
        self.service = service
        self.status_code = status_code


class TransientServiceError(ServiceError):
    """Connection refused, timeout, 429 or 5xx: a retry may succeed."""


class PermanentServiceError(ServiceError):
    """401/403/404 or a malformed answer: a retry will fail the same way."""


class DeletionGuardError(SmartPlexError):
    """A full sync found too much missing (an unmounted disk looks like an empty library)."""


class SyncFailedError(SmartPlexError):
    """Some servers' parts of a run failed; the others' were done. `failures`: server → why."""

    def __init__(self, failures: dict[str, str]) -> None:
        self.failures = failures
        super().__init__("; ".join(f"{server}: {why}" for server, why in failures.items()))
