"""What ``edge-recorder`` says when something is wrong: one line and a sysexits code, never a traceback.

The cases run the real command in a subprocess, as an installer types it: doctor into a pipe that
``head`` closes, ``run --simulate`` with a bad scenario, a missing WAV or one at 48 kHz (which
records, converted to the config's rate), a state directory and a config of the recorder's user
(run as ``nobody`` with ``setpriv``: ``run`` names the user to run as, doctor hints at it), and
paths that are missing or cannot be written. A bug (a check made to raise, in this process) is one
line too, and shows its traceback only with ``-v``.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from firmware.cli import doctor as doctor_cmd
from firmware.cli import run as run_cmd
from firmware.cli.main import main
from tests.test_doctor import parse

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "firmware.cli.main"]
SETPRIV = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups")


def cli(*args, cwd: Path | None = None, prefix: tuple[str, ...] = (), timeout: float = 120):
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [*prefix, *CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


def tone(path: Path, seconds: float, rate: int, hz: float = 1000.0, peak: float = 0.3) -> Path:
    t = np.arange(round(seconds * rate)) / rate
    sf.write(path, np.round(peak * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16), rate, subtype="PCM_16")
    return path


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The command's error line; the assertion fails on a traceback or more than one line."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("edge-recorder: error: ")]
    assert len(lines) == 1, result.stderr
    return lines[0].removeprefix("edge-recorder: error: ")


# -- a closed pipe --------------------------------------------------------------------------------------------


def test_doctor_into_head_ends_quietly_when_head_has_its_line(tmp_path):
    """``edge-recorder doctor | head -1``: head exits after the first line while doctor still measures."""
    wav = tone(tmp_path / "tone.wav", 2, 16000)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[spool]\ndirectory = "{tmp_path}/state/spool"\n[catalog]\npath = "{tmp_path}/state/catalog.sqlite3"\n'
        f'[sim]\nenabled = true\naudio = "{wav}"\npace = "realtime"\n'  # the level takes a real second
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    with (tmp_path / "stderr").open("w+") as stderr:
        doctor = subprocess.Popen(
            [*CLI, "doctor", "--config", str(config), "--seconds", "1"], stdout=subprocess.PIPE, stderr=stderr, env=env
        )
        head = subprocess.run(["head", "-1"], stdin=doctor.stdout, capture_output=True, text=True, timeout=60)
        doctor.stdout.close()  # head's end of the pipe is the only reader left, and it has gone
        code = doctor.wait(timeout=60)
        stderr.seek(0)
        said = stderr.read()
    assert head.stdout.startswith("PASS  config ")
    assert "Traceback" not in said and "BrokenPipeError" not in said and "Exception ignored" not in said, said
    assert code in (0, 141), said


# -- run --simulate -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scenario", "message"),
    [
        (
            "1=jump",
            "scenario item '1=jump': unknown action 'jump'; "
            "expected one of button, button-hold, pause-button, hook:off, hook:on",
        ),
        # The default box has a record button only: no hook switch, no pause button to drive.
        ("1=hook:off", "scenario item '1=hook:off': needs [gpio] hook_switch to be wired (set its pin)"),
        ("1=pause-button", "scenario item '1=pause-button': needs [gpio] pause_button to be wired (set its pin)"),
        ("1e999=button", "scenario item 'inf=button': the time must be a finite number of seconds"),
    ],
)
def test_a_scenario_the_box_cannot_play_is_one_line_naming_the_item(tmp_path, scenario, message):
    wav = tone(tmp_path / "tone.wav", 1, 16000)
    result = cli("run", "--simulate", "--fast", "--audio", wav, "--scenario", scenario, "--state-dir", tmp_path / "s")
    assert result.returncode == 78
    assert one_error_line(result) == f"[sim] scenario = {scenario!r}: {message}"
    assert not (tmp_path / "s" / "spool").exists()


def test_a_missing_wav_is_one_line_naming_it_with_exit_66(tmp_path):
    result = cli("run", "--simulate", "--fast", "--audio", "nope.wav", "--state-dir", tmp_path / "s", cwd=tmp_path)
    assert result.returncode == 66
    assert one_error_line(result) == "[sim] audio: nope.wav: no such file"


def test_a_48_khz_wav_is_recorded_at_the_configured_rate(tmp_path):
    """3 s of a 1 kHz tone at 48 kHz, the button pressed at 0.5 s, the box at 8 kHz: 2.5 s of that tone at 8 kHz.

    Taken sample for sample at the file's rate, the recording would be six times as long and its tone 167 Hz."""
    wav = tone(tmp_path / "tone48k.wav", 3, 48000)
    config = tmp_path / "box.toml"
    config.write_text('[audio]\nsample_rate = 8000\n[recording]\nsample_rate = 8000\nformat = "wav"\n')
    events = tmp_path / "events.jsonl"
    result = cli(
        "run", "--simulate", "--fast", "--config", config, "--audio", wav, "--scenario", "0.5=button",
        "--state-dir", tmp_path / "s", "--events", events,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "at 8000 Hz, 1 channel(s)" in result.stderr  # the capture serves the converted audio
    [done] = [e["data"] for e in map(json.loads, events.read_text().splitlines()) if e["type"] == "recording.finished"]
    assert done["status"] == "completed" and done["sample_rate"] == 8000
    assert done["duration"] == pytest.approx(2.5, abs=0.1)
    audio, rate = sf.read(tmp_path / "s" / "spool" / f"{done['id']}.wav", dtype="int16")
    assert rate == 8000 and len(audio) == round(done["duration"] * 8000)
    spectrum = np.abs(np.fft.rfft(audio.astype(np.float64) * np.hanning(len(audio))))
    assert np.fft.rfftfreq(len(audio), 1 / rate)[spectrum.argmax()] == pytest.approx(1000, abs=2)
    assert np.abs(audio).max() == pytest.approx(0.3 * 32767, rel=0.05)
    assert not [p for p in Path(tempfile.gettempdir()).glob("edge-recorder-sim-*")], "the converted copy is left"


# -- files another user owns ----------------------------------------------------------------------------------


@pytest.fixture
def shared_tmp():
    """A folder under the system's temporary folder that ``nobody`` may enter (pytest's own are root's only)."""
    path = Path(tempfile.mkdtemp(prefix="edge-recorder-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def as_nobody() -> tuple[str, ...]:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run a command as nobody")
    if subprocess.run([*SETPRIV, sys.executable, "-c", "import numpy"], capture_output=True).returncode != 0:
        pytest.skip("nobody may not run this interpreter")
    return SETPRIV


def recorder_user() -> pwd.struct_passwd:
    """A system user other than nobody to play the recorder's user (the box has edge-recorder)."""
    for name in ("edge-recorder", "daemon", "bin"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    pytest.skip("no system user to own the state directory")


@pytest.mark.parametrize("audio", [True, False], ids=["given-wav", "demo-call"])
def test_a_state_directory_of_the_recorder_s_user_says_to_run_as_that_user(shared_tmp, audio):
    """As ``pi`` on a box: /var/lib/edge-recorder is edge-recorder's, 0700. The line names the folder and the
    command to run instead; exit 77 (EX_NOPERM)."""
    prefix = as_nobody()
    owner = recorder_user()
    state = shared_tmp / "state"
    state.mkdir(mode=0o700)
    os.chown(state, owner.pw_uid, owner.pw_gid)
    args = ["run", "--simulate", "--fast", "--state-dir", str(state)]
    if audio:
        args[3:3] = ["--audio", str(tone(shared_tmp / "tone.wav", 1, 16000))]
    result = cli(*args, cwd=shared_tmp, prefix=prefix)
    assert result.returncode == 77, result.stderr
    line = one_error_line(result)
    blocked = state / ("spool" if audio else "demo-call.wav")
    sudo = f"sudo -u {owner.pw_name} edge-recorder {' '.join(args)}"
    assert line == f"{blocked}: permission denied for nobody; run it as {owner.pw_name} ({sudo})"
    assert list(state.iterdir()) == []


def test_doctor_as_another_user_hints_to_run_it_as_the_recorder_s_user(shared_tmp):
    """On a box the config is root:edge-recorder 0640 and /var/lib/edge-recorder is edge-recorder's, 0700:
    doctor run as someone else cannot read them, and says to run it as the recorder's user instead."""
    prefix = as_nobody()
    recorder = recorder_user()
    wav = tone(shared_tmp / "tone.wav", 1, 16000)
    state = shared_tmp / "state"
    state.mkdir(mode=0o700)
    os.chown(state, recorder.pw_uid, recorder.pw_gid)
    config = shared_tmp / "config.toml"
    config.write_text(
        f'[spool]\ndirectory = "{state}/spool"\n[catalog]\npath = "{state}/catalog.sqlite3"\n'
        f'[sim]\nenabled = true\naudio = "{wav}"\npace = "fast"\n'
    )
    again = f"sudo -u {recorder.pw_name} edge-recorder doctor --config {config}"
    hint = f"run doctor as the recorder's user, {recorder.pw_name} (the unit's User=), who may: {again}"

    config.chmod(0o644)  # the config is readable: the state directory is not
    result = cli("doctor", "--config", config, "--seconds", 0.2, cwd=shared_tmp, prefix=prefix)
    assert "Traceback" not in result.stderr, result.stderr
    checks = parse(result.stdout)
    assert checks["spool"]["status"] == "FAIL" and checks["spool"]["hint"] == hint
    assert checks["catalog"] == {
        "status": "FAIL",
        "detail": f"{state}/catalog.sqlite3: permission denied: this user may not read and write it",
        "hint": hint,
    }
    assert checks["provisioning"] == {
        "status": "WARN",
        "detail": f"not checked: this user may not read {state}/provision-error",
        "hint": hint,
    }

    os.chown(config, 0, recorder.pw_gid)
    config.chmod(0o640)  # as provisioning installs it: root and the recorder's group
    result = cli("doctor", "--config", config, "--seconds", 0.2, cwd=shared_tmp, prefix=prefix)
    assert "Traceback" not in result.stderr, result.stderr
    checks = parse(result.stdout)
    assert checks["config"]["status"] == "FAIL" and "Permission denied" in checks["config"]["detail"]
    assert checks["config"]["hint"] == hint


# -- paths that are missing or cannot be written --------------------------------------------------------------


def test_an_events_file_in_a_missing_folder_is_one_line(tmp_path):
    wav = tone(tmp_path / "tone.wav", 1, 16000)
    events = tmp_path / "no-such-folder" / "events.jsonl"
    result = cli("run", "--simulate", "--fast", "--audio", wav, "--state-dir", tmp_path / "s", "--events", events)
    assert result.returncode == 73
    assert one_error_line(result) == f"--events {events}: No such file or directory"


def test_a_state_directory_under_a_file_is_one_line(tmp_path):
    (tmp_path / "a-file").write_text("not a folder\n")
    state = tmp_path / "a-file" / "state"
    result = cli("run", "--simulate", "--fast", "--state-dir", state)
    assert result.returncode == 73
    assert one_error_line(result) == f"{state}: Not a directory"


# -- a bug ----------------------------------------------------------------------------------------------------


def test_a_bug_is_one_line_asking_for_v_and_v_shows_the_traceback(tmp_path, monkeypatch, capsys):
    def broken_clock():
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(doctor_cmd, "check_clock", broken_clock)
    wav = tone(tmp_path / "tone.wav", 1, 16000)
    config = tmp_path / "config.toml"
    config.write_text(f'[spool]\ndirectory = "{tmp_path}/state/spool"\n[sim]\nenabled = true\naudio = "{wav}"\n')

    assert main(["doctor", "--config", str(config), "--seconds", "0.2"]) == 70
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (
        "edge-recorder: error: unexpected ZeroDivisionError: division by zero (a bug); "
        "rerun with -v for the traceback: edge-recorder -v doctor ..."
    )

    assert main(["-v", "doctor", "--config", str(config), "--seconds", "0.2"]) == 70
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in broken_clock" in err
    assert err.splitlines()[-1] == "edge-recorder: error: unexpected ZeroDivisionError (a bug): the traceback is above"


def test_a_bug_in_the_daemon_leaves_its_traceback_in_the_journal_without_v(tmp_path, monkeypatch, capsys):
    """The daemon's stderr is the journal: a bug there is read from its traceback, asked for or not."""

    class Broken:
        def __init__(self, *args, **kwargs):
            raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(run_cmd, "Box", Broken)
    wav = tone(tmp_path / "tone.wav", 1, 16000)
    umask = os.umask(0o022)  # run sets the daemon's own, which this process must not keep for the tests after
    try:
        code = main(["run", "--simulate", "--audio", str(wav), "--fast", "--state-dir", str(tmp_path / "state")])
    finally:
        os.umask(umask)
    assert code == 70
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ZeroDivisionError" in err


# -- the demo -------------------------------------------------------------------------------------------------


def test_the_local_demo_does_not_ask_to_install_an_installed_mosquitto(tmp_path):
    result = cli("demo", "--local", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--local: no broker and no receiver" in result.stderr
    if shutil.which("mosquitto") or os.access("/usr/sbin/mosquitto", os.X_OK):
        assert "install mosquitto" not in result.stderr
