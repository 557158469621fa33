"""The GPIO front panel behind one class, ``Panel``, on any gpiozero pin factory.

``logic`` holds the timestamp-driven parts (debounce, hold, LED patterns) as
plain code; ``panel`` wires them to gpiozero devices; ``scenario`` replays
button presses and hook changes onto mock pins at audio times, for the
simulator and the tests.
"""

from .logic import ButtonLogic, Debouncer, LedPattern, led_level
from .panel import Panel, PinError, make_pin_factory
from .scenario import Action, Scenario, ScenarioError, parse_scenario

__all__ = [
    "Action",
    "ButtonLogic",
    "Debouncer",
    "LedPattern",
    "Panel",
    "PinError",
    "Scenario",
    "ScenarioError",
    "led_level",
    "make_pin_factory",
    "parse_scenario",
]
