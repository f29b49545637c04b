"""Hiding secrets in what we show: stored payloads and rows printed by `smartplex-sync webhooks show`.

We never store our own tokens (a rejected delivery keeps no body, and no delivery keeps its headers or
URL), but a payload is whatever the sender put in it: a Tautulli template may carry a URL with an
`X-Plex-Token`, a custom Overseerr template an API key. So before a payload is shown, the values of
secret-named keys, secret-named URL parameters and every configured secret are replaced.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

REDACTED = "[redacted]"
SECRET_NAME = re.compile(r"token|api[-_]?key|secret|passw(or)?d|authorization|credential", re.IGNORECASE)
_SECRET_PARAMETER = re.compile(
    r"(?P<name>[?&;](?:[\w.-]*(?:token|api[-_]?key|secret|passw(?:or)?d|credential)[\w.-]*)=)[^&#\s\"']+",
    re.IGNORECASE,
)
_MIN_SECRET_LENGTH = 4  # a configured "secret" shorter than this would blank out ordinary text


def redact(value: Any, secrets: Sequence[str] = ()) -> Any:
    """A copy of JSON-like `value` with secrets replaced by "[redacted]"."""
    known = sorted((s for s in secrets if len(s) >= _MIN_SECRET_LENGTH), key=len, reverse=True)
    return _redact(value, known)


def _redact(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, dict):
        return {
            key: REDACTED
            if isinstance(key, str) and SECRET_NAME.search(key) and item
            else _redact(item, secrets)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact(item, secrets) for item in value]
    if isinstance(value, str):
        text = _SECRET_PARAMETER.sub(lambda m: m.group("name") + REDACTED, value)
        for secret in secrets:
            text = text.replace(secret, REDACTED)
        return text
    return value


class UrlSecretsFilter(logging.Filter):
    """Hides secret-named URL parameters in a logger's records. httpx logs the URL of every request at
    INFO, and Tautulli's API takes its key only as `apikey=` in the query."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _SECRET_PARAMETER.sub(lambda m: m.group("name") + REDACTED, str(arg))
                if not isinstance(arg, int | float)
                else arg
                for arg in record.args
            )
        record.msg = _SECRET_PARAMETER.sub(lambda m: m.group("name") + REDACTED, str(record.msg))
        return True
