"""The front panel on GPIO: record and pause buttons, hook switch, record LED, buzzer.

gpiozero reads and drives the pins; what the edges mean (debounce, hold) and
when the LED and buzzer change is decided by ``hal.gpio.logic`` from
timestamps taken with the panel's ``clock``. gpiozero reports edges from its
own thread, so an edge only takes a lock and feeds a debouncer; anything that
settles later is found by ``tick``, which the daemon calls every audio period.

Wiring: buttons and the hook switch connect their pin to ground and use the
internal pull-up (pressed or contact closed = low), unless ``active_high``
(pin pulled down, pressed = high). The LED and buzzer are lit by a high pin.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable
from importlib.metadata import entry_points

from gpiozero import Device, DigitalInputDevice, DigitalOutputDevice
from gpiozero.exc import BadPinFactory, GPIOPinInUse, GPIOZeroError
from gpiozero.pins.mock import MockFactory

from .logic import ButtonLogic, Debouncer, LedPattern, led_level

log = logging.getLogger("edge-recorder.hal.gpio")

INPUTS = ("record_button", "pause_button", "hook_switch")
OUTPUTS = ("led", "buzzer")
CONTACTS = ("closed", "open")

PinSpec = int | str | None


class PinError(Exception):
    """A pin or pin factory that cannot be used; the message names the role and the pin."""


def make_pin_factory(name: str | None):
    """The gpiozero pin factory called ``name``: ``None``/"" for gpiozero's default,
    ``"mock"`` for an in-memory board, or ``"lgpio"``, ``"rpigpio"``, ``"pigpio"``, ``"native"``.

    >>> type(make_pin_factory("mock")).__name__
    'MockFactory'
    >>> make_pin_factory(None) is None
    True
    """
    if not name:
        return None
    if name == "mock":
        return MockFactory()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        found = [ep for ep in entry_points(group="gpiozero_pin_factories") if ep.name == name.lower()]
    if not found:
        known = sorted({ep.name for ep in entry_points(group="gpiozero_pin_factories")} | {"mock"})
        raise PinError(f"pin_factory {name!r} is unknown; use one of {', '.join(known)}")
    try:
        return found[0].load()()
    except Exception as exc:  # each factory fails its own way (no chip, no daemon, no library)
        raise PinError(f"pin_factory {name!r} cannot start: {exc}") from None


class Panel:
    """The GPIO panel: buttons, hook switch, record LED and buzzer; any of them may be left unwired (``None``).

    Pins are BCM numbers or gpiozero names (``17``, ``"GPIO17"``, ``"BOARD11"``).
    Events go to ``on_record``, ``on_record_hold`` (with ``hold_s``),
    ``on_pause`` and ``on_hook(off_hook)``, called from gpiozero's thread or
    from ``tick``: keep them short (put a message on a queue).

    >>> panel = Panel(record_button=17, led=27, pin_factory="mock", clock=lambda: 0.0)
    >>> presses = []
    >>> panel.on_record = lambda: presses.append("record")
    >>> panel.drive("record_button", True, at=1.0)   # press ...
    >>> panel.drive("record_button", False, at=1.2)  # ... and release
    >>> panel.tick(1.3)
    >>> presses
    ['record']
    >>> panel.set_led(LedPattern.ON); panel.tick(1.3); panel.mock_pin("led").state
    True
    >>> panel.close()
    """

    def __init__(
        self,
        *,
        record_button: PinSpec = None,
        pause_button: PinSpec = None,
        hook_switch: PinSpec = None,
        hook_off_hook_contact: str = "closed",
        led: PinSpec = None,
        buzzer: PinSpec = None,
        pin_factory: str | None = None,
        bounce_s: float = 0.03,
        hook_bounce_s: float = 0.1,
        hold_s: float | None = None,
        active_high: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if hook_off_hook_contact not in CONTACTS:
            raise ValueError(f"hook_off_hook_contact {hook_off_hook_contact!r}: expected 'closed' or 'open'")
        self.on_record: Callable[[], None] | None = None
        self.on_record_hold: Callable[[], None] | None = None
        self.on_pause: Callable[[], None] | None = None
        self.on_hook: Callable[[bool], None] | None = None
        self.hold_s = hold_s
        self.active_high = active_high
        self.hook_off_hook_contact = hook_off_hook_contact
        self._clock = clock
        # Reentrant: a mock pin driven under the lock calls back into the panel on the same thread.
        self._lock = threading.RLock()
        self._stamp: float | None = None  # the time of an edge being driven by ``drive``
        self._devices: dict[str, Device] = {}
        self._pins = {
            "record_button": record_button,
            "pause_button": pause_button,
            "hook_switch": hook_switch,
            "led": led,
            "buzzer": buzzer,
        }
        self._pattern = LedPattern.OFF
        self._pattern_since = 0.0
        self._led_lit = False
        self._buzz_until: float | None = None
        self._record: ButtonLogic | None = None
        self._pause: ButtonLogic | None = None
        self._hook: Debouncer | None = None
        self._factory = make_pin_factory(pin_factory)
        self._owns_factory = self._factory is not None
        try:
            self._wire(bounce_s, hook_bounce_s)
        except BaseException:
            self.close()
            raise

    def _wire(self, bounce_s: float, hook_bounce_s: float) -> None:
        for role in INPUTS + OUTPUTS:
            if self._pins[role] is None:
                continue
            if role in OUTPUTS:
                self._devices[role] = self._make(role, DigitalOutputDevice, initial_value=False)
                continue
            device = self._make(role, DigitalInputDevice, pull_up=not self.active_high, bounce_time=None)
            self._devices[role] = device
            active = bool(device.is_active)
            if role == "record_button":
                self._record = ButtonLogic(bounce_s, self.hold_s, pressed=active)
            elif role == "pause_button":
                self._pause = ButtonLogic(bounce_s, None, pressed=active)
            else:
                self._hook = Debouncer(hook_bounce_s, active)
            # Bound per role now: a lambda in the loop would see the last role.
            device.when_activated = self._edge_handler(role, True)
            device.when_deactivated = self._edge_handler(role, False)
        if self._factory is None and self._devices:
            self._factory = next(iter(self._devices.values())).pin_factory

    def _make(self, role: str, kind: type[Device], **options) -> Device:
        pin = self._pins[role]
        try:
            return kind(pin, pin_factory=self._factory, **options)
        except GPIOPinInUse as exc:
            name = self._pin_name(pin)
            other = next((r for r, d in self._devices.items() if str(d.pin) == name), None)
            by = f"by {other}" if other else f"({exc})"
            raise PinError(f"{role}: pin {pin!r} is already used {by}") from None
        except BadPinFactory as exc:
            hint = 'set pin_factory = "mock" to simulate the panel'
            raise PinError(f"{role} on pin {pin!r}: no GPIO pin factory works here ({exc}); {hint}") from None
        except (GPIOZeroError, ValueError, OSError) as exc:
            raise PinError(f"{role} on pin {pin!r}: {exc}") from None

    def _pin_name(self, pin: PinSpec) -> str:
        try:
            return str((self._factory or Device.pin_factory).board_info.to_gpio(pin))
        except Exception:  # a factory without board info: compare as given
            return str(pin)

    def _edge_handler(self, role: str, active: bool) -> Callable[[], None]:
        return lambda: self._edge(role, active)

    # -- inputs -----------------------------------------------------------------------------------------------

    def _edge(self, role: str, active: bool) -> None:
        with self._lock:
            t = self._stamp if self._stamp is not None else self._clock()
            if role == "record_button":
                events = self._button_events(self._record.feed(active, t), "record")
            elif role == "pause_button":
                events = self._button_events(self._pause.feed(active, t), "pause")
            else:
                events = self._hook_events(self._hook.feed(active, t))
        self._dispatch(events)

    @staticmethod
    def _button_events(event: str | None, name: str) -> list[tuple]:
        if event is None:
            return []
        return [(name + "_hold",)] if event == "hold" else [(name,)]

    def _hook_events(self, closed: bool | None) -> list[tuple]:
        if closed is None:
            return []
        return [("hook", self._off_hook(closed))]

    def _off_hook(self, closed: bool) -> bool:
        return closed if self.hook_off_hook_contact == "closed" else not closed

    def off_hook(self) -> bool | None:
        """Whether the handset is off hook (debounced); ``None`` without a hook switch."""
        with self._lock:
            return None if self._hook is None else self._off_hook(self._hook.level)

    def _dispatch(self, events: list[tuple]) -> None:
        for name, *args in events:
            callback = getattr(self, "on_" + name)
            if callback is None:
                continue
            try:
                callback(*args)
            except Exception:  # one bad handler must not stop the panel
                log.exception("GPIO %s handler failed", name)

    # -- outputs ----------------------------------------------------------------------------------------------

    @property
    def led_pattern(self) -> LedPattern:
        return self._pattern

    @property
    def led_lit(self) -> bool:
        """Whether the LED is lit now (also without an LED wired: the pattern's level)."""
        return self._led_lit

    @property
    def buzzing(self) -> bool:
        return self._buzz_until is not None

    def set_led(self, pattern: LedPattern) -> None:
        """Show ``pattern``; setting the pattern already shown keeps its blink phase."""
        with self._lock:
            if pattern is self._pattern:
                return
            now = self._clock()
            self._pattern, self._pattern_since = pattern, now
            self._show_led(now)

    def _show_led(self, now: float) -> None:
        lit = led_level(self._pattern, now - self._pattern_since)
        if lit != self._led_lit:
            self._led_lit = lit
            if "led" in self._devices:
                self._devices["led"].value = lit

    def beep(self, seconds: float) -> None:
        """Sound the buzzer for ``seconds`` (switched off by ``tick``); nothing without a buzzer."""
        with self._lock:
            if "buzzer" not in self._devices or seconds <= 0:
                return
            now = self._clock()
            self._buzz_until = max(self._buzz_until or now, now + seconds)
            self._devices["buzzer"].on()

    # -- time -------------------------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """An input timer is running (debounce, hold), so ``tick`` should come often."""
        with self._lock:
            buttons = [b for b in (self._record, self._pause) if b is not None]
            return any(b.waiting for b in buttons) or (self._hook is not None and self._hook.settling)

    def tick(self, now: float | None = None) -> None:
        """Run the timers up to ``now`` (default ``clock()``): debounce settling, hold, LED blink, buzzer off."""
        with self._lock:
            if now is None:
                now = self._clock()
            events = []
            if self._record is not None:
                events += self._button_events(self._record.tick(now), "record")
            if self._pause is not None:
                events += self._button_events(self._pause.tick(now), "pause")
            if self._hook is not None:
                events += self._hook_events(self._hook.tick(now))
            self._show_led(now)
            if self._buzz_until is not None and now >= self._buzz_until:
                self._buzz_until = None
                if "buzzer" in self._devices:
                    self._devices["buzzer"].off()
        self._dispatch(events)

    def wired(self, role: str) -> bool:
        """Whether ``role`` ("record_button", "pause_button", "hook_switch", "led", "buzzer") has a pin."""
        if role not in self._pins:
            raise ValueError(f"unknown role {role!r}; expected one of {', '.join(self._pins)}")
        return self._pins[role] is not None

    # -- simulation -------------------------------------------------------------------------------------------

    def mock_pin(self, role: str):
        """The gpiozero ``MockPin`` wired to ``role`` (only with the mock pin factory)."""
        if role not in self._pins:
            raise ValueError(f"unknown role {role!r}; expected one of {', '.join(self._pins)}")
        if role not in self._devices:
            raise ValueError(f"no {role.replace('_', ' ')} is wired")
        if not isinstance(self._factory, MockFactory):
            raise ValueError('mock pins need pin_factory = "mock"')
        return self._devices[role].pin

    def drive(self, role: str, active: bool, at: float | None = None) -> None:
        """Drive an input's mock pin to its active level (pressed, contact closed) or back.

        ``at`` stamps the edge (default ``clock()``), so a scenario replays edges at
        their exact times. Takes the wiring into account (pull-up or ``active_high``).
        """
        if role not in INPUTS:
            raise ValueError(f"{role!r} is not an input; expected one of {', '.join(INPUTS)}")
        pin = self.mock_pin(role)
        with self._lock:
            self._stamp = at
            try:
                if active == self.active_high:
                    pin.drive_high()
                else:
                    pin.drive_low()
            finally:
                self._stamp = None

    def close(self) -> None:
        """Switch the LED and buzzer off and release every pin."""
        with self._lock:
            devices, self._devices = self._devices, {}
            for role, device in devices.items():
                try:
                    if role in OUTPUTS:
                        device.off()
                    device.close()
                except GPIOZeroError:
                    pass
            factory, self._factory = self._factory, None
            if self._owns_factory and factory is not None:
                factory.close()

    def __enter__(self) -> Panel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
