"""docs/mqtt.md against the real box: every example has the shape of what the box really sends.

One simulated box runs against a real Mosquitto, with ``edge-recorder receive``
taking its files over MQTT and an HTTP server that refuses uploads. A central
client subscribed to everything (MQTT 5, "retain as published", QoS 2, so each
message arrives with the QoS and retain flag it was published with) sends the
documented command requests and collects what comes back. The box plays its
audio in real time, so what must happen at a point of the audio (a recording
that a capture outage ends) is scripted in audio time before any command is
sent, and the audio lasts far longer than the commands take; the box is stopped
with SIGTERM when they are done. Then:

- each ```json example in the document must have the same keys, at every level,
  and the same JSON types as a real message of its kind (a ``null`` on either
  side matches any type: a value that is absent now may be present later);
- every real event, state, file-transfer and discovery message must match a
  documented example of its kind, so a new event type or field fails here;
- documented error replies must be the box's words exactly;
- every topic the box published must be in the topic table with its QoS and
  retain flag.

Examples are found by the heading above them: its first code span names the
event type (`recording.started`), the command op (`start`) or the topic
(`<prefix>/<device_id>/state`); a "Request" or "Reply" line just before a
block says which half of a command it shows.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.subscribeoptions import SubscribeOptions

from firmware.daemon.loop import SILENCE_DBFS
from firmware.frontends.mqtt_commands import OPS
from firmware.media.synth import dtmf_tone, mix

from .broker import Broker, request_reply
from .daemon_run import ROOT, Box
from .http_servers import FlakyHttpServer
from .signals import noise, to_int16
from .test_mqtt_files import Receiver

DOC = ROOT / "docs" / "mqtt.md"
RATE = 8000
DEVICE = "test-box"
PREFIX = "edge-recorder"
HA_PREFIX = "homeassistant"
RECEIVER = "receiver-1"
BASE = f"{PREFIX}/{DEVICE}"
#: The audio: quiet line noise and a DTMF key; the record button starts a recording that a capture outage,
#: long enough to end it with an error, ends. All of that is over before the first command is sent; the
#: commands then have the rest of the audio (they take a few seconds), and the box is stopped with SIGTERM.
SECONDS = 120.0
KEY_AT = 0.5
BUTTON_AT = 1.0
OUTAGE_AT, OUTAGE_SECONDS = 3.0, 2.0
#: The documented commands are sent in this order (each one's example must suit the box's state then).
SEQUENCE = ("start", "pause", "resume", "stop", "button", "list", "get", "delete")
#: What only a box installed in slots does, which the checkout this test runs cannot: an update. Its examples
#: are checked against a box updated for real, in tests/test_update_mqtt.py.
INSTALLED_ONLY = ("update", "device.update")
ERRORS_HEADING = "Error replies"


# -- the document ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    name: str  # the first code span of the heading above the block (else the heading's text)
    label: str | None  # "request" or "reply" when the line before the block says so
    value: Any
    line: int


def examples(text: str) -> list[Example]:
    """Every ```json block of a Markdown text, named by its heading."""
    out: list[Example] = []
    lines = text.splitlines()
    heading, previous, i = "", "", 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            end = lines.index("```", i + 1)
            if line == "```json":
                label = re.match(r"(Request|Reply)\b", previous)
                try:
                    value = json.loads("\n".join(lines[i + 1 : end]))
                except ValueError as exc:
                    raise AssertionError(f"docs/mqtt.md line {i + 1}: the example is not JSON: {exc}") from None
                out.append(Example(heading, label.group(1).lower() if label else None, value, i + 1))
            i, previous = end + 1, ""
            continue
        if line.startswith("#"):
            span = re.search(r"`([^`]+)`", line)
            heading, previous = (span.group(1) if span else line.lstrip("#").strip()), ""
        elif line.strip():
            previous = line.strip()
        i += 1
    return out


@dataclass(frozen=True)
class TopicRow:
    pattern: str
    qos: int
    retained: bool

    def matches(self, topic: str) -> bool:
        return _topic_regex(self.pattern).fullmatch(topic) is not None


