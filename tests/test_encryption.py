"""Encryption at rest: the box writes no plain audio, and the central side gets every good segment back.

A known recording (speech on a faint noise floor) goes through the core and the
spool with an age recipient; the identity made by the test decrypts it. Every
file the spool holds, during the recording and after it, is searched for the
plain audio. A crash, a power cut and damage are made by hand on the file and
must be told apart: torn (audio up to the tear is good) versus damaged (the
segment is named).
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyrage
import pytest
import soundfile as sf

from firmware.catalog import Catalog
from firmware.cli import decrypt as decrypt_cmd
from firmware.core import Audio, InputLayout, Recorder, RecordingOptions, Start
from firmware.daemon.recovery import recover
from firmware.media import encrypted
from firmware.media.encrypted import DamagedSegment, EncryptedPart, WrongIdentity, check_recipient
from firmware.media.partfile import WavShape
from firmware.spool import Takes, parts
from tests import signals as sig

R = 16000
PIECE = R // 50
#: Plain audio is looked for in blocks this long: every 4 KiB window of it holds one whole block.
BLOCK = 2048


@pytest.fixture(scope="module")
def key() -> pyrage.x25519.Identity:
    return pyrage.x25519.Identity.generate()


@pytest.fixture(scope="module")
def recipient(key) -> str:
    return str(key.to_public())


@pytest.fixture(scope="module")
def line() -> np.ndarray:
    """Six seconds of a faint noise floor with a sentence in it: no two 2 KiB blocks alike."""
    floor = sig.noise(6, R, -65)
    sig.place(floor, sig.speech("Encrypted at rest, readable only at the centre.", R), 1.5, R)
    return sig.to_int16(floor)


def opts(**kw) -> RecordingOptions:
    return RecordingOptions.from_mapping(kw)


@dataclass
class Recorded:
    takes: Takes
    take: object  # spool.Take, None while the recording runs
    audio: np.ndarray  # what the core gave the spool
    rid: str


def record(directory: Path, signal: np.ndarray, options: RecordingOptions, recipient: str | None = None,
           *, stop_at: float | None = None, during=None) -> Recorded:  # fmt: skip
    """Feed ``signal`` through a Recorder into Takes; ``stop_at`` seconds: leave it running (no end)."""
    core = Recorder(InputLayout(R, 1))
    takes = Takes(directory, R, file_names="id", sync_seconds=1.0, encrypt_to=recipient)
    audio, done = [], []

    def handle(events):
        for event in events:
            if isinstance(event, Audio):
                audio.append(event.frames)
            take = takes.handle(event)
            if take is not None:
                done.append(take)

    [started] = core.send(Start(options))
    handle([started])
    end = len(signal) if stop_at is None else round(stop_at * R)
    for at in range(0, end, PIECE):
        handle(core.feed(signal[at : min(at + PIECE, end)]))
        if during is not None and at <= len(signal) // 2 < at + PIECE:
            during()
    if stop_at is None:
        handle(core.close())
    pcm = np.concatenate(audio) if audio else np.zeros((0, 1), np.int16)
    return Recorded(takes, done[0] if done else None, pcm, started.recording.id)


def leaks(directory: Path, plain: bytes) -> list[str]:
    """Files under ``directory`` holding a 4 KiB window of ``plain``, at any alignment.

    A window of 4096 bytes always holds a whole BLOCK-aligned 2048-byte block of
    ``plain``, so looking for each block (``bytes.find``, any offset) finds every
    window, and shorter leaks besides.
    """
    blocks = {plain[i : i + BLOCK] for i in range(0, len(plain) - BLOCK + 1, BLOCK)}
    assert blocks and all(len(set(b)) > 16 for b in blocks), "the test signal must not repeat inside a block"
    found = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [f"{path.name} @ {data.find(b)}" for b in blocks if b in data]
    return found


def frame_spans(path: Path) -> list[tuple[int, int]]:
    """(start, end) of each frame of an .era file, read by the documented layout."""
    data = path.read_bytes()
    pos, spans = data.index(b"\n") + 1, []
    while pos + 24 <= len(data):
        _, _, _, _, length, _ = struct.unpack(">4sIIIII", data[pos : pos + 24])
        spans.append((pos, pos + 24 + length))
        pos += 24 + length
    return spans


def renumber(frame: bytes, index: int) -> bytes:
    """A frame with its plain header numbered ``index`` (and a good crc): only the sealed index can tell."""
    magic, _, frames, flags, length, _ = struct.unpack(">4sIIIII", frame[:24])
    head = struct.pack(">4sIIII", magic, index, frames, flags, length)
    return head + struct.pack(">I", zlib.crc32(head)) + frame[24:]


def decrypted(path: Path, key) -> tuple[np.ndarray, encrypted.Segments]:
    found = encrypted.decrypt(path, key)
    pcm = b"".join(p for _, p in found)
    return np.frombuffer(pcm, "<i2").reshape(-1, found.shape.channels), found


@pytest.fixture(scope="module")
def sealed(tmp_path_factory, recipient, line):
    """A finished encrypted recording (mp3 at 8 kHz, trim-silence), and the spool scanned half-way."""
    spool = tmp_path_factory.mktemp("spool")
    midway = {}

    def scan_midway():
        midway["files"] = sorted(p.name for p in spool.iterdir())
        midway["leaks"] = leaks(spool, line.astype("<i2").tobytes())

    options = opts(format="mp3", sample_rate=8000, trim="trim-silence")
    run = record(spool, line, options, recipient, during=scan_midway)
    return SimpleNamespace(spool=spool, run=run, midway=midway, options=options)


# -- the box writes no plain audio -----------------------------------------------------------


def test_an_encrypted_recording_decrypts_bit_exact(sealed, key, recipient):
    take = sealed.run.take
    path = take.written.path
    assert path.name == f"{sealed.run.rid}.era" and path.parent == sealed.spool
    audio, found = decrypted(path, key)
    np.testing.assert_array_equal(audio, sealed.run.audio)
    assert found.torn is None and found.frames == len(sealed.run.audio) == take.written.frames
    assert found.finish == {"format": "mp3", "sample_rate": 8000, "mp3_bitrate": 32}
    assert found.trim == take.finished.trim
    assert take.written.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert take.written.size == path.stat().st_size
    assert take.encryption == {
        "scheme": "age-x25519-segments-v1",
        "recipient": recipient,
        "segments": found.segments,
        "extension": "era",
        "complete": True,
    }
    assert found.segments >= len(audio) // R  # one segment per second of audio at least


def test_no_file_in_the_spool_holds_any_4_kib_of_the_plain_audio(sealed, line):
    assert sealed.midway["files"] == [f".{sealed.run.rid}.part.era"]
    assert sealed.midway["leaks"] == []
    assert sorted(p.name for p in sealed.spool.iterdir()) == [f"{sealed.run.rid}.era"]
    assert leaks(sealed.spool, sealed.run.audio.astype("<i2").tobytes()) == []
    assert leaks(sealed.spool, line.astype("<i2").tobytes()) == []


def test_the_leak_search_finds_plain_audio_where_there_is_some(tmp_path, line):
    run = record(tmp_path, line, opts(format="wav"), stop_at=3.0)  # a plain part file, half-way
    plain = line.astype("<i2").tobytes()
    assert len(leaks(tmp_path, plain)) >= (2 * R * 2.5) // BLOCK
    run = record(tmp_path / "done", line, opts(format="wav"))
    found = leaks(tmp_path / "done", plain)
    assert found and all(f.startswith(f"{run.rid}.wav") for f in found)
    assert leaks(tmp_path / "done", plain[1:] + b"\0")  # at an odd offset too


def test_decrypting_on_the_central_side_makes_the_file_the_box_would_have_made(sealed, tmp_path, key, line):
    plain = record(tmp_path / "plain", line, sealed.options)
    made = encrypted.decrypt_to_file(sealed.run.take.written.path, key, tmp_path / "central.mp3")
    assert made.torn is None and made.frames == plain.take.written.frames
    assert made.frames == pytest.approx(
        (sealed.run.take.finished.trim[1] - sealed.run.take.finished.trim[0]) / 2, abs=1
    )
    assert (tmp_path / "central.mp3").read_bytes() == plain.take.written.path.read_bytes()
    raw = encrypted.decrypt_to_wav(sealed.run.take.written.path, key, tmp_path / "raw.wav")
    audio, rate = sf.read(tmp_path / "raw.wav", dtype="int16", always_2d=True)
    assert rate == R and raw.frames == len(audio)
    np.testing.assert_array_equal(audio, sealed.run.audio)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary file is left"


# -- a crash ---------------------------------------------------------------------------------


def test_a_crash_leaves_every_sealed_segment_readable_and_the_file_reported_torn(tmp_path, key, recipient, line):
    spool = tmp_path / "spool"
    run = record(spool, line, opts(format="wav"), recipient, stop_at=3.7)
    [part] = run.takes._parts.values()
    os.close(part._fd)  # kill -9: the open segment, in memory only, is lost
    lost = part.buffered_frames
    assert 0 < lost <= encrypted.SEGMENT_SECONDS * R == R // 2, "the open-segment window is at most half a second"
    assert list(parts(spool)) == [(run.rid, part.path)]

    catalog, takes = Catalog(tmp_path / "catalog.sqlite3"), Takes(spool, R)
    [row] = recover(spool, catalog, takes)
    assert (row["status"], row["end_reason"], row["path"]) == ("completed", "recovered", str(spool / f"{run.rid}.era"))
    assert row["duration"] == pytest.approx((len(run.audio) - lost) / R, abs=1e-4)
    assert list(parts(spool)) == []
    assert recover(spool, catalog, takes) == [], "recovering twice changes nothing"
    audio, found = decrypted(spool / f"{run.rid}.era", key)
    np.testing.assert_array_equal(audio, run.audio[: len(run.audio) - lost])
    assert found.torn == f"no final segment after segment {found.segments - 1}"
    assert encrypted.describe(spool / f"{run.rid}.era")["complete"] is False
    assert leaks(spool, line.astype("<i2").tobytes()) == []


def test_a_crash_at_any_moment_loses_at_most_the_open_segment_and_never_makes_heard_audio_absent(
    tmp_path, key, recipient, line
):
    # the spool's default cadence (sync_seconds=1.0); the core releases its first audio at 0.2 s
    for i, stop_at in enumerate(np.arange(0.22, 2.2, 0.09)):
        spool = tmp_path / f"crash{i}"
        run = record(spool, line, opts(format="wav"), recipient, stop_at=float(stop_at))
        assert len(run.audio) > 0, "the core released audio: the recording heard something"
        [part] = run.takes._parts.values()
        os.close(part._fd)  # kill -9
        [row] = recover(spool, Catalog(tmp_path / f"catalog{i}.sqlite3"), Takes(spool, R))
        assert (row["status"], row["end_reason"]) == ("completed", "recovered"), (stop_at, row["status"])
        audio, _ = decrypted(spool / f"{run.rid}.era", key)
        np.testing.assert_array_equal(audio, run.audio[: len(audio)])
        assert len(run.audio) - len(audio) <= encrypted.SEGMENT_SECONDS * R, stop_at


def test_a_power_cut_inside_the_last_segment_is_a_tear_not_damage(tmp_path, key, recipient, line):
    run = record(tmp_path, line, opts(format="wav"), recipient, stop_at=4.0)
    [part] = run.takes._parts.values()
    part.sync()
    os.close(part._fd)
    spans = frame_spans(part.path)
    whole = np.frombuffer(b"".join(p for _, p in encrypted.decrypt(part.path, key)), "<i2")
    data = part.path.read_bytes()
    cuts = {
        "cut short inside": (data[: spans[-1][1] - 100], f"segment {len(spans) - 1} is cut short"),
        "header cut short": (data[: spans[-1][0] + 10], "cut short inside its frame header"),
        "zero-filled": (data[: spans[-1][0]] + bytes(5000), "unreadable data where segment"),
        "half a header": (data[: spans[-1][0] + 12] + bytes(3000), "unreadable data where segment"),
        "zeroed pages": (data[: spans[-1][0] + 24] + bytes(spans[-1][1] - spans[-1][0] - 24), "cannot be decrypted"),
    }
    for name, (content, says) in cuts.items():
        path = tmp_path / f"{name}.era"
        path.write_bytes(content)
        audio, found = decrypted(path, key)
        assert found.segments == len(spans) - 1, name
        np.testing.assert_array_equal(audio.reshape(-1), whole[: len(audio)])
        assert found.torn.startswith(f"no final segment after segment {len(spans) - 2}: "), name
        assert says in found.torn, (name, found.torn)


# -- damage and tampering ------------------------------------------------------------------


@pytest.fixture(scope="module")
def two(tmp_path_factory, recipient, line):
    """Two finished recordings to the same recipient, for damage and splicing."""
    spool = tmp_path_factory.mktemp("two")
    a = record(spool, line, opts(format="wav"), recipient)
    b = record(spool, line[::-1].copy(), opts(format="wav"), recipient)
    return a.take.written.path, b.take.written.path


def _damaged(path: Path, key) -> DamagedSegment:
    with pytest.raises(DamagedSegment) as caught:
        decrypted(path, key)
    return caught.value


def test_a_flipped_byte_in_a_middle_segment_is_named(two, tmp_path, key):
    data = bytearray(two[0].read_bytes())
    start, end = frame_spans(two[0])[2]
    data[(start + 24 + end) // 2] ^= 0x01
    (tmp_path / "x.era").write_bytes(data)
    error = _damaged(tmp_path / "x.era", key)
    assert error.index == 2 and "segment 2: cannot be decrypted" in str(error)
    data[(start + 24 + end) // 2] ^= 0x01
    data[start + 9] ^= 0x40  # the plain frame header
    (tmp_path / "x.era").write_bytes(data)
    error = _damaged(tmp_path / "x.era", key)
    assert error.index == 2 and "damaged frame header" in str(error)


def test_segments_cannot_be_reordered_dropped_or_spliced_in_from_another_recording(two, tmp_path, key):
    a, b = two
    data, spans = a.read_bytes(), frame_spans(a)
    frames = [data[s:e] for s, e in spans]
    head = data[: spans[0][0]]
    other = [b.read_bytes()[s:e] for s, e in frame_spans(b)]
    cases = {
        "swapped": ([frames[0], renumber(frames[2], 1), renumber(frames[1], 2), *frames[3:]], "index is 2, expected 1"),
        "dropped": ([frames[0], *frames[2:]], "numbered 2: a segment is missing"),
        "dropped, renumbered": ([frames[0], *[renumber(f, i + 1) for i, f in enumerate(frames[2:])]], "index is 2"),
        "spliced": ([frames[0], other[1], *frames[2:]], f"id is '{b.stem}', expected '{a.stem}'"),
        "appended": ([*frames, frames[-1]], "data after the final segment"),
    }
    for name, (content, says) in cases.items():
        path = tmp_path / f"{name}.era"
        path.write_bytes(head + b"".join(content))
        error = _damaged(path, key)
        assert error.index == 1 or name == "appended", (name, error)
        assert says in str(error), (name, str(error))


def test_a_damaged_last_segment_is_never_passed_as_complete(two, tmp_path, key):
    data = bytearray(two[0].read_bytes())
    data[-5] ^= 0x10
    (tmp_path / "x.era").write_bytes(data)
    _, found = decrypted(tmp_path / "x.era", key)
    assert found.torn is not None and "the last in the file, cannot be decrypted" in found.torn


def test_the_wrong_identity_is_told_so(two, recipient):
    other = pyrage.x25519.Identity.generate()
    with pytest.raises(WrongIdentity, match=f"encrypted to {recipient}; the identity given is for {other.to_public()}"):
        encrypted.decrypt(two[0], other)


# -- keys ----------------------------------------------------------------------------------


def test_check_recipient_takes_a_key_or_a_file_and_says_what_is_wrong(tmp_path, key, recipient):
    assert check_recipient(f"  {recipient}\n") == recipient
    keyfile = tmp_path / "box.pub"
    keyfile.write_text(f"# the centre's key\n\n{recipient}\n")
    assert check_recipient(str(keyfile)) == recipient
    identity = tmp_path / "central.key"
    identity.write_text(f"# created: 2026-01-01\n# public key: {recipient}\n{key}\n")
    two = tmp_path / "two.pub"
    two.write_text(f"{recipient}\n{recipient}\n")
    errors = {
        "": "no age recipient given",
        "age1qqqq": "is not an age recipient",
        str(key): "must not be on the box",
        str(identity): "must not be on the box",
        str(tmp_path / "missing.pub"): "file missing",
        str(two): "holds 2 recipients",
        "public-key": "neither an age recipient",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI": "neither an age recipient",
    }
    for value, says in errors.items():
        with pytest.raises(ValueError, match=says):
            check_recipient(value)


def test_with_no_valid_key_the_spool_refuses_to_record(tmp_path):
    with pytest.raises(ValueError, match="is not an age recipient"):
        Takes(tmp_path, R, encrypt_to="age1notakey")
    with pytest.raises(ValueError, match="file missing"):
        Takes(tmp_path, R, encrypt_to=str(tmp_path / "nokey.pub"))


# -- writing -------------------------------------------------------------------------------


def test_a_failed_write_is_cut_back_so_the_file_stays_readable(tmp_path, key, recipient, monkeypatch):
    part = EncryptedPart(tmp_path / "RE1.era", WavShape(R, 1), recipient, "RE1")
    ramp = (np.arange(int(2.3 * R)) % 30000).astype(np.int16).reshape(-1, 1)
    part.write(ramp[: 2 * R])  # sealed as it goes; the last 0.3 s stay in the open segment
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    part.write(ramp[2 * R :])
    with pytest.raises(OSError, match="No space"):
        part.sync()
    monkeypatch.setattr(os, "write", real_write)
    part.close()
    audio, found = decrypted(part.path, key)
    assert found.torn is None
    np.testing.assert_array_equal(audio, ramp)


def test_parts_finds_plain_and_encrypted_parts(tmp_path, recipient):
    EncryptedPart(tmp_path / ".RE2.part.era", WavShape(R, 1), recipient, "RE2").close(final=False)
    (tmp_path / ".RE1.part.wav").write_bytes(b"")
    assert [rid for rid, _ in parts(tmp_path)] == ["RE1", "RE2"]


# -- edge-recorder decrypt -----------------------------------------------------------------


def decrypt_cli(*argv) -> int:
    p = argparse.ArgumentParser()
    decrypt_cmd.add_parser(p.add_subparsers())
    args = p.parse_args(["decrypt", *map(str, argv)])
    return args.run(args)


def test_the_decrypt_command_says_by_its_exit_status_what_it_found(two, tmp_path, key, recipient, capsys):
    keyfile = tmp_path / "central.key"
    keyfile.write_text(f"# public key: {recipient}\n{key}\n")
    source = tmp_path / "RE.era"
    source.write_bytes(two[0].read_bytes())
    assert decrypt_cli(source, "--identity", keyfile) == 0
    assert sf.info(tmp_path / "RE.wav").frames == encrypted.scan(source).frames
    assert decrypt_cli(source, "--identity", keyfile) == 73, "an existing output is kept"
    assert decrypt_cli(source, "-i", keyfile, "--format", "mp3", "--sample-rate", "8000") == 0
    assert sf.info(tmp_path / "RE.mp3").samplerate == 8000
    torn = tmp_path / "torn.era"
    torn.write_bytes(source.read_bytes()[: frame_spans(source)[-2][1] - 7])
    assert decrypt_cli(torn, "-i", keyfile, "--raw") == decrypt_cmd.TORN
    damaged = bytearray(source.read_bytes())
    damaged[frame_spans(source)[1][1] - 9] ^= 1
    (tmp_path / "damaged.era").write_bytes(damaged)
    capsys.readouterr()
    assert decrypt_cli(tmp_path / "damaged.era", "-i", keyfile, "-o", tmp_path / "d.wav") == 65
    assert "segment 1" in capsys.readouterr().err and not (tmp_path / "d.wav").exists()
    other = pyrage.x25519.Identity.generate()
    assert decrypt_cli(source, "-i", str(other), "-o", tmp_path / "o.wav") == decrypt_cmd.NOPERM
    assert decrypt_cli(tmp_path / "none.era", "-i", keyfile) == 66
    assert decrypt_cli(source, "-i", tmp_path / "none.key", "-o", tmp_path / "n.wav") == 66
    assert decrypt_cli(tmp_path / "RE.wav", "-i", keyfile, "-o", tmp_path / "w.wav") == 65
