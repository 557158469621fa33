"""Crashes and a full disk: what was recorded is kept, repaired and delivered.

``kill -9`` at random points of a recording, then a restart: the partial
recording is finalised with ``end_reason = recovered``, holds every frame up to
at most one second before the kill (checked against a sample counter in the
test signal), and the catalog passes ``PRAGMA integrity_check``. The same with
encryption at rest, at fixed points of the first three seconds (the first
segment, and every phase of the open-segment window): the recovered ``.era``
file is decrypted with the identity the test holds.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyrage
import pytest
import soundfile as sf

from firmware.cli.decrypt import TORN
from firmware.media import encrypted

from .daemon_run import ROOT, Box, audio_of, counter_signal, events, positions

RATE = 8000
KILLS = 20
BUTTON_AT = 0.3


def _kill_and_recover(root, seed: int, after: float | None = None, **sections) -> dict:
    """Record in real time, ``kill -9`` ``after`` seconds (else a random time) after recording.started, restart."""
    rng = random.Random(seed)
    box = Box.make(
        root,
        counter_signal(8.0, RATE),
        RATE,
        sim={"scenario": f"{BUTTON_AT}=button", "pace": "realtime"},
        **sections,
    )
    proc = box.start()
    started_at = None
    while True:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"daemon ended before recording: {proc.stderr.read()[-800:]}")
        if '"type": "recording.started"' in line:
            started_at = time.monotonic()
            start_event = events(line)[0]
            break
    time.sleep(rng.uniform(0.05, 3.0) if after is None else after)
    killed_at = time.monotonic()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stdout.close()
    proc.stderr.close()
    # restart with nothing to hear: it recovers, then ends with its (empty) input
    silence = root / "silence.wav"
    sf.write(silence, np.zeros(800, np.int16), RATE, subtype="PCM_16")
    box.sections["sim"] = {"enabled": True, "audio": str(silence), "pace": "fast", "scenario": ""}
    again = box.run()
    assert again.code == 0, again.stderr
    return {
        "box": box,
        "start_event": start_event,
        "alive": killed_at - started_at,
        "events": again.events,
    }


@pytest.fixture(scope="module")
def crashes(tmp_path_factory):
    roots = [tmp_path_factory.mktemp(f"kill{i}") for i in range(KILLS)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(_kill_and_recover, roots, range(KILLS)))


def test_kill_9_loses_at_most_a_second_and_the_restart_recovers_it(crashes):
    losses = []
    for crash in crashes:
        [row] = crash["box"].rows()  # the catalog passed integrity_check in rows()
        if row["status"] == "absent":
            # killed before the core released any audio (it holds back its newest 0.2 s): nothing to lose
            assert crash["alive"] < 0.4 and row["end_reason"] == "recovered" and row["path"] is None, row
            continue
        assert (row["status"], row["end_reason"]) == ("completed", "recovered"), row
        kept = positions(audio_of(row))
        np.testing.assert_array_equal(np.diff(kept), 1)  # no frame lost or repeated inside
        first = round(BUTTON_AT * RATE)
        assert abs(kept[0] - first) < 0.1 * RATE
        # where the input was when the kill came: from the start event and the wall time since
        at_kill = kept[0] + crash["alive"] * RATE
        losses.append((at_kill - (kept[-1] + 1)) / RATE)
        announced = [e for e in crash["events"] if e["type"] == "recording.finished"]
        assert announced and announced[0]["data"]["end_reason"] == "recovered"
        assert announced[0]["data"]["id"] == crash["start_event"]["data"]["id"]
        spool = crash["box"].root / "spool"
        assert not list(spool.glob(".*part*")), "part files are gone after recovery"
    assert max(losses) <= 1.0, f"audio lost before the kill (s): {sorted(losses)}"


#: Seconds after recording.started: four inside the first 1.2 s (the first segment), then every phase
#: of the open-segment window. The core releases its first audio 0.2 s after the start.
ENCRYPTED_KILLS = (0.45, 0.7, 0.95, 1.15, 1.45, 1.9, 2.4, 2.95)


@pytest.fixture(scope="module")
def identity():
    return pyrage.x25519.Identity.generate()


@pytest.fixture(scope="module")
def encrypted_crashes(tmp_path_factory, identity):
    roots = [tmp_path_factory.mktemp(f"era-kill{i}") for i in range(len(ENCRYPTED_KILLS))]

    def one(i: int) -> dict:
        return _kill_and_recover(roots[i], i, ENCRYPTED_KILLS[i], encryption={"public_key": str(identity.to_public())})

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, range(len(ENCRYPTED_KILLS))))


def test_kill_9_with_encryption_loses_at_most_a_second_and_keeps_what_was_heard(encrypted_crashes, identity):
    losses = []
    for crash in encrypted_crashes:
        [row] = crash["box"].rows()
        # the core released audio 0.2 s after the start: from then on the recording heard something
        assert (row["status"], row["end_reason"]) == ("completed", "recovered"), (crash["alive"], row)
        path = Path(row["path"])
        assert path.suffix == ".era" and json.loads(row["encryption"])["complete"] is False
        found = encrypted.decrypt(path, identity)
        pcm = b"".join(p for _, p in found)
        assert found.torn is not None and found.torn.startswith("no final segment"), found.torn
        kept = positions(np.frombuffer(pcm, "<i2"))
        assert len(kept) == found.frames == round(row["duration"] * RATE) > 0
        np.testing.assert_array_equal(np.diff(kept), 1)  # no frame lost or repeated inside
        assert abs(kept[0] - round(BUTTON_AT * RATE)) < 0.1 * RATE
        at_kill = kept[0] + crash["alive"] * RATE
        losses.append((at_kill - (kept[-1] + 1)) / RATE)
        announced = [e for e in crash["events"] if e["type"] == "recording.finished"]
        assert announced and announced[0]["data"]["end_reason"] == "recovered"
        assert not list((crash["box"].root / "spool").glob(".*part*")), "part files are gone after recovery"
    assert max(losses) <= 1.0, f"audio lost before the kill (s): {sorted(losses)}"
    # the central side's command reads a recovered file: everything up to the kill, exit status "torn"
    key, out = path.parent.parent / "central.key", path.parent.parent / "central.wav"
    key.write_text(f"{identity}\n")
    argv = [sys.executable, "-m", "firmware.cli.main", "decrypt", str(path), "-i", str(key), "-o", str(out)]
    central = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    assert central.returncode == TORN, central.stderr
    np.testing.assert_array_equal(positions(sf.read(out, dtype="int16")[0]), kept)


def test_recovery_twice_changes_nothing(crashes):
    box = crashes[0]["box"]
    before = {p.name: p.read_bytes() for p in (box.root / "spool").iterdir()}
    again = box.run()
    assert again.code == 0
    assert {p.name: p.read_bytes() for p in (box.root / "spool").iterdir()} == before
    assert [r["end_reason"] for r in box.rows()] == ["recovered"]


def test_a_corrupt_catalog_is_rebuilt_from_the_spool(crashes):
    box = crashes[1]["box"]
    [before] = box.rows()
    catalog = box.root / "catalog.sqlite3"
    for suffix in ("-wal", "-shm"):
        (box.root / f"catalog.sqlite3{suffix}").unlink(missing_ok=True)
    catalog.write_bytes(os.urandom(4096))
    result = box.run()
    assert result.code == 0, result.stderr
    [after] = box.rows()
    assert (after["id"], after["sha256"], after["end_reason"]) == (before["id"], before["sha256"], "recovered")
    assert list(box.root.glob("catalog.sqlite3.corrupt-*"))


def _tmpfs_runner(mountpoint, size_kb: int) -> list[str] | None:
    """A command prefix that runs the daemon with a size-capped tmpfs at ``mountpoint``.

    As root the tmpfs is mounted in a private mount namespace; otherwise in a
    user namespace. None when neither is allowed on this machine.
    """
    if shutil.which("unshare") is None:
        return None
    for prefix in (["unshare", "--mount"], ["unshare", "--user", "--map-root-user", "--mount"]):
        probe = subprocess.run(
            [*prefix, "sh", "-c", f"mount -t tmpfs -o size={size_kb}k tmpfs {mountpoint}"], capture_output=True
        )
        if probe.returncode == 0:
            return [*prefix, "sh", "-c", f'mount -t tmpfs -o size={size_kb}k tmpfs {mountpoint} && exec "$@"', "sh"]
    return None


def test_a_full_disk_ends_the_recording_at_the_last_good_sample(tmp_path):
    # A real full file system: a 160 KiB tmpfs holds about 10 s of 8 kHz mono audio, the input is 20 s.
    box = Box.make(
        tmp_path,
        counter_signal(8.0, RATE).repeat(2)[: 20 * RATE],
        RATE,
        sim={"scenario": "0.5=button"},
        spool={"min_free_mb": 0},
    )
    spool = tmp_path / "spool"
    spool.mkdir()
    prefix = _tmpfs_runner(spool, 160)
    if prefix is None:
        pytest.fail("neither a mount namespace nor a user namespace is available to make a full disk")
    proc = subprocess.run(
        [*prefix, *box.argv()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = events(proc.stdout)
    storage = [e for e in out if e["type"] == "device.error" and e["data"]["code"] == "storage"]
    assert storage, proc.stderr[-2000:]
    finished = [e for e in out if e["type"].startswith("recording.") and e["type"] != "recording.started"]
    assert finished and finished[0]["data"]["end_reason"] == "error"
    assert finished[0]["data"]["status"] == "failed"
    assert "No space left" in finished[0]["data"]["error_message"]
    # the tmpfs is gone with the namespace: the catalog outside it says how much was kept
    [row] = box.rows()
    assert row["status"] == "failed" and 5.0 < row["duration"] < 160 * 1024 / (2 * RATE)


def test_a_power_cut_loses_at_most_two_seconds(tmp_path, monkeypatch):
    """A power cut drops every write not yet fsynced. No real power can be cut here, so fsync is
    journalled: each fsync snapshots the file as the card holds it, and the cut puts back the last
    snapshot plus a random part of what came after it (pages that happened to reach the card)."""
    from firmware.core import InputLayout, Recorder, Start
    from firmware.media.partfile import repair
    from firmware.spool import Takes, part_path

    durable: dict[str, bytes] = {}
    real_fsync = os.fsync

    def journalled_fsync(fd: int) -> None:
        real_fsync(fd)
        path = os.readlink(f"/proc/self/fd/{fd}")
        if os.path.isfile(path):
            with open(path, "rb") as fh:
                durable[path] = fh.read()

    monkeypatch.setattr(os, "fsync", journalled_fsync)
    rng = random.Random(5)
    signal_ = counter_signal(8.0, RATE)
    period = RATE // 50
    losses = []
    for cut in range(20):
        directory = tmp_path / f"cut{cut}"
        core = Recorder(InputLayout(RATE, 1))
        takes = Takes(directory, RATE, file_names="id", sync_seconds=1.0)
        [started] = core.send(Start())
        takes.handle(started)
        chunks = rng.randrange(10, len(signal_) // period)
        for i in range(chunks):
            for event in core.feed(signal_[i * period : (i + 1) * period]):
                takes.handle(event)
        fed = chunks * period
        path = part_path(directory, started.recording.id)
        on_card = durable.get(str(path), b"")
        written = path.read_bytes()
        extra = rng.randrange(0, len(written) - len(on_card) + 1) if len(written) > len(on_card) else 0
        path.write_bytes(on_card + written[len(on_card) : len(on_card) + extra])  # the power cut
        frames = repair(path)
        kept = positions(sf.read(path, dtype="int16")[0])
        np.testing.assert_array_equal(kept, np.arange(frames))  # what is left is the beginning, intact
        losses.append((fed - frames) / RATE)
    assert max(losses) <= 2.0, sorted(losses)
    assert min(losses) < max(losses)  # the cuts did fall at different distances from a sync
