"""Hardware adapters: ALSA audio capture and playback, the GPIO panel, and a
simulated twin of each, behind small interfaces chosen by config.

  hal.audio   Capture/Playback: AlsaCapture, AlsaPlayback (pyalsaaudio); WavCapture,
              WavPlayback (files); FaultyCapture (overruns, disconnects on cue)
  hal.gpio    Panel: buttons, hook switch, record LED, buzzer (gpiozero, any pin
              factory, "mock" to simulate); Scenario replays presses at audio times

Nothing above this package imports ``alsaaudio`` or ``gpiozero``. Importing
``hal`` itself loads neither; ``hal.audio`` and ``hal.gpio`` load their own.
"""
