"""The box as an attacker on its LAN or its broker finds it: a real daemon (``edge-recorder run``), a real
Mosquitto with passwords and an ACL, real HTTP servers on loopback for the central store, an archive and the
attacker.

The site: the central server (broker user ``central``, which may use every box's topics) commands the box
with its ``[mqtt] command_token`` and the HTTP API token. Another device on the same broker (``intruder``)
has an ACL loose enough to publish on any box's ``cmd`` topic but holds no token. The box uploads to the
central store (``[upload]``, a bearer token) and to an archive (``[destinations.archive]``, HTTP Basic).
"""

from __future__ import annotations

import json
import re
import secrets
import signal
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .broker import Broker, free_port
from .daemon_run import ROOT, Box, counter_signal
from .http_servers import FlakyHttpServer
from .test_mqtt import BASE, Central

RATE = 8000
COMMAND_TOKEN = secrets.token_urlsafe(32)
API_TOKEN = secrets.token_urlsafe(32)
UPLOAD_TOKEN = secrets.token_urlsafe(32)
ARCHIVE = ("box", secrets.token_urlsafe(16))
#: The broker ACL docs/security.md recommends, and another device on the broker whose ACL is loose enough to
#: publish on every box's cmd topic.
RECOMMENDED_ACL = re.search(r"```\n( *user central\n.*?)```", (ROOT / "docs/security.md").read_text(), re.DOTALL)
ACL = """\
user intruder
topic write edge-recorder/+/cmd
topic readwrite intruder/#

""" + textwrap.dedent(RECOMMENDED_ACL.group(1) if RECOMMENDED_ACL else "")


