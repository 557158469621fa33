"""The LAME tag: the first frame of an MP3, which says how long the audio really is.

Theory of operation
-------------------
An MP3 encoder hands out more samples than it was given. LAME starts every
stream with ``ENCODER_DELAY`` (576) samples of its own and pads the end out to
whole frames (1152 samples a frame for MPEG-1, at 32-48 kHz; 576 for MPEG-2 and
2.5, at 8-24 kHz), and every decoder adds 529 samples of its own filter bank
delay at the start. A file that says nothing of this plays 1105 samples late
and up to two frames long: 10.000 s of 8 kHz audio played 10.152 s.

LAME's answer, which decoders honour (mpg123 and so libsndfile, ffmpeg,
foobar2000; mutagen reads it), is the LAME tag: one MP3 frame before the audio,
silent to a decoder that does not know it (its side information is all zeros),
whose data holds a Xing header ("Info" for a constant bit rate: the number of
audio frames, the file's bytes, a seek table) and LAME's extension of it (the
encoder delay and the padding at the end, and two CRCs). A decoder then drops
delay + 529 samples at the start and padding - 529 at the end: exactly the
samples the encoder was given come out.

lameenc does not write the tag (it turns ``bWriteVbrTag`` off and has no
``lame_get_lametag_frame``), so the MP3 writer does what LAME's own front end
does: it writes a placeholder frame of the tag's size first, and at the end
writes the tag over it (``Tally`` counts what the tag needs as the audio goes
by). The placeholder is the tag's frame header and zeros, a frame of silence,
so a file cut off before its tag was written still plays, only 1105 samples and
one frame late. The padding is not taken from LAME (lameenc does not say it)
but from the count: every frame holds the same number of samples, so padding =
frames x samples per frame - delay - samples given.

The tag's frame has the audio's MPEG version, sample rate and channel mode, and
the audio's bit rate when a frame at that rate holds the tag (as LAME does for a
constant bit rate), else the lowest bit rate whose frame does (LAME leaves such
files, 32 kbit/s mono at 16 kHz among them, without a tag). Decoders skip the
tag's frame whatever its bit rate.

Layout, in bytes from the frame's sync word, as LAME 3.100's ``PutLameVBR``
writes it (``libmp3lame/VbrTag.c``) and Gabriel Bouvigne's "Mp3 info Tag rev 1
specifications" (http://gabriel.mp3-tech.org/mp3infotag.html) describe it; all
numbers big-endian. X = 4 + side information: 13 (MPEG-2/2.5 mono), 21
(MPEG-2/2.5 stereo, MPEG-1 mono), 36 (MPEG-1 stereo)::

    0      4   frame header (no CRC, no padding bit)
    4      .   side information: zeros (a silent frame)
    X      4   "Info" (constant bit rate; "Xing" for a variable one)
    X+4    4   flags: 0x0F (frames, bytes, TOC and quality follow)
    X+8    4   audio frames (the tag's frame not counted)
    X+12   4   bytes, the whole file (the tag's frame counted)
    X+16 100   TOC: entry i, 256 x the share of the audio up to the frame i % of
               the way in (entry 0: 0), as LAME's ``Xing_seek_table`` for one bit rate
    X+116  4   quality: 100 - 10 x VBR quality - quality (LAME's -q)
    X+120  9   encoder version, "LAME4.0 " (LAME's very short version)
    X+129  1   tag revision (0) << 4 | VBR method (1: constant bit rate)
    X+130  1   lowpass / 100 Hz (0: not known)
    X+131  4   peak amplitude (0: not computed)
    X+135  2   radio replay gain (0: not computed)
    X+137  2   audiophile replay gain (0: not computed)
    X+139  1   encoding flags << 4 | ATH type (0: not known)
    X+140  1   bit rate, kbit/s (of the audio frames)
    X+141  3   encoder delay (12 bits) and padding (12 bits), in samples
    X+144  1   source rate << 6 | unwise settings << 5 | stereo mode << 2 | noise shaping
    X+145  1   MP3 gain (0)
    X+146  2   surround and preset (0)
    X+148  4   music length: bytes, the whole file
    X+152  2   music CRC: CRC-16 of the audio frames (all bytes after the tag's frame)
    X+154  2   tag CRC: CRC-16 of bytes 0 to X+153 of this frame
           .   zeros to the end of the frame

The CRC is CRC-16/ARC (polynomial 0x8005 reflected, initial value 0), LAME's
``CRC_update_lookup``. The frame header is ISO/IEC 11172-3 2.4.1.3 with the
MPEG-2 (ISO/IEC 13818-3) and MPEG-2.5 sample rates.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

import numpy as np

#: Samples LAME puts before the audio (ENCDELAY in libmp3lame/encoder.h): what the tag tells decoders to drop.
ENCODER_DELAY = 576
#: The very short version string of the LAME that lameenc links (lameenc 1.9: LAME 4.0), 9 bytes in the tag.
ENCODER_VERSION = b"LAME4.0 "
#: LAME's default VBR quality (``-V 4``): part of the tag's quality field, also for a constant bit rate.
_VBR_QUALITY = 4
#: From "Info" to the tag CRC, both included (LAMEHEADERSIZE in VbrTag.c).
TAG_BYTES = 156
_XING = struct.Struct(">4sIII100sI")
_LAME = struct.Struct(">9sBBIHHBB3sBBHIH")

_VERSIONS = {0b11: "1", 0b10: "2", 0b00: "2.5"}
_RATES = {"1": (44100, 48000, 32000), "2": (22050, 24000, 16000), "2.5": (11025, 12000, 8000)}
_BITRATES = {
    "1": (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    "2": (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MONO = 3
#: Channel mode in the frame header -> stereo mode in the LAME tag (stereo, joint stereo, dual channel, mono).
_STEREO_MODE = {0: 1, 1: 3, 2: 2, 3: 0}


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """The 4-byte header of an MPEG Layer III frame.

    >>> head = parse_header(bytes.fromhex("fff348c4"))
    >>> head.version, head.bitrate, head.sample_rate, head.channels, head.size, head.samples
    ('2', 32, 16000, 1, 144, 576)
    """

    raw: bytes
    version: str  # "1", "2" or "2.5"
    bitrate: int  # kbit/s
    sample_rate: int
    padding: bool
    mode: int  # 0 stereo, 1 joint stereo, 2 dual channel, 3 mono

    @property
    def channels(self) -> int:
        return 1 if self.mode == _MONO else 2

    @property
    def samples(self) -> int:
        """Samples per channel a frame holds."""
        return 1152 if self.version == "1" else 576

    @property
    def size(self) -> int:
        """Bytes in the frame, header included."""
        return _frame_size(self.version, self.bitrate, self.sample_rate) + self.padding

    @property
    def side_info(self) -> int:
        if self.version == "1":
            return 17 if self.mode == _MONO else 32
        return 9 if self.mode == _MONO else 17


def parse_header(data: bytes) -> FrameHeader:
    """The header in the first 4 bytes of ``data``; ValueError when they are not one of a Layer III frame."""
    b0, b1, b2, b3 = data[:4]
    version = _VERSIONS.get((b1 >> 3) & 3)
    bitrate_index, rate_index = b2 >> 4, (b2 >> 2) & 3
    if b0 != 0xFF or b1 & 0xE0 != 0xE0 or version is None or (b1 >> 1) & 3 != 1:
        raise ValueError(f"not an MPEG Layer III frame header: {bytes(data[:4]).hex()}")
    if bitrate_index in (0, 15) or rate_index == 3:
        raise ValueError(f"free-format or reserved frame header: {bytes(data[:4]).hex()}")
    return FrameHeader(
        bytes(data[:4]),
        version,
        _BITRATES["1" if version == "1" else "2"][bitrate_index],
        _RATES[version][rate_index],
        bool(b2 & 2),
        b3 >> 6,
    )


#: A stream repeats a handful of headers (padding, mode extension): parse each once.
_parse_cached = functools.lru_cache(maxsize=64)(parse_header)


def _frame_size(version: str, kbps: int, rate: int) -> int:
    return (144000 if version == "1" else 72000) * kbps // rate


class Tally:
    """What the tag says of the audio frames, counted as their bytes go by (in pieces cut anywhere).

    >>> tally = Tally()
    >>> frame = bytes.fromhex("fff348c4") + bytes(140)
    >>> tally.feed(frame * 2 + frame[:2]); tally.feed(frame[2:])
    >>> tally.frames, tally.bytes, tally.first.bitrate
    (3, 432, 32)
    """

    def __init__(self) -> None:
        self.first: FrameHeader | None = None
        self.frames = 0
        self.bytes = 0
        self._crc = 0
        self._unsummed = bytearray()  # bytes not in _crc yet: crc16 is quicker on long runs than on short pieces
        self._next = 0  # where the next frame header starts
        self._split = b""  # the start of a header cut by the end of a piece

    @property
    def crc(self) -> int:
        """CRC-16 of every byte fed (the music CRC of the LAME tag)."""
        self._fold()
        return self._crc

    def _fold(self) -> None:
        if self._unsummed:
            self._crc = crc16(bytes(self._unsummed), self._crc)
            self._unsummed.clear()

    def feed(self, data: bytes) -> None:
        base = self.bytes - len(self._split)
        self.bytes += len(data)
        self._unsummed += data
        if len(self._unsummed) >= 1 << 16:
            self._fold()
        buf = self._split + data if self._split else data
        at = self._next - base
        while at + 4 <= len(buf):
            header = _parse_cached(bytes(buf[at : at + 4]))
            if self.first is None:
                self.first = header
            self.frames += 1
            at += header.size
        self._next = base + at
        self._split = bytes(buf[at:]) if at < len(buf) else b""


def tag_header(first: FrameHeader) -> FrameHeader:
    """The header of the tag's frame for a stream that starts with ``first``.

    >>> tag_header(parse_header(bytes.fromhex("fff348c4"))).bitrate  # 144 bytes at 32 kbit/s: too short
    40
    """
    need = 4 + first.side_info + TAG_BYTES
    rates = _BITRATES["1" if first.version == "1" else "2"]
    index = next(
        i
        for i, kbps in enumerate(rates)
        if kbps >= first.bitrate and _frame_size(first.version, kbps, first.sample_rate) >= need
    )
    raw = bytes((0xFF, first.raw[1] | 0x01, index << 4 | (first.raw[2] & 0x0D), first.raw[3]))
    return parse_header(raw)


def placeholder(first: FrameHeader) -> bytes:
    """The frame written where the tag will go: the tag's header and zeros, a frame of silence."""
    header = tag_header(first)
    return header.raw + bytes(header.size - 4)


