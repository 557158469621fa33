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
   4 ms hop, the eight DTMF bins computed in one product. A window is a
   candidate for a key when its strongest row and column tones are both loud
   enough, their twist is inside the limits, and together they carry most of
   the window's energy (speech and music spread theirs over harmonics).
   A run of a key starts at a candidate window and goes on through windows
   where the key's two tones are still the strongest, keep a quarter of the
   strongest energy they had in the run and a third of the window's energy, so
   a syllable or a dip in noise inside a key does not split it. It ends after
   24 ms of windows without them (a 12 ms break in the tone is bridged, a 40 ms
   pause is not). A candidate window of another key puts the run in doubt:
   when the run's key comes back, the windows in doubt were its own (speech
   beside one tone outweighed it for a moment); when the other key lasts four
   windows, it takes over from its first one, and a run not yet proven that
   a key sharing one of its tones takes over is dropped (a keypad cannot go
   from one to the other without a pause: it was that key's tone and speech).
2. Validation, once per run, retried while the run grows: the true frequency
   of each tone is measured from the phase advance of its bin between
   consecutive windows (a pulse-pair estimator: unambiguous for +-125 Hz,
   accurate to about a hertz at 10 dB SNR) and must be within 2 % of nominal
   and steady across the run (phase coherence, which speech lacks). The tone's
   onset and offset are found to about a millisecond on the lesser of the two
   tones' envelopes (demodulated, 8 ms Hann low-pass, each over its own level,
   since a key sounds while both its tones do), searched outward from the
   run's own first and last windows: back at most 100 ms for the onset, on at
   most 16 ms past the last window for the offset. Tones of 30 ms or more are
   keys when the two measured sinusoids explain the tone's samples: what they
   leave is at most 20 % of the energy, or at most 40 % when the tones are in
   Q.24's accept band and stand out from what is left as a key's do from
   speech over it: nothing left as strong as the weaker tone, and none of it a
   harmonic of them. Voiced speech and music that mimic a key leave exactly
   that: the tones' overtones (2f), or, for a pitch f0 of which both tones are
   harmonics (f0 = (f_col - f_row) / k dividing f_row), the harmonics next to
   them, or a strongest component on the series of f0, or nothing else among
   its three strongest. Speech over a key has a pitch of its own, so the
   amplitudes, read at those exact frequencies, stay low.

A run is reported as a key down (as soon as it is proven, for end-on-key: a
run of 84 ms is proven without waiting for its end) and later as a key with
its onset and offset (when it ends).

Every measurement reads samples over a span fixed by the run's windows and
the window that closed it, never "whatever has arrived so far", and the
screening product is an einsum (BLAS sums in an order that depends on how many
windows a chunk has); so the keys, to the sample, do not depend on how the
audio is cut. The history holds 0.6 s; a run not proven within 0.4 s is no key.

