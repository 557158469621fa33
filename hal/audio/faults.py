"""A capture that misbehaves on cue, for the faults ALSA cannot produce on a test machine.

``FaultyCapture`` wraps any capture (usually a ``WavCapture``) and, at given
positions of the inner stream, drops frames as an overrun would, or vanishes
as an unplugged USB interface does and comes back some seconds later.

The inner stream stands for the line, which goes on while the device is gone:
after a disconnect the frames the line carried meanwhile (measured on
``clock`` from the loss to the successful reopen) are skipped, not replayed,
because a live device would not have them. The daemon fills that time with
silence from its own clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from .interface import Capture, Chunk, DeviceLost, DeviceUnavailable


@dataclass(frozen=True, slots=True)
class Overrun:
    """Lose ``lost_frames`` of the inner stream at its frame ``at_frame``, as a capture overrun does.

    >>> Overrun(at_frame=16000, lost_frames=800)
    Overrun(at_frame=16000, lost_frames=800)
    """

    at_frame: int
    lost_frames: int


@dataclass(frozen=True, slots=True)
class Disconnect:
    """The device vanishes at inner frame ``at_frame`` and can be reopened ``seconds`` later.

    >>> Disconnect(at_frame=32000, seconds=2.5).seconds
    2.5
    """

    at_frame: int
    seconds: float


Fault = Overrun | Disconnect


class FaultError(ValueError):
    """A fault list that cannot be used; the message names the bad item."""


class FaultyCapture:
    """A capture that overruns and disconnects where told; otherwise the inner capture.

    ``Overrun``: the frames are dropped, ``overruns`` counts it and the next
    chunk's ``gap`` says how many. ``Disconnect``: ``read`` raises
    ``DeviceLost`` once the inner stream reaches the frame, and ``open`` raises
    ``DeviceUnavailable`` until ``seconds`` have passed on ``clock``. Chunks
    are split where a fault falls, so they may be shorter than a period.

    >>> class Counter:  # a tiny inner capture: a sample counter, 10 frames a period
    ...     sample_rate, channels, period_frames, overruns = 8000, 1, 10, 0
    ...     def __init__(self): self.n = 0
    ...     def open(self): pass
    ...     def close(self): pass
    ...     def read(self):
    ...         self.n += 10
    ...         return Chunk(np.arange(self.n - 10, self.n, dtype=np.int16).reshape(-1, 1)) if self.n <= 60 else None
    >>> now = [0.0]
    >>> mic = FaultyCapture(Counter(), [Overrun(15, 10), Disconnect(30, 0.001)], clock=lambda: now[0])
    >>> mic.open()
    >>> [(int(c.frames[0, 0]), len(c.frames), c.gap) for c in (mic.read(), mic.read(), mic.read())]
    [(0, 10, 0), (10, 5, 0), (25, 5, 10)]
    >>> mic.overruns
    1
    >>> mic.read()
    Traceback (most recent call last):
    hal.audio.interface.DeviceLost: capture Counter (faulty): simulated disconnect at frame 30
    >>> mic.close(); mic.open()
    Traceback (most recent call last):
    hal.audio.interface.DeviceUnavailable: capture Counter (faulty): disconnected (simulated), back in 0.001 s
    >>> now[0] = 0.00125  # back after 10 frames of line time at 8 kHz, which are skipped
    >>> mic.open(); int(mic.read().frames[0, 0])
    40
    """

    def __init__(
        self,
        inner: Capture,
        faults: Iterable[Fault],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self._faults = sorted(_checked(faults), key=lambda f: f.at_frame)
        self._clock = clock
        self._buffer = np.zeros((0, inner.channels), np.int16)
        self._taken = 0  # frames taken from the inner stream, dropped ones included
        self._gap = 0  # frames lost before the next chunk
        self._own_overruns = 0
        self._inner_open = False
        self._lost: tuple[int, float, float] | None = None  # (at_frame, lost at, back at)

    def __repr__(self) -> str:
        return f"capture {type(self.inner).__name__} (faulty)"

    @property
    def sample_rate(self) -> int:
        return self.inner.sample_rate

    @property
    def channels(self) -> int:
        return self.inner.channels

    @property
    def period_frames(self) -> int:
        return self.inner.period_frames

    @property
    def overruns(self) -> int:
        return self.inner.overruns + self._own_overruns

    def open(self) -> None:
        now = self._clock()
        if self._lost is not None and now < self._lost[2]:
            raise DeviceUnavailable(f"{self!r}: disconnected (simulated), back in {self._lost[2] - now:.3g} s")
        if not self._inner_open:
            self.inner.open()
            self._inner_open = True
        if self._lost is not None:
            self._discard(round((now - self._lost[1]) * self.sample_rate))
            self._lost = None

    def read(self) -> Chunk | None:
        if self._lost is not None:
            raise DeviceLost(f"{self!r}: simulated disconnect at frame {self._lost[0]}")
        if not self._inner_open:
            raise RuntimeError(f"{self!r} is not open")
        while True:
            if not len(self._buffer) and not self._pull():
                return None
            head = self._taken - len(self._buffer)
            fault = self._faults[0] if self._faults else None
            if fault is not None and fault.at_frame <= head:
                self._faults.pop(0)
                if isinstance(fault, Overrun):
                    self._own_overruns += 1
                    self._gap += self._discard(fault.lost_frames)
                    continue
                now = self._clock()
                self._lost = (fault.at_frame, now, now + fault.seconds)
                raise DeviceLost(f"{self!r}: simulated disconnect at frame {fault.at_frame}")
            n = len(self._buffer)
            if fault is not None and fault.at_frame < head + n:
                n = fault.at_frame - head
            frames, self._buffer = self._buffer[:n], self._buffer[n:]
            gap, self._gap = self._gap, 0
            return Chunk(np.ascontiguousarray(frames), gap)

    def close(self) -> None:
        if self._inner_open:
            self._inner_open = False
            self.inner.close()

    def _pull(self) -> bool:
        """Read the next inner chunk into the buffer; False at the end of the inner stream."""
        chunk = self.inner.read()
        if chunk is None:
            return False
        self._buffer = chunk.frames
        self._taken += len(chunk.frames)
        self._gap += chunk.gap
        return True

    def _discard(self, frames: int) -> int:
        """Drop the next ``frames`` of the inner stream; returns how many there were."""
        dropped = min(frames, len(self._buffer))
        self._buffer = self._buffer[dropped:]
        skip = getattr(self.inner, "skip", None)
        if dropped < frames and skip is not None:  # e.g. WavCapture: seek rather than read (and pace)
            skipped = skip(frames - dropped)
            self._taken += skipped
            dropped += skipped
        while dropped < frames and self._pull():
            take = min(frames - dropped, len(self._buffer))
            self._buffer = self._buffer[take:]
            dropped += take
        return dropped


def _checked(faults: Iterable[Fault]) -> list[Fault]:
    checked = []
    for fault in faults:
        if not isinstance(fault, Overrun | Disconnect):
            raise FaultError(f"{fault!r} is not an Overrun or a Disconnect")
        if fault.at_frame < 0:
            raise FaultError(f"{fault!r}: at_frame must not be negative")
        if isinstance(fault, Overrun) and fault.lost_frames < 0:
            raise FaultError(f"{fault!r}: lost_frames must not be negative")
        if isinstance(fault, Disconnect) and fault.seconds < 0:
            raise FaultError(f"{fault!r}: seconds must not be negative")
        checked.append(fault)
    return checked


def parse_faults(text: str, sample_rate: int) -> list[Fault]:
    """Faults from text such as ``"12.5=overrun:0.2, 30=disconnect:3"`` (times and lengths in seconds).

    Items are separated by commas or newlines; ``#`` starts a comment.

    >>> parse_faults("1=overrun:0.05  # a stall\\n2.5=disconnect:3", 16000)
    [Overrun(at_frame=16000, lost_frames=800), Disconnect(at_frame=40000, seconds=3.0)]
    >>> parse_faults("1=unplug", 16000)
    Traceback (most recent call last):
    hal.audio.faults.FaultError: fault '1=unplug': expected SECONDS=overrun:SECONDS or SECONDS=disconnect:SECONDS
    """
    faults: list[Fault] = []
    for line in text.splitlines():
        for item in line.split("#", 1)[0].split(","):
            item = item.strip()
            if not item:
                continue
            when, _, action = item.partition("=")
            kind, _, length = action.strip().partition(":")
            try:
                seconds, duration = float(when), float(length)
            except ValueError:
                seconds = duration = -1.0
            if kind not in ("overrun", "disconnect") or seconds < 0 or duration < 0:
                raise FaultError(
                    f"fault {item!r}: expected SECONDS=overrun:SECONDS or SECONDS=disconnect:SECONDS"
                ) from None
            at = round(seconds * sample_rate)
            faults.append(Overrun(at, round(duration * sample_rate)) if kind == "overrun" else Disconnect(at, duration))
    return faults