@dataclass
class Site:
    root: Path
    broker: Broker
    central: Central
    intruder: Central
    store: FlakyHttpServer
    archive: FlakyHttpServer
    attacker: FlakyHttpServer
    api: requests.Session
    api_url: str
    proc: object

    def post(self, path: str, body: dict) -> requests.Response:
        return self.api.post(self.api_url + path, json=body, timeout=10)

    def record(self, destination: str) -> dict:
        """A short recording sent to ``destination`` (started and stopped by the central server); its row."""
        started = self.central.command({"op": "start", "options": {"destination": destination}})
        assert started["ok"], started
        time.sleep(0.5)
        stopped = self.central.command({"op": "stop", "target": started["recording"]["id"]})
        assert stopped["ok"], stopped
        return stopped["recording"]

    def available(self, recording_id: str, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.central.events():
                if event["type"] == "recording.available" and event["data"]["id"] == recording_id:
                    return event
            time.sleep(0.05)
        raise AssertionError(f"no recording.available for {recording_id}")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    assert RECOMMENDED_ACL, "docs/security.md shows the recommended broker ACL"
    root = tmp_path_factory.mktemp("site")
    broker = Broker(
        root / "broker",
        users={"central": "central-pw", "intruder": "intruder-pw", "test-box": "box-pw", "desk-2": "desk-2-pw"},
        acl=ACL,
    ).start()
    store = FlakyHttpServer(bearer_token=UPLOAD_TOKEN).start()
    archive = FlakyHttpServer(basic=ARCHIVE).start()
    attacker = FlakyHttpServer().start()
    port = free_port()
    box = Box.make(
        root / "box",
        np.resize(counter_signal(8.0), 120 * RATE),
        RATE,
        mqtt={"url": broker.url, "username": "test-box", "password": "box-pw", "command_token": COMMAND_TOKEN},
        http={"listen": f"127.0.0.1:{port}", "tokens": API_TOKEN},
        upload={"destination": store.url + "/calls/", "token": UPLOAD_TOKEN},
        destinations={"archive": {"url": archive.url + "/vault/", "username": ARCHIVE[0], "password": ARCHIVE[1]}},
        sim={"pace": "realtime"},
    )
    central = Central(broker, username="central", password="central-pw", token=COMMAND_TOKEN)
    intruder = Central(broker, username="intruder", password="intruder-pw")
    proc = box.start()
    api = requests.Session()
    api.trust_env = False
    api.headers["Authorization"] = f"Bearer {API_TOKEN}"
    s = Site(root, broker, central, intruder, store, archive, attacker, api, f"http://127.0.0.1:{port}", proc)
    try:
        central.wait_for(lambda t, p: t == f"{BASE}/status" and p == b"online")
        yield s
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        central.close()
        intruder.close()
        for server in (store, archive, attacker):
            server.stop()
        broker.stop()
    assert "Traceback" not in err, err[-3000:]
    # Whatever the tests asked of the box, the attacker's server heard nothing, ever.
    assert attacker.received == []
    for secret in (UPLOAD_TOKEN, ARCHIVE[1], COMMAND_TOKEN, API_TOKEN, "hunter2"):
        assert secret not in err, "a secret in the box's log"


def hostile_destinations(site: Site) -> list[str]:
    store = site.store.url.removeprefix("http://")
    return [
        site.attacker.url + "/x/",  # another server altogether
        f"http://localhost:{store.split(':')[1]}/calls/",  # the store under another name
        site.store.url + "/other/",  # the store, outside the configured folder
        site.store.url + "/calls/../admin/",
        site.store.url + "/calls/%2e%2e/admin/",
        site.store.url + "/calls/..\\admin\\x.wav",  # IIS reads "\" as "/"
        site.store.url + "/calls/..;/admin/",  # Tomcat reads "..;/" as "../"
        site.store.url + "/calls/%252e%252e/admin/",  # decoded twice
        site.store.url + "/calls/a%2Fb/",
        site.store.url + "/calls?x=1",
        f"http://box:hunter2@{store}/calls/",  # a password in the URL
        "s3://attacker-bucket/",
        "https://evil.example.com/calls/",
        "central",  # a destination the config does not name
    ]


def test_no_command_sends_the_upload_credentials_anywhere_but_a_configured_destination(site):
    """Attack 1: a start naming a URL of the attacker's choosing (MQTT, the API, a vendor document)."""
    for destination in hostile_destinations(site):
        reply = site.central.command({"op": "start", "options": {"destination": destination}})
        assert reply["ok"] is False and reply["error"].startswith("destination: "), (destination, reply)
        assert "hunter2" not in json.dumps(reply)
        answer = site.post("/v1/recordings", {"destination": destination})
        assert answer.status_code == 422, (destination, answer.text)  # as every bad start option
        assert answer.json()["message"].startswith("destination: ") and "hunter2" not in answer.text
    sinch = {"name": "startRecording", "options": {"destinationUrl": site.attacker.url + "/s/", "format": "wav"}}
    reply = site.central.command({"op": "start", "sinch": sinch})
    assert reply["ok"] is False and "credentials go only to destinations in the config" in reply["error"]
    refused = site.central.command({"op": "start", "options": {"destination": site.attacker.url + "/x/"}})
    assert refused["error"] == (
        f"destination: '{site.attacker.url}/x/' is not valid; expected a configured destination (default, "
        f"archive, mqtt) or a URL under one of {site.store.url}/calls/, {site.archive.url}/vault/; "
        "credentials go only to destinations in the config"
    )
    # Refused before anything started.
    assert site.central.command({"op": "list", "status": "in-progress"})["recordings"] == []


def test_each_destination_gets_its_own_credentials_and_a_url_below_it_those_of_its_destination(site):
    below = site.record(site.store.url + "/calls/front-desk/")
    site.available(below["id"])
    [put] = [r for r in site.store.received if r.path.startswith("/calls/front-desk/")]
    assert put.header("Authorization") == f"Bearer {UPLOAD_TOKEN}"

    archived = site.record("archive")
    event = site.available(archived["id"])
    assert event["data"]["destination"] == f"{site.archive.url}/vault/"
    [put] = site.archive.received
    assert put.path.startswith("/vault/") and put.header("Authorization").startswith("Basic ")
    assert UPLOAD_TOKEN not in json.dumps(put.headers)  # the store's token never goes to the archive


def test_a_broker_client_without_the_token_can_neither_record_nor_delete_nor_aim_replies(site):
    """Attacks 3 and 5: another device on the broker, whose ACL lets it publish on every cmd topic."""
    site.central.client.subscribe("edge-recorder/other-box/#", qos=1)
    done = site.record("")
    site.available(done["id"])
    for request in (
        {"op": "start"},
        {"op": "delete", "id": done["id"], "force": True},
        {"op": "button"},
        {"op": "list", "token": "guess"},
    ):
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "edge-recorder/other-box/cmd"  # into another box's command topic
        props.CorrelationData = b"intruder"
        site.intruder.client.publish(f"{BASE}/cmd", json.dumps(request), qos=1, properties=props)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        answers = [json.loads(p) for t, p in site.central.log if t == f"{BASE}/cmd/reply"]
        if len([a for a in answers if a.get("code") == "unauthorised"]) >= 4:
            break
        time.sleep(0.05)
    refused = [a for a in answers if a.get("code") == "unauthorised"]
    assert len(refused) == 4 and all(a["ok"] is False for a in refused), answers
    assert not [t for t, _ in site.central.log if t.startswith("edge-recorder/other-box/")]
    row = site.central.command({"op": "get", "id": done["id"]})["recording"]
    assert row["status"] == "completed"
    assert site.central.command({"op": "list", "status": "in-progress"})["recordings"] == []


def test_by_default_a_box_without_a_command_token_takes_no_command_that_records_or_deletes(site):
    """Attack 5: [mqtt] command_token left empty no longer lets anyone on the broker delete recordings."""
    box = Box.make(
        site.root / "desk-2",
        np.resize(counter_signal(8.0), 30 * RATE),
        RATE,
        device={"id": "desk-2"},
        mqtt={"url": site.broker.url, "username": "desk-2", "password": "desk-2-pw"},
        sim={"pace": "realtime"},
    )
    proc = box.start()
    try:
        site.central.client.subscribe("edge-recorder/desk-2/#", qos=1)
        site.central.wait_for(lambda t, p: t == "edge-recorder/desk-2/status" and p == b"online")

        site.central.client.subscribe("central/replies/#", qos=1)
        asked: list[str] = []

        def on_own_reply_topic(request: dict) -> dict:
            """A refused command is answered on the box's own cmd/reply, whatever response topic it names."""
            request_id = secrets.token_hex(4)
            asked.append(f"central/replies/{request_id}")
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = f"central/replies/{request_id}"
            payload = json.dumps({**request, "request_id": request_id})
            site.central.client.publish("edge-recorder/desk-2/cmd", payload, qos=1, properties=props)
            _, answer, _ = site.central.wait_for(
                lambda t, p: t == "edge-recorder/desk-2/cmd/reply" and json.loads(p).get("request_id") == request_id
            )
            return json.loads(answer)

        for op in ({"op": "start"}, {"op": "button"}, {"op": "delete", "id": "RE" + "0" * 32}):
            refused = on_own_reply_topic(op)
            assert refused["ok"] is False and refused["code"] == "token_required", refused
            assert "set [mqtt] command_token" in refused["error"]
        # Reading is what the events already tell, answered on the box's own cmd/reply: with no token no sender
        # can be told apart, so none may aim the answer, not even at a topic of its own.
        listed = on_own_reply_topic({"op": "list"})
        assert listed["ok"] is True
        assert on_own_reply_topic({"op": "explode", "request_id": "x"})["ok"] is False
        time.sleep(0.3)
        assert not [t for t, _ in site.central.log if t in asked]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err
    assert box.rows() == []


def test_no_message_from_a_broker_client_silences_the_command_path(site):
    """Attack 2: payloads nested 5000 deep, not JSON or oversize, with wildcard response topics."""
    site.central.client.subscribe("intruder/#", qos=1)
    for payload in (b"[" * 5000, b"\xff\xfe not json", b"x" * 70000, b'{"op": "list", "call_id": "\\udc00"}'):
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "intruder/#"
        props.CorrelationData = b"silence"
        site.intruder.client.publish(f"{BASE}/cmd", payload, qos=1, properties=props)
    time.sleep(1.0)
    assert site.central.command({"op": "list", "limit": 1})["ok"] is True  # still answering
    assert not [t for t, _ in site.central.log if t.startswith("intruder/")]


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        ({"op": "list", "status": {"in": "progress"}}, "list: status"),
        ({"op": "list", "call_id": ["CA1"]}, "list: call_id"),
        ({"op": "start", "options": {"max_length": 10**400}}, "max_length: "),
        ({"op": "start", "options": {"pre_roll": -(10**400)}}, "pre_roll: "),
    ],
)
def test_bad_command_fields_are_named_not_internal_errors(site, request_, field):
    """Attack 6, over MQTT: each answer names the field."""
    payload = json.dumps({**request_, "token": COMMAND_TOKEN}).encode()
    reply = site.central.command(payload)
    assert reply["ok"] is False and field in reply["error"] and "internal" not in reply["error"], reply


