"""The recording core: audio and controls in, events out. No I/O, no clocks.

Theory of operation
-------------------
``Recorder.feed`` takes the next input frames. Detectors run on each track
first (DTMF keys, speech energy), then every active recording takes its share
of the frames: the recording decides whether one of its end conditions falls
inside them (a key, silence, no input, max length), renders what it writes
(track and channel mapping, its beep and warning tones, pause as silence or
skip) and appends it to a short hold-back buffer.

The hold-back buffer is why the file can end exactly where a key's tone began:
a DTMF key is only proven some 50-80 ms after its onset, so each recording
keeps the newest ``HOLD_BACK_SECONDS`` of its output unreleased and cuts it at
the onset when the key turns out to be an end key. Everything else ends at the
sample where its condition is met.

DTMF key sequences (``sequences``) use the same buffer: while the keys heard
so far begin a sequence, no recording releases output from the first key's
onset on (``sequences.KeySequences.pending``), so a stop or pause sequence can
take effect at that onset, and a resume sequence at its last key's end, as if
the control had come there: the held output from that point is cut and the
span rendered again in the new state from the input ring. No sequence tone is
in a file. The hold then lasts as long as the sequence takes to key, at most
(keys - 1) x ``[dtmf] key_timeout`` plus the last tone and its proof, and
never more than the input ring (``MAX_PRE_ROLL``) holds.

Controls (``Recorder.send``) act at their ``at`` sample. One stamped "now" is
applied at once and raises ``ControlError`` when it cannot be; one stamped in
the future is kept, the next ``feed`` splits the audio at its sample, and a
failure then comes back as a ``Rejected`` event.
"""

from __future__ import annotations

import bisect
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from . import controls as c
from . import events as ev
from . import lifecycle, tracks, vad
from .dtmf import DtmfDetector, KeyDown, KeyUp
from .lifecycle import ControlError, EndReason, InputMismatch, State, Trigger, finished_status, next_state
from .options import MAX_PRE_ROLL, PauseBehavior, RecordingOptions, Track, Trim
from .sequences import KeySequences, Match
from .tones import ToneKind, render

HOLD_BACK_SECONDS = 0.2
#: A start or resume after a key sequence begins this long after the last key's tone ended: the
#: detector measures the end to about a millisecond, so no tail of the tone is in the file.
KEY_GUARD_SECONDS = 0.005
#: Audio kept around the speech when trimming silence.
TRIM_PAD_SECONDS = 0.25


def new_sid(prefix: str) -> str:
    """A Twilio-style id: two letters and 32 hex digits."""
    return prefix + secrets.token_hex(16)


@dataclass(slots=True)
class _Hold:
    """Rendered output not yet released: (input position, frames) pieces."""

    pieces: list[tuple[int, np.ndarray]] = field(default_factory=list)
    released: int = 0  # input position up to which output has been released

    def add(self, at: int, frames: np.ndarray) -> None:
        if len(frames):
            self.pieces.append((at, frames))

    def cut_from(self, at: int) -> int:
        """Drop every frame that stands for input at or after ``at``; return how many."""
        dropped = 0
        kept = []
        for start, frames in self.pieces:
            keep = max(0, min(len(frames), at - start))
            dropped += len(frames) - keep
            if keep:
                kept.append((start, frames[:keep]))
        self.pieces = kept
        return dropped

    def release(self, before: int | None) -> list[np.ndarray]:
        """Take the frames standing for input before ``before`` (all with None)."""
        out = []
        if before is not None:
            self.released = max(self.released, before)
        while self.pieces:
            start, frames = self.pieces[0]
            if before is not None and start + len(frames) > before:
                take = max(0, before - start)
                if take:
                    out.append(frames[:take])
                    self.pieces[0] = (before, frames[take:])
                break
            out.append(frames)
            self.pieces.pop(0)
        return out


