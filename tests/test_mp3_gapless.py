"""MP3 files play exactly as long as the recording, from its first sample.

LAME starts every stream with 576 samples of its own and pads the end out to a
whole frame; the decoder adds 529 more at the start. Without a LAME tag a
decoder cannot tell, so a 10.000 s recording played 10.080 s (16 kHz) or
10.152 s (8 kHz) and began 1105 samples late. Each file here is checked with
other people's code only: mutagen reads the Xing/LAME tag (frame count, encoder
delay and padding, the CRCs), and libsndfile decodes through mpg123, which
honours the tag (gapless decoding). The test signal is music with noise clicks
at known samples, different in each channel: after decoding, each click must be
at the sample where it was written.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import lameenc
import numpy as np
import pyrage
import pytest
import soundfile as sf
from mutagen.mp3 import MP3, BitrateMode, MPEGFrame
from mutagen.mp3._util import XingHeader

from firmware.catalog import Catalog
from firmware.core import Audio, InputLayout, Recorder, RecordingOptions, Start
from firmware.daemon.recovery import recover
from firmware.media import encrypted, mp3tag
from firmware.media.convert import media_for
from firmware.media.finalize import finalize
from firmware.media.partfile import WavShape
from firmware.media.writers import Mp3Writer
from firmware.spool import Takes, part_path
from tests import signals as sig

#: LAME's encoder delay (ENCDELAY in libmp3lame/encoder.h), and what every MP3 decoder adds to it.
ENCODER_DELAY, DECODER_DELAY = 576, 529
CLICK = 256
#: Far enough to find a click that moved by the whole untagged delay and a frame besides.
REACH = 2 * 1152


def samples_per_frame(rate: int) -> int:
    return 1152 if rate >= 32000 else 576


def marked(seconds: float, rate: int, channels: int) -> tuple[np.ndarray, list[int]]:
    """Music with loud noise clicks; the clicks start near the beginning and end near the end."""
    n = round(seconds * rate)
    marks = [150, n // 3, n - CLICK - 120]
    tracks = []
    for ch in range(channels):
        track = sig.music(seconds, rate, seed=7 + ch) * 0.5
        for i, at in enumerate(marks):
            track[at + 40 * ch : at + 40 * ch + CLICK] += click(seed=10 * ch + i)
        tracks.append(track)
    return sig.to_int16(*tracks), marks


def click(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 9000, CLICK) * np.hanning(CLICK)


def write_mp3(path: Path, x: np.ndarray, rate: int, piece: int | None = None):
    w = Mp3Writer(path, rate, x.shape[1])
    step = piece or rate // 50
    for i in range(0, len(x), step):
        w.write(x[i : i + step])
    return w.close()


def shift(decoded: np.ndarray, original: np.ndarray, at: int) -> int:
    """Where the click written at ``at`` is found in ``decoded``, relative to ``at`` (cross-correlation)."""
    template = original[at : at + CLICK].astype(float)
    lo = max(0, at - REACH)
    window = decoded[lo : at + CLICK + REACH].astype(float)
    scores = np.correlate(window, template, "valid")
    return lo + int(np.argmax(scores)) - at


def assert_clicks_in_place(decoded: np.ndarray, original: np.ndarray, marks: list[int]) -> None:
    for ch in range(original.shape[1]):
        for at in marks:
            where = at + 40 * ch
            assert shift(decoded[:, ch], original[:, ch], where) == 0, f"channel {ch}: click at {where} moved"


def lame_tag(path: Path) -> tuple[MPEGFrame, XingHeader]:
    """mutagen's reading of the first frame and of the Xing/LAME header in it."""
    with open(path, "rb") as fh:
        frame = MPEGFrame(fh)
        fh.seek(frame.frame_offset + XingHeader.get_offset(frame))
        return frame, XingHeader(fh)