Issue 15 (a key pressed again within about 0.7 s reported late, at the
repeat's onset, with a near-zero length): the onset and offset used to be taken
around the highest point of the sum of the two envelopes over one span. Early
validation let that span reach the newest sample, so in a piece holding
``545`` the highest point could be the repeat's: the first ``5`` got the
repeat's onset, its offset (measured over its own span at the end) fell before
that onset and was clamped to it plus one sample, and the repeat was reported
again. Commit 8007230 capped the span at the run's windows, which hid that case;
but a break, a syllable or another key sharing a tone inside the span still
moved an edge by up to a tone's length, the span still depended on how much
audio had arrived (the same audio gave different keys in 20 ms and 1 s
pieces), and speech beside one tone split a key in two (a candidate of another
key ended the run at once). Under speech at -10 dB the residual limit alone
missed one key in 20 to 30. Edges are now searched from the run's own windows
over spans fixed by them, runs hold through speech and doubt, and the residual
limit is relaxed only where the tones stand out as a key's do.

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
#: Share of a window's energy the two tones must carry to begin a run.
MIN_TONE_SHARE = 0.70
#: A run goes on through windows where each of its tones keeps this share of its
#: strongest energy in the run (-6 dB)...
HOLD_LEVEL = 0.25
#: ...and the two carry this share of the window's energy.
HOLD_SHARE = 0.35
#: Phase coherence of each tone across a run; speech wanders, a key does not.
MIN_COHERENCE = 0.85
#: Share of the tone's samples left unexplained by the two measured sinusoids.
#: A key leaves only line noise (9 % at 10 dB SNR); voiced speech leaves its
#: other harmonics.
MAX_RESIDUAL = 0.20
#: The same when the tones stand out from what they leave, as a key's do from speech
#: over it (``_stands_out``)...
MAX_RESIDUAL_UNRELATED = 0.40
#: ...nothing left coming within this of the weaker tone...
STAND_OUT_DB = 1.0
#: ...no harmonic of the tones within this...
MIN_HARMONIC_MARGIN_DB = 8.0
#: ...nor, as the strongest thing left, a harmonic of a pitch both tones share within this...
VOICE_MARGIN_DB = 4.0
#: ...and the tones in Q.24's accept band (speech that mimics a key is often further off).
ACCEPT_DEVIATION = 0.015
#: Lowest voice pitch considered when looking for a harmonic series.
MIN_PITCH_HZ = 70.0
#: Another key's candidate windows (beyond the first) before that key takes the run over.
TAKEOVER_HOPS = 3
#: Windows without the run's tones before the run is over: 24 ms of windows, which
#: a 12 ms break in a tone leaves fewer of and a 40 ms pause nine.
MAX_GAP_HOPS = 6
#: A run this long (in hops) is validated without waiting for its end: 17 hops and a
#: window, 84 ms, about what the first validation read before (it looked 16 ms past a
#: 14-hop run); a shorter look lets a brief steady vowel pass.
EARLY_VALIDATION_HOPS = 17
#: Envelope low-pass length.
ENVELOPE_SECONDS = 0.008
#: How far before the run's first window an onset is looked for.
LOOKBACK_SECONDS = 0.1
#: Span of the run over which each tone's level is taken, at either end.
LEVEL_SECONDS = 0.064
#: A run not proven within this span is no key.
MAX_PROOF_SECONDS = 0.4
#: Samples kept: the longest provable run, its lookback and the filters' reach.
HISTORY_SECONDS = 0.6


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
    peak_row: float = 0.0  # strongest tone energies in the run's candidate windows
    peak_col: float = 0.0
    start: int | None = None  # onset sample once proven


@dataclass(slots=True)
class _Window:
    index: int  # absolute window index
    key: int  # the key it is a candidate for, or -1
    strongest: int  # the key of its strongest row and column tones
    spec: np.ndarray  # the eight bins' real parts, then their imaginary parts
    energy: np.ndarray
    total: float


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
        self._normal_twist = 10 ** (MAX_NORMAL_TWIST_DB / 10)
        self._reverse_twist = 10 ** (MAX_REVERSE_TWIST_DB / 10)
        self._nominal_advance = np.exp(-2j * np.pi * freqs * self.hop / sample_rate)
        lp = round(ENVELOPE_SECONDS * sample_rate)
        self._lowpass = np.hanning(lp + 2)[1:-1]
        self._lowpass /= self._lowpass.sum()
        self._lowpass_spectra: dict[int, np.ndarray] = {}
        self._lookback = round(LOOKBACK_SECONDS * sample_rate)
        self._level_span = round(LEVEL_SECONDS * sample_rate)
        self._max_proof_hops = round(MAX_PROOF_SECONDS / HOP_SECONDS)
        # Streaming state: samples not yet covered by a full window start at
        # absolute sample ``self._tail_start``.
        self._tail = np.zeros(0, dtype=np.float32)
        self._tail_start = 0
        self._next_window = 0  # absolute index of the next window to compute
        self._keep = round(HISTORY_SECONDS * sample_rate)
        # The newest samples, in a buffer that is shifted only when full.
        self._history = np.zeros(4 * self._keep, dtype=np.float32)
        self._history_len = self._keep  # samples in it (zeros before the stream began)
        self._history_end = 0  # absolute sample after the newest one
        self._run: _Run | None = None
        self._missed = 0
        # Windows since another key's candidate interrupted the open run.
        self._doubt: list[_Window] = []

    # -- public -----------------------------------------------------------------
    def process(self, samples: np.ndarray) -> list[KeyDown | KeyUp]:
        """Feed the next samples; return keys proven or ended in them."""
        x = samples.astype(np.float32, copy=False)
        self._remember(x)
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

    @property
    def sounding(self) -> bool:
        """A tone may be a key: a run of candidate windows is open, proven or not yet."""
        return self._run is not None

    def flush(self) -> list[KeyDown | KeyUp]:
        """End of input: close any key still sounding."""
        if self._run is None:
            return []
        out: list[KeyDown | KeyUp] = []
        doubt, self._doubt = self._doubt, []
        for w in doubt:  # the stream ended in doubt: the run's own where they held its tones
            if self._holds(self._run, w):
                out += self._extend(w, candidate=False)
        return out + self._close_run(self._history_end)

    # -- screening ----------------------------------------------------------------
    def _screen(self, frames: np.ndarray, hop_energy: np.ndarray, first_index: int) -> list[KeyDown | KeyUp]:
        # einsum, not a matrix product: BLAS sums in an order that depends on
        # how many windows there are, and a difference in the last bit must not
        # decide a window differently when the audio is cut differently.
        spec = np.einsum("ij,jk->ik", frames, self._basis)
        energy = (spec[:, :8] ** 2 + spec[:, 8:] ** 2) * self._tone_energy_scale
        row = np.argmax(energy[:, :4], axis=1)
        col = np.argmax(energy[:, 4:], axis=1)
        idx = np.arange(len(frames))
        e_row = energy[idx, row]
        e_col = energy[idx, 4 + col]
        # Window energy from per-hop energies weighted by the Hann profile: a
        # quarter of the work of squaring every overlapping window, and only a
        # screen (the tone fit in ``_explained`` is exact).
        total = np.convolve(hop_energy, self._hop_weights[::-1], mode="valid")
        ok = (
            (e_row >= self._min_tone_energy)
            & (e_col >= self._min_tone_energy)
            & (e_row <= self._normal_twist * e_col)
            & (e_col <= self._reverse_twist * e_row)
            & (e_row + e_col >= MIN_TONE_SHARE * total)
        )
        if self._run is None and not ok.any():
            return []
        strongest = row * 4 + col
        return self._track_runs(np.where(ok, strongest, -1), strongest, spec, energy, total, first_index)

    def _track_runs(self, key, strongest, spec, energy, total, first_index) -> list[KeyDown | KeyUp]:
        out: list[KeyDown | KeyUp] = []
        hits = np.flatnonzero(key >= 0)
        # Walk only where something can happen: candidate windows, and the
        # windows of a run that is open.
        i = 0
        n = len(key)
        while i < n:
            if self._run is None:
                nxt = np.searchsorted(hits, i)
                if nxt >= hits.size:
                    break
                i = int(hits[nxt])
            window = _Window(first_index + i, int(key[i]), int(strongest[i]), spec[i], energy[i], float(total[i]))
            out += self._step(window)
            i += 1
        return out

    def _step(self, w: _Window) -> list[KeyDown | KeyUp]:
        """One window, while a run is open or when ``w`` may open one."""
        run = self._run
        if run is None:
            if w.key >= 0:
                self._run = _Run(w.key, w.index, w.index)
                self._missed = 0
                self._accumulate(w, candidate=True)
            return []
        if self._doubt:
            return self._step_in_doubt(w)
        if self._continues(run, w):
            return self._extend(w, candidate=w.key >= 0)
        if w.key >= 0:
            # Another key's candidate: speech beside one tone does that for a
            # moment. Which key goes on is decided by the windows that follow.
            self._doubt = [w]
            return []
        self._missed += 1
        run.prev_row = run.prev_col = None
        if self._missed > MAX_GAP_HOPS:
            return self._close_run(self._reach(w))
        return []

    def _continues(self, run: _Run, w: _Window) -> bool:
        """Whether window ``w`` is one of the run's: its candidate, or its tones still the strongest."""
        return w.key == run.key_index or (w.key < 0 and w.strongest == run.key_index and self._holds(run, w))

    def _step_in_doubt(self, w: _Window) -> list[KeyDown | KeyUp]:
        run = self._run
        assert run is not None
        doubt = self._doubt
        doubt.append(w)
        if self._continues(run, w):
            # The run's key came back: the windows in doubt were its own
            # (those that held its tones) or a gap in it.
            self._doubt = []
            out: list[KeyDown | KeyUp] = []
            for held in doubt[:-1]:
                if self._holds(run, held):
                    out += self._extend(held, candidate=False)
                else:
                    run.prev_row = run.prev_col = None
            return out + self._extend(w, candidate=w.key >= 0)
        challenger = doubt[0].key
        lasting = sum(d.key == challenger for d in doubt) > TAKEOVER_HOPS
        held = [i for i, d in enumerate(doubt) if d.key >= 0 or self._holds(run, d)]
        if lasting or (w.key >= 0 and w.key != challenger) or len(doubt) - 1 - held[-1] > MAX_GAP_HOPS:
            # Another key took over, or the run ended in doubt: the windows
            # since the doubt began are walked again without it. A keypad
            # cannot go from one key to another sharing a tone without a pause:
            # a run not yet proven that another such key takes over was that
            # key's tone and something else (speech beside it).
            self._doubt = []
            r, c = divmod(run.key_index, 4)
            if lasting and run.start is None and (challenger // 4 == r or challenger % 4 == c):
                self._run = None
                out = []
            else:
                out = self._close_run(self._reach(w))
            for again in doubt:
                out += self._step(again)
            return out
        return []

    def _extend(self, w: _Window, candidate: bool) -> list[KeyDown | KeyUp]:
        """Window ``w`` holds the open run's key: the run grows, and is proven once long enough."""
        run = self._run
        assert run is not None
        self._missed = 0
        run.last_window = w.index
        self._accumulate(w, candidate)
        span = run.last_window - run.first_window
        if run.start is None and EARLY_VALIDATION_HOPS <= span <= self._max_proof_hops:
            start = self._prove(run, None)
            if start is not None:
                run.start = start
                return [KeyDown(KEYS[run.key_index], start)]
        return []

    def _reach(self, w: _Window) -> int:
        """The newest sample a run closed at window ``w`` may be measured to:
        what comes after it depends on how the audio was cut."""
        return w.index * self.hop + self.window

    @staticmethod
    def _holds(run: _Run, w: _Window) -> bool:
        """Whether window ``w`` still holds the run's two tones near their level."""
        r, c = divmod(run.key_index, 4)
        e_row, e_col = float(w.energy[r]), float(w.energy[4 + c])
        return (
            e_row >= HOLD_LEVEL * run.peak_row
            and e_col >= HOLD_LEVEL * run.peak_col
            and e_row + e_col >= HOLD_SHARE * w.total
        )

    def _accumulate(self, w: _Window, candidate: bool) -> None:
        run = self._run
        assert run is not None
        r, c = divmod(run.key_index, 4)
        if candidate:
            run.peak_row = max(run.peak_row, float(w.energy[r]))
            run.peak_col = max(run.peak_col, float(w.energy[4 + c]))
        xr = complex(float(w.spec[r]), float(w.spec[8 + r]))
        xc = complex(float(w.spec[4 + c]), float(w.spec[12 + c]))
        if run.prev_row is not None and run.prev_col is not None:
            pr = xr * run.prev_row.conjugate()
            pc = xc * run.prev_col.conjugate()
            run.z_row += pr
            run.z_col += pc
            run.mag_row += abs(pr)
            run.mag_col += abs(pc)
        run.prev_row, run.prev_col = xr, xc

    # -- validation ---------------------------------------------------------------
    def _close_run(self, limit: int) -> list[KeyDown | KeyUp]:
        """End the open run; ``limit`` is the newest sample it may be measured to."""
        run = self._run
        self._run = None
        self._missed = 0
        assert run is not None
        out: list[KeyDown | KeyUp] = []
        start = run.start
        if start is None:
            if run.last_window - run.first_window > self._max_proof_hops:
                return out
            start = self._prove(run, limit)
            if start is None:
                return out
            out.append(KeyDown(KEYS[run.key_index], start))
        end = self._offset(run, self._tone_freqs(run) or self._nominal(run), limit)
        out.append(KeyUp(KEYS[run.key_index], start, max(end, start + 1)))
        return out

    @staticmethod
    def _nominal(run: _Run) -> tuple[float, float]:
        return ROW_FREQS[run.key_index // 4], COL_FREQS[run.key_index % 4]

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

    def _prove(self, run: _Run, limit: int | None) -> int | None:
        """Validate a run; return its onset sample, or None when it is no key.

        ``limit`` is the newest sample a closed run may be measured to; None
        while the run still sounds (it is then measured to its newest window).
        """
        freqs = self._tone_freqs(run)
        if freqs is None:
            return None
        last_end = run.last_window * self.hop + self.window
        start = self._onset(run, freqs, last_end if limit is None else limit)
        if start is None:
            return None
        end = last_end if limit is None else self._offset(run, freqs, limit)
        if end - start < MIN_TONE_SECONDS * self.sample_rate:
            return None
        if not self._explained(start, end, freqs, self._nominal(run)):
            return None
        return start

    def _explained(self, start: int, end: int, freqs: tuple[float, float], nominal: tuple[float, float]) -> bool:
        """Whether two sinusoids at ``freqs`` (for a key of ``nominal`` ones) explain the samples ``[start, end)``."""
        guard = self.hop // 2
        x, _ = self._recall(start + guard, end - guard)
        if x.size < self.hop:
            return False
        n = np.arange(x.size)
        cols = []
        for f in freqs:
            phase = 2 * np.pi * f * n / self.sample_rate
            cols += [np.cos(phase), np.sin(phase)]
        basis = np.stack(cols, axis=1)
        coef, *_ = np.linalg.lstsq(basis, x, rcond=None)
        left = x - basis @ coef
        residual = float(left @ left) / (float(x @ x) + 1e-9)
        if residual <= MAX_RESIDUAL:
            return True
        if (
            residual > MAX_RESIDUAL_UNRELATED
            or max(abs(f / g - 1) for f, g in zip(freqs, nominal, strict=True)) > ACCEPT_DEVIATION
        ):
            return False
        weaker = min(float(np.hypot(coef[0], coef[1])), float(np.hypot(coef[2], coef[3])))
        return self._stands_out(left, freqs, weaker)

    def _stands_out(self, left: np.ndarray, freqs: tuple[float, float], weaker: float) -> bool:
        """Whether the two tones stand out from what they leave, ``left``, as a
        key's do from speech over it, and unlike a voice or chord that mimics one.

        Such a mimic has, beside the two tones, their overtones or the other
        harmonics of a pitch f0 of which both tones are harmonics
        (f0 = (f_col - f_row) / k, dividing f_row). The tones stand out when
        nothing left is within STAND_OUT_DB of the weaker tone, no overtone or
        harmonic next to either tone within MIN_HARMONIC_MARGIN_DB of it, the
        strongest thing left is not a harmonic of f0 within VOICE_MARGIN_DB of
        it, and the three strongest things left are not all harmonics of f0.
        Harmonics are read at their exact frequencies, so a voice over a key,
        with a pitch of its own, rarely lands on them.
        """
        f_row, f_col = freqs
        nyquist = 0.85 * self.sample_rate / 2

        def apart(f: float) -> bool:
            return MIN_PITCH_HZ <= f <= nyquist and min(abs(f / f_row - 1), abs(f / f_col - 1)) > 0.015

        w = np.hanning(left.size)
        n = np.arange(left.size)
        scale = 2 / float(np.sum(w))

        def amplitudes(where: list[float]) -> np.ndarray:
            if not where:
                return np.zeros(1)
            return np.abs(np.exp(-2j * np.pi * np.outer(where, n) / self.sample_rate) @ (left * w)) * scale

        size = 1 << int(np.ceil(np.log2(4 * left.size)))
        spectrum = np.abs(np.fft.rfft(left * w, size)) * scale
        f = np.arange(spectrum.size) * self.sample_rate / size
        band = (f >= MIN_PITCH_HZ) & (f <= nyquist) & (np.abs(f / f_row - 1) > 0.015) & (np.abs(f / f_col - 1) > 0.015)
        strongest = float(np.max(spectrum[band]))
        if strongest > weaker * 10 ** (-STAND_OUT_DB / 20):
            return False
        near = [f for f in (2 * f_row, 2 * f_col) if apart(f)]
        pitches, combs = [], []
        spacing = f_col - f_row
        for k in range(1, int(spacing // MIN_PITCH_HZ) + 1):
            f0 = spacing / k
            if abs(f_row / f0 - round(f_row / f0)) <= 0.12:
                near += [f for f in (f_row - f0, f_row + f0, f_col - f0, f_col + f0) if apart(f)]
                pitches.append(f0)
                combs.append([h * f0 for h in range(1, int(nyquist // f0) + 1) if apart(h * f0)])
        if float(np.max(amplitudes(near))) > weaker * 10 ** (-MIN_HARMONIC_MARGIN_DB / 20):
            return False
        # The three strongest sinusoids left, to see whether they are all of one voice.
        inside = spectrum * band
        peaks = np.flatnonzero((inside[1:-1] > inside[:-2]) & (inside[1:-1] >= inside[2:])) + 1
        top = f[peaks[np.argsort(inside[peaks])[::-1][:3]]]
        tolerance = np.maximum(0.01 * top, 0.5 * self.sample_rate / left.size)
        for f0, comb in zip(pitches, combs, strict=True):
            peak = float(np.max(amplitudes(comb)))
            if peak >= strongest * 10 ** (-0.5 / 20) and peak > weaker * 10 ** (-VOICE_MARGIN_DB / 20):
                return False
            if top.size == 3 and np.all(np.abs(top - np.maximum(np.round(top / f0), 1) * f0) <= tolerance):
                return False
        return True

    # -- edges --------------------------------------------------------------------
    def _envelope(self, lo: int, hi: int, limit: int, freqs, level_lo: int, level_hi: int) -> tuple[np.ndarray, int]:
        """The lesser of the two tones' envelopes over ``[lo, hi)``, each over its
        median in ``[level_lo, level_hi)``; read no further than ``limit``."""
        reach = self._lowpass.size
        x, start = self._recall(lo - reach, min(hi + reach, limit))
        phase = np.outer(freqs, np.arange(x.size)) * (-2j * np.pi / self.sample_rate)
        mags = np.abs(self._smooth(x * np.exp(phase)))
        steady = mags[:, max(level_lo - start, 0) : max(level_hi - start, 0)]
        level = np.median(steady, axis=1) if steady.shape[1] else np.max(mags, axis=1, initial=0.0)
        env = np.min(mags / (level[:, None] + 1e-9), axis=0)
        a = min(max(lo - start, 0), x.size)
        return env[a : max(hi - start, a)], start + a

    def _smooth(self, rows: np.ndarray) -> np.ndarray:
        """Each row convolved with the envelope low-pass (centred, as ``np.convolve(..., "same")``), by FFT."""
        taps = self._lowpass.size
        size = 1 << int(np.ceil(np.log2(rows.shape[1] + taps - 1)))
        response = self._lowpass_spectra.get(size)
        if response is None:
            response = self._lowpass_spectra[size] = np.fft.fft(self._lowpass, size)
        full = np.fft.ifft(np.fft.fft(rows, size, axis=1) * response, axis=1)
        return full[:, (taps - 1) // 2 : (taps - 1) // 2 + rows.shape[1]]

    def _onset(self, run: _Run, freqs, limit: int) -> int | None:
        """First sample of the tone: back from the first point at or after the
        run's first window where the tone is at half its level."""
        first = run.first_window * self.hop
        centre = first + self.window // 2
        last_centre = run.last_window * self.hop + self.window // 2
        hi = min(last_centre + self.window // 2, centre + self._level_span)
        level_hi = max(min(last_centre, centre + self._level_span), centre + self.hop)
        env, lo = self._envelope(first - self._lookback, hi, limit, freqs, centre, level_hi)
        above = env >= 0.5
        after = np.flatnonzero(above[max(first - lo, 0) :])
        if after.size == 0:
            return None
        anchor = max(first - lo, 0) + int(after[0])
        below = np.flatnonzero(~above[:anchor])
        return lo + (int(below[-1]) + 1 if below.size else 0)

    def _offset(self, run: _Run, freqs, limit: int) -> int:
        """Sample after the tone: on from the last point before the end of the
        run's last window where the tone is at half its level."""
        last_end = run.last_window * self.hop + self.window
        last_centre = last_end - self.window // 2
        first_centre = run.first_window * self.hop + self.window // 2
        lo = max(run.first_window * self.hop, last_end - self._level_span)
        level_lo = max(first_centre, last_centre - self._level_span)
        env, lo = self._envelope(
            lo, last_end + self.window, limit, freqs, level_lo, max(last_centre, level_lo + self.hop)
        )
        above = env >= 0.5
        before = np.flatnonzero(above[: max(last_end - lo, 0)])
        if before.size == 0:
            return last_end
        anchor = int(before[-1])
        below = np.flatnonzero(~above[anchor:])
        return lo + (anchor + int(below[0]) if below.size else env.size)

    # -- sample history -------------------------------------------------------------
    def _remember(self, x: np.ndarray) -> None:
        """Keep ``x`` and at least HISTORY_SECONDS before it, so a run can be
        measured however large the pieces are."""
        if self._history_len + x.size > self._history.size:
            kept = self._history[self._history_len - self._keep : self._history_len].copy()
            if self._keep + x.size > self._history.size:
                self._history = np.zeros(2 * (self._keep + x.size), dtype=np.float32)
            self._history[: self._keep] = kept
            self._history_len = self._keep
        self._history[self._history_len : self._history_len + x.size] = x
        self._history_len += x.size
        self._history_end += x.size

    def _recall(self, lo: int, hi: int) -> tuple[np.ndarray, int]:
        oldest = self._history_end - self._history_len
        lo = max(lo, oldest, 0)
        hi = min(hi, self._history_end)
        if hi <= lo:
            return np.zeros(0), lo
        return self._history[lo - oldest : hi - oldest].astype(np.float64), lo
