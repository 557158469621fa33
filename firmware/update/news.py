"""What the daemon tells about updates: ``device.update`` events, and the ``update`` part of its state.

Theory of operation
-------------------
An update runs as root, outside the daemon, and ends by restarting it; a rollback happens while no
daemon runs. So the daemon learns about updates from what they leave on the box, at its start and
then every ``LOOK_SECONDS``:

- the update history (``history.py``): ``verified``, ``installed``, ``switched``, ``refused``, one
  line per step, written by ``apply.update`` whichever way the update came in;
- the update guard's state file and the daemon's own confirmation note (``state.py``): a switch
  pending, ``confirmed``, or ``rolled_back`` with its reason. A switch made by hand with install.sh
  has no history; it is announced from the state file alone (``via`` ``install.sh``).

Each step is announced once: the keys ``ID:stage`` of what was announced are kept in the daemon's
state directory (``update-announced``, those the history still holds), so a restart repeats nothing and a
step that happened while the daemon was down (a bundle installed from the boot partition at boot, a
rollback) is announced when it is back. A box that has never kept the file announces only its
latest update. ``downloading`` is said by the daemon itself (``remote.py``), through ``say``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import history
from .history import Step
from .slots import Layout
from .state import WHY, Phase, Status, status

log = logging.getLogger("edge-recorder.update")

ANNOUNCED = "update-announced"
LOOK_SECONDS = 2.0

Announce = Callable[[dict[str, Any]], None]


class UpdateNews:
    """Turns what updates left on ``box`` into ``device.update`` events for ``announce`` (each once)."""

    def __init__(self, box: Layout, announced: Path, announce: Announce, running_slot: str | None = None) -> None:
        self.box = box
        self.running_slot = running_slot
        #: ``current`` names another slot than the one this daemon runs from: an update (or a rollback, or an
        #: install by hand) switched while it ran. The daemon restarts into it once no recording is active.
        self.outdated = False
        self.announced_path = announced
        self.announce = announce
        self._seen: list[str] | None = None  # None: the file was never kept on this box
        self._looked = -LOOK_SECONDS
        self._marks: tuple[Any, ...] | None = None
        self._status: Status | None = None
        self._last: Step | None = None
        self._live: Step | None = None  # a download in progress, said by the daemon
        self._said: deque[dict[str, Any]] = deque()  # said from another thread, announced from the loop
        self._lock = threading.Lock()

    # -- what the state snapshot shows -----------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The ``update`` part of the state: the running and the kept version, the last switch, the last step."""
        current = self._status
        last = self._live or self._last
        if current is None:
            return {"running": None, "previous": None, "switch": None, "reason": None, "last": None}
        phase = current.phase
        return {
            "running": current.running.version if current.running else None,
            "previous": current.previous.version if current.previous else None,
            "switch": phase.value.replace("-", "_") if phase is not None else None,
            "reason": current.reason or None,
            "last": _public(last) if last is not None else None,
        }

    # -- the daemon's own steps -------------------------------------------------------------------
    def say(self, step: Step, **extra: Any) -> None:
        """A step the daemon itself takes (downloading; a download that failed), from any thread: it is
        announced at the next ``poll`` or ``flush``, from the loop."""
        with self._lock:
            self._live = step if step.stage == "downloading" else None
            if step.stage != "downloading":
                self._last = step
            self._said.append(_public(step) | extra)

    def flush(self) -> None:
        """Announce what was said since the last poll (the daemon's last word before it stops, too)."""
        while True:
            with self._lock:
                if not self._said:
                    return
                said = self._said.popleft()
            self.announce(said)

    # -- looking ------------------------------------------------------------------------------------
    def poll(self, now: float | None = None) -> None:
        """Announce what is new (at most once every ``LOOK_SECONDS``; cheap when nothing changed)."""
        self.flush()
        now = time.monotonic() if now is None else now
        if now - self._looked < LOOK_SECONDS:
            return
        self._looked = now
        marks = tuple(_mark(p) for p in (history.history_path(self.box), self.box.top / "update.state", self._note()))
        marks += (os.readlink(self.box.top / "current") if (self.box.top / "current").is_symlink() else None,)
        if marks == self._marks:
            return
        if self.box.busy():
            # An update is switching: the guard's record of its switch comes before the history's, and current
            # changes before the update has finished. Look again once it has.
            self._marks = None
            return
        self._marks = marks
        try:
            self._look()
        except OSError as exc:
            self._marks = None  # looked at again, not only when a file changes
            log.warning("update: cannot read what the last update left in %s: %s", self.box.top, exc)

    def _note(self) -> Path | None:
        current = self._status
        if current is None or current.state is None or not current.state.confirmation:
            return None
        return self.box.on_box(current.state.confirmation)

    def _look(self) -> None:
        steps = history.read(self.box)
        self._status = current = status(self.box)
        steps += _from_switch(current, steps)
        if steps:
            self._last = steps[-1]
        with self._lock:
            if self._live is not None and any(s.id == self._live.id for s in steps):
                self._live = None  # root has taken it further
        running = current.running
        # a slot with edge-recorder in it: a link made by hand to anything else is not restarted into
        self.outdated = bool(
            self.running_slot
            and running is not None
            and running.version is not None
            and running.name != self.running_slot
        )
        seen = self._load()
        first_time = seen is None
        if first_time:  # only the latest update is news on a box that never kept what it announced
            latest = steps[-1].id if steps else None
            seen = [_key(s) for s in steps if s.id != latest]
        fresh = [s for s in steps if _key(s) not in seen]
        kept = {_key(s) for s in steps}
        for step in fresh:
            self.announce(_public(step))
            seen.append(_key(step))
            # saved after each: a step announced is never said again, whatever stops the daemon next; only what
            # the history still holds is kept, so the list is as long as the history
            self._save([key for key in seen if key in kept])
        if first_time and not fresh:
            self._save([key for key in seen if key in kept])

    # -- what was announced -------------------------------------------------------------------------
    def _load(self) -> list[str] | None:
        if self._seen is not None:
            return self._seen
        try:
            text = self.announced_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return None
        self._seen = [line for line in text.split("\n") if line and len(line) < 80][: history.KEEP * 4 * 3]
        return self._seen

    def _save(self, seen: list[str]) -> None:
        self._seen = seen
        partial = self.announced_path.with_name(f".{self.announced_path.name}.partial")
        try:
            partial.write_text("".join(f"{key}\n" for key in self._seen), encoding="utf-8")
            os.replace(partial, self.announced_path)
        except OSError as exc:
            log.warning("update: cannot keep what was announced in %s: %s", self.announced_path, exc)


