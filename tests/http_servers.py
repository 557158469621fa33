"""A real HTTP server on loopback that receives uploads and misbehaves on request.

``FlakyHttpServer`` runs ``http.server.ThreadingHTTPServer`` in a thread on a
free port. It stores PUT bodies and multipart POST forms, checks the
``Authorization`` it was told to expect, and answers according to ``mode``:

- ``"ok"``: 201 with a ``Location`` (unless ``send_location=False``);
- an int (``500``, ``415``, ``429``...): that status, after reading the body;
- a (status, headers) pair, such as ``(503, {"Retry-After": "2"})``: that status with those headers;
- ``"stall"``: reads the body, then never answers (until ``stop()``);
- ``"drop"``: reads 64 KiB of the body, then resets the connection.

``script(500, 500, "ok")`` queues modes for the next requests (one each), for
retry tests; after the script ``mode`` applies again. Bodies are hashed as they
arrive and kept only up to ``keep_bodies_up_to`` bytes, so a 200 MB upload does
not cost the test process 200 MB. A claimed ``X-Content-SHA256`` that does not
match the received file is refused with 400, like a careful receiver would
(``verify_sha256=False`` for a receiver that takes anything).

    with FlakyHttpServer(bearer_token="t0k") as server:
        upload(path, server.url + "/in/", ...)
        assert server.received[-1].body == path.read_bytes()
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHUNK = 1 << 20


@dataclass(frozen=True)
class FormPart:
    """One part of a multipart/form-data body."""

    name: str
    filename: str | None
    content_type: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class Received:
    """A request as the server saw it (``body`` is None when it was too big to keep)."""

    method: str
    path: str
    headers: dict[str, str]
    length: int = 0
    sha256: str = ""
    body: bytes | None = None
    form: dict[str, FormPart] = field(default_factory=dict)
    status: int | None = None  # what the server answered; None for stall/drop
    at: float = field(default_factory=time.monotonic)  # when it arrived

    def header(self, name: str) -> str | None:
        """A request header, by case-insensitive name."""
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None

    @property
    def file(self) -> FormPart | bytes | None:
        """What was uploaded: the ``file`` form part of a POST, the body of a PUT."""
        return self.form.get("file") if self.form else self.body


class FlakyHttpServer:
    """An upload receiver on ``127.0.0.1`` whose behaviour a test sets per request."""

    def __init__(
        self,
        *,
        mode: Any = "ok",
        bearer_token: str | None = None,
        basic: tuple[str, str] | None = None,
        send_location: bool = True,
        verify_sha256: bool = True,
        keep_bodies_up_to: int = 64 << 20,
    ) -> None:
        self.mode = mode
        self.bearer_token = bearer_token
        self.basic = basic
        self.send_location = send_location
        self.verify_sha256 = verify_sha256
        self.keep_bodies_up_to = keep_bodies_up_to
        self.received: list[Received] = []
        self.stored: dict[str, bytes] = {}
        self._script: deque[Any] = deque()
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (no trailing slash)."""
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FlakyHttpServer:
        self._release.clear()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        # A short poll interval: shutdown() waits for it, once per test.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="flaky-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()  # let stalled handlers go
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FlakyHttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- behaviour -----------------------------------------------------------

    def script(self, *modes: Any) -> None:
        """Answer the next requests with these modes, one each, then go back to ``mode``."""
        with self._lock:
            self._script.extend(modes)

    def _next_mode(self) -> Any:
        with self._lock:
            return self._script.popleft() if self._script else self.mode

    def _authorised(self, header: str | None) -> bool:
        if self.bearer_token is not None:
            return header == f"Bearer {self.bearer_token}"
        if self.basic is not None:
            expected = base64.b64encode(f"{self.basic[0]}:{self.basic[1]}".encode()).decode()
            return header == f"Basic {expected}"
        return True


def _handler(server: FlakyHttpServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

        def do_GET(self) -> None:
            data = server.stored.get(self.path.removeprefix("/stored"))  # what Location points at
            self._answer(200 if data is not None else 404, data or b"")

        def do_PUT(self) -> None:
            self._receive()

        def do_POST(self) -> None:
            self._receive()

        def _receive(self) -> None:
            mode = server._next_mode()
            record = Received(self.command, self.path, dict(self.headers.items()))
            server.received.append(record)
            length = int(self.headers.get("Content-Length") or 0)
            if mode == "drop":
                record.length = len(self.rfile.read(min(length, 64 << 10)))
                # RST rather than FIN: the client sees a reset mid-body.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True
                return
            self._read_body(record, length)
            if mode == "stall":
                server._release.wait(120)
                self.close_connection = True
                return
            if not server._authorised(self.headers.get("Authorization")):
                return self._answer(401, b"unauthorised\n", record, {"WWW-Authenticate": 'Bearer realm="uploads"'})
            if isinstance(mode, tuple):
                return self._answer(mode[0], f"scripted failure {mode[0]}\n".encode(), record, mode[1])
            if mode != "ok":
                return self._answer(int(mode), f"scripted failure {mode}\n".encode(), record)
            claimed = self.headers.get("X-Content-SHA256")
            file = record.file
            got = file.sha256 if isinstance(file, FormPart) else record.sha256
            if server.verify_sha256 and claimed and claimed != got:
                return self._answer(400, f"sha256 mismatch: got {got}\n".encode(), record)
            if record.body is not None:
                server.stored[self.path] = file.data if isinstance(file, FormPart) else record.body
            extra = {"Location": f"/stored{self.path}"} if server.send_location else {}
            self._answer(201, b"", record, extra)

        def _read_body(self, record: Received, length: int) -> None:
            digest = hashlib.sha256()
            kept: list[bytes] | None = [] if length <= server.keep_bodies_up_to else None
            remaining = length
            while remaining:
                chunk = self.rfile.read(min(CHUNK, remaining))
                if not chunk:
                    break
                digest.update(chunk)
                remaining -= len(chunk)
                if kept is not None:
                    kept.append(chunk)
            record.length = length - remaining
            record.sha256 = digest.hexdigest()
            if kept is not None:
                record.body = b"".join(kept)
                content_type = self.headers.get("Content-Type", "")
                if content_type.startswith("multipart/form-data"):
                    record.form = _parse_form(content_type, record.body)

        def _answer(
            self, status: int, body: bytes, record: Received | None = None, headers: dict[str, str] | None = None
        ) -> None:
            if record is not None:
                record.status = status
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def _parse_form(content_type: str, body: bytes) -> dict[str, FormPart]:
    """multipart/form-data through the stdlib's MIME parser (no ``cgi``)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    parts: dict[str, FormPart] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        parts[name] = FormPart(
            name=name,
            filename=part.get_filename(),
            content_type=part.get_content_type(),
            data=part.get_payload(decode=True) or b"",
        )
    return parts
