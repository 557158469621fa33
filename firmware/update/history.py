"""The box's update history: what each update did, one line per step, for ``device.update`` events.

Theory of operation
-------------------
Every way in (``edge-recorder update FILE``, a bundle on the boot partition, an MQTT ``update``
command, the Mender module) goes through ``apply.update``, which runs as root and appends a line
here at each step it reaches: ``verified``, ``installed``, ``switched``, or ``refused`` with the
reason. The daemon, which may not write ``/opt`` and is restarted by the switch, reads the file
(``news.py``) and turns each line it has not announced yet into a ``device.update`` event; what
happens after the switch (``confirmed``, ``rolled_back``) it reads from the update guard's state
file, and ``downloading`` it says itself.

The file is ``/opt/edge-recorder/update.history``, root's, readable by all (it holds versions,
reasons and ids, never a URL or a secret): JSON lines, each written whole with one ``write`` to a
file opened for appending, and cut to its last ``KEEP`` lines by a rewrite and a rename once it
holds twice that many. A line that is not JSON, or not an object with an ``id`` and a known
``stage``, is skipped by the reader: the file is never a reason to stop.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .slots import Layout

HISTORY_FILE = "update.history"  # in /opt/edge-recorder
KEEP = 100
#: Every step an update reports, in the order they can happen (docs/mqtt.md, ``device.update``).
STAGES = ("downloading", "verified", "installed", "switched", "confirmed", "rolled_back", "refused")
#: Who asked for an update.
VIA = ("command", "boot", "mqtt", "mender")
ID = re.compile(r"^[0-9a-f]{32}$")
MAX_LINE = 4096


def new_id() -> str:
    """An update's id: 32 hex digits.

    >>> bool(ID.match(new_id()))
    True
    """
    return os.urandom(16).hex()


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Step:
    """One step of one update, as the history keeps it and a ``device.update`` event carries it."""

    id: str  # the update's id (an MQTT command's answer names it)
    stage: str  # one of STAGES
    version: str = ""  # the version the update brings
    from_version: str = ""  # the version that ran when it began
    via: str = "command"  # one of VIA
    message: str = ""  # what happened, in a sentence
    reason: str = ""  # refused: a firmware.update.Reason value; rolled_back: a state.WHY key
    at: str = field(default_factory=now)
    switch_id: str = ""  # switched: the update guard's id of the switch (update.state's ID)
    request_id: str = ""  # the MQTT command's request_id

    def to_json(self) -> str:
        # ASCII: a line or paragraph separator in a message must not split the line for any reader
        return json.dumps({k: v for k, v in asdict(self).items() if v != ""})

    @classmethod
    def from_json(cls, line: str) -> Step | None:
        """A step, or None for a line that is not one.

        >>> Step.from_json('{"id": "%s", "stage": "verified", "version": "0.2.0"}' % ("ab" * 16)).version
        '0.2.0'
        >>> Step.from_json('{"id": "x", "stage": "verified"}') is None
        True
        >>> Step.from_json("[1, 2]") is None
        True
        """
        if len(line) > MAX_LINE:
            return None
        try:
            value = json.loads(line)
        except ValueError:
            return None
        if (
            not isinstance(value, dict)
            or value.get("stage") not in STAGES
            or not ID.fullmatch(str(value.get("id", "")))
        ):
            return None
        known = {name: value[name] for name in cls.__dataclass_fields__ if name in value}
        if not all(isinstance(v, str) for v in known.values()):
            return None
        return cls(**known)


def history_path(box: Layout) -> Path:
    return box.top / HISTORY_FILE


def record(box: Layout, step: Step) -> None:
    """Append ``step`` to the box's history (root only writes it); cut the file when it is long."""
    path = history_path(box)
    line = (step.to_json() + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, line)
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if size > KEEP * 2 * 400:  # a rough line count first: most steps are well under 400 bytes
        _cut(path)


def _cut(path: Path) -> None:
    lines = path.read_bytes().split(b"\n")
    lines = [line + b"\n" for line in lines if line]
    if len(lines) <= KEEP * 2:
        return
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_bytes(b"".join(lines[-KEEP:]))
    partial.chmod(0o644)
    os.replace(partial, path)


def read(box: Layout) -> list[Step]:
    """Every step the history holds, oldest first; [] when there is none."""
    try:
        with history_path(box).open("rb") as f:
            data = f.read(KEEP * 4 * MAX_LINE)
    except (FileNotFoundError, NotADirectoryError):
        return []
    steps = (Step.from_json(line.decode("utf-8", errors="replace")) for line in data.split(b"\n"))
    return [step for step in steps if step is not None]


def latest(steps: list[Step]) -> dict[str, Any] | None:
    """The last step, as the state snapshot shows it."""
    if not steps:
        return None
    return {k: v for k, v in asdict(steps[-1]).items() if v != ""}
