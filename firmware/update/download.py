"""A release bundle and its signature, downloaded over HTTPS: resumable, bounded, checked.

Theory of operation
-------------------
An ``update`` command names a bundle by its HTTPS URL and sha256; ``parse_request`` checks those
fields and says what is wrong in words the central server's developer can act on.
``download_release`` fetches the signature first (small: a missing one fails at once), then the
bundle, each into ``NAME.part`` beside where it goes. Only a bundle whose sha256 matches is
renamed, after an fsync, to its final name, so a file under that name is always whole. Then
``apply.update`` takes it as any bundle: the sha256 proves the download, the signature who made it.

The rules, in the order a download meets them:

- HTTPS only, after a redirect too (at most ``MAX_REDIRECTS``), checked against the system's CAs
  or ``ca_file``; no user or password in a URL. A message shows a URL without its query
  (``shown_url``): a presigned URL's token is there.
- Resuming: a ``.part`` already there is continued with ``Range: bytes=N-``. ``NAME.part.json``
  keeps the sha256 the .part is for and the validator of the answer it began with (a strong ETag,
  else Last-Modified), sent as ``If-Range`` so that a file changed on the server comes whole (200)
  instead of being spliced onto the old one. Only a 206 whose Content-Range starts at N, with the
  same total and validator, is appended; a 200 starts over with its first byte; a 416 whose total
  is N says the .part is complete and only its hash is left to check. A .part kept for another
  sha256 is thrown away.
- A dropped connection, a timeout, a 5xx, 408 or 429 is tried again after each of the ``retries``
  waits, resuming each time. A 4xx, a failed TLS check and the refusals below are final.
- Bounded: never more than ``max_bytes`` (a Content-Length or Content-Range total above it is
  refused before the body is read, a body growing past it as soon as it does), and never more
  than ``room()`` says may still be written: the recordings' spool shares the card and comes
  first. Both refusals delete the .part, giving the space back.
- Memory stays flat: the body goes to disk ``CHUNK`` bytes at a time and is hashed on the way (a
  resumed .part is hashed first, from the card).
- ``stop`` (a ``threading.Event``) ends a download within a chunk, and at once while a read waits
  on a silent server (a watcher shuts the connection); the .part stays for the next try. While
  connecting and waiting for an answer's headers, only the timeouts bound the wait.
- ``progress(received, total)`` is told when an answer starts, then at most every
  ``PROGRESS_INTERVAL`` seconds and every ``PROGRESS_STEP`` of the total, and once at the end:
  material for a handful of MQTT events, not a flood.

Every failure is a ``Refused`` whose ``Reason`` is the event's word and whose text is one line.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import ipaddress
import json
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
import urllib3

from .. import __version__
from ..findings import printable
from . import Reason, Refused, signing

#: What is read from the network and written to the card at a time: all the memory a download holds.
CHUNK = 64 * 1024
#: Longer than any presigned URL (S3's with a session token run to about 2000 characters).
MAX_URL = 4096
MAX_REDIRECTS = 5
#: A server that does not answer the connection within this long is not coming; ``timeout`` bounds each read.
CONNECT_TIMEOUT = 10.0
#: The waits before each try after the first, in seconds; their number is the number of retries.
RETRIES = (1.0, 2.0, 4.0, 8.0)
PROGRESS_INTERVAL = 0.25  # seconds
PROGRESS_STEP = 0.05  # of the total
USER_AGENT = f"edge-recorder/{__version__}"

#: ``progress(received, total)``: bytes in the file so far (a resumed part included) and the whole, if known.
Progress = Callable[[int, int | None], None]
#: ``room()``: how many bytes may still be written where the file goes (free space less what must stay free).
Room = Callable[[], int]


def room_on(folder: Path, keep_free: int) -> Room:
    """A ``room``: the free space of ``folder``'s file system less the ``keep_free`` bytes the recordings keep.

    >>> room_on(Path("."), 0)() > 0
    True
    """
    return lambda: shutil.disk_usage(folder).free - keep_free


# -- the command's fields ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DownloadRequest:
    """A bundle to download as an ``update`` command names it; ``parse_request`` makes one."""

    url: str
    sha256: str  # lowercase hex
    signature_url: str


def parse_request(fields: Mapping[str, Any]) -> DownloadRequest:
    """The bundle a command's ``url``, ``sha256`` and optional ``signature_url`` name.

    The other fields are the command's own and are left alone. Without ``signature_url`` the
    signature is the bundle's URL with ``.minisig`` added to its path (the query stays the query).
    Anything unusable raises ``ValueError`` naming the field and what to send instead.

    >>> r = parse_request({"url": "https://dl.example.com/r/b.tar?token=x", "sha256": "AB" * 32})
    >>> r.signature_url, r.sha256 == "ab" * 32
    ('https://dl.example.com/r/b.tar.minisig?token=x', True)
    >>> parse_request({"url": "http://dl.example.com/r/b.tar", "sha256": "ab" * 32})
    Traceback (most recent call last):
    ...
    ValueError: url must be an https:// URL, not http://: the box downloads updates over HTTPS only
    """
    if not isinstance(fields, Mapping):
        raise ValueError(f"the command must be a JSON object with url and sha256, not {_kind(fields)}")
    url = check_url(fields.get("url"), "url")
    sha256 = check_sha256(fields.get("sha256"))
    signature = fields.get("signature_url")
    if signature is None or (isinstance(signature, str) and not signature):
        signature_url = check_url(signature_beside(url), "signature_url")
    else:
        signature_url = check_url(signature, "signature_url")
    return DownloadRequest(url, sha256, signature_url)


def check_url(value: object, field: str = "url") -> str:
    """``value`` if it is an HTTPS URL the box downloads from (without a ``#fragment``), else ``ValueError``.

    >>> check_url("https://dl.example.com:8443/r/b.tar#notes")
    'https://dl.example.com:8443/r/b.tar'
    >>> check_url("https://me:pw@dl.example.com/b.tar")
    Traceback (most recent call last):
    ...
    ValueError: url must not hold a user name or password (user@host): they would show in logs; put a token in the query instead
    """
    if value is None:
        raise ValueError(f"{field} is missing: give the file's https:// URL")
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a string, not {_kind(value)}")
    if not value:
        raise ValueError(f"{field} is empty: give the file's https:// URL")
    if len(value) > MAX_URL:
        raise ValueError(f"{field} is {len(value)} characters long, at most {MAX_URL} are taken")
    for at, char in enumerate(value):
        if not char.isascii():
            raise ValueError(f"{field} holds a character that is not ASCII at position {at}: percent-encode it")
        if char.isspace() or not char.isprintable():
            raise ValueError(f"{field} holds a space or a control character at position {at}: percent-encode it")
    url = value.partition("#")[0]  # never sent: it means something to a browser only
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{field} is not a URL ({exc})") from None
    if parts.scheme.lower() != "https":
        got = f"{parts.scheme[:20]}://" if parts.scheme else "a URL without a scheme"
        raise ValueError(f"{field} must be an https:// URL, not {got}: the box downloads updates over HTTPS only")
    netloc = parts.netloc
    if "@" in netloc:
        raise ValueError(
            f"{field} must not hold a user name or password (user@host): they would show in logs; "
            "put a token in the query instead"
        )
    host = parts.hostname
    if not host:
        raise ValueError(f"{field} has no host: https://HOST/path")
    if not (_is_ipv6(host) if netloc.startswith("[") else _HOST_NAME.fullmatch(host) and len(host) <= 253):
        raise ValueError(f"{field} has a host that is no host name: {host[:80]!r}")
    if port == 0:
        raise ValueError(f"{field} has port 0")
    return url


def check_sha256(value: object) -> str:
    """``value`` as lowercase hex if it is a SHA-256 (64 hex digits, either case), else ``ValueError``.

    >>> check_sha256("E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855")[:8]
    'e3b0c442'
    """
    wanted = "give the bundle's SHA-256 as 64 hexadecimal digits, as sha256sum prints it"
    if value is None:
        raise ValueError(f"sha256 is missing: {wanted}")
    if not isinstance(value, str):
        raise ValueError(f"sha256 must be a string: {wanted} (not {_kind(value)})")
    if not _SHA256.fullmatch(value):
        got = f"{len(value)} characters" if len(value) != 64 else "a character that is not a hex digit"
        raise ValueError(f"sha256 is not a SHA-256 ({got}): {wanted}")
    return value.lower()


def signature_beside(url: str) -> str:
    """Where a bundle's signature is when the command names none: ``.minisig`` added to the path.

    >>> signature_beside("https://dl.example.com/r/b.tar?X-Amz-Signature=abc")
    'https://dl.example.com/r/b.tar.minisig?X-Amz-Signature=abc'
    """
    parts = urlsplit(url)
    if not parts.path.rpartition("/")[2]:
        raise ValueError(
            "url names no file (its path is empty or ends in /), so the signature is not beside it: give signature_url"
        )
    return urlunsplit(parts._replace(path=parts.path + ".minisig", fragment=""))


def shown_url(url: str) -> str:
    """``url`` as a message shows it: no user, password, query or fragment (a presigned URL's token is there).

    >>> shown_url("https://me:pw@dl.example.com/r/b.tar?X-Amz-Signature=abc")
    'https://dl.example.com/r/b.tar'
    """
    try:
        parts = urlsplit(url)
        text = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
    except ValueError:  # not a URL: keep what stands before any query, and no user
        text = re.sub(r"//[^/]*@", "//", re.split(r"[?#]", url, maxsplit=1)[0])
    return printable(text)


# -- downloading ----------------------------------------------------------------------------------------


def download_release(
    request: DownloadRequest,
    to: Path,
    *,
    max_bytes: int,
    ca_file: Path | str | None = None,
    room: Room | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    timeout: float = 30.0,
    retries: Sequence[float] = RETRIES,
) -> Path:
    """Download the bundle to ``to`` and its signature beside it (``signing.signature_path``); return ``to``.

    The signature comes first, whole each time (it is at most ``signing.MAX_SIGNATURE_BYTES``, and
    its check is ``apply.update``'s); then the bundle as ``download`` takes it. Raises ``Refused``.
    """
    common = {"ca_file": ca_file, "room": room, "stop": stop, "timeout": timeout, "retries": retries}
    _Download(
        request.signature_url,
        signing.signature_path(Path(to)),
        None,
        signing.MAX_SIGNATURE_BYTES,
        progress=None,
        **common,
    ).run()
    return download(request.url, to, sha256=request.sha256, max_bytes=max_bytes, progress=progress, **common)


def download(
    url: str,
    to: Path,
    *,
    sha256: str,
    max_bytes: int,
    ca_file: Path | str | None = None,
    room: Room | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    timeout: float = 30.0,
    retries: Sequence[float] = RETRIES,
) -> Path:
    """Download ``url`` to ``to`` by way of ``to.part`` (resumed when there); return ``to`` once its sha256 holds.

    ``ca_file`` replaces the system's CAs; ``timeout`` bounds each read (connecting: at most
    ``CONNECT_TIMEOUT``). Raises ``Refused``: ``DOWNLOAD`` (unusable URL, unreachable server, an
    answer that is not the file), ``MISSING`` (404, 410), ``TRUNCATED`` (the body kept breaking
    off), ``TOO_LARGE``, ``NO_SPACE``, ``TAMPERED`` (another sha256: the .part is deleted),
    ``CANCELLED`` (``stop``: the .part is kept), ``PERMISSION``.
    """
    try:
        sha256 = check_sha256(sha256)
    except ValueError as exc:
        raise Refused(Reason.DOWNLOAD, f"cannot download {shown_url(url)}: {exc}") from None
    return _Download(
        url,
        Path(to),
        sha256,
        max_bytes,
        ca_file=ca_file,
        room=room,
        progress=progress,
        stop=stop,
        timeout=timeout,
        retries=retries,
    ).run()


class _Retry(Exception):
    """A try that failed in a way another try may not: the connection, a timeout, a 5xx."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _Restart(Exception):
    """The .part cannot be continued (it was emptied): ask again for the whole file, at once."""


class _Download:
    """One file's download: the tries, each answer's status, the body into the .part."""

    def __init__(
        self,
        url: str,
        to: Path,
        sha256: str | None,
        max_bytes: int,
        *,
        ca_file: Path | str | None,
        room: Room | None,
        progress: Progress | None,
        stop: threading.Event | None,
        timeout: float,
        retries: Sequence[float],
    ) -> None:
        self.url = url
        self.shown = shown_url(url)
        self.to = to
        self.sha256 = sha256  # None: the signature, checked by minisign instead, and fetched whole
        self.max_bytes = max_bytes
        self.verify: str | bool = str(ca_file) if ca_file else True
        self.room = room
        self.progress = _Progress(progress)
        self.stop = stop
        self.timeouts = (min(timeout, CONNECT_TIMEOUT), timeout)
        self.retries = tuple(retries)
        self.part = _Part(to, sha256, self.shown)

    def run(self) -> Path:
        try:
            self.url = check_url(self.url)
        except ValueError as exc:
            raise Refused(Reason.DOWNLOAD, f"cannot download {self.shown}: {exc}") from None
        if isinstance(self.verify, str) and not Path(self.verify).is_file():
            raise Refused(Reason.DOWNLOAD, f"cannot download {self.shown}: no CA certificate file {self.verify}")
        try:
            self.part.open(self._check_stop)
            if self.part.size > self.max_bytes:
                self.part.empty()
            with requests.Session() as http, _Hangup(self.stop) as hangup:
                http.headers.update({"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
                self._tries(http, hangup)
            self.part.finish(self.to)
        finally:
            self.part.close()
        self.progress.done(self.part.size)
        return self.to

    def _tries(self, http: requests.Session, hangup: _Hangup) -> None:
        waits = iter(self.retries)
        tries = 1
        while True:
            self._check_stop()
            try:
                self._try(http, hangup)
                return
            except _Restart:
                continue  # the .part is empty now: the next request has no Range, so this cannot go round
            except _Retry as exc:
                self._check_stop()  # a read ended by the watcher looks like a dropped connection
                wait = next(waits, None)
                if wait is None:
                    kept = f"; {_mb(self.part.size)} kept in {self.part.path.name} to resume" if self.part.size else ""
                    raise Refused(
                        exc.reason, f"{exc} (gave up after {tries} {'try' if tries == 1 else 'tries'}){kept}"
                    ) from None
                if self.stop is not None:
                    self.stop.wait(wait)
                else:
                    time.sleep(wait)
                tries += 1

    def _try(self, http: requests.Session, hangup: _Hangup) -> None:
        part = self.part
        headers = {}
        if part.size:
            headers["Range"] = f"bytes={part.size}-"
            if part.validator is not None:
                headers["If-Range"] = part.validator[1]
        response = self._get(http, headers)
        with response:
            hangup.reading(response)
            self._check_stop()
            encoding = response.headers.get("Content-Encoding", "").strip().lower()
            if encoding not in ("", "identity") and response.ok:
                raise Refused(
                    Reason.DOWNLOAD,
                    f"{self.shown} came compressed ({printable(encoding[:40])}) although the box asked for it as is",
                )
            status = response.status_code
            if status == 206 and part.size:
                self._check_resumes(response)
            elif status == 416 and part.size:
                self._check_complete(response)
                return
            elif status == 200:
                total = _content_length(response.headers.get("Content-Length"))
                self._check_room(total)
                part.restart(_validator(response.headers), total)
            else:
                self._refuse_status(response)
            self.progress(part.size, part.total, now=True)
            self._receive(response)

    def _get(self, http: requests.Session, headers: dict[str, str]) -> requests.Response:
        """The answer to a GET of the URL, through at most ``MAX_REDIRECTS`` redirects, each to HTTPS."""
        url = self.url
        for _ in range(MAX_REDIRECTS + 1):
            try:
                response = http.get(
                    url,
                    headers=headers,
                    stream=True,
                    allow_redirects=False,
                    timeout=self.timeouts,
                    verify=self.verify,
                )
            except requests.exceptions.SSLError as exc:
                raise Refused(
                    Reason.DOWNLOAD,
                    f"cannot download {shown_url(url)}: TLS failed ({_why(exc)}); "
                    "check the server's certificate and the box's clock",
                ) from None
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise _Retry(Reason.DOWNLOAD, f"cannot download {shown_url(url)}: {_why(exc)}") from None
            except (requests.RequestException, ValueError) as exc:  # a URL or header requests cannot send
                raise Refused(Reason.DOWNLOAD, f"cannot download {shown_url(url)}: {_why(exc)}") from None
            if not response.is_redirect:
                return response
            location = response.headers.get("Location", "")
            response.close()
            try:
                url = check_url(urljoin(url, location), "the redirect")
            except ValueError as exc:
                raise Refused(
                    Reason.DOWNLOAD, f"{shown_url(url)} redirected to {shown_url(location)}, which is refused: {exc}"
                ) from None
        raise Refused(Reason.DOWNLOAD, f"{self.shown} redirected more than {MAX_REDIRECTS} times")

    def _check_resumes(self, response: requests.Response) -> None:
        """A 206 continues the .part only if it starts where the .part ends, of the same file."""
        part = self.part
        try:
            got = parse_content_range(response.headers.get("Content-Range", ""))
        except ValueError:
            got = None
        validator = _validator(response.headers)
        if (
            got is None
            or got.first != part.size
            or (got.total is not None and got.last != got.total - 1)
            or (part.total is not None and got.total != part.total)
            or (part.validator is not None and validator is not None and validator != part.validator)
        ):
            part.empty()
            raise _Restart
        if part.total is None and got.total is not None:
            self._check_room(got.total)
            part.total = got.total
        elif part.total is not None:
            self._check_room(part.total)

    def _check_complete(self, response: requests.Response) -> None:
        """A 416 to ``bytes=N-`` with the total N: the .part holds the whole file (its hash decides)."""
        try:
            total = parse_content_range(response.headers.get("Content-Range", "")).total
        except ValueError:
            total = None
        if total != self.part.size:
            self.part.empty()
            raise _Restart

    def _refuse_status(self, response: requests.Response) -> None:
        status = response.status_code
        said = f"{self.shown} answered {status} {printable(str(response.reason or ''))[:80]}".rstrip()
        if status in (404, 410):
            raise Refused(Reason.MISSING, f"{said}: the server has no such file")
        if status in (408, 429) or status >= 500:
            raise _Retry(Reason.DOWNLOAD, said)
        if status == 206:
            raise Refused(Reason.DOWNLOAD, f"{said} to a request for the whole file")
        raise Refused(Reason.DOWNLOAD, said)

    def _check_room(self, total: int | None) -> None:
        if total is None:
            return
        if total > self.max_bytes:
            self.part.discard()
            raise Refused(
                Reason.TOO_LARGE,
                f"{self.shown} is {_mb(total)}, more than the {_mb(self.max_bytes)} the box takes: not downloaded",
            )
        rest = total - self.part.size  # a 200 empties the .part first: what it holds is freed either way
        if self.room is not None and (room := self.room()) < rest:
            self.part.discard()
            raise Refused(
                Reason.NO_SPACE,
                f"no room for {self.shown}: {_mb(rest)} to download, {_mb(max(room, 0))} may be used "
                "beside the recordings",
            )

    def _receive(self, response: requests.Response) -> None:
        part = self.part
        raw = response.raw
        while True:
            try:
                data = raw.read(CHUNK, decode_content=False)
            except _NETWORK_ERRORS as exc:
                self._check_stop()
                raise _Retry(
                    Reason.TRUNCATED, f"the download of {self.shown} broke off at {_mb(part.size)}: {_why(exc)}"
                ) from None
            self._check_stop()
            if not data:
                break
            if part.size + len(data) > self.max_bytes:
                part.discard()
                raise Refused(
                    Reason.TOO_LARGE,
                    f"{self.shown} is larger than the {_mb(self.max_bytes)} the box takes: stopped reading it",
                )
            if part.total is not None and part.size + len(data) > part.total:
                part.discard()
                raise Refused(Reason.DOWNLOAD, f"{self.shown} sent more than the {part.total} bytes it announced")
            if self.room is not None and self.room() < len(data):
                part.discard()
                raise Refused(
                    Reason.NO_SPACE,
                    f"no room left for {self.shown} beside the recordings: stopped at {_mb(part.size)}",
                )
            part.append(data)
            self.progress(part.size, part.total)
        if part.total is not None and part.size < part.total:
            raise _Retry(
                Reason.TRUNCATED,
                f"the download of {self.shown} ended early, at {part.size} of {part.total} bytes",
            )

    def _check_stop(self) -> None:
        if self.stop is not None and self.stop.is_set():
            total = f" of {_mb(self.part.total)}" if self.part.total is not None else ""
            kept = f": {self.part.path.name} is kept to resume" if self.part.size else ""
            raise Refused(
                Reason.CANCELLED, f"the download of {self.shown} was stopped at {_mb(self.part.size)}{total}{kept}"
            )


# -- the .part -------------------------------------------------------------------------------------------


class _Part:
    """``NAME.part``, its sha256 so far, and ``NAME.part.json``: the sha256 it is for and the validator it began with."""

    def __init__(self, to: Path, sha256: str | None, shown: str) -> None:
        self.path = to.with_name(to.name + ".part")
        self.record = to.with_name(to.name + ".part.json")
        self.sha256 = sha256
        self.shown = shown
        self.hash = hashlib.sha256()
        self.size = 0
        self.total: int | None = None
        self.validator: tuple[str, str] | None = None
        self.file: BinaryIO | None = None

    def open(self, check_stop: Callable[[], None]) -> None:
        """Open the .part to append to: the one kept for this sha256, hashed so far; else a new one."""
        with _local(self.path):
            kept = self._read_record() if self.sha256 is not None and self.path.is_file() else None
            if kept is None:
                self.record.unlink(missing_ok=True)
                self.file = self.path.open("wb")
                return
            self.total, self.validator = kept
            self.file = self.path.open("ab")
            with self.path.open("rb") as f:
                while data := f.read(CHUNK):
                    check_stop()  # a long .part on a slow card takes a while
                    self.hash.update(data)
                    self.size += len(data)
            if self.total is not None and self.size > self.total:
                self.empty()

    def _read_record(self) -> tuple[int | None, tuple[str, str] | None] | None:
        """What the record says of the .part when it is this sha256's; None: the .part is another's or not ours."""
        try:
            record = json.loads(self.record.read_text(encoding="utf-8"))
            if record["sha256"] != self.sha256:
                return None
            total = record["total"]
            validator = record["validator"]
            if total is not None and not (isinstance(total, int) and total >= 0):
                return None
            if validator is not None:
                name, value = validator
                validator = (name, value) if name in ("ETag", "Last-Modified") and _VALIDATOR.fullmatch(value) else None
            return total, validator
        except FileNotFoundError:
            # A .part without a record (made before its first answer was seen, or by hand): continued
            # without If-Range; the sha256 over the whole file still decides.
            return None, None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def restart(self, validator: tuple[str, str] | None, total: int | None) -> None:
        """Start the .part over, for an answer with this validator and total."""
        self.empty()
        self.validator, self.total = validator, total
        if self.sha256 is not None:
            with _local(self.record):
                self.record.write_text(
                    json.dumps({"sha256": self.sha256, "total": total, "validator": validator}), encoding="utf-8"
                )

    def empty(self) -> None:
        assert self.file is not None
        with _local(self.path):
            self.file.seek(0)
            self.file.truncate()
        self.record.unlink(missing_ok=True)
        self.hash = hashlib.sha256()
        self.size = 0
        self.total = self.validator = None

    def append(self, data: bytes) -> None:
        assert self.file is not None
        try:
            with _local(self.path):
                self.file.write(data)
        except Refused as exc:
            if exc.reason is Reason.NO_SPACE:
                self.discard()
            raise
        self.hash.update(data)
        self.size += len(data)

    def finish(self, to: Path) -> None:
        """The .part under its final name, synced, if its sha256 is the one asked for; else it is deleted."""
        assert self.file is not None
        with _local(self.path):
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
        if self.sha256 is not None and (got := self.hash.hexdigest()) != self.sha256:
            self.discard()
            raise Refused(
                Reason.TAMPERED,
                f"{self.shown} is not the file the command names: its sha256 is {got}, "
                f"the command says {self.sha256}; the download was deleted",
            )
        with _local(to):
            os.replace(self.path, to)
            self.record.unlink(missing_ok=True)
            folder = os.open(to.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
        self.record.unlink(missing_ok=True)
        self.size = 0

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


@contextlib.contextmanager
def _local(path: Path) -> Iterator[None]:
    """An error of the card as a ``Refused``: full is NO_SPACE, not allowed is PERMISSION."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise Refused(Reason.NO_SPACE, f"the card is full: cannot write {path}") from None
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise Refused(Reason.PERMISSION, f"cannot write {path}: {exc.strerror}") from None
        raise


# -- watching: stop and progress ----------------------------------------------------------------------


class _Hangup:
    """Shuts the connection being read once ``stop`` is set, so a read waiting on a silent server ends at once."""

    def __init__(self, stop: threading.Event | None) -> None:
        self._stop = stop
        self._done = threading.Event()
        self._response: requests.Response | None = None

    def __enter__(self) -> _Hangup:
        if self._stop is not None:
            threading.Thread(target=self._watch, name="download-stop", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()

    def reading(self, response: requests.Response) -> None:
        self._response = response  # the caller checks stop right after, for a stop set before this

    def _watch(self) -> None:
        assert self._stop is not None
        while not self._done.is_set():
            if self._stop.wait(0.1):
                connection = getattr(self._response.raw, "connection", None) if self._response else None
                sock = getattr(connection, "sock", None)
                if sock is not None:
                    # The plain socket's shutdown: the TLS layer's would also drop its state under the reader.
                    with contextlib.suppress(OSError):  # closed already
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)
                return


class _Progress:
    """Tells ``progress`` at most every ``PROGRESS_INTERVAL`` seconds and ``PROGRESS_STEP`` of the total."""

    def __init__(self, tell: Progress | None) -> None:
        self._tell = tell
        self._at = float("-inf")
        self._told = 0

    def __call__(self, received: int, total: int | None, *, now: bool = False) -> None:
        if self._tell is None:
            return
        at = time.monotonic()
        if not now and (
            at - self._at < PROGRESS_INTERVAL or (total and abs(received - self._told) < total * PROGRESS_STEP)
        ):
            return
        self._at, self._told = at, received
        self._tell(received, total)

    def done(self, size: int) -> None:
        if self._told != size or self._at == float("-inf"):
            self(size, size, now=True)


# -- headers -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContentRange:
    """A ``Content-Range`` of bytes: ``first``-``last`` of ``total`` (None: not known, or not given in a 416)."""

    first: int | None
    last: int | None
    total: int | None


def parse_content_range(value: str) -> ContentRange:
    """``bytes FIRST-LAST/TOTAL``, ``bytes FIRST-LAST/*`` or (a 416's) ``bytes */TOTAL``; else ``ValueError``.

    >>> parse_content_range("bytes 100-199/200")
    ContentRange(first=100, last=199, total=200)
    >>> parse_content_range("bytes */200")
    ContentRange(first=None, last=None, total=200)
    >>> parse_content_range("bytes 100-99/200")
    Traceback (most recent call last):
    ...
    ValueError: not a byte range: 'bytes 100-99/200'
    """
    if not isinstance(value, str):
        raise ValueError(f"not a byte range: {_kind(value)}")
    match = _CONTENT_RANGE.fullmatch(value.strip(" \t"))
    if match is None:
        raise ValueError(f"not a byte range: {printable(value[:60])!r}")
    first, last, total, unsatisfied = match.groups()
    if unsatisfied is not None:
        return ContentRange(None, None, int(unsatisfied))
    span = ContentRange(int(first), int(last), None if total == "*" else int(total))
    if span.first > span.last or (span.total is not None and span.last >= span.total):
        raise ValueError(f"not a byte range: {match.group()!r}")
    return span


def _content_length(value: str | None) -> int | None:
    if value is None:
        return None
    if not _DIGITS.fullmatch(value.strip()):
        raise Refused(Reason.DOWNLOAD, f"the server sent an unusable Content-Length: {printable(value[:40])!r}")
    return int(value)


def _validator(headers: Mapping[str, str]) -> tuple[str, str] | None:
    """What tells this version of the file from another: a strong ETag, else Last-Modified (RFC 9110, If-Range)."""
    etag = headers.get("ETag", "")
    if etag and not etag.startswith("W/") and _VALIDATOR.fullmatch(etag):
        return ("ETag", etag)
    modified = headers.get("Last-Modified", "")
    if modified and _VALIDATOR.fullmatch(modified):
        return ("Last-Modified", modified)
    return None


def _why(exc: BaseException) -> str:
    """The innermost cause of a network error, without the URL (its query may hold a token) that requests repeats."""
    while (inner := exc.__cause__ or exc.__context__) is not None and str(inner):
        exc = inner
    if isinstance(exc, (http.client.IncompleteRead, urllib3.exceptions.IncompleteRead)):
        return "the server closed the connection before the end"
    text = _URL_IN_TEXT.sub("<url>", str(exc)) or type(exc).__name__
    return printable(" ".join(text.split()))[:200]


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


def _mb(size: int) -> str:
    return f"{size / (1 << 20):.1f} MB" if size >= 1 << 20 else f"{size} bytes"


#: What a read from the network raises: urllib3's errors (a reset, a timeout, a body cut short),
#: http.client's and the socket's.
_NETWORK_ERRORS = (urllib3.exceptions.HTTPError, requests.RequestException, http.client.HTTPException, OSError)
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_DIGITS = re.compile(r"[0-9]{1,18}")
_HOST_NAME = re.compile(r"(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.?")
_CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,18})-([0-9]{1,18})/([0-9]{1,18}|\*)|bytes \*/([0-9]{1,18})", re.IGNORECASE)
#: An ETag or date as it may go back in If-Range: printable ASCII, one line, not absurdly long.
_VALIDATOR = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,199}")
_URL_IN_TEXT = re.compile(r"url: \S+|\S+://\S+|/\S*\?\S+")
