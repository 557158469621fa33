"""Hardware adapters: ALSA audio capture and playback, the GPIO panel, and a
simulated twin of each, behind small interfaces chosen by config.

Nothing above this package imports ``alsaaudio`` or ``gpiozero``. The adapters
arrive with the daemon; the recording core and ``edge-recorder record`` read
files and need none of them.
"""