def info_frame(
    first: FrameHeader, *, frames: int, audio_bytes: int, music_crc: int, samples: int, quality: int
) -> bytes:
    """The LAME tag frame of a constant-bit-rate stream that starts with ``first``.

    ``frames``, ``audio_bytes`` and ``music_crc`` are of the audio frames (a
    ``Tally``); ``samples`` is what the encoder was given, per channel;
    ``quality`` is LAME's (0 best .. 9). The frame is as long as ``placeholder``.

    >>> first = parse_header(bytes.fromhex("ffe348c4"))  # 8 kHz mono, 32 kbit/s: 288-byte frames
    >>> tag = info_frame(first, frames=141, audio_bytes=141 * 288, music_crc=0, samples=80000, quality=5)
    >>> len(tag), tag[:4].hex(), tag[13:17]
    (288, 'ffe348c4', b'Info')
    >>> struct.unpack(">II", tag[21:29]), tag[133:141]  # 141 frames, 288 + 141 x 288 bytes
    ((141, 40896), b'LAME4.0 ')
    >>> d = int.from_bytes(tag[154:157], "big"); (d >> 12, d & 0xFFF)  # delay 576, padding 141 x 576 - 576 - 80000
    (576, 640)
    """
    header = tag_header(first)
    total = header.size + audio_bytes
    padding = frames * first.samples - ENCODER_DELAY - samples
    if not 0 <= padding < 1 << 12:
        raise ValueError(f"{frames} frames cannot hold {samples} samples after the encoder delay")
    toc = bytes([0] + [min(255, 256 * (i * frames // 100 + 1) // frames) for i in range(1, 100)])
    xing = _XING.pack(b"Info", 0x0F, frames, total, toc, 100 - 10 * _VBR_QUALITY - quality)
    rate = first.sample_rate
    source = 0 if rate <= 32000 else 1 if rate < 48000 else 2 if rate == 48000 else 3
    unwise = rate <= 32000  # LAME flags every source at 32 kHz or below so
    misc = source << 6 | unwise << 5 | _STEREO_MODE[first.mode] << 2
    lame = _LAME.pack(
        ENCODER_VERSION.ljust(9, b"\0"),
        0x01,  # revision 0, constant bit rate
        0,  # lowpass: lameenc does not say
        0,  # peak amplitude
        0,  # radio replay gain
        0,  # audiophile replay gain
        0,  # encoding flags, ATH type: lameenc does not say
        min(first.bitrate, 255),
        (ENCODER_DELAY << 12 | padding).to_bytes(3, "big"),
        misc,
        0,  # MP3 gain
        0,  # surround, preset
        total,
        music_crc,
    )
    body = header.raw + bytes(first.side_info) + xing + lame
    return body + struct.pack(">H", crc16(body)) + bytes(header.size - len(body) - 2)


# -- CRC-16/ARC ------------------------------------------------------------------------------


def _byte_table() -> np.ndarray:
    crc = np.arange(256, dtype=np.uint16)
    for _ in range(8):
        crc = np.where(crc & 1, (crc >> 1) ^ 0xA001, crc >> 1).astype(np.uint16)
    return crc


_TABLE = _byte_table()
_TABLE_LIST = _TABLE.tolist()
#: CRCs are folded in runs of this many bytes; _SHIFT_* take a CRC past a run of zeros.
_RUN = 64


def _zeros_table(high: bool) -> list[int]:
    crc = np.arange(256, dtype=np.uint16) << (8 if high else 0)
    for _ in range(_RUN):
        crc = (crc >> 8) ^ _TABLE[crc & 0xFF]
    return crc.tolist()


_SHIFT_LO, _SHIFT_HI = _zeros_table(False), _zeros_table(True)


def crc16(data: bytes, crc: int = 0) -> int:
    """CRC-16/ARC of ``data``, continued from ``crc``: the CRC of the LAME tag.

    A byte-at-a-time loop in Python would take seconds for an hour of audio, so
    runs of 64 bytes are done side by side with numpy, each from 0, and folded
    in order: the CRC is linear, so a run's CRC from ``crc`` is its CRC from 0
    xor ``crc`` carried past 64 zero bytes.

    >>> hex(crc16(b"123456789"))  # the catalogue check value of CRC-16/ARC
    '0xbb3d'
    >>> data = bytes(range(256)) * 5 + b"tail"
    >>> crc = 0
    >>> for byte in data:
    ...     crc = crc16(bytes([byte]), crc)
    >>> crc16(data) == crc
    True
    """
    buf = np.frombuffer(data, np.uint8)
    whole = len(buf) - len(buf) % _RUN
    if whole:
        runs = buf[:whole].reshape(-1, _RUN)
        part = np.zeros(len(runs), np.uint16)
        for column in runs.T:
            part = (part >> 8) ^ _TABLE[(part ^ column) & 0xFF]
        for value in part.tolist():
            crc = _SHIFT_LO[crc & 0xFF] ^ _SHIFT_HI[crc >> 8] ^ value
    for byte in buf[whole:].tolist():
        crc = (crc >> 8) ^ _TABLE_LIST[(crc ^ byte) & 0xFF]
    return crc
