"""The daemon at real-time pace, as a box spends its life, beside the offline cost of the same audio.

For each case the real daemon (``edge-recorder run``, its own process) is fed a 16 kHz 2-channel call
(``bench/calls.py``) through ``[sim] pace = "realtime"`` for ``BENCH_REALTIME_WARMUP`` seconds, then
measured over the next ``BENCH_REALTIME_SECONDS`` (60): its CPU share of one core from
``/proc/<pid>/stat`` (user + system, every thread, sampled at the start and the end of the window, so
start-up is left out), and the CPU cost of each turn of its audio loop (``time.thread_time`` between
turns, the loop's thread only) as p50, p99 and max. The cases:

- ``idle``: an empty config (no recording, nothing configured), listening;
- ``recording``: one dual recording, started by the button before the window;
- ``connected idle`` / ``connected recording``: the same with a broker (a real Mosquitto on loopback,
  events, state and heartbeat) and the HTTP API listening.

Beside them, in the same run, the offline cost of the same audio: ``edge-recorder record --format wav``
on the window's seconds of the call, CPU from ``getrusage``, as a share of the audio's duration, so the
two figures compare like for like (what a second of audio costs live and as fast as it can go).

And what the desk waits for (``latency``): the box run in this process at real-time pace with gpiozero's
mock pins, the record button pressed ``BENCH_PRESSES`` times at random moments (a press, then a release
after 0.3 s): wall time from the press to the LED's change, debounce (``[gpio] bounce_ms``, 30) included;
and a DTMF start sequence (``*1``) in the audio, with a buzzer: wall time from the end of the sequence's
last key, as the real-time pace plays it, to the start beep on the buzzer.

Run: ``PYTHONPATH=. .venv/bin/python -m bench.realtime``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from tests.broker import Broker, free_port
from tests.daemon_run import ROOT, write_toml

from .calls import write_call

SECONDS = float(os.environ.get("BENCH_REALTIME_SECONDS", 60))
PRESSES = int(os.environ.get("BENCH_PRESSES", 20))
WARMUP = float(os.environ.get("BENCH_REALTIME_WARMUP", 5))
RATE = 16000
TOKEN = "bench-token-0123456789abcdefghijklmnopqrstuvw"

# The daemon's own command line, with the loop's turns timed: Box wraps the loop's ``between`` hook, called
# once per turn; the CPU the loop's thread spent between two calls is one turn's cost.
_TIMED = """
import json, os, sys, time
from firmware.daemon import app
turns = []
last = [None]
between = app.Box._between_periods
def timed(self):
    now = time.thread_time()
    if last[0] is not None:
        turns.append((time.monotonic(), now - last[0]))
    last[0] = now
    between(self)
app.Box._between_periods = timed
from firmware.cli.main import main
code = main(sys.argv[1:])
with open(os.environ["BENCH_TURNS"], "w") as out:
    json.dump(turns, out)
