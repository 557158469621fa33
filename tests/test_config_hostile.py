"""A config file as an attacker or a slip of the keyboard writes it: every mistake is a ConfigError that
names the key (exit 78), never a traceback, a hang or a read that fills the memory."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware import config as cfg
from firmware.cli.main import main
from firmware.media.encrypted import check_recipient

VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(["file:/dev/zero", "file:/nonexistent", "env:NOPE_NOT_SET", "age1xyz", "3=buton", ""]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


URLS = st.sampled_from(
    [
        "https://central.example.com/calls/",
        "https://user:pw@central.example.com/calls/",
        "s3://bucket/prefix/",
        "http://127.0.0.1:1/x",
        "archive",
        "mqtt",
        "https://central.example.com/calls/../x/",
    ]
)


@st.composite
def documents(draw) -> dict:
    doc = {}
    for section in draw(st.lists(st.sampled_from([*cfg.SCHEMA, "bogus", "destinations"]), max_size=4, unique=True)):
        if section == "destinations":  # tables of tables: [destinations.NAME]
            names = st.sampled_from(["archive", "Archive", "default", "mqtt", "a" * 40, ""])
            table = st.dictionaries(st.sampled_from([*cfg.DESTINATION_SCHEMA, "bogus"]), VALUES | URLS, max_size=4)
            doc[section] = draw(st.dictionaries(names, table | VALUES, max_size=2) | VALUES)
            continue
        keys = [*cfg.SCHEMA.get(section, {}), "bogus"]
        doc[section] = draw(st.dictionaries(st.sampled_from(keys), VALUES | URLS, max_size=4))
    return doc


@settings(max_examples=500, deadline=None)
@given(doc=documents())
def test_any_document_is_a_config_or_a_config_error(doc):
    try:
        cfg.parse(doc, "fuzz.toml")
    except cfg.ConfigError as exc:
        assert str(exc).startswith("fuzz.toml: [")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[audio]\nperiod_ms = " + "9" * 400 + "\n", "[audio] period_ms = 9999"),
        ('[mqtt]\nurl = "mqtt://127.0.0.1"\npassword = "file:/dev/zero"\n', "/dev/zero is not a regular file"),
        ('[sim]\nscenario = "3=buton"\n', "[sim] scenario = '3=buton': scenario item '3=buton': unknown action"),
        ('[sim]\nfaults = "1=unplug"\n', "[sim] faults = '1=unplug'"),
    ],
)
def test_config_check_names_the_key_of_a_hostile_value(tmp_path, capsys, text, message):
    path = tmp_path / "box.toml"
    path.write_text(text)
    assert main(["config", "check", str(path)]) == 78
    assert message in capsys.readouterr().err


def test_secret_and_key_files_are_read_bounded(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"x" * (cfg.SMALL_FILE_BYTES + 1))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it would wait for a writer forever
    for path, what in ((big, "over 65536 bytes"), (fifo, "not a regular file"), ("/dev/zero", "not a regular file")):
        with pytest.raises(ValueError, match=what):
            cfg.read_small_file(path)
        with pytest.raises(ValueError, match=what):
            check_recipient(str(path))


@pytest.mark.parametrize(
    ("http", "message"),
    [
        ({"tokens": "a" * 32}, "[http] tokens = '(hidden)': a token of 32 characters has fewer than 128 random bits"),
        ({"tokens": "0123456789abcdef" * 2}, "fewer than 128 random bits"),
        ({"listen": "127.0.0.1:8080", "username": "desk", "password": "x"}, "[http] password = '(hidden)': a Basic"),
        ({"listen": "127.0.0.1:8080", "username": "desk", "password": "abcabcabcabcabc"}, "not a repeated pattern"),
        (
            {"listen": "0.0.0.0:8080", "username": "desk", "password": "v8Kq2mZt9Lw4"},
            "[http] username = 'desk': HTTP Basic over plain HTTP sends the password in clear",
        ),
    ],
)
def test_weak_api_secrets_are_refused(http, message):
    with pytest.raises(cfg.ConfigError) as err:
        cfg.parse({"http": {"listen": "0.0.0.0:8080", **http}}, "box.toml")
    assert message in str(err.value)


def test_random_tokens_and_a_good_basic_password_on_loopback_are_taken():
    import secrets

    for _ in range(200):
        cfg.parse({"http": {"listen": "0.0.0.0:8080", "tokens": secrets.token_urlsafe(32)}})
        cfg.parse({"http": {"listen": "0.0.0.0:8080", "tokens": secrets.token_hex(16)}})
    cfg.parse({"http": {"listen": "127.0.0.1:8080", "username": "desk", "password": "v8Kq2mZt9Lw4"}})
