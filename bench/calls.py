"""Call-like audio for the benchmarks: speech, silence, keys and hiss on two tracks."""

from __future__ import annotations

import numpy as np
import soundfile as sf

from firmware.media.speech import speak
from firmware.media.synth import dtmf_tone

LINES = [
    "Good morning, thank you for calling, how can I help you today?",
    "I would like to change my booking from Friday to Saturday evening.",
    "Let me check that for you, one moment please.",
    "That is fine, the table is yours at eight o'clock.",
    "Could you spell the surname for me, please?",
]


def write_call(path, seconds: float, rate: int = 16000, seed: int = 3) -> None:
    """Write a 2-channel call of ``seconds`` to ``path``, streamed one minute at a time."""
    rng = np.random.default_rng(seed)
    voices = [speak(t, rate, voice=v) for t in LINES for v in ("en-us", "en-gb+f3")]
    with sf.SoundFile(path, "w", samplerate=rate, channels=2, subtype="PCM_16") as out:
        left = int(seconds * rate)
        while left > 0:
            n = min(left, 60 * rate)
            block = rng.normal(0, 60, (n, 2))
            pos = int(rng.uniform(0, rate))
            while pos < n:
                talk = voices[rng.integers(len(voices))]
                track = int(rng.integers(2))
                end = min(n, pos + talk.size)
                block[pos:end, track] += talk[: end - pos]
                pos = end + int(rng.uniform(0.3, 2.5) * rate)
                if rng.random() < 0.3 and pos < n:
                    tone = dtmf_tone("0123456789*#"[rng.integers(12)], rate, 0.1)
                    end = min(n, pos + tone.size)
                    block[pos:end, 0] += tone[: end - pos]
                    pos = end + int(0.5 * rate)
            out.write(np.clip(block, -32768, 32767).astype(np.int16))
            left -= n
