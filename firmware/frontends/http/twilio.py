"""Twilio's Recordings REST API on the box (Twilio's Recording resource reference), beside ``/v1``: a
central server written against ``api.twilio.com/2010-04-01`` and Twilio's libraries points them at the box
and keeps its code.

Routes (``{AccountSid}`` is the box's, ``Control.account_sid``: ``AC`` and 32 hex digits of its device
id, as in its twilio-format callbacks; another is 404). ``.json`` may be left off the lists and a call's
recording routes, which always answer JSON; a recording's own URI without an extension is its media.

======================================================================  ======  ==============================
``/2010-04-01/Accounts/{AccountSid}/Recordings.json``                   GET     list (paged, newest first)
``/2010-04-01/Accounts/{AccountSid}/Recordings/{Sid}.json``             GET     fetch (``IncludeSoftDeleted``)
``/2010-04-01/Accounts/{AccountSid}/Recordings/{Sid}.json``             DELETE  soft delete: 204
``/2010-04-01/Accounts/{AccountSid}/Recordings/{Sid}[.wav|.mp3]``       GET     media (none: WAV, as Twilio)
``/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}/Recordings.json``   GET     the call's recordings
``/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}/Recordings.json``   POST    start one on the call
``/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}/Recordings/{Sid}``  GET     fetch, ``.json``
``/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}/Recordings/{Sid}``  POST    pause, resume, stop
``/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}/Recordings/{Sid}``  DELETE  soft delete: 204
======================================================================  ======  ==============================

Fields, Twilio's from ours (the ``Recording`` schema of openapi.json):

==========================  ============================================================================
``sid``                     ``id``
``account_sid``             the box's AccountSid
``call_sid``                ``call_id``
``api_version``             ``2010-04-01``
``conference_sid``          null (no conferences on a box)
``date_created``,           ``date_created``, ``date_updated``, ``start_time`` in RFC 2822, GMT
``date_updated``,
``start_time``
``duration``                whole seconds of ``duration`` as a string (rounded down, as the callbacks'
                            ``RecordingDuration``); ``"-1"`` until the recording has ended, as Twilio's
``status``                  ``processing`` while ours is ``in-progress``, ``paused`` or ``processing`` (a
                            fetch shows only processing or completed, as Twilio's reference says);
                            ``completed``; ``absent`` for ``absent`` and ``failed``; ``deleted``. An
                            update or create answers the in-flight status instead: ``in-progress``,
                            ``paused``, ``stopped``
``channels``                ``channels`` (1 or 2)
``source``                  ``Control.twilio_source``: ``DialVerb`` for ``auto``, else
                            ``StartCallRecordingAPI``, as the callbacks' ``RecordingSource``
``track``                   ``track``
``error_code``              for an absent or failed recording, the number of Twilio's error dictionary its
                            twilio-format callbacks say (``webhooks.TWILIO_ERROR_CODES``); else null.
                            ``/v1`` has ``end_reason``, ``error_code`` and ``error_message``
``price``, ``price_unit``   null
``encryption_details``      ``encryption`` (null unless encrypted at rest; how to decrypt it)
``uri``                     ``/2010-04-01/Accounts/{AccountSid}/Recordings/{Sid}.json``
``media_url``               the media route above, absolute, without an extension (Basic auth, as
                            Twilio's); null when the recording has no media
``subresource_uris``        ``{}``: no transcriptions or add-on results on a box
==========================  ============================================================================

Create takes Twilio's form fields as start options: ``RecordingStatusCallback`` (``status_callback``),
``RecordingStatusCallbackMethod``, ``RecordingStatusCallbackEvent`` (space-separated or repeated),
``Trim``, ``RecordingChannels`` (``channels``), ``RecordingTrack`` (``track``); the rest come from the
box's ``[recording]`` defaults. A call is going on when a recording is active on it, so the
``CallSid`` is the ``call_sid`` of such a recording (from its callbacks or events); a recording started
while one runs joins its call. Update takes ``Status`` (``paused``, ``in-progress``, ``stopped``) and
``PauseBehavior``; ``Twilio.CURRENT`` is the call's one active recording. Delete is the box's soft
delete (``Control.delete``): media gone, metadata kept 40 days, listed with ``IncludeSoftDeleted``.

Lists are Twilio's paging envelope (``start``, ``end``, ``page``, ``page_size``, ``uri``,
``first_page_uri``, ``next_page_uri``, ``previous_page_uri``) around ``recordings``; the next page is
found by a ``PageToken`` (a position in the catalog) and ``Page`` only counts. Filters: ``DateCreated``
(``<``, ``>``), ``CallSid``, ``IncludeSoftDeleted``, ``PageSize`` up to 1000; ``ConferenceSid`` finds
nothing.

Errors are Twilio's body, ``{"code": <int>, "message", "more_info", "status"}`` (so the SDK raises
``TwilioRestException`` with the status): 401 is code 20003, 403 20403, 404 20404, 429 20429; where
Twilio's dictionary has no fitting number the code is the HTTP status. A bad parameter is 400, as
Twilio's (``/v1`` says 422). ``details`` carries the box's own short code and, for a state clash,
``state``, ``trigger`` and ``recording``.

Credentials: HTTP Basic with the AccountSid as the user and one of the ``[http] tokens`` as the
password, as Twilio's libraries send them; a bearer token works too (``auth.Auth``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Protocol

from aiohttp import web

from ...control import Control, ControlError, OptionError
from ...core import PauseBehavior, Status
from .auth import ACTOR
from .inputs import (
    MAX_PAGE,
    RECORDING_ID,
    ApiError,
    boolean,
    created_filters,
    either,
    form_body,
    page_position,
    page_token,
    whole_number,
)

PREFIX = "/2010-04-01/"
API_VERSION = "2010-04-01"
CURRENT = "Twilio.CURRENT"
CALL_SID = re.compile(r"^CA[0-9a-f]{32}$")
#: What Twilio serves each format as (Twilio's Recording resource reference: "audio/x-wav", "audio/mpeg").
MEDIA_TYPES = {"wav": "audio/x-wav", "mp3": "audio/mpeg"}
#: Twilio's error dictionary numbers for the statuses that have one.
ERROR_CODES = {401: 20003, 403: 20403, 404: 20404, 429: 20429}
#: A fetch shows processing or completed (Twilio's Recording resource reference, "Update a Recording
#: resource"); failed is Twilio's absent.
STATUSES = {
    Status.IN_PROGRESS: "processing",
    Status.PAUSED: "processing",
    Status.PROCESSING: "processing",
    Status.COMPLETED: "completed",
    Status.ABSENT: "absent",
    Status.FAILED: "absent",
    Status.DELETED: "deleted",
}
#: The start options a create's form fields set.
CREATE_FIELDS = {
    "RecordingStatusCallback": "status_callback",
    "RecordingStatusCallbackMethod": "status_callback_method",
    "RecordingStatusCallbackEvent": "status_callback_events",
    "Trim": "trim",
    "RecordingChannels": "channels",
    "RecordingTrack": "track",
}
UPDATE_STATUSES = ("paused", "in-progress", "stopped")


def is_twilio(path: str) -> bool:
    """Whether ``path`` is one of this module's (its errors are then Twilio's)."""
    return path.startswith(PREFIX)


def rfc2822(moment: str | None) -> str | None:
    """An RFC 3339 stamp of ours as Twilio writes dates: ``Wed, 01 May 2024 12:00:01 +0000``."""
    if not moment:
        return None
    return format_datetime(datetime.fromisoformat(moment).astimezone(UTC).replace(microsecond=0))


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    extra: dict[str, str] | None = None,
    more_info: str = "",
) -> web.Response:
    """An error as Twilio's API answers one; ``more_info`` is where a code Twilio does not have is explained."""
    status = 400 if status == 422 else status
    number = ERROR_CODES.get(status, status)
    body = {
        "code": number,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{number}" if status in ERROR_CODES else more_info,
        "status": status,
        "details": {"reason": code, **(extra or {})},
    }
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
    return web.json_response(body, status=status, headers=headers)


