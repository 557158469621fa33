"""The box's MQTT link (paho-mqtt 2, MQTT 5): status, state, events and commands.

Theory of operation
-------------------
Topics under ``<prefix>/<device_id>/``:

- ``status``: ``online`` / ``offline``, retained; ``offline`` is also the last
  will, so a box that loses power shows offline.
- ``state``: a retained JSON snapshot, published on every change and on a
  heartbeat.
- ``events``: CloudEvents at QoS 1, taken from the outbox in order. A row
  leaves the outbox only when the broker's PUBACK for it arrives; paho keeps
  unsent messages in memory only, so after a disconnect every row still in
  the outbox is published again (the event id lets receivers drop the copy).
- ``cmd``: JSON commands; the reply goes to the MQTT 5 response topic with the
  correlation data, else to ``cmd/reply``.

The command path cannot be killed by what arrives on it: every message is
handled under a guard that logs and answers; a payload over the size limit, or
nested deeper than ``MAX_JSON_DEPTH``, is refused before it is parsed. A
response topic is used only when it is a plain topic name (no wildcards, not a
``$`` topic) outside the box's own namespace (``<prefix>/...``) or under its
own ``cmd/reply``. When commands need a token (``[mqtt] command_token``), only a
command that carried the right one is answered on its response topic: one
refused, or unreadable so its token is unknown, is answered on the box's own
``cmd/reply``, so a sender without the token cannot aim the box's messages. A
box that wants a token and has none (``command_auth = "token"``, no
``command_token``) cannot tell any sender apart, so it answers everything on its
own ``cmd/reply``.

The client id is the device id and the session persistent (``clean_start``
false with a session expiry), so commands sent while the box was offline are
delivered when it returns. One supervisor thread connects, runs paho's loop
until the connection drops, and reconnects with capped exponential backoff and
jitter. The audio loop never waits on any of this: it only writes outbox rows.
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .outbox import Outbox

log = logging.getLogger("edge-recorder.mqtt")

CONNECT_TIMEOUT = 5.0
RECONNECT_FIRST = 1.0
RECONNECT_MAX = 60.0
IN_FLIGHT = 100
#: How long an acknowledgement may precede the recording of its message id (a race of microseconds).
EARLY_ACK_SECONDS = 0.5
#: The deepest nesting of JSON arrays and objects a command may have (real commands need 3).
MAX_JSON_DEPTH = 16
#: The answers' ``code`` when a command was refused for who sent it (a missing or wrong token, or no token
#: configured for a command that records or deletes): such answers go only to the box's own ``cmd/reply``.
REFUSED = ("unauthorised", "token_required")


def json_depth(payload: bytes, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep arrays and objects nest in ``payload`` (strings skipped), counting no further than ``limit + 1``.

    >>> json_depth(b'{"op": "list", "x": [1, [2]]}'), json_depth(b'"[[[["'), json_depth(b"[" * 5000)
    (3, 0, 17)
    """
    depth = deepest = 0
    in_string = escaped = False
    for byte in payload:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


@dataclass(frozen=True)
class BrokerSettings:
    host: str
    port: int
    tls: bool = False
    username: str = ""
    password: str = ""
    ca_file: str = ""
    client_cert: str = ""
    client_key: str = ""
    keepalive: int = 30
    session_expiry: int = 7 * 24 * 3600

    @classmethod
    def from_url(cls, url: str, **extra: Any) -> BrokerSettings:
        """``mqtt://host[:1883]`` or ``mqtts://host[:8883]``.

        >>> BrokerSettings.from_url("mqtts://broker.example").port
        8883
        """
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"{url!r}: expected mqtt://host[:port] or mqtts://host[:port]")
        tls = parts.scheme == "mqtts"
        return cls(parts.hostname, parts.port or (8883 if tls else 1883), tls, **extra)


