"""A release server for the tests: HTTPS on loopback with a CA of the test's own.

``ReleaseServer`` serves files over TLS with a certificate ``make_certificates`` makes (its own CA,
what the box is given as ``ca_file``), answers ``Range`` and ``If-Range`` as a web server does, and
misbehaves on request: it cuts the connection after so many bytes, stalls, ignores ranges or
If-Range, redirects, sends chunked bodies slowly or claims a huge Content-Length. What it saw and
sent is in ``requests``. Used by tests/test_download.py and tests/test_update_mqtt.py.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import ipaddress
import re
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from firmware.update.download import CHUNK


@dataclass(frozen=True)
class Certificates:
    ca: Path  # what the box is given as ca_file
    chain: Path
    key: Path


def make_certificates(folder: Path) -> Certificates:
    """A CA and a server certificate for 127.0.0.1 signed by it (what trustme makes, by hand), in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge-recorder test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )  # digital_signature, key_cert_sign, crl_sign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "server.pem").write_bytes(server.public_bytes(pem) + ca.public_bytes(pem))
    (folder / "server.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return Certificates(folder / "ca.pem", folder / "server.pem", folder / "server.key")


@dataclass
class Served:
    """One request as the server saw it, and what it answered."""

    path: str
    headers: dict[str, str]  # names in lowercase
    status: int = 0
    sent: int = 0  # body bytes written


@dataclass
class Published:
    path: Path
    etag: str

    @property
    def size(self) -> int:
        return self.path.stat().st_size


@dataclass
class ReleaseServer:
    """A release server on ``https://127.0.0.1:PORT``; each field below changes how it answers."""

    certificates: Certificates
    folder: Path
    files: dict[str, Published] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)  # path -> Location (302)
    claims: dict[str, int] = field(default_factory=dict)  # path -> a Content-Length it lies about
    statuses: deque[int] = field(default_factory=deque)  # the next requests get these statuses, no body
    drops: deque[int] = field(default_factory=deque)  # the next bodies are cut after so many bytes
    stalls: deque[int] = field(default_factory=deque)  # ... or stall after so many, until stopped
    on_drop: Callable[[], None] | None = None
    ignore_range: bool = False  # a server without range support: 200 and the whole file
    honour_if_range: bool = True
    misplace: int = 0  # a 206 that starts this many bytes before what was asked (a broken cache)
    chunked: bool = False  # no Content-Length: a chunked body
    pause: float = 0.0  # seconds between pieces of a body
    piece: int = CHUNK
    requests: list[Served] = field(default_factory=list)
    stalling: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def start(self) -> ReleaseServer:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certificates.chain, self.certificates.key)
        self._httpd = _TlsServer(("127.0.0.1", 0), _Handler, context, self)
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.released.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self._httpd.server_address[1]}"

    def publish(self, name: str, data: bytes | Path, etag: str = '"v1"') -> str:
        """Serve ``data`` (or the file) at ``/name``; return its URL."""
        if isinstance(data, bytes):
            path = self.folder / f"{len(self.files)}-{name.replace('/', '_')}"
            path.write_bytes(data)
            data = path
        self.files["/" + name] = Published(data, etag)
        return f"{self.base}/{name}"

    def statuses_sent(self) -> list[int]:
        return [r.status for r in self.requests]

    def answer(self, handler: _Handler) -> None:
        served = Served(handler.path, {k.lower(): v for k, v in handler.headers.items()})
        self.requests.append(served)
        path = urlsplit(handler.path).path
        if self.statuses:
            return self._head(handler, served, self.statuses.popleft(), {"Content-Length": "0"})
        if path in self.redirects:
            return self._head(handler, served, 302, {"Location": self.redirects[path], "Content-Length": "0"})
        if path in self.claims:
            self._head(handler, served, 200, {"Content-Length": str(self.claims[path])})
            return self._body(handler, served, io.BytesIO(bytes(min(self.claims[path], CHUNK))))
        published = self.files.get(path)
        if published is None:
            return self._head(handler, served, 404, {"Content-Length": "0"})
        size, start, status = published.size, 0, 200
        headers = {"ETag": published.etag, "Accept-Ranges": "bytes"}
        asked = served.headers.get("range")
        if_range = served.headers.get("if-range")
        if asked and not self.ignore_range and (if_range in (None, published.etag) or not self.honour_if_range):
            start = max(int(re.fullmatch(r"bytes=(\d+)-", asked)[1]) - self.misplace, 0)
            if start >= size:
                return self._head(
                    handler, served, 416, {"Content-Range": f"bytes */{size}", "Content-Length": "0", **headers}
                )
            status = 206
            headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
        if self.chunked:
            headers["Transfer-Encoding"] = "chunked"
        else:
            headers["Content-Length"] = str(size - start)
        self._head(handler, served, status, headers)
        with published.path.open("rb") as f:
            f.seek(start)
            self._body(handler, served, f)

    def _head(self, handler: _Handler, served: Served, status: int, headers: dict[str, str]) -> None:
        served.status = status
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()

    def _body(self, handler: _Handler, served: Served, source: BinaryIO) -> None:
        cut = self.drops.popleft() if self.drops else None
        stall = self.stalls.popleft() if self.stalls else None
        limit = min(x for x in (cut, stall, 1 << 62) if x is not None)
        while served.sent < limit:
            data = source.read(min(self.piece, limit - served.sent))
            if not data:
                break
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if self.chunked else data)
            served.sent += len(data)
            if self.pause:
                time.sleep(self.pause)
        if served.sent >= limit:
            if stall is not None and stall == limit:
                self.stalling.set()
                self.released.wait(10)
            elif self.on_drop is not None:
                self.on_drop()
            with contextlib.suppress(OSError):  # cut: no TLS close_notify, no chunked end
                socket.socket.shutdown(handler.connection, socket.SHUT_RDWR)
            handler.close_connection = True
        elif self.chunked:
            handler.wfile.write(b"0\r\n\r\n")


class _TlsServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address, handler, context: ssl.SSLContext, release: ReleaseServer) -> None:
        super().__init__(address, handler)
        self.context = context
        self.release = release

    def finish_request(self, request, client_address) -> None:
        # The TLS handshake in the request's own thread: a client that fails it holds up no other.
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        with tls:
            self.RequestHandlerClass(tls, client_address, self)

    def handle_error(self, request, client_address) -> None:
        pass  # a client that hangs up on a body it refused


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _TlsServer

    def log_message(self, format, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.server.release.answer(self)
