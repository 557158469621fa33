"""Who may use the box's files: the daemon's user, and the one line for a file this user may not use.

The daemon runs as ``edge-recorder`` (the unit's ``User=``) and its files are that user's and its group's
only, so a command run as another user (an installer's login, ``pi``) meets PermissionError on the catalog,
the spool or the config. ``main`` turns any PermissionError into one line naming the file and the user to run
the command as (``permission_denied``); doctor's hints name the same user (``daemon_user``, ``may``). SQLite
and libsndfile say only "unable to open", so a command asks first which file on the way is in the way
(``require``).
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import shlex
import stat
import sys
from pathlib import Path

from .. import config as cfg

#: The user the daemon runs as: the unit's User= (systemd/edge-recorder.service), the owner of its state directory.
DAEMON_USER = "edge-recorder"


def state_directory(config: cfg.Config | None = None) -> Path:
    """Where the daemon keeps its state: the spool's folder (/var/lib/edge-recorder by default)."""
    return Path((config or cfg.defaults()).spool["directory"]).parent


def daemon_user(directory: Path | None = None) -> pwd.struct_passwd | None:
    """The user the daemon runs as: the owner of its state ``directory`` (the default one if None) unless
    that is root, else the user named ``DAEMON_USER``; None when there is neither (not a box)."""
    with contextlib.suppress(OSError, KeyError):
        uid = (directory or state_directory()).stat().st_uid
        if uid != 0:
            return pwd.getpwuid(uid)
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(DAEMON_USER)
    return None


def owner(path: Path | str) -> pwd.struct_passwd | None:
    """The owner of ``path``, or of the nearest folder above it this process can look at."""
    for place in (Path(os.path.abspath(path)), *Path(os.path.abspath(path)).parents):
        with contextlib.suppress(OSError, KeyError):
            return pwd.getpwuid(place.stat().st_uid)
    return None


def may(user: pwd.struct_passwd, path: Path | str, access: int) -> bool:
    """Whether ``user`` may ``access`` (``os.R_OK``, ``os.W_OK``, or both) ``path``, by the mode of it and of the
    folders above it, as the kernel decides for that user. A path that does not exist yet: whether the user may
    create it. What this process cannot look at (below a folder it may not enter) counts as allowed: the verdict
    is about the part it can see."""
    if user.pw_uid == 0:
        return True
    groups = {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem}

    def allows(st: os.stat_result, bits: int) -> bool:
        if st.st_uid == user.pw_uid:
            mode = st.st_mode >> 6
        elif st.st_gid in groups:
            mode = st.st_mode >> 3
        else:
            mode = st.st_mode
        return mode & bits == bits

    path = Path(os.path.abspath(path))
    chain = [*reversed(path.parents), path]
    above: os.stat_result | None = None
    for place in chain:
        try:
            st = place.stat()
        except FileNotFoundError:  # to be created in the folder above
            return above is not None and allows(above, os.W_OK | os.X_OK)
        except OSError:  # this process cannot see it
            return True
        if place != path and not (stat.S_ISDIR(st.st_mode) and allows(st, os.X_OK)):
            return False
        above = st
    assert above is not None
    return allows(above, access)


def run_as(path: Path | str, access: int, directory: Path | None = None) -> pwd.struct_passwd | None:
    """The user to run a command as that this user may not ``access`` ``path`` with: the daemon's user if it
    may (see ``daemon_user``; ``directory`` its state directory), else the owner of the path if it may; None
    when neither is another user who may."""
    me = os.geteuid()
    for user in (daemon_user(directory), owner(path)):
        if user is not None and user.pw_uid != me and may(user, path, access):
            return user
    return None


def permission_denied(exc: PermissionError, argv: list[str]) -> str:
    """The one line for a file this user may not use: the user to run the command as, and how."""
    path = exc.filename
    if path is None:
        return f"{exc.strerror or exc}: run it as the user the box runs as ({DAEMON_USER}), or as root"
    access = os.W_OK if os.access(path, os.R_OK) else os.R_OK
    user = run_as(path, access) or owner(path)
    me = os.geteuid()
    try:
        name = pwd.getpwuid(me).pw_name
    except KeyError:
        name = f"uid {me}"
    if user is None or user.pw_uid == me:
        return f"{path}: permission denied for {name} (ls -ld it and the folders above it)"
    again = shlex.join(["sudo", "-u", user.pw_name, program(), *argv])
    return f"{path}: permission denied for {name}; run it as {user.pw_name} ({again})"


def os_error(exc: OSError) -> str:
    """An OSError in one line: the path (both, for a rename) and what the system said."""
    paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    return f"{paths}: {exc.strerror}" if paths and exc.strerror else str(exc)


def program() -> str:
    """This command as a user types it again: its full path when it runs as the installed ``edge-recorder``
    (sudo may not look where it is installed), else just the name."""
    if Path(sys.argv[0]).name == "edge-recorder":
        return os.path.abspath(sys.argv[0])
    return "edge-recorder"


def require(path: Path | str, *, write: bool = False) -> None:
    """Raise PermissionError naming what this user may not use on the way to ``path`` (``write``: nor write, as
    SQLite does to a catalog and the journal beside it), so ``main`` names that file and the user who may."""
    blocked = blocked_on_the_way(Path(path), write=write)
    if blocked is not None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(blocked))


def blocked_on_the_way(path: Path, *, write: bool) -> Path | None:
    """The folder or file on the way to ``path`` that this user may not go through or read (``write``: nor
    write), or None; a missing one is not a permission matter."""
    path = Path(os.path.abspath(path))
    for folder in reversed(path.parents):
        if not os.access(folder, os.X_OK):
            return folder if os.path.lexists(folder) else None
    mode = os.R_OK | (os.W_OK if write else 0)
    if os.path.lexists(path) and not os.access(path, mode):
        return path
    if write and os.path.lexists(path):
        for side in (Path(f"{path}-wal"), Path(f"{path}-shm")):
            if os.path.lexists(side) and not os.access(side, mode):
                return side
        if not Path(f"{path}-wal").exists() and not os.access(path.parent, os.W_OK):  # SQLite makes it there
            return path.parent
    return None
