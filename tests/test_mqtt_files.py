"""The ``mqtt`` upload destination end to end: FileSender on a box's MQTT client,
``edge-recorder receive`` as a real process, a real Mosquitto in between."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from firmware.cli import receive
from firmware.delivery.errors import DeliveryError
from firmware.delivery.mqtt_files import FileSender, safe_name

from .broker import Broker
from .seaweed import SeaweedS3

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024


def random_file(path: Path, size: int, seed: int = 0) -> str:
    """Write ``size`` random bytes (1 MiB at a time); return their sha256."""
    digest = hashlib.sha256()
    rng = random.Random(seed)
    with path.open("wb") as out:
        left = size
        while left:
            block = rng.randbytes(min(MB, left))
            digest.update(block)
            out.write(block)
            left -= len(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(MB):
            digest.update(block)
    return digest.hexdigest()


def stored_files(store: Path) -> list[Path]:
    """What a receiver stored: every file outside the hidden .incoming/.received."""
    return sorted(p for p in store.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.parts))


class Receiver:
    """``python -m firmware.cli.receive`` with its stdout (stored files) and stderr (log) collected."""

    def __init__(self, broker, store: Path | str, receiver_id: str, *extra: str, env: dict | None = None) -> None:
        self.store = store
        self.receiver_id = receiver_id
        self.stored: list[dict] = []
        self.log: list[str] = []
        self.ready = threading.Event()
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "firmware.cli.receive", "--broker", broker.url, "--store", str(store)),
                *("--receiver-id", receiver_id, "--group", "receivers", *extra),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=None if env is None else {**os.environ, **env},
        )
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        if not self.ready.wait(15):
            self.proc.kill()
            raise AssertionError(f"receiver {receiver_id} not ready: {self.log}")

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            self.stored.append(json.loads(line))

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self.log.append(line.rstrip())
            if "taking offers" in line:
                self.ready.set()

    def wait_stored(self, count: int, timeout: float = 5.0) -> list[dict]:
        """The JSON lines, once ``count`` are in (the line follows the ack the box waits for)."""
        deadline = time.monotonic() + timeout
        while len(self.stored) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.stored

    def vm_hwm(self) -> int:
        return _vm_hwm(self.proc.pid)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(15)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


def _vm_hwm(pid: int | str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.fixture
def receivers(broker, tmp_path):
    """Start receivers: ``receivers("rx-1", *args)``; all are stopped (and must exit 0) at the end."""
    started: list[Receiver] = []

    def start(receiver_id: str, *extra: str, store: str | None = None, env: dict | None = None) -> Receiver:
        receiver = Receiver(broker, store or tmp_path / f"store-{receiver_id}", receiver_id, *extra, env=env)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        if receiver.proc.poll() is None:
            assert receiver.stop() == 0, receiver.log
        receiver.proc.stdout.close()
        receiver.proc.stderr.close()


class Link:
    """A plain paho client standing in for the box's MQTT link: it routes every message to its handlers."""

    def __init__(self, broker) -> None:
        self.handlers: list = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="box-link", protocol=mqtt.MQTTv5)
        self.subacks: dict[int, threading.Event] = {}
        connected = threading.Event()
        self.client.on_connect = lambda *args: connected.set()
        self.client.on_message = lambda client, userdata, message: any(handler(message) for handler in self.handlers)
        self.client.on_subscribe = lambda client, userdata, mid, codes, props: self.subacks.setdefault(
            mid, threading.Event()
        ).set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert connected.wait(5)

    def sender(self, device_id: str = "box-1", **options) -> FileSender:
        sender = FileSender(self.client, "edge-recorder", device_id, **options)
        _, mid = self.client.subscribe([(topic, 1) for topic in sender.topics()])
        assert self.subacks.setdefault(mid, threading.Event()).wait(5)
        self.handlers.append(sender.on_message)
        return sender

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def link(broker):
    box = Link(broker)
    yield box
    box.close()


def test_a_3_mb_file_arrives_byte_for_byte(link, receivers, tmp_path):
    source = tmp_path / "call.wav"
    sha = random_file(source, 3 * MB, seed=1)
    rx = receivers("rx-1", "--once", "1")
    began = time.monotonic()
    location = link.sender().send(source, "20240501120000_box-1_CA1.wav", sha, recording_id="RE1", timeout=10)
    took = time.monotonic() - began
    assert Path(location) == rx.store / "box-1" / "20240501120000_box-1_CA1.wav"
    assert Path(location).read_bytes() == source.read_bytes()
    assert rx.proc.wait(10) == 0  # --once 1
    assert rx.stored == [
        {
            "device_id": "box-1",
            "recording_id": "RE1",
            "name": "20240501120000_box-1_CA1.wav",
            "size": 3 * MB,
            "sha256": sha,
            "path": location,
        }
    ]
    assert stored_files(rx.store) == [Path(location)]
    assert took < 5


