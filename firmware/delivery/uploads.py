"""Uploads of finished recordings to HTTP(S) servers and S3-compatible stores.

Theory of operation
-------------------
``upload()`` sends one file to one destination and either returns where the
file now lives or raises ``DeliveryError``. It does not retry: the outbox
does, with backoff, so every error here is classified once, at the place that
knows why it happened: *permanent* (a 4xx other than 408/429, a bucket that
does not exist, refused credentials, a bad URL, a local file that is gone) or
*transient* (no network, timeouts, 5xx, 408, 429, throttling).

The destination is chosen by the URL's scheme:

- ``https://host/path/`` -- PUT (the file is the body) or POST (multipart
  form, field ``file``). A URL ending in ``/`` gets the file name appended.
  ``http://`` is accepted for loopback hosts only: elsewhere the bearer token
  or password and the recording would cross the network in clear.
- ``s3://bucket/prefix/`` -- the object ``prefix/<name>``; ``s3://bucket/key``
  without a trailing ``/`` is exactly that key (Sinch's
  ``s3://bucket_name/[[folder]/[file]]``). Any S3-compatible store, through
  minio's pure-Python client.

Memory stays flat whatever the file size (a box records for hours): HTTP
bodies are streamed from disk 16 KiB at a time; S3 holds at most two multipart
parts (``S3_PART_SIZE``) at a time. While the bytes go out they are hashed, so a
file that no longer matches the sha256 the spool recorded (a failing SD card)
is reported rather than silently delivered.

Receivers can verify what they got: HTTP sends ``X-Content-SHA256`` (hex) and,
for PUT, ``Digest: sha-256=`` (RFC 3230) and ``Content-Digest`` (RFC 9530);
S3 stores it as object metadata ``x-amz-meta-sha256``, and the S3 server
itself checks every part (SigV4 payload hash over http, Content-MD5 over
https). An object sent in one PUT (up to ``S3_PART_SIZE``: most recordings)
also carries S3's own ``x-amz-checksum-sha256``, which the server checks
against the whole object and keeps (``HeadObject`` with checksum mode on).
S3 has no whole-object SHA-256 for a multipart upload (only a checksum of the
parts' checksums), so larger objects have the metadata alone.

Remote file names come from ``remote_name()``; the default is Sinch's
``yyyyMMddHHmmss_<device_id>_<call_id>.<format>``.

``probe()`` is ``edge-recorder doctor``'s check of a destination: a small file
uploaded the way recordings go, then deleted again where the server allows. A
destination that is one fixed file (``fixed_target``) is not probed: the probe
would write over it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, urljoin, urlsplit

import certifi
import requests
import requests.auth
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError

from ..destinations import Credentials, is_loopback, redact
from ..findings import printable
from .errors import DeliveryError, is_permanent_http, retry_after

DEFAULT_NAME_TEMPLATE = "{yyyyMMddHHmmss}_{device_id}_{call_id}.{format}"

# minio holds the part being sent while it reads the next one, so an S3 upload
# peaks at two parts (measured: 32 MiB with 16 MiB parts). 8 MiB keeps that at
# 16 MiB on a 512 MB Pi Zero 2 and still makes a 2 GiB WAV only 256 requests.
S3_PART_SIZE = 8 * 1024 * 1024

# A connection that is not up within this long is not coming; the (longer)
# read timeout is the caller's ``timeout``.
CONNECT_TIMEOUT = 10.0

FORM_FIELD = "file"
SCHEMES = ("https", "http (loopback only)", "s3")

_SAFE_VALUE = re.compile(r"[^A-Za-z0-9._-]+")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_VALUE_LIMIT = 64
_NAME_LIMIT = 200
_SHA256 = re.compile(r"[0-9a-f]{64}")
_ERROR_BODY_LIMIT = 300


# ---------------------------------------------------------------------------
# Remote names


def remote_name(template: str, fields: Mapping[str, Any]) -> str:
    """The file name a recording gets at its destination.

    Placeholders are field names (``device_id``, ``call_id``, ``id``, ``name``,
    ``format``, ...) and, from ``start_time`` (RFC 3339, taken in UTC),
    ``yyyyMMddHHmmss``, ``yyyyMMdd``, ``HHmmss``, ``yyyy``, ``MM``, ``dd``,
    ``HH``, ``mm`` and ``ss``. Each substituted value is cut down to
    ``[A-Za-z0-9._-]`` (no ``/``, no ``..``, no leading dot, at most 64
    characters), so whatever a call id holds, the name stays one file inside
    the destination's prefix. The template's own text must use the same
    characters; an unknown placeholder raises ``ValueError`` naming it.

    >>> remote_name(DEFAULT_NAME_TEMPLATE, {"start_time": "2026-03-04T05:06:07Z", "device_id": "box-7",
    ...                                     "call_id": "CA12", "format": "mp3"})
    '20260304050607_box-7_CA12.mp3'
    >>> remote_name("{call_id}.wav", {"call_id": "../../etc/passwd"})
    '_etc_passwd.wav'
    """
    values = dict(fields)
    values.update(_time_fields(fields.get("start_time"), template))
    parts: list[str] = []
    position = 0
    for match in _PLACEHOLDER.finditer(template):
        parts.append(_literal(template[position : match.start()], template))
        key = match.group(1)
        if key in _TIME_FORMATS and key not in values:
            raise ValueError(f"placeholder {{{key}}} in name template {template!r} needs a start_time")
        if key not in values:
            known = ", ".join(sorted(str(k) for k in values))
            raise ValueError(f"unknown placeholder {{{key}}} in name template {template!r}; known: {known}")
        parts.append(_sanitise(values[key]))
        position = match.end()
    parts.append(_literal(template[position:], template))
    return _bounded("".join(parts))


_TIME_FORMATS = {
    "yyyyMMddHHmmss": "%Y%m%d%H%M%S",
    "yyyyMMdd": "%Y%m%d",
    "HHmmss": "%H%M%S",
    "yyyy": "%Y",
    "MM": "%m",
    "dd": "%d",
    "HH": "%H",
    "mm": "%M",
    "ss": "%S",
}


def _time_fields(start_time: Any, template: str) -> dict[str, str]:
    used = any(match.group(1) in _TIME_FORMATS for match in _PLACEHOLDER.finditer(template))
    if not used or start_time is None or start_time == "":
        return {}
    if isinstance(start_time, datetime):
        moment = start_time
    else:
        try:
            # 3.11's fromisoformat reads RFC 3339 including "Z" and fractions.
            moment = datetime.fromisoformat(str(start_time))
        except ValueError:
            raise ValueError(
                f"start_time {start_time!r} is not an RFC 3339 time (name template {template!r})"
            ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # the catalog stores UTC
    moment = moment.astimezone(UTC)
    return {key: moment.strftime(fmt) for key, fmt in _TIME_FORMATS.items()}


def _sanitise(value: Any) -> str:
    text = "" if value is None else str(value)
    text = _SAFE_VALUE.sub("_", text)
    # ".." cannot climb once "/" is gone, but some receivers still reject it.
    text = re.sub(r"\.{2,}", "_", text)
    text = re.sub(r"_{2,}", "_", text)
    # No leading dot (a hidden file), no trailing one (it would double the extension's).
    return text.strip(".")[:_VALUE_LIMIT].rstrip(".")


def _literal(text: str, template: str) -> str:
    bad = _SAFE_VALUE.search(text)
    if bad:
        raise ValueError(
            f"name template {template!r} may only use A-Z a-z 0-9 . _ - outside placeholders, found {bad.group(0)!r}"
        )
    return text


def _bounded(name: str) -> str:
    name = re.sub(r"\.{2,}", "_", name).lstrip(".")
    if len(name) > _NAME_LIMIT:
        stem, dot, suffix = name.rpartition(".")
        if dot and 0 < len(suffix) <= 16:
            name = stem[: _NAME_LIMIT - len(suffix) - 1] + "." + suffix
        else:
            name = name[:_NAME_LIMIT]
    return name or "recording"


# ---------------------------------------------------------------------------
# Upload


def upload(
    path: Path,
    url: str,
    name: str,
    *,
    sha256: str,
    content_type: str,
    credentials: Credentials,
    method: str = "PUT",
    timeout: float = 30.0,
    progress: Callable[[int], None] | None = None,
    labels: Mapping[str, str] | None = None,
) -> str:
    """Send the file at ``path`` to ``url`` and return where it now lives.

    ``labels`` (``recording-id``, ``call-id``, ``device-id``) go with the file where the protocol has a
    place for them: S3 object metadata (``x-amz-meta-recording-id``...), so a store's own tools find a
    recording's object without the catalog.

    ``name`` is the remote file name (see ``remote_name``), used when the URL
    ends in ``/`` (or is a bare ``s3://bucket``). ``sha256`` is the file's hex
    digest as the spool recorded it; it goes along for the receiver to check,
    and the bytes actually sent are checked against it. ``method`` is ``PUT``
    or ``POST`` for HTTP (ignored for S3). ``timeout`` bounds each wait on the
    network (connecting at most ``CONNECT_TIMEOUT``). ``progress`` is called
    with the number of bytes read from the file so far.

    Returns the ``Location`` the server gave (else the URL) for HTTP, and
    ``s3://bucket/key`` for S3. Raises ``DeliveryError``; ``permanent`` says
    whether a retry could help.

    >>> upload(Path("x.wav"), "ftp://host/", "x.wav", sha256="0" * 64, content_type="audio/wav",
    ...        credentials=Credentials())
    Traceback (most recent call last):
    ...
    firmware.delivery.errors.DeliveryError: cannot upload to 'ftp://host/': scheme must be one of https, http (loopback only), s3
    """
    sha256 = (sha256 or "").lower()
    if not _SHA256.fullmatch(sha256):
        raise DeliveryError(f"sha256 must be 64 hex digits, got {sha256!r}", permanent=True)
    scheme = urlsplit(url).scheme.lower()
    if scheme == "s3":
        return _upload_s3(path, url, name, sha256, content_type, credentials, timeout, progress, labels or {})
    if scheme in ("http", "https"):
        return _upload_http(path, url, name, sha256, content_type, credentials, method, timeout, progress)
    raise DeliveryError(
        f"cannot upload to {redact(url)!r}: scheme must be one of {', '.join(SCHEMES)}",
        permanent=True,
    )


def _check_name(name: str, url: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\\" in name or any(ord(c) < 32 or c == "\x7f" for c in name):
        raise DeliveryError(f"bad remote file name {name!r} for {redact(url)!r}", permanent=True)
    return name


def _open(path: Path) -> tuple[BinaryIO, int]:
    try:
        file = open(path, "rb")  # noqa: SIM115 -- closed by the caller's with-block
    except OSError as exc:
        raise DeliveryError(f"cannot read {path}: {exc.strerror or exc}", permanent=True) from exc
    return file, os.fstat(file.fileno()).st_size


class _SendingFile:
    """The file as it goes out: read in the sender's chunks, hashed and counted on the way."""

    def __init__(self, file: BinaryIO, size: int, progress: Callable[[int], None] | None) -> None:
        self._file = file
        self._size = size
        self._progress = progress
        self._hash = hashlib.sha256()
        self.sent = 0

    def __len__(self) -> int:
        return self._size

    def read(self, size: int = -1) -> bytes:
        # Never past the size announced in Content-Length, even if the file grew.
        remaining = self._size - self.sent
        if size is None or size < 0 or size > remaining:
            size = remaining
        data = self._file.read(size) if size else b""
        if data:
            self._hash.update(data)
            self.sent += len(data)
            if self._progress is not None:
                self._progress(self.sent)
        return data

    def check(self, sha256: str, path: Path) -> None:
        """Raise if what was read is not the file the spool recorded."""
        if self.sent == self._size and self._hash.hexdigest() == sha256:
            return
        raise DeliveryError(
            f"{path} no longer matches its sha256 (read {self.sent} of {self._size} bytes, "
            f"sha256 {self._hash.hexdigest()}, expected {sha256}); the local copy is damaged",
            permanent=True,
        )


class _MultipartBody:
    """multipart/form-data read as a stream: the head, the file in chunks, the tail.

    requests would otherwise build the whole form in memory.
    """

    def __init__(self, head: bytes, file: _SendingFile, tail: bytes) -> None:
        self._pieces: list[Any] = [head, file, tail]
        self._length = len(head) + len(file) + len(tail)
        self._offset = 0  # into the current bytes piece

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        size = size if size and size > 0 else 1 << 16
        while self._pieces:
            piece = self._pieces[0]
            if isinstance(piece, bytes):
                chunk = piece[self._offset : self._offset + size]
                self._offset += len(chunk)
            else:
                chunk = piece.read(size)
            if chunk:
                return chunk
            self._pieces.pop(0)
            self._offset = 0
        return b""


def _form(boundary: str, name: str, sha256: str, content_type: str) -> tuple[bytes, bytes]:
    filename = name.replace("\\", "\\\\").replace('"', "%22")
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="sha256"\r\n\r\n'
        f"{sha256}\r\n"
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="{FORM_FIELD}"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    )
    return head.encode(), f"\r\n--{boundary}--\r\n".encode()