class _Ring:
    """The newest input frames, for pre-roll."""

    def __init__(self, capacity: int, channels: int) -> None:
        self.capacity = capacity
        self._buf = np.zeros((capacity, channels), dtype=np.int16)
        self._end = 0  # frames written in all

    def add(self, frames: np.ndarray) -> None:
        n = len(frames)
        if n >= self.capacity:
            self._buf[:] = frames[-self.capacity :]
            self._end += n
            self._buf = np.roll(self._buf, self._end % self.capacity, axis=0)
            return
        at = self._end % self.capacity
        first = min(n, self.capacity - at)
        self._buf[at : at + first] = frames[:first]
        self._buf[: n - first] = frames[first:]
        self._end += n

    @property
    def end(self) -> int:
        return self._end

    def last(self, n: int) -> np.ndarray:
        at = self._end % self.capacity
        idx = (at - n + np.arange(n)) % self.capacity
        return self._buf[idx]


@dataclass(slots=True)
class _Active:
    info: ev.Recording
    state: State = State.RECORDING
    behavior: PauseBehavior = PauseBehavior.SILENCE
    hold: _Hold = field(default_factory=_Hold)
    frames: int = 0  # output frames rendered so far (released and held)
    heard_speech: bool = False
    silence_from: int = 0  # input sample since which there has been no speech
    first_speech: int | None = None  # output frame index
    last_speech: int | None = None  # output frame index (exclusive)
    tones: list[tuple[int, np.ndarray]] = field(default_factory=list)
    next_warning: int | None = None
    changed_at: int = 0  # input sample of the last state change (start, pause, resume)

    @property
    def options(self) -> RecordingOptions:
        return self.info.options