def test_a_re_offer_of_a_stored_file_is_acknowledged_without_a_second_copy(link, receivers, tmp_path):
    source = tmp_path / "call.wav"
    sha = random_file(source, 300_000)
    rx = receivers("rx-1")
    sender = link.sender()
    first = sender.send(source, "a.wav", sha, recording_id="RE1", timeout=10)
    again = sender.send(source, "a.wav", sha, recording_id="RE1", timeout=10)  # as after a lost ack
    other = sender.send(source, "a.wav", sha, recording_id="RE2", timeout=10)  # same bytes, other recording
    assert again == first == other
    assert stored_files(rx.store) == [Path(first)]
    assert len(rx.wait_stored(2, timeout=0.5)) == 1
    changed = tmp_path / "changed.wav"
    beside = sender.send(changed, "a.wav", random_file(changed, 1000, seed=9), recording_id="RE3", timeout=10)
    assert Path(beside) == rx.store / "box-1" / "a.1.wav"  # a name taken by other content is never overwritten
    assert Path(first).read_bytes() == source.read_bytes()


def test_two_receivers_share_six_files_and_each_is_stored_exactly_once(link, receivers, tmp_path):
    rx1, rx2 = receivers("rx-1"), receivers("rx-2")
    boxes = {"box-1": link.sender("box-1"), "box-2": link.sender("box-2")}
    jobs = []
    for n in range(6):
        device = f"box-{n % 2 + 1}"
        path = tmp_path / f"call-{n}.wav"
        jobs.append((boxes[device], path, f"call-{n}.wav", random_file(path, 700_000 + n * 1000, seed=n), f"RE{n}"))
    with ThreadPoolExecutor(6) as pool:  # several devices (and files) at once
        futures = [
            pool.submit(box.send, path, name, sha, recording_id=rid, timeout=10) for box, path, name, sha, rid in jobs
        ]
        locations = [future.result() for future in futures]
    everything = stored_files(rx1.store) + stored_files(rx2.store)
    assert sorted(map(Path, locations)) == sorted(everything)
    assert len(everything) == 6
    for (_, _, name, sha, _), location in zip(jobs, locations, strict=True):
        assert Path(location).name == name and sha256_of(Path(location)) == sha
    deadline = time.monotonic() + 5
    while len(rx1.stored) + len(rx2.stored) < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(rx1.stored) + len(rx2.stored) == 6
    assert rx1.stored and rx2.stored, "both receivers should take a share"


def test_a_receiver_killed_mid_transfer_is_transient_and_the_resend_goes_to_the_survivor(link, receivers, tmp_path):
    # A short session expiry so the broker forgets the dead receiver's share of the group quickly.
    rxs = {rid: receivers(rid, "--session-expiry", "1") for rid in ("rx-1", "rx-2")}
    killed: list[str] = []

    def kill_on_first_progress(message) -> bool:
        if message.topic.endswith("/progress") and not killed:
            victim = json.loads(message.payload)["receiver"]
            rxs[victim].kill()  # SIGKILL: no goodbye, its temp file stays
            killed.append(victim)
        return False

    link.handlers.append(kill_on_first_progress)
    sender = link.sender(chunk_size=64 * 1024)
    source = tmp_path / "call.wav"
    sha = random_file(source, 3 * MB, seed=2)
    began = time.monotonic()
    with pytest.raises(DeliveryError) as failed:
        sender.send(source, "call.wav", sha, recording_id="RE1", timeout=2)
    assert not failed.value.permanent
    assert "went silent" in str(failed.value)
    assert time.monotonic() - began < 5
    (survivor,) = (rx for rid, rx in rxs.items() if rid != killed[0])
    location = sender.send(source, "call.wav", sha, recording_id="RE1", timeout=5)
    assert Path(location).parent.parent == survivor.store
    assert sha256_of(Path(location)) == sha
    # Not just the next one in the round: the dead receiver's share of the group is gone.
    assert Path(sender.send(source, "b.wav", sha, recording_id="RE2", timeout=5)).parent.parent == survivor.store
    assert stored_files(rxs[killed[0]].store) == []
    assert list((rxs[killed[0]].store / "box-1" / ".incoming").glob("*.part")), "killed with its temp file"