def topic_table(text: str) -> list[TopicRow]:
    """Rows of the topic table: | `topic` | from | QoS | retained | payload |."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        span = re.fullmatch(r"`(<(?:ha_)?prefix>/[^`]+)`", cells[0]) if len(cells) >= 4 else None
        if span:
            rows.append(TopicRow(span.group(1), int(cells[2]), cells[3] == "yes"))
    return rows


def _topic_regex(pattern: str) -> re.Pattern:
    """``<prefix>``, ``<device_id>`` and ``<ha_prefix>`` are the test box's; any other ``<...>`` is one level."""
    fixed = {"<prefix>": PREFIX, "<device_id>": DEVICE, "<ha_prefix>": HA_PREFIX}
    levels = []
    for level in pattern.split("/"):
        if level in fixed:
            levels.append(re.escape(fixed[level]))
        elif re.fullmatch(r"<\w+>", level):
            levels.append("[^/]+")
        else:
            levels.append(re.escape(level))
    return re.compile("/".join(levels))


# -- shapes ----------------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else "string"


def differences(documented: Any, real: Any, path: str = "") -> list[str]:
    """How the documented value's shape differs from the real one's (empty: the same shape)."""
    here = path or "the message"
    if documented is None or real is None:
        return []
    if _kind(documented) != _kind(real):
        return [f"{here}: documented as {_kind(documented)}, sent as {_kind(real)}"]
    if isinstance(real, dict):
        out = []
        if real.keys() - documented.keys():
            out.append(f"{here}: {sorted(real.keys() - documented.keys())} sent but not documented")
        if documented.keys() - real.keys():
            out.append(f"{here}: {sorted(documented.keys() - real.keys())} documented but not sent")
        for key in documented.keys() & real.keys():
            out += differences(documented[key], real[key], f"{path}.{key}" if path else key)
        return out
    if isinstance(real, list) and documented and real:
        out = []
        for i, item in enumerate(documented):
            found = [differences(item, other, f"{path}[{i}]") for other in real]
            if all(found):
                out += min(found, key=len)
        return out
    return []


def closest(documented: Any, reals: list[Any]) -> list[str]:
    """Differences to the most similar real message; empty when one matches."""
    if not reals:
        return ["the box sent nothing of this kind"]
    return min((differences(documented, real) for real in reals), key=len)


# -- the box, a receiver, and a central client -------------------------------------------------------


@dataclass
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool

    def json(self) -> Any:
        return strict_json(self.payload)


def strict_json(payload: bytes | str) -> Any:
    """JSON as a central server in any language reads it: NaN and Infinity are not JSON."""

    def refuse(constant: str):
        raise AssertionError(f"{constant} is not JSON, in {payload[:300]!r}")

    return json.loads(payload, parse_constant=refuse)


