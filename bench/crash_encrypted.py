"""Audio lost to ``kill -9`` with encryption at rest, beside the same without, in one run.

As ``tests/test_crash.py`` (and ``bench.daemon``'s kill -9 figure): the real
daemon records an 8 kHz mono sample counter at real-time pace, the button at
0.3 s; ``kill -9`` comes at a random moment 0.05-3 s after ``recording.started``
is read; a restart recovers the part (``end_reason = recovered``). The kept
frames (the ``.era`` file decrypted with the identity the benchmark holds) are
compared with where the input was at the kill. ``BENCH_KILLS`` kills (40) each,
plain and encrypted interleaved on the same seeds, 4 daemons at a time.

A recording recovered as ``absent`` lost everything it heard: its loss is the
time it ran. Under 0.2 s (``HOLD_BACK_SECONDS``) the core had released nothing
yet, so it heard nothing the file could hold; later it is counted as *heard but
absent*, which must never happen.

Run: ``BENCH_KILLS=40 PYTHONPATH=. .venv/bin/python -m bench.crash_encrypted``.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyrage

from firmware.core.engine import HOLD_BACK_SECONDS
from firmware.media import encrypted
from tests.daemon_run import Box, audio_of, counter_signal, positions

from .daemon import kill_while_recording

KILLS = int(os.environ.get("BENCH_KILLS", 40))
RATE = 8000
BUTTON_AT = 0.3


def kill_and_recover(root: Path, seed: int, identity: pyrage.x25519.Identity | None) -> dict:
    """One kill: the loss in seconds, or why it could not be measured."""
    rng = random.Random(seed)
    extra = {"encryption": {"public_key": str(identity.to_public())}} if identity else {}
    box = Box.make(
        root, counter_signal(8.0, RATE), RATE, sim={"scenario": f"{BUTTON_AT}=button", "pace": "realtime"}, **extra
    )
    try:
        alive, again = kill_while_recording(box, rng, RATE)
    except RuntimeError as exc:  # the daemon ended before it recorded
        return {"problem": str(exc)[:500]}
    if again.code != 0:
        return {"problem": f"restart failed: {again.stderr[-500:]}"}
    rows = box.rows()
    if len(rows) != 1 or rows[0]["end_reason"] != "recovered":
        return {"problem": f"not recovered: {rows}"}
    row = rows[0]
    if row["status"] == "absent":
        return {"loss": alive, "absent": True, "alive": alive}
    if row["status"] != "completed":
        return {"problem": f"recovered as {row['status']}"}
    if identity is None:
        kept = positions(audio_of(row))
    else:
        pcm = b"".join(p for _, p in encrypted.decrypt(Path(row["path"]), identity))
        kept = positions(np.frombuffer(pcm, "<i2"))
    if len(kept) == 0 or not (np.diff(kept) == 1).all():
        return {"problem": "frames lost or repeated inside the recording"}
    at_kill = kept[0] + alive * RATE
    return {"loss": (at_kill - (kept[-1] + 1)) / RATE, "absent": False, "alive": alive}


def summary(name: str, results: list[dict]) -> str:
    losses = [r["loss"] for r in results if "loss" in r]
    absent = [r["alive"] for r in results if r.get("absent")]
    heard = [a for a in absent if a >= HOLD_BACK_SECONDS + 0.1]
    problems = [r["problem"] for r in results if "problem" in r]
    text = (
        f"kill -9, {name}: {len(losses)} of {len(results)} measured; audio lost max {max(losses):.3f} s, "
        f"p99 {float(np.percentile(losses, 99)):.3f} s, median {statistics.median(losses):.3f} s; "
        f"{sum(loss > 1.0 for loss in losses)} over 1 s; {len(absent)} recovered absent"
        + (f" (killed at most {max(absent):.3f} s after recording.started)" if absent else "")
        + f", {len(heard)} of them heard audio"
    )
    return "\n".join([text, *(f"  problem: {p}" for p in problems)])


def main() -> None:
    started = time.perf_counter()
    identity = pyrage.x25519.Identity.generate()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        jobs = [
            (tmp / f"{kind}{i}", i, identity if kind == "era" else None)
            for i in range(KILLS)
            for kind in ("wav", "era")
        ]
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda job: kill_and_recover(*job), jobs))
    print(summary("plain WAV", results[0::2]), flush=True)
    print(summary("encrypted (age, .era)", results[1::2]), flush=True)
    print(f"kill -9 benchmark ({KILLS} kills each, 4 daemons at a time) took {time.perf_counter() - started:.0f} s")
    if any("problem" in r for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
