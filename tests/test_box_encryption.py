"""Encryption at rest through the running box: nothing the box writes holds the plain audio."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyrage
import soundfile as sf

from firmware import config as cfg
from firmware.cli import doctor

from .daemon_run import ROOT, Box
from .test_encryption import leaks

RATE = 8000


def _line(seconds: float) -> np.ndarray:
    # noise: no 2 KiB block of it repeats, so a leak search cannot be fooled
    return np.random.default_rng(11).integers(-20000, 20000, int(seconds * RATE)).astype(np.int16)


def test_the_box_keeps_no_plain_audio_and_the_central_side_decrypts_it(tmp_path):
    identity = pyrage.x25519.Identity.generate()
    line = _line(4.0)
    box = Box.make(
        tmp_path / "box",
        line,
        RATE,
        encryption={"public_key": str(identity.to_public())},
        sim={"scenario": "0.5=button, 3.5=button"},
    )
    result = box.run()
    assert result.code == 0, result.stderr
    [row] = box.rows()
    assert row["path"].endswith(".era") and '"scheme": "age-x25519-segments-v1"' in row["encryption"]
    finished = result.of("recording.finished")[0]["data"]
    assert finished["encryption"]["recipient"] == str(identity.to_public())
    # every file the box wrote: the spool (recording, sidecars) and the catalog
    written = tmp_path / "box"
    (written / "line.wav").unlink()  # the input, which the test wrote
    assert leaks(written, line.tobytes()) == []
    key = tmp_path / "central.key"
    key.write_text(str(identity) + "\n")
    out = tmp_path / "restored.wav"
    decrypt = subprocess.run(
        [sys.executable, "-m", "firmware.cli.main", "decrypt", row["path"], "-i", str(key), "-o", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert decrypt.returncode == 0, decrypt.stderr
    audio, _ = sf.read(out, dtype="int16")
    first = int(np.flatnonzero(line == audio[0])[0])
    np.testing.assert_array_equal(audio, line[first : first + len(audio)])
    assert abs(len(audio) / RATE - 3.0) < 0.1


def test_a_box_with_an_unusable_key_refuses_to_record_and_says_why(tmp_path):
    box = Box.make(tmp_path, _line(2.0), RATE, encryption={"public_key": "age1notakey"}, sim={"scenario": "0.5=button"})
    result = box.run()
    assert result.code == 0, result.stderr
    assert box.rows() == []
    [problem] = [e for e in result.of("device.error") if e["data"]["code"] == "encryption_key"]
    assert "public_key" in problem["data"]["message"] and "refused" in problem["data"]["message"]
    assert "not recording" in result.stderr
    check = doctor.check_encryption(cfg.parse({"encryption": {"public_key": "age1notakey"}}))
    assert check.status is doctor.Status.FAIL and "refuses to record" in check.detail
