"""What the core reports. Positions are absolute input sample indices."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .lifecycle import STATUS, EndReason, State, Status
from .options import PauseBehavior, RecordingOptions
from .tones import ToneKind


@dataclass(frozen=True, slots=True)
class Recording:
    """A recording's identity and how it was asked for."""

    id: str
    name: str
    call_id: str
    source: str
    options: RecordingOptions
    start: int  # the start trigger
    first: int  # first sample in the file (start minus pre-roll)


@dataclass(frozen=True, slots=True)
class Started:
    recording: Recording
    at: int
    pre_roll: int  # frames of audio from before the trigger
    state: State = State.RECORDING

    @property
    def status(self) -> Status:
        return STATUS[self.state]


@dataclass(frozen=True, slots=True)
class Paused:
    recording: Recording
    at: int
    behavior: PauseBehavior
    state: State = State.PAUSED

    @property
    def status(self) -> Status:
        return STATUS[self.state]


@dataclass(frozen=True, slots=True)
class Resumed:
    recording: Recording
    at: int
    state: State = State.RECORDING

    @property
    def status(self) -> Status:
        return STATUS[self.state]


@dataclass(frozen=True, slots=True, eq=False)
class Audio:
    """Frames to append to a recording's file, in order: int16, shape (n, channels)."""

    recording: Recording
    frames: np.ndarray


@dataclass(frozen=True, slots=True)
class Finished:
    recording: Recording
    at: int  # the sample where the recording ended (exclusive)
    state: State
    status: Status
    end_reason: EndReason
    frames: int  # frames written in all
    sample_rate: int
    key: str | None = None
    trim: tuple[int, int] | None = None  # frames to keep when trimming silence
    discarded: str | None = None  # why the audio was not kept (status absent), e.g. shorter than min_length

    @property
    def duration(self) -> float:
        kept = self.trim[1] - self.trim[0] if self.trim else self.frames
        return kept / self.sample_rate


@dataclass(frozen=True, slots=True, eq=False)
class Tone:
    """A tone for the playback device, to start at input sample ``at``."""

    kind: ToneKind
    at: int
    samples: np.ndarray


@dataclass(frozen=True, slots=True)
class Key:
    """A DTMF key heard on a track, its tone spanning samples ``[start, end)``."""

    key: str
    track: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """A control stamped in the future, or a key sequence, that could not be applied when reached."""

    control: object
    reason: str


@dataclass(frozen=True, slots=True)
class CallStarted:
    """A call began at input sample ``at`` (hook switch or speech)."""

    call_id: str
    at: int


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The call ended at input sample ``at``; its recordings ended with ``call_end``."""

    call_id: str
    at: int


Event = Started | Paused | Resumed | Audio | Finished | Tone | Key | Rejected | CallStarted | CallEnded
