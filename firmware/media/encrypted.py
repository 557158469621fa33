"""Recordings encrypted at rest while they are recorded, and their decryption.

Theory of operation
-------------------
The box holds only an age X25519 *recipient* (a public key, ``age1...``); the
identity (private key) stays on the central side. Whatever is on the card, a
stolen box cannot play back its own recordings. age (https://age-encryption.org/v1)
gives each encryption a fresh random file key, wraps it to the recipient with
X25519, and encrypts with ChaCha20-Poly1305 in 64 KiB chunks.

A recording is encrypted as it is written, so its plain audio never reaches
the card. It is cut into *segments*: the core's audio is buffered in memory,
and on every ``sync`` (the spool's fsync cadence) or when ``segment_seconds``
of audio are buffered, the buffer becomes one segment: one complete age
encryption, appended to the file and fsynced at once. The buffer is the
**open-segment window**: at most ``SEGMENT_SECONDS`` (0.5 s) of audio that
exists only in memory. A crash, ``kill -9`` included, loses it (a plain part
file, written straight to the kernel, loses it only on a power cut); every
sealed segment is complete, durable and decryptable on its own. Because each
segment is fsynced before the next is written, a crash can spoil only the last
one in the file.

The loss budget (README, "The box: ``edge-recorder run``"): a crash, ``kill -9``
or power cut loses at most about a second of audio, and nothing heard becomes
``absent``. What a crash loses is the core's hold-back (``HOLD_BACK_SECONDS``,
0.2 s, never released to the spool) plus the open segment, so the window is
0.5 s: at most 0.7 s in all, with room for a late loop; sealing each second
instead lost up to 1.2 s. And the first
audio a recording gets is sealed at once, however short: a recording counts as
``absent`` after a crash when its file holds no audio, so until its first
segment is sealed, a crash would turn what it heard into ``absent``. The price
is a segment's fixed cost twice a second instead of once: an X25519 key wrap
and an fsync, and some 490 bytes of age header, tag and segment headers (6 % of
8 kHz mono, 1.5 % of 16 kHz stereo). The window counts audio, not time: while
no audio comes (a pause that skips), the open segment waits in memory until the
caller calls ``sync``, so a crash still loses at most 0.5 s of audio, though
audio heard before the pause. The file format does not depend on the window.

Why a sequence of age files and not one: age's payload is a STREAM of 64 KiB
chunks in which only the last may be short, so one age encryption can only be
flushed every 64 KiB (4 s of 8 kHz mono) or when it is finished; a tool that
sealed short chunks mid-stream would write files no age implementation reads.
Each segment here is a complete, standard age file (``age -d`` decrypts one cut
out of the file by its frame header), and what holds them together (the
order, the recording, the end) is authenticated inside them, below.

Nothing else of the plain audio is written anywhere: the box cannot trim,
resample or encode what it cannot read, so a recording's finished file is its
encrypted part file, renamed. The finishing it asked for (format, sample rate,
MP3 bit rate; the trim span, known only at its end) is sealed inside the file
and applied by ``decrypt_to_file`` on the central side. So the segments hold
PCM, never MP3: an MP3 is encoded there, by the same writer as on the box,
LAME tag included (``writers.Mp3Writer``), and nothing sealed needs rewriting.
(Plain audio does live in memory: the open segment, the core's buffers. Swap on
the card, or a core dump, would write it out; the box should run without either.)

File format ``<id>.era`` (edge-recorder age), version 1::

    file    = line frame*
    line    = "EDGE-RECORDER-ERA/1" (" " key "=" value)* "\\n"      plain text, <= 1 KiB
              keys: scheme=age-x25519-segments-v1 recipient=age1... id=<recording id>
                    rate=<Hz> channels=<1|2> sample_format=s16le
    frame   = header(24 bytes, big-endian) age-file
    header  = "ERAS" index:u32 frames:u32 flags:u32 length:u32 crc32:u32
              (flags bit 0: final; crc32 of the 20 bytes before it; length: of the age file)
    age-file decrypts to: json-header "\\n" pcm
              json-header: {"scheme", "id", "index", "sample_rate", "channels",
                            "sample_format": "s16le", "frames", "final",
                            "finish" (segment 0: format, sample_rate, mp3_bitrate),
                            "trim" (final segment: [first, end) frames to keep, or null)}
              pcm: frames x channels int16 little-endian, interleaved

The plain line and frame headers say nothing the catalog and the file size do
not already say; they let the box count a part's audio without a key (crash
recovery) and let the decryptor find segments and name the damaged one. What
counts is inside the encryption: the recording id and the segment index are
authenticated with the audio, so segments cannot be reordered, dropped from the
middle or spliced in from another recording, and the last one says ``final``,
so a file cut at a segment boundary is told from a finished one. (Anyone with
the public key, the box included, can make valid segments: this is secrecy
at rest, not proof of origin. The catalog's sha256, sent with the upload, is.)

Reading a file back (``decrypt``):

- segments are verified in order; every complete segment before a tear is
  returned. A file that ends without a final segment (a crash), or whose bad
  spot has no good segment after it (the write a crash interrupted: cut short,
  zero-filled, undecryptable), is *torn*: ``Segments.torn`` says where, and
  the audio up to there is good;
- a bad segment with a good one after it is damage, not a tear:
  ``DamagedSegment`` names its index;
- an identity that does not match the file's recipient is ``WrongIdentity``.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pyrage

from .partfile import WavShape, _fsync_dir, publish

SCHEME = "age-x25519-segments-v1"
EXTENSION = "era"
SUFFIX = f".{EXTENSION}"
MAGIC = "EDGE-RECORDER-ERA/1"
SAMPLE_FORMAT = "s16le"
#: The open-segment window: the most audio held in memory before it is sealed into a segment. With the
#: core's 0.2 s hold-back it is what a crash can lose (see "The loss budget" above).
SEGMENT_SECONDS = 0.5

_FRAME = struct.Struct(">4sIIII")
_CRC = struct.Struct(">I")
FRAME_BYTES = _FRAME.size + _CRC.size
_FRAME_MAGIC = b"ERAS"
_FINAL = 1
_LINE_MAX = 1024
#: A frame longer than this is a damaged header, not a segment (1 s of 16 kHz stereo is 64 KB).
_SEGMENT_MAX = 64 << 20
_SECRET_PREFIX = "AGE-SECRET-KEY-"


class EncryptionInfo(TypedDict):
    """What the catalog, events and uploads say about an encrypted recording."""

    scheme: str
    recipient: str
    segments: int
    extension: str
    complete: bool  # the final segment was written (False after a crash)


class EncryptedFileError(ValueError):
    """A file that cannot be read back as an encrypted recording; the message says why."""


class NotEncrypted(EncryptedFileError):
    """The file does not start with the line this module writes."""


class WrongIdentity(EncryptedFileError):
    """The identity given is not the one the file was encrypted to."""


class DamagedSegment(EncryptedFileError):
    """A segment that is not the last one fails its checks or cannot be decrypted."""

    def __init__(self, path: Path, index: int, reason: str) -> None:
        self.index = index
        super().__init__(f"{path}: segment {index}: {reason}")


# -- keys ----------------------------------------------------------------------------------


def check_recipient(value: str | Path) -> str:
    """The age X25519 recipient ``value`` is, or names the file of; ValueError saying what is wrong.

    >>> check_recipient("age1-not-a-key")
    Traceback (most recent call last):
    ...
    ValueError: 'age1-not-a-key' is not an age recipient: invalid Bech32 encoding
    """
    text = str(value).strip()
    if not text:
        raise ValueError("no age recipient given")
    if text.startswith(_SECRET_PREFIX):
        raise ValueError(_SECRET_ON_BOX)
    if text.startswith("age1"):
        return _parse_recipient(text)
    path = Path(text).expanduser()
    if not path.exists():
        if "/" in text or text.startswith((".", "~")):
            raise ValueError(f"{path}: file missing (expected an age recipient 'age1...' in it)")
        raise ValueError(f"{text!r} is neither an age recipient ('age1...') nor an existing file")
    from ..config import read_small_file

    lines = read_small_file(path, "the age recipient file").splitlines()
    keys = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if any(k.startswith(_SECRET_PREFIX) for k in keys):
        raise ValueError(f"{path}: {_SECRET_ON_BOX}")
    if len(keys) != 1:
        raise ValueError(f"{path}: holds {len(keys)} recipients; expected exactly one 'age1...' line")
    try:
        return _parse_recipient(keys[0])
    except ValueError:
        # Not its text: a file named here by mistake may hold a password or a token.
        raise ValueError(f"{path}: its line is not an age recipient (expected 'age1...')") from None


_SECRET_ON_BOX = (
    "this is an age identity (private key), which must not be on the box; "
    "give its recipient ('age-keygen -y KEYFILE' prints it)"
)


def _parse_recipient(text: str) -> str:
    try:
        return str(pyrage.x25519.Recipient.from_str(text))
    except pyrage.RecipientError as exc:
        raise ValueError(f"{text!r} is not an age recipient: {exc}") from None


def load_identities(source: str | Path | pyrage.x25519.Identity) -> list[pyrage.x25519.Identity]:
    """Identities from an ``AGE-SECRET-KEY-1...`` string, an age identity file, or an Identity."""
    if isinstance(source, pyrage.x25519.Identity):
        return [source]
    text = str(source).strip()
    if text.startswith(_SECRET_PREFIX):
        keys, where = [text], "the identity"
    else:
        path = Path(text).expanduser()
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: identity file missing") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise EncryptedFileError(f"{path}: cannot be read ({exc})") from exc
        keys = [ln.strip() for ln in lines if ln.strip().startswith(_SECRET_PREFIX)]
        where = str(path)
        if not keys:
            raise EncryptedFileError(f"{path}: no age identity ('AGE-SECRET-KEY-1...') in it")
    try:
        return [pyrage.x25519.Identity.from_str(k) for k in keys]
    except pyrage.IdentityError as exc:
        raise EncryptedFileError(f"{where}: not an age identity: {exc}") from None


# -- writing -------------------------------------------------------------------------------


class EncryptedPart:
    """Appends int16 frames to an encrypted recording, one age-encrypted segment per sync.

    The same interface as ``partfile.PartFile``; ``close`` writes the final segment.
    The first frames written are sealed at once; later ones each ``segment_seconds``.

    >>> import tempfile, pathlib, pyrage
    >>> key = pyrage.x25519.Identity.generate()
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "RE1.era"
    >>> part = EncryptedPart(path, WavShape(8000, 1), str(key.to_public()), "RE1")
    >>> part.write(np.arange(160, dtype=np.int16).reshape(-1, 1))
    >>> part.unsynced_frames, part.segments
    (0, 1)
    >>> part.write(np.arange(800, dtype=np.int16).reshape(-1, 1))
    >>> part.unsynced_frames, part.segments
    (800, 1)
    >>> part.sync(); part.close()
    >>> [(h["index"], h["final"], len(pcm)) for h, pcm in decrypt(path, key)]
    [(0, False, 320), (1, False, 1600), (2, True, 0)]
    """

    def __init__(
        self,
        path: Path,
        shape: WavShape,
        recipient: str,
        recording_id: str,
        *,
        finish: dict[str, Any] | None = None,
        segment_seconds: float = SEGMENT_SECONDS,
    ) -> None:
        self.path = Path(path)
        self.shape = shape
        self.recipient = check_recipient(recipient)
        self.recording_id = recording_id
        self.frames = 0
        self.segments = 0
        self._recipients = [pyrage.x25519.Recipient.from_str(self.recipient)]
        self._finish = dict(finish or {})
        self._segment_frames = max(1, round(segment_seconds * shape.sample_rate))
        self._buffer = bytearray()
        self._durable = 0
        self._size = 0
        self._broken: str | None = None
        line = _line(self.recipient, recording_id, shape)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            self._append(line)
            os.fsync(self._fd)
        except OSError:
            os.close(self._fd)
            self.path.unlink(missing_ok=True)
            raise
        _fsync_dir(self.path.parent)

    @property
    def unsynced_frames(self) -> int:
        """Frames not yet durable: the open segment's."""
        return self.frames - self._durable

    @property
    def buffered_frames(self) -> int:
        return len(self._buffer) // self.shape.block

    def write(self, frames: np.ndarray) -> None:
        """Buffer frames (int16, shape (n, channels)); seal the first at once, then a segment each ``segment_seconds``."""
        data = np.ascontiguousarray(frames, dtype="<i2")
        if data.ndim != 2 or data.shape[1] != self.shape.channels:
            raise ValueError(f"expected frames of shape (n, {self.shape.channels}), got {data.shape}")
        self._buffer += data.tobytes()
        self.frames += len(data)
        if self.segments == 0 and self._buffer:
            self._seal(self.buffered_frames, final=False)  # heard: from now on a crash leaves audio, never absent
        while self.buffered_frames >= self._segment_frames:
            self._seal(self._segment_frames, final=False)

    def sync(self) -> None:
        """Seal what is buffered into a segment (durable, as every segment is)."""
        if self._buffer:
            self._seal(self.buffered_frames, final=False)

    def close(self, final: bool = True, trim: tuple[int, int] | None = None) -> None:
        """Seal the rest, as the final segment (with ``trim``, the span to keep) unless ``final`` is False."""
        if self._fd < 0:
            return
        try:
            if final:
                self._seal(self.buffered_frames, final=True, trim=trim)
            elif self._buffer:
                self._seal(self.buffered_frames, final=False)
        finally:
            os.close(self._fd)
            self._fd = -1

    def _seal(self, frames: int, final: bool, trim: tuple[int, int] | None = None) -> None:
        size = frames * self.shape.block
        head: dict[str, Any] = {
            "scheme": SCHEME,
            "id": self.recording_id,
            "index": self.segments,
            "sample_rate": self.shape.sample_rate,
            "channels": self.shape.channels,
            "sample_format": SAMPLE_FORMAT,
            "frames": frames,
            "final": final,
        }
        if self.segments == 0:
            head["finish"] = self._finish
        if final:
            head["trim"] = [int(trim[0]), int(trim[1])] if trim else None
        plain = json.dumps(head, separators=(",", ":"), sort_keys=True).encode() + b"\n" + self._buffer[:size]
        blob = pyrage.encrypt(bytes(plain), self._recipients)
        self._append(_frame(self.segments, frames, _FINAL if final else 0, len(blob)) + blob)
        del self._buffer[:size]
        self.segments += 1
        os.fsync(self._fd)
        self._durable += frames

    def _append(self, data: bytes) -> None:
        """Write all of ``data`` or none of it: a failed write is cut back so no torn frame stays mid-file."""
        if self._broken:
            raise OSError(f"{self.path}: not writable after an earlier failure ({self._broken})")
        view, written = memoryview(data), 0
        try:
            while written < len(view):
                written += os.write(self._fd, view[written:])
        except OSError as exc:
            try:
                os.ftruncate(self._fd, self._size)
                os.lseek(self._fd, self._size, os.SEEK_SET)
            except OSError:
                self._broken = exc.strerror or str(exc)
            raise
        self._size += written