def crc16_arc(data: bytes) -> int:
    """CRC-16/ARC (polynomial 0x8005, reflected, initial 0), bit by bit: the CRC the LAME tag uses."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def assert_gapless(path: Path, original: np.ndarray, rate: int, marks: list[int], kbps: int | None = None) -> None:
    """The decoded file is ``original``'s length, its clicks in place, and mutagen reads the same length
    and a LAME tag that agrees with the file (``kbps``: of the audio frames, 32 per channel by default)."""
    n, channels = original.shape
    spf = samples_per_frame(rate)
    decoded, decoded_rate = sf.read(path, dtype="int16", always_2d=True)
    assert (decoded_rate, decoded.shape[1]) == (rate, channels)
    # mpg123 cuts exactly encoder delay + 529 at the start and padding - 529 at the end: not a sample more or less
    assert len(decoded) == n
    assert_clicks_in_place(decoded, original, marks)
    info = MP3(path).info
    assert abs(info.length - n / rate) < 1 / rate / 2, "mutagen's length is the recording's, to the sample"
    assert abs(info.length - n / rate) < spf / rate  # what the acceptance asks: within one frame
    frame, xing = lame_tag(path)
    assert xing.is_info and info.bitrate_mode is BitrateMode.CBR
    lame = xing.lame_header
    assert lame is not None, "a LAME extension follows the Info header"
    assert lame.encoder_delay_start == ENCODER_DELAY
    assert lame.encoder_padding_end == xing.frames * spf - ENCODER_DELAY - n
    assert 0 <= lame.encoder_padding_end < 2 * spf + DECODER_DELAY
    size = path.stat().st_size
    assert xing.bytes == lame.music_length == size
    # CBR without padding bits at these rates: every audio frame is as long; the tag's frame comes before them
    kbps = kbps or 32 * channels
    tag_bytes = size - xing.frames * (144000 if frame.version == 1 else 72000) * kbps // rate
    with open(path, "rb") as fh:
        fh.seek(tag_bytes)
        audio = MPEGFrame(fh)  # mutagen finds the first audio frame right after the tag's
    assert (audio.frame_offset, audio.bitrate, audio.sample_rate) == (tag_bytes, kbps * 1000, rate)
    data = path.read_bytes()
    assert lame.music_crc == crc16_arc(data[tag_bytes:])
    tag_end = XingHeader.get_offset(frame) + 120 + 34
    assert lame.header_crc == crc16_arc(data[:tag_end])
    assert xing.toc[0] == 0 and xing.toc == sorted(xing.toc) and xing.toc[-1] < 256


@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (16000, 1), (16000, 2), (8000, 2)])
def test_a_written_mp3_decodes_to_exactly_the_samples_written(tmp_path, rate, channels):
    x, marks = marked(10.0, rate, channels)
    done = write_mp3(tmp_path / "a.mp3", x, rate)
    assert done.frames == len(x) == 10 * rate, "the catalog says 10.000 s"
    assert_gapless(tmp_path / "a.mp3", x, rate, marks)
    assert done.size == (tmp_path / "a.mp3").stat().st_size


@pytest.mark.parametrize(("rate", "channels"), [(44100, 2), (48000, 1), (22050, 1), (11025, 1)])
def test_conversions_to_other_sample_rates_are_exact_too(tmp_path, rate, channels):
    """MPEG-1 (1152 samples a frame) and the rates whose frames alternate in length (padding bits)."""
    x, marks = marked(3.0, rate, channels)
    write_mp3(tmp_path / "a.mp3", x, rate)
    decoded, _ = sf.read(tmp_path / "a.mp3", dtype="int16", always_2d=True)
    assert len(decoded) == len(x)
    assert_clicks_in_place(decoded, x, marks)
    assert MP3(tmp_path / "a.mp3").info.length == pytest.approx(3.0, abs=0.5 / rate)
    _, xing = lame_tag(tmp_path / "a.mp3")
    lame = xing.lame_header
    assert lame.encoder_delay_start == ENCODER_DELAY
    assert lame.encoder_padding_end == xing.frames * samples_per_frame(rate) - ENCODER_DELAY - len(x)


@pytest.mark.parametrize("kbps", [8, 64])
@pytest.mark.parametrize("rate", [8000, 16000])
def test_every_bit_rate_gets_a_tag_even_when_its_frames_are_too_small_to_hold_one(tmp_path, rate, kbps):
    x, marks = marked(3.0, rate, 1)
    w = Mp3Writer(tmp_path / "a.mp3", rate, 1, kbps_per_channel=kbps)
    w.write(x)
    w.close()
    # 8 kbit/s is too coarse to keep a click's waveform: there the length and the tag are what count
    assert_gapless(tmp_path / "a.mp3", x, rate, marks if kbps == 64 else [], kbps=kbps)


def test_a_short_recording_of_a_few_samples_is_exact_too(tmp_path):
    x = (np.arange(37, dtype=np.int16) * 300).reshape(-1, 1)
    write_mp3(tmp_path / "a.mp3", x, 8000)
    assert len(sf.read(tmp_path / "a.mp3", dtype="int16")[0]) == 37
    assert MP3(tmp_path / "a.mp3").info.length == pytest.approx(37 / 8000)


def test_the_tag_names_the_lame_that_encoded_the_audio(tmp_path):
    x, _ = marked(1.0, 8000, 1)
    write_mp3(tmp_path / "a.mp3", x, 8000)
    _, xing = lame_tag(tmp_path / "a.mp3")
    # lameenc links LAME statically; its very short version string is the one the tag must carry
    assert b"LAME4.0 \x00" in Path(lameenc.__file__).read_bytes()
    assert xing.lame_version == (4, 0) and xing.lame_header.vbr_method == 1  # 1: constant bit rate


def test_finalising_a_part_to_mp3_with_trim_and_rate_change_keeps_the_catalog_duration(tmp_path):
    x, _ = marked(4.0, 16000, 1)
    part = tmp_path / "p.wav"
    sf.write(part, x, 16000, subtype="PCM_16")
    done = finalize(part, tmp_path / "f.mp3", "mp3", 8000, trim=(4000, 60000))
    decoded, rate = sf.read(tmp_path / "f.mp3", dtype="int16")
    assert rate == 8000 and len(decoded) == done.frames
    assert MP3(tmp_path / "f.mp3").info.length == pytest.approx(done.frames / 8000, abs=1e-9)


def test_conversions_served_by_the_api_are_gapless_both_ways(tmp_path):
    rate = 16000
    x, marks = marked(5.0, rate, 2)
    spool = tmp_path / "spool"
    spool.mkdir()
    sf.write(spool / "RE1.wav", x, rate, subtype="PCM_16")
    row = {"id": "RE1", "path": str(spool / "RE1.wav"), "status": "completed", "channels": 2,
           "sample_rate": rate, "sha256": "a" * 64}  # fmt: skip
    mp3 = media_for(row, "mp3", None, spool)
    assert_gapless(mp3, x, rate, marks)
    mono = media_for(row, "mp3", 1, spool)
    downmix = (x.astype(np.int32).mean(axis=1, keepdims=True)).astype(np.int16)
    assert_gapless(mono, downmix, rate, marks[:1])
    # an MP3 recording served as WAV: decoded with the tag, so the WAV is the recording's length and in place
    stored = spool / "RE2.mp3"
    write_mp3(stored, x, rate)
    wav = media_for({**row, "id": "RE2", "path": str(stored), "sha256": "b" * 64}, "wav", None, spool)
    back, _ = sf.read(wav, dtype="int16", always_2d=True)
    assert len(back) == len(x)
    assert_clicks_in_place(back, x, marks)


def test_an_encrypted_recording_decrypted_to_mp3_on_the_central_side_has_the_tag(tmp_path):
    rate = 16000
    x, marks = marked(3.0, rate, 1)
    key = pyrage.x25519.Identity.generate()
    part = encrypted.EncryptedPart(
        tmp_path / "RE1.era", WavShape(rate, 1), str(key.to_public()), "RE1",
        finish={"format": "mp3", "sample_rate": rate, "mp3_bitrate": 32},
    )  # fmt: skip
    for i in range(0, len(x), 320):
        part.write(x[i : i + 320])
    part.close()
    made = encrypted.decrypt_to_file(tmp_path / "RE1.era", key, tmp_path / "central.mp3")
    assert made.frames == len(x)
    assert_gapless(tmp_path / "central.mp3", x, rate, marks)


class PowerCut(BaseException):
    """The power goes just as the tag would be written: the card holds the part file and no finished MP3."""


def test_a_power_cut_before_the_tag_is_written_is_recovered_with_an_exact_tag(tmp_path, monkeypatch):
    rate = 16000
    x, marks = marked(4.0, rate, 1)
    spool = tmp_path / "spool"
    options = RecordingOptions.from_mapping({"format": "mp3", "sample_rate": rate})
    core = Recorder(InputLayout(rate, 1))
    takes = Takes(spool, rate, file_names="id", sync_seconds=1.0)
    [started] = core.send(Start(options))
    takes.handle(started)
    rid = started.recording.id
    # the recording's fields at its start, as the daemon leaves them beside the part file
    sidecar = {"id": rid, "name": rid, "call_id": "CA1", "source": "api", "status": "in-progress",
               "state": "recording", "format": "mp3", "sample_rate": rate, "channels": 1, "track": "both",
               "options": options.to_dict(), "start_time": "2026-01-01T00:00:00Z"}  # fmt: skip
    (spool / f".{rid}.part.json").write_text(json.dumps(sidecar))
    heard = []
    for at in range(0, len(x), rate // 50):
        for event in core.feed(x[at : at + rate // 50]):
            if isinstance(event, Audio):
                heard.append(event.frames)
            takes.handle(event)

    def cut(*args, **kwargs):
        raise PowerCut

    monkeypatch.setattr(mp3tag, "info_frame", cut)
    with pytest.raises(PowerCut):
        for event in core.close():
            if isinstance(event, Audio):
                heard.append(event.frames)
            takes.handle(event)
    monkeypatch.undo()
    assert part_path(spool, rid).exists() and not (spool / f"{rid}.mp3").exists(), "no MP3 without its tag appears"

    [row] = recover(spool, Catalog(tmp_path / "catalog.sqlite3"), Takes(spool, rate, file_names="id"))
    assert (row["status"], row["end_reason"], row["path"]) == ("completed", "recovered", str(spool / f"{rid}.mp3"))
    audio = np.concatenate(heard)
    assert row["duration"] == pytest.approx(len(audio) / rate, abs=1e-4)
    np.testing.assert_array_equal(audio, x[: len(audio)])
    assert_gapless(spool / f"{rid}.mp3", audio, rate, [m for m in marks if m + CLICK + REACH < len(audio)])


def test_an_mp3_cut_off_before_its_tag_is_written_still_plays(tmp_path):
    """kill -9 while an MP3 is written: its placeholder first frame decodes as a frame of silence."""
    x, marks = marked(8.0, 16000, 1)
    np.save(tmp_path / "x.npy", x)
    code = (
        "import os, signal, sys, numpy as np\n"
        "from firmware.media.writers import Mp3Writer\n"
        "x = np.load(sys.argv[1])\n"
        "w = Mp3Writer(sys.argv[2], 16000, 1)\n"
        "for i in range(0, len(x), 320): w.write(x[i : i + 320])\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    out = tmp_path / "cut.mp3"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "x.npy"), str(out)], cwd=Path(__file__).parent.parent
    )
    assert proc.returncode == -signal.SIGKILL
    assert out.stat().st_size > 0
    decoded, rate = sf.read(out, dtype="int16", always_2d=True)
    assert rate == 16000 and len(decoded) > 5 * rate, "all but what was in the process's buffers (8 KiB, 2 s)"
    # no tag: the decoder keeps LAME's delay, its own, and the placeholder's frame of silence
    late = ENCODER_DELAY + DECODER_DELAY + samples_per_frame(rate)
    assert np.all(decoded[: samples_per_frame(rate)] == 0)
    assert shift(np.concatenate([decoded[:, 0], np.zeros(late, np.int16)])[late:], x[:, 0], marks[1]) == 0
    assert MP3(out).info.length > 5.0


def test_ffmpeg_reads_the_tag(tmp_path):
    rate = 8000
    x, _ = marked(10.0, rate, 1)
    write_mp3(tmp_path / "a.mp3", x, rate)
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=start_time,duration", "-of", "json", tmp_path / "a.mp3"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    [stream] = json.loads(probe.stdout)["streams"]
    # ffmpeg skips what the tag says (start_time), and decodes exactly the recording's samples. Its duration is
    # no check: ffmpeg 5.1 (Debian 12) gives frames x samples per frame (10.152 s here), for files LAME tagged too.
    assert float(stream["start_time"]) == pytest.approx((ENCODER_DELAY + DECODER_DELAY) / rate, abs=1e-6)
    pcm = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", tmp_path / "a.mp3", "-f", "s16le", "-"], capture_output=True, check=True
    ).stdout
    assert len(pcm) // 2 == len(x)


def test_the_click_check_sees_the_1105_samples_an_untagged_stream_is_late(tmp_path):
    """What the bug report saw, on LAME's raw stream: 1105 samples late, padded to whole frames."""
    rate = 8000
    x, marks = marked(10.0, rate, 1)
    enc = lameenc.Encoder()
    enc.set_bit_rate(32)
    enc.set_in_sample_rate(rate)
    enc.set_channels(1)
    enc.set_quality(5)
    (tmp_path / "raw.mp3").write_bytes(enc.encode(x.tobytes()) + enc.flush())
    decoded, _ = sf.read(tmp_path / "raw.mp3", dtype="int16", always_2d=True)
    assert shift(decoded[:, 0], x[:, 0], marks[1]) == ENCODER_DELAY + DECODER_DELAY
    assert len(decoded) / rate == pytest.approx(10.152)
