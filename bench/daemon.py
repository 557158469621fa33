"""The daemon (``edge-recorder run``) as a box runs it: speed, memory, start-up, storage writes, kill -9.

Reports:

1. real-time factor of the whole daemon (capture, core, spool, catalog,
   finalising) on one hour (``BENCH_SECONDS``) of 2-channel 16 kHz call audio
   served unpaced through ALSA's real ``file`` plugin, one dual recording
   started by the button at 1 s and running to the end, WAV and MP3 (an
   unpaced simulated source is lossless: the capture thread waits for the
   loop, which catches up in pieces of up to 0.5 s). Beside it, the core alone
   fed 20 ms periods and 1 s pieces, to show where the time goes;
2. the daemon's peak RSS (its own VmHWM, read as it exits) in those runs;
3. time from ``Popen`` to ``READY=1`` on a ``NOTIFY_SOCKET`` the benchmark
   binds, median of 10, beside ``python -c "import numpy"`` sending the same;
4. bytes the daemon wrote to storage (``/proc/<pid>/io`` ``write_bytes``) per
   byte of audio recorded, in the WAV run, at the default fsync cadence;
5. audio lost to ``kill -9`` at a random moment of a realtime recording
   (``BENCH_KILLS`` kills, 4 at a time), after the restart recovered it;
6. the daemon at real-time pace, as a box spends its life: CPU per second of
   audio over ``BENCH_REALTIME_SECONDS`` (30) of a WAV line fed in real time,
   recording (the button at 1 s) with the four DTMF key sequences and audio
   call detection configured, beside the same daemon idle (no recording, no
   sequences) in the same run; both include the start-up, so their difference
   is what recording costs.

Run: ``PYTHONPATH=. .venv/bin/python -m bench.daemon``.
"""

from __future__ import annotations

# Before numpy: firmware limits numpy's BLAS to one thread, as in the daemon (the in-process
# core figures would otherwise include the thread pool spinning on the second core).
import firmware  # noqa: F401

# isort: split
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

from firmware.core import InputLayout, Recorder, RecordingOptions, Start
from tests.alsa_file import AlsaFile, alsa_file_device
from tests.daemon_run import ROOT, Box, Result, audio_of, counter_signal, positions, write_toml

from .calls import write_call

SECONDS = float(os.environ.get("BENCH_SECONDS", 3600))
KILLS = int(os.environ.get("BENCH_KILLS", 100))
REALTIME_SECONDS = float(os.environ.get("BENCH_REALTIME_SECONDS", 30))
READY_RUNS = 10
RATE = 16000
BUTTON_AT = 1.0

# The daemon's own command line, run in-process so that it can report its own
# VmHWM and I/O counters as it exits (ru_maxrss would count the forked image of
# this benchmark process; /proc/<pid> is gone once it is reaped).

_MEASURED = """
import os, sys, time
from firmware.daemon.capture import CaptureThread
capture_ms = [0]
def _run(self, run=CaptureThread._run):
    try:
        run(self)
    finally:
        capture_ms[0] = round(time.thread_time() * 1000)
CaptureThread._run = _run
from firmware.cli.main import main
code = main(sys.argv[1:])
loop_ms = round(time.thread_time() * 1000)
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
io = dict(line.split(":", 1) for line in open("/proc/self/io"))
sys.stderr.write(
    f"\\nMEASURED VmHWM {status['VmHWM'].split()[0]} write_bytes {io['write_bytes'].strip()} "
    f"wchar {io['wchar'].strip()} capture_ms {capture_ms[0]} loop_ms {loop_ms}\\n"
)
sys.exit(code)
"""


def _sections(state: Path, alsa: AlsaFile, fmt: str, frames: int, scenario: str) -> dict:
    return {
        "device": {"id": "bench-box"},
        "audio": {"capture": alsa.device, "sample_rate": RATE, "channels": 2},
        "recording": {"format": fmt, "channels": "dual"},
        "spool": {"directory": str(state / "spool")},
        "catalog": {"path": str(state / "catalog.sqlite3")},
        "sim": {"enabled": True, "capture": "alsa", "frames": frames, "scenario": scenario},
    }