def _line(recipient: str, recording_id: str, shape: WavShape) -> bytes:
    fields = {
        "scheme": SCHEME,
        "recipient": recipient,
        "id": recording_id,
        "rate": shape.sample_rate,
        "channels": shape.channels,
        "sample_format": SAMPLE_FORMAT,
    }
    if any(c.isspace() or c == "=" for c in recording_id) or not recording_id:
        raise ValueError(f"recording id {recording_id!r} cannot go in a file header")
    line = " ".join([MAGIC, *(f"{k}={v}" for k, v in fields.items())]).encode() + b"\n"
    if len(line) > _LINE_MAX:
        raise ValueError("file header too long")
    return line


def _frame(index: int, frames: int, flags: int, length: int) -> bytes:
    head = _FRAME.pack(_FRAME_MAGIC, index, frames, flags, length)
    return head + _CRC.pack(zlib.crc32(head))


def _read_frame(data: bytes) -> tuple[int, int, int, int] | None:
    """(index, frames, flags, length) of a frame header, or None when it is damaged."""
    head, (crc,) = data[: _FRAME.size], _CRC.unpack(data[_FRAME.size : FRAME_BYTES])
    magic, index, frames, flags, length = _FRAME.unpack(head)
    if magic != _FRAME_MAGIC or crc != zlib.crc32(head) or length > _SEGMENT_MAX:
        return None
    return index, frames, flags, length