@pytest.mark.parametrize(
    ("sections", "named"),
    [
        ({"http": {"listen": "0.0.0.0:18080", "tokens": "a" * 32}}, "[http] tokens"),
        ({"http": {"listen": "0.0.0.0:18080", "username": "desk", "password": "x"}}, "[http] password"),
        (
            {"http": {"listen": "0.0.0.0:18080", "username": "desk", "password": "correct-horse-battery"}},
            "[http] username",
        ),
        ({"audio": {"period_ms": 10**400}}, "[audio] period_ms"),
        ({"mqtt": {"url": "mqtt://127.0.0.1:1", "password": "file:/dev/zero"}}, "/dev/zero is not a regular file"),
        ({"sim": {"scenario": "1=detonate"}}, "[sim] scenario"),
        ({"upload": {"destination": "https://box:hunter2@central.example.com/"}}, "[upload] destination"),
        ({"mqtt": {"url": "mqtt://127.0.0.1:1", "ha_discovery": True}}, "[mqtt] ha_discovery"),
    ],
)
def test_the_daemon_refuses_a_weak_or_hostile_config_naming_the_key(tmp_path, sections, named):
    """Attacks 5 and 7: `edge-recorder run` exits 78 (no restart by systemd) with one line, no traceback."""
    box = Box.make(tmp_path, counter_signal(1.0), RATE, **sections)
    result = box.run(timeout=30)
    assert result.code == 78, result.stderr
    assert named in result.stderr and "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr and "correct-horse" not in result.stderr


def test_an_encryption_key_that_is_a_device_is_not_read_and_recording_is_refused(tmp_path):
    """Attack 7: [encryption] public_key = "/dev/zero" used to be read until memory ran out. The box stays up
    to say so (device.error encryption_key) and records nothing unencrypted."""
    box = Box.make(
        tmp_path,
        counter_signal(1.0),
        RATE,
        encryption={"public_key": "/dev/zero"},
        sim={"scenario": "0.2=button, 0.8=button"},
    )
    result = box.run(timeout=30)
    assert result.code == 0 and "Traceback" not in result.stderr
    [error] = [e for e in result.of("device.error") if e["data"]["code"] == "encryption_key"]
    assert "/dev/zero is not a regular file" in error["data"]["message"]
    assert box.rows() == []
