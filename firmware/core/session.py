"""A recording session: the recorder plus what decides around it, as the box and ``record`` both run it.

Theory of operation
-------------------
``Session`` is what the daemon's audio loop and ``edge-recorder record`` feed:
the same audio, the same controls, the same rules (``SessionRules``: the
``[dtmf]`` key sequences and the ``[call]`` rules of the config), so a call
replayed from a file is recorded exactly as the box recorded it. It owns

- the ``Recorder`` (``engine``), which also follows the key sequences, because
  a sequence acts at its keys' samples inside the recorder's hold-back;
- call tracking (``calls.CallTracker``): hook changes and the speech the
  recorder detected start and end calls, and ``auto_record`` starts a recording
  for every call. The audio is fed up to the call's deadline and no further, so
  a call ends on the same sample whatever the size of the pieces fed;
- ``min_length``: an automatic recording shorter than it ends ``absent``, its
  audio discarded.

Like the recorder it does no I/O and keeps no clock: positions are samples.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from . import controls as c
from . import events as ev
from .calls import Action, CallTracker, Step
from .engine import Recorder, new_sid
from .lifecycle import ControlError, EndReason, Status
from .options import RecordingOptions
from .sequences import KeySequences
from .tracks import InputLayout

#: Two onsets of the same key this close are one press heard on both tracks (a key lasts 40 ms or more
#: and is followed by 40 ms of pause, so a second press begins 80 ms later at the soonest).
SAME_KEY_SECONDS = 0.04


@dataclass(frozen=True, slots=True)
class SessionRules:
    """The rules around recordings: key sequences (``[dtmf]``) and calls (``[call]``), times in seconds."""

    sequences: Mapping[str, str] = field(default_factory=dict)  # action -> keys, e.g. {"stop": "*2"}
    sequence_track: str = "both"
    key_timeout: float = 3.0
    detect: str = "none"  # hook, audio or none (the config's "auto" resolved by the caller)
    auto_record: str = "none"
    call_pre_roll: float = 1.0
    idle_timeout: float = 10.0
    stop_hold: float = 2.0
    min_length: float = 0.0


class Session:
    """Audio and controls in, events out: one box's recordings, calls and key sequences.

    >>> import numpy as np
    >>> from firmware.core import Session, SessionRules, InputLayout, Hook, Finished
    >>> rules = SessionRules(detect="hook", auto_record="off-hook", stop_hold=0.5, call_pre_roll=0)
    >>> session = Session(InputLayout(8000, 1), rules=rules)
    >>> _ = session.send(Hook(True))
    >>> _ = session.send(Hook(False, at=8000))
    >>> done = [e for e in session.feed(np.zeros(16000, np.int16)) if isinstance(e, Finished)]
    >>> done[0].end_reason.value, done[0].at  # on hook at 1 s, plus 0.5 s of stop hold
    ('call_end', 12000)
    """

    def __init__(
        self,
        layout: InputLayout,
        *,
        options: RecordingOptions | None = None,
        rules: SessionRules | None = None,
        new_id: Callable[[str], str] = new_sid,
    ) -> None:
        self.layout = layout
        self.rate = layout.sample_rate
        self._new_id = new_id
        self.recorder = Recorder(layout, new_id=new_id)
        self._hooks: list[tuple[int, int, c.Hook]] = []  # hook changes stamped in the future
        self._order = 0
        self.configure(options or RecordingOptions(), rules or SessionRules())

    def configure(self, options: RecordingOptions, rules: SessionRules) -> None:
        """New ``[recording]`` defaults and rules (a config reload): a call going on carries on, and so does
        a key sequence being keyed when the sequences stay the same."""
        old_rules = getattr(self, "rules", None)
        self.options, self.rules = options, rules
        rate = self.rate
        self.recorder.button_options = options
        if old_rules is None or (old_rules.sequences, old_rules.key_timeout) != (rules.sequences, rules.key_timeout):
            self.recorder.sequences = KeySequences(
                rules.sequences, round(rules.key_timeout * rate), same_key=round(SAME_KEY_SECONDS * rate)
            )
        self.recorder.sequence_track = rules.sequence_track
        tracker = CallTracker(
            detect=rules.detect,
            auto_record=rules.auto_record,
            idle_timeout=round(rules.idle_timeout * rate),
            stop_hold=round(rules.stop_hold * rate),
        )
        old = getattr(self, "calls", None)
        if old is not None and old.in_call and tracker.detect == old.detect:
            tracker.in_call, tracker.recorded = True, old.recorded
            tracker.carry(old)
        self.calls = tracker
        self.auto_options = RecordingOptions.from_mapping({"pre_roll": rules.call_pre_roll}, options)

    # -- what the recorder knows ------------------------------------------------------------
    @property
    def position(self) -> int:
        return self.recorder.position

    @property
    def active(self) -> list[ev.Recording]:
        return self.recorder.active

    def state_of(self, recording_id: str):
        return self.recorder.state_of(recording_id)

    @property
    def keying(self) -> bool:
        return self.recorder.keying

    @property
    def call_id(self) -> str | None:
        return self.recorder.call_id

    @property
    def refuse_starts(self) -> str | None:
        return self.recorder.refuse_starts

    @refuse_starts.setter
    def refuse_starts(self, reason: str | None) -> None:
        self.recorder.refuse_starts = reason

    # -- input -------------------------------------------------------------------------------
    def feed(self, frames: np.ndarray) -> list[ev.Event]:
        """Process the next input frames (int16, shape (n,) or (n, channels))."""
        frames = np.asarray(frames)
        out: list[ev.Event] = []
        while len(frames):
            cut = len(frames)
            for due in (self.calls.deadline, self._hooks[0][0] if self._hooks else None):
                if due is not None and due < self.position + cut:
                    cut = max(0, due - self.position)
            if cut:
                start = self.position
                out += self._kept(self.recorder.feed(frames[:cut]))
                frames = frames[cut:]
                if self.calls.needs_speech:
                    heard = self.recorder.speech_span(start, self.options.input_sensitivity)
                    if heard is not None:
                        out += self._steps(self.calls.speech(*heard))
            out += self._due()
        return out + self._due()

    def send(self, control: c.Control) -> list[ev.Event]:
        """Apply a control now (``ControlError`` when it cannot be), or keep it for its future ``at``."""
        if isinstance(control, c.Hook):
            if control.at is not None and control.at > self.position:
                bisect.insort(self._hooks, (control.at, self._order, control), key=lambda item: item[:2])
                self._order += 1
                return []
            return self._steps(self.calls.hook(control.off_hook, self.position))
        events = self._kept(self.recorder.send(control))
        if isinstance(control, c.CallEnd):
            self.calls.in_call = False
        return events

    def close(self, reason: EndReason = EndReason.CALL_END) -> list[ev.Event]:
        """End of input: every recording ends with ``reason``."""
        return self._kept(self.recorder.close(reason))

    # -- calls -------------------------------------------------------------------------------
    def _due(self) -> list[ev.Event]:
        out: list[ev.Event] = []
        while self._hooks and self._hooks[0][0] <= self.position:
            _, _, hook = self._hooks.pop(0)
            out += self._steps(self.calls.hook(hook.off_hook, self.position))
        return out + self._steps(self.calls.tick(self.position))

    def _steps(self, steps: list[Step]) -> list[ev.Event]:
        out: list[ev.Event] = []
        for step in steps:
            if step.action is Action.CALL_START:
                self.recorder.call_id = self._new_id("CA")
                out.append(ev.CallStarted(self.recorder.call_id, step.at))
            elif step.action is Action.CALL_END:
                call_id = self.recorder.call_id or ""
                out += self._kept(self.recorder.send(c.CallEnd()))
                out.append(ev.CallEnded(call_id, step.at))
            elif step.action is Action.RECORD:
                start = c.Start(self.auto_options, "auto", call_id=self.recorder.call_id, since=step.at)
                try:
                    out += self._kept(self.recorder.send(start))
                except ControlError as exc:
                    out.append(ev.Rejected(start, f"automatic recording not started: {exc}"))
        return out

    # -- min_length --------------------------------------------------------------------------
    def _kept(self, events: list[ev.Event]) -> list[ev.Event]:
        """Automatic recordings shorter than ``min_length`` end absent, their audio discarded."""
        least = self.rules.min_length
        if least <= 0:
            return events
        out = []
        for event in events:
            if (
                isinstance(event, ev.Finished)
                and event.recording.source == "auto"
                and event.status is Status.COMPLETED
                and event.duration < least
            ):
                why = f"shorter than [call] min_length ({event.duration:.2f} s < {least:g} s); discarded"
                event = dataclasses.replace(event, status=Status.ABSENT, discarded=why)
            out.append(event)
        return out
