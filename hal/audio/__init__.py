"""Audio devices behind two small interfaces: ``Capture`` and ``Playback``.

``AlsaCapture`` and ``AlsaPlayback`` are the real devices (pyalsaaudio);
``WavCapture`` and ``WavPlayback`` are their twins for simulation and tests;
``FaultyCapture`` wraps any capture to inject overruns and disconnects.
``list_devices`` says what ALSA offers and ``level_dbfs`` measures a level.

Modules: ``interface`` (the protocols, ``Chunk``, the errors), ``alsa``,
``wav`` and ``faults``.
"""

from .alsa import AlsaCapture, AlsaPlayback, Devices, LossEstimator, Pcm, list_devices
from .faults import Disconnect, FaultError, FaultyCapture, Overrun, parse_faults
from .interface import Capture, Chunk, DeviceLost, DeviceUnavailable, Playback, UnsupportedFormat, level_dbfs
from .wav import AudioFileError, WavCapture, WavPlayback

__all__ = [
    "AlsaCapture",
    "AlsaPlayback",
    "AudioFileError",
    "Capture",
    "Chunk",
    "DeviceLost",
    "DeviceUnavailable",
    "Devices",
    "Disconnect",
    "FaultError",
    "FaultyCapture",
    "LossEstimator",
    "Overrun",
    "Pcm",
    "Playback",
    "UnsupportedFormat",
    "WavCapture",
    "WavPlayback",
    "level_dbfs",
    "list_devices",
    "parse_faults",
]
