"""``edge-recorder record`` with inputs nobody planned for, and a recording that holds no audio.

Whatever the input (a named pipe, a device, a directory, a file this user cannot read, a header that
lies), ``record`` ends with a recording and exit 0, or with one line on stderr and a sysexits code:
never a traceback, a hang, an absurd output or a part file left behind. A recording started and
stopped at the same sample finishes cleanly in every format, offline and on the running box.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import soundfile as sf
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from firmware.cli.main import main
from firmware.media.finalize import finalize
from firmware.media.partfile import PartFile, WavShape
from firmware.media.writers import Mp3Writer

from . import signals as sig
from .test_api import Running

R = 8000
SYSEXITS = range(64, 79)
FORMATS = ("wav", "mp3")


def record(*args) -> tuple[int, str, str]:
    """Run ``edge-recorder record`` in this process: (exit code, stdout, stderr).

    An exception escapes to the test, as it would reach the user as a traceback.
    """
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["record", *map(str, args)])
    return code, out.getvalue(), err.getvalue()


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def cli(*args, cwd: Path, timeout: float = 30, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run ``edge-recorder record`` as a user does; a hang fails the test after ``timeout`` seconds."""
    argv = [*prefix, sys.executable, "-m", "firmware.cli.main", "record", *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=timeout)


def files(directory: Path) -> list[Path]:
    """Every file under ``directory``, hidden ones (part files) included."""
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


def assert_refused(code: int, stdout: str, stderr: str, out: Path) -> None:
    """A refusal: a sysexits code, one error line, nothing on stdout and nothing written."""
    assert code in SYSEXITS, (code, stderr)
    assert stderr.startswith("edge-recorder: error: ") and stderr.count("\n") == 1, stderr
    assert stdout == ""
    assert files(out) == []


