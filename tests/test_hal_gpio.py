"""hal.gpio: debounce, hold and LED timing as plain logic, and the panel on gpiozero's mock pins."""

from __future__ import annotations

import itertools

import pytest
from gpiozero import Device, DigitalOutputDevice
from gpiozero.pins.mock import MockFactory

from hal.gpio import (
    ButtonLogic,
    Debouncer,
    LedPattern,
    Panel,
    PinError,
    Scenario,
    ScenarioError,
    led_level,
    parse_scenario,
)


class Clock:
    """A settable clock for the panel: the tests say what time it is."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def make_panel(clock):
    """Panels on the mock pin factory, each closed after the test (mock pin reservations would leak otherwise)."""
    panels = []

    def make(**wiring) -> Panel:
        panel = Panel(pin_factory="mock", clock=clock, **wiring)
        panels.append(panel)
        return panel

    yield make
    for panel in panels:
        panel.close()


def record(panel: Panel) -> list:
    """Every panel event, in order."""
    heard: list = []
    panel.on_record = lambda: heard.append("record")
    panel.on_record_hold = lambda: heard.append("hold")
    panel.on_pause = lambda: heard.append("pause")
    panel.on_hook = lambda off_hook: heard.append(("hook", off_hook))
    return heard


def bounce(panel: Panel, clock: Clock, role: str, active: bool, edges_ms=(0, 1, 3, 4, 7)) -> None:
    """A contact changing with bounces: edges alternate, ending at ``active``, each at clock time + ms."""
    start = clock.now
    levels = [active if i % 2 == 0 else not active for i in range(len(edges_ms))]
    for ms, level in zip(edges_ms, levels, strict=True):
        clock.now = start + ms / 1000
        pin = panel.mock_pin(role)
        (pin.drive_high if level == panel.active_high else pin.drive_low)()


def run_ticks(panel: Panel, clock: Clock, until: float, step: float = 0.02) -> None:
    while clock.now < until - 1e-9:
        clock.now = round(clock.now + step, 9)
        panel.tick()


# -- the plain logic --------------------------------------------------------------------------------------


def test_debouncer_rejects_bounces_shorter_than_bounce_time():
    d = Debouncer(0.03, initial_level=False)
    for t, level in [(0.000, True), (0.010, False), (0.020, True), (0.045, False), (0.070, True), (0.099, False)]:
        assert d.feed(level, t) is None
    assert d.tick(0.5) is None and d.level is False  # never 30 ms at one level


def test_debouncer_accepts_a_press_once_it_has_stayed_bounce_time_after_its_last_bounce():
    d = Debouncer(0.03, initial_level=False)
    for t, level in [(1.000, True), (1.001, False), (1.003, True)]:
        assert d.feed(level, t) is None
    assert d.tick(1.032) is None
    assert d.tick(1.033) is True and d.changed_at == 1.003
    assert d.tick(2.0) is None  # reported once


def test_debouncer_accepts_a_settled_level_at_the_next_edge_without_ticks():
    d = Debouncer(0.03, initial_level=False)
    d.feed(True, 1.0)
    assert d.feed(False, 1.5) is True  # the press had settled long before its release
    assert d.tick(1.6) is False


def test_debouncer_with_no_bounce_time_follows_every_edge():
    d = Debouncer(0.0, initial_level=True)
    assert [d.feed(level, t) for t, level in [(0, False), (0.001, True), (0.002, True)]] == [False, True, None]


def test_button_without_hold_presses_as_soon_as_debounced():
    b = ButtonLogic(0.03)
    assert b.feed(True, 0.0) is None
    assert b.tick(0.03) == "press"
    assert b.feed(False, 3.0) is None and b.tick(3.1) is None  # a long press is still one press


def test_button_with_hold_tells_a_short_press_from_a_hold():
    b = ButtonLogic(0.03, hold_s=1.5)
    b.feed(True, 0.0)
    assert b.tick(1.0) is None
    b.feed(False, 1.2)
    assert b.tick(1.3) == "press"  # released before 1.5 s: a press, at the release

    b.feed(True, 5.0)
    assert b.tick(6.49) is None
    assert b.tick(6.5) == "hold"  # while still held
    b.feed(False, 9.0)
    assert b.tick(9.1) is None  # no press after a hold


def test_button_with_hold_judges_a_long_press_by_its_edges_when_no_tick_came():
    b = ButtonLogic(0.03, hold_s=1.0)
    b.feed(True, 0.0)
    assert b.feed(False, 2.0) == "hold"
    assert b.tick(2.1) is None


def test_a_button_held_at_start_does_not_count_until_pressed_again():
    b = ButtonLogic(0.03, pressed=True)
    b.feed(False, 0.0)
    assert b.tick(0.1) is None
    b.feed(True, 1.0)
    assert b.tick(1.1) == "press"


@pytest.mark.parametrize(
    ("pattern", "lit_at", "dark_at"),
    [
        (LedPattern.OFF, [], [0, 0.3, 0.6, 10]),
        (LedPattern.ON, [0, 0.3, 0.6, 10], []),
        (LedPattern.SLOW_BLINK, [0, 0.25, 0.499, 1.0, 1.3, 10.2], [0.5, 0.75, 0.999, 1.5, 10.7]),
        (LedPattern.FAST_BLINK, [0, 0.1, 0.25, 0.3, 1.0], [0.125, 0.2, 0.375, 0.49, 1.2]),
    ],
)
def test_led_patterns_light_at_their_times(pattern, lit_at, dark_at):
    assert all(led_level(pattern, t) for t in lit_at)
    assert not any(led_level(pattern, t) for t in dark_at)


def test_fast_blink_is_4_hz_and_slow_blink_1_hz_with_half_duty():
    for pattern, hz in [(LedPattern.FAST_BLINK, 4), (LedPattern.SLOW_BLINK, 1)]:
        samples = [led_level(pattern, i / 1000) for i in range(4000)]  # 4 s in ms steps
        rising = sum(1 for a, b in itertools.pairwise(samples) if b and not a)
        assert rising == 4 * hz - 1  # lit at 0, then one rising edge per period
        assert sum(samples) == pytest.approx(2000, abs=2)


# -- the panel on mock pins -------------------------------------------------------------------------------


def test_each_real_press_calls_its_handler_once_despite_bounces(make_panel, clock):
    panel = make_panel(record_button=17, pause_button=27)
    heard = record(panel)
    for role in ("record_button", "pause_button", "record_button"):
        bounce(panel, clock, role, True)
        run_ticks(panel, clock, clock.now + 0.2)
        bounce(panel, clock, role, False)
        run_ticks(panel, clock, clock.now + 0.3)
    assert heard == ["record", "pause", "record"]


def test_glitches_shorter_than_bounce_time_are_not_presses(make_panel, clock):
    panel = make_panel(record_button="GPIO17", bounce_s=0.03)
    heard = record(panel)
    pin = panel.mock_pin("record_button")
    for _ in range(5):
        pin.drive_low()
        clock.now += 0.01
        panel.tick()
        pin.drive_high()
        run_ticks(panel, clock, clock.now + 0.1)
    assert heard == []


def test_an_active_high_button_is_pressed_when_its_pin_goes_high(make_panel, clock):
    panel = make_panel(record_button=17, active_high=True)
    heard = record(panel)
    assert panel.mock_pin("record_button").state is False  # pulled down at rest
    panel.mock_pin("record_button").drive_high()
    run_ticks(panel, clock, 0.1)
    assert heard == ["record"]


def test_record_button_hold_calls_the_hold_handler_not_the_press(make_panel, clock):
    panel = make_panel(record_button=17, hold_s=2.0)
    heard = record(panel)
    panel.drive("record_button", True)
    run_ticks(panel, clock, 1.0)
    panel.drive("record_button", False)
    run_ticks(panel, clock, 1.5)
    assert heard == ["record"]
    panel.drive("record_button", True)
    run_ticks(panel, clock, 3.4)
    assert heard == ["record"]
    run_ticks(panel, clock, 3.6)
    assert heard == ["record", "hold"]
    panel.drive("record_button", False)
    run_ticks(panel, clock, 4.0)
    assert heard == ["record", "hold"]


@pytest.mark.parametrize("contact", ["closed", "open"])
def test_hook_switch_reports_off_hook_for_its_contact_type(make_panel, clock, contact):
    # Wired to ground with the pull-up: a closed contact reads low. "closed": the contact closes when the
    # handset is lifted; "open": it opens (closed, so low, while the handset rests on the hook).
    panel = make_panel(hook_switch=22, hook_off_hook_contact=contact)
    pin = panel.mock_pin("hook_switch")
    lift, hang_up = (pin.drive_low, pin.drive_high) if contact == "closed" else (pin.drive_high, pin.drive_low)
    hang_up()
    run_ticks(panel, clock, clock.now + 0.2)
    assert panel.off_hook() is False
    heard = record(panel)

    lift()
    run_ticks(panel, clock, clock.now + 0.06)
    assert heard == [] and panel.off_hook() is False  # still within the hook's 0.1 s debounce
    run_ticks(panel, clock, clock.now + 0.06)
    assert heard == [("hook", True)] and panel.off_hook() is True
    bounce(panel, clock, "hook_switch", contact == "open")  # hung up, with bounces
    run_ticks(panel, clock, clock.now + 0.2)
    assert heard == [("hook", True), ("hook", False)] and panel.off_hook() is False


def test_off_hook_is_none_without_a_hook_switch(make_panel):
    assert make_panel(record_button=17).off_hook() is None


def test_led_pin_follows_the_pattern_on_tick(make_panel, clock):
    panel = make_panel(led=5)
    pin = panel.mock_pin("led")
    assert pin.state is False
    panel.set_led(LedPattern.ON)
    assert pin.state is True
    clock.now = 1.0
    panel.set_led(LedPattern.SLOW_BLINK)
    states = []
    for ms in range(0, 2000, 20):
        clock.now = 1.0 + ms / 1000
        panel.tick()
        states.append(pin.state)
    assert states[:25] == [True] * 25 and states[25:50] == [False] * 25 and states[50:75] == [True] * 25

    panel.set_led(LedPattern.FAST_BLINK)
    start = clock.now
    seen = []
    for ms in (0, 100, 130, 240, 260):
        panel.tick(start + ms / 1000)
        seen.append(pin.state)
    assert seen == [True, True, False, False, True]
    panel.set_led(LedPattern.OFF)
    assert pin.state is False and panel.led_pattern is LedPattern.OFF


def test_setting_the_same_pattern_again_keeps_its_phase(make_panel, clock):
    panel = make_panel(led=5)
    panel.set_led(LedPattern.SLOW_BLINK)
    clock.now = 0.6
    panel.set_led(LedPattern.SLOW_BLINK)  # the daemon may repeat it every period
    panel.tick()
    assert panel.mock_pin("led").state is False


def test_buzzer_switches_off_after_its_time(make_panel, clock):
    panel = make_panel(buzzer=6)
    pin = panel.mock_pin("buzzer")
    clock.now = 10.0
    panel.beep(0.5)
    assert pin.state is True and panel.buzzing
    panel.tick(10.49)
    assert pin.state is True
    panel.tick(10.5)
    assert pin.state is False and not panel.buzzing


def test_beep_without_a_buzzer_does_nothing(make_panel):
    panel = make_panel(record_button=17)
    panel.beep(1.0)
    panel.tick()
    assert not panel.buzzing


def test_a_pin_used_twice_is_an_error_naming_both_roles(make_panel):
    with pytest.raises(PinError, match=r"led: pin 'GPIO17' is already used by record_button"):
        make_panel(record_button=17, led="GPIO17")


def test_a_nonexistent_pin_is_an_error_naming_the_role(make_panel):
    with pytest.raises(PinError, match=r"pause_button on pin 'GPIO99'"):
        make_panel(pause_button="GPIO99")


def test_a_failed_panel_releases_the_pins_it_had_taken():
    factory = MockFactory()
    old, Device.pin_factory = Device.pin_factory, factory
    try:
        with pytest.raises(PinError):
            Panel(led=5, buzzer=5)
        DigitalOutputDevice(5).close()  # pin 5 is free again
    finally:
        factory.close()
        Device.pin_factory = old


def test_an_unknown_pin_factory_is_named():
    with pytest.raises(PinError, match=r"pin_factory 'gpiomagic' is unknown; use one of .*lgpio.*mock"):
        Panel(record_button=17, pin_factory="gpiomagic")


def test_panel_uses_gpiozero_default_factory_when_none_is_named():
    factory = MockFactory()
    old, Device.pin_factory = Device.pin_factory, factory
    try:
        with Panel(record_button=17) as panel:
            panel.mock_pin("record_button").drive_low()
            assert factory.pin(17).state is False
    finally:
        factory.close()
        Device.pin_factory = old


def test_mock_pin_names_a_role_that_is_not_wired(make_panel):
    panel = make_panel(record_button=17)
    with pytest.raises(ValueError, match="no pause button is wired"):
        panel.mock_pin("pause_button")


# -- scenarios --------------------------------------------------------------------------------------------


def test_parse_scenario_reads_items_lines_and_comments():
    text = """
    # the call
    2.0=button, 5.5=hook:off
    9=hook:on   # hung up
    12 pause-button
    3=button-hold
    """
    assert parse_scenario(text) == [
        (2.0, "button"),
        (5.5, "hook", True),
        (9.0, "hook", False),
        (12.0, "pause-button"),
        (3.0, "button-hold"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x=button", r"scenario item 'x=button': 'x' is not a time in seconds"),
        ("-1=button", r"scenario item '-1=button': time must not be negative"),
        ("2=hook", r"scenario item '2=hook': unknown action 'hook'"),
        ("2=button, 3=press", r"scenario item '3=press': unknown action 'press'"),
    ],
)
def test_parse_scenario_names_the_bad_item(text, message):
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(text)


def test_scenario_needs_the_wired_role(make_panel):
    with pytest.raises(ScenarioError, match="no pause button is wired"):
        Scenario(make_panel(record_button=17), [(1.0, "pause-button")])


def test_scenario_replays_presses_and_hook_changes_at_audio_time(make_panel, clock):
    panel = make_panel(record_button=17, pause_button=27, hook_switch=22, hold_s=2.0)
    heard = record(panel)
    scenario = Scenario(panel, parse_scenario("1=hook:off, 2=button, 4=pause-button, 6=button-hold, 10=hook:on"))
    # The daemon's loop: audio time advances by 20 ms periods; the panel's clock is that audio time.
    times = []
    while clock.now < 12:
        clock.now = round(clock.now + 0.02, 9)
        count = len(heard)
        scenario.advance(clock.now)
        panel.tick()
        times += [(round(clock.now, 2), event) for event in heard[count:]]
    assert scenario.done
    assert times == [
        (1.1, ("hook", True)),  # 0.1 s hook debounce
        (2.14, "record"),  # hold_s is set: a short press counts at its release (2.1 s), debounced (30 ms)
        (4.04, "pause"),  # debounced press
        (8.0, "hold"),  # held from 6 s for hold_s = 2 s
        (10.1, ("hook", False)),
    ]


def test_scenario_edges_keep_their_own_times_within_a_long_period(make_panel, clock):
    panel = make_panel(record_button=17)
    heard = record(panel)
    scenario = Scenario(panel, [(1.0, "button")])
    clock.now = 5.0
    assert scenario.advance(5.0) == 2  # press at 1.0 and release at 1.1, both in one step
    panel.tick()
    assert heard == ["record"]  # a 0.1 s press, not a zero-length glitch
