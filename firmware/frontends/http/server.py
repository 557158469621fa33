"""The HTTP API (aiohttp), in a thread of its own beside the daemon's loop.

Everything goes through the control API (``firmware.control``), the same as
for the GPIO panel and MQTT commands: the server gets a ``Control`` and its
``[http]`` config, nothing else. Blocking calls run
in aiohttp's executor so the event loop never waits on the box. Errors are
JSON ``{"status": <code>, "code": "<short>", "message": "<what is wrong>"}``.
The routes and their parameters are described in ``openapi.json`` beside this
module, served at ``/v1/openapi.json``.

The box sits on a shared LAN, so every client is assumed hostile until its
token says otherwise, and none may turn the API against the box's owner:

- a client has ``READ_TIMEOUT`` seconds to send a request's line and headers,
  and as long again for its body; one that trickles bytes (slowloris) is cut
  off, and an idle kept-alive connection is closed after as long;
- a media link is signed over its path and its whole query (``auth.LinkSigner``),
  so it cannot be bent to other media or other parameters;
- input never reaches a 5xx: a body is refused before the control API sees it
  when it is not plain JSON (nested deeper than ``MAX_DEPTH``, a lone surrogate
  escape, ``NaN``, an integer too long for any option), each query parameter
  is checked, and a malformed request is logged as one line, never as a
  traceback. A handler that fails all the same answers a JSON 500 that names
  nothing inside the box, and logs the traceback: that is a bug to fix.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import ssl
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ... import __version__
from ...control import Control, ControlError, OptionError, error_fields
from ...core import PauseBehavior, Status
from ...media.convert import EncryptedMedia, NoMedia
from .auth import Auth, Limiter, LinkSigner, parse_tokens

log = logging.getLogger("edge-recorder.api")

OPENAPI = Path(__file__).with_name("openapi.json")
RECORDING_ID = re.compile(r"^RE[0-9a-f]{32}$")
MEDIA_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg"}
PUBLIC = {"/v1/health", "/v1/openapi.json"}
MAX_PAGE = 1000
#: Seconds a client has to send a request's line and headers (counted from connecting, or from the previous
#: answer on a kept-alive connection), and then its body; an idle kept-alive connection is closed after as long.
READ_TIMEOUT = 15.0
#: How deep a request body may nest: a vendor document is a handful of levels, deeper only strains the parser.
MAX_DEPTH = 32
#: Digits an integer in a request body may have: no option needs more, and float() of a longer one overflows.
MAX_INT_DIGITS = 18
ACTOR = web.RequestKey("actor", str)  # who made the request, for the audit log


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def listen_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


class ApiServer:
    """``start()`` serves until ``stop()``; ``media_url(row)`` signs a link to a recording's media.

    ``read_timeout`` (``READ_TIMEOUT`` unless given) bounds how long a client may take to send a request.
    """

    def __init__(self, control: Control, http: dict[str, Any], read_timeout: float | None = None) -> None:
        h = self.http = http
        self.read_timeout = READ_TIMEOUT if read_timeout is None else read_timeout
        self.control = control
        self.host, self.port = listen_address(h["listen"])
        self.auth = Auth(parse_tokens(h["tokens"]), h["username"], h["password"])
        self.limiter = Limiter(h["failed_logins"])
        self.signer = LinkSigner(h["link_secret"].encode() or None, h["media_link_seconds"])
        self.max_body = h["max_body_bytes"]
        self.tls = bool(h["tls_cert"])
        scheme = "https" if self.tls else "http"
        shown = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        self.base_url = h["public_url"].rstrip("/") or f"{scheme}://{shown}:{self.port}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="http-api", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        log.info("HTTP API on %s", self.base_url)

    def stop(self) -> None:
        if self._loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._setup())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.close()

    async def _setup(self) -> None:
        app = web.Application(middlewares=[self._errors, self._authorise], client_max_size=self.max_body)
        app.add_routes(
            [
                web.get("/v1/health", self.health),
                web.get("/v1/openapi.json", self.openapi),
                web.get("/metrics", self.metrics),
                web.get("/v1/recordings", self.list),
                web.post("/v1/recordings", self.create),
                web.get("/v1/recordings/{name}", self.fetch),
                web.post("/v1/recordings/{name}", self.update),
                web.delete("/v1/recordings/{name}", self.delete),
            ]
        )
        context = None
        if self.tls:
            h = self.http
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(h["tls_cert"], h["tls_key"] or None)
        self._runner = web.AppRunner(
            app,
            access_log=None,
            # aiohttp arms this timer when a connection opens and again after each answer, and does not push it
            # back as bytes arrive: a request whose line and headers are not complete by then is cut off, and so
            # is a kept-alive connection with no next request.
            keepalive_timeout=self.read_timeout,
            logger=_ProtocolLog(logging.getLogger("edge-recorder.api.http")),
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, ssl_context=context).start()

    # -- middleware ----------------------------------------------------------------------------
    @web.middleware
    async def _errors(self, request: web.Request, handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return _error(exc.status, exc.code, exc.message, exc.headers)
        except web.HTTPRequestEntityTooLarge:
            return _error(413, "too_large", f"the request body is over the {self.max_body}-byte limit")
        except web.HTTPException as exc:
            if exc.status >= 400:
                reason = {404: "no such resource", 405: f"{request.method} is not allowed on {request.path}"}
                kept = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}  # 405: the methods that are
                return _error(
                    exc.status, exc.reason.lower().replace(" ", "_"), reason.get(exc.status, exc.reason), kept or None
                )
            raise
        except TimeoutError:
            return _error(503, "busy", "the box did not answer within 5 s; try again", {"Retry-After": "1"})
        except ControlError as exc:  # a ValueError too: before the others
            return _error(409, "conflict", str(exc), extra=error_fields(exc))
        except (OptionError, ValueError) as exc:
            return _error(422 if isinstance(exc, OptionError) else 400, "invalid", str(exc))
        except LookupError as exc:
            return _error(404, "not_found", str(exc.args[0]) if exc.args else "not found")
        except Exception:
            log.exception("API %s %s failed", request.method, request.path)
            return _error(500, "internal", "internal error; the box's log has the details")

    @web.middleware
    async def _authorise(self, request: web.Request, handler) -> web.StreamResponse:
        if request.path in PUBLIC:
            return await handler(request)
        if request.method == "GET" and ("signature" in request.query or "expires" in request.query):
            if not self._signed(request):
                raise ApiError(
                    403, "bad_link", "the media link has expired or its signature does not match; ask for a new one"
                )
            request[ACTOR] = "signed-link"
            return await handler(request)
        address = request.remote or "?"
        wait = self.limiter.blocked(address)
        if wait:
            raise ApiError(
                429,
                "too_many_failures",
                f"too many failed logins from {address}; try again in {wait:.0f} s",
                {"Retry-After": str(int(wait) + 1)},
            )
        actor = self.auth.check(request.headers.get("Authorization"))
        if actor is None:
            self.limiter.failed(address)
            await self._run(self.control.audit, "failed_login", address, request.path, None)
            present = "Authorization" in request.headers
            raise ApiError(
                401,
                "unauthorised",
                "the credentials are not valid" if present else "a bearer token (Authorization: Bearer ...) is needed",
                {"WWW-Authenticate": 'Bearer realm="edge-recorder"'},
            )
        request[ACTOR] = actor
        return await handler(request)

    def _signed(self, request: web.Request) -> bool:
        return self.signer.verify("GET", request.path, request.query.items())

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    # -- routes ----------------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        state = self.control.state()
        return web.json_response({"status": "ok", "state": state["state"], "version": __version__})

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=OPENAPI.read_bytes(), content_type="application/json")

    async def metrics(self, request: web.Request) -> web.Response:
        registry = CollectorRegistry()
        registry.register(_Metrics(self.control))
        body = await self._run(generate_latest, registry)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def list(self, request: web.Request) -> web.Response:
        q = request.query
        size = _int(q.get("page_size", q.get("PageSize", "50")), "page_size", 1, MAX_PAGE)
        created = _created_filters(q)
        after = _page_token(q.get("page_token")) if q.get("page_token") else None
        include_deleted = _bool(q.get("include_soft_deleted", "false"), "include_soft_deleted")
        status = q.get("status")
        if status is not None and status not in _STATUSES:
            raise OptionError("status", status, "one of " + ", ".join(_STATUSES))
        call_id = q.get("call_id") or q.get("call_sid")
        rows, position = await self._run(
            lambda: self.control.page(
                status=status, call_id=call_id, include_deleted=include_deleted, created=created, size=size, after=after
            )
        )
        meta: dict[str, Any] = {"page_size": size, "next_page_url": None}
        if position is not None:
            token = base64.urlsafe_b64encode(json.dumps(position).encode()).decode()
            query = {k: v for k, v in q.items() if k != "page_token"} | {"page_token": token}
            meta["next_page_url"] = str(request.url.with_query(query).relative())
        return web.json_response({"recordings": [self.view(r) for r in rows], "meta": meta}, dumps=_dumps)

    async def create(self, request: web.Request) -> web.Response:
        body = await _json_body(request, self.read_timeout)
        action, row, unsupported = await self._run(lambda: self.control.request(body, source="api"))
        status = 201 if action == "start" else 200
        return web.json_response({"recording": self.view(row), "unsupported": unsupported}, status=status, dumps=_dumps)

    async def fetch(self, request: web.Request) -> web.StreamResponse:
        rid, fmt = _name(request.match_info["name"])
        channels = request.query.get("RequestedChannels", request.query.get("requested_channels"))
        wanted = _int(channels, "RequestedChannels", 1, 2) if channels is not None else None
        row = await self._row(rid)
        if row["status"] == Status.DELETED:  # as Twilio: gone, though the list keeps its fields for 40 days
            raise ApiError(
                404, "deleted", f"recording {rid} was deleted; GET /v1/recordings?include_soft_deleted=true lists it"
            )
        if fmt == "json" or fmt is None:
            return web.json_response(self.view(row), dumps=_dumps)
        try:
            path = await self._run(self.control.media, row, fmt, wanted)
        except NoMedia as exc:
            raise ApiError(404, "no_media", str(exc)) from None
        except EncryptedMedia as exc:
            raise ApiError(409, "encrypted", str(exc)) from None
        if request.http_range.start in (None, 0):  # one audit row per download, not per Range request
            await self._run(
                self.control.audit, "download", request.get(ACTOR, "?"), rid, f"{fmt} {wanted or row['channels']}ch"
            )
        response = web.FileResponse(path, headers={"Content-Type": MEDIA_TYPES[fmt]})
        response.headers["Content-Disposition"] = f'inline; filename="{rid}.{fmt}"'
        return response

    async def update(self, request: web.Request) -> web.Response:
        rid, fmt = _name(request.match_info["name"], allow_current=True)
        if fmt is not None:
            raise ApiError(404, "not_found", f"{request.path}: only the recording itself can be updated")
        body = await _json_body(request, self.read_timeout)
        extra = sorted(set(body) - {"status", "Status", "pause_behavior", "PauseBehavior"})
        if extra:
            raise OptionError(extra[0], body[extra[0]], "only status and pause_behavior can be changed")
        for key, allowed in _UPDATE_FIELDS.items():  # every spelling given is checked, also the one not used
            if key in body and (not isinstance(body[key], str) or body[key] not in allowed):
                raise OptionError(key, body[key], _either(allowed))
        status = body.get("status", body.get("Status"))
        behavior = body.get("pause_behavior", body.get("PauseBehavior", "silence"))
        if status == "paused":
            row = await self._run(self.control.pause, rid, behavior)
        elif status == "in-progress":
            row = await self._run(self.control.resume, rid)
        elif status == "stopped":
            row = await self._run(self.control.stop, rid)
        else:
            raise OptionError("status", status, _either(_UPDATE_FIELDS["status"]))
        return web.json_response(self.view(row), dumps=_dumps)

    async def delete(self, request: web.Request) -> web.Response:
        rid, fmt = _name(request.match_info["name"])
        if fmt is not None:
            raise ApiError(404, "not_found", f"{request.path}: delete the recording, not one of its media")
        force = _bool(request.query.get("force", "false"), "force")
        await self._run(lambda: self.control.delete(rid, force=force, actor=request.get(ACTOR, "?")))
        return web.Response(status=204)

    # -- helpers -----------------------------------------------------------------------------------
    async def _row(self, rid: str) -> dict[str, Any]:
        return await self._run(self.control.get, rid)  # LookupError: 404

    def view(self, row: dict[str, Any]) -> dict[str, Any]:
        return self.control.public(row)  # with the signed media link

    def media_url(self, row: dict[str, Any], params: Mapping[str, str] | None = None) -> str | None:
        """A link to the recording's media that works without a token until it expires; ``params`` (such as
        ``{"RequestedChannels": "1"}``) are signed with it, so the link serves exactly that."""
        if not row.get("path") or not row.get("id"):
            return None
        path = f"/v1/recordings/{row['id']}.{row['format']}"
        return f"{self.base_url}{path}?{self.signer.sign('GET', path, params)}"


class _Metrics:
    """The box's figures as Prometheus metrics, read at each scrape."""

    def __init__(self, control: Control) -> None:
        self.control = control

    def collect(self):
        figures = self.control.figures()
        counts = GaugeMetricFamily("edge_recorder_recordings", "Recordings in the catalog by status", labels=["status"])
        for status, count in figures["by_status"].items():
            counts.add_metric([status], count)
        yield counts
        stored = figures["stored_bytes"]
        yield GaugeMetricFamily("edge_recorder_recording_bytes", "Bytes of media kept in the spool", value=stored)
        yield GaugeMetricFamily("edge_recorder_active_recordings", "Recordings in progress", value=figures["active"])
        status = figures["delivery"]
        yield GaugeMetricFamily("edge_recorder_upload_backlog", "Uploads waiting", value=status["upload_backlog"])
        yield GaugeMetricFamily(
            "edge_recorder_outbox_depth", "Deliveries waiting in the outbox", value=status["outbox"]
        )
        yield CounterMetricFamily(
            "edge_recorder_xruns", "Capture overruns filled with silence", value=figures["overruns"]
        )
        yield CounterMetricFamily(
            "edge_recorder_events_dropped", "Events dropped from a full outbox", value=status["events_dropped"]
        )
        state = figures["state"]
        if state["input_level"] is not None:
            yield GaugeMetricFamily(
                "edge_recorder_input_level_dbfs", "Input level over the last 0.1 s", value=state["input_level"]
            )
        if state["free_storage_mb"] is not None:
            yield GaugeMetricFamily(
                "edge_recorder_free_storage_bytes", "Free space in the spool", value=state["free_storage_mb"] * 1e6
            )