def _upload_http(
    path: Path,
    url: str,
    name: str,
    sha256: str,
    content_type: str,
    credentials: Credentials,
    method: str,
    timeout: float,
    progress: Callable[[int], None] | None,
) -> str:
    parts = urlsplit(url)
    if not parts.hostname:
        raise DeliveryError(f"no host in {redact(url)!r}", permanent=True)
    if parts.username is not None or parts.password is not None:
        raise DeliveryError(
            f"refusing {redact(url)!r}: credentials go in the destination's token or username and password, "
            "never in the URL",
            permanent=True,
        )
    if parts.scheme.lower() == "http" and not is_loopback(parts.hostname):
        raise DeliveryError(
            f"refusing plain http to {parts.hostname}: the recording and credentials would cross the network "
            f"in clear; use https:// ({redact(url)!r})",
            permanent=True,
        )
    method = method.upper()
    if method not in ("PUT", "POST"):
        raise DeliveryError(f"HTTP upload method must be PUT or POST, got {method!r}", permanent=True)
    if url.endswith("/"):
        url += quote(_check_name(name, url))

    _, auth = http_auth(credentials, url)
    headers = {"X-Content-SHA256": sha256}

    file, size = _open(path)
    with file:
        sending = _SendingFile(file, size, progress)
        if method == "PUT":
            digest = base64.b64encode(bytes.fromhex(sha256)).decode()
            # Digest and Content-Digest describe the body, which for PUT is the file;
            # a multipart body is not, so POST carries the sha256 as a form field instead.
            headers |= {
                "Content-Type": content_type,
                "Digest": f"sha-256={digest}",
                "Content-Digest": f"sha-256=:{digest}:",
            }
            body: Any = sending
        else:
            boundary = "edge-recorder-" + secrets.token_hex(12)
            head, tail = _form(boundary, name, sha256, content_type)
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
            body = _MultipartBody(head, sending, tail)
        headers["Content-Length"] = str(len(body))
        try:
            # stream=True: an error page is read only as far as the message needs.
            response = requests.request(
                method,
                url,
                data=body,
                headers=headers,
                auth=auth,
                timeout=(min(timeout, CONNECT_TIMEOUT), timeout),
                allow_redirects=False,  # a redirect would need the body again; config should name the final URL
                stream=True,
            )
        except (
            requests.exceptions.InvalidURL,
            requests.exceptions.InvalidSchema,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidHeader,
        ) as exc:
            if isinstance(exc, requests.exceptions.InvalidHeader):  # its text would hold the header: a credential
                raise DeliveryError(
                    f"cannot upload to {redact(url)!r}: a credential holds a character no HTTP header may carry",
                    permanent=True,
                ) from None
            raise DeliveryError(f"cannot upload to {redact(url)!r}: {redact(str(exc))}", permanent=True) from exc
        except requests.exceptions.Timeout as exc:
            raise DeliveryError(f"upload to {redact(url)!r} timed out after {timeout:g} s", permanent=False) from exc
        except requests.exceptions.RequestException as exc:
            # Connection refused or reset, DNS, TLS (a Pi without an RTC can boot
            # with a clock that makes valid certificates look expired): all may pass.
            raise DeliveryError(f"upload to {redact(url)!r} failed: {_reason(exc)}", permanent=False) from exc
        except ValueError:  # http.client's check of a header value; its text holds the value: a credential
            raise DeliveryError(
                f"cannot upload to {redact(url)!r}: a credential holds a character no HTTP header may carry",
                permanent=True,
            ) from None
        with response:
            status = response.status_code
            if not 200 <= status < 300:
                raise DeliveryError(
                    f"{method} {redact(url)} answered {status} {response.reason}: {_error_text(response)}",
                    permanent=is_permanent_http(status) or 300 <= status < 400,
                    status=status,
                    retry_after=retry_after(response.headers),
                )
            location = response.headers.get("Location")
        sending.check(sha256, path)
    # Where the file lives goes into the catalog and the recording.available event: never a password in it.
    return redact(urljoin(url, location) if location else url)


