"""The new version confirms its own update once it has recorded healthily for long enough.

The daemon asks ``Confirmation.pending`` at its start whether it owes one: only when it runs
from a slot (``/opt/edge-recorder/slots/NAME``, found from where its own package is installed)
whose switch the state file says is pending (``state.py``). Then, from its audio loop, it calls
``observe`` with a look at its health; once every look for ``[update] confirm_seconds`` was
healthy, the note is written (``state.Confirmed``, into the daemon's state directory:
/opt is read-only to it) and the update guard records the switch as confirmed at its next run.
An unhealthy look starts the count again.

What "healthy" is belongs to the daemon (``daemon.app``): capture open, the loop turning (it also
sends the watchdog pings) and no error of its own. Each start counts from zero, so a version that
restarts never adds up to a confirmation; the guard counts the starts.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from .. import __version__
from .slots import PREFIX, Layout
from .state import Confirmed, Phase, UpdateState, note_path, read_state

log = logging.getLogger("edge-recorder.update")

#: Seconds between two looks at the daemon's health.
LOOK_SECONDS = 1.0


def running_slot(package: Path | None = None) -> tuple[Layout, str] | None:
    """The box layout and the slot this code runs from, None when it does not run from a slot (a checkout).

    >>> running_slot(Path("/opt/edge-recorder/slots/0.2.0/lib/python3.11/site-packages/firmware/__init__.py"))
    (Layout(root=PosixPath('/')), '0.2.0')
    >>> running_slot(Path("/home/pi/edge-recorder/firmware/__init__.py")) is None
    True
    """
    # resolved: /opt/edge-recorder/lib is a link into current's slot
    path = Path(package) if package is not None else Path(__file__).resolve()
    for folder in path.parents:
        top = folder.parent.parent
        if folder.parent.name == "slots" and top.parts[-2:] == tuple(PREFIX.split("/")):
            return Layout(top.parent.parent), folder.name
    return None


class Confirmation:
    """The confirmation this version owes for the switch ``state``."""

    def __init__(self, box: Layout, state: UpdateState, seconds: float) -> None:
        self.box = box
        self.state = state
        self.seconds = seconds
        self.note = note_path(box, state)
        self._healthy_since: float | None = None
        self._looked = -LOOK_SECONDS

    @classmethod
    def pending(cls, seconds: float, package: Path | None = None) -> Confirmation | None:
        """What this version owes when its slot's switch is pending, else None."""
        found = running_slot(package)
        if found is None:
            return None
        box, slot = found
        try:
            state = read_state(box)
        except OSError as exc:
            log.error("update: cannot read %s (%s): this version cannot confirm its update", box.top, exc)
            return None
        if state is None or state.phase is not Phase.PENDING or state.slot != slot or not state.confirmation:
            return None
        return cls(box, state, seconds)

    def describe(self) -> str:
        return (
            f"the update to edge-recorder {self.state.version} is confirmed after {self.seconds:g} s of healthy "
            "recording; a crash loop, a failed start or a reboot before then switches back to slot "
            f"{self.state.previous_slot}"
        )

    def observe(self, healthy: Callable[[], bool], now: float | None = None) -> bool:
        """Look at the health (at most once every ``LOOK_SECONDS``); True once confirmed, the note written.

        A note that cannot be written is logged and also ends the watch: the update then stays pending.
        """
        now = time.monotonic() if now is None else now
        if now - self._looked < LOOK_SECONDS:
            return False
        self._looked = now
        if not healthy():
            self._healthy_since = None
            return False
        if self._healthy_since is None:
            self._healthy_since = now
        if now - self._healthy_since < self.seconds:
            return False
        try:
            self._write(round(now - self._healthy_since))
        except OSError as exc:
            log.error("update: cannot confirm edge-recorder %s: %s: %s", __version__, self.note, exc.strerror or exc)
            return True
        log.info("update: edge-recorder %s confirmed after %g s of healthy recording", __version__, self.seconds)
        return True

    def _write(self, seconds: int) -> None:
        assert self.note is not None
        at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        note = Confirmed(self.state.id, self.state.slot, __version__, at, seconds)
        temporary = self.note.with_name(f".{self.note.name}.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.write(fd, note.to_text().encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.note)
