"""The shared real-time recording core (sans I/O).

Fed audio frames and control inputs stamped with audio time (sample positions),
it returns what happened: state changes, audio to write, tones to play, keys
heard. It uses numpy and the standard library only; no files, threads or clocks.
The daemon, ``edge-recorder record`` and the tests all drive this same core.
"""

from .controls import CURRENT, ButtonPress, CallEnd, Control, Hook, Pause, PauseButtonPress, Resume, Start, Stop
from .engine import Recorder, new_sid
from .events import (
    Audio,
    CallEnded,
    CallStarted,
    Event,
    Finished,
    Key,
    Paused,
    Recording,
    Rejected,
    Resumed,
    Started,
    Tone,
)
from .lifecycle import ControlError, EndReason, InputMismatch, State, StateError, Status
from .options import (
    Channels,
    Format,
    OptionError,
    PauseBehavior,
    RecordingOptions,
    Track,
    Trim,
)
from .session import Session, SessionRules
from .tones import ToneKind
from .tracks import InputLayout, LayoutError

__all__ = [
    "CURRENT",
    "Audio",
    "ButtonPress",
    "CallEnd",
    "CallEnded",
    "CallStarted",
    "Channels",
    "Control",
    "ControlError",
    "EndReason",
    "Event",
    "Finished",
    "Format",
    "Hook",
    "InputLayout",
    "InputMismatch",
    "Key",
    "LayoutError",
    "OptionError",
    "Pause",
    "PauseBehavior",
    "PauseButtonPress",
    "Paused",
    "Recorder",
    "Recording",
    "RecordingOptions",
    "Rejected",
    "Resume",
    "Resumed",
    "Session",
    "SessionRules",
    "Start",
    "Started",
    "State",
    "StateError",
    "Status",
    "Stop",
    "Tone",
    "ToneKind",
    "Track",
    "Trim",
    "new_sid",
]
