"""Delivery: event latency to a subscriber, outbox drain rate after an outage, HTTP upload speed and memory.

Reports:

1. time from a recording's end to its ``recording.finished`` event at an MQTT
   subscriber on loopback. The real daemon (``edge-recorder run``, simulated
   box, real-time pace) records ``BENCH_RECORDINGS`` (50) short recordings, a
   button press every 0.4 s, with ``[mqtt] url`` a private Mosquitto. The end
   of a recording is when the daemon handled it: its ``--events -`` line is
   written right after the commit of the catalog transaction that ends the
   recording and queues the event. This process timestamps that line as it arrives
   and the event as it arrives from the broker, on the same monotonic clock:
   p50/p99 of (MQTT arrival - stdout arrival). The daemon runs in a small
   wrapper that also notes, on CLOCK_MONOTONIC (one clock for every process
   of the machine), the commit and the moment it writes the line, so the
   stdout pipe itself (arrival - write) and commit to MQTT arrival are shown
   beside it;
2. outbox drain rate after an outage: ``BENCH_EVENTS`` (20,000) event rows of
   a real ``recording.finished`` CloudEvent (about 1 KB, each its own id) in a
   fresh catalog, then a ``firmware.delivery.mqtt.Link`` started against the
   broker: events/s until the outbox is empty, every event counted by a
   subscriber in another process. Baseline in the same run: a plain paho
   client publishing the same payloads at QoS 1 with the same in-flight
   window (100), as fast as it can, to the same subscriber; ``BENCH_DRAIN_ROUNDS``
   (3) rounds of each, interleaved;
3. HTTP upload of a ``BENCH_UPLOAD_MB`` (500) MiB file with
   ``firmware.delivery.uploads.upload()`` (PUT) to a loopback
   ``FlakyHttpServer`` (which hashes and checks what it gets), in a child
   process that reports its time and its peak RSS growth (VmHWM after the
   upload minus VmRSS before it, the peak reset with ``/proc/self/clear_refs``);
   baseline ``curl -T`` of the same file to the same server (``requests.put``
   of the open file when there is no curl), interleaved, ``BENCH_UPLOAD_ROUNDS``
   (3) rounds.

Run: ``PYTHONPATH=. .venv/bin/python -m bench.delivery``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

from firmware.catalog import Catalog, OutboxItem
from firmware.delivery.mqtt import IN_FLIGHT, BrokerSettings, Link
from firmware.delivery.outbox import Outbox
from tests.broker import Broker
from tests.daemon_run import ROOT, Box, counter_signal
from tests.http_servers import FlakyHttpServer

RECORDINGS = int(os.environ.get("BENCH_RECORDINGS", 50))
EVENTS = int(os.environ.get("BENCH_EVENTS", 20000))
UPLOAD_MB = int(os.environ.get("BENCH_UPLOAD_MB", 500))
UPLOAD_ROUNDS = int(os.environ.get("BENCH_UPLOAD_ROUNDS", 3))
DRAIN_ROUNDS = int(os.environ.get("BENCH_DRAIN_ROUNDS", 3))
RATE = 8000
FIRST_PRESS = 1.0
PRESS_EVERY = 0.4
PREFIX = "edge-recorder"
MiB = 1 << 20


class BenchBroker(Broker):
    """The tests' Mosquitto, with no cap on the QoS 1 messages it queues for a slow subscriber.

    Mosquitto's default (``max_queued_messages 1000``) drops QoS 1 messages for a
    subscriber that falls more than 1000 behind; in the drain run the publisher
    can outrun a Python subscriber, and every event must be counted.
    """

    def _config(self) -> Path:
        path = super()._config()
        path.write_text(path.read_text() + "max_queued_messages 0\n")
        return path


def _client(client_id: str) -> mqtt.Client:
    return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)


def _each(results: list[dict], key: str) -> str:
    return ", ".join("-" if r[key] is None else f"{r[key]:.2f}" for r in results)


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


# -- 1. recording end to recording.finished at a subscriber ---------------------------------------

# The daemon's own command line, with the --events writer noting (CLOCK_MONOTONIC) when the
# catalog transaction behind the event committed (the journal wakes delivery right after it) and
# when the line was written. The event line itself is unchanged; the note follows it.
_WRAPPED = """
import json, sys, time
from firmware.cli import run as run_command
from firmware.delivery.service import Delivery
committed = [0.0]
_wake = Delivery.wake
def wake(self):
    committed[0] = time.monotonic()
    _wake(self)