class Authentication(Enum):
    """The credential an HTTP upload sends (``http_auth`` decides); the value says it to people."""

    BEARER = "bearer token"
    BASIC = "HTTP Basic credentials"
    NONE = "no credentials"


def http_auth(credentials: Credentials, url: str) -> tuple[Authentication, requests.auth.AuthBase | None]:
    """Which credential an HTTP upload to ``url`` sends, and the ``requests`` auth that sends it.

    The bearer token if set, else HTTP Basic with ``username`` and ``password``.
    The auth is always given explicitly, so ``requests`` never takes a user
    from the URL (destination URLs cannot hold one: ``firmware.destinations``).

    >>> http_auth(Credentials(bearer_token="t"), "https://example.com/in/")[0].value
    'bearer token'
    >>> http_auth(Credentials(), "https://example.com/in/")[0].value
    'no credentials'
    """
    if credentials.bearer_token:
        return Authentication.BEARER, _Bearer(credentials.bearer_token)
    if credentials.username:
        return Authentication.BASIC, requests.auth.HTTPBasicAuth(credentials.username, credentials.password)
    return Authentication.NONE, None


class _Bearer(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request


def _error_text(response: requests.Response) -> str:
    try:
        raw = response.raw.read(_ERROR_BODY_LIMIT, decode_content=True) or b""
    except Exception:  # the body is only decoration for the message
        return ""
    # One line, and no control character (an escape sequence would reach a terminal through `status`).
    return printable(" ".join(raw.decode("utf-8", "replace").split()))


def _reason(exc: BaseException) -> str:
    # requests nests urllib3's errors; the innermost says what happened.
    while exc.__context__ is not None and str(exc.__context__):
        exc = exc.__context__
    return f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------
# S3

# Codes that say the request can never succeed as configured. Anything else is
# judged by its HTTP status (is_permanent_http), so unknown 5xx stay transient.
_S3_PERMANENT = frozenset(
    {
        "AccessDenied",
        "AccountProblem",
        "AllAccessDisabled",
        "AuthorizationHeaderMalformed",
        "EntityTooLarge",
        "InvalidAccessKeyId",
        "InvalidBucketName",
        "InvalidObjectName",
        "KeyTooLongError",
        "MethodNotAllowed",
        "NoSuchBucket",
        "NotImplemented",
        "SignatureDoesNotMatch",
    }
)
_S3_TRANSIENT = frozenset(
    {
        "InternalError",
        "OperationAborted",
        "RequestTimeout",
        # A Pi has no RTC: until NTP syncs its clock, signatures look skewed.
        "RequestTimeTooSkewed",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ExpiredToken",
    }
)


def _s3_target(url: str, name: str) -> tuple[str, str]:
    parts = urlsplit(url)
    bucket = parts.netloc
    if not bucket or "@" in bucket or parts.query or parts.fragment:
        raise DeliveryError(f"bad S3 URL {redact(url)!r}: expected s3://bucket/prefix/[file]", permanent=True)
    key = parts.path.lstrip("/")
    if not key or key.endswith("/"):
        key += _check_name(name, url)
    if any(segment in ("", ".", "..") for segment in key.split("/")):
        raise DeliveryError(f"bad S3 key {key!r} from {url!r}: empty, '.' or '..' path segment", permanent=True)
    return bucket, key


def _s3_client(credentials: Credentials, timeout: float) -> tuple[Minio, urllib3.PoolManager]:
    endpoint = credentials.s3_endpoint or "https://s3.amazonaws.com"
    if "://" not in endpoint:
        endpoint = "https://" + endpoint
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/"):
        raise DeliveryError(f"bad S3 endpoint {endpoint!r}: expected http(s)://host[:port]", permanent=True)
    access_key = credentials.s3_access_key or os.environ.get("AWS_ACCESS_KEY_ID", "")
    secret_key = credentials.s3_secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    region = credentials.s3_region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=min(timeout, CONNECT_TIMEOUT), read=timeout),
        retries=False,  # the outbox retries, with backoff that survives a restart
        maxsize=2,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
    )
    try:
        client = Minio(
            parts.netloc,
            access_key=access_key or None,
            secret_key=secret_key or None,
            secure=parts.scheme == "https",
            region=region,
            http_client=http,
        )
    except ValueError as exc:
        raise DeliveryError(f"bad S3 settings for {endpoint!r}: {exc}", permanent=True) from exc
    return client, http