def _rows(catalog: Path) -> list[dict]:
    db = sqlite3.connect(catalog)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM recordings ORDER BY date_created")]
    finally:
        db.close()


def daemon_run(tmp: Path, alsa: AlsaFile, fmt: str) -> dict:
    """One daemon on the whole file, recording from the button press at 1 s to the end of the input."""
    state = tmp / f"state-{fmt}"
    state.mkdir()
    config = write_toml(state / "config.toml", _sections(state, alsa, fmt, alsa.frames, f"{BUTTON_AT}=button"))
    argv = ["run", "--config", str(config), "--events", "-"]
    env = alsa.env
    with open(state / "events.jsonl", "wb") as out, open(state / "stderr.txt", "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", _MEASURED, *argv], cwd=ROOT, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    log = (state / "stderr.txt").read_text()
    if proc.returncode:
        raise RuntimeError(f"edge-recorder run ({fmt}) failed: {log[-1500:]}")
    fields = log.rsplit("MEASURED", 1)[1].split()
    measured = dict(zip(fields[::2], map(int, fields[1::2]), strict=True))
    # frames the loop filled with silence for audio the capture thread had to drop
    dropped = sum(
        int(line.split("capture gap of ")[1].split()[0]) for line in log.splitlines() if "capture gap of" in line
    )
    [row] = _rows(state / "catalog.sqlite3")
    if row["status"] != "completed":
        raise RuntimeError(f"the {fmt} recording did not complete: {row}")
    info = sf.info(row["path"])
    return {
        "cpu": usage.ru_utime + usage.ru_stime,
        "user": usage.ru_utime,
        "sys": usage.ru_stime,
        "wall": wall,
        "hwm_mb": measured["VmHWM"] / 1024,
        "write_bytes": measured["write_bytes"],
        "wchar": measured["wchar"],
        "audio_bytes": info.frames * info.channels * 2,
        "recorded": info.frames / info.samplerate,
        "end_reason": row["end_reason"],
        "dropped": dropped / RATE,
        "capture_cpu": measured["capture_ms"] / 1000,
        "loop_cpu": measured["loop_ms"] / 1000,
    }


def _ready_time(argv: list[str], env: dict, tmp: Path, run: int) -> float:
    """Seconds from Popen to READY=1 on a notify socket of our own."""
    path = tmp / f"notify-{run}.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(30)
    try:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            argv, cwd=ROOT, env={**env, "NOTIFY_SOCKET": str(path)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        while True:
            message = sock.recv(4096).decode()
            if "READY=1" in message.split("\n"):
                ready = time.perf_counter() - t0
                break
        _, err = proc.communicate(timeout=60)
        if proc.returncode:
            raise RuntimeError(f"{argv[:3]} failed: {err.decode()[-1000:]}")
        return ready
    finally:
        sock.close()
        path.unlink(missing_ok=True)


_NUMPY_READY = (
    "import numpy, os, socket\n"
    "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
    "s.sendto(b'READY=1', os.environ['NOTIFY_SOCKET'])\n"
)


def time_to_ready(tmp: Path, alsa: AlsaFile) -> tuple[list[float], list[float]]:
    """Daemon start to READY (fresh state each time, 10 s of ALSA file input) and the numpy baseline, interleaved."""
    daemon, baseline = [], []
    for run in range(READY_RUNS):
        state = tmp / f"ready-{run}"
        state.mkdir()
        config = write_toml(state / "config.toml", _sections(state, alsa, "wav", 10 * RATE, ""))
        argv = [sys.executable, "-m", "firmware.cli.main", "run", "--config", str(config), "--events", "-"]
        daemon.append(_ready_time(argv, alsa.env, tmp, run))
        baseline.append(_ready_time([sys.executable, "-c", _NUMPY_READY], alsa.env, tmp, run))
    return daemon, baseline


# -- kill -9 -----------------------------------------------------------------------------

KILL_RATE = 8000
KILL_BUTTON_AT = 0.3


def kill_while_recording(box: Box, rng: random.Random, rate: int) -> tuple[float, Result]:
    """Start ``box``'s daemon, ``kill -9`` it 0.05-3 s after its ``recording.started``, and restart it on a
    short silence so it recovers what the kill left: the seconds it had recorded, and the restart's result."""
    proc = box.start()
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"daemon ended before recording: {proc.stderr.read()[-800:]}")
        if '"type": "recording.started"' in line:
            started_at = time.monotonic()
            break
    time.sleep(rng.uniform(0.05, 3.0))
    killed_at = time.monotonic()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stdout.close()
    proc.stderr.close()
    silence = box.root / "silence.wav"
    sf.write(silence, np.zeros(800, np.int16), rate, subtype="PCM_16")
    box.sections["sim"] = {"enabled": True, "audio": str(silence), "pace": "fast", "scenario": ""}
    return killed_at - started_at, box.run()


