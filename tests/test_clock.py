"""Delivery on a box whose wall clock steps, as a Pi's does: it has no real-time clock, boots with a guess
and is stepped by NTP later. The daemon runs with tests/clockstep on its path, whose sitecustomize offsets
``time.time()`` (the one wall clock the box reads) by what a file says; the test rewrites the file while the
daemon runs, and the monotonic clock is left alone, as the kernel leaves it."""

from __future__ import annotations

import email.utils
import json
import os
import secrets
import signal
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from firmware.delivery.errors import DeliveryError, retry_after
from firmware.delivery.webhooks import Callback, deliver

from .broker import free_port
from .daemon_run import Box, counter_signal
from .http_servers import FlakyHttpServer

RATE = 8000
CLOCKSTEP = Path(__file__).with_name("clockstep")


def stepped_clock(offset_file: Path) -> dict[str, str]:
    """The environment that runs a box on a wall clock offset by the seconds ``offset_file`` holds
    (``tests/clockstep/sitecustomize.py``)."""
    path = os.pathsep.join(p for p in (str(CLOCKSTEP), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "EDGE_RECORDER_TEST_CLOCK": str(offset_file)}


def wait_for(what: str, predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.05)


def test_a_backward_clock_step_does_not_hold_back_uploads_or_callbacks(tmp_path):
    """An upload and a status callback fail while the clock is a year ahead; NTP steps it back. Their retries
    were due "a year from now" by the old clock: they must go out at once, not in a year."""
    clock = tmp_path / "clock"
    clock.write_text(str(365 * 86400))
    with FlakyHttpServer() as store, FlakyHttpServer() as hooks:
        store.script(503)
        hooks.script(503)
        box = Box.make(
            tmp_path / "box",
            np.resize(counter_signal(8.0), 40 * RATE),
            RATE,
            upload={"destination": store.url + "/calls/"},
            events={"webhook": hooks.url + "/hook", "webhook_events": "completed"},
            sim={"scenario": "0.3=button, 1.3=button", "pace": "realtime"},
        )
        proc = box.start(env=stepped_clock(clock))
        try:
            wait_for("the first upload and callback, refused", lambda: store.received and hooks.received, 20)
            clock.write_text("0")  # NTP steps the clock back a year
            wait_for("the upload retried", lambda: len(store.received) >= 2, 20)
            wait_for("the callback retried", lambda: len(hooks.received) >= 2, 20)
            assert store.received[-1].status == 201 and hooks.received[-1].status == 201
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        assert "Traceback" not in err
        [row] = box.rows()
        assert row["status"] == "completed"


def test_retry_after_is_honoured_for_uploads(tmp_path):
    with FlakyHttpServer() as store:
        store.script((503, {"Retry-After": "3"}))
        box = Box.make(
            tmp_path,
            np.resize(counter_signal(8.0), 20 * RATE),
            RATE,
            upload={"destination": store.url + "/calls/"},
            sim={"scenario": "0.3=button, 1.3=button", "pace": "realtime"},
        )
        proc = box.start()
        try:
            wait_for("the upload after its Retry-After", lambda: len(store.received) >= 2, 30)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
        first, second = store.received[:2]
        assert first.status == 503 and second.status == 201
        assert second.at - first.at >= 2.9  # not the 0.5-1 s of the first backoff


def test_retry_after_is_honoured_for_status_callbacks():
    with FlakyHttpServer() as hooks:
        # An HTTP-date, taken against the server's own Date header (which the server adds).
        hooks.script((503, {"Retry-After": email.utils.formatdate(time.time() + 20, usegmt=True)}))
        with pytest.raises(DeliveryError) as caught:
            deliver(Callback(hooks.url + "/hook"), {"type": "recording.finished", "data": {"status": "completed"}})
        assert caught.value.retry_after == pytest.approx(20, abs=1.5) and not caught.value.permanent


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "0"}, 0.0),
        ({"retry-after": " 120 "}, 120.0),
        ({"Retry-After": "9" * 400}, 3600.0),
        ({"Retry-After": "0" * 20 + "5"}, 5.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "-5"}, None),
        ({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT", "Date": "Wed, 21 Oct 2026 07:29:00 GMT"}, 0.0),
    ],
)
def test_retry_after_values(headers, seconds):
    assert retry_after(headers) == seconds


def test_the_wall_clock_of_a_running_process_steps_and_its_monotonic_clock_does_not(tmp_path):
    """The tool the tests above rely on, checked."""
    import subprocess
    import sys

    clock = tmp_path / "clock"
    clock.write_text(str(365 * 86400))
    script = (
        "import time, pathlib, datetime\n"
        "a, m = time.time(), time.monotonic()\n"
        f"pathlib.Path({str(clock)!r}).write_text('0')\n"
        "time.sleep(0.2)\n"
        "print(a - time.time(), time.monotonic() - m)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **stepped_clock(clock)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert float(out[0]) == pytest.approx(365 * 86400, abs=5) and 0.2 <= float(out[1]) < 5


def test_a_callback_sent_late_carries_media_links_signed_when_it_is_sent(tmp_path):
    """The webhook is down while the recording ends; an hour later (the wall clock stepped on) it is back. The
    callback then carries links good from that moment, not ones that expired while it waited in the outbox."""
    clock = tmp_path / "clock"
    clock.write_text("0")
    port = free_port()
    with FlakyHttpServer() as hooks:
        hooks.script(503)
        box = Box.make(
            tmp_path / "box",
            np.resize(counter_signal(8.0), 40 * RATE),
            RATE,
            events={"webhook": hooks.url + "/hook", "webhook_events": "completed"},
            http={"listen": f"127.0.0.1:{port}", "tokens": secrets.token_urlsafe(32), "media_link_seconds": 60},
            sim={"scenario": "0.3=button, 1.3=button", "pace": "realtime"},
        )
        proc = box.start(env=stepped_clock(clock))
        try:
            wait_for("the first callback, refused", lambda: hooks.received, 20)
            clock.write_text("3600")  # an hour later
            wait_for("the callback retried", lambda: len(hooks.received) >= 2, 20)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        assert "Traceback" not in err

    def expires(received) -> int:
        body = json.loads(received.body)
        return int(parse_qs(urlsplit(body["data"]["media_url"]).query)["expires"][0])

    first, late = hooks.received[0], hooks.received[-1]
    sent_late = time.time() + 3600
    assert expires(first) < sent_late, "the first attempt's link expired during the outage"
    assert sent_late - 5 < expires(late) <= sent_late + 60 + 5, "the late callback's link is good from when it went"
