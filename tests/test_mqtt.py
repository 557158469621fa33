"""The box on a real Mosquitto broker: status, state, events through the outbox, and commands."""

from __future__ import annotations

import json
import queue
import signal
import time
import uuid

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .broker import Broker, request_reply
from .daemon_run import Box, counter_signal, events

RATE = 8000
BASE = "edge-recorder/test-box"


class Central:
    """A central server's MQTT client: collects what the box publishes, sends commands."""

    def __init__(
        self,
        broker: Broker,
        *,
        client_id: str | None = None,
        persistent: bool = False,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
    ) -> None:
        self.token = token  # [mqtt] command_token, added to every command sent with command()
        self.messages: queue.Queue[tuple[str, bytes, object]] = queue.Queue()
        self.log: list[tuple[str, bytes]] = []
        self.properties: list[tuple[str, object]] = []  # each message's MQTT 5 properties, as paho read them
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"central-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.on_message = self._message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{BASE}/#", qos=1)
        if username is not None:
            self.client.username_pw_set(username, password)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600 if persistent else 0
        self.client.connect(broker.host, broker.port, clean_start=not persistent, properties=props)
        self.client.loop_start()
        self.connected_at = time.monotonic()

    def _message(self, client, userdata, message) -> None:
        self.log.append((message.topic, message.payload))
        self.properties.append((message.topic, message.properties))
        self.messages.put((message.topic, message.payload, message.properties))

    def events(self) -> list[dict]:
        return [json.loads(p) for t, p in self.log if t == f"{BASE}/events"]

    def wait_for(self, predicate, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                topic, payload, props = self.messages.get(timeout=0.1)
            except queue.Empty:
                continue
            if predicate(topic, payload):
                return topic, payload, props
        raise AssertionError(f"nothing matched in {timeout} s; saw {[t for t, _ in self.log][-20:]}")

    def command(self, request: dict | bytes, timeout: float = 10.0) -> dict:
        if self.token is not None and isinstance(request, dict):
            request = {**request, "token": self.token}
        payload = request if isinstance(request, bytes) else json.dumps(request)
        return json.loads(request_reply(self.client, f"{BASE}/cmd", payload, b"corr-42", timeout).payload)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def central(broker):
    c = Central(broker)
    yield c
    c.close()


def _box(tmp_path, broker: Broker, seconds: float, **sim) -> Box:
    return Box.make(
        tmp_path,
        np.resize(counter_signal(min(seconds, 8.0)), int(seconds * RATE)),  # a counter that wraps every 8 s
        RATE,
        # The broker is the boundary here (no ACL in these tests); test_attacks has the token's default.
        mqtt={"url": broker.url, "heartbeat": 1.0, "command_auth": "broker"},
        sim=sim,
    )


def test_events_status_and_state_reach_a_subscriber(tmp_path, broker, central):
    box = _box(tmp_path, broker, 4.0, scenario="1=button, 3=button")
    result = box.run()
    assert result.code == 0, result.stderr
    central.wait_for(lambda t, p: t == f"{BASE}/status" and p == b"offline")
    got = [e["type"] for e in central.events()]
    local = [e["type"] for e in result.events]
    assert got == local  # every event, in order, once
    assert "recording.started" in got and "recording.finished" in got
    finished = next(e for e in central.events() if e["type"] == "recording.finished")
    assert finished["data"]["sha256"] == box.rows()[0]["sha256"]
    states = [json.loads(p) for t, p in central.log if t == f"{BASE}/state"]
    assert states and {"state", "input_level", "free_storage_mb", "upload_backlog", "firmware_version"} <= set(
        states[-1]
    )
    statuses = [p for t, p in central.log if t == f"{BASE}/status"]
    assert statuses[0] == b"online" and statuses[-1] == b"offline"
    # MQTT 5 says what each payload is: structured-mode CloudEvents (the CloudEvents MQTT binding), JSON
    kinds = {(t, p.ContentType, p.PayloadFormatIndicator) for t, p in central.properties if t != f"{BASE}/status"}
    assert kinds == {
        (f"{BASE}/events", "application/cloudevents+json", 1),
        (f"{BASE}/state", "application/json", 1),
    }


def test_commands_start_stop_and_errors(tmp_path, broker, central):
    box = _box(tmp_path, broker, 30.0, pace="realtime")
    proc = box.start()
    try:
        central.wait_for(lambda t, p: t == f"{BASE}/status" and p == b"online")
        started = central.command({"op": "start", "options": {"name": "monitor"}, "request_id": "r1"})
        assert started["ok"] and started["request_id"] == "r1"
        assert started["recording"]["source"] == "mqtt" and started["recording"]["name"] == "monitor"
        assert (
            central.command({"op": "pause", "target": "monitor", "pause_behavior": "skip"})["recording"]["status"]
            == "paused"
        )
        bad = [
            (b"{not json", "not JSON"),
            (b"[1, 2]", "JSON object"),
            ({"op": "explode"}, "op 'explode' is not a command"),
            ({"op": "start", "options": {"format": "ogg"}}, "format: 'ogg' is not valid"),
            ({"op": "stop", "target": "nobody"}, "no active recording has the name or id 'nobody'"),
            ({"op": "get", "id": "RE00"}, "no recording 'RE00'"),
            ({"op": "list", "limit": 100000}, "limit"),
            ({"op": "stop", "colour": "red"}, "unknown field 'colour'"),
            (b"x" * 70000, "over the 65536-byte limit"),
        ]
        for request, message in bad:
            answer = central.command(request)
            assert answer["ok"] is False and message in answer["error"], (request, answer)
        clash = central.command({"op": "pause", "target": "monitor"})  # says which state and trigger clashed
        assert (clash["ok"], clash["state"], clash["trigger"], clash["recording"]) == (
            False,
            "paused",
            "pause",
            "monitor",
        )
        stopped = central.command({"op": "stop", "target": "monitor"})
        assert stopped["recording"]["end_reason"] == "stop"
        listed = central.command({"op": "list"})
        assert [r["id"] for r in listed["recordings"]] == [started["recording"]["id"]]
        fetched = central.command({"op": "get", "id": started["recording"]["id"]})
        assert fetched["recording"]["status"] == "completed"
        deleted = central.command({"op": "delete", "id": started["recording"]["id"]})
        assert deleted["recording"]["status"] == "deleted"
        central.wait_for(lambda t, p: t == f"{BASE}/events" and b"recording.deleted" in p)
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
    assert proc.returncode == 0


def test_a_broker_outage_loses_no_event_and_keeps_the_order(tmp_path):
    broker = Broker(tmp_path / "broker", persistence=True).start()
    central = Central(broker, client_id="central-outage", persistent=True)
    try:
        box = _box(
            tmp_path,
            broker,
            40.0,
            pace="realtime",
            scenario="0.5=button, 1.5=button, 2.5=button, 3.5=button, 4.5=button, 5.5=button",
        )
        proc = box.start()
        central.wait_for(lambda t, p: t == f"{BASE}/events" and b"recording.started" in p)
        broker.stop()  # down while two more recordings start and finish
        time.sleep(6.0)
        broker.start()
        # the box reconnects with its backoff (at most 8 s at this point) and sends what waited
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            if sum(e["type"] == "recording.finished" for e in central.events()) == 3:
                break
            time.sleep(0.2)
        proc.terminate()
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        local = [e["id"] for e in events(out)]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not set(local) <= {e["id"] for e in central.events()}:
            time.sleep(0.1)
        received = [e["id"] for e in central.events()]
        assert set(local) <= set(received), f"events were lost in the outage: {err[-3000:]}"
        first = [received.index(i) for i in local]
        assert first == sorted(first), "order changed"
        recordings = [e["data"]["id"] for e in central.events() if e["type"] == "recording.finished"]
        assert len(set(recordings)) == 3
    finally:
        central.close()
        broker.stop()


def test_events_queued_while_the_broker_was_unreachable_go_out_after_a_restart(tmp_path):
    broker = Broker(tmp_path / "broker")  # not started yet: the box cannot reach it
    box = _box(tmp_path, broker, 3.0, scenario="1=button, 2=button")
    first = box.run()
    assert first.code == 0, first.stderr
    waiting = [e["id"] for e in first.events]
    broker.start()
    central = Central(broker)
    try:
        silence = tmp_path / "short.wav"
        import numpy as np
        import soundfile as sf

        sf.write(silence, np.zeros(800, np.int16), RATE, subtype="PCM_16")
        box.sections["sim"] = {"enabled": True, "audio": str(silence), "pace": "fast"}
        second = box.run()
        assert second.code == 0, second.stderr
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not set(waiting) <= {e["id"] for e in central.events()}:
            time.sleep(0.1)
        got = [e["id"] for e in central.events()]
        assert [i for i in got if i in waiting] == waiting
    finally:
        central.close()
        broker.stop()


def test_a_command_sent_while_the_box_was_offline_is_answered_when_it_returns(tmp_path, broker, central):
    box = _box(tmp_path, broker, 1.0)
    assert box.run().code == 0  # the box's persistent session now exists on the broker
    central.client.publish(f"{BASE}/cmd", json.dumps({"op": "list", "request_id": "while-offline"}), qos=1)
    time.sleep(0.3)
    box.sections["sim"]["pace"] = "realtime"
    assert box.run().code == 0
    _, payload, _ = central.wait_for(lambda t, p: t == f"{BASE}/cmd/reply" and b"while-offline" in p)
    assert json.loads(payload)["ok"] is True


def test_the_broker_acl_keeps_a_device_to_its_own_topics(tmp_path):
    # The ACL the README recommends: each device writes only under its own id.
    broker = Broker(
        tmp_path / "broker",
        users={"box-a": "secret-a", "central": "secret-c"},
        acl="user central\ntopic readwrite #\n\npattern readwrite edge-recorder/%u/#\n",
    ).start()
    try:
        seen: queue.Queue = queue.Queue()
        watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="central", protocol=mqtt.MQTTv5)
        watcher.username_pw_set("central", "secret-c")
        watcher.on_message = lambda c, u, m: seen.put(m.topic)
        watcher.connect(broker.host, broker.port)
        watcher.subscribe("edge-recorder/#", qos=1)
        watcher.loop_start()
        device = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="box-a", protocol=mqtt.MQTTv5)
        device.username_pw_set("box-a", "secret-a")
        acks: dict[int, object] = {}
        device.on_publish = lambda c, u, mid, rc, p: acks.__setitem__(mid, rc)
        device.connect(broker.host, broker.port)
        device.loop_start()
        time.sleep(0.3)
        own = device.publish("edge-recorder/box-a/events", b"{}", qos=1)
        other = device.publish("edge-recorder/box-b/events", b"{}", qos=1)
        own.wait_for_publish(5)
        other.wait_for_publish(5)
        time.sleep(0.5)
        topics = []
        while not seen.empty():
            topics.append(seen.get())
        assert "edge-recorder/box-a/events" in topics
        assert "edge-recorder/box-b/events" not in topics
        assert acks[other.mid].is_failure  # MQTT 5: "Not authorized" in the PUBACK
        device.loop_stop()
        watcher.loop_stop()
    finally:
        broker.stop()