# -- reading without a key (the box) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileHeader:
    """The plain first line: who the file is encrypted to and what it holds."""

    recipient: str
    recording_id: str
    shape: WavShape
    size: int  # bytes, the line included


def read_line(path: Path) -> FileHeader:
    """The plain first line of an encrypted recording; ``NotEncrypted`` when it has none."""
    with open(path, "rb") as fh:
        return _parse_line(path, fh.readline(_LINE_MAX))


def _parse_line(path: Path, raw: bytes) -> FileHeader:
    words = raw.decode("ascii", "replace").split()
    if not raw.endswith(b"\n") or not words or words[0] != MAGIC:
        raise NotEncrypted(f"{path}: not an encrypted recording (no {MAGIC} line)")
    fields = dict(w.partition("=")[::2] for w in words[1:])
    try:
        if fields["scheme"] != SCHEME or fields["sample_format"] != SAMPLE_FORMAT:
            raise NotEncrypted(f"{path}: unknown scheme {fields['scheme']!r} / {fields['sample_format']!r}")
        shape = WavShape(int(fields["rate"]), int(fields["channels"]))
        return FileHeader(fields["recipient"], fields["id"], shape, len(raw))
    except (KeyError, ValueError) as exc:
        if isinstance(exc, NotEncrypted):
            raise
        raise NotEncrypted(f"{path}: damaged file header line ({exc})") from None