def _kill_and_recover(root: Path, seed: int) -> dict:
    """As tests/test_crash.py: kill -9 at a random moment of a realtime recording, restart, measure the loss."""
    rng = random.Random(seed)
    box = Box.make(
        root,
        counter_signal(8.0, KILL_RATE),
        KILL_RATE,
        sim={"scenario": f"{KILL_BUTTON_AT}=button", "pace": "realtime"},
    )
    alive, again = kill_while_recording(box, rng, KILL_RATE)
    if again.code != 0:
        return {"problem": f"restart failed: {again.stderr[-500:]}"}
    rows = box.rows()
    if len(rows) != 1 or rows[0]["end_reason"] != "recovered":
        return {"problem": f"not recovered: {rows}"}
    if rows[0]["status"] == "absent":
        # killed before the core had released any audio to the spool: nothing was kept, all of it is lost
        return {"loss": alive, "empty": True, "alive": alive}
    if rows[0]["status"] != "completed":
        return {"problem": f"recovered as {rows[0]['status']}: {rows}"}
    kept = positions(audio_of(rows[0]))
    if not (np.diff(kept) == 1).all():
        return {"problem": "frames lost or repeated inside the recording"}
    # where the input was at the kill: the first kept frame plus the wall time since recording.started
    at_kill = kept[0] + alive * KILL_RATE
    return {"loss": (at_kill - (kept[-1] + 1)) / KILL_RATE, "empty": False, "alive": alive}


def kill_losses(tmp: Path) -> list[dict]:
    roots = [tmp / f"kill{i}" for i in range(KILLS)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(_kill_and_recover, roots, range(KILLS)))


def realtime_cpu(tmp: Path, wav: Path, recording: bool) -> float:
    """CPU seconds per second of audio of the daemon fed ``wav`` at real-time pace."""
    state = tmp / f"realtime-{'recording' if recording else 'idle'}"
    state.mkdir()
    sections = {
        "device": {"id": "bench-box"},
        "audio": {"sample_rate": RATE, "channels": 2},
        "recording": {"format": "wav", "channels": "dual"},
        "spool": {"directory": str(state / "spool")},
        "catalog": {"path": str(state / "catalog.sqlite3")},
        "sim": {"enabled": True, "audio": str(wav), "pace": "realtime", "scenario": ""},
    }
    if recording:
        sections["sim"]["scenario"] = f"{BUTTON_AT}=button"
        sections["dtmf"] = {"start": "*1", "stop": "*2", "pause": "*3", "resume": "*4"}
        sections["call"] = {"detect": "audio"}
    config = write_toml(state / "config.toml", sections)
    with open(state / "stderr.txt", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "firmware.cli.main", "run", "--config", str(config)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"edge-recorder run (real time) failed: {(state / 'stderr.txt').read_text()[-1500:]}")
    if recording and [r["status"] for r in _rows(state / "catalog.sqlite3")] != ["completed"]:
        raise RuntimeError("the real-time recording did not complete")
    return (usage.ru_utime + usage.ru_stime) / REALTIME_SECONDS


def core_pieces(path: Path, piece: int, seconds: float) -> float:
    """CPU seconds per hour of audio for the core alone, fed ``piece`` frames at a time, as the daemon's core is set up."""
    core = Recorder(InputLayout(RATE, 2))
    core.send(Start(RecordingOptions.from_mapping({"channels": "dual", "format": "wav"})))
    spent = 0.0
    with sf.SoundFile(path) as fh:
        for block in fh.blocks(RATE, dtype="int16", always_2d=True, frames=int(seconds * RATE)):
            t0 = time.process_time()
            for at in range(0, len(block), piece):
                core.feed(block[at : at + piece])
            spent += time.process_time() - t0
    return spent * 3600 / seconds


