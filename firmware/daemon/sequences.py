"""DTMF control sequences (``[dtmf] start = "*1"`` and so on).

Keys heard on the configured track are collected; a sequence matches when the
keys heard last spell it, each within ``key_timeout`` of the one before. The
config guarantees no sequence begins with another, so a match is never early.
"""

from __future__ import annotations

from collections.abc import Mapping


class SequenceMatcher:
    """Keys in, an action name out when a sequence is complete.

    >>> m = SequenceMatcher({"start": "*1", "stop": "*2"}, timeout=3.0)
    >>> [m.feed(k, t) for k, t in [("*", 0.0), ("1", 0.5), ("*", 9.0), ("5", 9.2), ("*", 9.4), ("2", 9.9)]]
    [None, 'start', None, None, None, 'stop']
    >>> m.feed("*", 20.0), m.feed("1", 24.0)
    (None, None)
    """

    def __init__(self, sequences: Mapping[str, str], timeout: float) -> None:
        self.sequences = {action: keys for action, keys in sequences.items() if keys}
        self.timeout = timeout
        self._heard = ""
        self._last = -float("inf")
        self._longest = max((len(k) for k in self.sequences.values()), default=0)

    def feed(self, key: str, at: float) -> str | None:
        """A key heard at ``at`` seconds; the action it completes, if any."""
        if not self.sequences:
            return None
        if at - self._last > self.timeout:
            self._heard = ""
        self._last = at
        self._heard = (self._heard + key)[-self._longest :]
        for action, keys in self.sequences.items():
            if self._heard.endswith(keys):
                self._heard = ""
                return action
        return None