@dataclass(frozen=True, slots=True)
class Scan:
    """What the box can tell of an encrypted recording without the key (from its plain framing)."""

    header: FileHeader
    segments: int  # complete frames, in order, from the start
    frames: int  # audio frames in them
    complete: bool  # the last of them is flagged final and nothing follows
    tail_bytes: int  # bytes after them (a torn frame after a crash)


def scan(path: Path) -> Scan:
    """Count the complete segments of an encrypted recording by their frame headers."""
    path = Path(path)
    with open(path, "rb") as fh:
        header = _parse_line(path, fh.readline(_LINE_MAX))
        size = os.fstat(fh.fileno()).st_size
        pos, segments, frames, final = header.size, 0, 0, False
        while pos + FRAME_BYTES <= size:
            fh.seek(pos)
            parsed = _read_frame(fh.read(FRAME_BYTES))
            if parsed is None or parsed[0] != segments or pos + FRAME_BYTES + parsed[3] > size:
                break
            segments += 1
            frames += parsed[1]
            final = bool(parsed[2] & _FINAL)
            pos += FRAME_BYTES + parsed[3]
            if final:
                break
    return Scan(header, segments, frames, final and pos == size, size - pos)


def describe(path: Path) -> EncryptionInfo:
    """The ``encryption`` field of a recording's catalog row, events and upload."""
    found = scan(path)
    return EncryptionInfo(
        scheme=SCHEME,
        recipient=found.header.recipient,
        segments=found.segments,
        extension=EXTENSION,
        complete=found.complete,
    )