def _upload_s3(
    path: Path,
    url: str,
    name: str,
    sha256: str,
    content_type: str,
    credentials: Credentials,
    timeout: float,
    progress: Callable[[int], None] | None,
    labels: Mapping[str, str],
) -> str:
    bucket, key = _s3_target(url, name)
    metadata = {f"x-amz-meta-{k}": _sanitise(v) for k, v in labels.items() if re.fullmatch(r"[a-z-]{1,32}", k)}
    location = f"s3://{bucket}/{key}"
    client, http = _s3_client(credentials, timeout)
    file, size = _open(path)
    try:
        with file:
            sending = _SendingFile(file, size, progress)
            headers = {**metadata, "x-amz-meta-sha256": sha256}
            if size <= S3_PART_SIZE:  # one PUT: S3's own checksum of the whole object, checked by the server
                headers["x-amz-checksum-sha256"] = base64.b64encode(bytes.fromhex(sha256)).decode()
            # put_object rather than fput_object so the bytes pass through our hash;
            # no parallel parts, or each one in flight would add a part of memory.
            try:
                client.put_object(
                    bucket,
                    key,
                    sending,  # type: ignore[arg-type]
                    size,
                    content_type=content_type,
                    metadata=headers,
                    part_size=S3_PART_SIZE,
                    num_parallel_uploads=1,
                )
            except S3Error as exc:
                if exc.code == "BadDigest":  # the server refused the bytes: say whether ours are damaged
                    sending.check(sha256, path)
                raise
            sending.check(sha256, path)
        _verify_s3(client, bucket, key, size, sha256, location)
    except DeliveryError:
        raise
    except Exception as exc:
        error = _s3_error(exc, location)
        if error is None:
            raise  # a bug here, not a delivery problem: let it show
        raise error from exc
    finally:
        http.clear()  # close pooled sockets now, not at garbage collection
    return location