def main() -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        wav = tmp / "call.wav"
        print(f"daemon: making {SECONDS / 60:.0f} min of 2-channel 16 kHz call audio ...", flush=True)
        write_call(wav, SECONDS, RATE)
        (tmp / "alsa").mkdir()
        alsa = alsa_file_device(tmp / "alsa", wav)
        # where the time goes: the daemon feeds its core one 20 ms period at a time
        part = min(SECONDS, 600)
        periods, seconds = core_pieces(wav, RATE // 50, part), core_pieces(wav, RATE, part)
        print(
            f"core alone, as in the daemon, first {part / 60:.0f} min: {periods:.1f} CPU s per hour fed 20 ms periods "
            f"({3600 / periods:.0f}x), {seconds:.1f} CPU s fed 1 s pieces ({3600 / seconds:.0f}x)",
            flush=True,
        )
        live = tmp / "live.wav"
        sf.write(live, sf.read(wav, frames=int(REALTIME_SECONDS * RATE), dtype="int16")[0], RATE, subtype="PCM_16")
        wav.unlink()
        idle, busy = realtime_cpu(tmp, live, recording=False), realtime_cpu(tmp, live, recording=True)
        print(
            f"run at real-time pace ({REALTIME_SECONDS:.0f} s of audio, start-up included): recording with key "
            f"sequences and call detection {busy * 1000:.1f} ms CPU per second of audio ({busy * 100:.2f} % of one "
            f"core); idle {idle * 1000:.1f} ms per second; recording costs {(busy - idle) * 1000:.1f} ms per second "
            f"more ({(busy - idle) * 20:.3f} ms per 20 ms period); ratio {busy / idle:.2f}",
            flush=True,
        )
        for fmt in ("wav", "mp3"):
            r = daemon_run(tmp, alsa, fmt)
            print(
                f"run --format {fmt}: {SECONDS / r['cpu']:4.0f}x real time "
                f"({r['cpu']:.1f} CPU s: user {r['user']:.1f}, sys {r['sys']:.1f}), wall {r['wall']:.1f} s "
                f"({SECONDS / r['wall']:.0f}x); recorded {r['recorded']:.1f} s ({r['end_reason']}), "
                f"{r['dropped']:.0f} s dropped, "
                f"peak RSS {r['hwm_mb']:.0f} MB (VmHWM); CPU s: capture thread {r['capture_cpu']:.1f}, "
                f"main thread {r['loop_cpu']:.1f} (start-up, the loop, finalising)",
                flush=True,
            )
            if fmt == "wav":
                print(
                    f"run --format wav, bytes written to storage per audio byte: "
                    f"{r['write_bytes'] / r['audio_bytes']:.3f} "
                    f"({r['write_bytes']} write_bytes / {r['audio_bytes']} audio bytes; wchar "
                    f"{r['wchar'] / r['audio_bytes']:.2f}x, which counts ALSA's file plugin writing /dev/null)",
                    flush=True,
                )
        daemon, baseline = time_to_ready(tmp, alsa)
        print(
            f"time to READY=1 (median of {READY_RUNS}): daemon {statistics.median(daemon):.3f} s "
            f"(min {min(daemon):.3f}, max {max(daemon):.3f}); "
            f'python -c "import numpy" {statistics.median(baseline):.3f} s',
            flush=True,
        )
        results = kill_losses(tmp)
        losses = [r["loss"] for r in results if "loss" in r]
        empty = [r["alive"] for r in results if r.get("empty")]
        if losses:
            p99 = float(np.percentile(losses, 99))
            print(
                f"kill -9 ({len(losses)} of {KILLS} measured, 4 at a time): audio lost max {max(losses):.3f} s, "
                f"p99 {p99:.3f} s, median {statistics.median(losses):.3f} s; "
                f"{len(empty)} kept no audio (recovered as absent"
                + (f"; killed at most {max(empty):.3f} s after recording.started)" if empty else ")")
            )
        for r in results:
            if "problem" in r:
                print(f"kill -9 problem: {r['problem']}")
    print(f"daemon benchmark took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