class Link:
    """A connected box: ``start()``, then ``wake()`` when the outbox has new events."""

    def __init__(
        self,
        settings: BrokerSettings,
        device_id: str,
        prefix: str,
        outbox: Outbox,
        *,
        snapshot: Callable[[], dict[str, Any]],
        commands: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        heartbeat: float = 60.0,
        max_command_bytes: int = 64 * 1024,
        extra_subscriptions: list[tuple[str, Callable[[mqtt.MQTTMessage], bool]]] | None = None,
        on_connected: Callable[[Link], None] | None = None,
        token_required: bool = False,
        anonymous: bool = False,
    ) -> None:
        self.settings = settings
        self.device_id = device_id
        self.base = f"{prefix}/{device_id}"
        self.outbox = outbox
        self.snapshot = snapshot
        self.commands = commands
        self.heartbeat = heartbeat
        self.max_command_bytes = max_command_bytes
        self.extra = extra_subscriptions if extra_subscriptions is not None else []
        self.on_connected = on_connected
        self.token_required = token_required
        # No sender can be told apart (token mode, no token set): every answer goes to the box's own cmd/reply.
        self.anonymous = anonymous
        self.connected = threading.Event()
        self.last_error: str | None = None
        self.published = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: dict[int, int] = {}  # mid -> outbox seq
        self._early: dict[int, float] = {}  # mids acknowledged before they were recorded, and when
        self._sent: set[int] = set()  # outbox seqs published on this connection
        self._acked: list[int] = []
        self._commands = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mqtt-cmd")
        self.client = self._client()
        self._threads = [
            threading.Thread(target=self._supervise, name="mqtt", daemon=True),
            threading.Thread(target=self._pump, name="mqtt-events", daemon=True),
        ]

    # -- topics ------------------------------------------------------------------------------
    def topic(self, leaf: str) -> str:
        return f"{self.base}/{leaf}"

    # -- lifecycle -----------------------------------------------------------------------------
    def _client(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.device_id,
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=False,
        )
        client.connect_timeout = CONNECT_TIMEOUT
        client.max_inflight_messages_set(IN_FLIGHT)
        client.will_set(self.topic("status"), "offline", qos=1, retain=True)
        if s.username:
            client.username_pw_set(s.username, s.password or None)
        if s.tls:
            client.tls_set(
                ca_certs=s.ca_file or None,
                certfile=s.client_cert or None,
                keyfile=s.client_key or None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Say offline (gracefully, so the will is not needed) and disconnect."""
        self._stop.set()
        self._wake.set()
        if self.connected.is_set():
            try:
                self.client.publish(self.topic("status"), "offline", qos=1, retain=True).wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:  # not connected after all
                log.debug("offline not published: %s", exc)
        self.client.disconnect()
        for thread in self._threads:
            thread.join(timeout=timeout)
        self._commands.shutdown(wait=False, cancel_futures=True)

    def wake(self) -> None:
        """New events are in the outbox."""
        self._wake.set()

    def _supervise(self) -> None:
        attempt = 0
        s = self.settings
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = s.session_expiry
        while not self._stop.is_set():
            try:
                self.client.connect(s.host, s.port, keepalive=s.keepalive, clean_start=False, properties=props)
            except (OSError, ssl.SSLError, ValueError) as exc:
                self._failed(f"cannot connect to {s.host}:{s.port}: {exc}")
                attempt = self._wait(attempt)
                continue
            self.client.loop_forever()  # returns when the connection drops
            if self.connected.is_set():
                attempt = 0
            self.connected.clear()
            if not self._stop.is_set():
                attempt = self._wait(attempt)

    def _wait(self, attempt: int) -> int:
        delay = min(RECONNECT_MAX, RECONNECT_FIRST * 2**attempt) * (0.5 + random.random() / 2)
        self._stop.wait(delay)
        return attempt + 1

    def _failed(self, text: str) -> None:
        if text != self.last_error:
            log.warning("%s", text)
        self.last_error = text

    # -- paho callbacks (paho's thread) -----------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._failed(f"broker refused the connection: {reason_code}")
            return
        self.last_error = None
        with self._lock:
            self._in_flight.clear()
            self._sent.clear()
            self._early.clear()
        # Subscribed first: the broker takes a connection's packets in order, so whoever sees "online" can
        # command the box at once, rather than into a subscription that is not in place yet.
        client.subscribe(self.topic("cmd"), qos=1)
        for topic, _ in self.extra:
            client.subscribe(topic, qos=1)
        client.publish(self.topic("status"), "online", qos=1, retain=True)
        self.connected.set()
        log.info("connected to %s:%d as %s", self.settings.host, self.settings.port, self.device_id)
        self.publish_state()
        if self.on_connected is not None:
            self.on_connected(self)
        self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            self._failed(f"disconnected from the broker: {reason_code}")

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            seq = self._in_flight.pop(mid, None)
            if seq is not None:
                self._acked.append(seq)
            else:  # the PUBACK beat _publish_due to recording the mid (or was for a state/reply publish)
                self._early[mid] = time.monotonic()
        if seq is not None:
            self._wake.set()

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        # paho's network thread: an exception here would end it, and with it every command and event
        try:
            if message.topic == self.topic("cmd"):
                self._command(message)
                return
            for _, handler in self.extra:
                if handler(message):
                    return
        except Exception:
            log.exception("message on %s not handled", message.topic)

    # -- events --------------------------------------------------------------------------------
    def _pump(self) -> None:
        """Publish due outbox events in order; remove them as their PUBACKs come in."""
        last_state = 0.0
        while not self._stop.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            with self._lock:
                acked, self._acked = self._acked, []
                stale = time.monotonic() - EARLY_ACK_SECONDS
                self._early = {mid: at for mid, at in self._early.items() if at > stale}
            if acked:
                self.outbox.delivered(acked)
                with self._lock:
                    self._sent.difference_update(acked)
                self.published += len(acked)
            if not self.connected.is_set():
                continue
            self._publish_due()
            if time.monotonic() - last_state >= self.heartbeat:
                last_state = time.monotonic()
                self.publish_state()

    def _publish_due(self) -> None:
        with self._lock:
            room = IN_FLIGHT - len(self._in_flight)
            sent = set(self._sent)
        if room <= 0:
            return
        for entry in self.outbox.due("event", limit=room + len(sent)):
            if entry.seq in sent:
                continue
            info = self.client.publish(
                self.topic("events"), json.dumps(entry.payload), qos=1, properties=_properties(CLOUDEVENTS)
            )
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return  # disconnected meanwhile: the rows stay for the next connection
            with self._lock:
                self._sent.add(entry.seq)
                early = self._early.pop(info.mid, None)
                # Only an acknowledgement from the last moments can be this message's: an older
                # one belonged to a state or reply publish whose id has since been reused.
                if early is not None and time.monotonic() - early < EARLY_ACK_SECONDS:
                    self._acked.append(entry.seq)
                else:
                    self._in_flight[info.mid] = entry.seq
            room -= 1
            if room <= 0:
                return

    def publish_state(self) -> None:
        if not self.connected.is_set():
            return
        try:
            state = self.snapshot()
        except Exception:  # the snapshot is the box's; never let it kill the link
            log.exception("state snapshot failed")
            return
        self.client.publish(
            self.topic("state"), json.dumps(state, default=str), qos=1, retain=True, properties=_properties(JSON)
        )

    # -- commands ----------------------------------------------------------------------------------
    def _command(self, message: mqtt.MQTTMessage) -> None:
        props = getattr(message, "properties", None)
        asked = getattr(props, "ResponseTopic", None)
        correlation = getattr(props, "CorrelationData", None)
        own = self.topic("cmd/reply")
        reply_to = asked if asked and self.reply_topic_allowed(asked) else own
        if asked and reply_to != asked:
            log.warning(
                "command reply topic %r refused (a wildcard, a $ topic or another box's); replying on %s", asked, own
            )
        unread = own if self.token_required else reply_to  # who sent it is unknown until it is read
        size = len(message.payload)
        if size > self.max_command_bytes:
            self._reply(
                unread, correlation, _error(f"command of {size} bytes is over the {self.max_command_bytes}-byte limit")
            )
            return
        if json_depth(message.payload) > MAX_JSON_DEPTH:
            self._reply(unread, correlation, _error(f"a command nests JSON at most {MAX_JSON_DEPTH} deep"))
            return
        try:
            request = json.loads(message.payload)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            self._reply(unread, correlation, _error(f"not JSON: {exc}"))
            return
        if not isinstance(request, dict):
            self._reply(unread, correlation, _error('a command is a JSON object with an "op"'))
            return
        try:  # "\ud800" parses, but is no text: it would fail later, in the catalog or in a callback
            json.dumps(request, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            self._reply(unread, correlation, _error("not JSON text: a string holds a lone surrogate (\\ud800-\\udfff)"))
            return
        if self.commands is None:
            self._reply(unread, correlation, _error("this box takes no commands"))
            return

        def run() -> None:
            try:
                answer = self.commands(request)
            except Exception as exc:  # the handler names its own errors; anything else is ours
                log.exception("command %r failed", request.get("op"))
                answer = _error(f"internal error: {type(exc).__name__}")
            if "request_id" in request and isinstance(request["request_id"], str | int):
                answer["request_id"] = request["request_id"]
            refused = answer.get("code") in REFUSED
            self._reply(own if refused or self.anonymous else reply_to, correlation, answer)

        self._commands.submit(run)

    def reply_topic_allowed(self, topic: str) -> bool:
        """Whether a command's MQTT 5 response topic may be published to (see the module's docstring)."""
        if not topic or len(topic.encode()) > 65535 or any(c in topic for c in "+#\0") or topic.startswith("$"):
            return False
        prefix = self.base.rsplit("/", 1)[0]
        own = self.topic("cmd/reply")
        if topic == own or topic.startswith(own + "/"):
            return True
        return not (topic == prefix or topic.startswith(prefix + "/"))

    def _reply(self, topic: str, correlation: bytes | None, answer: dict[str, Any]) -> None:
        props = _properties(JSON)
        if correlation is not None:
            props.CorrelationData = correlation
        try:
            self.client.publish(topic, json.dumps(answer, default=str), qos=1, properties=props)
        except (ValueError, TypeError) as exc:  # a topic paho refuses; the answer is logged, not lost silently
            log.warning("command reply to %r not sent: %s", topic, exc)


#: Content types (MQTT 5): events are structured-mode CloudEvents (the CloudEvents MQTT binding), the rest JSON.
CLOUDEVENTS = "application/cloudevents+json"
JSON = "application/json"


def _properties(content_type: str) -> Properties:
    """PUBLISH properties saying what the payload is: its content type, and UTF-8 text (payload format 1)."""
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = content_type
    props.PayloadFormatIndicator = 1
    return props


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}