class Recorder:
    """The shared real-time recording core.

    >>> import numpy as np
    >>> from firmware.core import Recorder, InputLayout, Start, Stop, Finished
    >>> core = Recorder(InputLayout(sample_rate=8000, channels=1))
    >>> _ = core.send(Start())
    >>> _ = core.feed(np.zeros(8000, dtype=np.int16))
    >>> done = [e for e in core.send(Stop()) if isinstance(e, Finished)]
    >>> done[0].frames, done[0].end_reason.value
    (8000, 'stop')
    """

    def __init__(
        self,
        layout: tracks.InputLayout,
        *,
        button_options: RecordingOptions | None = None,
        sequences: KeySequences | None = None,
        sequence_track: str = "both",
        new_id: Callable[[str], str] = new_sid,
    ) -> None:
        self.layout = layout
        self.rate = layout.sample_rate
        self.button_options = button_options or RecordingOptions()
        self.position = 0
        self.call_id: str | None = None
        #: Why no recording may start now (storage full, no usable encryption key), or None.
        self.refuse_starts: str | None = None
        self.sequences = sequences
        self.sequence_track = sequence_track
        self._new_id = new_id
        self._active: dict[str, _Active] = {}
        self._queue: list[tuple[int, int, c.Control]] = []
        self._order = 0
        self._dtmf = {name: DtmfDetector(self.rate) for name in layout.tracks()}
        self._down: set[tuple[str, str]] = set()  # (track, key) proven down and not yet up
        self._vad = {name: vad.SpeechDetector(self.rate) for name in layout.tracks()}
        self._vad_history: dict[str, list[vad.Blocks]] = {name: [] for name in layout.tracks()}
        self._ring = _Ring(round(MAX_PRE_ROLL * self.rate), layout.channels)
        self._hold_back = round(HOLD_BACK_SECONDS * self.rate)
        self._key_guard = round(KEY_GUARD_SECONDS * self.rate)
        self._tone_cache = {kind: render(kind, self.rate) for kind in ToneKind}

    # -- public -------------------------------------------------------------------
    @property
    def active(self) -> list[ev.Recording]:
        return [a.info for a in self._active.values()]

    def state_of(self, recording_id: str) -> State | None:
        act = self._active.get(recording_id)
        return act.state if act else None

    @property
    def keying(self) -> bool:
        """A key may be sounding, is down, or a key sequence is part-way keyed: what comes next may act within a period
        (a sequence's last key up starts a recording and its beep), so a live caller feeds it promptly."""
        if self._down or (self.sequences is not None and self.sequences.pending is not None):
            return True
        return any(detector.sounding for detector in self._dtmf.values())

    def speech_span(self, since: int, sensitivity: float) -> tuple[int, int] | None:
        """The ends of the first and the last 10 ms blocks after sample ``since`` that hold speech on any
        track, or None. Call detection (``session``) reads this instead of running a detector of its own."""
        first: int | None = None
        last: int | None = None
        for history in self._vad_history.values():
            for blocks in reversed(history):
                if not blocks.ends.size:
                    continue
                if blocks.ends[-1] <= since:
                    break
                heard = blocks.ends[blocks.speech(sensitivity) & (blocks.ends > since)]
                if heard.size:
                    first = int(heard[0]) if first is None else min(first, int(heard[0]))
                    last = int(heard[-1]) if last is None else max(last, int(heard[-1]))
        return None if first is None or last is None else (first, last)

    def feed(self, frames: np.ndarray) -> list[ev.Event]:
        """Process the next input frames (int16, shape (n,) or (n, channels))."""
        frames = np.asarray(frames)
        if frames.dtype != np.int16:
            raise TypeError(f"frames must be int16, not {frames.dtype}")
        frames = frames.reshape(len(frames), -1)
        if frames.shape[1] != self.layout.channels:
            raise ValueError(f"frames have {frames.shape[1]} channels; the input has {self.layout.channels}")
        out: list[ev.Event] = []
        while len(frames):
            cut = len(frames)
            if self._queue and self._queue[0][0] < self.position + cut:
                cut = max(0, self._queue[0][0] - self.position)
            if cut:
                out += self._process(frames[:cut])
                frames = frames[cut:]
            out += self._apply_due()
        out += self._apply_due()
        return out

    def send(self, control: c.Control) -> list[ev.Event]:
        """Apply a control now, or keep it for its future ``at``."""
        if control.at is not None and control.at > self.position:
            bisect.insort(self._queue, (control.at, self._order, control), key=lambda item: item[:2])
            self._order += 1
            return []
        return self._apply(control)

    def close(self, reason: EndReason = EndReason.CALL_END) -> list[ev.Event]:
        """End of input: close sounding keys and end every recording with ``reason``."""
        out: list[ev.Event] = []
        downs: list[tuple[str, KeyDown]] = []
        found = {name: det.flush() for name, det in self._dtmf.items()}
        for name, items in found.items():
            out += self._keys(name, items, downs)
        for match in self._follow_sequences(found):
            if match.action in ("stop", "pause"):  # nothing is left to start or resume into
                out += self._sequence(match)
        for act in list(self._active.values()):
            key = self._end_key(act, downs)
            if key is not None:
                out += self._finish(act, key.start, EndReason.END_ON_KEY, key=key.key)
            else:
                out += self._finish(act, self.position, reason)
        return out

    # -- controls -------------------------------------------------------------------
    def _apply_due(self) -> list[ev.Event]:
        out: list[ev.Event] = []
        while self._queue and self._queue[0][0] <= self.position:
            _, _, control = self._queue.pop(0)
            try:
                out += self._apply(control)
            except ControlError as exc:
                out.append(ev.Rejected(control, str(exc)))
        return out

    def _apply(self, control: c.Control) -> list[ev.Event]:
        handler = self._HANDLERS.get(type(control))
        if handler is None:
            raise ControlError(f"unknown control {control!r}")
        return handler(self, control)

    def _on_start(self, control: c.Start) -> list[ev.Event]:
        return self._start(control.options, control.source, control.call_id, control.since)

    def _on_stop(self, control: c.Stop) -> list[ev.Event]:
        return self._finish(self._find(control.target), self.position, control.reason)

    def _on_pause(self, control: c.Pause) -> list[ev.Event]:
        return self._pause(self._find(control.target), control.behavior)

    def _on_resume(self, control: c.Resume) -> list[ev.Event]:
        return self._resume(self._find(control.target))

    def _on_button(self, control: c.ButtonPress) -> list[ev.Event]:
        acts = list(self._active.values())
        if lifecycle.record_button(len(acts)) == "start":
            return self._start(self.button_options, "button", None)
        return [e for act in acts for e in self._finish(act, self.position, EndReason.BUTTON)]

    def _on_pause_button(self, control: c.PauseButtonPress) -> list[ev.Event]:
        acts = list(self._active.values())
        if lifecycle.pause_button([a.state for a in acts]) is Trigger.RESUME:
            return [e for a in acts for e in self._resume(a)]
        return [e for a in acts if a.state is State.RECORDING for e in self._pause(a, PauseBehavior.SILENCE)]

    def _on_call_end(self, control: c.CallEnd) -> list[ev.Event]:
        out = [e for act in list(self._active.values()) for e in self._finish(act, self.position, EndReason.CALL_END)]
        self.call_id = None
        return out

    _HANDLERS: ClassVar[dict[type, Callable[[Recorder, c.Control], list[ev.Event]]]] = {
        c.Start: _on_start,
        c.Stop: _on_stop,
        c.Pause: _on_pause,
        c.Resume: _on_resume,
        c.ButtonPress: _on_button,
        c.PauseButtonPress: _on_pause_button,
        c.CallEnd: _on_call_end,
    }

    def _find(self, target: str) -> _Active:
        if target == c.CURRENT:
            if len(self._active) != 1:
                raise ControlError(f"'current' needs exactly one active recording; {len(self._active)} are active")
            return next(iter(self._active.values()))
        for act in self._active.values():
            if target in (act.info.id, act.info.name):
                return act
        raise ControlError(f"no active recording has the name or id {target!r}")

    def _start(
        self, options: RecordingOptions, source: str, call_id: str | None, since: int | None = None
    ) -> list[ev.Event]:
        if self.refuse_starts:
            raise ControlError(self.refuse_starts)
        try:
            self.layout.check(options)
        except tracks.LayoutError as exc:
            raise InputMismatch(str(exc), exc.option) from None
        if options.name and any(a.info.name == options.name for a in self._active.values()):
            raise ControlError(f"a recording named {options.name!r} is already active")
        if call_id:
            self.call_id = call_id
        elif self.call_id is None:
            self.call_id = self._new_id("CA")
        rid = self._new_id("RE")
        # A start decided on audio already fed (``since``) begins there, as if it had come in time.
        at = self.position if since is None else min(self.position, max(since, self.position - self._ring.capacity))
        pre = min(round(options.pre_roll * self.rate), at, self._ring.capacity - (self.position - at))
        info = ev.Recording(rid, options.name or rid, self.call_id, source, options, at, at - pre)
        act = _Active(info, silence_from=at, changed_at=at)
        out: list[ev.Event] = [ev.Started(info, at, pre, State.RECORDING)]
        if options.beep:
            act.tones.append((at, self._tone_cache[ToneKind.BEEP]))
            out.append(ev.Tone(ToneKind.BEEP, at, self._tone_cache[ToneKind.BEEP]))
        if options.warning_tone_interval > 0:
            act.next_warning = at + round(options.warning_tone_interval * self.rate)
        if self.position > info.first:
            self._catch_up(act)
        self._active[rid] = act
        return out

    def _catch_up(self, act: _Active) -> None:
        """Render the audio from the recording's first sample up to now from the ring: its pre-roll, and
        what came after a start decided late."""
        n = self.position - act.info.first
        act.hold.add(
            act.info.first,
            tracks.render(self.layout, act.options, self._ring.last(n), self._tone_span(act, act.info.first, n)),
        )
        act.frames = n
        last = self._speech_between(act, act.info.first, self.position, 0)  # counts, for trimming and no-input
        if last is not None and last > act.info.start:
            act.silence_from = last

    def _speech_between(self, act: _Active, lo: int, hi: int, out_at_lo: int) -> int | None:
        """Count the speech already detected in input ``[lo, hi)``, which became output from ``out_at_lo``
        on; return the input sample where the last of it ended."""
        last = None
        for name in self._tracks_of(act):
            block = self._vad[name].block
            for blocks in self._vad_history[name]:
                mask = (blocks.ends - block >= lo) & (blocks.ends <= hi)
                speech = blocks.speech(act.options.input_sensitivity) & mask
                if speech.any():
                    hits = blocks.ends[speech] - lo + out_at_lo
                    self._heard(act, int(hits[0]) - block, int(hits[-1]))
                    end = int(blocks.ends[speech][-1])
                    last = end if last is None else max(last, end)
        return last

    def _rewind(self, act: _Active, at: int) -> int:
        """Drop the held output that stands for input from ``at`` on; return where it was cut.

        Output already released cannot be taken back, and a state change in between is kept: the cut is
        then where the release ended, or where the state last changed.
        """
        at = max(at, act.info.first, act.hold.released, act.changed_at)
        act.frames -= act.hold.cut_from(at)
        if act.last_speech is not None and act.last_speech > act.frames:
            act.last_speech = act.frames
        if act.first_speech is not None and act.first_speech >= act.frames:
            act.first_speech = act.last_speech = None
        return at

    def _pause(self, act: _Active, behavior: PauseBehavior, at: int | None = None) -> list[ev.Event]:
        """Pause now, or as if the control had come at the earlier input sample ``at`` (within the hold)."""
        at = self.position if at is None else at
        state = self._step(act, Trigger.PAUSE)
        at = self._rewind(act, at)
        act.state, act.behavior, act.changed_at = state, behavior, at
        self._render(act, np.zeros((self.position - at, self.layout.channels), np.int16), at)
        return [ev.Paused(act.info, at, behavior, act.state)]

    def _resume(self, act: _Active, at: int | None = None) -> list[ev.Event]:
        """Resume now, or as if the control had come at the earlier input sample ``at`` (within the hold and
        the ring)."""
        at = self.position if at is None else at
        state = self._step(act, Trigger.RESUME)
        at = max(self._rewind(act, at), self.position - self._ring.capacity)
        act.state, act.changed_at = state, at
        out_at = act.frames
        self._render(act, self._ring.last(self.position - at), at)
        last = self._speech_between(act, at, self.position, out_at)
        act.silence_from = last if last is not None else at
        return [ev.Resumed(act.info, at, act.state)]

    def _hush(self, act: _Active, lo: int, hi: int) -> None:
        """Replace input ``[lo, hi)`` of a recording by silence (a key sequence that did not act on it),
        as far as the hold still has it."""
        if act.state is not State.RECORDING:
            return  # paused: the span is silence already, or left out
        lo = self._rewind(act, lo)
        hi = max(lo, min(hi, self.position))
        act.hold.add(lo, np.zeros((hi - lo, act.options.channel_count), np.int16))
        act.frames += hi - lo
        if self.position > hi:
            out_at = act.frames
            self._render(act, self._ring.last(self.position - hi), hi)
            self._speech_between(act, hi, self.position, out_at)

    @staticmethod
    def _step(act: _Active, trigger: Trigger) -> State:
        return next_state(act.state, trigger, act.info.name)  # StateError (a ControlError) names both

    # -- audio -------------------------------------------------------------------------
    def _process(self, frames: np.ndarray) -> list[ev.Event]:
        start, n = self.position, len(frames)
        end = start + n
        self._ring.add(frames)
        signals = self.layout.split(frames)
        out: list[ev.Event] = []
        downs: list[tuple[str, KeyDown]] = []
        speech: dict[str, vad.Blocks] = {}
        found: dict[str, list[KeyDown | KeyUp]] = {}
        for name, signal in signals.items():
            found[name] = self._dtmf[name].process(signal)
            out += self._keys(name, found[name], downs)
            blocks = self._vad[name].process(signal)
            speech[name] = blocks
            hist = self._vad_history[name]
            hist.append(blocks)
            while len(hist) > 2 and hist[1].ends.size and hist[1].ends[0] < end - self._ring.capacity:
                hist.pop(0)
        self.position = end
        matches = self._follow_sequences(found)
        hold = end - self._hold_back
        # Hold from the first key of a sequence being keyed, or of one just completed (it acts below).
        pins = [m.first for m in matches]
        if self.sequences and self.sequences.pending is not None:
            pins.append(self.sequences.pending)
        pins = [pin for pin in pins if end - pin <= self._ring.capacity]
        if pins:
            hold = min(hold, *pins)
        for act in list(self._active.values()):
            out += self._advance(act, frames, start, speech, downs, hold)
        for match in matches:
            out += self._sequence(match)
        if self.sequences:
            self.sequences.expire(end - self._hold_back)  # a next key may begin here, not yet proven
        return out

    # -- key sequences -------------------------------------------------------------------
    def _follow_sequences(self, found: dict[str, list[KeyDown | KeyUp]]) -> list[Match]:
        """Tell the sequences the keys heard on their track, in the order they were heard."""
        if not self.sequences or not self.sequences.sequences:
            return []
        items = [
            item
            for name, keys in found.items()
            if self.sequence_track == "both" or name in (self.sequence_track, "both")
            for item in keys
        ]
        items.sort(key=lambda k: k.start if isinstance(k, KeyDown) else k.end)
        matches = []
        for item in items:
            if isinstance(item, KeyDown):
                self.sequences.down(item.key, item.start)
            else:
                match = self.sequences.up(item.key, item.start, item.end)
                if match is not None:
                    matches.append(match)
        return matches

    def _sequence(self, match: Match) -> list[ev.Event]:
        """What a complete key sequence does, at the samples where its keys were."""
        acts = list(self._active.values())
        out: list[ev.Event] = []
        keys = (match.first, match.end + self._key_guard)
        try:
            if match.action == "start":
                if acts:  # like the record button: a start sequence starts a recording when none runs
                    for act in acts:
                        self._hush(act, *keys)
                    return [ev.Rejected(match, "a recording is already active; the start sequence started none")]
                return self._start(self.button_options, "dtmf", None, since=keys[1])
            if match.action == "stop":
                for act in acts:
                    at = max(match.first, act.info.first, act.hold.released, act.changed_at)
                    out += self._finish(act, at, EndReason.STOP)
            elif match.action == "pause":
                for act in acts:
                    if act.state is State.RECORDING:
                        out += self._pause(act, PauseBehavior.SILENCE, at=match.first)
            elif match.action == "resume":
                for act in acts:
                    if act.state is State.PAUSED:
                        out += self._resume(act, at=keys[1])
                    else:  # recording already: its keys are not kept
                        self._hush(act, *keys)
        except ControlError as exc:
            out.append(ev.Rejected(match, str(exc)))
        return out

    def _keys(self, track: str, found: list[KeyDown | KeyUp], downs: list[tuple[str, KeyDown]]) -> list[ev.Event]:
        """Collect proven keys into ``downs``; return the ended ones as events."""
        out: list[ev.Event] = []
        for item in found:
            if isinstance(item, KeyDown):
                downs.append((track, item))
                self._down.add((track, item.key))
            else:
                self._down.discard((track, item.key))
                out.append(ev.Key(item.key, track, item.start, item.end))
        return out

    def _end_key(self, act: _Active, downs: list[tuple[str, KeyDown]]) -> KeyDown | None:
        """The earliest key that ends this recording: one of its keys, on a
        track it records, whose tone began after the recording started."""
        mine = [
            down
            for track, down in downs
            if down.key in act.options.end_on_key and down.start >= act.info.start and track in self._tracks_of(act)
        ]
        return min(mine, key=lambda d: d.start, default=None)

    def _tracks_of(self, act: _Active) -> tuple[str, ...]:
        if not self.layout.separable or act.options.track is Track.BOTH:
            return self.layout.tracks()
        return (act.options.track.value,)

    def _advance(self, act, frames, start, speech, downs, hold) -> list[ev.Event]:
        end = start + len(frames)
        stop_at, reason, key = self._end_condition(act, start, end, speech, downs)
        upto = min(stop_at, end) if stop_at is not None else end
        out = self._warning_tones(act, upto)
        self._render(act, frames[: max(0, upto - start)], start)
        if stop_at is not None:
            return out + self._finish(act, stop_at, reason, key)
        for piece in act.hold.release(hold):
            out.append(ev.Audio(act.info, piece))
        return out

    def _render(self, act: _Active, frames: np.ndarray, start: int) -> None:
        n = len(frames)
        if not n:
            return
        if act.state is State.PAUSED:
            if act.behavior is PauseBehavior.SILENCE:
                act.hold.add(start, np.zeros((n, act.options.channel_count), np.int16))
                act.frames += n
            return
        tone = self._tone_span(act, start, n)
        act.hold.add(start, tracks.render(self.layout, act.options, frames, tone))
        act.frames += n

    def _tone_span(self, act: _Active, start: int, n: int) -> np.ndarray | None:
        if not act.tones:
            return None
        span = np.zeros(n, np.int32)
        keep = []
        for at, samples in act.tones:
            lo, hi = max(at, start), min(at + len(samples), start + n)
            if hi > lo:
                span[lo - start : hi - start] += samples[lo - at : hi - at]
            if at + len(samples) > start + n:
                keep.append((at, samples))
        act.tones = keep
        return span

    def _warning_tones(self, act: _Active, end: int) -> list[ev.Event]:
        out: list[ev.Event] = []
        interval = round(act.options.warning_tone_interval * self.rate)
        while act.next_warning is not None and act.next_warning < end:
            at = act.next_warning
            act.next_warning += interval
            if act.state is State.PAUSED:
                continue
            samples = self._tone_cache[ToneKind.WARNING]
            act.tones.append((at, samples))
            out.append(ev.Tone(ToneKind.WARNING, at, samples))
        return out

    def _end_condition(self, act, start, end, speech, downs):
        """The first sample where the recording must end, why, and the key if one.

        A key's onset may lie before ``start``: the hold-back buffer still has it.
        """
        o = act.options
        candidates: list[tuple[int, EndReason, str | None]] = []
        limit = act.info.start + round(o.max_length * self.rate)
        if limit <= end:
            candidates.append((max(limit, start), EndReason.MAX_LENGTH, None))
        key = self._end_key(act, downs)
        if key is not None:
            candidates.append((key.start, EndReason.END_ON_KEY, key.key))
        if act.state is State.RECORDING:
            hit = self._speech_condition(act, start, speech)
            if hit:
                candidates.append((*hit, None))
        if not candidates:
            return None, None, None
        return min(candidates, key=lambda item: item[0])

    def _speech_condition(self, act: _Active, start: int, speech: dict[str, vad.Blocks]):
        o = act.options
        names = self._tracks_of(act)
        blocks = speech[names[0]]
        if not blocks.ends.size:
            return None
        flags = np.zeros(blocks.ends.size, bool)
        for name in names:
            flags |= speech[name].speech(o.input_sensitivity)
        block = self._vad[names[0]].block
        flags &= blocks.ends - block >= act.info.start
        ends = blocks.ends
        out_base = act.frames  # output frame that input sample ``start`` becomes
        heard_before = act.heard_speech
        # Latest speech end at or before each block.
        last = np.maximum.accumulate(np.where(flags, ends, act.silence_from))
        last = np.maximum(last, act.silence_from)
        heard = heard_before | np.logical_or.accumulate(flags)
        fire = np.zeros(ends.size, bool)
        reason = np.full(ends.size, "", object)
        if o.initial_timeout > 0:
            timeout = ~heard & (ends - act.info.start >= round(o.initial_timeout * self.rate))
            fire |= timeout
            reason[timeout] = EndReason.NO_INPUT
        if o.end_on_silence > 0:
            allowed = heard | (o.initial_timeout <= 0)
            quiet = allowed & (ends - last >= round(o.end_on_silence * self.rate)) & ~fire
            fire |= quiet
            reason[quiet] = EndReason.END_ON_SILENCE
        upto = int(np.argmax(fire)) + 1 if fire.any() else ends.size
        seen = flags[:upto]
        if seen.any():
            idx = np.flatnonzero(seen)
            first_out = out_base + int(ends[idx[0]] - block - start)
            last_out = out_base + int(ends[idx[-1]] - start)
            self._heard(act, first_out, last_out)
            act.silence_from = int(ends[idx[-1]])
        if fire.any():
            i = upto - 1
            why = reason[i]
            if why is EndReason.END_ON_SILENCE and not heard[i]:
                why = EndReason.NO_INPUT
            return int(ends[i]), why
        return None

    @staticmethod
    def _heard(act: _Active, first_out: int, last_out: int) -> None:
        act.heard_speech = True
        first_out = max(first_out, 0)
        if act.first_speech is None or first_out < act.first_speech:
            act.first_speech = first_out
        act.last_speech = max(act.last_speech or 0, last_out)

    def _finish(self, act: _Active, at: int, reason: EndReason, key: str | None = None) -> list[ev.Event]:
        act.state = self._step(act, lifecycle.ending(reason))
        act.frames -= act.hold.cut_from(at)
        del self._active[act.info.id]
        out: list[ev.Event] = [ev.Audio(act.info, piece) for piece in act.hold.release(None)]
        trim = None
        empty = act.state is State.NO_INPUT or act.frames == 0  # nothing between its start and its end
        if act.options.trim is Trim.TRIM_SILENCE and act.state is State.FINISHED:
            if act.first_speech is None:
                empty = True
                trim = (0, 0)
            else:
                pad = round(TRIM_PAD_SECONDS * self.rate)
                lo = max(0, act.first_speech - pad)
                hi = min(act.frames, (act.last_speech or 0) + pad)
                empty = hi <= lo
                trim = (lo, max(lo, hi))
        status = finished_status(act.state, empty=empty)
        out.append(ev.Finished(act.info, at, act.state, status, reason, act.frames, self.rate, key=key, trim=trim))
        return out