def test_a_box_that_dies_shows_offline_through_its_last_will(tmp_path, broker, central):
    box = _box(tmp_path, broker, 30.0, pace="realtime")
    box.sections["mqtt"]["keepalive"] = 5
    proc = box.start()
    try:
        central.wait_for(lambda t, p: t == f"{BASE}/status" and p == b"online")
        proc.kill()  # no goodbye: the broker notices the silence and publishes the will
        proc.communicate(timeout=10)
        central.wait_for(lambda t, p: t == f"{BASE}/status" and p == b"offline", timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_tls_with_the_configured_ca_and_credentials(tmp_path):
    broker = Broker(tmp_path / "broker", tls=True, users={"test-box": "pw", "central": "pw"}).start()
    try:
        box = Box.make(
            tmp_path / "box",
            counter_signal(2.0),
            RATE,
            mqtt={"url": broker.url, "ca_file": str(broker.ca_file), "username": "test-box", "password": "pw"},
            sim={"pace": "realtime"},
        )
        result = box.run()
        assert result.code == 0, result.stderr
        assert f"connected to 127.0.0.1:{broker.port}" in result.stderr
        wrong = Box.make(
            tmp_path / "wrong", counter_signal(2.0), RATE, mqtt={"url": broker.url}, sim={"pace": "realtime"}
        )  # the system CAs
        result = wrong.run()
        assert result.code == 0  # the box records anyway
        assert "certificate verify failed" in result.stderr and "connected to" not in result.stderr
    finally:
        broker.stop()


def test_a_start_command_may_carry_a_vendor_document(tmp_path, broker, central):
    box = _box(tmp_path, broker, 30.0, pace="realtime")
    proc = box.start()
    try:
        central.wait_for(lambda t, p: t == f"{BASE}/status" and p == b"online")
        twiml = '<Response><Start><Recording name="desk" channels="mono" transcribe="true"/></Start></Response>'
        started = central.command({"op": "start", "twiml": twiml})
        assert started["ok"], started
        assert started["recording"]["name"] == "desk"
        assert [u["field"] for u in started["unsupported"]] == ["transcribe"]
        stop = '<Response><Stop><Recording name="desk"/></Stop></Response>'
        stopped = central.command({"op": "start", "twiml": stop})
        assert stopped["ok"] and stopped["recording"]["end_reason"] == "stop"
        ncco = central.command({"op": "start", "ncco": [{"action": "record", "format": "ogg", "beepStart": True}]})
        assert ncco["ok"] and ncco["recording"]["format"] == "wav"  # the configured default: ogg cannot be honoured
        assert [u["field"] for u in ncco["unsupported"]] == ["format"]
        both = central.command({"op": "start", "ncco": [], "options": {}})
        assert both["ok"] is False
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def test_no_message_on_the_command_topic_can_silence_the_box_or_aim_its_replies(tmp_path, broker, central):
    # As an attacker who may publish on the broker: wildcard and foreign response topics, payloads nested
    # 5000 deep, not JSON, over the size limit. The box answers each on its own cmd/reply, never on the
    # topic asked for when that is a wildcard or another box's, and still takes the next real command.
    box = _box(tmp_path, broker, 30.0, pace="realtime")
    proc = box.start()
    try:
        central.wait_for(lambda t, p: t == f"{BASE}/status" and p == b"online")
        central.client.subscribe("edge-recorder/other-box/#", qos=1)
        central.client.subscribe("x/#", qos=1)
        hostile = [
            (b"[" * 5000, "x/#"),
            (b"\xff\xfe not json", "x/#"),
            (b"{" * 20 + b"}" * 20, "edge-recorder/other-box/cmd"),
            (b"x" * 70000, "x/+"),
            (json.dumps({"op": "list"}).encode(), "edge-recorder/other-box/cmd"),
            (json.dumps({"op": "list"}).encode(), "$SYS/broker"),
            (b'{"op": "start", "options": {"status_callback": "http://127.0.0.1/\\ud800"}}', "x/#"),
        ]
        for payload, reply_to in hostile:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = reply_to
            props.CorrelationData = b"attack"
            central.client.publish(f"{BASE}/cmd", payload, qos=1, properties=props)
        answers = []
        deadline = time.monotonic() + 10
        while len(answers) < len(hostile) and time.monotonic() < deadline:
            answers = [json.loads(p) for t, p in central.log if t == f"{BASE}/cmd/reply"]
            time.sleep(0.05)
        assert len(answers) == len(hostile), answers
        errors = [a.get("error", "") for a in answers]
        assert any("nests JSON at most 16 deep" in e for e in errors)
        assert any("not JSON" in e for e in errors) and any("over the 65536-byte limit" in e for e in errors)
        assert any("lone surrogate" in e for e in errors)
        assert [a["ok"] for a in answers].count(True) == 2  # the two lists, answered on the box's own topic
        assert not [t for t, _ in central.log if t.startswith(("edge-recorder/other-box/", "x/"))]
        assert central.command({"op": "list"})["ok"]  # the command path is alive
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err


def test_with_a_command_token_a_sender_without_it_cannot_aim_the_replies(tmp_path, broker, central):
    token = "k" * 8 + uuid.uuid4().hex + uuid.uuid4().hex
    box = Box.make(
        tmp_path,
        np.resize(counter_signal(8.0), 30 * RATE),
        RATE,
        mqtt={"url": broker.url, "heartbeat": 1.0, "command_token": token},
        sim={"pace": "realtime"},
    )
    proc = box.start()
    try:
        central.wait_for(lambda t, p: t == f"{BASE}/status" and p == b"online")
        central.client.subscribe("somewhere/else", qos=1)
        for payload in (b"not json", json.dumps({"op": "list", "token": "wrong"}).encode()):
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = "somewhere/else"
            props.CorrelationData = b"x"
            central.client.publish(f"{BASE}/cmd", payload, qos=1, properties=props)
        deadline = time.monotonic() + 10
        while len([t for t, _ in central.log if t == f"{BASE}/cmd/reply"]) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        answers = [json.loads(p) for t, p in central.log if t == f"{BASE}/cmd/reply"]
        assert [a["ok"] for a in answers] == [False, False] and answers[1]["code"] == "unauthorised"
        assert central.command({"op": "list", "token": token})["ok"]  # with the token, on its own topic
        assert not [t for t, _ in central.log if t == "somewhere/else"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
