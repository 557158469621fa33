"""Where the inbound and outbound tracks are in the input, and how a recording's
``track`` and ``channels`` options turn them into the samples it writes.

``inbound`` is what arrives from the line (the far party); ``outbound`` is what
goes to it (the local party and the box's own tones). A 2-channel interface
carries each on its own channel; a mono line-in carries both mixed in one, so
it cannot give a dual recording or a single track.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .options import Channels, RecordingOptions, Track


class LayoutError(ValueError):
    """Options that the input cannot serve (e.g. ``dual`` on a mono line); ``option`` names the one, when
    it is an option and not the input itself."""

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


@dataclass(frozen=True, slots=True)
class InputLayout:
    """The capture format: sample rate, channel count and the tracks' channels.

    >>> InputLayout(16000, 2).separable
    True
    >>> InputLayout(8000, 1).separable
    False
    """

    sample_rate: int = 16000
    channels: int = 1
    inbound_channel: int = 0
    outbound_channel: int = 1

    def __post_init__(self) -> None:
        if self.sample_rate not in (8000, 16000):
            raise LayoutError(f"input sample rate {self.sample_rate} Hz is not supported; use 8000 or 16000")
        if self.channels not in (1, 2):
            raise LayoutError(f"input has {self.channels} channels; 1 or 2 are supported")
        if self.channels == 2 and {self.inbound_channel, self.outbound_channel} != {0, 1}:
            raise LayoutError("inbound_channel and outbound_channel must be 0 and 1, one each")

    @property
    def separable(self) -> bool:
        return self.channels == 2

    def tracks(self) -> tuple[str, ...]:
        """Names of the signals detectors run on."""
        return ("inbound", "outbound") if self.separable else ("both",)

    def split(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        """The input frames as one 1-D int16 array per detector signal."""
        if not self.separable:
            return {"both": frames.reshape(-1)}
        return {"inbound": frames[:, self.inbound_channel], "outbound": frames[:, self.outbound_channel]}

    def check(self, options: RecordingOptions) -> None:
        """Raise ``LayoutError`` when this input cannot give what ``options`` ask."""
        if self.separable:
            return
        if options.channels is Channels.DUAL:
            raise LayoutError(
                "channels=dual needs the inbound and outbound tracks on separate input channels, "
                "but the input is mono (both tracks mixed); use channels=mono or a 2-channel interface",
                "channels",
            )
        if options.track is not Track.BOTH:
            raise LayoutError(
                f"track={options.track.value} needs the tracks on separate input channels, "
                "but the input is mono (both tracks mixed); use track=both or a 2-channel interface",
                "track",
            )


def render(layout: InputLayout, options: RecordingOptions, frames: np.ndarray, tone: np.ndarray | None) -> np.ndarray:
    """Map input frames (and the box's tone on the outbound track) to output frames.

    Returns int16 of shape (n, 1) or (n, 2); dual puts inbound left, outbound right.
    """
    n = frames.shape[0]
    if layout.separable:
        inbound = frames[:, layout.inbound_channel].astype(np.int32)
        outbound = frames[:, layout.outbound_channel].astype(np.int32)
        if options.track is Track.INBOUND:
            outbound = np.zeros(n, np.int32)
        elif options.track is Track.OUTBOUND:
            inbound = np.zeros(n, np.int32)
    else:
        inbound = frames.reshape(-1).astype(np.int32)
        outbound = np.zeros(n, np.int32)
    if tone is not None and options.track is not Track.INBOUND:
        outbound = outbound + tone
    if options.channels is Channels.DUAL:
        out = np.stack([inbound, outbound], axis=1)
    else:
        out = (inbound + outbound)[:, None]
    return np.clip(out, -32768, 32767).astype(np.int16)
