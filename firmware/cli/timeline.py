"""Control timelines for offline recording: ``--at 1.5=start`` and timeline files.

An entry is ``SECONDS=ACTION`` (or ``SECONDS ACTION`` on a line of a file; lines
starting with ``#`` are comments). Actions:

  start[:NAME]              start a recording with the command's options
  stop[:NAME]               stop NAME, or the only active recording
  pause[:NAME][:silence|skip]
  resume[:NAME]
  key:K[:inbound|outbound]  play DTMF key K (100 ms) into the input, as if pressed on the line
  button                    the record button (start, or stop what is active)
  pause-button              the pause button
  call-end                  the call ends
  hook:off | hook:on        the handset is lifted or put down (a hook switch; see --config)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core import controls
from ..core.dtmf import KEYS
from ..core.options import PauseBehavior

ACTIONS = ("start", "stop", "pause", "resume", "key", "button", "pause-button", "call-end", "hook")


class TimelineError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class KeyPress:
    """A DTMF key mixed into the input at ``seconds``."""

    key: str
    track: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Entry:
    seconds: float
    action: str
    args: tuple[str, ...]


def parse_entry(text: str, origin: str = "--at") -> Entry:
    sep = "=" if "=" in text.split(":")[0] else None
    when, _, action = text.partition("=") if sep else text.strip().partition(" ")
    try:
        seconds = float(when)
    except ValueError:
        raise TimelineError(f"{origin} {text!r}: {when!r} is not a time in seconds") from None
    if seconds < 0:
        raise TimelineError(f"{origin} {text!r}: time must not be negative")
    name, *args = action.strip().split(":")
    if name not in ACTIONS:
        raise TimelineError(f"{origin} {text!r}: unknown action {name!r}; expected one of {', '.join(ACTIONS)}")
    entry = Entry(seconds, name, tuple(args))
    to_control(entry, 0, "both")  # validates the arguments
    return entry


def read_file(path: Path) -> list[Entry]:
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        raise  # the command says: no input (66)
    except OSError as exc:
        raise TimelineError(f"timeline {path}: {exc.strerror}") from None
    entries = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if line and not line.startswith("#"):
            entries.append(parse_entry(line, f"{path}:{number}"))
    return entries


def to_control(entry: Entry, at: int, default_track: str, start=None):
    """The core control for an entry (or a ``KeyPress``); ``start`` builds a Start."""
    a = entry.args
    if entry.action == "start":
        return start(a[0] if a else "", at) if start else None
    if entry.action == "stop":
        return controls.Stop(a[0] if a else controls.CURRENT, at=at)
    if entry.action == "pause":
        behavior = PauseBehavior.SILENCE
        target = controls.CURRENT
        for arg in a:
            if arg in ("silence", "skip"):
                behavior = PauseBehavior(arg)
            else:
                target = arg
        return controls.Pause(target, behavior, at=at)
    if entry.action == "resume":
        return controls.Resume(a[0] if a else controls.CURRENT, at=at)
    if entry.action == "key":
        if not a or len(a[0]) != 1 or a[0].upper() not in KEYS:
            raise TimelineError(f"key needs one DTMF key from {KEYS}, e.g. key:#")
        track = a[1] if len(a) > 1 else default_track
        if track not in ("inbound", "outbound", "both"):
            raise TimelineError(f"key track {track!r}: expected inbound or outbound")
        return KeyPress(a[0].upper(), track, entry.seconds)
    if entry.action == "button":
        return controls.ButtonPress(at=at)
    if entry.action == "pause-button":
        return controls.PauseButtonPress(at=at)
    if entry.action == "hook":
        if a not in (("off",), ("on",)):
            given = ":".join(a) or "nothing"
            raise TimelineError(f"hook:{given}: expected hook:off (handset lifted) or hook:on (put down)")
        return controls.Hook(a[0] == "off", at=at)
    return controls.CallEnd(at=at)
