"""DTMF key sequences that control recordings (``[dtmf] start = "*1"`` and so on).

Theory of operation
-------------------
Keys heard on the sequence track are collected; a sequence matches when the
keys heard last spell it, each beginning within ``timeout`` samples of the one
before. The config guarantees that no sequence begins with another, so a match
is never early. A sequence is matched when its last key's tone has ended, so
the match knows where its keys began and ended:

- ``start`` records from the end of the last key;
- ``stop`` and ``pause`` act at the onset of the first key;
- ``resume`` acts at the end of the last key.

So no sequence tone is ever in a file, the recorder must not have written the
audio from the first key on when the sequence turns out to be one: while the
keys heard so far are the beginning of some sequence, ``pending`` is the onset
of the first of them, and the recorder holds its output back from there
(``engine.Recorder``). That hold lasts at most as long as the sequence takes to
key: (keys - 1) x ``timeout`` plus the last key's tone; once the keys stop
spelling any sequence, or the next key is late, the hold is let go.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

ACTIONS = ("start", "stop", "pause", "resume")


@dataclass(frozen=True, slots=True)
class Match:
    """A complete sequence: ``action``, and where its keys' tones began and ended (input samples)."""

    action: str
    first: int  # onset of the first key
    end: int  # end of the last key


class KeySequences:
    """Keys in (as their tones begin and end), a ``Match`` out when a sequence is complete.

    ``timeout`` is in samples: the most allowed between the onsets of two keys.
    ``same_key`` (samples): a key whose onset is this close to the same key's
    just before is that key heard on the other track too (leakage between the
    line and the handset), not a second press.

    >>> seq = KeySequences({"start": "*1", "stop": "*2"}, timeout=3000)
    >>> seq.down("*", 100); seq.pending
    100
    >>> seq.up("*", 100, 900) is None
    True
    >>> seq.down("2", 2000); seq.up("2", 2000, 2800)
    Match(action='stop', first=100, end=2800)
    >>> seq.pending is None
    True
    >>> seq.down("5", 4000); seq.pending is None  # no sequence begins with 5
    True
    """

    def __init__(self, sequences: Mapping[str, str], timeout: int, same_key: int = 0) -> None:
        unknown = set(sequences) - set(ACTIONS)
        if unknown:
            raise ValueError(f"unknown sequence action {sorted(unknown)[0]!r}; expected one of {', '.join(ACTIONS)}")
        self.sequences = {action: keys for action, keys in sequences.items() if keys}
        self.timeout = timeout
        self.same_key = same_key
        self._heard: list[tuple[str, int]] = []  # (key, onset) of the keys that may still spell a sequence

    @property
    def longest(self) -> int:
        return max((len(k) for k in self.sequences.values()), default=0)

    @property
    def pending(self) -> int | None:
        """The onset of the first key of a sequence being keyed, or None."""
        return self._heard[0][1] if self._heard else None

    def down(self, key: str, start: int) -> None:
        """A key's tone began at ``start`` (it is proven, still sounding)."""
        if not self.sequences:
            return
        if self._heard and self._heard[-1][0] == key and abs(start - self._heard[-1][1]) <= self.same_key:
            return  # the same press, heard on the other track
        if self._heard and start - self._heard[-1][1] > self.timeout:
            self._heard = []
        heard = [*self._heard, (key, start)]
        # Keep the longest tail of what was heard that is still the beginning of a sequence.
        while heard and not self._prefix("".join(k for k, _ in heard)):
            heard.pop(0)
        self._heard = heard

    def up(self, key: str, start: int, end: int) -> Match | None:
        """A key's tone ended: the sequence it completes, if any."""
        if not self._heard or self._heard[-1] != (key, start):
            return None
        spelt = "".join(k for k, _ in self._heard)
        for action, keys in self.sequences.items():
            if spelt == keys:
                first = self._heard[0][1]
                self._heard = []
                return Match(action, first, end)
        return None

    def expire(self, now: int) -> None:
        """Forget a beginning whose next key is overdue at sample ``now``."""
        if self._heard and now - self._heard[-1][1] > self.timeout:
            self._heard = []

    def _prefix(self, spelt: str) -> bool:
        return any(keys.startswith(spelt) for keys in self.sequences.values())