def wav_bytes(seconds: float, rate: int, channels: int) -> bytes:
    x = sig.to_int16(*[sig.noise(seconds, rate, -20, seed=seed) for seed in range(channels)])
    buffer = io.BytesIO()
    sf.write(buffer, x, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[int, Path]:
    """Two seconds of noise, mono and stereo, by channel count."""
    root = tmp_path_factory.mktemp("inputs")
    made = {}
    for channels in (1, 2):
        made[channels] = root / f"{channels}ch.wav"
        made[channels].write_bytes(wav_bytes(2.0, R, channels))
    return made


# -- a recording with no audio ----------------------------------------------------------------------


def test_an_mp3_writer_given_no_samples_closes_to_an_empty_file(tmp_path):
    """LAME refuses to flush an encoder that never encoded ("Not currently encoding")."""
    done = Mp3Writer(tmp_path / "a.mp3", R, 1).close()
    assert (done.frames, done.size, done.sha256) == (0, 0, hashlib.sha256(b"").hexdigest())
    assert (tmp_path / "a.mp3").read_bytes() == b""


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("channels", [1, 2])
def test_an_empty_part_finalises_in_every_format_and_is_removed(tmp_path, fmt, channels):
    part = tmp_path / ".a.part.wav"
    PartFile(part, WavShape(R, channels)).close()
    done = finalize(part, tmp_path / f"a.{fmt}", fmt, 16000)
    assert done.frames == 0 and done.path.exists() and not part.exists()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("channels", ["mono", "dual"])
def test_a_recording_started_and_stopped_at_once_finishes_cleanly(tmp_path, inputs, fmt, channels):
    out = tmp_path / "out"
    code, stdout, stderr = record(
        inputs[2], "--out", out, "--format", fmt, "--channels", channels, "--at", "0.5=start", "--at", "0.5=stop"
    )
    assert code == 0 and stderr == ""
    started, done = events(stdout)
    assert started["type"] == "recording.started" and done["data"]["duration"] == 0
    assert not [p for p in files(out) if ".part" in p.name]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("channels", ["mono", "dual"])
def test_a_recording_with_no_audio_ends_absent_and_leaves_no_file(tmp_path, inputs, caplog, fmt, channels):
    out = tmp_path / "out"
    with caplog.at_level("INFO", logger="edge-recorder.record"):
        code, stdout, _ = record(
            inputs[2], "--out", out, "--format", fmt, "--channels", channels, "--at", "0.5=start", "--at", "0.5=stop"
        )
    assert code == 0
    done = events(stdout)[-1]["data"]
    assert (done["status"], done["size"], done["media_url"]) == ("absent", 0, None)
    assert files(out) == []
    assert [r.getMessage() for r in caplog.records] == [f"{done['name']}: absent; no file written"]


def start_and_stop_at_once(api: Running, fmt: str):
    """A start and a stop over HTTP that the loop handles in one go, with no audio between them.

    The loop is held between periods until both requests wait in its control queue.
    """
    loop = api.box.loop
    held, gate = threading.Event(), threading.Event()

    def hold() -> None:
        held.set()
        gate.wait()

    loop.submit(hold)
    assert held.wait(10), "the loop did not take the hold"
    answers: dict[str, object] = {}

    def post(name: str, path: str, body: dict) -> None:
        answers[name] = api.post(path, body)

    def queued(n: int) -> None:
        deadline = time.monotonic() + 10
        while loop._controls.qsize() < n:  # the requests' actions, behind the gate
            assert time.monotonic() < deadline, "the API did not queue the request"
            time.sleep(0.01)

    start = threading.Thread(target=post, args=("start", "/v1/recordings", {"format": fmt}))
    start.start()
    queued(1)
    stop = threading.Thread(target=post, args=("stop", "/v1/recordings/current", {"status": "stopped"}))
    stop.start()
    queued(2)
    gate.set()
    start.join(30)
    stop.join(30)
    rid = answers["start"].json()["recording"]["id"]
    return answers, api.get(f"/v1/recordings/{rid}").json()


def test_a_start_and_stop_handled_together_on_the_box_answer_and_finish(api):
    answers, row = start_and_stop_at_once(api, "mp3")
    assert answers["start"].status_code == 201, answers["start"].text
    assert answers["stop"].status_code == 200, answers["stop"].text
    assert row["state"] == "finished" and row["status"] not in ("in-progress", "processing"), row
    assert not list(Path(api.box.spool_dir).glob(".*.part.wav"))


def test_a_start_and_stop_handled_together_on_the_box_end_absent(api):
    answers, row = start_and_stop_at_once(api, "mp3")
    assert answers["stop"].status_code == 200, answers["stop"].text
    assert (row["status"], row["media_url"]) == ("absent", None), row
    assert not [p for p in Path(api.box.spool_dir).iterdir() if p.suffix in (".mp3", ".wav")]


# -- inputs that are not audio files -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: os.mkfifo(p), "is a named pipe (FIFO), not a file"),
        (lambda p: p.symlink_to("/dev/zero"), "is a character device, not a file"),
        (lambda p: p.mkdir(), "is a directory, not a file"),
    ],
    ids=["fifo-with-no-writer", "dev-zero", "directory"],
)
def test_an_input_that_is_not_a_regular_file_is_refused_at_once(tmp_path, make, message):
    make(tmp_path / "in.wav")
    result = cli("in.wav", "--out", "out", cwd=tmp_path)
    assert_refused(result.returncode, result.stdout, result.stderr, tmp_path / "out")
    assert result.returncode == 66
    assert f"in.wav: {message}" in result.stderr


def test_an_input_this_user_cannot_read_says_permission_denied(tmp_path, inputs):
    """As root the check is real too: the command runs without the capability that overrides file modes."""
    locked = tmp_path / "locked.wav"
    shutil.copy(inputs[1], locked)
    locked.chmod(0)
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        drop = (setpriv or "setpriv", "--bounding-set=-dac_override,-dac_read_search")
        if setpriv is None or subprocess.run([*drop, "true"], capture_output=True).returncode != 0:
            pytest.skip("root, and setpriv cannot drop CAP_DAC_OVERRIDE here")
        prefix = drop
    result = cli("locked.wav", "--out", "out", cwd=tmp_path, prefix=prefix)
    assert_refused(result.returncode, result.stdout, result.stderr, tmp_path / "out")
    assert result.returncode == 66
    assert "locked.wav: permission denied" in result.stderr


# -- headers that lie --------------------------------------------------------------------------------