Delivery.wake = wake
def event_writer(target):
    def write(event):
        written = time.monotonic()
        sys.stdout.write(json.dumps(event, default=str) + "\\n")
        sys.stdout.flush()
        sys.stdout.write(f"@ {committed[0]!r} {written!r}\\n")
        sys.stdout.flush()
    return write
run_command.event_writer = event_writer
from firmware.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def event_latency(tmp: Path, broker: Broker) -> dict:
    """Run the daemon through RECORDINGS button-started recordings; times per recording.finished."""
    device = "bench-box"
    presses = [FIRST_PRESS + i * PRESS_EVERY for i in range(2 * RECORDINGS)]
    seconds = presses[-1] + 1.0
    box = Box.make(
        tmp / "latency",
        np.resize(counter_signal(8.0, RATE), int(seconds * RATE)),
        RATE,
        device={"id": device},
        mqtt={"url": broker.url, "prefix": PREFIX},
        sim={"pace": "realtime", "scenario": ", ".join(f"{t:.2f}=button" for t in presses)},
    )
    arrived: dict[str, float] = {}  # event id -> MQTT arrival
    kinds: list[str] = []
    subscribed = threading.Event()
    sub = _client(f"bench-latency-{uuid.uuid4().hex[:8]}")

    def on_message(client, userdata, message) -> None:
        at = time.monotonic()
        event = json.loads(message.payload)
        kinds.append(event["type"])
        if event["type"] == "recording.finished":
            arrived[event["id"]] = at

    sub.on_message = on_message
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{PREFIX}/{device}/events", qos=1)
    sub.on_subscribe = lambda c, u, mid, rc, p: subscribed.set()
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    if not subscribed.wait(10):
        raise RuntimeError("the subscriber did not subscribe")

    lines: list[tuple[float, bytes]] = []  # (arrival, line) in order
    argv = [sys.executable, "-c", _WRAPPED, "run", "--config", str(box.config), "--events", "-"]
    with open(box.root / "stderr.txt", "wb") as err:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=err)

        def read() -> None:
            for line in proc.stdout:
                lines.append((time.monotonic(), line))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        code = proc.wait(timeout=seconds + 60)
        reader.join(timeout=10)
    if code != 0:
        raise RuntimeError(f"edge-recorder run failed ({code}): {(box.root / 'stderr.txt').read_text()[-1500:]}")

    finished: list[dict] = []
    for (at, line), (_, note) in itertools.pairwise(lines):
        if not line.startswith(b"{"):
            continue
        event = json.loads(line)
        if event["type"] != "recording.finished":
            continue
        _, committed, written = note.split()
        finished.append(
            {"id": event["id"], "stdout": at, "committed": float(committed), "written": float(written), "event": event}
        )
    deadline = time.monotonic() + 10
    while len(arrived) < len(finished) and time.monotonic() < deadline:
        time.sleep(0.05)
    sub.loop_stop()
    sub.disconnect()
    missing = [f["id"] for f in finished if f["id"] not in arrived]
    for f in finished:
        f["mqtt"] = arrived.get(f["id"])
    return {"finished": finished, "missing": missing, "kinds": kinds}


