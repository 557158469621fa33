"""``edge-recorder demo``: a simulated box records a short synthetic call.

The call is two tracks at 16 kHz: the front desk answers (outbound), the record
button is pressed (a beep goes into the recording's outbound track), the caller
speaks (inbound) and presses ``#``, which ends the recording where the key's tone
began. The call is written to ``demo-call.wav`` and heard by the very same
daemon as ``edge-recorder run`` (``--simulate``): WAV capture, mock GPIO pins
with the button pressed at 2 s, the spool and the catalog under ``--out``. The
events are printed as they happen, then the finished recording's catalog row.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import logging
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import soundfile as sf

from .. import config as cfg
from ..catalog import Catalog
from ..daemon.app import Box
from ..delivery.mqtt_receiver import READY
from ..media.speech import SpeechUnavailable, speak
from ..media.synth import dtmf_tone, mix
from . import exits
from .events import event_writer

log = logging.getLogger("edge-recorder.demo")

RATE = 16000
DESK = (0.3, "Front desk, good morning.")
BUTTON_AT = 2.0
CALLER = (2.6, "Hello, I would like to book a table for two on Friday evening, please. My number is on file.")
KEY = "#"
MOSQUITTO = "/usr/sbin/mosquitto"  # Debian's; /usr/sbin is not on every user's PATH
#: How long the receiver may take to start and subscribe (a Python start-up on a loaded Pi is seconds).
RECEIVER_START_SECONDS = 60.0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="a simulated box records a synthetic demo call", description=__doc__)
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        default=Path("demo-output"),
        help="directory for the call and the recording (default ./demo-output)",
    )
    p.add_argument("--realtime", action="store_true", help="feed the call at real time (default: as fast as possible)")
    p.add_argument("--local", action="store_true", help="no broker and receiver: print the box's own events")
    p.set_defaults(run=run)


def synthesize_call() -> tuple[np.ndarray, float]:
    """The demo call as int16 (n, 2) frames, left inbound, right outbound, and the key's time."""
    desk = speak(DESK[1], RATE, voice="en-us+f3")
    caller = speak(CALLER[1], RATE, voice="en-gb", pitch=40)
    key_at = CALLER[0] + len(caller) / RATE + 0.6
    total = int((key_at + 1.0) * RATE)
    call = np.zeros((total, 2), np.int16)
    mix(call, desk, int(DESK[0] * RATE), channel=1)
    mix(call, caller, int(CALLER[0] * RATE), channel=0)
    mix(call, dtmf_tone(KEY, RATE, seconds=0.12), int(key_at * RATE), channel=0)
    noise = np.random.default_rng(7).normal(0, 40, call.shape)
    call = np.clip(call + noise, -32768, 32767).astype(np.int16)
    return call, key_at


def write_demo_call(directory: Path) -> tuple[Path, str]:
    """Write the demo call into ``directory``; return its path and the panel scenario."""
    call, key_at = synthesize_call()
    directory.mkdir(parents=True, exist_ok=True)
    wav = directory / "demo-call.wav"
    with wav.open("wb") as file:  # a folder this user may not write is a PermissionError naming it, not libsndfile's
        sf.write(file, call, RATE, subtype="PCM_16", format="WAV")
    log.info(
        "demo call: %s (%.1f s, left inbound, right outbound); '%s' pressed at %.2f s",
        wav,
        len(call) / RATE,
        KEY,
        key_at,
    )
    return wav, f"{BUTTON_AT}=button"