def test_a_stopped_receiver_leaves_the_group_at_once(link, receivers, tmp_path):
    rx1, rx2 = receivers("rx-1"), receivers("rx-2")  # default session expiry: longer than this test
    assert rx1.stop() == 0
    sender = link.sender()
    source = tmp_path / "call.wav"
    sha = random_file(source, 10_000)
    for n in range(2):
        location = sender.send(source, f"{n}.wav", sha, recording_id=f"RE{n}", timeout=2)
        assert Path(location).parent.parent == rx2.store


def test_a_file_that_does_not_match_its_sha256_is_refused_for_good(link, receivers, tmp_path):
    rx = receivers("rx-1")
    source = tmp_path / "call.wav"
    random_file(source, 500_000)
    with pytest.raises(DeliveryError) as refused:
        link.sender().send(source, "call.wav", "0" * 64, recording_id="RE1", timeout=5)
    assert refused.value.permanent
    assert "not " + "0" * 64 in str(refused.value)
    assert stored_files(rx.store) == []
    assert rx.stored == []


class FakeReceiver:
    """A receiver written from the protocol table, answering each ``done`` with ``answer(tid, nth done)``."""

    def __init__(self, broker, answer) -> None:
        self.offers: list[dict] = []
        self.chunks: list[int] = []
        self.dones: dict[str, int] = {}
        self.answer = answer
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fake-receiver", protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.subscribe("$share/receivers/edge-recorder/+/files/offer", qos=1)
        self.client.loop_start()
        assert subscribed.wait(5)

    def _on_message(self, client, userdata, message) -> None:
        parts = message.topic.split("/")
        base = "/".join(parts[:3])
        if parts[-1] == "offer":
            self.offers.append(json.loads(message.payload))
            tid = self.offers[-1]["tid"]
            client.subscribe(f"{base}/{tid}/fake/#", qos=1)
            client.publish(f"{base}/{tid}/accept", json.dumps({"receiver": "fake"}), qos=1)
        elif parts[-2] == "chunk":
            self.chunks.append(int(parts[-1]))
        elif parts[-1] == "done":
            tid = parts[3]
            self.dones[tid] = self.dones.get(tid, 0) + 1
            kind, body = self.answer(tid, self.dones[tid])
            client.publish(f"{base}/{tid}/{kind}", json.dumps({"receiver": "fake", **body}), qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_data_damaged_on_the_way_is_offered_once_more_then_refused_for_good(broker, link, tmp_path):
    """A receiver that always computes another sha256 than the box: one retry, then permanent."""
    mismatch = {"ok": False, "code": "sha256_mismatch", "error": "bad bytes", "retry": True}
    fake = FakeReceiver(broker, lambda tid, n: ("ack", mismatch))
    source = tmp_path / "call.wav"
    sha = random_file(source, 200_000)
    try:
        with pytest.raises(DeliveryError) as refused:
            link.sender().send(source, "call.wav", sha, recording_id="RE1", timeout=5)
    finally:
        fake.close()
    assert refused.value.permanent and "twice" in str(refused.value)
    assert len(fake.offers) == 2 and fake.offers[0]["tid"] != fake.offers[1]["tid"]


def test_the_box_sends_again_the_chunks_a_receiver_asks_for(broker, link, tmp_path):
    def answer(tid, nth):
        return ("nack", {"missing": [0, 3]}) if nth == 1 else ("ack", {"ok": True, "location": "somewhere"})

    fake = FakeReceiver(broker, answer)
    source = tmp_path / "call.wav"
    sha = random_file(source, 5500)
    try:
        assert link.sender(chunk_size=1000).send(source, "c.wav", sha, recording_id="RE1", timeout=5) == "somewhere"
    finally:
        fake.close()
    assert fake.chunks == [0, 1, 2, 3, 4, 5, 0, 3]


def test_the_receiver_asks_again_for_a_chunk_that_never_came(broker, receivers, tmp_path):
    """A box written from the protocol table, which 'loses' chunk 1 the first time."""
    rx = receivers("rx-1")
    data = random.Random(5).randbytes(4500)
    chunks = [data[i : i + 1000] for i in range(0, len(data), 1000)]
    base, tid = "edge-recorder/box-9/files", "t-lost-chunk"
    replies: queue.Queue = queue.Queue()
    box = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="raw-box", protocol=mqtt.MQTTv5)
    box.on_message = lambda client, userdata, message: replies.put(
        (message.topic.rsplit("/", 1)[1], json.loads(message.payload))
    )
    box.connect(broker.host, broker.port)
    box.loop_start()
    try:
        box.subscribe([(f"{base}/{tid}/{kind}", 1) for kind in ("accept", "nack", "ack")])
        time.sleep(0.2)
        offer = {
            "v": 1,
            "tid": tid,
            "recording_id": "RE9",
            "name": "lost.wav",
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "chunk_size": 1000,
            "chunks": len(chunks),
            "window": 16,
            "timeout": 5,
        }
        box.publish(f"{base}/offer", json.dumps(offer), qos=1)
        kind, body = replies.get(timeout=5)
        assert (kind, body) == ("accept", {"receiver": "rx-1"})
        for index in (0, 2, 3, 4):
            box.publish(f"{base}/{tid}/rx-1/chunk/{index}", chunks[index], qos=1)
        box.publish(f"{base}/{tid}/rx-1/done", json.dumps({"chunks": len(chunks)}), qos=1)
        box.publish(f"{base}/{tid}/rx-1/chunk/\u00b2", b"junk", qos=1)  # a digit to str.isdigit(), not to int()
        assert replies.get(timeout=5) == ("nack", {"receiver": "rx-1", "missing": [1]})
        box.publish(f"{base}/{tid}/rx-1/chunk/1", chunks[1], qos=1)
        box.publish(f"{base}/{tid}/rx-1/done", json.dumps({"chunks": len(chunks)}), qos=1)
        kind, body = replies.get(timeout=5)
    finally:
        box.disconnect()
        box.loop_stop()
    assert kind == "ack" and body["ok"] is True, body
    assert Path(body["location"]) == rx.store / "box-9" / "lost.wav"
    assert Path(body["location"]).read_bytes() == data


