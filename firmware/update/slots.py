"""The slots on a box, as images/install.sh lays them out (it is the one that writes them):

    /opt/edge-recorder/slots/VERSION     one virtual environment per installed version, with the
                                         install.sh and units it came with (VERSION-2, -3... when
                                         the same version is installed again)
    /opt/edge-recorder/current           -> slots/VERSION: the running version
    /opt/edge-recorder/previous          -> slots/VERSION: the one before, kept to go back to
    /opt/edge-recorder/bin, lib, pyvenv.cfg -> current/...: so the units' /opt/edge-recorder/bin/edge-recorder
                                         is the running version's

A switch is one rename(2) of a new link over ``current``: at every moment ``current`` names
either the old slot or the new one, whole. This module only reads the layout.
"""

from __future__ import annotations

import errno
import fcntl
import importlib.metadata
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import Reason, Refused

PREFIX = "opt/edge-recorder"  # under the root
DISTRIBUTION = "edge-recorder"


@dataclass(frozen=True)
class Slot:
    name: str
    path: Path
    version: str | None  # None: no edge-recorder installed in it (a broken slot)


@dataclass(frozen=True)
class Layout:
    """Where things are on the box whose root file system is ``root``."""

    root: Path

    @property
    def top(self) -> Path:
        return self.root / PREFIX

    @property
    def slots(self) -> Path:
        return self.top / "slots"

    @property
    def staging(self) -> Path:
        """A private folder for the bundle while it is checked; on the same file system as the slots."""
        return self.top / ".update"

    @property
    def update_key(self) -> Path:
        return self.root / "etc/edge-recorder/update.pub"

    @property
    def config(self) -> Path:
        return self.root / "etc/edge-recorder/config.toml"

    def on_box(self, path: str | Path) -> Path:
        """A path as the box names it (``/var/lib/...``) in this root."""
        return self.root / str(path).lstrip("/")

    def slot(self, link: str) -> Slot | None:
        """The slot ``current`` or ``previous`` names, None when there is no such link."""
        try:
            target = os.readlink(self.top / link)
        except (FileNotFoundError, NotADirectoryError):
            return None
        name = Path(target).name
        return Slot(name, self.slots / name, version_in(self.slots / name))

    @contextmanager
    def locked(self, *, wait: bool = False) -> Iterator[None]:
        """One update at a time: a lock on /opt/edge-recorder itself, gone with the process; refused as BUSY
        while another holds it, or waited for (``wait``). Taken again by the process that holds it (the inbox's
        run holds it around each update), it is the same lock."""
        key = str(self.top)
        if key in _HELD:
            yield
            return
        fd = os.open(self.top, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for attempt in range(10):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                        raise
                    if attempt == 9:  # held for a second: an update, not the daemon's look (``busy``)
                        raise Refused(Reason.BUSY, f"another update of {self.top} is running") from None
                    time.sleep(0.1)
            _HELD.add(key)
            try:
                yield
            finally:
                _HELD.discard(key)
        finally:
            os.close(fd)

    def busy(self) -> bool:
        """Whether an update holds the lock now (any user may ask: the daemon, before it takes another)."""
        try:
            fd = os.open(self.top, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)
        return False


_HELD: set[str] = set()  # the tops whose lock this process holds


def version_in(slot: Path) -> str | None:
    """The version of edge-recorder installed in a slot, from its metadata (without running it)."""
    for site in sorted(slot.glob("lib/python3*/site-packages")):
        for dist in importlib.metadata.distributions(path=[str(site)]):
            if dist.metadata["Name"] == DISTRIBUTION:
                return dist.version
    return None
