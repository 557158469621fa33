"""The one error every delivery path raises, so the outbox can decide: retry or give up."""

from __future__ import annotations


class DeliveryError(Exception):
    """A delivery that did not happen.

    ``permanent`` means retrying cannot help (a 4xx other than 408 and 429, a
    destination that does not exist, a file that is gone); otherwise the outbox
    retries with backoff. ``status`` is the HTTP status when there was one.
    """

    def __init__(self, message: str, *, permanent: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.status = status


def is_permanent_http(status: int) -> bool:
    """4xx other than 408 (timeout) and 429 (rate limited) will not succeed on a retry."""
    return 400 <= status < 500 and status not in (408, 429)
