"""DTMF key detection to ITU-T Q.24, streaming, on one signal.

Theory of operation
-------------------
A DTMF key is one tone from the low (row) group and one from the high (column)
group. Q.24 asks a receiver to accept tones within 1.5 % of nominal and reject
tones 3.5 % off, accept tones of 40 ms and reject tones of 20 ms, and accept up
to 8 dB of normal twist (low group louder) and 4 dB of reverse twist. A plain
Goertzel filter bank cannot tell 1.5 % from 3.5 % (at 697 Hz that is 10 Hz from
24 Hz, while a 16 ms window resolves 62 Hz), so detection runs in two stages:

1. Screening, vectorised over every window of a chunk: 16 ms Hann windows on a
   4 ms hop, the eight DTMF bins computed in one matrix product. A window is a
   candidate for a key when its strongest row and column tones are both loud
   enough, their twist is inside the limits, and together they carry most of
   the window's energy (speech and music spread theirs over harmonics).
2. Validation, once per run of candidate windows: the true frequency of each
   tone is measured from the phase advance of its bin between consecutive
   windows (a pulse-pair estimator: unambiguous for +-125 Hz, accurate to about
   a hertz at 10 dB SNR) and must be within 2.5 % of nominal, steady across
   the run (phase coherence, which speech lacks), and the tone's onset and
   offset are found on a demodulated envelope with an 8 ms Hann low-pass, to
   about a millisecond. Tones of 30 ms or more are keys.

A run is reported as a key down (as soon as it is proven, for end-on-key) and
later as a key with its onset and offset (when it ends). Gaps of up to 12 ms
inside a tone are bridged; a pause of 40 ms separates two keys.

References: ITU-T Q.24 (1988) and Q.23; S. M. Kay, "A fast and accurate single
frequency estimator", IEEE Trans. ASSP 37(12), 1989 (pulse-pair estimation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROW_FREQS = (697.0, 770.0, 852.0, 941.0)
COL_FREQS = (1209.0, 1336.0, 1477.0, 1633.0)
KEY_GRID = ("123A", "456B", "789C", "*0#D")
KEYS = "".join(KEY_GRID)

WINDOW_SECONDS = 0.016
HOP_SECONDS = 0.004
#: Frequency deviation between Q.24's "accept" (1.5 %) and "reject" (3.5 %).
MAX_DEVIATION = 0.020
#: Tone duration between Q.24's "reject" (20 ms) and "accept" (40 ms).
MIN_TONE_SECONDS = 0.030
#: Twist limits with a margin over Q.24's 8 dB normal / 4 dB reverse for noise.
MAX_NORMAL_TWIST_DB = 9.5
MAX_REVERSE_TWIST_DB = 5.5
#: Weakest tone accepted, as the peak of a sine in dB below full scale.
MIN_TONE_DBFS = -40.0
#: Share of a window's energy the two tones must carry.
MIN_TONE_SHARE = 0.70
#: Phase coherence of each tone across a run; speech wanders, a key does not.
MIN_COHERENCE = 0.85
#: Share of the tone's samples left unexplained by the two measured sinusoids.
#: A key leaves only line noise (9 % at 10 dB SNR); voiced speech leaves its
#: other harmonics.
MAX_RESIDUAL = 0.20
#: Candidate windows missing inside a run before the run is over (12 ms).
MAX_GAP_HOPS = 3
#: A run this long (in hops) is validated without waiting for its end.
EARLY_VALIDATION_HOPS = 14
#: Envelope low-pass length.
ENVELOPE_SECONDS = 0.008
#: Samples of history kept for onset and offset measurement.
HISTORY_SECONDS = 0.5


def key_of(row: int, col: int) -> str:
    return KEY_GRID[row][col]


@dataclass(frozen=True, slots=True)
class KeyDown:
    """A key proven present; ``start`` is the sample where its tone began."""

    key: str
    start: int


@dataclass(frozen=True, slots=True)
class KeyUp:
    """A key that ended: its tone spans samples ``[start, end)``."""

    key: str
    start: int
    end: int


@dataclass(slots=True)
class _Run:
    key_index: int
    first_window: int  # absolute window index
    last_window: int
    z_row: complex = 0j
    z_col: complex = 0j
    mag_row: float = 0.0
    mag_col: float = 0.0
    prev_row: complex | None = None
    prev_col: complex | None = None
    start: int | None = None  # onset sample once proven


class DtmfDetector:
    """Detects DTMF keys in a stream of int16 samples at 8000 or 16000 Hz.

    >>> import numpy as np
    >>> fs = 8000
    >>> t = np.arange(int(0.06 * fs)) / fs
    >>> tone = 6000 * (np.sin(2 * np.pi * 941 * t) + np.sin(2 * np.pi * 1477 * t))
    >>> x = np.concatenate([np.zeros(800), tone, np.zeros(800)]).astype(np.int16)
    >>> [type(e).__name__ + ":" + e.key for e in DtmfDetector(fs).process(x)]
    ['KeyDown:#', 'KeyUp:#']
    """

    def __init__(self, sample_rate: int) -> None:
        if sample_rate not in (8000, 16000):
            raise ValueError(f"DTMF detection needs 8000 or 16000 Hz, not {sample_rate}")
        self.sample_rate = sample_rate
        self.window = w = round(WINDOW_SECONDS * sample_rate)
        self.hop = round(HOP_SECONDS * sample_rate)
        n = np.arange(w)
        hann = (0.5 - 0.5 * np.cos(2 * np.pi * (n + 0.5) / w)).astype(np.float64)
        freqs = np.array(ROW_FREQS + COL_FREQS)
        phase = 2 * np.pi * np.outer(n, freqs) / sample_rate
        basis = np.concatenate([hann[:, None] * np.cos(phase), -hann[:, None] * np.sin(phase)], axis=1)
        self._basis = basis.astype(np.float32)
        self._hop_weights = (hann**2).reshape(-1, self.hop).mean(axis=1)
        # |X|^2 of a sine of amplitude A is A^2 (sum w)^2 / 4; its energy in the
        # window is A^2 sum(w^2) / 2. This factor turns the first into the second.
        self._tone_energy_scale = 2 * float(np.sum(hann**2)) / float(np.sum(hann)) ** 2
        min_amp = 32768.0 * 10 ** (MIN_TONE_DBFS / 20)
        self._min_tone_energy = min_amp**2 * float(np.sum(hann**2)) / 2
        self._nominal_advance = np.exp(-2j * np.pi * freqs * self.hop / sample_rate)
        self._freqs = freqs
        lp = round(ENVELOPE_SECONDS * sample_rate)
        self._lowpass = np.hanning(lp + 2)[1:-1]
        self._lowpass /= self._lowpass.sum()
        # Streaming state: samples not yet covered by a full window start at
        # absolute sample ``self._tail_start``.
        self._tail = np.zeros(0, dtype=np.float32)
        self._tail_start = 0
        self._next_window = 0  # absolute index of the next window to compute
        self._keep = round(HISTORY_SECONDS * sample_rate)
        self._history = np.zeros(self._keep, dtype=np.float32)
        self._history_end = 0  # absolute sample after the newest history sample
        self._run: _Run | None = None
        self._missed = 0

    # -- public -----------------------------------------------------------------
    def process(self, samples: np.ndarray) -> list[KeyDown | KeyUp]:
        """Feed the next samples; return keys proven or ended in them."""
        x = samples.astype(np.float32, copy=False)
        # History covers this call's samples and HISTORY_SECONDS before them,
        # so a run can be measured however large the pieces are.
        self._history = np.concatenate([self._history[-self._keep :], x])
        self._history_end += x.size
        buf = np.concatenate([self._tail, x]) if self._tail.size else x
        base = self._tail_start
        count = 0 if buf.size < self.window else (buf.size - self.window) // self.hop + 1
        out: list[KeyDown | KeyUp] = []
        if count:
            frames = np.lib.stride_tricks.as_strided(
                buf, shape=(count, self.window), strides=(buf.strides[0] * self.hop, buf.strides[0])
            )
            hops = buf[: (count + 3) * self.hop].reshape(-1, self.hop)
            hop_energy = np.einsum("ij,ij->i", hops, hops)
            out = self._screen(frames, hop_energy, self._next_window)
            self._next_window += count
        consumed = count * self.hop
        self._tail = np.array(buf[consumed:], dtype=np.float32)
        self._tail_start = base + consumed
        return out

    def flush(self) -> list[KeyDown | KeyUp]:
        """End of input: close any key still sounding."""
        if self._run is None:
            return []
        return self._close_run()

    # -- screening ----------------------------------------------------------------
    def _screen(self, frames: np.ndarray, hop_energy: np.ndarray, first_index: int) -> list[KeyDown | KeyUp]:
        spec = frames @ self._basis
        bins = spec[:, :8].astype(np.float64) + 1j * spec[:, 8:].astype(np.float64)
        power = bins.real**2 + bins.imag**2
        row = np.argmax(power[:, :4], axis=1)
        col = np.argmax(power[:, 4:], axis=1)
        idx = np.arange(len(frames))
        e_row = power[idx, row] * self._tone_energy_scale
        e_col = power[idx, 4 + col] * self._tone_energy_scale
        # Window energy from per-hop energies weighted by the Hann profile: a
        # quarter of the work of squaring every overlapping window, and only a
        # screen (the tone fit in ``_residual`` is exact).
        count = len(frames)
        total = sum(weight * hop_energy[j : j + count] for j, weight in enumerate(self._hop_weights))
        twist_db = 10 * np.log10((e_row + 1e-9) / (e_col + 1e-9))
        ok = (
            (e_row >= self._min_tone_energy)
            & (e_col >= self._min_tone_energy)
            & (twist_db <= MAX_NORMAL_TWIST_DB)
            & (twist_db >= -MAX_REVERSE_TWIST_DB)
            & (e_row + e_col >= MIN_TONE_SHARE * total)
        )
        key = np.where(ok, row * 4 + col, -1)
        return self._track_runs(key, bins, row, col, first_index)

    def _track_runs(self, key, bins, row, col, first_index) -> list[KeyDown | KeyUp]:
        out: list[KeyDown | KeyUp] = []
        hits = np.flatnonzero(key >= 0)
        if self._run is None and hits.size == 0:
            return out
        # Walk only where something can happen: candidate windows, and the
        # window where a pending run's gap grows too long.
        i = 0
        n = len(key)
        while i < n:
            run = self._run
            if run is None:
                nxt = np.searchsorted(hits, i)
                if nxt >= hits.size:
                    break
                i = int(hits[nxt])
                self._run = _Run(int(key[i]), first_index + i, first_index + i)
                self._missed = 0
                self._accumulate(bins[i], row[i], col[i])
                i += 1
                continue
            k = int(key[i])
            if k == run.key_index:
                self._missed = 0
                run.last_window = first_index + i
                self._accumulate(bins[i], row[i], col[i])
                if run.start is None and run.last_window - run.first_window >= EARLY_VALIDATION_HOPS:
                    start = self._prove(run, closed=False)
                    if start is not None:
                        run.start = start
                        out.append(KeyDown(KEYS[run.key_index], start))
            else:
                self._missed += 1
                run.prev_row = run.prev_col = None
                if self._missed > MAX_GAP_HOPS or k >= 0:
                    out.extend(self._close_run())
                    continue  # this window may open the next run
            i += 1
        return out

    def _accumulate(self, bins: np.ndarray, row: int, col: int) -> None:
        run = self._run
        assert run is not None
        xr, xc = complex(bins[row]), complex(bins[4 + col])
        if run.prev_row is not None and run.prev_col is not None:
            pr = xr * run.prev_row.conjugate()
            pc = xc * run.prev_col.conjugate()
            run.z_row += pr
            run.z_col += pc
            run.mag_row += abs(pr)
            run.mag_col += abs(pc)
        run.prev_row, run.prev_col = xr, xc

    # -- validation ---------------------------------------------------------------
    def _close_run(self) -> list[KeyDown | KeyUp]:
        run = self._run
        self._run = None
        self._missed = 0
        assert run is not None
        out: list[KeyDown | KeyUp] = []
        start = run.start
        if start is None:
            start = self._prove(run, closed=True)
            if start is None:
                return out
            out.append(KeyDown(KEYS[run.key_index], start))
        end = self._edges(run, want_end=True)[1]
        out.append(KeyUp(KEYS[run.key_index], start, max(end, start + 1)))
        return out

    def _tone_freqs(self, run: _Run) -> tuple[float, float] | None:
        r, c = divmod(run.key_index, 4)
        if run.mag_row <= 0 or run.mag_col <= 0:
            return None
        if abs(run.z_row) < MIN_COHERENCE * run.mag_row or abs(run.z_col) < MIN_COHERENCE * run.mag_col:
            return None
        scale = self.sample_rate / (2 * np.pi * self.hop)
        f_row = ROW_FREQS[r] + np.angle(run.z_row * self._nominal_advance[r]) * scale
        f_col = COL_FREQS[c] + np.angle(run.z_col * self._nominal_advance[4 + c]) * scale
        if abs(f_row / ROW_FREQS[r] - 1) > MAX_DEVIATION or abs(f_col / COL_FREQS[c] - 1) > MAX_DEVIATION:
            return None
        return f_row, f_col

    def _prove(self, run: _Run, closed: bool) -> int | None:
        """Validate a run; return its onset sample, or None when it is no key."""
        freqs = self._tone_freqs(run)
        if freqs is None:
            return None
        start, end = self._edges(run, want_end=closed, freqs=freqs)
        if start is None or end - start < MIN_TONE_SECONDS * self.sample_rate:
            return None
        if self._residual(start, end, freqs) > MAX_RESIDUAL:
            return None
        return start

    def _residual(self, start: int, end: int, freqs: tuple[float, float]) -> float:
        """Share of the energy in ``[start, end)`` not explained by the two tones."""
        guard = self.hop // 2
        x, lo = self._recall(start + guard, end - guard)
        if x.size < self.hop:
            return 1.0
        n = lo + np.arange(x.size)
        cols = []
        for f in freqs:
            phase = 2 * np.pi * f * n / self.sample_rate
            cols += [np.cos(phase), np.sin(phase)]
        basis = np.stack(cols, axis=1)
        coef, *_ = np.linalg.lstsq(basis, x, rcond=None)
        left = x - basis @ coef
        return float(left @ left) / (float(x @ x) + 1e-9)

    def _edges(self, run: _Run, want_end: bool, freqs: tuple[float, float] | None = None):
        """Onset and offset of the run's tone from its demodulated envelope.

        Without ``want_end`` the offset is the newest sample seen of a tone
        still sounding.
        """
        freqs = (
            freqs
            or self._tone_freqs(run)
            or (
                ROW_FREQS[run.key_index // 4],
                COL_FREQS[run.key_index % 4],
            )
        )
        lo = run.first_window * self.hop - self.window
        # A tone still sounding is measured up to the newest sample, but never past the run's own
        # windows: a large piece may hold the next tone of the same key after it.
        hi = run.last_window * self.hop + 2 * self.window
        if not want_end:
            hi = min(hi, self._history_end)
        x, lo = self._recall(lo, hi)
        if x.size < self._lowpass.size:
            return None, lo
        n = lo + np.arange(x.size)
        env = np.zeros(x.size)
        for f in freqs:
            demod = x * np.exp(-2j * np.pi * f * n / self.sample_rate)
            mag = np.abs(np.convolve(demod, self._lowpass, mode="same"))
            env += mag / (np.max(mag) + 1e-9)
        # The steady level is taken where every window of the run was full.
        inner = env[(n >= run.first_window * self.hop + self.window) & (n < run.last_window * self.hop)]
        level = float(np.median(inner)) if inner.size > self.hop else float(np.max(env))
        above = env >= 0.5 * level
        if not above.any():
            return None, lo
        peak = int(np.argmax(env))
        before = np.flatnonzero(~above[:peak])
        first = int(before[-1]) + 1 if before.size else 0
        after = np.flatnonzero(~above[peak:])
        last = peak + int(after[0]) if after.size else x.size
        return lo + first, lo + last

    # -- sample history -------------------------------------------------------------
    def _recall(self, lo: int, hi: int) -> tuple[np.ndarray, int]:
        oldest = self._history_end - self._history.size
        lo = max(lo, oldest, 0)
        hi = min(hi, self._history_end)
        if hi <= lo:
            return np.zeros(0), lo
        return self._history[lo - oldest : hi - oldest].astype(np.float64), lo
