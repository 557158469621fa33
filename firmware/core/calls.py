"""Knowing when a call is going on, and recording every call (``[call]``).

Theory of operation
-------------------
A call is noticed from the hook switch when one is wired (``detect = "hook"``),
otherwise from audio activity (``"audio"``): speech starts a call,
``idle_timeout`` without speech ends it. Going on-hook ends the call only after
``stop_hold``, so a bouncing contact or a quick hang-up-and-pick-up stays one
call. With ``"none"`` no call is tracked.

With ``auto_record = "off-hook"`` a recording starts with the call; with
``"voice"`` it starts at the first speech of the call. The call's end ends its
recordings (``end_reason = call_end``).

``CallTracker`` is pure and counts in samples of audio time: it is told hook
changes and the speech heard, and answers with steps. ``deadline`` is the
sample where the call ends if nothing else is heard, so its caller can feed the
audio up to exactly there and end the call on that sample, however the audio
was cut into pieces.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Action(StrEnum):
    CALL_START = "call_start"
    CALL_END = "call_end"
    RECORD = "record"


@dataclass(frozen=True, slots=True)
class Step:
    action: Action
    at: int


class CallTracker:
    """Hook and speech in, call start/end and auto-record steps out (all in samples).

    >>> t = CallTracker(detect="hook", auto_record="off-hook", idle_timeout=80000, stop_hold=16000)
    >>> [s.action.value for s in t.hook(True, 8000)]
    ['call_start', 'record']
    >>> t.hook(False, 40000), t.deadline, t.tick(48000)
    ([], 56000, [])
    >>> [(s.action.value, s.at) for s in t.tick(56000)]
    [('call_end', 56000)]
    """

    def __init__(self, *, detect: str, auto_record: str, idle_timeout: int, stop_hold: int) -> None:
        if detect not in ("hook", "audio", "none"):
            raise ValueError(f"detect {detect!r}: expected hook, audio or none")
        self.detect = detect
        self.auto_record = auto_record
        self.idle_timeout = idle_timeout
        self.stop_hold = stop_hold
        self.in_call = False
        self.recorded = False  # an auto recording was started in this call
        self._end_at: int | None = None
        self._last_speech: int | None = None

    @property
    def needs_speech(self) -> bool:
        return self.detect == "audio" or (self.detect != "none" and self.auto_record == "voice")

    @property
    def deadline(self) -> int | None:
        """The sample where the call ends unless a hook change or speech comes first."""
        if not self.in_call:
            return None
        if self.detect == "audio" and self._last_speech is not None:
            return self._last_speech + self.idle_timeout
        return self._end_at

    def carry(self, old: CallTracker) -> None:
        """Take over where ``old`` was in the call going on (new rules, the same call)."""
        self._end_at, self._last_speech = old._end_at, old._last_speech

    def hook(self, off_hook: bool, at: int) -> list[Step]:
        if self.detect != "hook":
            return []
        if off_hook:
            self._end_at = None
            if self.in_call:
                return []
            return self._begin(at)
        if self.in_call and self._end_at is None:
            self._end_at = at + self.stop_hold
        return []

    def speech(self, first: int, last: int) -> list[Step]:
        """Speech was heard from sample ``first`` to sample ``last``."""
        if self.detect == "none":
            return []
        self._last_speech = last
        steps: list[Step] = []
        if self.detect == "audio" and not self.in_call:
            steps += self._begin(first)
        if self.in_call and self.auto_record == "voice" and not self.recorded:
            self.recorded = True
            steps.append(Step(Action.RECORD, first))
        return steps

    def tick(self, now: int) -> list[Step]:
        """Audio time reached ``now``: the call's end, when it is due."""
        deadline = self.deadline
        if deadline is not None and now >= deadline:
            self.in_call, self._end_at = False, None
            return [Step(Action.CALL_END, deadline)]
        return []

    def _begin(self, at: int) -> list[Step]:
        self.in_call, self.recorded, self._end_at = True, False, None
        steps = [Step(Action.CALL_START, at)]
        if self.auto_record == "off-hook":
            self.recorded = True
            steps.append(Step(Action.RECORD, at))
        return steps