def test_hostile_names_stay_inside_the_store(link, receivers, tmp_path):
    rx = receivers("rx-1")
    sender = link.sender()
    source = tmp_path / "call.wav"
    sha = random_file(source, 10_000)
    escaped = sender.send(source, "../../x", sha, recording_id="RE1", timeout=5)
    absolute = sender.send(source, "/etc/cron.d/x\n", sha, recording_id="RE2", timeout=5)
    assert Path(escaped) == rx.store / "box-1" / "x"
    assert Path(absolute) == rx.store / "box-1" / "etc_cron.d_x"
    with pytest.raises(DeliveryError) as refused:
        sender.send(source, "../..", sha, recording_id="RE3", timeout=5)
    assert refused.value.permanent
    assert not (tmp_path / "x").exists()
    for path in stored_files(rx.store):
        assert path.resolve().is_relative_to(rx.store.resolve())


@pytest.mark.parametrize(
    ("asked", "stored"),
    [
        ("call.wav", "call.wav"),
        ("..\\..\\windows\\x.wav", "windows_x.wav"),
        ("a/./b/../c.wav", "a_b_c.wav"),
        (".hidden", "hidden"),
        ("evil\u202egnp.wav", "evilgnp.wav"),  # no right-to-left override to disguise the extension
        ("tab\there.wav", "tabhere.wav"),
    ],
)
def test_safe_name_cleans_what_could_escape_or_deceive(asked, stored):
    assert safe_name(asked) == stored


@pytest.mark.parametrize("asked", ["", "..", "/", " / . / ", "\x00\x01", "x" * 300])
def test_safe_name_rejects_what_has_no_name_left(asked):
    with pytest.raises(ValueError):
        safe_name(asked)


def test_no_receiver_is_transient_within_the_timeout(link, tmp_path):
    source = tmp_path / "call.wav"
    sha = random_file(source, 10_000)
    began = time.monotonic()
    with pytest.raises(DeliveryError) as failed:
        link.sender().send(source, "call.wav", sha, recording_id="RE1", timeout=1.5)
    assert not failed.value.permanent
    assert "no receiver accepted" in str(failed.value)
    assert 1.4 < time.monotonic() - began < 3


def test_a_broker_that_is_down_is_transient_at_once(broker, link, tmp_path):
    sender = link.sender()
    source = tmp_path / "call.wav"
    sha = random_file(source, 10_000)
    broker.stop()
    deadline = time.monotonic() + 5
    while link.client.is_connected() and time.monotonic() < deadline:
        time.sleep(0.05)
    began = time.monotonic()
    with pytest.raises(DeliveryError) as failed:
        sender.send(source, "call.wav", sha, recording_id="RE1", timeout=10)
    assert not failed.value.permanent
    assert time.monotonic() - began < 1