def _verify_s3(client: Minio, bucket: str, key: str, size: int, sha256: str, location: str) -> None:
    try:
        stat = client.stat_object(bucket, key)
    except S3Error as exc:
        if exc.code == "AccessDenied":
            # Write-only credentials (what Sinch recommends) cannot read back; the
            # server already checked every part's hash while accepting it.
            return
        raise
    stored = (stat.metadata or {}).get("x-amz-meta-sha256")
    if stat.size != size or (stored is not None and stored != sha256):
        raise DeliveryError(
            f"{location} holds {stat.size} bytes (sha256 {stored}) after uploading {size} bytes (sha256 {sha256})",
            permanent=False,
        )


def _s3_error(exc: Exception, location: str) -> DeliveryError | None:
    """The DeliveryError for what minio or the network raised; None if it is neither's."""
    if isinstance(exc, S3Error):
        status = exc.response.status if exc.response is not None else None
        if exc.code in _S3_PERMANENT:
            permanent = True
        elif exc.code in _S3_TRANSIENT:
            permanent = False
        else:
            permanent = status is not None and is_permanent_http(status)
        return DeliveryError(
            f"upload to {location} failed: {exc.code}: {exc.message}", permanent=permanent, status=status
        )
    if isinstance(exc, ServerError):
        status = exc.status_code
        return DeliveryError(f"upload to {location} failed: {exc}", permanent=is_permanent_http(status), status=status)
    if isinstance(exc, InvalidResponseError):
        # A proxy's HTML error page rather than S3 XML: judge by the status.
        status = getattr(exc, "_code", 0)  # minio keeps the status only here
        return DeliveryError(
            f"upload to {location} failed: HTTP {status} (not an S3 answer)",
            permanent=is_permanent_http(status),
            status=status,
        )
    if isinstance(exc, ValueError):
        # minio validates names before sending: an invalid bucket or key.
        return DeliveryError(f"cannot upload to {location}: {exc}", permanent=True)
    # NewConnectionError subclasses ConnectTimeoutError (urllib3 keeps it for compatibility): "refused" is not a timeout.
    if isinstance(exc, urllib3.exceptions.TimeoutError) and not isinstance(exc, urllib3.exceptions.NewConnectionError):
        return DeliveryError(f"upload to {location} timed out: {exc}", permanent=False)
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError | MinioException):
        return DeliveryError(f"upload to {location} failed: {type(exc).__name__}: {exc}", permanent=False)
    return None


