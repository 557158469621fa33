"""Control inputs to the core, each stamped with the sample position it acts at.

``at`` is an absolute input sample index; ``None`` means "now" (the audio fed
so far). A control stamped in the future is kept and applied when the audio
reaches it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .lifecycle import EndReason
from .options import PauseBehavior, RecordingOptions

CURRENT = "current"


@dataclass(frozen=True, slots=True)
class Start:
    """Start a recording. ``since``: the recording starts at this earlier sample, as if the start had come
    there (its ``pre_roll`` before it, all within the input ring): for a start decided on audio already
    fed, such as speech heard in a batch, so where it begins does not depend on how the audio was cut up."""

    options: RecordingOptions = field(default_factory=RecordingOptions)
    source: str = "api"
    call_id: str | None = None
    at: int | None = None
    since: int | None = None


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop the recording with this name or id, or the only active one (``current``)."""

    target: str = CURRENT
    reason: EndReason = EndReason.STOP
    at: int | None = None


@dataclass(frozen=True, slots=True)
class Pause:
    target: str = CURRENT
    behavior: PauseBehavior = PauseBehavior.SILENCE
    at: int | None = None


@dataclass(frozen=True, slots=True)
class Resume:
    target: str = CURRENT
    at: int | None = None


@dataclass(frozen=True, slots=True)
class ButtonPress:
    """The record button: starts a recording, or stops the active ones."""

    at: int | None = None


@dataclass(frozen=True, slots=True)
class PauseButtonPress:
    """The pause button: pauses the active recordings, or resumes them."""

    at: int | None = None


@dataclass(frozen=True, slots=True)
class CallEnd:
    """The call is over: every recording ends with ``call_end``."""

    at: int | None = None


@dataclass(frozen=True, slots=True)
class Hook:
    """The hook switch changed: the handset was lifted (``off_hook``) or put down."""

    off_hook: bool
    at: int | None = None


Control = Start | Stop | Pause | Resume | ButtonPress | PauseButtonPress | CallEnd | Hook
