"""The HTTP API (aiohttp), in a thread of its own beside the daemon's loop.

Everything goes through the control API (``firmware.control``), the same as
for the GPIO panel and MQTT commands: the server gets a ``Control`` and its
``[http]`` config, nothing else. Blocking calls run
in aiohttp's executor so the event loop never waits on the box. Errors are
JSON ``{"status": <code>, "code": "<short>", "message": "<what is wrong>"}``.
The routes and their parameters are described in ``openapi.json`` beside this
module, served at ``/v1/openapi.json``.

Three families of routes share the middleware (errors, then who may):
``/v1/...`` here; Twilio's ``/2010-04-01/...`` (``twilio``), whose errors are
Twilio's; and ``/v1/links/<expires>/<signature>/recordings/<id>[.wav|.mp3]``,
the recording links (``recording_url``) that take an extension. Who may is
decided in ``_authorise`` alone: a signed link, a token (bearer, or Basic as
Twilio's libraries send it), or a Vonage application's JWT, which opens media
and nothing else (the routes whose handler is a ``media``).

The box sits on a shared LAN, so every client is assumed hostile until its
token says otherwise, and none may turn the API against the box's owner:

- a client has ``READ_TIMEOUT`` seconds to send a request's line and headers,
  and as long again for its body; one that trickles bytes (slowloris) is cut
  off, and an idle kept-alive connection is closed after as long;
- a media link is signed over its path and its whole query (``auth.LinkSigner``),
  so it cannot be bent to other media or other parameters; a recording link
  over its recording and expiry, so it opens that recording's audio only;
- input never reaches a 5xx: a body is refused before the control API sees it
  when it is not plain JSON or form text (``inputs``: nested deeper than
  ``MAX_DEPTH``, a lone surrogate escape, ``NaN``, an integer too long for any
  option, bytes that are not UTF-8), each query parameter is checked, and a
  malformed request is logged as one line, never as a traceback. A handler that fails all the same answers a JSON 500 that names
  nothing inside the box, and logs the traceback: that is a bug to fix.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
from collections.abc import Callable, Mapping
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
from . import twilio
from .auth import ACTOR, Auth, JwtRefused, Limiter, LinkSigner, VonageJwt, parse_tokens
from .inputs import (
    MAX_PAGE,
    ApiError,
    boolean,
    created_filters,
    either,
    json_body,
    page_position,
    page_token,
    recording_name,
    whole_number,
)

log = logging.getLogger("edge-recorder.api")

OPENAPI = Path(__file__).with_name("openapi.json")
MEDIA_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg"}
#: What a client that asks for no audio type in particular may be sent instead (a generated client's download).
OCTET_STREAM = "application/octet-stream"
PUBLIC = {"/v1/health", "/v1/openapi.json"}
LINKS = "/v1/links/"
# A recording's media are a resource of their own (GET only): a 405 then lists exactly what each one takes.
MEDIA_NAME = r"{name:[^/]+\.(?:wav|mp3)}"
OTHER_NAME = r"{name:[^/]+(?<!\.wav)(?<!\.mp3)}"
#: Seconds a client has to send a request's line and headers (counted from connecting, or from the previous
#: answer on a kept-alive connection), and then its body; an idle kept-alive connection is closed after as long.
READ_TIMEOUT = 15.0


def listen_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


class ApiServer:
    """``start()`` serves until ``stop()``; ``media_url(row)`` and ``recording_url(row)`` sign links to a
    recording's media.

    ``read_timeout`` (``READ_TIMEOUT`` unless given) bounds how long a client may take to send a request.
    """

    def __init__(self, control: Control, http: dict[str, Any], read_timeout: float | None = None) -> None:
        h = self.http = http
        self.read_timeout = READ_TIMEOUT if read_timeout is None else read_timeout
        self.control = control
        self.host, self.port = listen_address(h["listen"])
        self.auth = Auth(parse_tokens(h["tokens"]), h["username"], h["password"], control.account_sid)
        self.vonage = (
            VonageJwt(h["vonage_public_key"], h["vonage_application_id"]) if h.get("vonage_public_key") else None
        )
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
        self.twilio = twilio.TwilioRecordings(self)

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
                web.get(f"/v1/recordings/{MEDIA_NAME}", self.media),
                web.get(f"/v1/recordings/{OTHER_NAME}", self.fetch),
                web.post(f"/v1/recordings/{OTHER_NAME}", self.update),
                web.delete(f"/v1/recordings/{OTHER_NAME}", self.delete),
                web.get(LINKS + "{expires}/{signature}/recordings/{name}", self.linked),
                *self.twilio.routes(),
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
        answer = self._twilio_error if twilio.is_twilio(request.path) else _native_error
        try:
            return await handler(request)
        except ApiError as exc:
            return answer(exc.status, exc.code, exc.message, exc.headers)
        except web.HTTPRequestEntityTooLarge:
            return answer(413, "too_large", f"the request body is over the {self.max_body}-byte limit")
        except web.HTTPException as exc:
            if exc.status >= 400:
                reason = {404: "no such resource", 405: f"{request.method} is not allowed on {request.path}"}
                kept = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}  # 405: the methods that are
                return answer(
                    exc.status, exc.reason.lower().replace(" ", "_"), reason.get(exc.status, exc.reason), kept or None
                )
            raise
        except TimeoutError:
            return answer(503, "busy", "the box did not answer within 5 s; try again", {"Retry-After": "1"})
        except ControlError as exc:  # a ValueError too: before the others
            return answer(409, "conflict", str(exc), extra=error_fields(exc))
        except (OptionError, ValueError) as exc:
            return answer(422 if isinstance(exc, OptionError) else 400, "invalid", str(exc))
        except LookupError as exc:
            return answer(404, "not_found", str(exc.args[0]) if exc.args else "not found")
        except Exception:
            log.exception("API %s %s failed", request.method, request.path)
            return answer(500, "internal", "internal error; the box's log has the details")

    @web.middleware
    async def _authorise(self, request: web.Request, handler) -> web.StreamResponse:
        if request.path in PUBLIC:
            return await handler(request)
        address = request.remote or "?"
        if request.path.startswith(LINKS):
            if not self._linked(request):  # HEAD too: it would say whether the recording is there, and its size
                await self._failed(address, request.path, "bad link")
                raise ApiError(
                    403, "bad_link", "the link has expired or its signature does not match; ask for a new one"
                )
            request[ACTOR] = "signed-link"
            return await handler(request)
        if request.method == "GET" and ("signature" in request.query or "expires" in request.query):
            if not self._signed(request):
                await self._failed(address, request.path, "bad link")
                raise ApiError(
                    403, "bad_link", "the media link has expired or its signature does not match; ask for a new one"
                )
            request[ACTOR] = "signed-link"
            return await handler(request)
        actor, refusal, media_only = self._caller(request.headers.get("Authorization"))
        # An address that failed too often may not guess on: the block stops everything that could be guessed
        # (a bad login, the Basic password). A token of 128 random bits or a Vonage JWT cannot be, so the
        # central server's own requests go through even when others behind the same proxy are blocked.
        if actor is None or actor.startswith("basic:"):
            wait = self.limiter.blocked(address)
            if wait:
                raise ApiError(
                    429,
                    "too_many_failures",
                    f"too many failed logins from {address}; try again in {wait:.0f} s",
                    {"Retry-After": str(int(wait) + 1)},
                )
        if actor is None:
            await self._failed(address, request.path, refusal)
            if "Authorization" in request.headers:
                message = refusal or "the credentials are not valid"
            elif twilio.is_twilio(request.path):
                message = "credentials are needed: HTTP Basic with the box's AccountSid and an API token"
            else:
                message = "a bearer token (Authorization: Bearer ...) is needed"
            raise ApiError(401, "unauthorised", message, {"WWW-Authenticate": 'Bearer realm="edge-recorder"'})
        if media_only and request.match_info.handler not in (self.media, self.twilio.media):
            raise ApiError(
                403,
                "media_only",
                "a Vonage JWT downloads recordings' media only (GET /v1/recordings/<id>.wav or .mp3); "
                "use an API token for the rest",
            )
        request[ACTOR] = actor
        return await handler(request)

    async def _failed(self, address: str, path: str, detail: str | None) -> None:
        """A failed login (a bad credential, a bad link): counted against the address, and audited."""
        self.limiter.failed(address)
        await self.run(self.control.audit, "failed_login", address, path, detail)

    def _caller(self, header: str | None) -> tuple[str | None, str | None, bool]:
        """Who ``header`` names, for the audit log; else why not, when there is more to say than that the
        credentials are not valid; and whether it opens media only (a Vonage JWT)."""
        actor = self.auth.check(header)
        scheme, _, credential = (header or "").partition(" ")
        credential = credential.strip()
        if actor or self.vonage is None or scheme.lower() != "bearer" or not VonageJwt.looks_like(credential):
            return actor, None, False
        try:
            return self.vonage.check(credential), None, True
        except JwtRefused as exc:
            return None, str(exc), False

    def _signed(self, request: web.Request) -> bool:
        return self.signer.verify("GET", request.path, request.query.items())

    def _linked(self, request: web.Request) -> bool:
        m = request.match_info
        if "name" not in m:  # no such route: the 404 says so
            return True
        rid = m["name"].partition(".")[0]
        return self.signer.verify_recording(rid, m["expires"], m["signature"])

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in the executor: the control API blocks (on the audio loop, on SQLite)."""
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    def _twilio_error(self, *args: Any, **kwargs: Any) -> web.Response:
        return twilio.error_response(*args, **kwargs, more_info=f"{self.base_url}/v1/openapi.json")

    # -- routes ----------------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        state = self.control.state()
        return web.json_response({"status": "ok", "state": state["state"], "version": __version__})

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=OPENAPI.read_bytes(), content_type="application/json")

    async def metrics(self, request: web.Request) -> web.Response:
        registry = CollectorRegistry()
        registry.register(_Metrics(self.control))
        body = await self.run(generate_latest, registry)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def list(self, request: web.Request) -> web.Response:
        q = request.query
        size = whole_number(q.get("page_size", q.get("PageSize", "50")), "page_size", 1, MAX_PAGE)
        created = created_filters(q)
        after = page_position(q["page_token"]) if q.get("page_token") else None
        include_deleted = boolean(q.get("include_soft_deleted", "false"), "include_soft_deleted")
        status = q.get("status")
        if status is not None and status not in _STATUSES:
            raise OptionError("status", status, "one of " + ", ".join(_STATUSES))
        call_id = q.get("call_id") or q.get("call_sid")
        rows, position = await self.run(
            lambda: self.control.page(
                status=status, call_id=call_id, include_deleted=include_deleted, created=created, size=size, after=after
            )
        )
        meta: dict[str, Any] = {"page_size": size, "next_page_url": None}
        if position is not None:
            query = {k: v for k, v in q.items() if k != "page_token"} | {"page_token": page_token(position)}
            meta["next_page_url"] = str(request.url.with_query(query).relative())
        return web.json_response({"recordings": [self.view(r) for r in rows], "meta": meta}, dumps=_dumps)

    async def create(self, request: web.Request) -> web.Response:
        body = await json_body(request, self.read_timeout)
        action, row, unsupported = await self.run(lambda: self.control.request(body, source="api"))
        status = 201 if action == "start" else 200
        return web.json_response({"recording": self.view(row), "unsupported": unsupported}, status=status, dumps=_dumps)

    async def fetch(self, request: web.Request) -> web.StreamResponse:
        rid, _ = recording_name(request.match_info["name"])
        _requested_channels(request)  # checked for the fields too: the parameter is the route's
        row = await self._row(rid)
        if row["status"] == Status.DELETED:  # as Twilio: gone, though the list keeps its fields for 40 days
            raise ApiError(
                404, "deleted", f"recording {rid} was deleted; GET /v1/recordings?include_soft_deleted=true lists it"
            )
        return web.json_response(self.view(row), dumps=_dumps)

    async def media(self, request: web.Request) -> web.StreamResponse:
        rid, fmt = recording_name(request.match_info["name"])
        return await self.serve_media(request, await self._row(rid), fmt, MEDIA_TYPES[fmt])

    async def linked(self, request: web.Request) -> web.StreamResponse:
        """A recording link (``recording_url``): its signature was checked on the way in; no extension serves the
        recording's own format."""
        rid, fmt = recording_name(request.match_info["name"])
        if fmt == "json":
            raise ApiError(404, "not_found", "a recording link serves media only: append .wav or .mp3, or nothing")
        row = await self._row(rid)
        fmt = fmt or row["format"]
        return await self.serve_media(request, row, fmt, MEDIA_TYPES[fmt])

    async def update(self, request: web.Request) -> web.Response:
        rid, fmt = recording_name(request.match_info["name"], allow_current=True)
        if fmt is not None:
            raise ApiError(
                404, "not_found", f"{request.path}: only the recording itself can be updated, without .{fmt}"
            )
        body = await json_body(request, self.read_timeout)
        extra = sorted(set(body) - {"status", "Status", "pause_behavior", "PauseBehavior"})
        if extra:
            raise OptionError(extra[0], body[extra[0]], "only status and pause_behavior can be changed")
        for key, allowed in _UPDATE_FIELDS.items():  # every spelling given is checked, also the one not used
            if key in body and (not isinstance(body[key], str) or body[key] not in allowed):
                raise OptionError(key, body[key], either(allowed))
        status = body.get("status", body.get("Status"))
        behavior = body.get("pause_behavior", body.get("PauseBehavior", "silence"))
        if status == "paused":
            row = await self.run(self.control.pause, rid, behavior)
        elif status == "in-progress":
            row = await self.run(self.control.resume, rid)
        elif status == "stopped":
            row = await self.run(self.control.stop, rid)
        else:
            raise OptionError("status", status, either(_UPDATE_FIELDS["status"]))
        return web.json_response(self.view(row), dumps=_dumps)

    async def delete(self, request: web.Request) -> web.Response:
        rid, fmt = recording_name(request.match_info["name"])
        if fmt is not None:
            raise ApiError(404, "not_found", f"{request.path}: delete the recording itself, without .{fmt}")
        force = boolean(request.query.get("force", "false"), "force")
        await self.run(lambda: self.control.delete(rid, force=force, actor=request.get(ACTOR, "?")))
        return web.Response(status=204)

    # -- media, for every route that serves them -------------------------------------------------------
    async def serve_media(
        self, request: web.Request, row: dict[str, Any], fmt: str, content_type: str
    ) -> web.StreamResponse:
        """The recording's audio as ``fmt`` (``RequestedChannels`` from the query), with Range, audited once
        per download. ``content_type`` is what the route calls the format; a client that accepts only
        ``application/octet-stream`` (not audio) gets that."""
        rid = row["id"]
        wanted = _requested_channels(request)
        if row["status"] == Status.DELETED:
            raise ApiError(404, "deleted", f"recording {rid} was deleted: its media are gone")
        try:
            path = await self.run(self.control.media, row, fmt, wanted)
        except NoMedia as exc:
            raise ApiError(404, "no_media", str(exc)) from None
        except EncryptedMedia as exc:
            raise ApiError(409, "encrypted", str(exc)) from None
        if request.http_range.start in (None, 0):  # one audit row per download, not per Range request
            await self.run(
                self.control.audit, "download", request.get(ACTOR, "?"), rid, f"{fmt} {wanted or row['channels']}ch"
            )
        accept = request.headers.get("Accept", "")
        if OCTET_STREAM in accept and "audio/" not in accept:
            content_type = OCTET_STREAM
        response = web.FileResponse(path, headers={"Content-Type": content_type})
        response.headers["Content-Disposition"] = f'inline; filename="{rid}.{fmt}"'
        return response

    # -- helpers -----------------------------------------------------------------------------------
    async def _row(self, rid: str) -> dict[str, Any]:
        return await self.run(self.control.get, rid)  # LookupError: 404

    def view(self, row: dict[str, Any]) -> dict[str, Any]:
        return self.control.public(row)  # with the signed media link

    def media_url(self, row: dict[str, Any], params: Mapping[str, str] | None = None) -> str | None:
        """A link to the recording's media that works without a token until it expires; ``params`` (such as
        ``{"RequestedChannels": "1"}``) are signed with it, so the link serves exactly that."""
        if not row.get("path") or not row.get("id"):
            return None
        path = f"/v1/recordings/{row['id']}.{row['format']}"
        return f"{self.base_url}{path}?{self.signer.sign('GET', path, params)}"

    def recording_url(self, row: dict[str, Any]) -> str | None:
        """A link to the recording's media without an extension, Twilio's ``RecordingUrl``: it serves the
        recording's own format, and the client may append ``.wav`` or ``.mp3`` (and ``?RequestedChannels=1``).
        It works without a token until it expires (``[http] media_link_seconds``), for that recording only.
        Every recording has one, as every Twilio callback has a ``RecordingUrl``: until the recording has
        media (in progress), and when it has none (absent), the link answers 404 saying so.

        ``{base_url}/v1/links/{expires}/{signature}/recordings/{id}``: one HMAC, no I/O.
        """
        if not row.get("id"):
            return None
        expires, signature = self.signer.sign_recording(row["id"])
        return f"{self.base_url}{LINKS}{expires}/{signature}/recordings/{row['id']}"


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


def _requested_channels(request: web.Request) -> int | None:
    """``RequestedChannels`` (1: a downmix, 2: both channels; none: as recorded), Twilio's media parameter."""
    channels = request.query.get("RequestedChannels", request.query.get("requested_channels"))
    return whole_number(channels, "RequestedChannels", 1, 2) if channels is not None else None


def _native_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, extra: dict[str, str] | None = None
) -> web.Response:
    body = {"status": status, "code": code, "message": message, **(extra or {})}
    return web.json_response(body, status=status, headers=headers)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


__all__ = ["ApiError", "ApiServer"]
