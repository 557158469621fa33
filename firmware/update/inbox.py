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
copied into root's own folder, ``/opt/edge-recorder/incoming`` (``admit``), and the request and
its files leave the inbox; then ``apply.update`` checks the copy as any bundle, the signature
against the box's own key. The outcome is in the box's update history (``history.py``), under the
request's id; while ``incoming`` is there, the daemon takes no other update.

A bundle dropped on the boot partition takes another way in, at boot (``card.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from . import signing
from .history import ID

INBOX = Path("/var/lib/edge-recorder/updates")
SUFFIX = ".request"
INCOMING = "incoming"  # root's copy of a bundle being installed, in /opt/edge-recorder
MAX_REQUEST = 4096
#: Larger than any bundle: a release with every wheel for one machine is a few tens of MB.
MAX_BUNDLE = 1 << 30
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
        if not isinstance(rid, str) or not ID.fullmatch(rid):
            raise ValueError("id: not an update id (32 hex digits)")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError("name: not a bundle's file name (NAME.tar)")
        flags = {k: value.get(k, False) for k in ("force", "wait_for_idle")}
        for key, flag in flags.items():
            if not isinstance(flag, bool):
                raise ValueError(f"{key}: not true or false")
        request_id = value.get("request_id", "")
        if not isinstance(request_id, str) or len(request_id) > 128 or not _printable(request_id):
            raise ValueError("request_id: not a string of at most 128 printable characters")
        return cls(rid, name, request_id=request_id, **flags)


def bundle_name(url_path: str) -> str:
    """The name a bundle is shown by: the last part of its URL's path, when it is a plain ``NAME.tar``.

    >>> bundle_name("/releases/edge-recorder-0.2.0-aarch64.tar")
    'edge-recorder-0.2.0-aarch64.tar'
    >>> bundle_name("/download?id=7")
    'bundle.tar'
    """
    name = url_path.rstrip("/").rpartition("/")[2]
    return name if _NAME.fullmatch(name) else "bundle.tar"


def _printable(text: str) -> bool:
    """No control characters, no line or paragraph separators, nothing that is not UTF-8 (a lone surrogate)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return text.isprintable()


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


class Inadmissible(Exception):
    """A request that cannot be taken: what is wrong, in one line; ``request`` when it could be read."""

    def __init__(self, message: str, request: Request | None = None) -> None:
        super().__init__(message)
        self.request = request


class Inbox:
    """The daemon's inbox as root reads it: the folder opened once, without following a link to it, and every
    name in it opened, copied and removed relative to that (``dir_fd``), never through a path the daemon's
    user could bend while root walks it.

    ``Inbox.open`` returns None when there is no inbox (nothing was ever handed over).
    """

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path

    @classmethod
    def open(cls, path: Path) -> Inbox | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:  # ENOTDIR or ELOOP: a link, or a file, where the inbox should be
            raise Inadmissible(f"{path} is not a folder ({exc.strerror or exc}): a link is never followed") from None
        return cls(fd, path)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Inbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pending(self) -> list[str]:
        """The names of the requests waiting, oldest first."""
        found = []
        for name in os.listdir(self.fd):
            if name.endswith(SUFFIX) and not name.startswith("."):
                try:
                    found.append((os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_mtime, name))
                except OSError:
                    continue
        return [name for _, name in sorted(found)]

    def admit(self, name: str, into: Path) -> tuple[Request, Path]:
        """Read the request ``name`` and copy its bundle and signature into ``into`` (root's folder) as ``NAME``
        and ``NAME.minisig``: each opened without following links, as a plain file that takes the room it says.
        """
        data = self._read(name, MAX_REQUEST)
        try:
            request = Request.parse(data)
        except ValueError as exc:
            raise Inadmissible(f"{name}: not an update request: {exc}") from None
        if name != f"{request.id}{SUFFIX}":
            raise Inadmissible(f"{name}: the request names another update ({request.id})", request)
        into.mkdir(mode=0o700, exist_ok=True)
        bundle = into / request.name
        try:
            self._copy(request.bundle, bundle, MAX_BUNDLE)
            self._copy(f"{request.bundle}.minisig", into / f"{request.name}.minisig", signing.MAX_SIGNATURE_BYTES)
        except Inadmissible as exc:
            raise Inadmissible(str(exc), request) from None
        return request, bundle

    def size_of(self, name: str) -> int:
        """The size of the bundle a request ``name`` hands over (0 when it is not there)."""
        stem = name.removesuffix(SUFFIX)
        try:
            return os.stat(f"{stem}.tar", dir_fd=self.fd, follow_symlinks=False).st_size
        except OSError:
            return 0

    def discard(self, name: str) -> None:
        """Remove a request and what it names (names only: a link is removed, never followed; a folder the
        daemon's user put there is removed too, or the path unit would start the updater forever)."""
        names = [name]
        stem = name.removesuffix(SUFFIX)
        if ID.fullmatch(stem):
            names += [f"{stem}.tar", f"{stem}.tar.minisig"]
        for each in names:
            try:
                os.unlink(each, dir_fd=self.fd)
            except FileNotFoundError:
                pass
            except IsADirectoryError:
                shutil.rmtree(each, dir_fd=self.fd, ignore_errors=True)
            except OSError:
                pass

    def _open(self, name: str) -> int:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=self.fd)
        except FileNotFoundError:
            raise Inadmissible(f"{name} is not in the inbox") from None
        except OSError as exc:
            raise Inadmissible(f"{name} cannot be opened ({exc.strerror or exc}): a link is never followed") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise Inadmissible(f"{name} is not a regular file")
        if st.st_blocks * 512 + (1 << 20) < st.st_size:
            os.close(fd)
            raise Inadmissible(f"{name} is sparse: not a file that was downloaded")
        return fd

    def _read(self, name: str, limit: int) -> bytes:
        fd = self._open(name)
        try:
            data = os.read(fd, limit + 1)
        finally:
            os.close(fd)
        if len(data) > limit:
            raise Inadmissible(f"{name}: over {limit} bytes")
        return data

    def _copy(self, name: str, to: Path, limit: int) -> None:
        fd = self._open(name)
        try:
            if os.fstat(fd).st_size > limit:
                raise Inadmissible(f"{name}: over {limit >> 20} MB, larger than any bundle")
            with os.fdopen(os.dup(fd), "rb") as src, to.open("wb") as out:
                copied = 0
                while chunk := src.read(1 << 20):
                    copied += len(chunk)
                    if copied > limit:
                        raise Inadmissible(f"{name}: grew past {limit >> 20} MB while it was copied")
                    out.write(chunk)
        finally:
            os.close(fd)


def pending(inbox: Path) -> list[Path]:
    """The requests waiting in ``inbox``, oldest first, as the daemon sees its own folder."""
    try:
        with Inbox.open(inbox) or contextlib.nullcontext() as opened:
            return [inbox / name for name in opened.pending()] if opened is not None else []
    except Inadmissible:
        return []


def discard(path: Path) -> None:
    """Remove a request and what it names, as the daemon removes them from its own folder."""
    with contextlib.suppress(Inadmissible), Inbox.open(path.parent) or contextlib.nullcontext() as opened:
        if opened is not None:
            opened.discard(path.name)


def clear(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
