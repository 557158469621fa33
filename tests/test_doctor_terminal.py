"""``edge-recorder doctor`` on a terminal and through a pipe, as an installer and a script see it.

The terminal is a real pseudo-terminal 60 columns wide (``TIOCSWINSZ``) with doctor's stdout on it; the
capture is real ALSA (its ``file`` plugin, ``tests/alsa_file.py``) hearing a tone, so doctor asks to
speak into the line. On the terminal: the prompt, a countdown of the seconds left, marks and colour, and
every line within the width, wrapped between words. Through a pipe: the plain lines scripts parse.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.alsa_file import alsa_file_device
from tests.test_doctor import parse

REPO = Path(__file__).resolve().parents[1]
COLUMNS = 60
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
MARKED = re.compile(r"^[✓!✗-] (PASS|WARN|FAIL|SKIP)  ")


@pytest.fixture
def box(tmp_path):
    """A box hearing a -20 dBFS tone on real ALSA, whose spool cannot be created (a FAIL line), and the
    environment to run doctor in (the paths are relative to ``tmp_path``: words that fit 60 columns)."""
    rate = 8000
    t = np.arange(4 * rate) / rate
    sf.write(tmp_path / "line.wav", np.round(3277 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16), rate)
    alsa = alsa_file_device(tmp_path, tmp_path / "line.wav")
    (tmp_path / "blocker").write_text("a file: no spool can be created under it\n")
    (tmp_path / "config.toml").write_text(
        f'[audio]\ncapture = "{alsa.device}"\nsample_rate = {rate}\n'
        '[spool]\ndirectory = "blocker/spool"\n[catalog]\npath = "state/catalog.sqlite3"\n'
        f'[sim]\nenabled = true\ncapture = "alsa"\nframes = {alsa.frames}\n'
    )
    env = {k: v for k, v in alsa.env.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    env.update(PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1", TERM="xterm-256color")
    return env


DOCTOR = [sys.executable, "-m", "firmware.cli.main", "doctor", "--config", "config.toml", "--seconds", "3"]


def on_terminal(cwd: Path, env: dict[str, str], columns: int = COLUMNS) -> tuple[int, str]:
    """Run doctor with its stdout on a pseudo-terminal ``columns`` wide; its exit code and what it showed."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(DOCTOR, stdin=slave, stdout=slave, stderr=subprocess.DEVNULL, cwd=cwd, env=env)
    os.close(slave)
    shown, deadline = b"", time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 1)[0]:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: doctor has exited and closed the terminal
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
    return proc.wait(timeout=30), shown.decode()


def screen_lines(shown: str) -> list[str]:
    """Each line as it was drawn: a redrawn line (``\\r``) gives each of its drawings, without control sequences."""
    drawn = []
    for line in shown.replace("\r\n", "\n").split("\n"):
        drawn += [ANSI.sub("", part) for part in line.split("\r")]
    return drawn


def test_on_a_terminal_doctor_prompts_counts_down_marks_colours_and_fits_the_width(tmp_path, box):
    code, shown = on_terminal(tmp_path, box)
    assert code == 1, shown  # the spool fails

    # The prompt, then the live bar counting down the three seconds of the measurement.
    assert "Speak into the line now" in shown
    counts = [int(n) for n in re.findall(r"(\d) s left", shown)]
    assert counts and counts == sorted(counts, reverse=True), counts
    assert {3, 2, 1} <= set(counts)
    assert "\x1b[K" in shown  # the bar's line is cleared before the level's line

    # Marks and colour: a green tick, a red cross.
    assert "\x1b[32m✓ PASS\x1b[0m  config" in shown
    assert "\x1b[32m✓ PASS\x1b[0m  input level" in shown
    assert "\x1b[31m✗ FAIL\x1b[0m  spool" in shown

    # Every line within 60 columns, the live ones too.
    lines = screen_lines(shown)
    assert max(map(len, lines)) <= COLUMNS, [line for line in lines if len(line) > COLUMNS]
    assert any(len(line) > COLUMNS - 15 for line in lines)  # and they use the width

    # Wrapped between words: each check's words are the piped line's, in order, none split; continuation lines
    # are indented to the detail column.
    piped = parse(subprocess.run(DOCTOR, capture_output=True, text=True, cwd=tmp_path, env=box, timeout=120).stdout)
    checks: dict[str, list[str]] = {}
    name = None
    for line in lines:
        found = MARKED.match(line)
        if found:
            name = line[8:22].strip()
            checks[name] = [line[24:]]
        elif name is not None and line.startswith(" " * 24) and line.strip():
            checks[name].append(line[24:])
        elif line.strip():
            name = None  # the prompt, the live bar, the summary
    assert list(checks) == list(piped)
    for name, shown_lines in checks.items():
        said = piped[name]["detail"] + (f" hint: {piped[name]['hint']}" if piped[name]["hint"] else "")
        if name not in ("spool", "input level", "clock"):  # free space, levels and the clock may move
            assert " ".join(shown_lines).split() == said.split(), name
    assert len(checks["clock"]) > 1  # its hint is far longer than a line


def test_through_a_pipe_doctor_prints_the_plain_lines_scripts_parse(tmp_path, box):
    result = subprocess.run(DOCTOR, capture_output=True, text=True, cwd=tmp_path, env=box, timeout=120)
    assert result.returncode == 1
    out = result.stdout
    for absent in ("\x1b", "\r", "✓", "✗", "Speak into the line", "s left"):
        assert absent not in out, absent
    checks = parse(out)
    assert checks["config"]["status"] == "PASS" and checks["spool"]["status"] == "FAIL"
    assert checks["input level"]["status"] == "PASS" and "over 3.0 s" in checks["input level"]["detail"]
    # Not wrapped: a check is one line, its hint the next, however long.
    assert next(line for line in out.splitlines() if line.startswith("WARN  broker")).endswith("stay in the spool")
    assert max(map(len, out.splitlines())) > COLUMNS


@pytest.mark.parametrize(
    ("setting", "marks", "colour"),
    [({"NO_COLOR": "1"}, True, False), ({"TERM": "dumb"}, False, False)],
    ids=["NO_COLOR", "TERM=dumb"],
)
def test_no_color_and_a_dumb_terminal_turn_off_colour_and_marks(tmp_path, box, setting, marks, colour):
    code, shown = on_terminal(tmp_path, {**box, **setting})
    assert code == 1
    assert ("✓ PASS  config" in shown) is marks
    assert ("\x1b[32m" in shown) is colour
    if not marks:
        assert "PASS  config" in shown and "\x1b[K" not in shown
    assert max(map(len, screen_lines(shown))) <= COLUMNS


def test_on_a_narrow_terminal_the_detail_goes_below_the_name_and_still_fits(tmp_path, box):
    code, shown = on_terminal(tmp_path, box, columns=40)
    assert code == 1
    lines = screen_lines(shown)
    assert max(map(len, lines)) <= 40, [line for line in lines if len(line) > 40]
    at = lines.index("✗ FAIL  spool")  # the name alone: 24 columns of heading would leave too little for the rest
    assert lines[at + 1] == "    cannot use blocker/spool: Not a"
    assert lines[at + 2] == "    directory"
