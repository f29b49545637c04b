"""Per-source rate limits: a token bucket per service, so a flood from one cannot starve the others.

Each source may send SMARTPLEX_RATE_LIMIT_BURST deliveries at once and SMARTPLEX_RATE_LIMIT_PER_SECOND
after that. A delivery over the limit is answered 429 with `Retry-After` before its body is read or its
token checked, so a flood costs no database write and no parsing.

Refusals are recorded sparingly: the first one of a source in each REFUSAL_RECORD_SECONDS gets a
`webhook_log` row (without body) that also counts the refusals since the previous such row. A flood
therefore writes at most one row per source per minute, and the count still says how much was refused.

The buckets live in the gateway process: each replica limits its own share.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from smartplex_sync.models import Source

REFUSAL_RECORD_SECONDS = 60.0


@dataclass
class TokenBucket:
    """`capacity` tokens, refilled at `rate` per second; each delivery takes one."""

    rate: float
    capacity: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Take a token: 0.0 if there was one, else the seconds until there will be one."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclass(frozen=True)
class Refusal:
    """A delivery over its source's limit: when to retry, and whether this one gets a row."""

    retry_after: int  # whole seconds, for the Retry-After header
    message: str
    record: bool


@dataclass
class _RefusalLog:
    last_recorded: float | None = None
    unrecorded: int = 0


@dataclass
class SourceLimiter:
    per_second: float  # 0: no limit
    burst: int
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[Source, TokenBucket] = field(default_factory=dict)
    _refusals: dict[Source, _RefusalLog] = field(default_factory=dict)

    def admit(self, source: Source) -> Refusal | None:
        """None if `source` may deliver now, else the refusal to answer."""
        if self.per_second <= 0:
            return None
        now = self.clock()
        bucket = self._buckets.get(source)
        if bucket is None:
            bucket = self._buckets[source] = TokenBucket(self.per_second, self.burst, self.burst, now)
        wait = bucket.take(now)
        if wait == 0:
            return None
        return self._refusal(source, now, max(1, math.ceil(wait)))

    def _refusal(self, source: Source, now: float, retry_after: int) -> Refusal:
        log = self._refusals.setdefault(source, _RefusalLog())
        message = (
            f"rate limit: {source.value} may send {self.burst} deliveries at once and "
            f"{self.per_second:g} per second after that; retry after {retry_after} s"
        )
        if log.last_recorded is not None:
            if now - log.last_recorded < REFUSAL_RECORD_SECONDS:
                log.unrecorded += 1
                return Refusal(retry_after, message, record=False)
            if log.unrecorded:
                message += (
                    f" ({log.unrecorded} more refused in the {now - log.last_recorded:.0f} s before this one,"
                    " counted here instead of recorded one by one)"
                )
        log.last_recorded, log.unrecorded = now, 0
        return Refusal(retry_after, message, record=True)
