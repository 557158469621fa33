"""Debouncing, press-and-hold and LED blinking as plain code fed with timestamps.

Theory of operation
-------------------
gpiozero's ``bounce_time`` is not emulated by its mock pins and, on real pins,
only drops edges that come too soon after the last one, so a glitch still
counts as a press. Here a level is believed only once it has *stayed* for
``bounce_s``: every edge restarts the wait, an edge back to the believed level
cancels it. So a bounce shorter than ``bounce_s`` is ignored, and a real press
is reported ``bounce_s`` after its last bounce (found by ``tick``, which the
daemon calls every audio period, or by the next edge).

Nothing here reads a clock: callers pass the time (monotonic seconds, or audio
time in the simulator), which makes every case a quick, exact test.
"""

from __future__ import annotations

from enum import Enum

#: Slack for float time arithmetic (0.1 + 0.03 - 0.1 < 0.03).
EPSILON = 1e-9


class LedPattern(Enum):
    """What the record LED shows: off idle, on recording, slow blink paused, fast blink trouble."""

    OFF = "off"
    ON = "on"
    SLOW_BLINK = "slow_blink"  # 1 Hz: 0.5 s on, 0.5 s off
    FAST_BLINK = "fast_blink"  # 4 Hz: 0.125 s on, 0.125 s off


#: (period, time on) of the blinking patterns, in seconds.
BLINKS = {LedPattern.SLOW_BLINK: (1.0, 0.5), LedPattern.FAST_BLINK: (0.25, 0.125)}


def led_level(pattern: LedPattern, t: float) -> bool:
    """Whether the LED is lit ``t`` seconds after ``pattern`` was set (blinks start lit).

    >>> [led_level(LedPattern.SLOW_BLINK, t) for t in (0, 0.49, 0.5, 0.99, 1.0)]
    [True, True, False, False, True]
    >>> [led_level(LedPattern.FAST_BLINK, t) for t in (0, 0.1, 0.13, 0.26)]
    [True, True, False, True]
    >>> led_level(LedPattern.ON, 7.3), led_level(LedPattern.OFF, 7.3)
    (True, False)
    """
    if pattern is LedPattern.OFF:
        return False
    if pattern is LedPattern.ON:
        return True
    period, on = BLINKS[pattern]
    return (t % period) < on - EPSILON


class Debouncer:
    """A two-level input that believes a new level once it has stayed ``bounce_s``.

    ``feed(level, t)`` at each edge and ``tick(t)`` now and then; each returns
    the new stable level when it changes, else ``None``. ``changed_at`` is when
    the stable level's first edge came.

    >>> d = Debouncer(0.03, initial_level=False)
    >>> d.feed(True, 1.000), d.feed(False, 1.002), d.feed(True, 1.004)  # contact bounce
    (None, None, None)
    >>> d.tick(1.020), d.tick(1.034), d.level, d.changed_at
    (None, True, True, 1.004)
    >>> d.feed(False, 2.0), d.feed(True, 2.01), d.tick(3.0)  # a 10 ms glitch
    (None, None, None)
    """

    def __init__(self, bounce_s: float, initial_level: bool) -> None:
        self.bounce_s = bounce_s
        self.level = initial_level
        self.changed_at: float | None = None
        self._pending: float | None = None  # when the input left the stable level

    def feed(self, level: bool, t: float) -> bool | None:
        """An edge: the input is now at ``level``."""
        settled = self.tick(t)  # a change that had settled before this edge
        if level == self.level:
            self._pending = None
        elif self._pending is None:
            self._pending = t
        return settled if settled is not None else self.tick(t)  # the second settles a zero bounce time

    @property
    def settling(self) -> bool:
        """A change is waiting to last ``bounce_s``: ``tick`` has work to do."""
        return self._pending is not None

    def tick(self, t: float) -> bool | None:
        """The new stable level if the pending one has now lasted ``bounce_s``."""
        if self._pending is None or t - self._pending < self.bounce_s - EPSILON:
            return None
        self.level = not self.level
        self.changed_at, self._pending = self._pending, None
        return self.level


class ButtonLogic:
    """A debounced button that reports ``"press"`` and, with ``hold_s``, ``"hold"``.

    Without ``hold_s`` a press is reported as soon as it is debounced. With it,
    a button held ``hold_s`` reports ``"hold"`` once (from ``tick``, while
    still held) and nothing on release; a shorter press reports ``"press"`` on
    release. A button already down at start reports nothing until pressed again.

    >>> b = ButtonLogic(0.03, hold_s=2.0)
    >>> b.feed(True, 0.0), b.tick(0.05), b.feed(False, 0.5), b.tick(0.55)
    (None, None, None, 'press')
    >>> b.feed(True, 1.0), b.tick(2.9), b.tick(3.0), b.tick(3.5), b.feed(False, 4.0), b.tick(4.1)
    (None, None, 'hold', None, None, None)
    """

    def __init__(self, bounce_s: float, hold_s: float | None = None, pressed: bool = False) -> None:
        self.hold_s = hold_s
        self.debouncer = Debouncer(bounce_s, pressed)
        self._held = pressed  # the current press has been reported (or predates us)
        self._pressed_at = 0.0

    @property
    def pressed(self) -> bool:
        return self.debouncer.level

    @property
    def waiting(self) -> bool:
        """A timer is running: a change is settling, or a held button may yet become a hold."""
        return self.debouncer.settling or (self.hold_s is not None and self.pressed and not self._held)

    def feed(self, pressed: bool, t: float) -> str | None:
        return self._event(self.debouncer.feed(pressed, t), t)

    def tick(self, t: float) -> str | None:
        return self._event(self.debouncer.tick(t), t)

    def _event(self, change: bool | None, t: float) -> str | None:
        if change is True:
            self._pressed_at = self.debouncer.changed_at
            self._held = False
            if self.hold_s is None:
                self._held = True
                return "press"
        elif change is False:
            if self._held:
                return None
            self._held = True
            # Timers may not have run during a long press: judge it by its edges.
            return "hold" if self.debouncer.changed_at - self._pressed_at >= self.hold_s - EPSILON else "press"
        if self.pressed and not self._held and t - self._pressed_at >= self.hold_s - EPSILON:
            self._held = True
            return "hold"
        return None