# ---------------------------------------------------------------------------
# Probe

PROBE_BODY = b"edge-recorder doctor: a probe of this upload destination; safe to delete\n"


@dataclass(frozen=True)
class Probe:
    """What ``probe()`` did: where the probe file went, and why it is still there if it is."""

    location: str
    kept: str = ""  # empty when the probe was deleted again


class WouldOverwrite(ValueError):
    """``probe()`` refused: every upload to the destination goes to one place, so a probe would write over it."""


def probe(url: str, name: str, *, credentials: Credentials, method: str = "PUT", timeout: float = 30.0) -> Probe:
    """Prove that ``url`` takes uploads with ``credentials``: upload a small file as a recording goes, then delete it.

    Only a write proves that a write is authorised (many receivers answer a
    HEAD or OPTIONS without looking at the credentials), so the probe is a real
    upload through ``upload()``, of ``PROBE_BODY`` named ``name``, to the
    destination itself: ``s3://bucket/prefix/``, an HTTP PUT URL ending in
    ``/``, or a POST URL (the form names the file). It raises
    ``DeliveryError`` exactly as a recording's upload would.

    It never writes anywhere a recording would not go, nor over what a
    recording is: a destination that is one fixed place (``fixed_target``)
    raises ``WouldOverwrite`` before anything is sent.

    Deleting it again is best effort: write-only S3 keys and most HTTP
    receivers cannot delete, and a POST receiver gives no URL to delete by.
    Only a 2xx answer to the DELETE counts (many servers answer 404 to a
    method they do not route, with the file still there); it goes to the
    ``Location`` the PUT was answered with when that is on the same server,
    else to the URL the probe was PUT to. ``Probe.kept`` says why the probe
    stayed.
    """
    method = method.upper()
    fixed = fixed_target(url, method)
    if fixed:
        raise WouldOverwrite(f"cannot test without overwriting {redact(url)}: {fixed}")
    sha256 = hashlib.sha256(PROBE_BODY).hexdigest()
    with tempfile.TemporaryDirectory(prefix="edge-recorder-probe-") as directory:
        path = Path(directory) / "probe"
        path.write_bytes(PROBE_BODY)
        location = upload(
            path,
            url,
            name,
            sha256=sha256,
            content_type="text/plain",
            credentials=credentials,
            method=method,
            timeout=timeout,
        )
    if urlsplit(url).scheme.lower() == "s3":
        return Probe(location, _delete_s3(*_s3_target(url, name), credentials, timeout))
    if method == "PUT":
        put = url + quote(name)
        target = location if _origin(location) == _origin(put) else put
        return Probe(location, _delete_http(target, http_auth(credentials, url)[1], timeout))
    return Probe(location, "a POST receiver gives no URL to delete it by")