def report_latency(r: dict) -> dict:
    got = [f for f in r["finished"] if f["mqtt"] is not None]
    ms = {
        "mqtt - stdout": [(f["mqtt"] - f["stdout"]) * 1000 for f in got],
        "stdout pipe (arrival - write)": [(f["stdout"] - f["written"]) * 1000 for f in r["finished"]],
        "commit - write of the line": [(f["written"] - f["committed"]) * 1000 for f in r["finished"]],
        "commit - mqtt arrival": [(f["mqtt"] - f["committed"]) * 1000 for f in got],
    }
    print(
        f"recording.finished: {len(r['finished'])} of {RECORDINGS} recordings on stdout, {len(got)} at the "
        f"subscriber ({len(r['missing'])} missing); events at the subscriber: "
        + ", ".join(f"{k} {r['kinds'].count(k)}" for k in sorted(set(r["kinds"])))
    )
    for name, values in ms.items():
        if values:
            print(
                f"  {name:32s} p50 {_pct(values, 50):7.2f} ms, p99 {_pct(values, 99):7.2f} ms, "
                f"min {min(values):7.2f}, max {max(values):7.2f}"
            )
    return ms


# -- 2. outbox drain after an outage --------------------------------------------------------------

# A subscriber in its own process (its own interpreter lock), counting distinct events.
_SUBSCRIBER = """
import json, sys, time, uuid
import paho.mqtt.client as mqtt
host, port, topic, expected = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
seen = set()
times = {"first": None, "last": None, "count": 0}
done = [False]
def on_message(client, userdata, message):
    now = time.monotonic()
    times["first"] = times["first"] or now
    times["last"] = now
    times["count"] += 1
    seen.add(bytes(message.payload))
    if len(seen) >= expected:
        done[0] = True
def on_subscribe(client, userdata, mid, reason_codes, properties):
    print("ready", flush=True)
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-counter-" + uuid.uuid4().hex[:8], protocol=mqtt.MQTTv5)
c.on_message = on_message
c.on_subscribe = on_subscribe
c.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
c.connect(host, port)
deadline = time.monotonic() + float(sys.argv[5])
while not done[0] and time.monotonic() < deadline:
    c.loop(timeout=0.1)
c.disconnect()
print(json.dumps({**times, "distinct": len(seen)}), flush=True)
"""


class Counter:
    """The subscriber process: ``start()`` returns once it is subscribed; ``result()`` once it has them all."""

    def __init__(self, broker: Broker, topic: str, expected: int, timeout: float = 300) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SUBSCRIBER, broker.host, str(broker.port), topic, str(expected), str(timeout)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the counting subscriber did not start")

    def result(self) -> dict:
        out, _ = self.proc.communicate(timeout=600)
        return json.loads(out.strip().splitlines()[-1])


def payloads_like(event: dict, count: int) -> list[dict]:
    """``count`` copies of a real event, each with its own id."""
    return [{**event, "id": str(uuid.uuid4())} for _ in range(count)]


def drain_link(tmp: Path, broker: Broker, payloads: list[dict], run: int) -> dict:
    device = f"bench-drain-{run}"
    catalog = Catalog(tmp / f"drain-{run}.sqlite3")
    t0 = time.perf_counter()
    catalog.enqueue([OutboxItem("event", "mqtt", p) for p in payloads])
    filled = time.perf_counter() - t0
    outbox = Outbox(catalog)
    assert outbox.depth("event") == len(payloads)
    counter = Counter(broker, f"{PREFIX}/{device}/events", len(payloads))
    link = Link(BrokerSettings.from_url(broker.url), device, PREFIX, outbox, snapshot=lambda: {"state": "idle"})
    started = time.monotonic()
    cpu0 = time.process_time()
    link.start()
    deadline = started + 600
    while link.published < len(payloads) and time.monotonic() < deadline:
        time.sleep(0.002)
    emptied = time.monotonic()
    cpu = time.process_time() - cpu0
    got = counter.result()
    depth = outbox.depth("event")
    link.stop()
    catalog.close()
    return {
        "seconds": emptied - started,
        "last_arrival": got["last"] - started if got["last"] else None,
        "arrived": got["count"],
        "distinct": got["distinct"],
        "left": depth,
        "fill": filled,
        "cpu": cpu,
    }


