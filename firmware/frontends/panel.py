"""The GPIO panel as a front end: its buttons and hook switch call the control API.

gpiozero calls back from its own thread, which must never wait on the box: each
press is queued (``submit``) to run on the audio loop, where the control API
applies it at once, and a refusal (storage full, nothing to pause) is logged.
The LED and the buzzer are the audio loop's to drive.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

from ..control import Control

log = logging.getLogger("edge-recorder.panel")


class Buttons(Protocol):
    """The panel's callbacks (``hal.gpio.Panel`` and its simulated twin)."""

    on_record: Callable[..., None] | None
    on_record_hold: Callable[..., None] | None
    on_pause: Callable[..., None] | None
    on_hook: Callable[..., None] | None


def wire(
    panel: Buttons, control: Control, submit: Callable[[Callable[[], Any]], Future], *, pause_button: bool
) -> None:
    """Buttons to the control API. Without a pause button, holding the record button pauses."""

    def later(action: Callable[..., Any]) -> Callable[..., None]:
        def callback(*args: Any) -> None:
            submit(lambda: action(*args)).add_done_callback(_log_refusal)

        return callback

    panel.on_record = later(control.button)
    panel.on_pause = later(control.pause_button)
    if not pause_button:
        panel.on_record_hold = later(control.pause_button)
    panel.on_hook = later(control.hook)


def _log_refusal(future: Future) -> None:
    exc = future.exception()
    if exc is not None:
        log.warning("panel action refused: %s", exc)
