"""An update over MQTT, end to end: the command, the download, root's install, the restart, the events.

The box is a root file system with 0.1.0 installed by ``images/install.sh`` (tests/releases.py), its
daemon run from the installed slot, chrooted into the box as its own user (as tests/test_rollback.py
runs it: systemd cannot run here, so the test plays its part with the real programs). A central
client on a real Mosquitto sends the documented ``update`` command naming a 0.2.0 bundle built from
this checkout and served over HTTPS by a server on loopback with a CA of the test's own (the box is
given it as ``[update] ca_file``). The daemon downloads it into its inbox and hands it over; the test
then does what ``edge-recorder-update.path`` makes systemd do, running ``edge-recorder update
--pending`` as root in the box, and restarts the daemon as the update's queued restart would. The
new version announces the update's steps and confirms it.

Checked: the answers (accepted with an id; refused while a recording is active; a wrong sha256
refused once downloaded), every ``device.update`` event in order with the update's id and the
command's request_id, the state's ``update``, and that docs/mqtt.md's ``update`` examples have the
shape of what the box sent (the box tests/test_docs.py runs is a checkout, which cannot update
itself). Needs root (chroot, mounts).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from firmware.daemon.app import RESTART_FOR_UPDATE

from .box_chroot import PROGRAM, chrooted, daemon_user, guard, make_box, work_folder
from .broker import Broker, request_reply
from .programs import run
from .release_server import Certificates, ReleaseServer, make_certificates
from .releases import (
    AS_ROOT,
    STATE,
    TOP,
    build,
    checked,
    copy_source,
    layout,
    make_keys,
    make_wheelhouse,
    minisign_sign,
)
from .test_docs import DOC, differences, examples

pytestmark = pytest.mark.skipif(not AS_ROOT, reason="the daemon runs chrooted into the box, with mounts: root only")

UNIT_ENVIRONMENT = {"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}  # the unit's Environment=
DEVICE = "front-desk-3"
PREFIX = "er"
BASE = f"{PREFIX}/{DEVICE}"
CONFIG = """\
[device]
id = "{device}"

[sim]
enabled = true
audio = "/var/lib/edge-recorder/line.wav"

[mqtt]
url = "{broker}"
prefix = "{prefix}"
command_auth = "broker"
heartbeat = 1.0

