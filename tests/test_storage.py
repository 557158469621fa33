"""Part files that survive crashes, durable finishing, and the SQLite catalog."""

from __future__ import annotations

import os
import sqlite3

import numpy as np
import pytest
import soundfile as sf

from firmware.catalog import MIGRATIONS, Catalog, open_catalog
from firmware.media import partfile
from firmware.media.partfile import HEADER, PartFile, WavShape, repair

from .signals import noise, to_int16


def counter(n: int, channels: int = 1, start: int = 0) -> np.ndarray:
    """Frames whose values count up, so any lost or repeated frame shows."""
    values = (np.arange(start, start + n) % 30000).astype(np.int16)
    return np.repeat(values[:, None], channels, axis=1)


def test_a_synced_part_file_is_a_valid_wav_while_it_is_written(tmp_path):
    part = PartFile(tmp_path / "a.wav", WavShape(8000, 2))
    part.write(counter(8000, 2))
    part.sync()
    data, rate = sf.read(tmp_path / "a.wav", dtype="int16")
    assert rate == 8000 and data.shape == (8000, 2)
    np.testing.assert_array_equal(data, counter(8000, 2))
    part.close()


def test_repair_sets_the_header_from_the_length_after_a_kill(tmp_path):
    path = tmp_path / "a.wav"
    part = PartFile(path, WavShape(16000, 1))
    part.write(counter(16000))
    part.sync()
    part.write(counter(8000, start=16000))  # written, not yet synced: the header still says 16000 frames
    os.close(part._fd)  # what a kill -9 leaves
    assert sf.info(path).frames == 16000
    assert repair(path) == 24000
    data, _ = sf.read(path, dtype="int16")
    np.testing.assert_array_equal(data, counter(24000)[:, 0])


def test_repair_drops_a_torn_frame_and_never_changes_a_healthy_file(tmp_path):
    path = tmp_path / "a.wav"
    part = PartFile(path, WavShape(8000, 2))
    part.write(counter(100, 2))
    part.close()
    healthy = path.read_bytes()
    assert repair(path) == 100
    assert path.read_bytes() == healthy
    with open(path, "ab") as fh:
        fh.write(b"\x01\x02\x03")  # a torn frame (3 of 4 bytes)
    assert repair(path) == 100
    once = path.read_bytes()
    assert once == healthy
    assert repair(path) == 100 and path.read_bytes() == once


def test_repair_handles_a_header_ahead_of_the_data_after_a_power_cut(tmp_path):
    path = tmp_path / "a.wav"
    part = PartFile(path, WavShape(8000, 1))
    part.write(counter(8000))
    part.sync()
    os.close(part._fd)
    os.truncate(path, HEADER + 2 * 5000)  # the data after the last fsync never reached the card
    assert repair(path) == 5000
    assert sf.info(path).frames == 5000


def test_repair_leaves_a_file_it_did_not_write_alone(tmp_path):
    path = tmp_path / "other.wav"
    sf.write(path, to_int16(noise(0.1, 8000, -20)), 8000, subtype="FLOAT")
    before = path.read_bytes()
    assert repair(path) is None
    assert path.read_bytes() == before


def test_a_part_file_refuses_audio_past_the_wav_size_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(partfile, "MAX_DATA_BYTES", 1000)
    part = PartFile(tmp_path / "a.wav", WavShape(8000, 1))
    part.write(counter(400))
    with pytest.raises(partfile.PartFull):
        part.write(counter(400))
    part.close()
    assert sf.info(tmp_path / "a.wav").frames == 400


def test_write_atomic_replaces_or_keeps(tmp_path):
    path = tmp_path / "meta.json"
    partfile.write_atomic(path, b"one")
    partfile.write_atomic(path, b"two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["meta.json"]


def _row(rid: str, **extra):
    row = {
        "id": rid,
        "name": rid,
        "call_id": "CA" + "0" * 32,
        "source": "cli",
        "status": "in-progress",
        "state": "recording",
        "format": "wav",
        "sample_rate": 8000,
        "channels": 1,
        "track": "both",
        "options": {"format": "wav"},
        "start_time": "2026-11-21T10:00:00.000Z",
    }
    row.update(extra)
    return row


def test_catalog_is_wal_with_full_sync_and_versioned(tmp_path):
    cat = Catalog(tmp_path / "c.sqlite3")
    assert cat._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert cat._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert cat.version == len(MIGRATIONS)
    cat.insert(_row("RE1"))
    cat.insert(_row("RE2", status="completed"))
    assert [r["id"] for r in cat.unfinished()] == ["RE1"]
    assert [r["id"] for r in cat.list()] == ["RE2", "RE1"]
    assert cat.get("RE1")["options"] == {"format": "wav"}
    cat.close()
    again = Catalog(tmp_path / "c.sqlite3")  # reopening applies no migration twice
    assert again.version == len(MIGRATIONS) and len(again.list()) == 2


def test_a_catalog_from_newer_firmware_is_refused(tmp_path):
    path = tmp_path / "c.sqlite3"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(Exception, match="schema version 99 is newer"):
        Catalog(path)


def test_a_corrupt_catalog_is_moved_aside_and_replaced(tmp_path):
    path = tmp_path / "c.sqlite3"
    cat = Catalog(path)
    cat.insert(_row("RE1"))
    cat.close()
    with open(path, "r+b") as fh:  # scribble over the first pages
        fh.write(os.urandom(8192))
    fresh, aside = open_catalog(path)
    assert aside is not None and aside.exists()
    assert fresh.list() == [] and fresh.integrity() == "ok"
    fresh.insert(_row("RE2"))
    assert fresh.get("RE2")["status"] == "in-progress"


def test_a_version_1_catalog_is_migrated_keeping_its_recordings(tmp_path):
    from firmware.catalog import MIGRATIONS

    path = tmp_path / "c.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0] + "PRAGMA user_version=1;")
    db.execute(
        "INSERT INTO recordings (id, name, call_id, source, status, state, format, sample_rate, channels, track, "
        "options, date_created, date_updated, start_time) VALUES ('RE1', 'RE1', 'CA1', 'cli', 'completed', "
        "'finished', 'wav', 8000, 1, 'both', '{}', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', "
        "'2026-01-01T00:00:00.000Z')"
    )
    db.commit()
    db.close()
    cat = Catalog(path)
    assert cat.version == len(MIGRATIONS) and cat.get("RE1")["status"] == "completed"
    assert cat.query("SELECT COUNT(*) FROM outbox")[0][0] == 0  # the outbox came with version 2


def test_uploads_confirmed_before_schema_7_keep_their_age_for_retention(tmp_path):
    """Schema 7 notes whether the clock was synchronised at an upload; rows from before keep the age they had,
    or every box would keep all its media another [retention] days after an update."""
    from firmware.catalog import MIGRATIONS

    path = tmp_path / "c.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(";".join(MIGRATIONS[:6]) + ";PRAGMA user_version=6;")
    db.execute(
        "INSERT INTO uploads (recording_id, destination, state, attempts, date_updated) "
        "VALUES ('RE1', 's3://b/', 'done', 1, '2026-01-01T00:00:00.000Z'), "
        "('RE2', 's3://b/', 'pending', 1, '2026-01-01T00:00:00.000Z')"
    )
    db.commit()
    db.close()
    cat = Catalog(path)
    assert dict(cat.query("SELECT recording_id, clock_synced FROM uploads")) == {"RE1": 1, "RE2": 0}
    assert cat.restamp_unsynced_uploads("2026-02-01T00:00:00.000Z") == 0  # nothing done to restamp
