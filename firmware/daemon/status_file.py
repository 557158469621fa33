"""The status file: what the running box says about itself, for ``edge-recorder status`` on the same box.

Theory of operation
-------------------
The box publishes its state over MQTT, but on the box itself nothing should need the network
to ask it what it is doing. So the daemon keeps one small JSON document, the *status file*,
that any process allowed to read it (the daemon's user and group) can read without talking to
the daemon: the same snapshot the retained ``state`` topic carries (``AudioLoop.state``), plus
who is writing it (pid, boot, start, firmware), the broker connection with when it last changed,
and where each active recording came from and how long it has run.

One thread of its own writes it (never the audio loop): when the box tells it something
changed (``wake``: every event the journal writes), when the broker connection changes (looked
at every ``CHECK_SECONDS``, a flag and a string), and at least every ``WRITE_SECONDS``. Each
write goes to a temporary file in the same directory, renamed over the old one, so a reader
sees the previous document or the next, never half of one. On a box the file is on the
runtime directory's tmpfs, so these writes never reach the SD card. It holds no secrets: the
errors in it go through ``firmware.destinations.redact``, and it names no destination.

A reader decides the box is not running (``not_running``) when there is no file, when the
daemon wrote ``"phase": "stopped"`` on its way out, when the file is from another boot, when its
pid is gone (a crash, ``kill -9``: nobody wrote "stopped"), or when it is older than
``STALE_SECONDS`` (a hung daemon, which the watchdog is about to restart). Ages are measured
on the monotonic clock, which NTP does not step (a Pi boots with a guessed wall clock).

Where it is: ``status_path``, the one rule. The box's state directory
``/var/lib/edge-recorder`` goes with its runtime directory ``/run/edge-recorder`` (the unit's
``StateDirectory=`` and ``RuntimeDirectory=``), so a catalog there means
``/run/edge-recorder/status.json``; a catalog anywhere else (``run --state-dir DIR``, a config that
moves the catalog, the tests) means ``status.json`` beside the catalog.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import __version__
from ..catalog import rfc3339
from ..destinations import redact
from .system import boot_id

log = logging.getLogger("edge-recorder.status")

NAME = "status.json"
#: The unit's StateDirectory= and RuntimeDirectory= (systemd/edge-recorder.service).
STATE_DIRECTORY = Path("/var/lib/edge-recorder")
RUNTIME_DIRECTORY = Path("/run/edge-recorder")
#: The document's layout; a reader that meets a newer one says so rather than guessing.
FORMAT = 1
#: The longest the file goes unwritten while the box runs.
WRITE_SECONDS = 5.0
#: How often the writer looks at the broker connection (a flag and a string, no I/O).
CHECK_SECONDS = 1.0
#: The shortest time between two writes: a burst of changes (keys pressed) is one write.
GAP_SECONDS = 0.2
#: A document older than this is from a box that stopped without saying so, or hangs.
STALE_SECONDS = 30.0


def status_path(catalog: Path | str) -> Path:
    """Where the daemon whose catalog is ``catalog`` keeps its status file.

    >>> str(status_path("/var/lib/edge-recorder/catalog.sqlite3")), str(status_path("/srv/box/catalog.sqlite3"))
    ('/run/edge-recorder/status.json', '/srv/box/status.json')
    """
    directory = Path(catalog).parent
    return RUNTIME_DIRECTORY / NAME if directory == STATE_DIRECTORY else directory / NAME


def redact_text(text: str | None) -> str | None:
    """A message fit for the status file: every URL-like word in it through ``redact``.

    >>> redact_text("ConnectionError: url: /in/a.wav?token=abc (refused)")
    'ConnectionError: url: /in/a.wav?token=*** (refused)'
    """
    if text is None:
        return None
    return re.sub(r"\S+", lambda m: redact(m.group(0)), str(text))


class _Broker:
    """The broker connection as the writer saw it change: since when, and the last error with its time."""

    def __init__(self, now: float) -> None:
        self.state: str | None = None
        self.since = now
        self.last_error: str | None = None
        self.last_error_at: float | None = None

    def observe(self, state: str, error: str | None, now: float) -> bool:
        """Take what the link says now; True when it differs from what was seen last."""
        changed = False
        if state != self.state:
            if self.state is not None:
                self.since = now
            self.state, changed = state, True
        if error and error != self.last_error:
            self.last_error, self.last_error_at, changed = error, now, True
        return changed

    def document(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "since": _wall(self.since),
            "last_error": redact_text(self.last_error),
            "last_error_at": None if self.last_error_at is None else _wall(self.last_error_at),
        }


class StatusFile:
    """Keeps ``path`` up to date with what the running box says about itself.

    ``snapshot()`` is the device state (the state topic's); ``recording(id)`` adds what the
    snapshot does not say of an active recording (source, start, duration so far); ``broker()``
    is the MQTT link as ``(state, last error)``; ``phase()`` is ``starting``, ``ready`` or
    ``stopping``; ``identity`` goes into every document as it is. ``start()`` begins the writer,
    ``wake()`` says something changed, ``stop()`` writes ``"phase": "stopped"`` last.

    >>> import json, tempfile
    >>> status = StatusFile(Path(tempfile.mkdtemp()) / NAME, snapshot=lambda: {"state": "idle", "recordings": []})
    >>> status.write()
    >>> doc = json.loads(status.path.read_text())
    >>> doc["state"], doc["phase"], doc["pid"] == os.getpid(), not_running(doc)
    ('idle', 'starting', True, None)
    """

    def __init__(
        self,
        path: Path,
        *,
        snapshot: Callable[[], dict[str, Any]],
        recording: Callable[[str], dict[str, Any]] = lambda recording_id: {},
        broker: Callable[[], tuple[str, str | None]] = lambda: ("off", None),
        phase: Callable[[], str] = lambda: "starting",
        identity: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.snapshot = snapshot
        self.recording = recording
        self.broker = broker
        self.phase = phase
        self.identity = dict(identity or {})
        self.pid = os.getpid()
        self.boot = boot_id()
        self._started_wall, self._started_mono = time.time(), time.monotonic()
        self._broker = _Broker(self._started_wall)
        self._written = -WRITE_SECONDS
        self._failed: str | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-file", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Something the document says has changed: write it soon."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the writer and leave a last document that says the box has stopped."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)
        self._guarded(lambda: self.write(phase="stopped"))

    # -- the writer ------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            woken = self._wake.wait(CHECK_SECONDS)
            if woken:
                self._stop.wait(max(0.0, GAP_SECONDS - (time.monotonic() - self._written)))
                self._wake.clear()  # what woke it meanwhile is in this write
            if self._stop.is_set():
                return
            state, error = self._guarded(self.broker) or ("off", None)
            changed = self._broker.observe(state, error, time.time())
            if woken or changed or time.monotonic() - self._written >= WRITE_SECONDS:
                self._guarded(self.write)

    def _guarded(self, action: Callable[[], Any]) -> Any:
        """The status file is a courtesy: nothing about it may stop the box, and a failure is logged once."""
        try:
            result = action()
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}"
            if text != self._failed:
                log.warning("status file %s not written: %s", self.path, text)
            self._failed = text
            return None
        self._failed = None
        return result

    def document(self, phase: str | None = None) -> dict[str, Any]:
        if self._broker.state is None:  # written before the writer's first look
            self._broker.observe(*self.broker(), time.time())
        state = self.snapshot()
        recordings = [{**r, **(self.recording(r["id"]) or {})} for r in state.get("recordings", [])]
        delivery = dict(state.get("delivery") or {})
        if delivery.get("mqtt_error"):
            delivery["mqtt_error"] = redact_text(delivery["mqtt_error"])
        now_wall, now_mono = time.time(), time.monotonic()
        return {
            "format": FORMAT,
            "written_at": _wall(now_wall),
            "monotonic": round(now_mono, 3),
            "boot_id": self.boot,
            "pid": self.pid,
            "phase": phase or self.phase(),
            "started_at": _wall(self._started_wall),
            "uptime": round(now_mono - self._started_mono, 1),
            "firmware_version": __version__,
            **self.identity,
            **state,
            "recordings": recordings,
            "last_error": redact_text(state.get("last_error")),
            "problems": {code: redact_text(text) for code, text in (state.get("problems") or {}).items()},
            "delivery": delivery,
            "broker": self._broker.document(),
        }

    def write(self, phase: str | None = None) -> None:
        """Write the document now (atomically: a temporary file renamed over the old one)."""
        data = (json.dumps(self.document(phase), indent=2, default=str) + "\n").encode()
        temporary = self.path.with_name(f".{self.path.name}.{self.pid}.tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        except FileNotFoundError:  # the runtime directory of a daemon started by hand, outside its unit
            self.path.parent.mkdir(mode=0o750, exist_ok=True)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(temporary, self.path)
        self._written = time.monotonic()


# -- reading --------------------------------------------------------------------------------------
def read(path: Path) -> dict[str, Any]:
    """The document at ``path``; OSError when it cannot be read, ValueError when it is no status document."""
    document = json.loads(Path(path).read_bytes())
    if not isinstance(document, dict) or not isinstance(document.get("format"), int) or "pid" not in document:
        raise ValueError(f"{path}: not a status file")
    if document["format"] > FORMAT:
        raise ValueError(f"{path}: status file format {document['format']} is newer than this firmware knows")
    for key, kinds in _FIELDS.items():
        value = document.get(key)
        if value is not None and (not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)):
            raise ValueError(f"{path}: not a status file this firmware wrote ({key} is {type(value).__name__})")
    pid = document["pid"]
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid < PID_LIMIT:
        raise ValueError(f"{path}: not a status file this firmware wrote (pid {document['pid']})")
    return document


#: The largest pid Linux gives (``pid_max`` at most 2**22).
PID_LIMIT = 1 << 22
#: The types of the fields ``edge-recorder status`` reads: a file with others is not one the daemon wrote.
_FIELDS: dict[str, tuple[type, ...]] = {
    "pid": (int,),
    "monotonic": (int, float),
    "uptime": (int, float),
    "input_level": (int, float),
    "free_storage_mb": (int, float),
    "min_free_mb": (int, float),
    "phase": (str,),
    "state": (str,),
    "spool": (str,),
    "catalog": (str,),
    "device_id": (str,),
    "firmware_version": (str,),
    "written_at": (str,),
    "started_at": (str,),
    "boot_id": (str,),
    "last_error": (str,),
    "broker": (dict,),
    "delivery": (dict,),
    "problems": (dict,),
    "recordings": (list,),
}


def age(document: dict[str, Any]) -> float | None:
    """Seconds since ``document`` was written (monotonic clock, this boot); None when it is from another boot."""
    if document.get("boot_id") != boot_id() or not isinstance(document.get("monotonic"), int | float):
        return None
    return max(0.0, time.monotonic() - document["monotonic"])


def not_running(document: dict[str, Any] | None) -> str | None:
    """Why the daemon that wrote ``document`` is not running, or None when it is."""
    if document is None:
        return "it has written no status file"
    if document.get("phase") == "stopped":
        return f"it stopped at {document.get('written_at')}"
    seconds = age(document)
    if seconds is None:
        return f"its status file is from before the box last booted ({document.get('written_at')})"
    if not _alive(document["pid"]):
        return f"pid {document['pid']} is gone without saying it stopped (killed, or crashed)"
    if seconds > STALE_SECONDS:
        return f"pid {document['pid']} has not written its status for {seconds:.0f} s (hung?)"
    return None


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        pass
    try:  # a zombie has exited; only its parent has not collected it yet
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _wall(seconds: float) -> str:
    return rfc3339(datetime.fromtimestamp(seconds, UTC))
