"""What a request may carry into the API, checked before the control API sees it: bodies, query values, ids.

Both route families use these: ``/v1`` (JSON bodies, snake_case parameters) and the Twilio-compatible
``/2010-04-01`` (form bodies, Twilio's parameter names). Input never reaches a 5xx: a body is refused
when it is not plain JSON or form text (nested deeper than ``MAX_DEPTH``, a lone surrogate escape,
``NaN``, an integer too long for any option, bytes that are not UTF-8), and each query value is checked
the way the catalog will use it. A refusal is an ``ApiError`` (or the control API's ``OptionError``)
that names the value and what would be accepted.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from ...control import OptionError

RECORDING_ID = re.compile(r"^RE[0-9a-f]{32}$")
MAX_PAGE = 1000
#: How deep a request body may nest: a vendor document is a handful of levels, deeper only strains the parser.
MAX_DEPTH = 32
#: Digits an integer in a request body may have: no option needs more, and float() of a longer one overflows.
MAX_INT_DIGITS = 18
#: Fields a form body may hold: Twilio's largest (a recording's create) has seven.
MAX_FORM_FIELDS = 64


class ApiError(Exception):
    """A request the API refuses: its HTTP ``status``, a short ``code`` and a ``message`` that says why."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


# -- bodies ----------------------------------------------------------------------------------------------


async def read_body(request: web.Request, timeout: float) -> bytes:
    """The whole body, or a 408 when it does not arrive within ``timeout`` seconds (a slow sender)."""
    if not request.can_read_body:
        return b""
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        raise ApiError(408, "slow_body", f"the request body did not arrive within {timeout:g} s") from None


async def json_body(request: web.Request, timeout: float) -> dict[str, Any]:
    raw = await read_body(request, timeout)
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


async def form_body(request: web.Request, timeout: float) -> dict[str, list[str]]:
    """An ``application/x-www-form-urlencoded`` body (what Twilio's libraries send) as each name's values."""
    raw = await read_body(request, timeout)
    kind = request.content_type if raw.strip() else "application/x-www-form-urlencoded"
    if kind != "application/x-www-form-urlencoded":
        raise ApiError(415, "not_a_form", f"the body must be application/x-www-form-urlencoded, not {kind}")
    try:
        pairs = parse_qsl(
            raw.decode("utf-8"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except UnicodeDecodeError:
        raise ApiError(400, "not_utf8", "the form is not UTF-8 text") from None
    except ValueError:
        raise ApiError(400, "too_many_fields", f"the form holds more than {MAX_FORM_FIELDS} fields") from None
    out: dict[str, list[str]] = {}
    for name, value in pairs:
        out.setdefault(name, []).append(value)
    return out


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


# -- values --------------------------------------------------------------------------------------------


def either(values: Iterable[str]) -> str:
    """``a, b or c``"""
    values = tuple(values)
    return ", ".join(values[:-1]) + " or " + values[-1]


def whole_number(text: str | None, name: str, low: int, high: int) -> int:
    digits = (text or "").strip()
    # isascii: "²" is a digit to isdigit() but not to int(); the length keeps int() within its digit limit
    if not (digits.isascii() and digits.isdigit()) or len(digits) > len(str(high)) or not low <= int(digits) <= high:
        raise OptionError(name, text, f"a whole number from {low} to {high}")
    return int(digits)


def boolean(text: str, name: str) -> bool:
    """A boolean query parameter as OpenAPI writes one, true or false (in any case: Python's requests sends True)."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise OptionError(name, text, "true or false")


_OPS = ("<=", ">=", "<", ">")


def created_filters(query: Mapping[str, str] | Any) -> list[tuple[str, str]]:
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


def page_token(position: tuple[str, int]) -> str:
    """The opaque token a next page's link carries: where the catalog's previous page ended."""
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode()


def page_position(token: str, name: str = "page_token", link: str = "next_page_url") -> tuple[str, int]:
    """The position a ``page_token`` carries: a stamp and a SQLite rowid, checked as the catalog will bind them
    (a rowid past 64 bits, text that is not UTF-8, would fail in SQLite)."""
    try:
        created, rowid = json.loads(base64.urlsafe_b64decode(token.encode()))
        if not isinstance(created, str) or not created.isascii() or len(created) > 64:
            raise ValueError
        if isinstance(rowid, bool) or not isinstance(rowid, int) or not 0 <= rowid < 1 << 63:
            raise ValueError
        return created, rowid
    except (ValueError, TypeError, RecursionError):
        raise OptionError(name, token, f"a {name} from a {link}") from None


def recording_name(name: str, allow_current: bool = False) -> tuple[str, str | None]:
    """A ``/v1`` path's last segment: a recording id and the extension after it (``.json``, ``.wav``, ``.mp3``)."""
    stem, dot, ext = name.partition(".")
    if allow_current and stem == "current" and not dot:
        return stem, None
    if not RECORDING_ID.match(stem):
        raise ApiError(404, "not_found", f"{stem!r} is not a recording id (RE and 32 hex digits)")
    if dot and ext not in ("wav", "mp3", "json"):
        raise ApiError(404, "not_found", f"no media type .{ext}; the recording is served as .wav, .mp3 or .json")
    return stem, (ext or None)
