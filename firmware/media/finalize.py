"""Turn a spooled recording (16-bit WAV at the input rate) into its finished file.

Trimming, sample-rate conversion (soxr) and MP3 encoding happen here, streamed
in one-second pieces, so memory does not grow with the recording's length.
A WAV that needs none of them is renamed, not copied. The finished file is
written under a hidden temporary name and appears under its final name only
after fsync, rename and a directory fsync, so a crash never leaves a
half-written file that looks finished. If finalising fails (a full disk), the
part file is kept and the temporary file removed.

An MP3 gets its LAME tag (its exact length: ``mp3tag``) when its writer
closes, before it is published, so a published MP3 always has it. A power cut
before then leaves the part file, which recovery finalises again from the
start, and a hidden temporary file that is never published (it would play,
only 1105 samples and a frame late, having no tag).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .partfile import publish
from .writers import Written, file_sha256, open_writer

_PIECE_SECONDS = 1.0


def finalize(
    part: Path,
    final: Path,
    fmt: str,
    sample_rate: int,
    trim: tuple[int, int] | None = None,
    mp3_kbps: int = 32,
) -> Written:
    """Write ``final`` from ``part`` and remove ``part``."""
    with sf.SoundFile(part) as src:
        rate, frames = src.samplerate, src.frames
        lo, hi = trim if trim else (0, frames)
        lo, hi = max(0, min(lo, frames)), max(0, min(hi, frames))
        if fmt == "wav" and rate == sample_rate and (lo, hi) == (0, frames):
            src.close()
            publish(part, final)
            return Written(final, frames, final.stat().st_size, file_sha256(final))
        tmp = final.with_name(f".{final.name}.tmp")
        try:
            written = _convert(src, tmp, fmt, sample_rate, (lo, hi), mp3_kbps)
            publish(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    part.unlink()
    return Written(final, written.frames, written.size, written.sha256)


def _convert(src: sf.SoundFile, tmp: Path, fmt: str, sample_rate: int, span: tuple[int, int], mp3_kbps: int) -> Written:
    rate, channels = src.samplerate, src.channels
    writer = open_writer(tmp, fmt, sample_rate, channels, mp3_kbps)
    stream = soxr.ResampleStream(rate, sample_rate, channels, dtype="int16") if rate != sample_rate else None
    lo, hi = span
    src.seek(lo)
    left = hi - lo
    piece = int(rate * _PIECE_SECONDS)
    while left > 0:
        block = src.read(min(piece, left), dtype="int16", always_2d=True)
        if not len(block):
            break
        left -= len(block)
        if stream is not None:
            block = stream.resample_chunk(block, last=left <= 0)
        if len(block):
            writer.write(np.ascontiguousarray(block))
    if stream is not None and left > 0:
        tail = stream.resample_chunk(np.zeros((0, channels), np.int16), last=True)
        if len(tail):
            writer.write(tail)
    return writer.close()