class _ProtocolLog(logging.LoggerAdapter):
    """aiohttp's log for a connection. A malformed request (a bad byte in its line or headers, one too long) is
    the client's doing: one line at INFO, not a traceback at ERROR. Anything else is logged as aiohttp says."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            first = (exc_info.message or "").strip().splitlines()
            self.info(f"{msg}: %s %s", *args, exc_info.code, first[0].rstrip(":") if first else "", **kwargs)
        else:
            self.logger.error(msg, *args, exc_info=exc_info, **kwargs)


_STATUSES = tuple(s.value for s in Status)
# What an update may set, by each of its names (Twilio's too).
_UPDATE_FIELDS = {
    "status": ("paused", "in-progress", "stopped"),
    "Status": ("paused", "in-progress", "stopped"),
    "pause_behavior": tuple(b.value for b in PauseBehavior),
    "PauseBehavior": tuple(b.value for b in PauseBehavior),
}


def _either(values: tuple[str, ...]) -> str:
    return ", ".join(values[:-1]) + " or " + values[-1]


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, extra: dict[str, str] | None = None
) -> web.Response:
    body = {"status": status, "code": code, "message": message, **(extra or {})}
    return web.json_response(body, status=status, headers=headers)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


async def _json_body(request: web.Request, timeout: float) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        async with asyncio.timeout(timeout):
            raw = await request.read()
    except TimeoutError:
        raise ApiError(408, "slow_body", f"the request body did not arrive within {timeout:g} s") from None
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw, parse_constant=_no_constant, parse_int=_short_int)
    except RecursionError:
        raise ApiError(400, "too_deep", f"the body is nested more than {MAX_DEPTH} levels deep") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, "not_json", f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "not_an_object", "the body must be a JSON object")
    _plain(body)
    return body


def _no_constant(name: str) -> float:
    raise ApiError(400, "not_json", f"the body is not JSON: {name} is not a JSON number")


def _short_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ApiError(400, "not_json", f"the body holds an integer of {len(text)} digits; at most {MAX_INT_DIGITS}")
    return int(text)


def _plain(body: Any) -> None:
    """Refuse what ``json.loads`` lets through but nothing behind the API should meet: nesting deeper than
    ``MAX_DEPTH`` (recursive code further on would overflow), and text with a lone surrogate (a ``\\ud800``
    escape), which no file, database row or UTF-8 message can hold, so it would fail long after it was taken."""
    stack = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ApiError(400, "too_deep", f"the body is nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            stack.extend((key, depth) for key in value)
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str) and _SURROGATE.search(value):
            shown = repr(value if len(value) <= 40 else value[:37] + "...")
            raise ApiError(400, "not_unicode", f"the body holds text that is not Unicode (a lone surrogate): {shown}")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _name(name: str, allow_current: bool = False) -> tuple[str, str | None]:
    stem, dot, ext = name.partition(".")
    if allow_current and stem == "current" and not dot:
        return stem, None
    if not RECORDING_ID.match(stem):
        raise ApiError(404, "not_found", f"{stem!r} is not a recording id (RE and 32 hex digits)")
    if dot and ext not in ("wav", "mp3", "json"):
        raise ApiError(404, "not_found", f"no media type .{ext}; the recording is served as .wav, .mp3 or .json")
    return stem, (ext or None)


def _int(text: str | None, name: str, low: int, high: int) -> int:
    digits = (text or "").strip()
    # isascii: "²" is a digit to isdigit() but not to int(); the length keeps int() within its digit limit
    if not (digits.isascii() and digits.isdigit()) or len(digits) > len(str(high)) or not low <= int(digits) <= high:
        raise OptionError(name, text, f"a whole number from {low} to {high}")
    return int(digits)


def _bool(text: str, name: str) -> bool:
    """A boolean query parameter as OpenAPI writes one, true or false (in any case: Python's requests sends True)."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise OptionError(name, text, "true or false")


_OPS = ("<=", ">=", "<", ">")


def _created_filters(query) -> list[tuple[str, str]]:
    """``date_created`` filters: ``date_created=2026-11-21`` (that day), ``date_created=<=2026-11-21`` and the
    other operators in the value, and Twilio's ``DateCreated<=D`` / ``DateCreated>=D`` (which arrive as the
    keys ``DateCreated<`` and ``DateCreated>``). A date is a whole day in UTC; a time is exact."""
    out: list[tuple[str, str]] = []
    for key, value in query.items():
        base = key.rstrip("<>")
        if base not in ("date_created", "DateCreated"):
            continue
        if key.endswith("<"):
            op, text = "<=", value
        elif key.endswith(">"):
            op, text = ">=", value
        else:
            op = next((o for o in _OPS if value.startswith(o)), "=")
            text = value[len(op) :] if op != "=" else value
        out += _bounds(op, text)
    return out


def _bounds(op: str, text: str) -> list[tuple[str, str]]:
    try:
        if len(text) == 10:
            day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
            start, end = _iso(day), _iso(day + timedelta(days=1))
            return {
                "=": [(">=", start), ("<", end)],
                "<": [("<", start)],
                "<=": [("<", end)],
                ">": [(">=", end)],
                ">=": [(">=", start)],
            }[op]
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        stamp = _iso(moment)
        return [(">=", stamp), ("<=", stamp)] if op == "=" else [(op, stamp)]
    except (ValueError, OverflowError):  # OverflowError: the day after 9999-12-31, year 1 in UTC
        raise OptionError("date_created", text, "YYYY-MM-DD or an ISO 8601 time, after =, <, <=, > or >=") from None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _page_token(token: str) -> tuple[str, int]:
    """The position a ``next_page_url`` carries: a stamp and a SQLite rowid, checked as the catalog will bind them
    (a rowid past 64 bits, text that is not UTF-8, would fail in SQLite)."""
    try:
        created, rowid = json.loads(base64.urlsafe_b64decode(token.encode()))
        if not isinstance(created, str) or not created.isascii() or len(created) > 64:
            raise ValueError
        if isinstance(rowid, bool) or not isinstance(rowid, int) or not 0 <= rowid < 1 << 63:
            raise ValueError
        return created, rowid
    except (ValueError, TypeError, RecursionError):
        raise OptionError("page_token", token, "a page_token from a next_page_url") from None


__all__ = ["ApiError", "ApiServer"]
