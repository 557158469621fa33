"""A recording's media in the format and channel count a client asks for.

The stored file is served as it is when it already matches. Otherwise it is
converted once into ``<spool>/.cache/`` (WAV <-> MP3 through libsndfile and
LAME, a downmix for ``RequestedChannels=1``) and that copy is served, so HTTP
Range requests work on converted media too. MP3s are gapless both ways: a
converted MP3 has its LAME tag (``mp3tag``), and an MP3 read for a WAV is
decoded without LAME's delay and padding (libsndfile's mpg123 reads the tag).
As in Twilio's Recording resource reference, asking for two channels of a mono recording is Not Found.
A recording encrypted at rest is neither served nor converted: the box holds
only the public key, so it cannot read its own audio (``firmware.media.encrypted``).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import soundfile as sf

from .encrypted import EXTENSION as ENCRYPTED_EXTENSION
from .partfile import publish
from .writers import open_writer

#: Where converted copies of finished recordings are kept, in the spool (``.mp3`` of a ``.wav``, a downmix).
CACHE_DIR = ".cache"

CACHE_FILES = 32
_PIECE = 16000
_lock = threading.Lock()


class NoMedia(LookupError):
    """Nothing to serve; the message says why (it becomes a 404)."""


class EncryptedMedia(Exception):
    """The recording is encrypted at rest, so the box cannot serve or convert it; the message says where to
    decrypt it (it becomes a 409: the request is fine, the recording's state does not allow it)."""


def media_for(row: dict, fmt: str, channels: int | None, spool: Path) -> Path:
    path = Path(row["path"]) if row.get("path") else None
    if path is None or not path.exists():
        raise NoMedia(f"recording {row['id']} has no media (status {row['status']})")
    if row.get("encryption") or path.suffix == f".{ENCRYPTED_EXTENSION}":
        raise EncryptedMedia(
            f"recording {row['id']} is encrypted at rest and the box holds only the public key: its media can be "
            "decrypted only with the private key, off the box (edge-recorder decrypt on the central side)"
        )
    stored_channels = int(row["channels"])
    if channels == 2 and stored_channels == 1:
        raise NoMedia(f"recording {row['id']} is mono: there is no dual-channel media")
    want_channels = channels or stored_channels
    if path.suffix == f".{fmt}" and want_channels == stored_channels:
        return path
    cache = spool / CACHE_DIR
    cache.mkdir(exist_ok=True)
    target = cache / f"{row['id']}-{row['sha256'][:12]}-{want_channels}ch.{fmt}"
    with _lock:
        if not target.exists():
            _convert(path, target, fmt, want_channels, int(row["sample_rate"]))
            _trim_cache(cache)
    return target


def _convert(source: Path, target: Path, fmt: str, channels: int, rate: int) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        with sf.SoundFile(source) as src:
            writer = open_writer(tmp, fmt, src.samplerate or rate, channels)
            while True:
                block = src.read(_PIECE, dtype="int16", always_2d=True)
                if not len(block):
                    break
                if block.shape[1] != channels:  # downmix: the mean of the two tracks
                    block = block.astype(np.int32).mean(axis=1, keepdims=True).astype(np.int16)
                writer.write(np.ascontiguousarray(block))
            writer.close()
        publish(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _trim_cache(cache: Path) -> None:
    files = sorted((p for p in cache.iterdir() if p.is_file()), key=lambda p: p.stat().st_mtime)
    for old in files[:-CACHE_FILES]:
        old.unlink(missing_ok=True)