class Central:
    """Subscribes to everything; sends commands with an MQTT 5 response topic and correlation data."""

    def __init__(self, broker: Broker) -> None:
        self.messages: list[Message] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="central", protocol=mqtt.MQTTv5)
        self.client.on_message = self._message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.subscribe("#", options=SubscribeOptions(qos=2, retainAsPublished=True))
        self.client.loop_start()
        assert subscribed.wait(10), "the broker did not take the subscription"

    def _message(self, client, userdata, message) -> None:
        with self.lock:
            self.messages.append(Message(message.topic, message.payload, message.qos, bool(message.retain)))

    def on(self, topic: str) -> list[Message]:
        with self.lock:
            return [m for m in self.messages if m.topic == topic]

    def events(self, kind: str | None = None) -> list[dict]:
        found = [m.json() for m in self.on(f"{BASE}/events")]
        return [e for e in found if kind is None or e["type"] == kind]

    def wait(self, what: str, ready, timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = ready()
            if result:
                return result
            time.sleep(0.05)
        raise AssertionError(f"{what} did not happen within {timeout:g} s")

    def command(self, request: dict) -> dict:
        try:
            message = request_reply(self.client, f"{BASE}/cmd", json.dumps(request), b"docs")
        except queue.Empty:
            raise AssertionError(f"no reply to {json.dumps(request)} within 10 s") from None
        return strict_json(message.payload)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class Observed:
    messages: list[Message]
    replies: dict[str, list[tuple[dict, dict]]] = field(default_factory=dict)
    errors: list[tuple[dict, dict]] = field(default_factory=list)
    plain_reply: dict | None = None

    def on(self, pattern: str) -> list[Message]:
        regex = _topic_regex(pattern)
        return [m for m in self.messages if regex.fullmatch(m.topic)]

    def json_on(self, pattern: str) -> list[Any]:
        return [m.json() for m in self.on(pattern)]

    def events(self) -> list[dict]:
        return self.json_on("<prefix>/<device_id>/events")


def _line() -> np.ndarray:
    line = to_int16(noise(SECONDS, RATE, -60))
    mix(line, dtmf_tone("#", RATE, seconds=0.1), int(KEY_AT * RATE))
    return line


@pytest.fixture(scope="module")
def documented() -> list[Example]:
    return examples(DOC.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def observed(tmp_path_factory, documented) -> Observed:
    """Run the box once: the documented commands, then what makes the other events and messages."""
    root = tmp_path_factory.mktemp("docs")
    broker = Broker(root / "broker").start()
    central = Central(broker)
    receiver = Receiver(broker, root / "store", RECEIVER)
    refusing = FlakyHttpServer(mode=403).start()
    box = Box.make(
        root / "box",
        _line(),
        RATE,
        device={"id": DEVICE},
        audio={"reconnect_grace": 0.5},
        mqtt={
            "url": broker.url,
            "prefix": PREFIX,
            "heartbeat": 1.0,
            "ha_discovery": True,
            "ha_prefix": HA_PREFIX,
            "command_auth": "broker",  # Home Assistant's button sends no token
        },
        upload={"destination": "mqtt"},
        destinations={"refusing": {"url": refusing.url + "/in/"}},
        sim={
            "pace": "realtime",
            "scenario": f"{BUTTON_AT}=button",
            "faults": f"{OUTAGE_AT}=disconnect:{OUTAGE_SECONDS}",
        },
    )
    log = root / "box.log"
    with log.open("w") as output:  # a file, not a pipe: the box must never block on its own output
        proc = subprocess.Popen(box.argv(), cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
    seen = Observed(central.messages)
    try:
        central.wait("the box going online", lambda: any(m.payload == b"online" for m in central.on(f"{BASE}/status")))
        # what the audio scripts: the outage ends the button's recording, and the capture comes back
        lost = central.wait(
            f"the capture outage at {OUTAGE_AT:g} s of audio ending the recording the button started at {BUTTON_AT:g} s",
            lambda: central.events("recording.error"),
            timeout=30,
        )
        assert [e["data"]["source"] for e in lost] == ["button"], f"recording.error not for the button's: {lost}"
        central.wait("the capture coming back", lambda: _device_state(central, "capture_back"))
        # The simulated line skipped the outage's audio and waits for the wall clock to catch up with it: only
        # then does audio flow again, which the documented recording needs (one with none ends absent).
        time.sleep(OUTAGE_SECONDS + 0.5)
        _documented_commands(central, documented, seen)
        _documented_errors(central, documented, seen)
        # a client without MQTT 5 response topics: the reply comes on cmd/reply
        central.client.publish(f"{BASE}/cmd", json.dumps({"op": "list", "limit": 1, "request_id": "plain"}), qos=1)
        plain = central.wait("a reply on cmd/reply", lambda: central.on(f"{BASE}/cmd/reply"))
        seen.plain_reply = plain[0].json()
        # what the documented commands do not make happen
        quiet = central.command({"op": "start", "options": {"name": "quiet", "initial_timeout": 1}})
        assert quiet["ok"], quiet
        central.wait("recording.no_input", lambda: central.events("recording.no_input"))
        refused = central.command({"op": "start", "options": {"name": "refused", "destination": "refusing"}})
        assert refused["ok"], refused
        assert central.command({"op": "stop", "target": "refused"})["ok"]
        central.wait("the failed upload's device.error", lambda: _upload_failed(central))
        assert proc.poll() is None, f"the box's {SECONDS:g} s of audio ran out before the commands were done"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, "the box did not stop cleanly on SIGTERM"
        central.wait("the box going offline", lambda: central.on(f"{BASE}/status")[-1].payload == b"offline")
        time.sleep(0.5)
    except AssertionError as exc:
        if proc.poll() is not None:
            exc = f"{exc}\n(the box has exited with {proc.returncode}: did its {SECONDS:g} s of audio run out?)"
        raise AssertionError(f"{exc}\nthe box's log ends:\n{log.read_text()[-4000:]}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        central.close()
        receiver.stop()
        refusing.stop()
        broker.stop()
    seen.messages = list(central.messages)
    return seen


def _device_state(central: Central, code: str) -> list[dict]:
    return [e for e in central.events("device.state") if e["data"]["code"] == code]


def _upload_failed(central: Central) -> list[dict]:
    return [e for e in central.events("device.error") if e["data"].get("code") == "upload_failed"]


def _documented_commands(central: Central, documented: list[Example], seen: Observed) -> None:
    """Send each documented request (with the id of the recording the start example made)."""
    recording_id = None
    for op in SEQUENCE:
        for request in [e.value for e in documented if e.name == op and e.label == "request"]:
            request = dict(request)
            if "id" in request:
                request["id"] = recording_id
            reply = central.command(request)
            assert reply.get("ok") is True, (request, reply)
            seen.replies.setdefault(op, []).append((request, reply))
            if op == "start":
                recording_id = reply["recording"]["id"]
                time.sleep(0.5)  # it hears some audio: one with none would end absent, with no file to upload
            if op == "stop":  # deleting it must wait for its upload, or the upload would fail for want of the file
                central.wait(
                    "recording.available",
                    lambda rid=recording_id: [
                        e for e in central.events("recording.available") if e["data"]["id"] == rid
                    ],
                )
            if op == "button":  # the press started a recording; a second press ends it
                assert central.command({"op": "button"})["ok"]


def _documented_errors(central: Central, documented: list[Example], seen: Observed) -> None:
    for request in [e for e in documented if e.name == ERRORS_HEADING and e.label == "request"]:
        seen.errors.append((request.value, central.command(request.value)))


# -- the checks ------------------------------------------------------------------------------------


def _is_event_type(name: str) -> bool:
    return re.fullmatch(r"[a-z_]+\.[a-z_]+", name) is not None


def _is_topic(name: str) -> bool:
    return name.startswith(("<prefix>/", "<ha_prefix>/"))


def _both_ways(kind: str, shown: list[Example], sent: list[Any]) -> list[str]:
    """Each example matches a real message, and each real message matches an example."""
    problems = []
    for example in shown:
        diff = closest(example.value, sent)
        if diff:
            problems.append(f"docs/mqtt.md line {example.line} ({kind}): " + "; ".join(diff))
    unmatched = {}
    for message in sent:
        found = [differences(example.value, message) for example in shown]
        if found and all(found):
            unmatched.setdefault(tuple(min(found, key=len)), message)
    for diff, message in unmatched.items():
        problems.append(f"a real {kind} matches no example: {'; '.join(diff)}\n  {json.dumps(message)[:600]}")
    return problems


def test_every_event_type_the_box_sends_is_documented(observed, documented):
    sent = {event["type"] for event in observed.events()}
    shown = {e.name for e in documented if _is_event_type(e.name)}
    assert sent, "the box sent no events"
    assert not sent - shown, f"event types the box sent without an example in docs/mqtt.md: {sorted(sent - shown)}"


def test_event_examples_have_the_keys_and_types_of_the_real_events(observed, documented):
    problems = []
    for kind in sorted({e.name for e in documented if _is_event_type(e.name)} - set(INSTALLED_ONLY)):
        shown = [e for e in documented if e.name == kind]
        problems += _both_ways(kind, shown, [e for e in observed.events() if e["type"] == kind])
    assert not problems, "\n".join(problems)


def test_state_file_and_discovery_examples_match_what_the_box_publishes(observed, documented):
    topics = sorted({e.name for e in documented if _is_topic(e.name)})
    for needed in ("<prefix>/<device_id>/state", "<prefix>/<device_id>/files/offer"):
        assert needed in topics, f"docs/mqtt.md shows no example for {needed}"
    problems = []
    for pattern in topics:
        shown = [e for e in documented if e.name == pattern]
        problems += _both_ways(pattern, shown, observed.json_on(pattern))
    assert not problems, "\n".join(problems)


def test_command_examples_are_answered_as_documented(observed, documented):
    assert set(SEQUENCE) | set(INSTALLED_ONLY) >= set(OPS), f"SEQUENCE must hold every command op: {OPS}"
    problems = []
    for op in SEQUENCE:
        requests = [e for e in documented if e.name == op and e.label == "request"]
        replies = [e for e in documented if e.name == op and e.label == "reply"]
        if not requests or len(requests) != len(replies):
            problems.append(f"{op}: docs/mqtt.md needs a request and a reply example ({len(requests)}, {len(replies)})")
            continue
        for example, (request, real) in zip(replies, observed.replies.get(op, []), strict=True):
            diff = differences(example.value, real)
            if diff:
                problems.append(
                    f"docs/mqtt.md line {example.line} ({op} reply to {json.dumps(request)}): {'; '.join(diff)}"
                )
    assert not problems, "\n".join(problems)


def test_error_examples_are_the_box_s_own_words(observed, documented):
    shown = [e for e in documented if e.name == ERRORS_HEADING]
    assert shown, f"docs/mqtt.md has no {ERRORS_HEADING!r} section"
    assert [e.label for e in shown] == ["request", "reply"] * (len(shown) // 2), "errors come as request, reply pairs"
    for example, (request, real) in zip(shown[1::2], observed.errors, strict=True):
        assert real == example.value, f"docs/mqtt.md line {example.line}: {json.dumps(request)} is answered {real}"


def test_every_topic_the_box_publishes_is_in_the_table_with_its_qos_and_retain_flag(observed):
    rows = topic_table(DOC.read_text(encoding="utf-8"))
    assert rows, "docs/mqtt.md has no topic table"
    problems = {}
    for message in observed.messages:
        if not message.topic.startswith((f"{PREFIX}/", f"{HA_PREFIX}/")):
            continue  # the central client's reply topics
        matching = [row for row in rows if row.matches(message.topic)]
        if len(matching) != 1:
            problems.setdefault(message.topic, f"{message.topic}: {len(matching)} rows of the topic table match")
        elif (message.qos, message.retain) != (matching[0].qos, matching[0].retained):
            problems.setdefault(
                matching[0].pattern,
                f"{matching[0].pattern}: documented QoS {matching[0].qos}, retained {matching[0].retained}; "
                f"published with QoS {message.qos}, retained {message.retain}",
            )
    assert not problems, "\n".join(problems.values())


def test_status_is_online_then_offline_and_a_plain_command_is_answered_on_cmd_reply(observed):
    assert [m.payload for m in observed.on("<prefix>/<device_id>/status")] == [b"online", b"offline"]
    assert observed.plain_reply is not None
    assert observed.plain_reply["ok"] is True and observed.plain_reply["request_id"] == "plain"


def test_the_input_level_row_says_how_digital_silence_is_reported():
    [row] = [line for line in DOC.read_text(encoding="utf-8").splitlines() if line.startswith("| `input_level` |")]
    assert f"`{SILENCE_DBFS}`" in row and f"quieter than {SILENCE_DBFS:g} dBFS" in row, row