# -- reading with the key (the central side) -----------------------------------------------


class Segments:
    """The decrypted segments of a file, in order: iterate for ``(header, pcm)``.

    After the iteration, ``torn`` is None for a complete recording, else why it
    ends early (every segment returned is good). Damage raises ``DamagedSegment``.
    """

    def __init__(self, path: Path, identity: str | Path | pyrage.x25519.Identity) -> None:
        self.path = Path(path)
        self.identities = load_identities(identity)
        self.header = read_line(self.path)
        publics = [str(i.to_public()) for i in self.identities]
        if self.header.recipient not in publics:
            raise WrongIdentity(
                f"{self.path}: encrypted to {self.header.recipient}; the identity given is for {', '.join(publics)}"
            )
        self.torn: str | None = None
        self.segments = 0
        self.frames = 0
        self.finish: dict[str, Any] = {}
        self.trim: tuple[int, int] | None = None

    @property
    def shape(self) -> WavShape:
        return self.header.shape

    def __iter__(self) -> Iterator[tuple[dict[str, Any], bytes]]:
        self.torn, self.segments, self.frames, self.finish, self.trim = None, 0, 0, {}, None
        with open(self.path, "rb") as fh:
            fh.seek(self.header.size)
            final = False
            while head := fh.read(FRAME_BYTES):
                index = self.segments
                if final:
                    raise DamagedSegment(self.path, index, "data after the final segment")
                if len(head) < FRAME_BYTES:
                    self._tear(f"segment {index} is cut short inside its frame header")
                    return
                parsed = _read_frame(head)
                if parsed is None:
                    if not _good_frame_after(fh, index, head):
                        self._tear(f"unreadable data where segment {index} should start")
                        return
                    raise DamagedSegment(self.path, index, "damaged frame header")
                number, frames, flags, length = parsed
                if number != index:
                    raise DamagedSegment(self.path, index, f"frame is numbered {number}: a segment is missing")
                blob = fh.read(length)
                if len(blob) < length:
                    self._tear(f"segment {index} is cut short ({len(blob)} of {length} bytes)")
                    return
                try:
                    plain = pyrage.decrypt(blob, self.identities)
                except pyrage.DecryptError as exc:
                    if not _good_frame_after(fh, index):
                        self._tear(f"segment {index}, the last in the file, cannot be decrypted ({exc})")
                        return
                    raise DamagedSegment(self.path, index, f"cannot be decrypted: damaged or altered ({exc})") from None
                meta, pcm = self._check(index, plain, frames, flags)
                final = meta["final"]
                self.segments += 1
                self.frames += frames
                if index == 0:
                    self.finish = dict(meta.get("finish") or {})
                if final and meta.get("trim"):
                    lo, hi = meta["trim"]
                    self.trim = (int(lo), int(hi))
                yield meta, pcm
            if not final:
                self._tear(None)

    def _check(self, index: int, plain: bytes, frames: int, flags: int) -> tuple[dict[str, Any], bytes]:
        """The authenticated header must agree with the position, the file and the framing."""
        cut = plain.find(b"\n")
        try:
            meta = json.loads(plain[:cut]) if cut > 0 else None
        except ValueError:
            meta = None
        if not isinstance(meta, dict):
            raise DamagedSegment(self.path, index, "no segment header inside")
        pcm = plain[cut + 1 :]
        expected = {
            "scheme": SCHEME,
            "id": self.header.recording_id,
            "index": index,
            "sample_rate": self.shape.sample_rate,
            "channels": self.shape.channels,
            "sample_format": SAMPLE_FORMAT,
            "frames": frames,
            "final": bool(flags & _FINAL),
        }
        for key, want in expected.items():
            if meta.get(key) != want:
                raise DamagedSegment(
                    self.path, index, f"inside, {key} is {meta.get(key)!r}, expected {want!r} (spliced or reordered)"
                )
        if len(pcm) != frames * self.shape.block:
            raise DamagedSegment(self.path, index, f"holds {len(pcm)} bytes of audio for {frames} frames")
        return meta, pcm

    def _tear(self, detail: str | None) -> None:
        last = f"after segment {self.segments - 1}" if self.segments else "at all"
        self.torn = f"no final segment {last}" + (f": {detail}" if detail else "")


