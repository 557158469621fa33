"""Real-time factor of the core and ``edge-recorder record`` on one hour of call audio.

Reports: the core alone fed 1 s pieces (DTMF and speech detection on both
tracks, one dual recording); the recording session the box runs (the same
recorder with four DTMF key sequences and audio call detection); the whole
``record`` command writing WAV and MP3
(reading, core, spool, finalising); the cost of one 20 ms period (p50, p99,
p99.9); DTMF detection alone; and the command's peak memory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from firmware.core import InputLayout, Recorder, RecordingOptions, Session, SessionRules, Start
from firmware.core.dtmf import DtmfDetector

from .calls import write_call

SECONDS = float(os.environ.get("BENCH_SECONDS", 3600))
RATE = 16000


def core_alone(path: Path) -> tuple[float, float]:
    """CPU seconds for the core fed 1 s pieces, and for DTMF detection alone."""
    core = Recorder(InputLayout(RATE, 2))
    core.send(Start(RecordingOptions.from_mapping({"channels": "dual", "end_on_silence": 0})))
    dets = [DtmfDetector(RATE), DtmfDetector(RATE)]
    spent = dtmf = 0.0
    with sf.SoundFile(path) as fh:
        for block in fh.blocks(RATE, dtype="int16", always_2d=True):
            t0 = time.process_time()
            core.feed(block)
            t1 = time.process_time()
            for ch, det in enumerate(dets):
                det.process(block[:, ch])
            spent += t1 - t0
            dtmf += time.process_time() - t1
    return spent, dtmf


#: The box's session as an installer would set it up: key sequences and calls noticed from speech.
BOX_RULES = SessionRules(
    sequences={"start": "*1", "stop": "*2", "pause": "*3", "resume": "*4"},
    detect="audio",
    idle_timeout=10.0,
)


def session_alone(path: Path, piece: int = RATE) -> float:
    """CPU seconds for the session the box runs, fed ``piece`` frames at a time."""
    session = Session(InputLayout(RATE, 2), rules=BOX_RULES)
    session.send(Start(RecordingOptions.from_mapping({"channels": "dual", "end_on_silence": 0})))
    spent = 0.0
    with sf.SoundFile(path) as fh:
        for block in fh.blocks(piece, dtype="int16", always_2d=True):
            t0 = time.process_time()
            session.feed(block)
            spent += time.process_time() - t0
    return spent


def periods(path: Path, count: int = 30000) -> np.ndarray:
    """Wall time of each 20 ms period fed to the core, in ms."""
    core = Recorder(InputLayout(RATE, 2))
    core.send(Start(RecordingOptions.from_mapping({"channels": "dual", "end_on_key": "#"})))
    out = []
    size = RATE // 50
    with sf.SoundFile(path) as fh:
        for i, block in enumerate(fh.blocks(size, dtype="int16", always_2d=True)):
            if i >= count:
                break
            t0 = time.perf_counter()
            core.feed(block)
            out.append((time.perf_counter() - t0) * 1000)
    return np.array(out)


_MEASURED = """
import sys
from firmware.cli.main import main
code = main(sys.argv[1:])
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
sys.stderr.write(f"\\nVmHWM {hwm.split()[1]}\\n")
sys.exit(code)
"""


def record_command(path: Path, fmt: str, out: Path) -> tuple[float, float]:
    """CPU seconds and peak RSS (MB) of one ``edge-recorder record`` process on the file.

    Peak RSS is the process's own VmHWM: ``ru_maxrss`` would also count the
    forked image of this (much larger) benchmark process.
    """
    argv = ["record", str(path), "--out", str(out), "--format", fmt, "--channels", "dual"]
    proc = subprocess.Popen([sys.executable, "-c", _MEASURED, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"edge-recorder record failed: {err[-500:]}")
    hwm_kb = int(err.rsplit("VmHWM", 1)[1].split()[0])
    return usage.ru_utime + usage.ru_stime, hwm_kb / 1024


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "call.wav"
        print(f"core speed: making {SECONDS / 60:.0f} min of 2-channel 16 kHz call audio ...", flush=True)
        write_call(path, SECONDS, RATE)
        core, dtmf = core_alone(path)
        print(f"core alone (1 s pieces):     {SECONDS / core:7.0f}x real time ({core:.2f} CPU s)")
        print(f"DTMF alone, both tracks:     {dtmf * 3600 / SECONDS:7.2f} CPU s per hour of audio")
        session = session_alone(path)
        print(f"session (1 s pieces):        {SECONDS / session:7.0f}x real time ({session:.2f} CPU s)")
        live = session_alone(path, RATE // 50)
        print(f"session (20 ms periods):     {SECONDS / live:7.0f}x real time ({live:.2f} CPU s)")
        for fmt in ("wav", "mp3"):
            cpu, rss = record_command(path, fmt, Path(tmp) / fmt)
            print(
                f"record --format {fmt}:         {SECONDS / cpu:7.0f}x real time ({cpu:.2f} CPU s), peak RSS {rss:.0f} MB"
            )
        ms = periods(path)
        p50, p99, p999 = np.percentile(ms, [50, 99, 99.9])
        print(f"one 20 ms period (n={ms.size}): p50 {p50:.3f} ms, p99 {p99:.3f} ms, p99.9 {p999:.3f} ms")


if __name__ == "__main__":
    main()
