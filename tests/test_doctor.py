"""``edge-recorder doctor`` on real parts: WAV and real-ALSA capture (its file plugin), a real ALSA loop from a
playback PCM back to a capture PCM (below), mock GPIO pins, a spool and a catalog in the test's directory, a real
Mosquitto, a real HTTP receiver and a real S3 server (SeaweedFS) on loopback, and the machine's own clock."""

from __future__ import annotations

import argparse
import ctypes
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from http import HTTPStatus
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import soundfile as sf

from firmware import config as cfg
from firmware import provision
from firmware.catalog import MIGRATIONS, Catalog
from firmware.cli import doctor as doctor_cmd
from firmware.daemon.system import clock_synchronized
from hal.gpio import Panel
from tests import signals as sig
from tests.alsa_file import SYSTEM_ALSA_CONF, alsa_file_device
from tests.http_servers import FlakyHttpServer, Received
from tests.seaweed import SeaweedS3, free_ports

REPO = Path(__file__).resolve().parents[1]
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2  # <linux/prctl.h>, <linux/capability.h>
R = 16000
NAMES = [
    "config",
    "capture device",
    "input level",
    "dtmf loop",
    "gpio",
    "spool",
    "catalog",
    "provisioning",
    "encryption",
    "broker",
    "commands",
    "upload",
    "clock",
]
CLOCK = "PASS" if clock_synchronized() else "WARN"


def tone(seconds: float, rate: int = R, peak_dbfs: float = -20.0) -> np.ndarray:
    """A 1 kHz sine whose peak is at ``peak_dbfs`` (its samples reach the peak: 1 kHz divides both rates)."""
    t = np.arange(round(seconds * rate)) / rate
    return np.round(32768 * 10 ** (peak_dbfs / 20) * np.sin(2 * np.pi * 1000 * t))


def write_wav(path, *channels: np.ndarray, rate: int = R):
    frames = np.clip(np.stack(channels, axis=1), -32768, 32767).astype(np.int16)
    sf.write(path, frames, rate, subtype="PCM_16")
    return path


def write_config(tmp_path, **sections: dict) -> str:
    """A config file whose spool and catalog are in ``tmp_path``, with ``sections`` on top."""
    merged: dict[str, dict] = {
        "spool": {"directory": str(tmp_path / "state" / "spool")},
        "catalog": {"path": str(tmp_path / "state" / "catalog.sqlite3")},
    }
    for name, keys in sections.items():
        merged.setdefault(name, {}).update(keys)
    lines = []
    for name, keys in merged.items():
        lines += [f"[{name}]", *(f"{key} = {json.dumps(value)}" for key, value in keys.items())]
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def sim_config(tmp_path, wav, **sections: dict) -> str:
    """A simulated box hearing ``wav`` as fast as it is read."""
    sim = {"enabled": True, "audio": str(wav), "pace": "fast", **sections.pop("sim", {})}
    return write_config(tmp_path, sim=sim, **sections)


def doctor(*argv) -> int:
    parser = argparse.ArgumentParser(prog="edge-recorder")
    doctor_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["doctor", *map(str, argv)])
    return args.run(args)


def parse(out: str) -> dict[str, dict[str, str]]:
    """The checks of doctor's text output by name, in order: status, detail and hint."""
    checks: dict[str, dict[str, str]] = {}
    for line in out.splitlines():
        if line[:4] in ("PASS", "WARN", "FAIL", "SKIP"):
            name = line[6:20].strip()
            checks[name] = {"status": line[:4], "detail": line[22:], "hint": ""}
        elif line.startswith(" " * 22 + "hint: "):
            checks[name]["hint"] = line[28:]
    return checks


def levels(detail: str) -> list[tuple[float, float]]:
    """(RMS, peak) in dBFS of each channel in the input level's detail."""
    found = re.findall(r"RMS (-?[\d.]+|-inf) dBFS, peak (-?[\d.]+|-inf) dBFS", detail)
    return [(float(rms), float(peak)) for rms, peak in found]


# -- the whole self-test --------------------------------------------------------------------------------------


def test_a_simulated_box_hearing_a_minus_20_dbfs_tone_passes_and_reads_its_level(tmp_path, capsys):
    config = sim_config(tmp_path, write_wav(tmp_path / "tone.wav", tone(1.5)))
    assert doctor("--config", config, "--seconds", 1) == 0
    checks = parse(capsys.readouterr().out)
    assert list(checks) == NAMES
    assert {name: c["status"] for name, c in checks.items()} == {
        **dict.fromkeys(NAMES, "PASS"),
        "dtmf loop": "SKIP",  # no playback device
        "broker": "WARN",  # delivery is off here
        "upload": "SKIP",
        "clock": CLOCK,
    }
    assert "16000 Hz, 1 ch, 320-frame periods (20 ms)" in checks["capture device"]["detail"]
    [(rms, peak)] = levels(checks["input level"]["detail"])
    assert peak == pytest.approx(-20, abs=0.2) and rms == pytest.approx(-23, abs=1)
    assert "over 1.0 s" in checks["input level"]["detail"]
    assert "record_button 17, led 27" in checks["gpio"]["detail"] and "mock pins" in checks["gpio"]["detail"]
    assert (
        "can be created and written" in checks["spool"]["detail"]
        and "hours of 16000 Hz mono audio" in checks["spool"]["detail"]
    )
    assert "not created yet" in checks["catalog"]["detail"]
    assert not (tmp_path / "state" / "catalog.sqlite3").exists()
    # The spool directory the check made is gone again: the daemon creates it with its own owner.
    assert not (tmp_path / "state").exists()