def drain_baseline(broker: Broker, payloads: list[bytes], run: int) -> dict:
    topic = f"{PREFIX}/bench-plain-{run}/events"
    counter = Counter(broker, topic, len(payloads))
    acked = [0]
    all_acked = threading.Event()
    connected = threading.Event()
    # The Link's window, kept here rather than in paho's queue: paho's message ids are 16 bits, and
    # with more than 65535 messages queued at once they collide and the publisher stalls.
    window = threading.BoundedSemaphore(IN_FLIGHT)

    def on_publish(client, userdata, mid, reason_code, properties) -> None:
        acked[0] += 1
        window.release()
        if acked[0] >= len(payloads):
            all_acked.set()

    client = _client(f"bench-plain-{run}")
    client.max_inflight_messages_set(IN_FLIGHT)
    client.on_publish = on_publish
    client.on_connect = lambda c, u, f, rc, p: connected.set()
    started = time.monotonic()
    cpu0 = time.process_time()
    client.connect(broker.host, broker.port)
    client.loop_start()
    connected.wait(10)
    for payload in payloads:
        window.acquire()
        client.publish(topic, payload, qos=1)
    all_acked.wait(600)
    done = time.monotonic()
    cpu = time.process_time() - cpu0
    got = counter.result()
    client.loop_stop()
    client.disconnect()
    return {
        "seconds": done - started,
        "last_arrival": got["last"] - started if got["last"] else None,
        "arrived": got["count"],
        "distinct": got["distinct"],
        "cpu": cpu,
    }


def drains(tmp: Path, broker: Broker, template: dict) -> None:
    """DRAIN_ROUNDS rounds of the Link and the plain client, interleaved, on fresh copies of one real event."""
    links, plains = [], []
    for run in range(DRAIN_ROUNDS):
        payloads = payloads_like(template, EVENTS)
        links.append(drain_link(tmp, broker, payloads, run))
        plains.append(drain_baseline(broker, [json.dumps(p).encode() for p in payloads], run))
    size = statistics.mean(len(json.dumps(p)) for p in payloads)
    print(f"drain of {EVENTS} events ({size:.0f} B of JSON each), {DRAIN_ROUNDS} rounds:")
    for label, results in (("Link, to an empty outbox", links), ("plain paho QoS 1, to the last PUBACK", plains)):
        rates = [EVENTS / r["seconds"] for r in results]
        lost = [EVENTS - r["distinct"] for r in results]
        copies = sum(r["arrived"] - r["distinct"] for r in results)
        print(
            f"  {label:38s} median {statistics.median(rates):6.0f} events/s (min {min(rates):.0f}, "
            f"max {max(rates):.0f}); seconds {_each(results, 'seconds')}; "
            f"last arrival at {_each(results, 'last_arrival')} s; "
            f"CPU of this process median {statistics.median(r['cpu'] for r in results):.2f} s; "
            + ("every event arrived" if not any(lost) else f"EVENTS MISSING at the subscriber: {lost}")
            + f", {copies} duplicates"
            + (f"; left in the outbox {[r['left'] for r in results]}" if "left" in results[0] else "")
        )
    print(f"  filling the outbox ({EVENTS} rows, one transaction): {statistics.median(r['fill'] for r in links):.2f} s")


# -- 3. HTTP upload of a large file -------------------------------------------------------------------

_UPLOADER = """
import hashlib, json, sys, time
from pathlib import Path
from firmware.delivery.uploads import Credentials, upload

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

args = json.loads(sys.argv[1])
warm = Path(args["path"]).with_name("warm-up.bin")
warm.write_bytes(b"warm")
# A tiny upload first, so lazily imported modules are not counted as upload memory.
upload(warm, args["url"], "warm-up.bin", content_type="audio/wav", credentials=Credentials(),
       sha256=hashlib.sha256(b"warm").hexdigest())
try:
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to now
    reset = True
except OSError:
    reset = False
before = status("VmRSS")
t0 = time.perf_counter()
c0 = time.process_time()
location = upload(Path(args["path"]), args["url"], "big.wav", sha256=args["sha"], content_type="audio/wav",
                  credentials=Credentials())
seconds = time.perf_counter() - t0
cpu = time.process_time() - c0
print(json.dumps({"growth": status("VmHWM") - before, "reset": reset, "seconds": seconds, "cpu": cpu,
                  "location": location}))
"""