def fixed_target(url: str, method: str = "PUT") -> str:
    """Why every upload to ``url`` lands in the same one place; "" when each recording gets its own name there.

    >>> fixed_target("https://example.com/in/"), fixed_target("s3://calls/box-7/")
    ('', '')
    >>> fixed_target("https://example.com/in/calls.wav")
    'a PUT URL that does not end in / is the one file every upload is written to'
    """
    parts = urlsplit(url)
    if parts.query:
        return "it has a query string, so every upload goes to exactly that URL"
    scheme = parts.scheme.lower()
    if scheme == "s3":
        key = parts.path.lstrip("/")  # as _s3_target reads it
        return "it names one object, which every upload is written to" if key and not key.endswith("/") else ""
    if scheme in ("http", "https") and method.upper() == "PUT" and not url.endswith("/"):  # as _upload_http reads it
        return "a PUT URL that does not end in / is the one file every upload is written to"
    return ""


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:  # a Location with a bad port is on no server of ours
        return scheme, "", -1
    return scheme, (parts.hostname or ""), port


def _delete_http(url: str, auth: requests.auth.AuthBase | None, timeout: float) -> str:
    try:
        with requests.delete(
            url, auth=auth, timeout=(min(timeout, CONNECT_TIMEOUT), timeout), allow_redirects=False
        ) as response:
            if 200 <= response.status_code < 300:
                return ""
            return f"DELETE answered {response.status_code} {response.reason}"
    except requests.exceptions.RequestException as exc:
        return f"DELETE failed: {_reason(exc)}"


def _delete_s3(bucket: str, key: str, credentials: Credentials, timeout: float) -> str:
    client, http = _s3_client(credentials, timeout)
    try:
        client.remove_object(bucket, key)
    except S3Error as exc:
        return f"DeleteObject: {exc.code}: {exc.message}"
    except (urllib3.exceptions.HTTPError, OSError, MinioException) as exc:
        return f"DeleteObject failed: {type(exc).__name__}: {exc}"
    finally:
        http.clear()
    return ""
