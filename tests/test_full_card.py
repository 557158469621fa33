"""A card that fills up mid-recording, the default layout: spool and catalog on one file system.

The box runs on a real size-capped tmpfs, mounted in a mount namespace of its own (``unshare``; as an
ordinary user with a user namespace too), so nothing is mocked: writes really fail with ENOSPC, SQLite
really reports "database or disk is full". The recording that hit the wall must be finished in the
catalog (the reserve the box holds is given up for it), and a restart on the still-full card must
leave nothing in progress.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from firmware.catalog import Catalog

from .daemon_run import ROOT, Box, counter_signal, write_toml

RATE = 8000


def run_on_a_small_card(tmp_path: Path, fmt: str, size_kib: int = 2048) -> tuple[list[dict], list[str], str]:
    """Record until the card is full, restart on the full card; the catalog rows, spool files and logs."""
    card = tmp_path / "card"
    card.mkdir()
    box = Box.make(
        tmp_path / "box",
        np.resize(counter_signal(8.0), 150 * RATE),
        RATE,
        spool={"directory": str(card / "spool"), "min_free_mb": 0},
        catalog={"path": str(card / "catalog.sqlite3")},
        recording={"format": fmt},
        sim={"scenario": "0.5=button", "pace": "fast"},
    )
    first = box.config
    again = write_toml(
        tmp_path / "box" / "again.toml", {**box.sections, "sim": {**box.sections["sim"], "scenario": ""}}
    )
    out = tmp_path / "out"
    run = [sys.executable, "-m", "firmware.cli.main", "run"]
    script = (
        f"mount -t tmpfs -o size={size_kib}k tmpfs {card} && "
        f"{' '.join(run)} --config {first} && {' '.join(run)} --config {again} && "
        f"mkdir -p {out} && cp {card}/catalog.sqlite3* {out}/ && ls -a {card}/spool > {out}/spool.txt"
    )
    namespace = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        namespace[1:1] = ["--user", "--map-root-user"]
    done = subprocess.run([*namespace, "sh", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    db = sqlite3.connect(out / "catalog.sqlite3")
    db.row_factory = sqlite3.Row
    try:
        rows = [dict(r) for r in db.execute("SELECT * FROM recordings")]
    finally:
        db.close()
    return rows, (out / "spool.txt").read_text().split(), done.stderr


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_a_recording_that_fills_the_card_is_finished_in_the_catalog(tmp_path, fmt):
    rows, spool, log = run_on_a_small_card(tmp_path, fmt)
    [row] = rows
    assert row["status"] == "failed" and row["state"] == "error" and row["end_reason"] == "error", row
    assert row["path"] and row["path"].endswith(f".{fmt}") and row["duration"] > 30, row
    assert Path(row["path"]).name in spool and f"{row['id']}.json" in spool
    assert not [name for name in spool if ".part" in name], spool
    assert "released the 512 KiB reserve" in log and "Traceback" not in log
    assert "in-progress" not in json.dumps(rows)


def left_in_progress(box: Box, rid: str) -> None:
    """A catalog row still in progress, as a box that filled its card before it kept a reserve left it."""
    catalog = Catalog(Path(box.sections["catalog"]["path"]))
    catalog.insert(
        {
            "id": rid,
            "name": rid,
            "call_id": "CA" + "1" * 32,
            "source": "button",
            "status": "in-progress",
            "state": "recording",
            "format": "wav",
            "sample_rate": RATE,
            "channels": 1,
            "track": "both",
            "options": {},
            "start_time": "2026-12-06T10:00:00.000Z",
            "date_created": "2026-12-06T10:00:00.000Z",
        }
    )
    catalog.close()


def test_a_row_left_in_progress_beside_its_finished_file_is_finished_at_the_next_start(tmp_path):
    """A box that filled its card before it kept a reserve: the WAV was published, its row stayed in progress
    with no path and no sidecar. The next start finishes it from the file and announces it."""
    box = Box.make(tmp_path, np.resize(counter_signal(8.0), 2 * RATE), RATE, sim={"scenario": ""})
    spool = Path(box.sections["spool"]["directory"])
    spool.mkdir(parents=True)
    rid = "RE" + "7" * 32
    audio = counter_signal(3.0)
    sf.write(spool / f"{rid}.wav", audio, RATE, subtype="PCM_16")
    left_in_progress(box, rid)
    result = box.run()
    assert result.code == 0, result.stderr
    [row] = box.rows()
    assert (row["status"], row["state"], row["end_reason"]) == ("completed", "finished", "recovered")
    assert row["duration"] == pytest.approx(3.0) and row["path"] == str(spool / f"{rid}.wav")
    assert row["end_time"].startswith("2026-12-06T10:00:03")
    [finished] = [e for e in result.of("recording.finished") if e["data"]["id"] == rid]
    assert finished["data"]["end_reason"] == "recovered"
    assert (spool / f"{rid}.json").exists()


def test_record_onto_a_full_card_says_so_in_one_line(tmp_path):
    """``edge-recorder record`` whose output fills up: exit 73 (EX_CANTCREAT) naming the place, no traceback."""
    card = tmp_path / "card"
    card.mkdir()
    wav = tmp_path / "call.wav"
    sf.write(wav, np.resize(counter_signal(8.0), 120 * RATE), RATE, subtype="PCM_16")
    record = [sys.executable, "-m", "firmware.cli.main", "record", str(wav), "--format", "wav", "-o", str(card)]
    namespace = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        namespace[1:1] = ["--user", "--map-root-user"]
    script = f"mount -t tmpfs -o size=512k tmpfs {card} && {' '.join(record)}"
    done = subprocess.run([*namespace, "sh", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 73, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert f"{card}: No space left on device" in done.stderr and "Traceback" not in done.stderr, lines


def test_a_row_beside_a_file_that_is_not_audio_is_marked_failed_and_the_box_starts(tmp_path):
    box = Box.make(tmp_path, np.resize(counter_signal(8.0), 2 * RATE), RATE, sim={"scenario": ""})
    spool = Path(box.sections["spool"]["directory"])
    spool.mkdir(parents=True)
    rid = "RE" + "8" * 32
    (spool / f"{rid}.wav").write_bytes(b"RIFF not a wave at all" * 10)
    left_in_progress(box, rid)
    result = box.run()
    assert result.code == 0 and "Traceback" not in result.stderr, result.stderr
    [row] = box.rows()
    assert (row["status"], row["error_code"]) == ("failed", "media_unreadable")
