"""ALSA capture and playback through pyalsaaudio, and the list of ALSA devices.

Theory of operation
-------------------
Capture runs in ALSA's normal (blocking) mode: each ``PCM.read`` waits for one
period, so the device's own clock paces the daemon. The buffer is made long
(about a second of periods) because capture latency does not depend on it:
a read returns as soon as one period is ready, and a long buffer lets the
daemon stall for a slow SD card write without losing audio.

When it does stall too long the buffer overruns. pyalsaaudio 0.11 recovers by
itself (``snd_pcm_prepare``) and reports the overrun as a read of length
``-EPIPE``; the next read restarts the stream. What was in the buffer, and
what the device heard while it was stopped, is gone, and ALSA does not say how
much that was. ``LossEstimator`` works it out from the monotonic clock: the
frames the device produced since a moment we knew we were caught up with it
(a read that had to wait), minus the frames we were given since. Anchoring at
a recent wait rather than at open keeps the sound card's clock drift (up to
some 100 ppm, a third of a second an hour) out of the estimate.

Any other read error means the device is gone (a USB interface unplugged gives
ENODEV or EIO, a suspended one ESTRPIPE): ``DeviceLost``, and the daemon
reopens it until it is back.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import alsaaudio
import numpy as np

from .interface import Chunk, DeviceLost, DeviceUnavailable, UnsupportedFormat, as_mono_int16

log = logging.getLogger("edge-recorder.hal.audio")

#: Seconds of audio the capture buffer holds before it overruns.
CAPTURE_BUFFER_SECONDS = 1.0
#: Seconds ``AlsaPlayback.close`` waits for queued tones to be written.
CLOSE_TIMEOUT = 5.0
#: Reads in a row that may overrun (each waits a period) before the device counts as lost.
MAX_OVERRUNS_IN_A_ROW = 50


def _reason(exc: alsaaudio.ALSAAudioError) -> str:
    """ALSA's error text without pyalsaaudio's " [device]" suffix."""
    text = str(exc)
    if text.endswith("]") and " [" in text:
        text = text[: text.rindex(" [")]
    return text


class LossEstimator:
    """Frames lost in capture overruns, estimated from the monotonic clock.

    Call ``read_started`` before and ``read_done`` after each successful read,
    ``overrun`` when a read reports one. A read that waited at least half a
    period proves we were caught up with the device at its end: the estimate
    anchors there.

    >>> est = LossEstimator(sample_rate=16000, period_frames=320)
    >>> est.read_started(10.0)
    >>> est.read_done(320, 10.0, 10.02)  # waited a whole period: caught up
    >>> est.read_started(10.02)
    >>> est.read_done(320, 10.02, 10.02)  # returned at once: it was buffered
    >>> est.overrun(10.52)  # 0.5 s after the anchor, 320 frames delivered since
    7680
    """

    def __init__(self, sample_rate: int, period_frames: int) -> None:
        self.sample_rate = sample_rate
        self._half_period = period_frames / sample_rate / 2
        self._delivered = 0
        self._anchor: tuple[float, int] | None = None

    def read_started(self, t: float) -> None:
        # The stream (re)starts on the first read after open or an overrun.
        if self._anchor is None:
            self._anchor = (t, self._delivered)

    def read_done(self, frames: int, started: float, t: float) -> None:
        self._delivered += frames
        if t - started >= self._half_period:
            self._anchor = (t, self._delivered)

    def overrun(self, t: float) -> int:
        if self._anchor is None:
            return 0
        since, delivered = self._anchor
        self._anchor = None
        produced = round((t - since) * self.sample_rate)
        return max(0, produced - (self._delivered - delivered))


class AlsaCapture:
    """An ALSA capture PCM: S16_LE, blocking reads of one period each.

    ``limit_frames`` ends the input (``read`` returns ``None``) after exactly
    that many frames (counted across reopens); ALSA's ``file`` plugin needs it,
    as it is not paced and returns junk after the end of its file. ``clock``
    times overruns.

    ALSA's ``null`` device opens on any machine (what it captures is not meant
    to be heard, and it is not paced either):

    >>> mic = AlsaCapture("null", 16000, 2, period_ms=20, limit_frames=500)
    >>> mic.open()
    >>> chunk = mic.read()
    >>> chunk.frames.shape, chunk.frames.dtype.name, chunk.gap
    ((320, 2), 'int16', 0)
    >>> mic.read().frames.shape, mic.read()
    ((180, 2), None)
    >>> mic.close()
    """

    def __init__(
        self,
        device: str,
        sample_rate: int,
        channels: int,
        period_ms: int = 20,
        *,
        limit_frames: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.device = device
        self.sample_rate = sample_rate
        self.channels = channels
        self.period_frames = sample_rate * period_ms // 1000
        self._period_request = self.period_frames
        self.limit_frames = limit_frames
        self.overruns = 0
        self._clock = clock
        self._pcm: alsaaudio.PCM | None = None
        self._frames_read = 0
        self._loss = LossEstimator(sample_rate, self.period_frames)

    def __repr__(self) -> str:
        return f"AlsaCapture({self.device!r}, {self.sample_rate}, {self.channels})"

    def open(self) -> None:
        """Open the PCM; raises ``DeviceUnavailable`` (``UnsupportedFormat`` if it cannot give our format)."""
        self.close()
        requested = self._period_request
        periods = max(4, round(CAPTURE_BUFFER_SECONDS * self.sample_rate / requested))
        try:
            pcm = alsaaudio.PCM(
                alsaaudio.PCM_CAPTURE,
                alsaaudio.PCM_NORMAL,
                device=self.device,
                rate=self.sample_rate,
                channels=self.channels,
                format=alsaaudio.PCM_FORMAT_S16_LE,
                periodsize=requested,
                periods=periods,
            )
        except alsaaudio.ALSAAudioError as exc:
            raise DeviceUnavailable(f"cannot open capture device {self.device!r}: {_reason(exc)}") from None
        try:
            info = pcm.info()
            _check_format(self.device, info, self.sample_rate, self.channels)
        except BaseException:
            pcm.close()
            raise
        self.period_frames = int(info["period_size"])
        self._pcm = pcm
        self._loss = LossEstimator(self.sample_rate, self.period_frames)
        log.debug(
            "capture %s: %d Hz, %d ch, %d-frame periods",
            self.device,
            self.sample_rate,
            self.channels,
            self.period_frames,
        )

    def read(self) -> Chunk | None:
        """The next period; ``None`` once ``limit_frames`` are read; raises ``DeviceLost``."""
        if self._pcm is None:
            raise RuntimeError(f"capture device {self.device!r} is not open")
        if self.limit_frames is not None and self._frames_read >= self.limit_frames:
            return None
        gap = 0
        for _ in range(MAX_OVERRUNS_IN_A_ROW):
            started = self._clock()
            self._loss.read_started(started)
            try:
                length, data = self._pcm.read()
            except alsaaudio.ALSAAudioError as exc:
                self.close()
                raise DeviceLost(f"capture device {self.device!r}: {_reason(exc)}") from None
            now = self._clock()
            if length < 0:  # -EPIPE: an overrun, already recovered by pyalsaaudio
                self.overruns += 1
                lost = self._loss.overrun(now)
                gap += lost
                log.warning("capture %s: overrun, about %d frames lost", self.device, lost)
                continue
            if length == 0:
                continue
            self._loss.read_done(length, started, now)
            frames = np.frombuffer(data, dtype="<i2").reshape(length, self.channels)
            if self.limit_frames is not None:
                frames = frames[: self.limit_frames - self._frames_read]
            self._frames_read += len(frames)
            # A copy: frombuffer over bytes is read-only, and the daemon may mix into it.
            return Chunk(np.array(frames, dtype=np.int16, order="C"), gap)
        self.close()
        raise DeviceLost(f"capture device {self.device!r}: no audio after {MAX_OVERRUNS_IN_A_ROW} attempts")

    def close(self) -> None:
        pcm, self._pcm = self._pcm, None
        if pcm is not None:
            with contextlib.suppress(alsaaudio.ALSAAudioError):  # a vanished device: nothing left to release
                pcm.close()


def _check_format(device: str, info: dict, sample_rate: int, channels: int) -> None:
    if info.get("format_name") != "S16_LE":
        raise UnsupportedFormat(
            f"device {device!r} gives {info.get('format_name')} samples, not S16_LE; "
            "use its plughw: name so ALSA converts"
        )
    if info.get("rate") != sample_rate:
        raise UnsupportedFormat(
            f"device {device!r} runs at {info.get('rate')} Hz, not {sample_rate} Hz; use its plughw: name so ALSA converts"
        )
    if info.get("channels") != channels:
        raise UnsupportedFormat(
            f"device {device!r} gives {info.get('channels')} channels, not {channels}; "
            "use its plughw: name so ALSA converts"
        )


class AlsaPlayback:
    """An ALSA playback PCM for the box's tones (int16 mono at ``sample_rate``).

    ``play`` queues the tone and returns; a small thread writes it to the
    device in blocking mode and drains it, so the caller never waits for a tone.

    >>> speaker = AlsaPlayback("null", 8000)
    >>> speaker.open()
    >>> speaker.play(np.zeros(4000, np.int16))
    >>> speaker.close()
    """

    def __init__(self, device: str, sample_rate: int) -> None:
        self.device = device
        self.sample_rate = sample_rate
        self.period_frames = sample_rate // 50
        self._pcm: alsaaudio.PCM | None = None
        self._channels = 1
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._error: DeviceLost | None = None

    def __repr__(self) -> str:
        return f"AlsaPlayback({self.device!r}, {self.sample_rate})"

    def open(self) -> None:
        """Open the PCM and start the writer; raises ``DeviceUnavailable``."""
        self.close()
        try:
            pcm = alsaaudio.PCM(
                alsaaudio.PCM_PLAYBACK,
                alsaaudio.PCM_NORMAL,
                device=self.device,
                rate=self.sample_rate,
                channels=1,
                format=alsaaudio.PCM_FORMAT_S16_LE,
                periodsize=self.period_frames,
                periods=4,
            )
        except alsaaudio.ALSAAudioError as exc:
            raise DeviceUnavailable(f"cannot open playback device {self.device!r}: {_reason(exc)}") from None
        info = pcm.info()
        # Some hw: devices only play stereo; the tone then goes out on both channels.
        channels = info.get("channels") if info.get("channels") in (1, 2) else 1
        try:
            _check_format(self.device, info, self.sample_rate, channels)
        except UnsupportedFormat:
            pcm.close()
            raise
        self._pcm, self._channels, self._error = pcm, channels, None
        self._queue = queue.Queue()
        self._thread = threading.Thread(target=self._write_loop, name=f"playback {self.device}", daemon=True)
        self._thread.start()

    def play(self, frames: np.ndarray) -> None:
        """Queue int16 mono frames, shape (n,) or (n, 1); raises ``DeviceLost`` if the device went away."""
        if self._error is not None:
            raise self._error
        if self._pcm is None:
            raise RuntimeError(f"playback device {self.device!r} is not open")
        mono = as_mono_int16(frames)
        if len(mono) == 0:
            return
        if self._channels == 2:
            mono = np.repeat(mono, 2)
        self._queue.put(mono.astype("<i2").tobytes())

    def close(self) -> None:
        """Let the writer finish the tones queued (for up to ``CLOSE_TIMEOUT`` seconds) and close the PCM."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=CLOSE_TIMEOUT)
            if thread.is_alive():  # wedged in a write: closing the PCM under it could crash
                log.warning("playback %s: writer did not finish; leaving the device open", self.device)
                self._pcm = None
                return
        pcm, self._pcm = self._pcm, None
        if pcm is not None:
            with contextlib.suppress(alsaaudio.ALSAAudioError):
                pcm.close()

    def _drop_queued(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def _write_loop(self) -> None:
        pcm = self._pcm
        frame_bytes = 2 * self._channels
        while True:
            data = self._queue.get()
            if data is None:
                return
            try:
                view = memoryview(data)
                underruns = 0
                while view:
                    written = pcm.write(view)
                    if written < 0:  # -EPIPE: an underrun, recovered; write the same data again
                        underruns += 1
                        if underruns > MAX_OVERRUNS_IN_A_ROW:
                            raise alsaaudio.ALSAAudioError("keeps underrunning")
                        continue
                    view = view[written * frame_bytes :]
                if self._queue.empty():
                    pcm.drain()  # play out the tone and stop, rather than underrun
            except alsaaudio.ALSAAudioError as exc:
                self._error = DeviceLost(f"playback device {self.device!r}: {_reason(exc)}")
                log.error("%s", self._error)
                self._drop_queued()
                return


@dataclass(frozen=True, slots=True)
class Pcm:
    """An ALSA PCM name as a config takes it, and ALSA's description of it.

    >>> Pcm("plughw:CARD=Device,DEV=0", "USB Audio Device").name
    'plughw:CARD=Device,DEV=0'
    """

    name: str
    description: str


@dataclass(frozen=True, slots=True)
class Devices:
    """What ALSA lists: capture PCMs, playback PCMs and sound cards ``(index, id, long name)``.

    >>> Devices([], [Pcm("null", "Discard all samples")], []).playback[0].name
    'null'
    """

    capture: list[Pcm]
    playback: list[Pcm]
    cards: list[tuple[int, str, str]]


def list_devices() -> Devices:
    """ALSA's capture and playback PCMs and sound cards; without a card, whatever ALSA defines.

    >>> devices = list_devices()
    >>> isinstance(devices.cards, list) and all(isinstance(p, Pcm) for p in devices.capture)
    True
    """
    descriptions = _pcm_descriptions()

    def pcms(kind: int) -> list[Pcm]:
        try:
            names = alsaaudio.pcms(kind)
        except alsaaudio.ALSAAudioError as exc:
            log.warning("cannot list ALSA PCMs: %s", _reason(exc))
            return []
        return [Pcm(name, descriptions.get(name, "")) for name in names]

    cards = []
    try:
        for index, card_id in zip(alsaaudio.card_indexes(), alsaaudio.cards(), strict=False):
            try:
                _, long_name = alsaaudio.card_name(index)
            except alsaaudio.ALSAAudioError:
                long_name = ""
            cards.append((index, card_id, long_name))
    except alsaaudio.ALSAAudioError as exc:
        log.warning("cannot list sound cards: %s", _reason(exc))
    return Devices(pcms(alsaaudio.PCM_CAPTURE), pcms(alsaaudio.PCM_PLAYBACK), cards)


def _pcm_descriptions() -> dict[str, str]:
    """ALSA's description hint of each PCM (pyalsaaudio lists only names); empty if unavailable."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("asound") or "libasound.so.2")
        libc = ctypes.CDLL(None)
    except OSError:
        return {}
    lib.snd_device_name_hint.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(ctypes.POINTER(ctypes.c_void_p))]
    lib.snd_device_name_get_hint.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.snd_device_name_get_hint.restype = ctypes.c_void_p  # malloc'd: freed below
    lib.snd_device_name_free_hint.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
    libc.free.argtypes = [ctypes.c_void_p]

    def hint(entry: int, field: bytes) -> str:
        pointer = lib.snd_device_name_get_hint(entry, field)
        if not pointer:
            return ""
        try:
            return ctypes.string_at(pointer).decode(errors="replace")
        finally:
            libc.free(pointer)

    hints = ctypes.POINTER(ctypes.c_void_p)()
    if lib.snd_device_name_hint(-1, b"pcm", ctypes.byref(hints)) < 0:
        return {}
    found = {}
    try:
        i = 0
        while hints[i]:
            name = hint(hints[i], b"NAME")
            if name:
                found[name] = "; ".join(line.strip() for line in hint(hints[i], b"DESC").splitlines() if line.strip())
            i += 1
    finally:
        lib.snd_device_name_free_hint(hints)
    return found