SENDER = """
import json, sys, threading
from pathlib import Path
import paho.mqtt.client as mqtt
from firmware.delivery.mqtt_files import FileSender

port, path, sha = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

def hwm():
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) * 1024

client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="big-box", protocol=mqtt.MQTTv5)
sender = FileSender(client, "edge-recorder", "big-box")
subscribed = threading.Event()
client.on_message = lambda c, u, message: sender.on_message(message)
client.on_subscribe = lambda *args: subscribed.set()
client.connect("127.0.0.1", port)
client.loop_start()
client.subscribe([(topic, 1) for topic in sender.topics()])
assert subscribed.wait(5)
before = hwm()
location = sender.send(path, "big.wav", sha, recording_id="RE-BIG", timeout=20)
print(json.dumps({"before": before, "after": hwm(), "location": location}))
"""


def test_sending_50_mb_streams_from_disk_on_both_sides(broker, receivers, tmp_path):
    source = tmp_path / "big.wav"
    sha = random_file(source, 50 * MB, seed=3)
    rx = receivers("rx-1")
    rx_before = rx.vm_hwm()
    done = subprocess.run(
        [sys.executable, "-c", SENDER, str(broker.port), str(source), sha],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    print(
        f"sender VmHWM +{(report['after'] - report['before']) / MB:.1f} MiB, receiver +{(rx.vm_hwm() - rx_before) / MB:.1f} MiB"
    )
    assert report["after"] - report["before"] < 20 * MB, report
    assert rx.vm_hwm() - rx_before < 20 * MB
    assert sha256_of(Path(report["location"])) == sha


def test_credentials_are_checked_and_refused_ones_end_the_receiver(tmp_path, link):
    secured = Broker(tmp_path / "secured", users={"receiver": "s3cret"}).start()
    try:
        (tmp_path / "good").write_text("s3cret\n")
        (tmp_path / "bad").write_text("guess\n")
        login = ["--broker", secured.url, "--store", str(tmp_path / "store"), "--username", "receiver"]
        good = Receiver(
            secured, tmp_path / "store", "rx-1", "--username", "receiver", "--password-file", str(tmp_path / "good")
        )
        assert good.stop() == 0
        refused = subprocess.run(
            [sys.executable, "-m", "firmware.cli.receive", *login, "--password-file", str(tmp_path / "bad")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=20,
        )
    finally:
        secured.stop()
    assert refused.returncode == 78
    assert "Not authorized (check --username and --password-file)" in refused.stderr


def test_an_s3_store_gets_the_verified_file(link, receivers, tmp_path):
    s3 = SeaweedS3(tmp_path / "s3").start()
    try:
        s3.client().make_bucket("recordings")
        rx = receivers(
            "rx-s3",
            "--s3-endpoint",
            s3.endpoint,
            "--s3-region",
            s3.region,
            "--work-dir",
            str(tmp_path / "work"),
            store="s3://recordings/incoming/",
            env={"AWS_ACCESS_KEY_ID": s3.writer_key, "AWS_SECRET_ACCESS_KEY": s3.writer_secret},
        )
        source = tmp_path / "call.wav"
        sha = random_file(source, 1 * MB, seed=4)
        sender = link.sender()
        location = sender.send(source, "../call.wav", sha, recording_id="RE1", timeout=20)
        assert location == "s3://recordings/incoming/box-1/call.wav"
        assert sender.send(source, "call.wav", sha, recording_id="RE1", timeout=20) == location  # no second upload
        stored = s3.client().get_object("recordings", "incoming/box-1/call.wav")
        assert stored.read() == source.read_bytes()
        assert rx.wait_stored(1)[0]["path"] == location
        assert not list((tmp_path / "work").rglob("*.part"))
    finally:
        s3.proc.kill()  # its data are throwaway, and weed takes 10 s to act on SIGTERM
        s3.proc.wait(5)
        s3.stop()


def test_bad_arguments_are_usage_errors(tmp_path, capsys):
    assert receive.main(["--broker", "http://host", "--store", str(tmp_path)]) == 64
    assert "--broker 'http://host'" in capsys.readouterr().err
    assert receive.main(["--broker", "mqtt://host", "--store", str(tmp_path), "--receiver-id", "a/b"]) == 64
    assert receive.main(["--broker", "mqtt://host", "--store", str(tmp_path), "--group", "a/b"]) == 64
    assert receive.main(["--broker", "mqtt://host", "--store", str(tmp_path), "--password-file", "p"]) == 64
    assert receive.main(["--broker", "mqtt://host", "--store", "s3://", "--work-dir", str(tmp_path)]) == 64