def test_json_output_parses_and_says_what_the_text_says(tmp_path, capsys):
    config = sim_config(tmp_path, write_wav(tmp_path / "tone.wav", tone(1)))
    assert doctor("--config", config, "--seconds", 1) == 0
    text = parse(capsys.readouterr().out)
    assert doctor("--config", config, "--seconds", 1, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert [c["name"] for c in report["checks"]] == NAMES
    assert all(set(c) == {"name", "status", "detail", "hint"} for c in report["checks"])
    for check in report["checks"]:
        assert check["status"] == text[check["name"]]["status"]
        assert check["detail"] == text[check["name"]]["detail"] or check["name"] == "spool"  # free space moves


def test_a_silent_input_warns_of_no_signal(tmp_path, capsys):
    hiss = sig.noise(1, R, -70)
    assert doctor("--config", sim_config(tmp_path, write_wav(tmp_path / "quiet.wav", hiss)), "--seconds", 1) == 0
    level = parse(capsys.readouterr().out)["input level"]
    assert level["status"] == "WARN" and "no signal" in level["detail"]
    assert level["hint"] == "no signal: check the cable / input gain"


def test_a_clipping_input_warns_to_lower_the_gain(tmp_path, capsys):
    loud = tone(1, peak_dbfs=+6)  # twice full scale: flattened at both rails
    assert doctor("--config", sim_config(tmp_path, write_wav(tmp_path / "loud.wav", loud)), "--seconds", 1) == 0
    level = parse(capsys.readouterr().out)["input level"]
    assert level["status"] == "WARN" and "clipping" in level["detail"]
    assert levels(level["detail"])[0][1] == pytest.approx(0, abs=0.01)
    assert "lower the input gain" in level["hint"]


def test_a_capture_device_that_does_not_exist_fails_naming_it(tmp_path, capsys):
    config = write_config(tmp_path, audio={"capture": "hw:CARD=Nope,DEV=0"}, gpio={"enabled": False})
    assert doctor("--config", config, "--seconds", 1) == 1
    out = capsys.readouterr().out
    checks = parse(out)
    capture = checks["capture device"]
    assert capture["status"] == "FAIL" and "'hw:CARD=Nope,DEV=0'" in capture["detail"]
    assert "edge-recorder devices" in capture["hint"] and "plughw:CARD=" in capture["hint"]
    assert "plugged in" in capture["hint"]
    assert checks["input level"]["status"] == "WARN" and "not measured" in checks["input level"]["detail"]
    assert checks["gpio"] == {"status": "PASS", "detail": "disabled ([gpio] enabled = false)", "hint": ""}
    assert out.splitlines()[-1].endswith("1 failed: fix the FAIL lines and run edge-recorder doctor again")


@pytest.mark.parametrize("simulated", [True, False], ids=["sim-alsa-frames", "audio-capture"])
def test_capture_through_real_alsa_reports_each_channels_level(tmp_path, monkeypatch, capsys, simulated):
    rate = 8000
    wav = write_wav(tmp_path / "line.wav", tone(1.5, rate, -20), tone(1.5, rate, -30), rate=rate)
    alsa = alsa_file_device(tmp_path, wav)
    monkeypatch.setenv("ALSA_CONFIG_PATH", alsa.env["ALSA_CONFIG_PATH"])
    audio = {"capture": alsa.device, "sample_rate": rate, "channels": 2}
    if simulated:  # [sim] frames ends the input: the meter stops there, before its 2 seconds
        config = write_config(tmp_path, audio=audio, sim={"enabled": True, "capture": "alsa", "frames": alsa.frames})
    else:  # the file plugin never ends (it returns junk after the file): measure less than the file holds
        config = write_config(tmp_path, audio=audio, gpio={"enabled": False})
    assert doctor("--config", config, "--seconds", 2 if simulated else 1) == 0
    checks = parse(capsys.readouterr().out)
    assert checks["capture device"]["status"] == "PASS"
    assert checks["capture device"]["detail"].startswith("ALSA edgefile: 8000 Hz, 2 ch, 160-frame periods")
    level = checks["input level"]
    assert level["status"] == "PASS"
    [(in_rms, in_peak), (out_rms, out_peak)] = levels(level["detail"])
    assert in_peak == pytest.approx(-20, abs=0.2) and in_rms == pytest.approx(-23, abs=1)
    assert out_peak == pytest.approx(-30, abs=0.2) and out_rms == pytest.approx(-33, abs=1)
    assert level["detail"].startswith("inbound: RMS") and "; outbound: RMS" in level["detail"]
    if simulated:
        assert "over 1.5 s (the input ended)" in level["detail"]
    else:
        assert "over 1.0 s" in level["detail"] and "ended" not in level["detail"]


def test_a_bad_config_fails_its_line_and_the_rest_runs_on_the_defaults(tmp_path, capsys):
    path = tmp_path / "config.toml"
    path.write_text("[audio]\nsample_rate = 44100\n")
    assert doctor("--config", path, "--seconds", 1) == 1
    checks = parse(capsys.readouterr().out)
    assert list(checks) == NAMES
    config = checks["config"]
    assert config["status"] == "FAIL" and "[audio] sample_rate = 44100: expected 8000 or 16000" in config["detail"]
    assert "the checks below use the defaults" in config["detail"] and config["hint"]
    assert all(c["detail"].endswith("[default config]") for name, c in checks.items() if name != "config")
    assert "plughw:CARD=Device,DEV=0" in checks["capture device"]["detail"]


def test_a_spool_that_cannot_be_created_fails_with_a_hint(tmp_path, capsys):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a regular file: nothing can be created under it, not even by root\n")
    spool = blocker / "spool"
    config = sim_config(tmp_path, write_wav(tmp_path / "tone.wav", tone(1)), spool={"directory": str(spool)})
    assert doctor("--config", config, "--seconds", 1) == 1
    checks = parse(capsys.readouterr().out)
    assert checks["spool"]["status"] == "FAIL"
    assert checks["spool"]["detail"] == f"cannot use {spool}: Not a directory"
    assert "[spool] directory" in checks["spool"]["hint"] and "install -d -o edge-recorder" in checks["spool"]["hint"]
    assert [name for name, c in checks.items() if c["status"] == "FAIL"] == ["spool"]


# -- single checks --------------------------------------------------------------------------------------------


def test_the_meter_stops_after_the_seconds_asked_and_is_paced_by_the_capture(tmp_path, capsys):
    config = sim_config(tmp_path, write_wav(tmp_path / "long.wav", tone(5)), sim={"pace": "realtime"})
    started = time.monotonic()
    assert doctor("--config", config, "--seconds", 0.5) == 0
    took = time.monotonic() - started
    level = parse(capsys.readouterr().out)["input level"]
    assert "over 0.5 s" in level["detail"] and "ended" not in level["detail"]
    assert 0.45 < took < 3


def test_on_a_terminal_the_meter_redraws_a_bar_then_prints_the_summary(tmp_path, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stdout", terminal)
    assert doctor("--config", sim_config(tmp_path, write_wav(tmp_path / "tone.wav", tone(1))), "--seconds", 1) == 0
    out = terminal.getvalue()
    # RMS -23 dBFS on a -60..0 dBFS scale of 30 characters: 18 filled, redrawn about 10 times.
    bar = "\r....  input level     [" + "#" * 18 + "-" * 12 + "]  -23.0 dBFS"
    assert 8 <= out.count(bar) <= 11
    assert "\r\x1b[K" + "PASS  input level     RMS -23.0 dBFS" in out


def test_without_a_terminal_there_is_no_bar(tmp_path, capsys):
    assert doctor("--config", sim_config(tmp_path, write_wav(tmp_path / "tone.wav", tone(1))), "--seconds", 1) == 0
    out = capsys.readouterr().out
    assert "\r" not in out and "#" not in out


def test_the_record_button_check_sees_a_press_on_the_pins(tmp_path):
    with Panel(record_button=17, led=27, pin_factory="mock") as panel:

        def press():
            time.sleep(0.05)
            panel.drive("record_button", True)
            time.sleep(0.1)
            panel.drive("record_button", False)

        presser = threading.Thread(target=press)
        presser.start()
        check = doctor_cmd.check_press(panel, timeout=5)
        presser.join()
        assert check.status is doctor_cmd.Status.PASS and check.detail.startswith("pressed after 0.")

        check = doctor_cmd.check_press(panel, timeout=0.1)
        assert check.status is doctor_cmd.Status.FAIL and check.detail == "no press in 0.1 s"
        assert "active_high" in check.hint


def test_gpio_without_a_working_pin_factory_fails_with_a_hint():
    config = cfg.defaults().replace(gpio={"pin_factory": "no-such-factory"})
    check, panel = doctor_cmd.check_gpio(config)
    assert panel is None and check.status is doctor_cmd.Status.FAIL
    assert "'no-such-factory' is unknown" in check.detail
    assert "[gpio] pin_factory" in check.hint and "enabled = false" in check.hint


# What lgpio does when gpiozero's LGPIOFactory loads it: its C library makes the notification pipe in $LG_WD
# (else the working directory), its Python module opens that pipe by a name relative to the working directory.
# The mock factory does the same here, so a doctor run shows where the pipes of a real lgpio would go.
LGPIO_LIKE_RUN = """
import json, os, sys
from gpiozero.pins.mock import MockFactory
import hal.gpio.panel

class LgpioLikeFactory(MockFactory):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        os.mkfifo(os.path.join(os.environ.get("LG_WD", os.getcwd()), ".lgd-nfy0"))
        os.close(os.open(".lgd-nfy0", os.O_RDONLY | os.O_NONBLOCK))
        seen = {"cwd": os.getcwd(), "LG_WD": os.environ.get("LG_WD"), "files": sorted(os.listdir("."))}
        with open(os.environ["SEEN"], "w") as f:
            json.dump(seen, f)

hal.gpio.panel.MockFactory = LgpioLikeFactory
try:
    open("probe", "w")
except PermissionError:
    print("probe: denied", file=sys.stderr)
from firmware.cli.main import main
sys.exit(main(["doctor", "--config", sys.argv[1], "--seconds", "0.2"]))
"""


def without_root_file_access() -> None:
    """In the child before exec: drop the capabilities that let root ignore file modes (as for any user)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_doctor_run_from_a_folder_it_cannot_write_claims_the_pins_from_a_temporary_one(tmp_path):
    """``sudo -u edge-recorder edge-recorder doctor`` from /home/pi: lgpio's pipes cannot go in /home/pi.

    doctor runs in a subprocess whose working directory is a 0555 folder. An ordinary user may not write
    there; root may, through CAP_DAC_OVERRIDE. So when the tests run as root, the subprocess drops that
    capability (and CAP_DAC_READ_SEARCH) from its bounding set before it execs, and root's new program
    gets the file-mode checks any user gets. (Not a switch to another user: the venv's interpreter may
    live under /root, where no other user may reach it.) The run first proves that it cannot write
    there. The mock pin factory behaves as lgpio does (``LGPIO_LIKE_RUN``): it fails unless doctor moved
    to a writable temporary folder and pointed LG_WD there; the folder is gone once doctor has finished.
    """
    home, tmp = tmp_path / "home-pi", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    home.chmod(0o555)
    config = sim_config(tmp_path, write_wav(tmp_path / "tone.wav", tone(0.5)))
    seen = tmp_path / "seen.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1", "TMPDIR": str(tmp), "SEEN": str(seen)}
    env.pop("LG_WD", None)

    done = subprocess.run(
        [sys.executable, "-c", LGPIO_LIKE_RUN, config],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=without_root_file_access if os.geteuid() == 0 else None,
    )

    home.chmod(0o755)
    assert "probe: denied" in done.stderr, f"the folder was writable after all: {done.stderr}"
    gpio = parse(done.stdout)["gpio"]
    assert gpio["status"] == "PASS", done.stdout + done.stderr
    assert "mock pins" in gpio["detail"]
    where = json.loads(seen.read_text())
    work = Path(where["cwd"])
    assert work.parent == tmp and work.name.startswith("edge-recorder-doctor-")
    assert where["LG_WD"] == str(work)
    assert where["files"] == [".lgd-nfy0"]  # the pipe, where the Python side opens it
    assert list(home.iterdir()) == []
    assert list(tmp.iterdir()) == []  # removed when doctor was done


def test_a_writable_working_directory_is_kept_for_the_gpio_checks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LG_WD", "/run/elsewhere")
    with doctor_cmd.gpio_working_directory() as work:
        assert work is None and Path.cwd() == tmp_path
        assert os.environ["LG_WD"] == "/run/elsewhere"
    assert Path.cwd() == tmp_path


@pytest.mark.parametrize("code", ["provision_rejected", "provision_failed", "provision_left_secrets"])
def test_the_provisioning_hint_fits_what_provisioning_left(tmp_path, monkeypatch, code):
    """Only a rejection leaves edge-recorder.toml.error.txt on the card; the other two need their own fix."""
    root, boot = tmp_path / "root", tmp_path / "boot"
    (root / "etc/edge-recorder").mkdir(parents=True)
    boot.mkdir()
    text = '[device]\nid = "front-desk-3"\n'
    if code == "provision_rejected":
        text = "[audio]\nsample_rate = 44100\n"
    elif code == "provision_failed":
        shutil.rmtree(root / "etc/edge-recorder")
        (root / "etc/edge-recorder").write_text("not a folder")
    else:
        monkeypatch.setattr(provision, "_wipe", lambda path: path.name != provision.REQUEST)
    (boot / provision.REQUEST).write_text(text)
    provision.provision([boot], root)
    config = cfg.load(write_config(tmp_path))  # its state directory: tmp_path/state
    (tmp_path / "state").mkdir()
    shutil.copy(root / "var/lib/edge-recorder/provision-error", tmp_path / "state/provision-error")

    check = doctor_cmd.check_provisioning(config)

    assert check.status is doctor_cmd.Status.FAIL
    assert json.loads((tmp_path / "state/provision-error").read_text())["code"] == code
    assert ("error.txt" in check.hint) == (boot / provision.ERROR_TEXT).exists()
    if code == "provision_rejected":
        assert check.hint == (
            f"fix {boot / provision.REJECTED} as edge-recorder.toml.error.txt beside it says, "
            "rename it back to edge-recorder.toml and reboot"
        )
        assert "44100" in check.detail and check.detail.endswith("(the box runs on its previous config)")
    elif code == "provision_failed":
        assert "/etc/edge-recorder is a folder root can write" in check.hint
        assert f"then reboot: {boot / provision.REQUEST} is still there" in check.hint
        assert (boot / provision.REQUEST).exists()  # as the hint says
        assert check.detail.endswith("(the box runs on its previous config)")
    else:
        assert "delete the files named above from the boot partition" in check.hint
        assert check.hint.endswith(f"then sudo rm {tmp_path / 'state/provision-error'}")
        assert str(boot / provision.REQUEST) in check.detail and check.detail.endswith("(the new config is in use)")


@pytest.mark.parametrize(("share", "status"), [(None, "PASS"), (5, "WARN"), (0.5, "FAIL")])
def test_the_spool_check_compares_free_space_with_min_free_mb(tmp_path, share, status):
    free_mb = shutil.disk_usage(tmp_path).free // doctor_cmd.MB
    if share is not None and free_mb / share > 1 << 20:
        pytest.skip("more free space than min_free_mb can express")
    min_free_mb = 0 if share is None else round(free_mb / share)
    config = cfg.defaults().replace(spool={"directory": str(tmp_path), "min_free_mb": min_free_mb})
    check = doctor_cmd.check_spool(config)
    assert check.status.value == status
    hours = float(re.search(r"about ([\d,.]+) hours", check.detail).group(1).replace(",", ""))
    usable_mb = max(0, free_mb - min_free_mb)
    assert hours == pytest.approx(usable_mb * doctor_cmd.MB / (16000 * 2 * 3600), rel=0.01, abs=0.1)
    assert list(tmp_path.iterdir()) == []  # the probe file is gone


def test_the_catalog_check_opens_an_existing_catalog_and_fails_a_corrupt_one(tmp_path):
    path = tmp_path / "catalog.sqlite3"
    config = cfg.defaults().replace(catalog={"path": str(path)})
    Catalog(path).close()
    check = doctor_cmd.check_catalog(config)
    assert check.status is doctor_cmd.Status.PASS and check.detail.endswith(
        f"integrity ok, schema version {len(MIGRATIONS)}"
    )

    for extra in ("-wal", "-shm"):
        path.with_name(path.name + extra).unlink(missing_ok=True)
    path.write_bytes(b"this is not a database, " * 200)
    check = doctor_cmd.check_catalog(config)
    assert check.status is doctor_cmd.Status.FAIL and "not a database" in check.detail
    assert "rebuilds it from the spool" in check.hint


def test_the_clock_check_warns_but_does_not_fail_when_not_synchronised():
    check = doctor_cmd.check_clock()
    assert check.status.value == CLOCK
    if check.status is doctor_cmd.Status.WARN:
        assert "systemd-timesyncd" in check.hint and "recordings store whether" in check.hint


def test_seconds_must_be_a_positive_number():
    parser = argparse.ArgumentParser()
    doctor_cmd.add_parser(parser.add_subparsers())
    assert parser.parse_args(["doctor"]).seconds == 5
    for bad in ("0", "-1", "soon"):
        with pytest.raises(SystemExit):
            parser.parse_args(["doctor", "--seconds", bad])


def test_the_broker_check_says_when_delivery_is_off_and_when_the_broker_answers(tmp_path, broker):
    off = doctor_cmd.check_broker(cfg.defaults())
    assert off.status is doctor_cmd.Status.WARN and "delivery is off" in off.detail
    ok = doctor_cmd.check_broker(cfg.parse({"mqtt": {"url": broker.url}}))
    assert ok.status is doctor_cmd.Status.PASS and "connected and authorised" in ok.detail
    broker.stop()
    down = doctor_cmd.check_broker(cfg.parse({"mqtt": {"url": broker.url}}), timeout=2)
    assert down.status is doctor_cmd.Status.FAIL and "Connection refused" in down.detail


def test_the_broker_check_fails_on_wrong_credentials(tmp_path):
    from .broker import Broker

    locked = Broker(tmp_path / "locked", users={"er-box": "right"}).start()
    try:
        config = cfg.parse({"mqtt": {"url": locked.url, "username": "er-box", "password": "wrong"}})
        check = doctor_cmd.check_broker(config)
        assert check.status is doctor_cmd.Status.FAIL and "refused" in check.detail and "password" in check.hint
    finally:
        locked.stop()


# -- the DTMF loop --------------------------------------------------------------------------------------------
#
# A real loop through alsa-lib, in one process: the playback PCM is ALSA's `file` plugin writing what is played
# into a FIFO (its slave, `null`, discards it), and the capture PCM is the `file` plugin reading its audio from the
# same FIFO (`infile`). So the key doctor plays goes through AlsaPlayback, alsa-lib (a `route` plugin sets the
# loop's gain and channel, as a mixer and a cable would), back through AlsaCapture, into the core's detector.
# What is not real is the cable's timing: neither plugin is paced by a clock and the FIFO adds no latency or noise,
# so the doctor's margin for a real interface's latency is not exercised here. The test holds the FIFO open for
# reading and writing (the "cable"): opening a FIFO from one side blocks until the other side opens it, and
# pyalsaaudio holds the GIL while alsa-lib opens the file, so without it the process would hang. It also makes a
# capture that reads more than was played block rather than end: doctor reads exactly as much as it plays, and
# should it ever read more, the fixture feeds the line silence after LINE_PATIENCE seconds so the test fails
# rather than hangs.

LINE_PATIENCE = 20.0


class AlsaLoop(NamedTuple):
    playback: str
    capture: str
    line: int  # the FIFO's fd, held for reading and writing: audio written here is captured before what is played


def alsa_loop(tmp_path, monkeypatch, *, channels: int = 1, onto: int = 0, gain: float = 1.0) -> AlsaLoop:
    """A playback PCM whose mono output comes back on channel ``onto`` of a ``channels``-channel capture PCM."""
    fifo = tmp_path / "line.fifo"
    os.mkfifo(fifo)
    conf = tmp_path / "loop.asound.conf"
    conf.write_text(
        f"<{SYSTEM_ALSA_CONF}>\n"
        "pcm.edgeloop_line {\n"
        "    type file\n"
        '    slave.pcm "null"\n'
        f'    file "{fifo}"\n'
        '    format "raw"\n'
        "}\n"
        "pcm.edgeloop_out {\n"
        "    type route\n"
        f'    slave {{ pcm "edgeloop_line" channels {channels} }}\n'
        f"    ttable.0.{onto} {gain}\n"
        "}\n"
        "pcm.edgeloop_in {\n"
        "    type file\n"
        '    slave.pcm "null"\n'
        '    file "/dev/null"\n'
        f'    infile "{fifo}"\n'
        '    format "raw"\n'
        "}\n"
    )
    monkeypatch.setenv("ALSA_CONFIG_PATH", str(conf))
    return AlsaLoop("edgeloop_out", "edgeloop_in", os.open(fifo, os.O_RDWR))


@pytest.fixture
def loop_factory(tmp_path, monkeypatch):
    """Makes the test's ALSA loop (``alsa_loop``'s arguments) and takes it down after the test."""
    made: list[tuple[AlsaLoop, threading.Thread]] = []
    done = threading.Event()

    def make(**kwargs) -> AlsaLoop:
        loop = alsa_loop(tmp_path, monkeypatch, **kwargs)
        feeder = threading.Thread(target=_silence_after_patience, args=(loop.line, done), daemon=True)
        feeder.start()
        made.append((loop, feeder))
        return loop

    yield make
    done.set()
    for loop, feeder in made:
        feeder.join()
        os.close(loop.line)


def _silence_after_patience(line: int, done: threading.Event) -> None:
    """After LINE_PATIENCE seconds, feed the line silence until the test is done: a stuck capture then ends."""
    if done.wait(LINE_PATIENCE):
        return
    writer = os.open(f"/proc/self/fd/{line}", os.O_WRONLY | os.O_NONBLOCK)
    try:
        while not done.is_set():
            try:
                os.write(writer, bytes(4096))
            except BlockingIOError:
                done.wait(0.01)
    finally:
        os.close(writer)


def loop_config(loop: AlsaLoop, rate: int = 8000, channels: int = 1, **sections: dict):
    audio = {"capture": loop.capture, "playback": loop.playback, "sample_rate": rate, "channels": channels}
    return cfg.parse({"audio": audio, **sections})


def test_a_key_played_on_the_playback_and_heard_back_passes_the_whole_doctor_run(tmp_path, loop_factory, capsys):
    loop = loop_factory()
    rate = 8000
    # What the line carries while the meter listens (1 s of it), before doctor plays its key.
    os.write(loop.line, tone(1, rate, -20).astype("<i2").tobytes())
    audio = {"capture": loop.capture, "playback": loop.playback, "sample_rate": rate}
    config = write_config(tmp_path, audio=audio, sim={"enabled": True, "capture": "alsa"})
    assert doctor("--config", config, "--seconds", 1) == 0
    checks = parse(capsys.readouterr().out)
    assert list(checks) == NAMES
    assert checks["input level"]["status"] == "PASS"
    assert levels(checks["input level"]["detail"])[0][1] == pytest.approx(-20, abs=0.2)
    assert checks["dtmf loop"] == {
        "status": "PASS",
        "detail": "key D played on edgeloop_out came back: heard on the capture at -10.0 dBFS",
        "hint": "",
    }


def test_on_two_channels_the_loop_says_which_track_heard_the_key(loop_factory):
    loop = loop_factory(channels=2, onto=1)
    check = doctor_cmd.check_dtmf_loop(loop_config(loop, 16000, 2))
    assert check.status is doctor_cmd.Status.PASS
    assert check.detail == "key D played on edgeloop_out came back: heard on the outbound track at -10.0 dBFS"


def test_a_playback_that_goes_nowhere_fails_with_no_loop_and_how_to_connect_it(tmp_path, monkeypatch, capsys):
    """The playback is real and works (ALSA's null PCM takes it); the capture hears someone talking, never the key."""
    rate = 8000
    talk = sig.speech("Front desk, good morning. One moment please, I will put you through.", rate)
    talk = 8000 * talk / np.abs(talk).max() + sig.noise(len(talk) / rate, rate, -50)
    line = write_wav(tmp_path / "line.wav", talk, rate=rate)
    alsa = alsa_file_device(tmp_path, line)
    monkeypatch.setenv("ALSA_CONFIG_PATH", alsa.env["ALSA_CONFIG_PATH"])
    audio = {"capture": alsa.device, "playback": "null", "sample_rate": rate}
    check = doctor_cmd.check_dtmf_loop(cfg.parse({"audio": audio}))
    assert check.status is doctor_cmd.Status.FAIL
    assert check.detail == "key D played on null did not come back: nothing steady at its frequencies"
    assert check.hint.startswith("no loop from playback to capture: connect the playback output to the line")
    assert "try [audio] channels = 2" in check.hint  # a mono capture may be listening to the wrong input

    config = write_config(tmp_path, audio=audio, gpio={"enabled": False})
    assert doctor("--config", config, "--seconds", 1, "--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    [loop] = [c for c in report["checks"] if c["name"] == "dtmf loop"]
    assert (loop["status"], loop["detail"], loop["hint"]) == ("FAIL", check.detail, check.hint)


def test_a_key_that_comes_back_too_quiet_fails_asking_for_more_level(loop_factory):
    loop = loop_factory(gain=0.003)  # -50 dB on the way: the key comes back at -60 dBFS
    check = doctor_cmd.check_dtmf_loop(loop_config(loop))
    assert check.status is doctor_cmd.Status.FAIL
    assert "came back at -60.5 dBFS, too quiet for the DTMF detector (it needs -40)" in check.detail
    assert check.hint == "level: raise the playback volume or the capture gain (alsamixer)"


def test_a_key_that_comes_back_clipped_is_heard_but_warns_to_lower_the_level(loop_factory):
    loop = loop_factory(gain=4.0)  # +12 dB: the key's peaks are flattened at full scale
    check = doctor_cmd.check_dtmf_loop(loop_config(loop))
    assert check.status is doctor_cmd.Status.WARN
    assert "came back: heard on the capture" in check.detail and "clipped (" in check.detail
    assert "lower the playback volume" in check.hint


def test_a_playback_device_that_does_not_exist_fails_naming_it(tmp_path, monkeypatch):
    alsa = alsa_file_device(tmp_path, write_wav(tmp_path / "line.wav", sig.noise(2, 8000, -40), rate=8000))
    monkeypatch.setenv("ALSA_CONFIG_PATH", alsa.env["ALSA_CONFIG_PATH"])
    audio = {"capture": alsa.device, "playback": "hw:CARD=Nope,DEV=0", "sample_rate": 8000}
    check = doctor_cmd.check_dtmf_loop(cfg.parse({"audio": audio}))
    assert check.status is doctor_cmd.Status.FAIL
    assert check.detail.startswith("cannot open playback device 'hw:CARD=Nope,DEV=0'")
    assert "edge-recorder devices" in check.hint and "[audio] playback" in check.hint


def test_the_loop_is_skipped_without_a_line_to_test(tmp_path):
    wav = write_wav(tmp_path / "tone.wav", tone(1))
    tones = tmp_path / "tones.wav"
    tones.write_bytes(b"the simulated playback's file: doctor must not overwrite it")
    cases = {
        "not tested: no playback device ([audio] playback is empty)": cfg.defaults(),
        f"not tested: [sim] playback is a WAV file ({tones}), no line back to the capture": cfg.parse(
            {"sim": {"enabled": True, "audio": str(wav), "playback": str(tones)}}
        ),
        "not tested: the simulated capture is a WAV file, it cannot hear the playback": cfg.parse(
            {"audio": {"playback": "null"}, "sim": {"enabled": True, "audio": str(wav)}}
        ),
    }
    for detail, config in cases.items():
        assert doctor_cmd.check_dtmf_loop(config) == doctor_cmd.Check("dtmf loop", doctor_cmd.Status.SKIP, detail)
    assert tones.read_bytes() == b"the simulated playback's file: doctor must not overwrite it"


# -- the upload destination -----------------------------------------------------------------------------------

TOKEN = "t0k-doctor"
BUCKET = "recordings"
PROBE = "edge-recorder-doctor-box-7.probe"


class DeletingHttpServer(FlakyHttpServer):
    """The test receiver, also taking DELETE (authorised like uploads) of what it stored, at the Location it answered
    the upload with: a tidy-able receiver. A DELETE anywhere else is not routed: 404, and nothing is deleted, as
    many web frameworks answer."""

    def start(self) -> DeletingHttpServer:
        super().start()
        server, base = self, self._httpd.RequestHandlerClass

        class Handler(base):
            def do_DELETE(self) -> None:
                record = Received("DELETE", self.path, dict(self.headers.items()))
                server.received.append(record)
                if not self.path.startswith("/stored/"):
                    return self._answer(HTTPStatus.NOT_FOUND, b"no such route\n", record)
                if not server._authorised(self.headers.get("Authorization")):
                    return self._answer(HTTPStatus.UNAUTHORIZED, b"", record)
                found = server.stored.pop(self.path.removeprefix("/stored"), None) is not None
                self._answer(HTTPStatus.NO_CONTENT if found else HTTPStatus.NOT_FOUND, b"", record)

        self._httpd.RequestHandlerClass = Handler
        return self


class NoDeleteRouteServer(FlakyHttpServer):
    """The test receiver answering every DELETE 404 (a route it does not have) while the file stays stored."""

    def start(self) -> NoDeleteRouteServer:
        super().start()
        server, base = self, self._httpd.RequestHandlerClass

        class Handler(base):
            def do_DELETE(self) -> None:
                record = Received("DELETE", self.path, dict(self.headers.items()))
                server.received.append(record)
                self._answer(HTTPStatus.NOT_FOUND, b"", record)

        self._httpd.RequestHandlerClass = Handler
        return self


def upload_config(**upload: str) -> cfg.Config:
    return cfg.parse({"device": {"id": "box-7"}, "upload": upload})


def test_an_http_destination_takes_the_probe_and_it_is_deleted_again():
    with DeletingHttpServer(bearer_token=TOKEN) as server:
        check = doctor_cmd.check_upload(upload_config(destination=server.url + "/in/", token=TOKEN))
        assert check == doctor_cmd.Check(
            "upload",
            doctor_cmd.Status.PASS,
            f"{server.url}/in/: took a probe file (PUT, bearer token) and deleted it again",
        )
        put, delete = server.received
        assert (put.method, put.path, put.status) == ("PUT", f"/in/{PROBE}", 201)
        assert (
            put.body.startswith(b"edge-recorder doctor: a probe") and put.header("Authorization") == f"Bearer {TOKEN}"
        )
        # Deleted where the server said the file is (its Location), not at the URL it was PUT to.
        assert (delete.method, delete.path, delete.status) == ("DELETE", f"/stored/in/{PROBE}", 204)
        assert server.stored == {}


def test_a_404_to_the_delete_is_not_taken_for_the_probe_being_gone():
    with NoDeleteRouteServer(bearer_token=TOKEN, send_location=False) as server:
        check = doctor_cmd.check_upload(upload_config(destination=server.url + "/in/", token=TOKEN))
        assert check == doctor_cmd.Check(
            "upload",
            doctor_cmd.Status.PASS,
            f"{server.url}/in/: took a probe file (PUT, bearer token), left at {server.url}/in/{PROBE} "
            "(DELETE answered 404 Not Found): delete it by hand",
        )
        assert [(r.method, r.path) for r in server.received] == [("PUT", f"/in/{PROBE}"), ("DELETE", f"/in/{PROBE}")]
        assert list(server.stored) == [f"/in/{PROBE}"]


def test_a_receiver_that_cannot_delete_keeps_the_probe_and_the_line_says_where():
    with FlakyHttpServer(basic=("box", "pw")) as server:
        config = upload_config(destination=server.url + "/in/", username="box", password="pw")
        check = doctor_cmd.check_upload(config)
        assert check.status is doctor_cmd.Status.PASS
        assert check.detail == (
            f"{server.url}/in/: took a probe file (PUT, HTTP Basic credentials), left at "
            f"{server.url}/stored/in/{PROBE} (DELETE answered 501 Unsupported method ('DELETE')): delete it by hand"
        )
        assert list(server.stored) == [f"/in/{PROBE}"]

        config = upload_config(destination=server.url + "/upload", method="post", username="box", password="pw")
        check = doctor_cmd.check_upload(config)
        assert check.status is doctor_cmd.Status.PASS and "(POST, HTTP Basic credentials)" in check.detail
        assert "a POST receiver gives no URL to delete it by" in check.detail
        post = server.received[-1]
        assert (post.method, post.path, post.form["file"].filename) == ("POST", "/upload", PROBE)


def test_a_destination_that_is_one_file_is_not_probed_but_warned_about():
    """Every upload goes to exactly that URL: a probe anywhere else proves nothing, and there it would overwrite."""
    with FlakyHttpServer(basic=("box", "pw")) as server:
        address = server.url.removeprefix("http://")
        cases = {
            # A PUT URL naming the file.
            f"http://{address}/in/calls.wav": (
                "PUT",
                f"http://{address}/in/calls.wav: a PUT URL that does not end in / is the one file every upload "
                "is written to",
            ),
            # A query string (a pre-signed URL): uploads go to exactly that URL, PUT or POST.
            # The signature in it is shown as *** (destinations.redact: one rule for every URL shown).
            f"{server.url}/in/?sig=abc": ("PUT", f"{server.url}/in/?sig=***: it has a query string"),
            f"{server.url}/upload?sig=abc": ("POST", f"{server.url}/upload?sig=***: it has a query string"),
        }
        for destination, (method, said) in cases.items():
            check = doctor_cmd.check_upload(upload_config(destination=destination, method=method.lower(), token=TOKEN))
            assert check.status is doctor_cmd.Status.WARN
            assert check.detail.startswith(f"cannot test without overwriting {said}")
            assert check.hint.startswith("check a short test recording arrives; a destination ending in /")
        assert server.received == [] and server.stored == {}


def test_a_named_destination_is_probed_with_its_own_credentials_and_named_in_the_hint(tmp_path, capsys):
    with DeletingHttpServer(basic=("box", "s3cret-archive")) as server:
        raw = {
            "device": {"id": "box-7"},
            "recording": {"destination": "archive"},
            "upload": {"destination": "https://central.example.com/calls/", "token": TOKEN},
            "destinations": {"archive": {"url": server.url + "/in/", "username": "box", "password": "s3cret-archive"}},
        }
        check = doctor_cmd.check_upload(cfg.parse(raw))
        assert check == doctor_cmd.Check(
            "upload",
            doctor_cmd.Status.PASS,
            f"{server.url}/in/: took a probe file (PUT, HTTP Basic credentials) and deleted it again",
        )
        assert all(r.header("Authorization") != f"Bearer {TOKEN}" for r in server.received)
        assert server.stored == {}

        raw["destinations"]["archive"]["password"] = "wrong"
        check = doctor_cmd.check_upload(cfg.parse(raw))
        assert check.status is doctor_cmd.Status.FAIL
        assert check.detail.startswith(f"HTTP Basic credentials refused: PUT {server.url}/in/")
        assert check.hint == "check [destinations.archive] username and password, and that they may write there"

    # The password is in no line doctor prints, in text or in --json.
    with FlakyHttpServer(basic=("box", "s3cret-archive")) as server:
        wav = write_wav(tmp_path / "tone.wav", tone(1))
        config = sim_config(
            tmp_path,
            wav,
            device={"id": "box-7"},
            upload={"destination": server.url + "/in/", "username": "box", "password": "s3cret-archive"},
        )
        assert doctor("--config", config, "--seconds", 1) == 0
        assert doctor("--config", config, "--seconds", 1, "--json") == 0
        out = capsys.readouterr().out
        assert "s3cret" not in out and f"{server.url}/in/: took a probe file (PUT, HTTP Basic credentials)" in out


def test_a_recording_destination_is_the_one_probed_as_delivery_uses_it(broker):
    """Button, DTMF and automatic recordings go to [recording] destination before [upload] destination."""
    with DeletingHttpServer(bearer_token=TOKEN) as server:
        config = cfg.parse(
            {
                "device": {"id": "box-7"},
                "recording": {"destination": server.url + "/calls/"},
                "upload": {"destination": server.url + "/", "token": TOKEN},
            }
        )
        check = doctor_cmd.check_upload(config)
        assert check.status is doctor_cmd.Status.PASS and check.detail.startswith(f"{server.url}/calls/: took")
        assert [r.path for r in server.received if r.method == "PUT"] == [f"/calls/{PROBE}"]

        # Alone, with [upload]'s credentials but no [upload] destination, it does not load: those credentials
        # belong to [upload] destination and go nowhere else.
        with pytest.raises(cfg.ConfigError, match=r"\[recording\] destination = .*credentials go only to"):
            cfg.parse({"recording": {"destination": server.url + "/calls/"}, "upload": {"token": TOKEN}})
        refused = doctor_cmd.check_upload(config.replace(upload={"token": "stale"}))
        assert refused.hint == "check [upload] token, and that it may write there"
        assert server.stored == {}

    # [recording] destination = "mqtt" goes over the broker as [upload]'s does.
    config = cfg.parse({"mqtt": {"url": broker.url}, "recording": {"destination": "mqtt"}})
    check = doctor_cmd.check_upload(config, doctor_cmd.check_broker(config))
    assert check.status is doctor_cmd.Status.PASS and check.detail.startswith("mqtt: files go in chunks")


def test_a_refused_token_fails_saying_so():
    with FlakyHttpServer(bearer_token=TOKEN) as server:
        check = doctor_cmd.check_upload(upload_config(destination=server.url + "/in/", token="stale"))
        assert check.status is doctor_cmd.Status.FAIL
        assert (
            check.detail == f"bearer token refused: PUT {server.url}/in/{PROBE} answered 401 Unauthorized: unauthorised"
        )
        assert check.hint == "check [upload] token, and that it may write there"
        assert server.stored == {}

        check = doctor_cmd.check_upload(upload_config(destination=server.url + "/in/"))
        assert check.status is doctor_cmd.Status.FAIL and check.detail.startswith("credentials needed: PUT")
        assert check.hint == "set [upload] token (or username and password)"


def test_an_unreachable_destination_fails_naming_why(tmp_path, capsys):
    (port,) = free_ports(1)  # nothing listens there
    destination = f"http://127.0.0.1:{port}/in/"
    check = doctor_cmd.check_upload(upload_config(destination=destination, token=TOKEN), timeout=2)
    assert check.status is doctor_cmd.Status.FAIL
    assert check.detail.startswith(f"unreachable: upload to '{destination}{PROBE}' failed: ")
    assert "Connection refused" in check.detail
    assert check.hint.startswith("check the server runs and the box can reach it")

    # The whole run fails on it, in text and in --json.
    wav = write_wav(tmp_path / "tone.wav", tone(1))
    config = sim_config(tmp_path, wav, upload={"destination": destination, "token": TOKEN})
    assert doctor("--config", config, "--seconds", 1) == 1
    out = capsys.readouterr().out
    assert parse(out)["upload"]["status"] == "FAIL"
    assert out.splitlines()[-1].endswith(", 1 skipped, 1 failed: fix the FAIL lines and run edge-recorder doctor again")
    assert doctor("--config", config, "--seconds", 1, "--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and [c["name"] for c in report["checks"]] == NAMES
    [upload] = [c for c in report["checks"] if c["name"] == "upload"]
    assert upload["status"] == "FAIL" and "Connection refused" in upload["detail"] and upload["hint"]


def test_no_upload_destination_is_skipped_and_mqtt_goes_with_the_broker(broker):
    assert doctor_cmd.check_upload(cfg.defaults()) == doctor_cmd.Check(
        "upload", doctor_cmd.Status.SKIP, "no upload destination: finished recordings stay in the spool"
    )
    config = cfg.parse({"mqtt": {"url": broker.url}, "upload": {"destination": "mqtt"}})
    up = doctor_cmd.check_broker(config)
    check = doctor_cmd.check_upload(config, up)
    assert check.status is doctor_cmd.Status.PASS and check.detail.startswith(
        "mqtt: files go in chunks over the broker"
    )
    broker.stop()
    down = doctor_cmd.check_broker(config, timeout=2)
    assert doctor_cmd.check_upload(config, down) == doctor_cmd.Check(
        "upload", doctor_cmd.Status.FAIL, "mqtt: files go over the broker, which failed above", "fix the broker first"
    )


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed")).start()
    server.client().make_bucket(BUCKET)
    yield server
    server.stop()


def s3_config(s3: SeaweedS3, destination: str = f"s3://{BUCKET}/box-7/", **keys: str) -> cfg.Config:
    upload = {
        "destination": destination,
        "s3_endpoint": s3.endpoint,
        "s3_region": s3.region,
        "s3_access_key": s3.access_key,
        "s3_secret_key": s3.secret_key,
        **keys,
    }
    return upload_config(**upload)


def test_an_s3_destination_takes_the_probe_and_it_is_deleted_again(s3):
    check = doctor_cmd.check_upload(s3_config(s3))
    assert check == doctor_cmd.Check(
        "upload", doctor_cmd.Status.PASS, f"s3://{BUCKET}/box-7/: took a probe file and deleted it again"
    )
    assert [o.object_name for o in s3.client().list_objects(BUCKET, prefix="box-7/", recursive=True)] == []

    # Write-only keys, as Sinch recommends, are enough.
    check = doctor_cmd.check_upload(s3_config(s3, s3_access_key=s3.writer_key, s3_secret_key=s3.writer_secret))
    assert check.status is doctor_cmd.Status.PASS


def test_an_s3_destination_naming_one_object_is_not_probed_but_warned_about(s3):
    check = doctor_cmd.check_upload(s3_config(s3, f"s3://{BUCKET}/box-7/calls.wav"))
    assert check.status is doctor_cmd.Status.WARN
    assert check.detail == (
        f"cannot test without overwriting s3://{BUCKET}/box-7/calls.wav: it names one object, "
        "which every upload is written to"
    )
    assert [o.object_name for o in s3.client().list_objects(BUCKET, prefix="box-7/", recursive=True)] == []


def test_wrong_s3_keys_fail_saying_the_keys_were_refused(s3):
    check = doctor_cmd.check_upload(s3_config(s3, s3_secret_key="not-the-secret"))
    assert check.status is doctor_cmd.Status.FAIL
    assert check.detail.startswith(
        f"S3 keys refused: upload to s3://{BUCKET}/box-7/{PROBE} failed: SignatureDoesNotMatch"
    )
    assert "[upload] s3_access_key and s3_secret_key" in check.hint

    check = doctor_cmd.check_upload(s3_config(s3, s3_access_key="nobody"))
    assert check.status is doctor_cmd.Status.FAIL and "InvalidAccessKeyId" in check.detail


def test_a_missing_bucket_and_an_unreachable_s3_endpoint_fail_with_their_fix(s3):
    check = doctor_cmd.check_upload(s3_config(s3, "s3://no-such-bucket/box-7/"))
    assert check.status is doctor_cmd.Status.FAIL and "NoSuchBucket" in check.detail
    assert check.detail.startswith("not found:") and check.hint.startswith("create the bucket")

    (port,) = free_ports(1)
    check = doctor_cmd.check_upload(s3_config(s3, s3_endpoint=f"http://127.0.0.1:{port}"), timeout=2)
    assert check.status is doctor_cmd.Status.FAIL and check.detail.startswith("unreachable:")
    assert "Connection refused" in check.detail and "[upload] s3_endpoint" in check.hint
