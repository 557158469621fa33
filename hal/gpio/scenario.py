"""Button presses and hook changes replayed onto a mock panel at given audio times.

A scenario is how the simulator and the end-to-end tests press the box's
buttons: ``parse_scenario("2=button, 5.5=hook:off")`` gives the actions, and
``Scenario.advance(t)`` drives every pin change due by audio time ``t``. Each
edge is stamped with its own time, and the panel's timers run up to it first,
so debouncing and hold detection come out the same however long the periods are.

Actions (``SECONDS=ACTION``, or ``SECONDS ACTION`` on a line):

  button          press the record button for 0.1 s
  button-hold     hold the record button for hold_s + 0.2 s (1.2 s without hold_s)
  pause-button    press the pause button for 0.1 s
  hook:off        lift the handset (off hook)
  hook:on         put it back (on hook)
"""

from __future__ import annotations

from collections.abc import Iterable

from .panel import Panel

#: How long a scripted press lasts, and how much longer than ``hold_s`` a scripted hold.
PRESS_SECONDS = 0.1
HOLD_EXTRA_SECONDS = 0.2
#: Hold time of ``button-hold`` on a panel without ``hold_s``.
DEFAULT_HOLD_SECONDS = 1.0

ACTIONS = ("button", "button-hold", "pause-button", "hook:off", "hook:on")

#: ``(seconds, "button")``, ``(seconds, "button-hold")``, ``(seconds, "pause-button")`` or ``(seconds, "hook", off_hook)``.
Action = tuple


class ScenarioError(ValueError):
    """A scenario that cannot be replayed; the message names the bad item."""


def parse_scenario(text: str) -> list[Action]:
    """Actions from ``SECONDS=ACTION`` items separated by commas or newlines (``#`` starts a comment).

    >>> parse_scenario("2.0=button, 5.5=hook:off  # lift\\n9 hook:on\\n12=pause-button")
    [(2.0, 'button'), (5.5, 'hook', True), (9.0, 'hook', False), (12.0, 'pause-button')]
    >>> parse_scenario("3=buton")
    Traceback (most recent call last):
    hal.gpio.scenario.ScenarioError: scenario item '3=buton': unknown action 'buton'; expected one of button, button-hold, pause-button, hook:off, hook:on
    """
    actions: list[Action] = []
    for line in text.splitlines():
        for item in line.split("#", 1)[0].split(","):
            item = item.strip()
            if item:
                actions.append(_parse_item(item))
    return actions


def _parse_item(item: str) -> Action:
    when, sep, action = item.partition("=")
    if not sep:
        when, _, action = item.partition(" ")
    action = action.strip()
    try:
        seconds = float(when)
    except ValueError:
        raise ScenarioError(f"scenario item {item!r}: {when.strip()!r} is not a time in seconds") from None
    if not seconds >= 0:
        raise ScenarioError(f"scenario item {item!r}: time must not be negative")
    if action not in ACTIONS:
        raise ScenarioError(f"scenario item {item!r}: unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    if action.startswith("hook:"):
        return (seconds, "hook", action == "hook:off")
    return (seconds, action)


class Scenario:
    """Replays actions onto a panel's mock pins as audio time advances.

    Call ``advance(t)`` with the audio time reached, then the panel's ``tick``.

    >>> panel = Panel(record_button=17, hook_switch=22, pin_factory="mock", clock=lambda: 0.0)
    >>> heard = []
    >>> panel.on_record = lambda: heard.append("record")
    >>> panel.on_hook = lambda off: heard.append(f"off hook: {off}")
    >>> scenario = Scenario(panel, parse_scenario("1=hook:off, 2=button"))
    >>> scenario.advance(1.5), scenario.advance(3.0)
    (1, 2)
    >>> panel.tick(3.0); heard, scenario.done
    (['off hook: True', 'record'], True)
    >>> panel.close()
    """

    def __init__(self, panel: Panel, actions: Iterable[Action]) -> None:
        self.panel = panel
        changes: list[tuple[float, str, bool]] = []
        for action in actions:
            changes += self._changes(action)
        # Stable sort: a press and release at the same time stay in order.
        self._changes = sorted(changes, key=lambda change: change[0])

    def _changes(self, action: Action) -> list[tuple[float, str, bool]]:
        seconds, name, *args = action
        role = {"button": "record_button", "button-hold": "record_button", "pause-button": "pause_button"}.get(
            name, "hook_switch" if name == "hook" else None
        )
        if role is None or (name == "hook") != bool(args):
            raise ScenarioError(f"scenario action {action!r}: expected (seconds, ACTION) with ACTION one of {ACTIONS}")
        if not self.panel.wired(role):
            raise ScenarioError(f"scenario action {action!r}: no {role.replace('_', ' ')} is wired")
        if name == "hook":
            off_hook = bool(args[0])
            closed = off_hook if self.panel.hook_off_hook_contact == "closed" else not off_hook
            return [(seconds, role, closed)]
        length = PRESS_SECONDS
        if name == "button-hold":
            length = (self.panel.hold_s or DEFAULT_HOLD_SECONDS) + HOLD_EXTRA_SECONDS
        return [(seconds, role, True), (seconds + length, role, False)]

    @property
    def done(self) -> bool:
        return not self._changes

    @property
    def next_at(self) -> float | None:
        """Audio time of the next pin change, ``None`` when done."""
        return self._changes[0][0] if self._changes else None

    def advance(self, t: float) -> int:
        """Drive every pin change due by audio time ``t``; returns how many."""
        applied = 0
        while self._changes and self._changes[0][0] <= t:
            at, role, active = self._changes.pop(0)
            self.panel.tick(at)  # timers that ran out before this edge
            self.panel.drive(role, active, at=at)
            applied += 1
        return applied
