"""Knowing when a call is going on, and recording every call (``[call]``).

Theory of operation
-------------------
A call is noticed from the hook switch when one is wired (``detect = "hook"``,
or ``"auto"`` with a hook switch), otherwise from audio activity (``"audio"``):
speech starts a call, ``idle_timeout`` seconds without speech end it. Going
on-hook ends the call only after ``stop_hold`` seconds, so a bouncing contact
or a quick hang-up-and-pick-up stays one call.

With ``auto_record = "off-hook"`` a recording starts with the call (with
``pre_roll`` of audio from before it); with ``"voice"`` it starts at the first
speech of the call. The call's end ends its recordings (``end_reason =
call_end``). Auto recordings shorter than ``min_length`` are discarded by the
daemon.

``CallTracker`` is pure: it is told hook changes and speech with their time in
seconds of audio and answers with what the daemon must do.
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
    at: float


class CallTracker:
    """Hook and speech in, call start/end and auto-record steps out.

    >>> t = CallTracker(detect="hook", auto_record="off-hook", idle_timeout=10, stop_hold=2)
    >>> [s.action.value for s in t.hook(True, 1.0)]
    ['call_start', 'record']
    >>> t.hook(False, 5.0), t.tick(6.0)
    ([], [])
    >>> [(s.action.value, s.at) for s in t.tick(7.5)]
    [('call_end', 7.0)]
    """

    def __init__(self, *, detect: str, auto_record: str, idle_timeout: float, stop_hold: float) -> None:
        self.detect = detect
        self.auto_record = auto_record
        self.idle_timeout = idle_timeout
        self.stop_hold = stop_hold
        self.in_call = False
        self.recorded = False  # an auto recording was started in this call
        self._end_at: float | None = None
        self._last_speech = -float("inf")

    def hook(self, off_hook: bool, at: float) -> list[Step]:
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

    def speech(self, at: float) -> list[Step]:
        """Speech was heard at ``at``."""
        self._last_speech = at
        steps: list[Step] = []
        if self.detect == "audio" and not self.in_call:
            steps += self._begin(at)
        if self.in_call and self.auto_record == "voice" and not self.recorded:
            self.recorded = True
            steps.append(Step(Action.RECORD, at))
        return steps

    def tick(self, now: float) -> list[Step]:
        if not self.in_call:
            return []
        if self.detect == "audio" and now - self._last_speech >= self.idle_timeout:
            return self._end(self._last_speech + self.idle_timeout)
        if self._end_at is not None and now >= self._end_at:
            return self._end(self._end_at)
        return []

    def _begin(self, at: float) -> list[Step]:
        self.in_call, self.recorded, self._end_at = True, False, None
        steps = [Step(Action.CALL_START, at)]
        if self.auto_record == "off-hook":
            self.recorded = True
            steps.append(Step(Action.RECORD, at))
        return steps

    def _end(self, at: float) -> list[Step]:
        self.in_call, self._end_at = False, None
        return [Step(Action.CALL_END, at)]