def _from_switch(current: Status, steps: list[Step]) -> list[Step]:
    """The steps the update guard's state file and the confirmation note tell: switched (when the history
    has not said it), confirmed, rolled back."""
    state, phase = current.state, current.phase
    if state is None or phase is None:
        return []
    known = next((s for s in reversed(steps) if s.switch_id == state.id), None)
    update_id = known.id if known is not None else state.id
    origin = {
        "version": state.version,
        "from_version": current.previous.version if known is None and current.previous else "",
        "via": known.via if known is not None else "install.sh",
        "request_id": known.request_id if known is not None else "",
    }
    if known is not None:
        origin["from_version"] = known.from_version
    out = []
    if known is None and history.ID.match(update_id):
        message = f"edge-recorder {state.version} is current (switched by install.sh)"
        out.append(Step(update_id, "switched", message=message, at=state.switched_at, switch_id=state.id, **origin))
    if phase is Phase.CONFIRMED:
        at = current.confirmed.at if current.confirmed is not None else state.changed_at
        message = f"edge-recorder {state.version} recorded healthily after the switch: the update is confirmed"
        out.append(Step(update_id, "confirmed", message=message, at=at or history.now(), **origin))
    elif phase is Phase.ROLLED_BACK:
        why = WHY.get(current.reason, current.reason or "no reason recorded")
        message = f"switched back to slot {state.previous_slot}: {state.detail or why}"
        out.append(
            Step(
                update_id,
                "rolled_back",
                message=message,
                reason=current.reason,
                at=state.changed_at or history.now(),
                **origin,
            )
        )
    return out


def _key(step: Step) -> str:
    return f"{step.id}:{step.stage}"


def _public(step: Step) -> dict[str, Any]:
    """A step as a ``device.update`` event carries it: every field, empty ones as null."""
    return {k: (v if v != "" else None) for k, v in asdict(step).items()}


def _mark(path: Path | None) -> tuple[int, int] | None:
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size