def make_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    rng = np.random.default_rng(4)
    with open(path, "wb") as out:
        left = size
        while left:
            block = rng.integers(0, 256, min(left, 8 * MiB), dtype=np.uint8).tobytes()
            digest.update(block)
            out.write(block)
            left -= len(block)
    return digest.hexdigest()


def upload_in_child(path: Path, url: str, sha: str) -> dict:
    args = {"path": str(path), "url": url, "sha": sha}
    done = subprocess.run(
        [sys.executable, "-c", _UPLOADER, json.dumps(args)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    if done.returncode:
        raise RuntimeError(f"upload failed: {done.stderr[-1500:]}")
    return json.loads(done.stdout)


def upload_baseline(path: Path, url: str, sha: str) -> tuple[str, float]:
    curl = shutil.which("curl")
    headers = {"X-Content-SHA256": sha, "Content-Type": "audio/wav"}
    t0 = time.perf_counter()
    if curl:
        done = subprocess.run(
            [curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-T", str(path), url]
            + [arg for key, value in headers.items() for arg in ("-H", f"{key}: {value}")],
            capture_output=True,
            text=True,
            timeout=600,
        )
        seconds = time.perf_counter() - t0
        if done.stdout != "201":
            raise RuntimeError(f"curl -T: {done.stdout} {done.stderr}")
        return "curl -T", seconds
    import requests

    with open(path, "rb") as body:
        response = requests.put(url, data=body, headers=headers, timeout=600)
    seconds = time.perf_counter() - t0
    response.raise_for_status()
    return "requests.put(file)", seconds


def uploads(tmp: Path) -> None:
    size = UPLOAD_MB * MiB
    path = tmp / "long.wav"
    sha = make_file(path, size)
    ours, theirs = [], []
    with FlakyHttpServer(keep_bodies_up_to=0) as server:
        for _ in range(UPLOAD_ROUNDS):
            r = upload_in_child(path, server.url + "/in/", sha)
            got = server.received[-1]
            if (got.length, got.sha256, got.status) != (size, sha, 201):
                raise RuntimeError(f"the server got {got.length} bytes, sha256 {got.sha256}, answered {got.status}")
            ours.append(r)
            name, seconds = upload_baseline(path, server.url + "/in/baseline.wav", sha)
            got = server.received[-1]
            if (got.length, got.sha256, got.status) != (size, sha, 201):
                raise RuntimeError(f"{name}: the server got {got.length} bytes, answered {got.status}")
            theirs.append(seconds)
    mb = size / MiB
    speeds = [mb / r["seconds"] for r in ours]
    growth = [r["growth"] / 1024 for r in ours]
    print(
        f"HTTP PUT of {mb:.0f} MiB with upload() on loopback ({UPLOAD_ROUNDS} rounds): "
        f"median {statistics.median(speeds):.0f} MiB/s (min {min(speeds):.0f}, max {max(speeds):.0f}), "
        f"CPU {statistics.median(r['cpu'] for r in ours):.2f} s; peak RSS growth max {max(growth):.0f} KiB "
        f"(median {statistics.median(growth):.0f})" + ("" if all(r["reset"] for r in ours) else " (VmHWM NOT reset)")
    )
    base = [mb / s for s in theirs]
    print(
        f"  baseline {name} to the same server: median {statistics.median(base):.0f} MiB/s "
        f"(min {min(base):.0f}, max {max(base):.0f})"
    )
    path.unlink()


# -- main ---------------------------------------------------------------------------------------------


def main() -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        broker = BenchBroker(tmp / "broker").start()
        try:
            print(
                f"delivery: the daemon, {RECORDINGS} recordings, a button press every {PRESS_EVERY} s, "
                f"real time ({FIRST_PRESS + 2 * RECORDINGS * PRESS_EVERY + 1:.0f} s) ...",
                flush=True,
            )
            latency = event_latency(tmp, broker)
            report_latency(latency)
            template = latency["finished"][0]["event"]
            drains(tmp, broker, template)
        finally:
            broker.stop()
        uploads(tmp)
    print(f"delivery benchmark took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
