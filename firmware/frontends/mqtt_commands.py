"""MQTT commands, mapped onto the control API (docs/mqtt.md, ``<prefix>/<device_id>/cmd``).

A command is a JSON object ``{"op": ..., ...}``; the answer is
``{"ok": true, ...}`` or ``{"ok": false, "error": "<what is wrong>"}``. A bad
command never raises: every problem becomes an error answer naming it.

==========  ===============================================  =======================
op          fields                                            answer
==========  ===============================================  =======================
start       ``options`` (the start options), or              ``recording``,
            a vendor's document: ``ncco``, ``swml``,          ``unsupported``
            ``twiml`` or ``sinch``
stop        ``target`` (name, id or ``current``)             ``recording``
pause       ``target``, ``pause_behavior`` (silence, skip)  ``recording``
resume      ``target``                                       ``recording``
button      (none): press the record button                  ``state``
list        ``status``, ``call_id``, ``limit`` (<= 1000)     ``recordings``
get         ``id``                                           ``recording``
delete      ``id`` (finished recordings only), ``force``     ``recording``
            (also when its upload is not confirmed: the
            upload is cancelled)
update      ``url`` (HTTPS) and ``sha256`` of a release      ``update``
            bundle; ``signature_url``, ``wait_for_idle``,
            ``force``: progress follows as ``device.update``
            events
==========  ===============================================  =======================

A ``request_id`` is echoed in the answer, for clients without MQTT 5
correlation data.

Who may command the box (``[mqtt] command_auth``): by default (``token``) every
command carries ``[mqtt] command_token`` as ``"token"``, a missing or wrong one
refused as ``unauthorised``; with no token configured, only ``list`` and ``get``
are answered and the commands that record or delete are refused as
``token_required``. With ``broker``, the broker's ACL alone decides who may
publish on the box's ``cmd`` topic. The button token (``config.button_token``,
derived from the command token: what Home Assistant's record button carries)
is good for ``button`` alone.
"""

from __future__ import annotations

import hmac
from typing import Any

from ..config import button_token
from ..control import Control, ControlError, OptionError, error_fields
from ..core import Status

OPS = ("start", "stop", "pause", "resume", "button", "list", "get", "delete", "update")
STATUSES = tuple(s.value for s in Status)
_FIELDS = {
    "start": {"options", "ncco", "swml", "twiml", "sinch"},
    "stop": {"target"},
    "pause": {"target", "pause_behavior"},
    "resume": {"target"},
    "button": set(),
    "list": {"status", "call_id", "limit"},
    "get": {"id"},
    "delete": {"id", "force"},
    "update": {"url", "sha256", "signature_url", "wait_for_idle", "force"},
}
_ALWAYS = {"op", "token", "request_id"}


#: The commands that need the token in ``token`` mode even when none is configured: they record or delete.
GUARDED = frozenset({"start", "stop", "pause", "resume", "button", "delete", "update"})


class Commands:
    """``commands(request)``: the answer to one command; ``auth`` is ``[mqtt] command_auth``."""

    def __init__(self, control: Control, *, token: str = "", auth: str = "token") -> None:
        self.control = control
        self.token = token
        self.auth = auth
        self.button_token = button_token(token) if token else ""
        self.public = control.public

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if self.token and not self._authorised(str(request.get("token", "")).encode(), op):
            return _error("unauthorised: the command's token is missing or wrong", code="unauthorised")
        if op not in OPS:
            return _error(f"op {op!r} is not a command; expected one of {', '.join(OPS)}")
        if not self.token and self.auth == "token" and op in GUARDED:
            return _error(
                f"{op} needs a command token and this box has none: set [mqtt] command_token (each command then "
                'carries it as "token"), or command_auth = "broker" where the broker\'s ACL is the boundary',
                code="token_required",
            )
        extra = sorted(set(request) - _FIELDS[op] - _ALWAYS)
        if extra:
            return _error(
                f"{op}: unknown field {extra[0]!r}; {op} takes {', '.join(sorted(_FIELDS[op])) or 'no fields'}"
            )
        try:
            return {"ok": True, **getattr(self, "_" + op)(request)}
        except (ControlError, OptionError, LookupError, ValueError) as exc:
            return _error(str(exc.args[0]) if isinstance(exc, LookupError) else str(exc), **error_fields(exc))

    def _authorised(self, given: bytes, op: Any) -> bool:
        """The command token authorises every command, the button token the button alone."""
        full = hmac.compare_digest(given, self.token.encode())
        button = hmac.compare_digest(given, self.button_token.encode())
        return full or (button and op == "button")

    def _start(self, r: dict) -> dict:
        document = {k: v for k, v in r.items() if k not in _ALWAYS}
        if "options" in document and not isinstance(document["options"], dict):
            raise ValueError("start: options must be a JSON object of start options")
        _, row, unsupported = self.control.request(document, source="mqtt")
        return {"recording": self.public(row), "unsupported": unsupported}

    def _target(self, r: dict) -> str:
        target = r.get("target", "current")
        if not isinstance(target, str) or not target:
            raise ValueError('target must be a recording\'s name, its id, or "current"')
        return target

    def _stop(self, r: dict) -> dict:
        return {"recording": self.public(self.control.stop(self._target(r)))}

    def _pause(self, r: dict) -> dict:
        return {"recording": self.public(self.control.pause(self._target(r), r.get("pause_behavior", "silence")))}

    def _resume(self, r: dict) -> dict:
        return {"recording": self.public(self.control.resume(self._target(r)))}

    def _button(self, r: dict) -> dict:
        self.control.button()
        return {"state": self.control.state()}

    def _list(self, r: dict) -> dict:
        limit = r.get("limit", 50)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
            raise ValueError(f"list: limit {_shown(limit)} must be a whole number from 1 to 1000")
        status, call_id = r.get("status"), r.get("call_id")
        if status is not None and status not in STATUSES:
            raise ValueError(f"list: status {_shown(status)} is not a status; expected one of {', '.join(STATUSES)}")
        if call_id is not None and not isinstance(call_id, str):
            raise ValueError(f"list: call_id {_shown(call_id)} must be a call id (CA + 32 hex digits)")
        rows = self.control.list(status=status, call_id=call_id, limit=limit)
        return {"recordings": [self.public(row) for row in rows]}

    def _get(self, r: dict) -> dict:
        return {"recording": self.public(self.control.get(_id(r)))}

    def _delete(self, r: dict) -> dict:
        force = r.get("force", False)
        if not isinstance(force, bool):
            raise ValueError(f"delete: force {force!r} must be true or false")
        return {"recording": self.public(self.control.delete(_id(r), force=force, actor="mqtt"))}

    def _update(self, r: dict) -> dict:
        fields = {k: v for k, v in r.items() if k not in _ALWAYS}
        request_id = r.get("request_id")
        shown = "" if request_id is None or isinstance(request_id, bool) else str(request_id)
        return {"update": self.control.update(fields, shown)}


def _shown(value: Any) -> str:
    """A value from a command, as an error message shows it: short."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _id(r: dict) -> str:
    rid = r.get("id")
    if not isinstance(rid, str) or not rid:
        raise ValueError("id: the recording id (RE + 32 hex digits) is missing")
    return rid


def _error(message: str, **fields: str) -> dict[str, Any]:
    return {"ok": False, "error": message, **fields}
