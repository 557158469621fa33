"""The one error every delivery path raises, so the outbox can decide: retry or give up."""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

#: The longest a server may ask the box to wait (``Retry-After``): a box that waits longer looks dead.
RETRY_AFTER_MAX = 3600.0


class DeliveryError(Exception):
    """A delivery that did not happen.

    ``permanent`` means retrying cannot help (a 4xx other than 408 and 429, a
    destination that does not exist, a file that is gone); otherwise the outbox
    retries with backoff, and not before ``retry_after`` seconds when the server
    said so. ``status`` is the HTTP status when there was one.
    """

    def __init__(
        self, message: str, *, permanent: bool, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.status = status
        self.retry_after = retry_after


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds a server's ``Retry-After`` asks for (RFC 9110: delay-seconds or an HTTP-date), capped at
    ``RETRY_AFTER_MAX``; None when it asks nothing usable.

    A date is taken against the server's own ``Date`` when it sent one, so the box's clock (a Pi has no
    real-time clock) does not matter.

    >>> retry_after({"Retry-After": "20"}), retry_after({"Retry-After": "999999"}), retry_after({})
    (20.0, 3600.0, None)
    >>> retry_after({"Retry-After": "Wed, 21 Oct 2026 07:28:30 GMT", "Date": "Wed, 21 Oct 2026 07:28:00 GMT"})
    30.0
    """
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        digits = value.lstrip("0") or "0"
        return RETRY_AFTER_MAX if len(digits) > 7 else min(float(digits), RETRY_AFTER_MAX)
    try:
        when = parsedate_to_datetime(value)
        date = next((v for k, v in headers.items() if k.lower() == "date"), None)
        base = parsedate_to_datetime(date) if date else None
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if base is None or (when.tzinfo is None) != (base.tzinfo is None):
        seconds = when.timestamp() - time.time()
    else:
        seconds = (when - base).total_seconds()
    return min(max(seconds, 0.0), RETRY_AFTER_MAX)


def is_permanent_http(status: int) -> bool:
    """4xx other than 408 (timeout) and 429 (rate limited) will not succeed on a retry."""
    return 400 <= status < 500 and status not in (408, 429)
