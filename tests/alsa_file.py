"""A capture PCM served from a WAV file through real ALSA, with no sound card.

ALSA's ``file`` plugin with ``infile`` reads capture audio from a raw file
instead of its slave (the ``null`` PCM, which accepts any rate, channel count
and format). The config lives in the test's directory: it includes the
system's ``alsa.conf`` first (so ``null`` and the usual names exist) and is
selected with ``ALSA_CONFIG_PATH``. alsa-lib checks that variable and the
files' times on every open, so setting it in ``os.environ`` (``monkeypatch``)
takes effect in-process too; a subprocess gets it through ``env``.

Two things differ from a sound card: the plugin is not paced (reads return at
once), and after the end of the file it returns junk rather than an error. So
capture exactly ``frames`` frames: ``AlsaCapture(..., limit_frames=frames)``.

    alsa = alsa_file_device(tmp_path, wav)
    subprocess.run([... "edge-recorder", "run", ...], env=alsa.env)  # [audio] capture = alsa.device
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf

SYSTEM_ALSA_CONF = Path(os.environ.get("ALSA_CONFIG_DIR", "/usr/share/alsa")) / "alsa.conf"


class AlsaFile(NamedTuple):
    env: dict[str, str]  # os.environ plus ALSA_CONFIG_PATH
    device: str  # the capture PCM's name
    frames: int  # frames in the file: the limit to capture


def alsa_file_device(tmp_path: Path, wav_path: Path, name: str = "edgefile") -> AlsaFile:
    """Write the raw audio and an ALSA config under ``tmp_path`` and return how to use it."""
    tmp_path, wav_path = Path(tmp_path), Path(wav_path)
    audio, rate = sf.read(wav_path, dtype="int16", always_2d=True)
    raw = tmp_path / f"{name}.s16"
    # Raw S16_LE frames: the plugin reads bytes as they come, a WAV header would be heard as audio.
    np.ascontiguousarray(audio, dtype="<i2").tofile(raw)
    conf = tmp_path / f"{name}.asound.conf"
    conf.write_text(
        f"<{SYSTEM_ALSA_CONF}>\n"
        f"pcm.{name} {{\n"
        "    type file\n"
        '    slave.pcm "null"\n'
        '    file "/dev/null"\n'  # the plugin also writes what it captures; keep none of it
        f'    infile "{raw}"\n'
        '    format "raw"\n'
        f'    hint.description "edge-recorder test audio from {wav_path.name} ({rate} Hz, {audio.shape[1]} ch)"\n'
        "}\n"
    )
    env = dict(os.environ, ALSA_CONFIG_PATH=str(conf))
    return AlsaFile(env, name, len(audio))