def _good_frame_after(fh, index: int, before: bytes = b"") -> bool:
    """Whether a good frame header numbered after ``index`` follows in ``fh`` (read from here on)."""
    tail = before
    while block := fh.read(1 << 20):
        data = tail + block
        at = data.find(_FRAME_MAGIC)
        while 0 <= at <= len(data) - FRAME_BYTES:
            parsed = _read_frame(data[at : at + FRAME_BYTES])
            if parsed is not None and parsed[0] > index:
                return True
            at = data.find(_FRAME_MAGIC, at + 1)
        tail = data[-(FRAME_BYTES - 1) :]
    return False


def decrypt(path: Path, identity: str | Path | pyrage.x25519.Identity) -> Segments:
    """The segments of an encrypted recording, verified; see ``Segments``."""
    return Segments(path, identity)


def requested(path: Path, identity: str | Path | pyrage.x25519.Identity) -> dict[str, Any]:
    """The finishing the recording asked for (format, sample_rate, mp3_bitrate), from its first segment."""
    found = decrypt(path, identity)
    for _ in found:
        break
    return found.finish


@dataclass(frozen=True, slots=True)
class Decrypted:
    """A decrypted recording: the file written, its frames, and ``torn`` as in ``Segments``."""

    path: Path
    frames: int
    segments: int
    torn: str | None


def decrypt_to_wav(path: Path, identity: str | Path | pyrage.x25519.Identity, out: Path) -> Decrypted:
    """All the recorded audio as a 16-bit WAV at the recorded rate (no trim, no conversion)."""
    found = decrypt(path, identity)
    return _write_wav(found, Path(out))


def decrypt_to_file(
    path: Path,
    identity: str | Path | pyrage.x25519.Identity,
    out: Path,
    fmt: str | None = None,
    sample_rate: int | None = None,
    trim: bool = True,
) -> Decrypted:
    """The finished recording it asked for: its format, rate and trim, unless given here."""
    from .finalize import finalize

    out = Path(out)
    found = decrypt(path, identity)
    raw = out.with_name(f".{out.name}.decrypted.wav")
    try:
        done = _write_wav(found, raw)
        fmt = fmt or found.finish.get("format", "wav")
        rate = sample_rate or found.finish.get("sample_rate", found.shape.sample_rate)
        span = found.trim if trim else None
        written = finalize(raw, out, fmt, rate, span, found.finish.get("mp3_bitrate", 32))
    finally:
        raw.unlink(missing_ok=True)
    return Decrypted(out, written.frames, done.segments, done.torn)


def _write_wav(found: Segments, out: Path) -> Decrypted:
    from .partfile import header

    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(header(found.shape, 0))
            for _, pcm in found:
                fh.write(pcm)
            fh.seek(0)
            fh.write(header(found.shape, found.frames * found.shape.block))
        publish(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Decrypted(out, found.frames, found.segments, found.torn)
