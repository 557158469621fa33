"""``edge-recorder doctor`` on real parts: WAV and real-ALSA capture (its file plugin), mock GPIO pins,
a spool and a catalog in the test's directory, and the machine's own clock."""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from firmware import config as cfg
from firmware.catalog import MIGRATIONS, Catalog
from firmware.cli import doctor as doctor_cmd
from firmware.daemon.system import clock_synchronized
from hal.gpio import Panel
from tests import signals as sig
from tests.alsa_file import alsa_file_device

R = 16000
NAMES = [
    "config",
    "capture device",
    "input level",
    "gpio",
    "spool",
    "catalog",
    "provisioning",
    "encryption",
    "broker",
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
        if line[:4] in ("PASS", "WARN", "FAIL"):
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
        "broker": "WARN",
        "clock": CLOCK,
    }  # delivery is off here
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
