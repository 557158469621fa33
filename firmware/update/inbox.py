"""Update requests the daemon hands to root: how an MQTT ``update`` command reaches ``apply.update``.

Theory of operation
-------------------
The daemon runs as its own user and may not write ``/opt``; root must not trust what that user
writes. So the daemon downloads a bundle and its signature into its inbox,
``/var/lib/edge-recorder/updates`` (``ID.tar``, ``ID.tar.minisig``), and writes the request beside
them last, by a rename: ``ID.request``, a small JSON object (``Request``). systemd watches the folder
(``edge-recorder-update.path``) and starts ``edge-recorder-update.service`` as root, which runs
``edge-recorder update --pending``: each request is read (at most ``MAX_REQUEST`` bytes, strict
JSON), its bundle and signature are opened without following links, as regular files only, and
copied into root's own folder (``admit``); then ``apply.update`` checks them as any bundle, the
signature against the box's own key. The request and its files leave the inbox whatever the
outcome, which is in the box's update history (``history.py``), under the request's id.

The same unit takes a bundle dropped on the boot partition (``card.py``) at boot.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from .history import ID

INBOX = Path("/var/lib/edge-recorder/updates")
SUFFIX = ".request"
MAX_REQUEST = 4096
#: Larger than any bundle: a release with every wheel for one machine is a few tens of MB.
MAX_BUNDLE = 1 << 30
MAX_SIGNATURE = 16 * 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}\.tar$")


@dataclass(frozen=True)
class Request:
    """One update the daemon asks for: its bundle ``ID.tar`` in the inbox, the name it was published under."""

    id: str
    name: str  # the bundle's file name in its URL, for messages
    force: bool = False
    wait_for_idle: bool = False  # the restart waits until no recording is active
    request_id: str = ""  # the MQTT command's request_id, echoed in the events

    @property
    def bundle(self) -> str:
        return f"{self.id}.tar"

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def parse(cls, data: bytes) -> Request:
        """The request in ``data``, or ValueError naming what is wrong.

        >>> Request.parse(b'{"id": "%s", "name": "edge-recorder-0.2.0-aarch64.tar"}' % (b"ab" * 16)).bundle
        'abababababababababababababababab.tar'
        >>> Request.parse(b'{"id": "../x", "name": "a.tar"}')
        Traceback (most recent call last):
        ...
        ValueError: id: not an update id (32 hex digits)
        """
        if len(data) > MAX_REQUEST:
            raise ValueError(f"over {MAX_REQUEST} bytes")
        try:
            value = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"not JSON ({exc})") from None
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        unknown = sorted(set(value) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r}")
        rid, name = value.get("id"), value.get("name")
        if not isinstance(rid, str) or not ID.match(rid):
            raise ValueError("id: not an update id (32 hex digits)")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError("name: not a bundle's file name (NAME.tar)")
        flags = {k: value.get(k, False) for k in ("force", "wait_for_idle")}
        for key, flag in flags.items():
            if not isinstance(flag, bool):
                raise ValueError(f"{key}: not true or false")
        request_id = value.get("request_id", "")
        if not isinstance(request_id, str) or len(request_id) > 128:
            raise ValueError("request_id: not a string of at most 128 characters")
        return cls(rid, name, request_id=request_id, **flags)


def bundle_name(url_path: str) -> str:
    """The name a bundle is shown by: the last part of its URL's path, when it is a plain ``NAME.tar``.

    >>> bundle_name("/releases/edge-recorder-0.2.0-aarch64.tar")
    'edge-recorder-0.2.0-aarch64.tar'
    >>> bundle_name("/download?id=7")
    'bundle.tar'
    """
    name = url_path.rstrip("/").rpartition("/")[2]
    return name if _NAME.match(name) else "bundle.tar"


# -- the daemon's side ----------------------------------------------------------------------------


def put(inbox: Path, request: Request) -> Path:
    """Hand ``request`` over, once its bundle and signature are complete in ``inbox``: the request is written
    to a hidden file, synced, and renamed into place (what systemd's path unit waits for)."""
    path = inbox / f"{request.id}{SUFFIX}"
    partial = inbox / f".{request.id}{SUFFIX}.partial"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o640)
    try:
        os.write(fd, request.to_json())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(partial, path)
    return path


# -- root's side ----------------------------------------------------------------------------------


def pending(inbox: Path) -> list[Path]:
    """The requests waiting in ``inbox``, oldest first."""
    try:
        found = [p for p in inbox.iterdir() if p.name.endswith(SUFFIX) and not p.name.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return []

    def age(path: Path) -> float:
        try:
            return path.lstat().st_mtime
        except OSError:
            return 0.0

    return sorted(found, key=age)


class Inadmissible(Exception):
    """A request that cannot be taken: what is wrong, in one line; ``request`` when it could be read."""

    def __init__(self, message: str, request: Request | None = None) -> None:
        super().__init__(message)
        self.request = request


def admit(path: Path, into: Path) -> tuple[Request, Path]:
    """Read the request at ``path`` and copy its bundle and signature into ``into`` (root's folder) as
    ``NAME`` and ``NAME.minisig``; what it names is opened without following links, as a regular file only.
    """
    data = _read(path, MAX_REQUEST)
    try:
        request = Request.parse(data)
    except ValueError as exc:
        raise Inadmissible(f"{path.name}: not an update request: {exc}") from None
    if path.name != f"{request.id}{SUFFIX}":
        raise Inadmissible(f"{path.name}: the request names another update ({request.id})", request)
    into.mkdir(mode=0o700, exist_ok=True)
    bundle = into / request.name
    try:
        _copy(path.parent / request.bundle, bundle, MAX_BUNDLE)
        _copy(path.parent / f"{request.bundle}.minisig", into / f"{request.name}.minisig", MAX_SIGNATURE)
    except Inadmissible as exc:
        raise Inadmissible(str(exc), request) from None
    return request, bundle


def discard(path: Path) -> None:
    """Remove a request and what it names from the inbox (names only: a link is removed, never followed)."""
    names = [path.name]
    stem = path.name.removesuffix(SUFFIX)
    if ID.match(stem):
        names += [f"{stem}.tar", f"{stem}.tar.minisig"]
    for name in names:
        (path.parent / name).unlink(missing_ok=True)


def wait_until_idle(active: Callable[[], bool], timeout: float, poll: float = 2.0) -> bool:
    """Wait while ``active()`` (recordings are active); True once idle, False when ``timeout`` ran out."""
    end = time.monotonic() + timeout
    while active():
        if time.monotonic() >= end:
            return False
        time.sleep(poll)
    return True


def _open(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise Inadmissible(f"{path.name} is not in the inbox") from None
    except OSError as exc:
        raise Inadmissible(f"{path.name} cannot be opened ({exc.strerror or exc}): a link is never followed") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise Inadmissible(f"{path.name} is not a regular file")
    return fd


def _read(path: Path, limit: int) -> bytes:
    fd = _open(path)
    try:
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise Inadmissible(f"{path.name}: over {limit} bytes")
    return data


def _copy(source: Path, to: Path, limit: int) -> None:
    fd = _open(source)
    try:
        if os.fstat(fd).st_size > limit:
            raise Inadmissible(f"{source.name}: over {limit >> 20} MB, larger than any bundle")
        with os.fdopen(os.dup(fd), "rb") as src, to.open("wb") as out:
            copied = 0
            while chunk := src.read(1 << 20):
                copied += len(chunk)
                if copied > limit:
                    raise Inadmissible(f"{source.name}: grew past {limit >> 20} MB while it was copied")
                out.write(chunk)
    finally:
        os.close(fd)


def clear(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