def run(args: argparse.Namespace) -> int:
    try:
        wav, scenario = write_demo_call(args.out)
    except SpeechUnavailable as exc:
        return exits.fail(exits.SOFTWARE, f"{exc}; the README's demo command installs it")
    sections = {
        "device": {"id": "demo"},
        "audio": {"channels": 2},
        "recording": {"beep": True, "channels": "dual", "end_on_key": KEY, "format": "wav"},
        "spool": {"directory": str(args.out / "spool")},
        "catalog": {"path": str(args.out / "catalog.sqlite3")},
        "sim": {
            "enabled": True,
            "audio": str(wav),
            "scenario": scenario,
            "pace": "realtime" if args.realtime else "fast",
            "playback": str(args.out / "played-tones.wav"),
        },
    }
    with contextlib.ExitStack() as stack:
        central = None
        if args.local or _mosquitto() is None:
            if args.local:
                log.info("--local: no broker and no receiver; the box's own events follow")
            else:
                log.info(
                    "no broker: mosquitto is not installed (not on PATH, nor %s); the box's own events follow "
                    "(sudo apt-get install mosquitto for the whole loop)",
                    MOSQUITTO,
                )
            sinks = [event_writer("-")]
        else:
            try:
                central = stack.enter_context(Central(args.out / "central"))
            except RuntimeError as exc:
                return exits.fail(exits.UNAVAILABLE, str(exc))
            sections["mqtt"] = {"url": central.url, "heartbeat": 5}
            sections["upload"] = {"destination": "mqtt"}
            sinks = []
            log.info("a private Mosquitto on %s and a receiver storing into %s", central.url, central.store)
            log.info("what the central server sees (the box's MQTT events) follows")
        config = cfg.parse(sections, "demo")
        for stale in ("catalog.sqlite3", "catalog.sqlite3-wal", "catalog.sqlite3-shm"):
            (args.out / stale).unlink(missing_ok=True)  # each demo starts a fresh box
        shutil.rmtree(args.out / "spool", ignore_errors=True)
        log.info("the record button is pressed at %.1f s: beep, dual channels, end_on_key '%s'", BUTTON_AT, KEY)
        code = Box(config, sinks=sinks).run()
        stored, problem = None, None
        if central is not None:
            try:
                stored = central.wait_for_file()
            except RuntimeError as exc:
                problem = str(exc)
    catalog = Catalog(Path(config.catalog["path"]))
    rows = [r for r in catalog.list() if r["source"] == "button"]
    catalog.close()
    if not rows:
        return exits.fail(exits.SOFTWARE, "the demo recorded nothing")
    row = rows[0]
    log.info(
        "catalog row of %s: %s",
        row["id"],
        json.dumps({k: row[k] for k in ("status", "end_reason", "key", "duration", "size", "path")}),
    )
    if central is not None:
        if stored is None:
            return exits.fail(exits.UNAVAILABLE, f"the receiver did not store the recording: {problem}")
        log.info(
            "the uploaded file landed at %s (sha256 %s, verified by the receiver)", stored["path"], stored["sha256"]
        )
    return code


def _mosquitto() -> str | None:
    return shutil.which("mosquitto") or shutil.which(MOSQUITTO)


class Central:
    """The central side of the demo: a private Mosquitto, ``edge-recorder receive``, and an event subscriber."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.store = directory / "files"
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self._procs: list[subprocess.Popen] = []

    def __enter__(self) -> Central:
        try:
            return self._start()
        except BaseException:  # a half-started central must not outlive the demo (its broker holds our stdout)
            self.__exit__(None, None, None)
            raise

    def _start(self) -> Central:
        self.events: mqtt.Client | None = None
        conf = self.directory / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            f"user {getpass.getuser()}\nlog_dest none\n"
        )
        broker = subprocess.Popen(
            [_mosquitto() or MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._procs.append(broker)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or broker.poll() is not None:
                    raise RuntimeError("the private Mosquitto did not start") from None
                time.sleep(0.05)
        argv = [sys.executable, "-m", "firmware.cli.main", "receive", "--broker", self.url, "--store", str(self.store)]
        self.receiver_log = self.directory / "receiver.log"
        with self.receiver_log.open("w") as log_file:  # the child keeps its own descriptor
            self.receiver = subprocess.Popen([*argv, "--once", "1"], stdout=subprocess.PIPE, stderr=log_file, text=True)
        self._procs.append(self.receiver)
        self.events = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="demo-central", protocol=mqtt.MQTTv5)
        self.events.on_message = lambda c, u, m: print(m.payload.decode(), flush=True)
        subscribed = threading.Event()
        self.events.on_subscribe = lambda c, u, mid, codes, p: subscribed.set()
        self.events.connect("127.0.0.1", self.port)
        self.events.subscribe("edge-recorder/+/events", qos=1)
        self.events.loop_start()
        # Nothing is offered before the receiver has joined its group and the events are subscribed: the box
        # would otherwise offer its file to nobody, however busy the machine.
        deadline = time.monotonic() + RECEIVER_START_SECONDS
        while READY not in self.receiver_log.read_text() or not subscribed.is_set():
            if self.receiver.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the receiver did not start taking offers: {self.receiver_said()}")
            time.sleep(0.05)
        return self

    def receiver_said(self) -> str:
        """The receiver's log, for a failure message: its last lines, or that it said nothing."""
        lines = self.receiver_log.read_text().strip().splitlines()
        return " | ".join(lines[-5:]) if lines else "it said nothing"

    def wait_for_file(self, timeout: float = 60.0) -> dict:
        """The receiver's line for the file it stored; RuntimeError with what it said when there is none."""
        try:
            out, _ = self.receiver.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"no file stored within {timeout:g} s; the receiver said: {self.receiver_said()}"
            ) from None
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        if self.receiver.returncode != 0 or not lines:
            raise RuntimeError(
                f"the receiver exited with {self.receiver.returncode} and stored nothing: {self.receiver_said()}"
            )
        time.sleep(0.3)  # the last events reach the subscriber
        return lines[0]

    def __exit__(self, *exc) -> None:
        if self.events is not None:
            self.events.loop_stop()
            self.events.disconnect()
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