def _with(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    return data[:offset] + struct.pack(fmt, value) + data[offset + struct.calcsize(fmt) :]


@pytest.mark.parametrize(
    ("mangle", "code", "message"),
    [
        (lambda d: d[:44], 65, "holds no audio"),
        (lambda d: d[:43], 65, "holds no audio"),
        (
            lambda d: _with(_with(d, 24, "<I", 1), 28, "<I", 2),
            65,
            "its header says 1 Hz; an input must be 8000 to 192000 Hz",
        ),
        (lambda d: _with(d, 24, "<I", 4_000_000), 65, "its header says 4000000 Hz; an input must be 8000 to 192000 Hz"),
        (lambda d: _with(d, 22, "<H", 7), 65, "has 7 channels; 1 or 2"),
        (lambda d: b"RIFF" + d[4:8] + b"JUNK" + d[12:], 65, "not a readable audio file"),
    ],
    ids=["header-only", "43-bytes", "1-hz", "4-mhz", "7-channels", "not-wave"],
)
def test_a_header_that_lies_is_refused_with_the_value(tmp_path, mangle, code, message):
    path = tmp_path / "in.wav"
    path.write_bytes(mangle(wav_bytes(1.0, R, 1)))
    result, stdout, stderr = record(path, "--out", tmp_path / "out")
    assert_refused(result, stdout, stderr, tmp_path / "out")
    assert result == code
    assert f"{path}: {message}" in stderr


def test_audio_damaged_after_a_while_ends_the_recording_failed_with_what_came_before(tmp_path):
    """As the box ends a recording it cannot go on with: status failed, the file up to the damage, no part."""
    buffer = io.BytesIO()
    sf.write(buffer, sig.to_int16(sig.noise(10, R, -20)), R, format="FLAC")
    data = bytearray(buffer.getvalue())
    for offset in range(len(data) // 2, len(data), 97):  # the second half: every FLAC frame there is broken
        data[offset] ^= 0x5A
    path = tmp_path / "in.flac"
    path.write_bytes(data)
    code, stdout, stderr = record(path, "--out", tmp_path / "out", "--format", "wav")
    assert code == 65 and stderr.count("\n") == 1
    assert stderr.startswith(f"edge-recorder: error: {path}: audio data is damaged (")  # libsndfile's words
    started, done = events(stdout)
    assert started["type"] == "recording.started"
    assert (done["type"], done["data"]["status"], done["data"]["end_reason"]) == ("recording.error", "failed", "error")
    [kept] = files(tmp_path / "out")
    assert 2 < sf.info(kept).duration == done["data"]["duration"] < 6


VALID = wav_bytes(0.25, R, 1)
FIELDS = [(4, "<I"), (16, "<I"), (20, "<H"), (22, "<H"), (24, "<I"), (28, "<I"), (32, "<H"), (34, "<H"), (40, "<I")]


@settings(max_examples=200, deadline=None)
@given(
    flips=st.lists(st.tuples(st.integers(0, 43), st.integers(0, 255)), max_size=3),
    field=st.none() | st.tuples(st.sampled_from(FIELDS), st.integers(0, 2**32 - 1)),
    length=st.none() | st.integers(0, 64) | st.integers(0, len(VALID)),
    fmt=st.sampled_from(FORMATS),
)
@example(flips=[], field=None, length=44, fmt="mp3")  # a header and no frames
@example(flips=[], field=None, length=43, fmt="mp3")
@example(flips=[], field=((24, "<I"), 1), length=None, fmt="wav")  # 1 Hz: hours of output
@example(flips=[], field=((24, "<I"), 4_000_000), length=None, fmt="mp3")  # 4 MHz: no frame after conversion
def test_a_mutated_or_truncated_wav_gives_a_recording_or_one_line(flips, field, length, fmt):
    data = bytearray(VALID)
    for offset, value in flips:
        data[offset] = value
    if field is not None:
        (offset, layout), value = field
        data = bytearray(_with(bytes(data), offset, layout, value % (1 << (8 * struct.calcsize(layout)))))
    data = bytes(data[:length])
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp) / "in.wav", Path(tmp) / "out"
        path.write_bytes(data)
        code, stdout, stderr = record(path, "--out", out, "--format", fmt)
        event(f"exit {code}")
        assert not [p for p in files(out) if ".part" in p.name]
        if code == 0:
            started, done = events(stdout)
            assert started["type"] == "recording.started", started
            # No header makes hours of output: 8000 frames a second at least, and no codec libsndfile reads
            # packs 10 frames in a byte (GSM 6.10, the densest, packs 160 in 33).
            assert done["data"]["duration"] <= 10 * len(data) / 8000, done
            assert stderr == ""
        else:
            assert_refused(code, stdout, stderr, out)
            assert str(path) in stderr
