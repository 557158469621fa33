"""The config file: defaults that work, and errors that name section, key and value."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from firmware import config
from firmware.cli.main import main
from firmware.config import parse_tokens
from firmware.core import Channels, Format, RecordingOptions


def test_defaults_need_no_file(monkeypatch, tmp_path):
    monkeypatch.delenv(config.ENV_VAR, raising=False)
    monkeypatch.setattr(config, "DEFAULT_PATH", tmp_path / "absent.toml")
    cfg = config.load()
    assert cfg.audio["sample_rate"] == 16000 and cfg.audio["period_ms"] == 20
    assert cfg.recording.format is Format.MP3 and cfg.recording.channels is Channels.MONO
    assert cfg.device_id.startswith("er-") and len(cfg.device_id) == 11


def test_a_file_overrides_defaults_and_recording_options(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        '[device]\nid = "desk-1"\n[audio]\nchannels = 2\nsample_rate = 8000\n'
        '[recording]\nchannels = "dual"\nformat = "wav"\nbeep = true\n[gpio]\nrecord_button = "GPIO5"\nled = ""\n'
    )
    cfg = config.load(path)
    assert cfg.device_id == "desk-1"
    assert cfg.audio["channels"] == 2 and cfg.audio["sample_rate"] == 8000
    assert cfg.recording.channels is Channels.DUAL and cfg.recording.beep
    assert cfg.gpio["record_button"] == "GPIO5" and cfg.gpio["led"] is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[audio]\nsample_rate = 44100\n", "[audio] sample_rate = 44100: expected 8000 or 16000"),
        ("[audio]\nperiod_ms = 5\n", "[audio] period_ms = 5: expected a whole number from 10 to 40"),
        ("[audio]\ncapturee = 'hw:1'\n", "[audio] capturee = 'hw:1': unknown key"),
        # a misspelt secret is a secret all the same
        ("[http]\npasword = 'hunter2hunter2'\n", "[http] pasword = '(hidden)': unknown key"),
        ("[mqtt]\ncommand_tokn = 's3cr3t'\n", "[mqtt] command_tokn = '(hidden)': unknown key"),
        ("[audoi]\n", "[audoi]: unknown section"),
        ("[recording]\nformat = 'ogg'\n", "[recording] format = 'ogg': expected one of wav, mp3"),
        ("[recording]\nchannels = 'dual'\n", "[recording] channels = 'dual': needs [audio] channels = 2"),
        ("[gpio]\nled = 17\n", "[gpio] led = 17: pin already used by record_button"),
        (
            "[gpio]\nrecord_button = 'pin seventeen'\n",
            "[gpio] record_button = 'pin seventeen': expected a GPIO of the 40-pin header",
        ),
        ("[call]\ndetect = 'hook'\n", "[call] detect = 'hook': needs [gpio] hook_switch"),
        ("[dtmf]\nstart = '*1'\nstop = '*12'\n", "[dtmf] stop = '*12': clashes with start"),
        ("[dtmf]\nstart = '*X'\n", "[dtmf] start = '*X': expected up to 8 DTMF keys"),
        ("[spool]\nfsync_interval = true\n", "[spool] fsync_interval = True: expected a number"),
        (
            "[upload]\ndestination = 'ftp://files.example.com/'\n",
            "[upload] destination = 'ftp://files.example.com/': expected an https:// URL (http:// on loopback)",
        ),
        ("[upload]\ndestination = 'mqtt'\n", "[upload] destination = 'mqtt': needs [mqtt] url"),
        (
            "[recording]\ndestination = 'ftp://files.example.com/'\n",
            "[recording] destination = 'ftp://files.example.com/': expected the name of a configured destination",
        ),
        ("[recording]\ndestination = 'mqtt'\n", "[recording] destination = 'mqtt': expected a broker for mqtt uploads"),
        (
            "[upload]\ndestination = 'https://box:hunter2@files.example.com/'\n",
            "[upload] destination = 'https://***@files.example.com/': expected a URL without a user or password in it",
        ),
        (
            "[destinations.central]\nurl = 'https://box:hunter2@files.example.com/'\n",
            "[destinations.central] url = 'https://***@files.example.com/': expected a URL without a user or password",
        ),
        (
            "[upload]\ndestination = 'https://central.example.com/calls/'\n"
            "[recording]\ndestination = 'https://elsewhere.example.com/calls/'\n",
            "[recording] destination = 'https://elsewhere.example.com/calls/': expected a configured destination "
            "(default) or a URL under one of https://central.example.com/calls/; credentials go only to "
            "destinations in the config",
        ),
        ("[destinations.Central]\nurl = 'https://x.example.com/'\n", "[destinations.Central]: a destination's name"),
        ("[destinations.mqtt]\nurl = 'https://x.example.com/'\n", "[destinations.mqtt]: a destination's name"),
        (
            "[destinations.a]\nuri = 'https://x.example.com/'\n",
            "[destinations.a] uri = 'https://x.example.com/': unknown key",
        ),
        ("[destinations.a]\n", "[destinations.a] url = '': expected an https:// URL"),
        (
            "[events]\nwebhook = 'https://hooks.example.com:844333/in?token=WEBHOOKSECRET'\n",
            "[events] webhook = 'https://hooks.example.com:844333/in?***': expected an http:// or https:// URL",
        ),
        ('[upload]\ntoken = "abc\\ndef"\n', "[upload] token = '(hidden)': expected a secret on one line"),
        (
            "[events]\nwebhook_events = 'complet'\n",
            "[events] webhook_events = 'complet': expected one or more of in-progress, completed, absent",
        ),
        ("[upload]\nmethod = 'PATCH'\n", '[upload] method = \'PATCH\': expected one of "PUT", "POST"'),
        ("[http]\ntokens = 'letmein'\n", "[http] tokens = '(hidden)': a token of 7 characters has fewer than 128"),
        ("[audio\n", "not valid TOML"),
    ],
)
def test_bad_values_are_named(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError) as caught:
        config.load(path)
    assert message in str(caught.value)
    assert str(caught.value).startswith(str(path))


def test_an_explicit_path_must_exist(tmp_path):
    with pytest.raises(config.ConfigError, match="no such file"):
        config.load(tmp_path / "nope.toml")


def test_described_defaults_parse_back_to_the_defaults():
    assert config.parse(tomllib.loads(config.describe())) == config.defaults()


def test_a_warning_tone_interval_under_a_second_is_refused():
    from firmware.core import OptionError, RecordingOptions

    assert RecordingOptions.from_mapping({"warning_tone_interval": 0}).warning_tone_interval == 0
    assert RecordingOptions.from_mapping({"warning_tone_interval": 15}).warning_tone_interval == 15
    with pytest.raises(OptionError, match="0 \\(off\\) or a number of seconds from 1 to 3600"):
        RecordingOptions.from_mapping({"warning_tone_interval": 0.0001})


# -- the configuration reference (docs/configuration.md) ------------------------------------

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def test_the_committed_reference_is_what_the_generator_prints(capsys):
    assert main(["config", "reference"]) == 0
    printed = capsys.readouterr().out
    assert REFERENCE.read_bytes() == printed.encode("utf-8"), (
        "docs/configuration.md differs from the config schema; regenerate it with "
        "`edge-recorder config reference > docs/configuration.md`"
    )


def test_the_reference_has_every_section_and_key_with_its_default_and_a_description():
    documented: dict[str, dict[str, str]] = {}
    section = None
    for line in REFERENCE.read_text(encoding="utf-8").splitlines():
        heading = re.fullmatch(r"## `\[(\w+)(?:\.NAME)?\]`", line)
        if heading:
            section = documented.setdefault(heading.group(1), {})
        row = re.fullmatch(r"\| `(\w+)` \| [^|]+ \| `(.*?)` \|.*\| (.*) \|", line)
        if row and section is not None:
            section[row.group(1)] = row.group(2)
            assert row.group(3).strip(), f"{line}: no description"
    expected = {name: {key: spec.default for key, spec in keys.items()} for name, keys in config.SCHEMA.items()}
    expected["recording"] = RecordingOptions().to_dict()
    expected["destinations"] = {key: spec.default for key, spec in config.DESTINATION_SCHEMA.items()}
    assert list(documented) == list(expected)
    for name, keys in expected.items():
        assert list(documented[name]) == list(keys), f"[{name}]"
        for key, default in keys.items():
            assert tomllib.loads(f"v = {documented[name][key]}")["v"] == default, f"[{name}] {key}"


def test_the_example_in_the_reference_is_a_valid_config(monkeypatch):
    text = REFERENCE.read_text(encoding="utf-8")
    example = re.search(r"```toml\n(.*?)```", text, re.DOTALL)
    assert example, "the reference shows an example config"
    for name in re.findall(r'"env:(\w+)"', example.group(1)):
        monkeypatch.setenv(name, "a secret")
    parsed = config.parse(tomllib.loads(example.group(1)), "example")
    assert parsed.device_id == "front-desk"


# -- one rule per key, in its parser --------------------------------------------------------------

#: A bad value for keys whose rule once lived in the cross-checks, and keys with named choices.
BAD = [
    ("upload", "destination", "ftp://files.example.com/"),
    ("events", "webhook_events", "complet"),
    ("events", "webhook_events", ""),
    ("events", "webhook_method", "PATCH"),
    ("upload", "method", "get"),
    ("http", "tokens", "letmein"),
    ("log", "level", "verbose"),
]


@pytest.mark.parametrize(("section", "key", "value"), BAD)
def test_config_check_refuses_in_the_words_of_the_reference(tmp_path, capsys, section, key, value):
    path = tmp_path / "bad.toml"
    path.write_text(f"[{section}]\n{key} = {config._toml(value)}\n")
    assert main(["config", "check", str(path)]) == 78
    [accepted] = [e.accepted for e in config._entries(section) if e.key == key]
    shown = "(hidden)" if key == "tokens" else value
    err = capsys.readouterr().err
    if key == "tokens":
        assert "letmein" not in err  # nor in the line shown under the message
    message = err.splitlines()[0]
    assert message.startswith(f"edge-recorder: error: {path}:2:{len(key) + 4}: [{section}] {key} = {shown!r}: "), (
        message
    )
    if key != "tokens":  # a token's weakness is told in its own words (the reference says how strong)
        assert message.endswith(f": expected {accepted}"), message


def test_every_default_is_written_as_its_parser_gives_it_back():
    for name, keys in config.SCHEMA.items():
        for key, spec in keys.items():
            parsed = spec.parse(spec.default)
            assert parsed == spec.default or (spec.default == "" and parsed is None), f"[{name}] {key}"


def test_named_choices_are_taken_in_any_case_and_given_back_as_documented():
    cfg = config.parse({"upload": {"method": "post"}, "events": {"webhook_method": "get"}, "log": {"level": "DEBUG"}})
    assert (cfg.upload["method"], cfg.events["webhook_method"], cfg.log["level"]) == ("POST", "GET", "debug")


def test_webhook_events_are_given_back_separated_by_spaces():
    cfg = config.parse({"events": {"webhook_events": "in-progress,completed, completed"}})
    assert cfg.events["webhook_events"] == "in-progress completed"


def test_the_reference_names_the_reloadable_sections():
    assert set(config.RELOADABLE_SECTIONS) < set(config.SCHEMA)
    [line] = [line for line in config.reference().splitlines() if "(SIGHUP)" in line]
    assert re.findall(r"`\[(\w+)\]`", line) == list(config.RELOADABLE_SECTIONS)


# -- secrets --------------------------------------------------------------------------------------

TOKEN_A, TOKEN_B = "kJ3n0Qz8Vt7pLw2sXy9bRf4mHc6dNa1e", "Zp5qW8rT2yU6iO9aS3dF7gH1jK4lX0cV"


def test_a_secret_file_gives_its_whole_text_without_the_whitespace_around_it(tmp_path):
    password = tmp_path / "mqtt.password"
    password.write_text("  s3cret #not a comment\n\n")
    tokens = tmp_path / "api.tokens"
    tokens.write_text(f"{TOKEN_A}\n{TOKEN_B}\n")
    cfg = config.parse(
        {
            "mqtt": {"password": f"file:{password}"},
            "http": {"listen": "127.0.0.1:8080", "tokens": f"file:{tokens}"},
        }
    )
    assert cfg.mqtt["password"] == "s3cret #not a comment"
    assert parse_tokens(cfg.http["tokens"]) == [TOKEN_A, TOKEN_B]


def test_a_weak_token_in_a_file_is_named_by_its_file_and_an_inline_one_is_hidden(tmp_path):
    weak = tmp_path / "api.tokens"
    weak.write_text(f"{TOKEN_A}\nletmein\n")
    with pytest.raises(config.ConfigError, match=re.escape(f"[http] tokens = 'file:{weak}': a token of 7 characters")):
        config.parse({"http": {"tokens": f"file:{weak}"}})
    with pytest.raises(config.ConfigError) as caught:
        config.parse({"http": {"tokens": f"{TOKEN_A}, letmein"}})
    assert "letmein" not in str(caught.value) and "'(hidden)'" in str(caught.value)