class Host(Protocol):
    """What these routes use of the server they are on (``server.ApiServer``)."""

    control: Control
    base_url: str
    read_timeout: float

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any: ...

    async def serve_media(
        self, request: web.Request, row: dict[str, Any], fmt: str, content_type: str
    ) -> web.StreamResponse: ...


class TwilioRecordings:
    """The routes above, on a server: its control API, executor, media serving and base URL."""

    def __init__(self, api: Host) -> None:
        self.api = api
        self.control = api.control

    def routes(self) -> list[web.RouteDef]:
        account = PREFIX + "Accounts/{account}"
        json = "{ext:(?:\\.json)?}"
        # The media are resources of their own (GET only), so that a 405 lists exactly what each one takes.
        return [
            web.get(f"{account}/Recordings{json}", self.list),
            web.get(account + "/Recordings/{sid:[^/.]+}.json", self.fetch),
            web.delete(account + "/Recordings/{sid:[^/.]+}.json", self.delete),
            web.get(account + "/Recordings/{sid:[^/.]+}.{ext:wav|mp3}", self.media),
            web.get(account + "/Recordings/{sid:[^/.]+}", self.media),  # no extension: WAV, as Twilio's
            web.get(account + "/Calls/{call}/Recordings" + json, self.list),
            web.post(account + "/Calls/{call}/Recordings" + json, self.create),
            web.get(account + "/Calls/{call}/Recordings/{sid}", self.fetch),
            web.post(account + "/Calls/{call}/Recordings/{sid}", self.update),
            web.delete(account + "/Calls/{call}/Recordings/{sid}", self.delete),
        ]

    # -- routes --------------------------------------------------------------------------------------------
    async def list(self, request: web.Request) -> web.Response:
        self._account(request)
        call = self._call(request)
        q = request.query
        size = whole_number(q.get("PageSize", "50"), "PageSize", 1, MAX_PAGE)
        page = whole_number(q.get("Page", "0"), "Page", 0, 10**9)
        created = created_filters(q)
        after = page_position(q["PageToken"], "PageToken", "next_page_uri") if q.get("PageToken") else None
        if page and after is None:  # Page only counts the pages a PageToken found
            raise OptionError("Page", q["Page"], "0, or the Page of a next_page_uri with its PageToken")
        include_deleted = boolean(q.get("IncludeSoftDeleted", "false"), "IncludeSoftDeleted")
        call = call or q.get("CallSid") or None
        if q.get("ConferenceSid"):  # no conferences here: nothing of one to list
            rows, position = [], None
        else:
            rows, position = await self.api.run(
                lambda: self.control.page(
                    call_id=call, include_deleted=include_deleted, created=created, size=size, after=after
                )
            )
        here = request.rel_url
        first = here.with_query({k: v for k, v in q.items() if k not in ("Page", "PageToken")})
        following = None
        if position is not None:
            following = str(here.update_query({"Page": str(page + 1), "PageToken": page_token(position)}))
        start = page * size
        body = {
            "recordings": [self.resource(row) for row in rows],
            "start": start,
            "end": start + max(len(rows), 1) - 1,
            "page": page,
            "page_size": size,
            "uri": str(here),
            "first_page_uri": str(first),
            "next_page_uri": following,
            "previous_page_uri": None,  # pages are found forwards only, from a position in the catalog
        }
        return web.json_response(body)

    async def fetch(self, request: web.Request) -> web.Response:
        self._account(request)
        call = self._call(request)
        rid, _ = _sid(request.match_info["sid"])
        row = await self._row(rid, call)
        deleted_too = boolean(request.query.get("IncludeSoftDeleted", "false"), "IncludeSoftDeleted")
        if row["status"] == Status.DELETED and not deleted_too:
            raise ApiError(404, "deleted", f"recording {rid} was deleted; IncludeSoftDeleted=true shows it")
        return web.json_response(self.resource(row))

    async def media(self, request: web.Request) -> web.StreamResponse:
        self._account(request)
        rid, _ = _sid(request.match_info["sid"])
        fmt = request.match_info.get("ext") or "wav"
        row = await self._row(rid, None)
        return await self.api.serve_media(request, row, fmt, MEDIA_TYPES[fmt])

    async def create(self, request: web.Request) -> web.Response:
        self._account(request)
        call = self._call(request)
        form = await form_body(request, self.api.read_timeout)
        options: dict[str, Any] = {}
        for name, values in form.items():
            if name not in CREATE_FIELDS:
                raise ApiError(
                    400,
                    "invalid",
                    f"{name} is not a field of a recording's create here; it takes {either(CREATE_FIELDS)}",
                )
            if name == "RecordingStatusCallbackEvent":
                options["status_callback_events"] = " ".join(values).replace(",", " ").split()
            else:
                options[CREATE_FIELDS[name]] = _one(name, values)
        if call not in await self.api.run(self._calls_going_on):
            raise ApiError(
                404,
                "no_call",
                f"no call {call} is going on on this box: a CallSid here is the call_sid of a recording in progress",
            )
        try:
            row = await self.api.run(lambda: self.control.start(options, source="api"))
        except OptionError as exc:  # in Twilio's names, which the request used
            twilio = {ours: theirs for theirs, ours in CREATE_FIELDS.items()}
            raise OptionError(twilio.get(exc.option, exc.option), exc.value, exc.allowed) from None
        if row["call_id"] != call:  # the call ended between the check and the start: not this call's recording
            await self.api.run(self.control.stop, row["id"])
            raise ApiError(404, "no_call", f"call {call} ended before the recording could start")
        return web.json_response(self.resource(row, "in-progress"), status=201)

    async def update(self, request: web.Request) -> web.Response:
        self._account(request)
        call = self._call(request)
        sid, _ = _sid(request.match_info["sid"], current=True)
        form = await form_body(request, self.api.read_timeout)
        extra = sorted(set(form) - {"Status", "PauseBehavior"})
        if extra:
            raise ApiError(400, "invalid", f"{extra[0]} cannot be changed; an update takes Status and PauseBehavior")
        status = _one("Status", form.get("Status", []))
        behavior = _one("PauseBehavior", form.get("PauseBehavior", ["silence"]))
        if status not in UPDATE_STATUSES:
            raise OptionError("Status", status, either(UPDATE_STATUSES))
        if behavior not in tuple(b.value for b in PauseBehavior):
            raise OptionError("PauseBehavior", behavior, either(b.value for b in PauseBehavior))
        rid = await self.api.run(self._target, call, sid)
        if status == "paused":
            row = await self.api.run(self.control.pause, rid, behavior)
        elif status == "in-progress":
            row = await self.api.run(self.control.resume, rid)
        else:
            row = await self.api.run(self.control.stop, rid)
        return web.json_response(self.resource(row, status))

    async def delete(self, request: web.Request) -> web.Response:
        self._account(request)
        call = self._call(request)
        rid, _ = _sid(request.match_info["sid"])
        row = await self._row(rid, call)
        if row["status"] == Status.DELETED:  # as Twilio: a deleted recording is gone
            raise ApiError(404, "deleted", f"recording {rid} was deleted already")
        actor = request.get(ACTOR, "?")
        await self.api.run(lambda: self.control.delete(rid, actor=actor))
        return web.Response(status=204)

    # -- the resource -------------------------------------------------------------------------------------
    def resource(self, row: dict[str, Any], status: str | None = None) -> dict[str, Any]:
        """A catalog row as Twilio's Recording resource; ``status``: the in-flight status an update answers."""
        sid, account = row["id"], self.control.account_sid
        ended = row["status"] not in (Status.IN_PROGRESS, Status.PAUSED) and row.get("duration") is not None
        media = f"{self.api.base_url}{PREFIX}Accounts/{account}/Recordings/{sid}" if row.get("path") else None
        return {
            "account_sid": account,
            "api_version": API_VERSION,
            "call_sid": row["call_id"],
            "conference_sid": None,
            "date_created": rfc2822(row.get("date_created")),
            "date_updated": rfc2822(row.get("date_updated")),
            "start_time": rfc2822(row.get("start_time")),
            "duration": str(math.floor(max(0.0, float(row["duration"])))) if ended else "-1",
            "sid": sid,
            "price": None,
            "price_unit": None,
            "status": status or STATUSES[Status(row["status"])],
            "channels": int(row["channels"]),
            "source": self.control.twilio_source(row.get("source")),
            "error_code": self.control.twilio_error_code(row),
            "track": row["track"],
            "uri": f"{PREFIX}Accounts/{account}/Recordings/{sid}.json",
            "encryption_details": row.get("encryption") or None,
            "subresource_uris": {},
            "media_url": media,
        }

    # -- helpers --------------------------------------------------------------------------------------------
    def _account(self, request: web.Request) -> None:
        given = request.match_info["account"]
        if given != self.control.account_sid:
            raise ApiError(
                404, "no_account", f"no account {given!r} on this box; its AccountSid is {self.control.account_sid}"
            )

    @staticmethod
    def _call(request: web.Request) -> str | None:
        call = request.match_info.get("call")
        if call is not None and not CALL_SID.match(call):
            raise ApiError(404, "not_found", f"{call!r} is not a CallSid (CA and 32 hex digits)")
        return call

    async def _row(self, rid: str, call: str | None) -> dict[str, Any]:
        row = await self.api.run(self.control.get, rid)  # LookupError: 404
        if call is not None and row["call_id"] != call:
            raise ApiError(404, "not_found", f"recording {rid} is not one of call {call}'s")
        return row

    def _active_rows(self) -> list[dict[str, Any]]:
        rows = []
        for active in self.control.active():
            try:
                rows.append(self.control.get(active["id"]))
            except LookupError:  # not in the catalog (a catalog that failed): not listed either
                continue
        return rows

    def _calls_going_on(self) -> set[str]:
        return {row["call_id"] for row in self._active_rows()}

    def _target(self, call: str, sid: str) -> str:
        """The recording an update acts on: ``sid``, when it is one of the call's; ``Twilio.CURRENT``: the call's
        one active recording."""
        if sid != CURRENT:
            row = self.control.get(sid)
            if row["call_id"] != call:
                raise ApiError(404, "not_found", f"recording {sid} is not one of call {call}'s")
            return sid
        on_call = [row["id"] for row in self._active_rows() if row["call_id"] == call]
        if len(on_call) != 1:
            raise ControlError(
                f"{CURRENT} needs exactly one active recording on call {call}; {len(on_call)} are active"
            )
        return on_call[0]


def _sid(text: str, current: bool = False) -> tuple[str, str | None]:
    """A path's recording sid and the ``.json`` after it, if any; ``Twilio.CURRENT`` where ``current``. Media
    are the account's routes (``Recordings/{Sid}.wav``), not a call's."""
    stem, _, ext = text.rpartition(".") if text.endswith((".json", ".wav", ".mp3")) else (text, "", "")
    if current and stem == CURRENT and ext in ("", "json"):
        return stem, ext or None
    if not RECORDING_ID.match(stem):
        raise ApiError(404, "not_found", f"{stem!r} is not a recording sid (RE and 32 hex digits)")
    if ext in ("wav", "mp3"):
        raise ApiError(404, "not_found", f"media are at {PREFIX}Accounts/{{AccountSid}}/Recordings/{stem}.{ext}")
    return stem, ext or None


def _one(name: str, values: list[str]) -> str:
    if len(values) != 1:
        raise ApiError(400, "invalid", f"{name} must be given once" if values else f"{name} is required")
    return values[0]