[update]
confirm_seconds = 2
ca_file = "/etc/edge-recorder/update-ca.pem"
"""


@dataclass
class World:
    root: Path
    broker: Broker
    server: ReleaseServer
    bundle_url: str
    bundle_sha256: str


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    with work_folder("edge-recorder-mqtt-update-") as work:
        (work / "keys").mkdir()
        keys = make_keys(work / "keys")
        v1_source = copy_source(work / "v1", "0.1.0")
        wheelhouse = make_wheelhouse(v1_source, work / "wheelhouse")
        v2 = build(copy_source(work / "v2", "0.2.0"), work / "dist", wheelhouse)
        minisign_sign(v2, keys.secret)

        broker = Broker(work / "broker").start()
        certificates: Certificates = make_certificates(work / "tls")
        (work / "served").mkdir()
        server = ReleaseServer(certificates, work / "served").start()
        url = server.publish(f"releases/{v2.name}", v2)
        server.publish(f"releases/{v2.name}.minisig", Path(f"{v2}.minisig"))

        root = work / "root"
        config = CONFIG.format(device=DEVICE, broker=broker.url, prefix=PREFIX)
        make_box(root, wheelhouse, keys.public, config, audio_seconds=300)
        (root / "etc/edge-recorder/update-ca.pem").write_bytes(certificates.ca.read_bytes())
        (root / "etc/edge-recorder/update-ca.pem").chmod(0o644)
        try:
            yield World(root, broker, server, url, hashlib.sha256(v2.read_bytes()).hexdigest())
        finally:
            server.stop()
            broker.stop()


class Daemon:
    """One start of edge-recorder.service in the box: the guard (ExecStartPre=), then the daemon as its user."""

    def __init__(self, root: Path) -> None:
        checked(guard(root, "start"))
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115
        self.process = subprocess.Popen(
            chrooted(root, PROGRAM, user=daemon_user(root), env=UNIT_ENVIRONMENT, cwd="/run/edge-recorder"),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> str:
        """SIGTERM to the daemon (unshare's child), as systemctl stop or restart sends it; its log."""
        if self.process.poll() is None:
            for child in Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split():
                os.kill(int(child), signal.SIGTERM)
            self.process.wait(timeout=60)
        self.log.seek(0)
        return self.log.read()


@dataclass
class Central:
    """A central server's client: every event and state the box publishes, and commands with replies."""

    broker: Broker
    events: queue.Queue = field(default_factory=queue.Queue)
    seen: list[dict] = field(default_factory=list)
    states: list[dict] = field(default_factory=list)
    online: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._message
        self.client.connect(self.broker.host, self.broker.port)
        self.client.loop_start()
        self.client.subscribe([(f"{BASE}/events", 1), (f"{BASE}/state", 1), (f"{BASE}/status", 1)])

    def _message(self, client, userdata, message) -> None:
        if message.topic.endswith("/events"):
            self.events.put(json.loads(message.payload))
        elif message.topic.endswith("/state"):
            self.states.append(json.loads(message.payload))
        else:
            self.online.append(message.payload)

    def command(self, **fields: Any) -> dict:
        reply = request_reply(self.client, f"{BASE}/cmd", json.dumps(fields), uuid.uuid4().bytes, timeout=20)
        return json.loads(reply.payload)

    def wait_event(self, what: str, matches: Callable[[dict], bool], timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            self.seen.append(event)
            if matches(event):
                return event
        raise AssertionError(f"no {what} within {timeout} s; seen: {[e['type'] for e in self.seen]}")

    def updates(self, update_id: str) -> list[dict]:
        return [e["data"] for e in self.seen if e["type"] == "device.update" and e["data"]["id"] == update_id]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def is_update(update_id: str, stage: str) -> Callable[[dict], bool]:
    return lambda e: e["type"] == "device.update" and e["data"]["id"] == update_id and e["data"]["stage"] == stage


def test_an_update_command_downloads_installs_restarts_and_confirms_with_an_event_at_each_step(world):
    root = world.root
    central = Central(world.broker)
    daemon = Daemon(root)
    try:
        central.wait_event("the box being ready", lambda e: e["type"] == "device.state", timeout=60)

        # a recording is active: the update would cut it, so it is refused unless told to wait
        started = central.command(op="start", request_id="rec")
        assert started["ok"] is True, started
        busy = central.command(op="update", url=world.bundle_url, sha256=world.bundle_sha256)
        assert busy["ok"] is False and busy["code"] == "recording_active", busy
        assert "wait_for_idle" in busy["error"]

        # a wrong sha256: accepted, downloaded, refused as tampered, nothing handed over
        wrong = central.command(
            op="update", url=world.bundle_url, sha256="0" * 64, wait_for_idle=True, request_id="u-0"
        )
        assert wrong["ok"] is True and wrong["update"]["stage"] == "downloading", wrong
        refused = central.wait_event("the wrong sha256 refused", is_update(wrong["update"]["id"], "refused"))
        assert refused["data"]["reason"] == "tampered" and refused["data"]["request_id"] == "u-0"
        assert "/releases/" in refused["data"]["message"]

        # told to wait for idle: downloaded now, handed over once the recording has ended
        answer = central.command(
            op="update", url=world.bundle_url, sha256=world.bundle_sha256, wait_for_idle=True, request_id="u-1"
        )
        assert answer["ok"] is True, answer
        update_id = answer["update"]["id"]
        assert answer["update"] == {
            "id": update_id,
            "stage": "downloading",
            "name": Path(world.bundle_url).name,
            "wait_for_idle": True,
        }
        central.wait_event(
            "the download waiting for the recording to end",
            lambda e: is_update(update_id, "downloading")(e) and "waiting" in e["data"]["message"],
        )
        inbox = root / STATE / "updates"
        assert not list(inbox.glob("*.request"))
        assert central.command(op="stop")["ok"] is True
        deadline = time.monotonic() + 60
        while not (inbox / f"{update_id}.request").exists():
            assert time.monotonic() < deadline, f"no request handed over: {sorted(os.listdir(inbox))}"
            time.sleep(0.1)
        again = central.command(op="update", url=world.bundle_url, sha256=world.bundle_sha256)
        assert again["ok"] is False and again["code"] == "update_busy", again

        # edge-recorder-update.path starts edge-recorder-update.service: root installs what was handed over (the
        # box's own program, on the box's root, as tests/test_update.py runs it) while the recorder records on
        installed = run(
            root / TOP / "bin/python", "-I", "-m", "firmware.cli.main", "update", "--pending", "inbox", "--root", root
        )
        assert installed.returncode == 0, installed.stderr
        assert layout(root)["links"]["current"] == "slots/0.2.0"
        assert sorted(os.listdir(root / STATE / "updates")) == []
        # the recorder sees the switch and, no recording being active, ends to be restarted into it
        central.wait_event("the switch announced", is_update(update_id, "switched"), timeout=30)
        assert daemon.process.wait(timeout=60) == RESTART_FOR_UPDATE
    finally:
        first_log = daemon.stop()
    assert "Traceback" not in first_log, first_log
    assert "restarting into it" in first_log

    # systemd's RestartForceExitStatus=: the new version starts and confirms the update
    daemon = Daemon(root)
    try:
        confirmed = central.wait_event("the update confirmed", is_update(update_id, "confirmed"), timeout=90)
        time.sleep(1.5)  # a heartbeat's state after the confirmation
    finally:
        second_log = daemon.stop()
        central.close()
    assert "Traceback" not in second_log, second_log

    steps = central.updates(update_id)
    stages = [s["stage"] for s in steps]
    assert stages[0] == "downloading" and stages[-4:] == ["verified", "installed", "switched", "confirmed"], stages
    assert set(stages[:-4]) == {"downloading"}
    assert steps[0]["received"] == 0 or steps[-5]["received"] == steps[-5]["total"]
    assert all(s["request_id"] == "u-1" and s["via"] == "mqtt" for s in steps), steps
    assert [s["version"] for s in steps[-4:]] == ["0.2.0"] * 4
    assert all(s["from_version"] == "0.1.0" for s in steps)
    assert confirmed["data"]["state"]["update"]["running"] == "0.2.0"
    assert central.states[-1]["update"] == {
        "running": "0.2.0",
        "previous": "0.1.0",
        "switch": "confirmed",
        "reason": None,
        "last": {k: v for k, v in confirmed["data"].items() if k not in ("device_id", "state")},
    }
    check_documented(central, answer)


def check_documented(central: Central, answer: dict) -> None:
    """docs/mqtt.md's ``update`` reply and ``device.update`` event have the shape of what the box sent."""
    documented = examples(DOC.read_text(encoding="utf-8"))
    replies = [e for e in documented if e.name == "update" and e.label == "reply"]
    events = [e for e in documented if e.name == "device.update"]
    assert replies and events, "docs/mqtt.md needs an update reply and a device.update event example"
    for example in replies:
        assert not differences(example.value, answer), f"line {example.line}: {differences(example.value, answer)}"
    sent = [e for e in central.seen if e["type"] == "device.update"]
    for example in events:
        diffs = min((differences(example.value, event) for event in sent), key=len)
        assert not diffs, f"docs/mqtt.md line {example.line}: {diffs}"
