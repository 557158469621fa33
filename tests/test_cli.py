"""``edge-recorder record`` and ``demo`` as a user runs them."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from firmware.cli import record
from firmware.core import RecordingOptions
from firmware.core.options import OPTION_HELP, accepted
from tests import signals as sig

R = 16000


def cli(*args, cwd=None):
    """Run the command; ``record`` is added when the first argument is not a command."""
    if args and args[0] not in ("record", "demo"):
        args = ("record", *args)
    return subprocess.run(
        [sys.executable, "-m", "firmware.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def events(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture
def call(tmp_path):
    inbound = sig.noise(6, R, -60)
    sig.place(inbound, sig.speech("Hello, this is a message for the front desk.", R), 0.5, R)
    outbound = sig.noise(6, R, -60, seed=5)
    onset = sig.place(inbound, sig.key("#", R, 0.1), 4.5, R)
    path = tmp_path / "call.wav"
    sf.write(path, sig.to_int16(inbound, outbound), R, subtype="PCM_16")
    return path, onset


def test_record_a_voicemail_with_a_timeline(tmp_path, call):
    path, onset = call
    out = tmp_path / "out"
    result = cli(
        path, "--out", out, "--format", "wav", "--channels", "dual", "--end-on-key", "#", "--beep",
        "--at", "1=start:vm", "--at", "2=pause:skip", "--at", "2.5=resume",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    kinds = [e["type"] for e in events(result)]
    assert kinds == ["recording.started", "recording.paused", "recording.resumed", "dtmf.key", "recording.finished"]
    key, done = events(result)[3]["data"], events(result)[4]
    assert key["key"] == "#" and key["track"] == "inbound" and abs(key["start"] - onset / R) < 0.002
    assert done["specversion"] == "1.0" and done["source"] == "edge-recorder/offline"
    data = done["data"]
    assert data["end_reason"] == "end_on_key" and data["key"] == "#" and data["channels"] == 2
    audio, rate = sf.read(out / "vm.wav", dtype="int16")
    assert rate == R and len(audio) == round((key["start"] - 1 - 0.5) * R)
    assert data["size"] == (out / "vm.wav").stat().st_size and len(data["sha256"]) == 64


def test_record_without_a_start_records_the_whole_file_as_mp3(tmp_path, call):
    path, _ = call
    result = cli(path, "--out", tmp_path, "--sample-rate", "8000")
    assert result.returncode == 0, result.stderr
    done = events(result)[-1]["data"]
    assert done["end_reason"] == "call_end" and done["format"] == "mp3" and done["sample_rate"] == 8000
    info = sf.info(tmp_path / f"{done['name']}.mp3")
    assert info.samplerate == 8000 and abs(info.duration - 6) < 0.2


def test_a_key_from_the_timeline_ends_the_recording(tmp_path):
    path = tmp_path / "quiet.wav"
    sf.write(path, np.zeros(3 * R, np.int16), R)
    result = cli(path, "--out", tmp_path, "--end-on-key", "*", "--at", "1.5=key:*", "--format", "wav")
    assert result.returncode == 0, result.stderr
    done = events(result)[-1]["data"]
    assert done["end_reason"] == "end_on_key" and abs(done["duration"] - 1.5) < 0.002


def test_a_timeline_file_and_a_44k1_input(tmp_path):
    t = np.arange(44100 * 3) / 44100
    path = tmp_path / "cd.wav"
    sf.write(path, (np.sin(2 * np.pi * 300 * t) * 5000).astype(np.int16), 44100)
    (tmp_path / "tl.txt").write_text("# a comment\n0.5 start:a\n2 stop:a\n")
    result = cli(path, "--out", tmp_path, "--timeline", tmp_path / "tl.txt", "--format", "wav")
    assert result.returncode == 0, result.stderr
    done = events(result)[-1]["data"]
    assert done["duration"] == 1.5 and sf.info(tmp_path / "a.wav").samplerate == 16000


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["missing.wav"], 66, "missing.wav: no such file"),
        (["notaudio.wav"], 65, "not a readable audio file"),
        (["mono.wav", "--end-on-key", "#x"], 64, "end_on_key: '#x' is not valid; expected DTMF keys"),
        (["mono.wav", "--max-length", "-3"], 64, "max_length: '-3' is not valid"),
        (["mono.wav", "--channels", "dual"], 64, "channels=dual needs the inbound and outbound tracks"),
        (["mono.wav", "--at", "x=start"], 64, "'x' is not a time in seconds"),
        (["mono.wav", "--at", "1=jump"], 64, "unknown action 'jump'"),
        (["mono.wav", "--format", "ogg"], 64, "format: 'ogg' is not valid; expected one of wav, mp3"),
        (["mono.wav", "--at", "1=hook:maybe"], 64, "hook:maybe: expected hook:off (handset lifted) or hook:on"),
        (["mono.wav", "--timeline", "nope.txt"], 66, "--timeline nope.txt: no such file"),
        (["mono.wav", "--config", "nope.toml"], 78, "nope.toml: no such file"),
        (["mono.wav", "--config", "voice.toml"], 78, "[call] auto_record = 'voice': needs call detection"),
    ],
)
def test_bad_input_gives_one_clear_line(tmp_path, args, code, message):
    (tmp_path / "notaudio.wav").write_text("this is not a wav file")
    (tmp_path / "voice.toml").write_text('[call]\ndetect = "none"\nauto_record = "voice"\n')
    sf.write(tmp_path / "mono.wav", np.zeros(R, np.int16), R)
    result = cli("record", *args, cwd=tmp_path)
    assert result.returncode == code
    assert message in result.stderr
    assert result.stdout == ""
    assert not list(tmp_path.glob("recordings/*"))


def test_named_choices_are_taken_in_any_case_as_the_box_takes_them(tmp_path):
    sf.write(tmp_path / "mono.wav", np.zeros(R, np.int16), R)
    result = cli("record", "mono.wav", "--format", "WAV", "--trim", "Trim-Silence", "--out", tmp_path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert events(result)[-1]["data"]["format"] == "wav"


def test_record_help_gives_every_start_option_its_default_and_what_it_accepts():
    sub = argparse.ArgumentParser().add_subparsers()
    record.add_parser(sub)
    helps = {action.dest: action.help for action in sub.choices["record"]._actions}
    for f in fields(RecordingOptions):
        text = helps[f.name]
        assert text.startswith(OPTION_HELP[f.name]), f.name
        if f.name != "beep":  # a flag: given or not
            assert f"; {accepted(f.name)} (default " in text, f"--{f.name}: {text}"
        shown = re.fullmatch(r".* \(default (.*)\)", text).group(1)
        typed = "" if shown == '""' else shown  # what a shell hands over for ""
        assert RecordingOptions.from_mapping({f.name: typed}) == RecordingOptions(), f"--{f.name}: default {shown}"
    printed = " ".join(cli("record", "--help").stdout.split())  # as wrapped for the terminal
    assert "--format FORMAT file format" in printed and "one of wav, mp3 (default mp3)" in printed
    assert "a number of seconds, more than 0 up to 86400 (default 7200)" in printed


def test_the_demo_shows_the_whole_loop_from_button_to_the_central_file(tmp_path):
    result = cli("demo", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    # stdout is what the central server's subscriber received over MQTT
    kinds = [e["type"] for e in events(result) if not e["type"].startswith("device.")]
    # the key is reported when its tone ends, which may come after the recording ended at its onset
    assert sorted(kinds) == ["dtmf.key", "recording.available", "recording.finished", "recording.started"]
    assert kinds[-1] == "recording.available"
    [done] = [e["data"] for e in events(result) if e["type"] == "recording.finished"]
    assert (done["end_reason"], done["key"], done["source"]) == ("end_on_key", "#", "button")
    path = tmp_path / "spool" / f"{done['id']}.wav"
    assert path.stat().st_size == done["size"]
    audio, rate = sf.read(path, dtype="int16")
    assert rate == R and audio.shape[1] == 2 and len(audio) / R == pytest.approx(done["duration"], abs=1e-3)
    assert "catalog row of " + done["id"] in result.stderr
    [available] = [e["data"] for e in events(result) if e["type"] == "recording.available"]
    landed = available["location"]
    assert landed.startswith(str(tmp_path / "central" / "files" / "demo"))
    assert Path(landed).read_bytes() == path.read_bytes()  # the receiver's copy, byte for byte
    assert f"the uploaded file landed at {landed}" in result.stderr


def test_the_demo_waits_for_a_slow_receiver_and_says_what_a_failing_one_said(tmp_path):
    """A loaded machine: the receiver takes seconds to start. The demo waits for its subscription instead of a
    fixed half second (which lost the offer and ended in exit 69 after 40 silent seconds)."""
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(
        "import os, sys, time\n"
        "if 'receive' in sys.argv:\n"
        "    time.sleep(3)\n"
        "    if os.environ.get('RECEIVER') == 'fail':\n"
        "        sys.stderr.write('receive: cannot reach the store (simulated)\\n')\n"
        "        os._exit(1)\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{slow}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    argv = [sys.executable, "-m", "firmware.cli.main", "demo", "--out", str(tmp_path / "out")]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "the uploaded file landed at" in result.stderr

    failing = subprocess.run(argv, capture_output=True, text=True, env={**env, "RECEIVER": "fail"}, timeout=180)
    assert failing.returncode == 69
    assert "the receiver did not start taking offers: receive: cannot reach the store (simulated)" in failing.stderr


def test_the_demo_without_a_broker_prints_the_box_s_own_events(tmp_path):
    result = cli("demo", "--out", tmp_path, "--local")
    assert result.returncode == 0, result.stderr
    kinds = [e["type"] for e in events(result) if not e["type"].startswith("device.")]
    assert sorted(kinds) == ["dtmf.key", "recording.finished", "recording.started"]


def test_config_check_names_the_bad_key_and_exits_78(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[device]\nid = "desk-2"\n[audio]\ncapture = "plughw:CARD=USB,DEV=0"\n')
    ok = subprocess.run(
        [sys.executable, "-m", "firmware.cli.main", "config", "check", str(good)], capture_output=True, text=True
    )
    assert ok.returncode == 0 and "ok (device id desk-2" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[call]\nauto_record = 'always'\n")
    no = subprocess.run(
        [sys.executable, "-m", "firmware.cli.main", "config", "check", str(bad)], capture_output=True, text=True
    )
    assert no.returncode == 78
    assert no.stderr.splitlines() == [
        f'edge-recorder: error: {bad}:2:15: [call] auto_record = \'always\': expected one of "none", "off-hook", "voice"',
        "    auto_record = 'always'",
        "                  ^",
        f"edge-recorder: error: {bad}: 1 problem; the box would refuse it",
    ]


def test_recordings_list_show_export_delete(tmp_path):
    demo = cli("demo", "--out", tmp_path)
    assert demo.returncode == 0, demo.stderr
    base = [sys.executable, "-m", "firmware.cli.main", "recordings", "--state-dir", str(tmp_path)]

    def rec(*args):
        return subprocess.run([*base, *map(str, args)], capture_output=True, text=True)

    listed = json.loads(rec("list", "--json").stdout)
    [row] = listed
    assert row["status"] == "completed" and row["end_reason"] == "end_on_key"
    table = rec("list").stdout.splitlines()
    assert table[0].split()[:3] == ["id", "status", "end_reason"] and row["id"] in table[1]
    shown = json.loads(rec("show", row["id"]).stdout)
    assert shown["sha256"] == row["sha256"] and shown["options"]["end_on_key"] == "#"
    out = tmp_path / "export"
    out.mkdir()
    assert rec("export", row["id"], out).returncode == 0
    assert (out / f"{row['id']}.wav").stat().st_size == row["size"]
    assert [u["state"] for u in shown["uploads"]] == ["done"]  # the demo uploads over MQTT
    assert Path(shown["path"]).is_absolute()  # a path that holds from any directory
    assert rec("delete", row["id"]).returncode == 0
    assert json.loads(rec("list", "--json").stdout) == []
    gone = json.loads(rec("show", row["id"]).stdout)
    assert gone["status"] == "deleted" and not list((tmp_path / "spool").glob("RE*.wav"))
    missing = rec("show", "RE" + "0" * 32)
    assert missing.returncode == 66 and "no recording" in missing.stderr