sys.exit(code)
"""


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))


def live(tmp: Path, name: str, wav: Path, sections: dict) -> dict:
    """One daemon at real-time pace: its CPU share over the window, and its loop's turns in it."""
    state = tmp / name.replace(" ", "-")
    state.mkdir()
    base = {
        "device": {"id": "bench-box"},
        "audio": {"sample_rate": RATE, "channels": 2},
        "recording": {"format": "wav", "channels": "dual"},
        "spool": {"directory": str(state / "spool")},
        "catalog": {"path": str(state / "catalog.sqlite3")},
        "sim": {"enabled": True, "audio": str(wav), "pace": "realtime"},
    }
    for section, keys in sections.items():
        base.setdefault(section, {}).update(keys)
    config = write_toml(state / "config.toml", base)
    turns_file = state / "turns.json"
    env = {**os.environ, "BENCH_TURNS": str(turns_file)}
    hz = os.sysconf("SC_CLK_TCK")
    with open(state / "stderr.txt", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", _TIMED, "run", "--config", str(config)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        time.sleep(WARMUP)
        start_ticks, start_wall = _cpu_ticks(proc.pid), time.monotonic()
        time.sleep(SECONDS)
        ticks, end_wall = _cpu_ticks(proc.pid) - start_ticks, time.monotonic()
        wall = end_wall - start_wall
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    if proc.returncode:
        raise RuntimeError(f"edge-recorder run ({name}) failed: {(state / 'stderr.txt').read_text()[-1500:]}")
    # the turns of the window (CLOCK_MONOTONIC is the machine's: the daemon's and this process's agree)
    window = np.array([cost for at, cost in json.loads(turns_file.read_text()) if start_wall <= at <= end_wall])
    return {
        "share": ticks / hz / wall,
        "turns": len(window) / wall,
        "p50": float(np.percentile(window, 50)),
        "p99": float(np.percentile(window, 99)),
        "max": float(window.max()),
    }


def latency(tmp: Path) -> tuple[list[float], list[float]]:
    """Seconds from each button press to the LED's change, and from the end of each key sequence to its beep."""
    import random
    import threading

    from firmware import config as cfg
    from firmware.daemon.app import Box
    from firmware.media.synth import dtmf_tone

    rng = random.Random(7)
    rate = 8000
    # The presses first, over PRESSES x 3 s of silence; then a key sequence *1 every 4 s (its last key ends
    # at ``ends``), each starting a 1.5 s recording with its beep.
    first = PRESSES * 3.0 + 5.0
    audio = np.zeros(round((first + 120) * rate))
    ends = []
    starts = first + np.cumsum(np.random.default_rng(7).uniform(3.5, 4.5, 28))  # at every phase of a block
    for start in starts:
        at = round(start * rate)
        for key in "*1":
            tone = dtmf_tone(key, rate, 0.08)
            audio[at : at + tone.size] = tone
            at += tone.size + round(0.08 * rate)
        ends.append((at - round(0.08 * rate)) / rate)
    wav = tmp / "keys.wav"
    sf.write(wav, np.round(audio).astype(np.int16), rate, subtype="PCM_16")
    state = tmp / "latency"
    sections = {
        "device": {"id": "bench-box"},
        "audio": {"sample_rate": rate, "channels": 1},
        "recording": {"format": "wav", "beep": True, "max_length": 1.5},
        "dtmf": {"start": "*1"},
        "gpio": {"pin_factory": "mock", "buzzer": 22},
        "spool": {"directory": str(state / "spool")},
        "catalog": {"path": str(state / "catalog.sqlite3")},
        "sim": {"enabled": True, "audio": str(wav), "pace": "realtime"},
    }
    box = Box(cfg.load(write_toml(tmp / "latency.toml", sections)))
    runner = threading.Thread(target=box.run)
    started = time.monotonic()
    runner.start()
    panel = box.hw.panel
    button, led, buzzer = (panel.mock_pin(name) for name in ("record_button", "led", "buzzer"))
    presses, beeps = [], []
    try:
        # the beeps of the key sequences: watched throughout; the presses go between the sequences
        def watch_buzzer() -> None:
            was = False
            while runner.is_alive():
                now, on = time.monotonic(), bool(buzzer.state)
                if on and not was:
                    beeps.append(now - started)
                was = on
                time.sleep(0.0005)

        watcher = threading.Thread(target=watch_buzzer, daemon=True)
        watcher.start()
        time.sleep(1.0)
        for _ in range(PRESSES):
            time.sleep(rng.uniform(2.0, 2.6))
            before = bool(led.state)
            button.drive_low()
            pressed = time.monotonic()
            while bool(led.state) == before and time.monotonic() - pressed < 2:
                time.sleep(0.0005)
            presses.append(time.monotonic() - pressed)
            time.sleep(0.3)
            button.drive_high()
        if bool(led.state):  # the last press started a recording: stop it before the sequences
            button.drive_low()
            time.sleep(0.3)
            button.drive_high()
        time.sleep(first + 120 - (time.monotonic() - started))
    finally:
        box.stop()
        runner.join(timeout=30)
    # a beep belongs to the sequence that ended last before it (the button's own recordings beep too)
    anchor = box.loop.mono_origin - started
    heard = []
    for end in ends:
        wall = anchor + end
        after = [b - wall for b in beeps if 0 <= b - wall < 1.0]
        if after:
            heard.append(min(after))
    return presses, heard


def offline(tmp: Path, wav: Path, seconds: float) -> float:
    """CPU seconds per second of audio of ``edge-recorder record --format wav`` on ``seconds`` of ``wav``."""
    part = tmp / "offline.wav"
    sf.write(part, sf.read(wav, frames=int(seconds * RATE), dtype="int16")[0], RATE, subtype="PCM_16")
    out = tmp / "offline"
    argv = [sys.executable, "-m", "firmware.cli.main", "record", str(part), "-o", str(out), "--format", "wav"]
    argv += ["--channels", "dual"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"edge-recorder record failed: {proc.stderr.read().decode()[-1500:]}")
    # the same command on one second, to take its start-up out
    one = tmp / "one.wav"
    sf.write(one, sf.read(wav, frames=RATE, dtype="int16")[0], RATE, subtype="PCM_16")
    proc1 = subprocess.Popen(
        [*argv[:4], str(one), *argv[5:]], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, _, usage1 = os.wait4(proc1.pid, 0)
    spent = (usage.ru_utime + usage.ru_stime) - (usage1.ru_utime + usage1.ru_stime)
    return spent / (seconds - 1)


def main() -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        wav = tmp / "call.wav"
        total = WARMUP + SECONDS + 10
        write_call(wav, total, RATE)
        broker = Broker(tmp / "broker").start()
        try:
            connected = {
                "mqtt": {"url": broker.url, "heartbeat": 30.0, "command_auth": "broker"},
                "http": {"listen": f"127.0.0.1:{free_port()}", "tokens": TOKEN},
            }
            button = {"sim": {"scenario": "1=button"}}
            cases = {
                "idle": {},
                "recording": button,
                "connected idle": connected,
                "connected recording": {**connected, **button},
            }
            results = {}
            for case, sections in cases.items():
                if "http" in sections:  # a port of its own for each run
                    sections = {**sections, "http": {**sections["http"], "listen": f"127.0.0.1:{free_port()}"}}
                results[case] = live(tmp, case, wav, sections)
        finally:
            broker.stop()
        cost = offline(tmp, wav, SECONDS)
        presses, beeps = latency(tmp)
    print(f"The daemon at real-time pace ({SECONDS:.0f} s measured after {WARMUP:.0f} s, 16 kHz 2-channel call):")
    print("| case | CPU, % of one core | loop turns per s | turn p50 | turn p99 | turn max |")
    print("| --- | --- | --- | --- | --- | --- |")
    for case, r in results.items():
        print(
            f"| {case} | {r['share'] * 100:.2f} % | {r['turns']:.0f} | {r['p50'] * 1000:.2f} ms | "
            f"{r['p99'] * 1000:.2f} ms | {r['max'] * 1000:.2f} ms |"
        )
    print(
        f"offline, `record --format wav --channels dual` on the same {SECONDS:.0f} s: {cost * 100:.3f} % of the "
        f"audio's duration ({cost * 3600:.1f} CPU s per audio hour); recording live costs "
        f"{results['recording']['share'] / cost:.0f}x that"
    )
    for what, waits in (("button press to LED", presses), ("end of a key sequence to its beep", beeps)):
        w = np.array(waits) * 1000
        print(
            f"{what}: {len(w)} measured, median {np.median(w):.0f} ms, p90 {np.percentile(w, 90):.0f} ms, "
            f"max {w.max():.0f} ms"
        )
    print(f"realtime benchmark took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
