"""An installer's card checked in one pass: every mistake at once, each at its line with a hint
(firmware/findings.py, ``config check``, ``provision --check``, provisioning at boot and the daemon's start).

The card is a temporary directory standing for the FAT boot partition; the target root is another.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware import config as cfg
from firmware import findings, provision
from firmware.cli import exits
from firmware.cli.main import main

REPO = Path(__file__).resolve().parents[1]

#: Four mistakes an installer makes on one card, one per line that is named.
FOUR_MISTAKES = """\
[device]
id = "front-desk"

[mqtt]
url = "mqtt://broker.example.com:88833"

[gpio]
record_button = 40

[call]
detect = "hook"

[upload]
destination = "http://files.example.com/in/"
"""
EXPECTED = [
    (5, "[mqtt] url = 'mqtt://broker.example.com:88833'", "port 1-65535"),
    (8, "[gpio] record_button = 40", "physical pin 40 is BOARD40 (GPIO21)"),
    (11, "[call] detect = 'hook'", "needs [gpio] hook_switch"),
    (14, "[upload] destination = 'http://files.example.com/in/'", "use https://"),
]


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "root"
    (root / "etc/edge-recorder").mkdir(parents=True)
    (root / "etc/edge-recorder/config.toml").write_bytes(b'[device]\nid = "box-before"\n')
    return root


def provision_cli(root: Path, boot: Path, *extra: str) -> int:
    return main(["provision", "--root", str(root), "--boot", str(boot), *extra])


# -- one pass ------------------------------------------------------------------------------


def test_config_check_names_every_mistake_at_its_line_with_the_line_and_a_caret(tmp_path, capsys):
    path = tmp_path / "config.toml"
    path.write_text(FOUR_MISTAKES)

    assert main(["config", "check", str(path)]) == exits.CONFIG

    err = capsys.readouterr().err.splitlines()
    errors = [line for line in err if line.startswith("edge-recorder: error: ")]
    assert len(errors) == 5 and errors[-1].endswith("4 problems; the box would refuse it"), err
    for (line, what, reason), text in zip(EXPECTED, errors, strict=False):
        assert text.startswith(f"edge-recorder: error: {path}:{line}:") and what in text and reason in text, text
        excerpt = FOUR_MISTAKES.splitlines()[line - 1]
        at = err.index(text)
        assert err[at + 1] == "    " + excerpt
        caret = err[at + 2]
        assert caret.strip() == "^" and excerpt[len(caret) - 5] in '"4', (excerpt, caret)  # under the value


def test_provision_check_reports_every_mistake_on_the_card_in_one_pass(root, boot, capsys):
    (boot / "edge-recorder.toml").write_text(FOUR_MISTAKES)

    assert provision_cli(root, boot, "--check") == exits.CONFIG

    err = capsys.readouterr().err
    for line, what, reason in EXPECTED:
        assert f"edge-recorder.toml:{line}:" in err and what in err and reason in err
    assert "4 problems: the box would refuse edge-recorder.toml" in err


def test_provision_check_json_has_every_problem_with_its_line(root, boot, capsys):
    (boot / "edge-recorder.toml").write_text(FOUR_MISTAKES)

    assert provision_cli(root, boot, "--check", "--json") == exits.CONFIG

    report = json.loads(capsys.readouterr().out)
    assert report["good"] is False and report["warnings"] == []
    assert [(e["line"], e["section"], e["key"]) for e in report["errors"]] == [
        (5, "mqtt", "url"),
        (8, "gpio", "record_button"),
        (11, "call", "detect"),
        (14, "upload", "destination"),
    ]


def test_the_note_left_on_the_card_at_boot_lists_every_mistake(root, boot):
    (boot / "edge-recorder.toml").write_text(FOUR_MISTAKES)

    assert provision_cli(root, boot) == exits.CONFIG

    note = (boot / "edge-recorder.toml.error.txt").read_text()
    assert "4 problems:" in note
    for number, (line, what, reason) in enumerate(EXPECTED, 1):
        assert f"{number}. edge-recorder.toml:{line}:" in note and what in note and reason in note
    marker = provision.read_error(root)
    assert [p["line"] for p in marker["problems"]] == [5, 8, 11, 14]
    assert marker["message"].endswith("(and 3 more: see edge-recorder.toml.error.txt on the boot partition)")
    assert (root / "etc/edge-recorder/config.toml").read_bytes() == b'[device]\nid = "box-before"\n'


def test_config_check_json(tmp_path, capsys):
    path = tmp_path / "config.toml"
    path.write_text(FOUR_MISTAKES)
    assert main(["config", "check", "--json", str(path)]) == exits.CONFIG
    report = json.loads(capsys.readouterr().out)
    assert [e["line"] for e in report["errors"]] == [5, 8, 11, 14]
    assert all(e["severity"] == "error" and e["allowed"] for e in report["errors"])

    path.write_text('[device]\nid = "front-desk"\n')
    assert main(["config", "check", "--json", str(path)]) == exits.OK
    assert json.loads(capsys.readouterr().out) == {"file": str(path), "good": True, "errors": [], "warnings": []}


def test_the_daemon_refuses_a_bad_config_naming_every_mistake(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(FOUR_MISTAKES)
    proc = subprocess.run(
        [sys.executable, "-m", "firmware.cli.main", "run", "--config", str(path), "--simulate"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == exits.CONFIG, proc.stderr
    assert "Traceback" not in proc.stderr
    for line, what, _ in EXPECTED:
        assert f"{path}:{line}:" in proc.stderr and what in proc.stderr, proc.stderr


# -- what the computer it was written on did -----------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "hint"),
    [
        ("[device]\nid = \u201cfront-desk\u201d\n", 2, "the quotes are curly"),
        ("[gpio]\nenabled = True\n", 2, "true and false are written in lower case: enabled = true"),
        ("[gpio]\nenabled = yes\n", 2, "true and false are written in lower case: enabled = true"),
        ("[audio]\ncapture = plughw:CARD=Device\n", 2, 'text goes in double quotes: capture = "plughw:CARD=Device"'),
        ('[spool]\ndirectory = "C:\\Users\\me"\n', 2, "use single quotes"),
        ('[device]\nid = "front-desk\n', 2, "the closing quote is missing"),
        ("[mqtt\nurl = 'mqtt://b'\n", 1, "a section header is one line: [name]"),
        ("{\\rtf1\\ansi\\ansicpg1252\\cocoartf2709\n[device]\n}", 1, "Make Plain Text"),
    ],
    ids=["curly-quotes", "True", "yes", "unquoted", "backslash", "open-quote", "header", "rtf"],
)
def test_a_syntax_error_names_its_line_and_the_usual_cause(tmp_path, capsys, text, line, hint):
    path = tmp_path / "edge-recorder.toml"
    path.write_text(text)

    assert main(["config", "check", str(path)]) == exits.CONFIG

    err = capsys.readouterr().err
    assert f"{path}:{line}:" in err and hint in err, err
    assert "Traceback" not in err


def test_every_line_that_is_not_toml_is_named_and_the_rest_still_checked(tmp_path, capsys):
    path = tmp_path / "edge-recorder.toml"
    path.write_text(
        "[device]\nid = \u201cfront-desk\u201d\n\n[gpio]\nenabled = True\nhook_switch = \u201c22\u201d\n\n"
        '[call]\ndetect = "hook"\nauto_record = off-hook\n\n[mqtt]\nurl = "mqtt://broker:88833"\n'
    )

    assert main(["config", "check", str(path)]) == exits.CONFIG

    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("edge-recorder: error:")]
    assert [e.split(":")[3] for e in errors[:-1]] == ["2", "5", "6", "10", "13"], errors
    assert "[mqtt] url = 'mqtt://broker:88833'" in errors[4]
    # hook_switch is on a line that is not TOML: not taken for "not wired" by the rule on detect = "hook"
    assert not any("needs [gpio] hook_switch" in e for e in errors)
    assert errors[-1].endswith("5 problems; the box would refuse it")


def test_a_file_saved_with_a_hidden_txt_is_recognised_and_the_rename_spelled_out(tmp_path, capsys):
    (tmp_path / "edge-recorder.toml.txt").write_text('[device]\nid = "front-desk"\n')

    assert main(["config", "check", str(tmp_path / "edge-recorder.toml")]) == exits.CONFIG

    err = capsys.readouterr().err
    assert "no such file; edge-recorder.toml.txt is there: rename edge-recorder.toml.txt to edge-recorder.toml" in err
    assert "Windows hides the ending .txt" in err


@pytest.mark.parametrize("name", ["edge-recorder.toml.txt", "edge-recorder.toml.toml", "Edge-Recorder (1).toml"])
def test_provisioning_recognises_a_misnamed_request(root, boot, capsys, name):
    (boot / name).write_text('[device]\nid = "front-desk"\n')

    assert provision_cli(root, boot, "--check") == exits.CONFIG
    assert f"rename {name} to edge-recorder.toml" in capsys.readouterr().err

    assert provision_cli(root, boot) == exits.CONFIG  # at boot: left as it is, with the note beside it
    assert (boot / name).exists()
    note = (boot / "edge-recorder.toml.error.txt").read_text()
    assert f"rename {name} to edge-recorder.toml" in note and f"Rename {name} to edge-recorder.toml" in note
    assert provision.read_error(root)["code"] == "provision_rejected"
    assert (root / "etc/edge-recorder/config.toml").read_bytes() == b'[device]\nid = "box-before"\n'


def test_unrelated_files_are_not_misnamed_requests(tmp_path):
    for name in ("config.txt", "cmdline.txt", "edge-recorder.toml.rejected", "edge-recorder.toml.error.txt"):
        (tmp_path / name).write_text("")
    assert findings.misnamed(tmp_path, "edge-recorder.toml") == []


# -- accepted before, wrong all the same ---------------------------------------------------


@pytest.mark.parametrize(
    ("gpio", "reason"),
    [
        ({"record_button": 40}, "there is no GPIO40 on the 40-pin header (GPIO0 to GPIO27); physical pin 40 is "),
        ({"record_button": 53}, "there is no GPIO53 on the 40-pin header"),
        ({"led": "BOARD1"}, "BOARD1 is pin 1 of the 40-pin header, 3.3 V power, not a GPIO"),
        ({"led": "J8:6"}, "J8:6 is pin 6 of the 40-pin header, ground, not a GPIO"),
        ({"buzzer": "GPIO28"}, "there is no GPIO28 on the 40-pin header"),
        ({"record_button": "BOARD11", "led": "GPIO17"}, "pin already used by record_button: GPIO17 and BOARD11"),
        ({"record_button": 17, "pause_button": "J8:11"}, "pin already used by record_button: J8:11 and 17"),
    ],
)
def test_pins_are_checked_against_the_40_pin_header(gpio, reason):
    _, found = cfg.validate({"gpio": gpio}, "c.toml")
    assert any(reason in f.reason for f in found), [f.message for f in found]


def test_pins_on_the_header_under_any_name_are_taken():
    config = cfg.parse({"gpio": {"record_button": "BOARD40", "led": "J8:13", "pause_button": 5, "buzzer": "BCM6"}})
    assert (config.gpio["record_button"], config.gpio["led"]) == ("BOARD40", "J8:13")


def test_auto_record_off_hook_without_a_hook_switch_is_a_warning_saying_what_it_does():
    config, found = cfg.validate({"call": {"auto_record": "off-hook"}})
    assert config is not None  # it records each call noticed from the audio: a box set up so keeps recording
    assert [(f.section, f.key, f.warning) for f in found] == [("call", "auto_record", True)]
    assert 'as with "voice"' in found[0].reason
    assert cfg.parse({"call": {"auto_record": "off-hook"}, "gpio": {"hook_switch": 22}}).call["auto_record"] == (
        "off-hook"
    )


@pytest.mark.parametrize("section", ["upload", "destinations"])
def test_plain_http_uploads_are_refused_unless_they_stay_on_the_box(section):
    def table(url):
        return {"upload": {"destination": url}} if section == "upload" else {"destinations": {"a": {"url": url}}}

    _, found = cfg.validate(table("http://files.example.com/in/"))
    assert len(found) == 1 and "use https://" in found[0].reason
    for url in ("http://127.0.0.1:8080/in/", "http://localhost/in/", "http://[::1]:9000/in/", "https://x.example/"):
        assert cfg.validate(table(url))[1] == [], url


@pytest.mark.parametrize("url", ["mqtt://broker:88833", "mqtts://broker:0", "mqtt://broker:65536"])
def test_a_broker_port_out_of_range_is_refused(url):
    _, found = cfg.validate({"mqtt": {"url": url}})
    assert [f.key for f in found] == ["url"]


def test_a_secret_file_saved_with_a_byte_order_mark_gives_the_secret_without_it(tmp_path):
    secret = tmp_path / "mqtt.password"
    secret.write_bytes("\ufeffs3cret-password\r\n".encode())
    config = cfg.parse({"mqtt": {"url": "mqtt://broker", "password": f"file:{secret}"}})
    assert config.mqtt["password"] == "s3cret-password"


def test_a_config_saved_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes('\ufeff[device]\nid = "front-desk"\n'.encode())
    assert cfg.load(path).device_id == "front-desk"


def test_an_empty_file_is_a_warning(tmp_path, capsys, root, boot):
    path = tmp_path / "config.toml"
    path.write_text("# nothing yet\n")
    assert main(["config", "check", str(path)]) == exits.OK
    err = capsys.readouterr().err
    assert "edge-recorder: warning: " in err and "sets nothing: every key keeps its default" in err

    (boot / "edge-recorder.toml").write_text("")
    assert provision_cli(root, boot, "--check") == exits.OK
    assert "sets nothing: every key goes back to its default" in capsys.readouterr().err


def test_files_on_the_card_the_config_does_not_name_are_not_installed(root, boot, capsys):
    (boot / "edge-recorder").mkdir()
    (boot / "edge-recorder/mqtt.password").write_text("s3cret\n")
    (boot / "edge-recorder/notes.txt").write_text("call Bob about the router\n")
    (boot / "edge-recorder.toml").write_text(
        '[mqtt]\nurl = "mqtts://broker.example.com"\npassword = "file:/etc/edge-recorder/mqtt.password"\n'
    )

    assert provision_cli(root, boot, "--check") == exits.OK
    out, err = capsys.readouterr()
    assert "installs config.toml, mqtt.password in /etc/edge-recorder" in out
    assert "warning: edge-recorder/notes.txt: not named by edge-recorder.toml, so it is not installed" in err

    assert provision_cli(root, boot) == exits.OK
    assert sorted(p.name for p in (root / "etc/edge-recorder").iterdir()) == ["config.toml", "mqtt.password"]


def test_a_mistake_in_a_card_file_and_in_the_config_are_both_reported(root, boot, capsys):
    (boot / "edge-recorder").mkdir()
    (boot / "edge-recorder/client.key").write_bytes(b"0\x82\x04\xbd")  # DER, not PEM
    (boot / "edge-recorder.toml").write_text(
        '[mqtt]\nurl = "mqtts://broker.example.com"\nclient_key = "/etc/edge-recorder/client.key"\nkeepalive = 1\n'
    )
    assert provision_cli(root, boot, "--check") == exits.CONFIG
    err = capsys.readouterr().err
    assert "edge-recorder/client.key: expected PEM text" in err
    assert "edge-recorder.toml:4:13: [mqtt] keepalive = 1: expected a whole number from 5 to 600" in err
    assert "client_key" not in err.replace("client.key", "")  # the file's own problem, not "no such file" too


# -- parsers of outside input --------------------------------------------------------------

_TOMLISH = st.lists(
    st.one_of(
        st.sampled_from(["[mqtt]", "[gpio]", "[device", "[destinations.a]", "", "# x", "[[x]]"]),
        st.builds(
            lambda k, v: f"{k} = {v}",
            st.sampled_from(["url", "id", "record_button", "enabled", "a b", '"q"', "x.y"]),
            st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20),
        ),
        st.text(max_size=30),
    ),
    max_size=12,
).map("\n".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_TOMLISH)
def test_any_text_is_a_config_or_findings_at_lines_of_the_text(text):
    config, found = cfg.check_text(text, "card.toml")
    lines = text.removeprefix(findings.BOM).split("\n")  # as TOML counts lines
    assert (config is None) == any(not f.warning for f in found)
    for finding in found:
        assert finding.message and finding.lines()[0] == finding.message
        if finding.line is not None and finding.excerpt:
            assert 1 <= finding.line <= max(1, len(lines))
            line = lines[finding.line - 1].rstrip("\r")
            # the line as written, or with its value masked when it may hold a secret
            assert finding.excerpt == line or (
                findings.revealing(line) or cfg.is_secret_name(line.split("=")[0].strip())
            )
        json.dumps(finding.as_dict(), default=str)


@given(line=st.text(max_size=60), error=st.text(max_size=60))
def test_hint_for_any_line_is_text(line, error):
    assert isinstance(findings.hint_for(line, error), str)


@given(
    names=st.lists(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_. ()0123456789TOML", min_size=1, max_size=30), max_size=8
    )
)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_misnamed_finds_only_names_close_to_the_request(tmp_path_factory, names):
    directory = tmp_path_factory.mktemp("boot")
    for name in names:
        if name.strip(". ") and "/" not in name:
            try:
                (directory / name).write_text("")
            except OSError:
                continue
    for path in findings.misnamed(directory, "edge-recorder.toml"):
        assert "edgerecorder" in path.name.lower().replace("-", "").replace("_", "").replace(" ", "")
        assert path.name != "edge-recorder.toml"


def test_a_config_check_as_a_user_who_cannot_read_the_file_says_so(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to another user")  # CI and the development machine run as root
    path = tmp_path / "config.toml"
    path.write_text('[device]\nid = "x"\n')
    path.chmod(0o600)
    tmp_path.chmod(0o755)
    proc = subprocess.run(
        [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            sys.executable,
            "-m",
            "firmware.cli.main",
            "config",
            "check",
            str(path),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert proc.returncode == exits.NOPERM, proc.stderr
    assert f"{path}: permission denied for nobody; run it as root (sudo -u root " in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_readme_shows_what_the_check_prints_for_a_card_with_mistakes(root, boot, capsys):
    """The installer guide's example is this card's output, word for word."""
    (boot / "edge-recorder").mkdir()
    (boot / "edge-recorder/notes.txt").write_text("call Bob about the router\n")
    (boot / "edge-recorder.toml").write_text(
        '[device]\nid = \u201cfront-desk\u201d\n\n[gpio]\nrecord_button = 40\nled = "BOARD11"\npause_button = "GPIO17"\n'
        '\n[upload]\nmethod = "PUT"\ndestination = "http://files.example.com/in/"\n'
    )
    assert provision_cli(root, boot, "--check") == exits.CONFIG
    printed = capsys.readouterr().err
    readme = (REPO / "README.md").read_text()
    start = readme.index("$ .venv/bin/edge-recorder provision --check --boot /media/$USER/bootfs\n")
    shown = readme[start : readme.index("```", start)].split("\n", 1)[1]
    assert shown == printed


# -- what an attacker or an unlucky editor puts on a card ------------------------------------


@pytest.mark.parametrize("value", ['["hw:1"]', "{ name = 'x' }", "[1, 2]"], ids=["list", "inline-table", "numbers"])
def test_a_list_or_table_where_text_belongs_is_refused_with_a_note_on_the_card(root, boot, capsys, value):
    (boot / "edge-recorder.toml").write_text(f"[mqtt]\nca_file = {value}\n[audio]\ncapture = {value}\n")
    assert provision_cli(root, boot, "--check") == exits.CONFIG
    assert "Traceback" not in capsys.readouterr().err
    assert provision_cli(root, boot) == exits.CONFIG
    note = (boot / "edge-recorder.toml.error.txt").read_text()
    assert "[audio] capture = '(a" in note and "expected a text string" in note


def test_older_copies_under_other_names_go_with_the_applied_request(root, boot, capsys):
    (boot / "edge-recorder.toml").write_text('[device]\nid = "front-desk"\n')
    (boot / "edge-recorder (1).toml").write_text('[mqtt]\nurl = "mqtt://b"\npassword = "OLDSECRET"\n')
    (boot / "edge-recorder.toml.txt").write_text('[device]\nid = "older"\n')

    assert provision_cli(root, boot) == exits.OK
    assert sorted(p.name for p in boot.iterdir()) == []  # the old secret with it
    capsys.readouterr()
    assert provision_cli(root, boot) == exits.OK  # the next boot: nothing to do, no "rejected"
    assert "nothing to do" in capsys.readouterr().out
    assert provision.read_error(root) is None


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ('[upload]\ndestination = "https://box:S3CRET@files.example.com/"\n', "S3CRET"),
        ('[mqtt]\nurl = "mqtt://box:S3CRET@broker"\n', "S3CRET"),
        ('[events]\nwebhook = "http s://h/?token=S3CRET"\n', "S3CRET"),
        ("[mqtt]\npasword = S3CRET\n", "S3CRET"),
        ("[mqtt]\ncommand_tokn = S3CRET\n", "S3CRET"),
        ("[http]\nlink_secert = S3CRET\n", "S3CRET"),
        ("[mqtt]\nmqtt = { password = S3CRET }\n", "S3CRET"),
        ('[mqtt]\nextra = { password = "S3CRET" }\n', "S3CRET"),
        ('mqtt = "mqtt://u:S3CRET@b"\n', "S3CRET"),
        ('[http]\ntokens = """\nS3CRET\\q\n"""\n', "S3CRET"),
        ('password: "S3CRET"\n', "S3CRET"),
    ],
)
def test_no_secret_is_shown_under_an_error(tmp_path, capsys, root, boot, text, secret):
    path = tmp_path / "config.toml"
    path.write_text(text)
    assert main(["config", "check", str(path)]) == exits.CONFIG
    assert main(["config", "check", "--json", str(path)]) == exits.CONFIG
    (boot / "edge-recorder.toml").write_text(text)
    assert provision_cli(root, boot) == exits.CONFIG
    shown = capsys.readouterr()
    for place in (
        shown.out,
        shown.err,
        (boot / "edge-recorder.toml.error.txt").read_text(),
        str(provision.read_error(root)),
    ):
        assert secret not in place, place


def test_lines_are_counted_as_toml_counts_them(tmp_path, capsys):
    path = tmp_path / "config.toml"
    path.write_text("# caf\u2028\f\n[mqtt]\nkeepalive = 3\n")
    assert main(["config", "check", str(path)]) == exits.CONFIG
    assert f"{path}:3:13: [mqtt] keepalive = 3" in capsys.readouterr().err


def test_a_control_character_in_a_key_is_shown_as_an_escape(tmp_path, capsys):
    path = tmp_path / "config.toml"
    path.write_text('[mqtt]\n"\\u001b]0;owned\\u0007\\u001b[2K" = 1\n')
    assert main(["config", "check", str(path)]) == exits.CONFIG
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and "\\x1b]0;owned\\x07" in err


@pytest.mark.parametrize("kind", ["device", "fifo", "folder", "huge"])
def test_a_config_that_is_not_a_small_file_is_refused_at_once(tmp_path, capsys, kind):
    path = tmp_path / "config.toml"
    if kind == "device":
        path = Path("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        path.write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    assert main(["config", "check", str(path)]) == exits.CONFIG
    err = capsys.readouterr().err
    assert any(words in err for words in ("not a regular file", "is a folder", "is over 1024 KiB")), err


def test_pins_are_not_checked_against_the_header_when_the_panel_is_off():
    config = cfg.parse({"gpio": {"enabled": False, "record_button": 40}})
    assert config.gpio["record_button"] == 40


def test_a_file_secret_of_a_named_destination_comes_from_the_card(root, boot, capsys):
    (boot / "edge-recorder").mkdir()
    (boot / "edge-recorder/archive.pw").write_text("archive-password-0123\n")
    (boot / "edge-recorder.toml").write_text(
        '[destinations.archive]\nurl = "https://files.example.com/in/"\nusername = "box"\n'
        'password = "file:/etc/edge-recorder/archive.pw"\n'
    )
    assert provision_cli(root, boot, "--check") == exits.OK, capsys.readouterr().err
    assert provision_cli(root, boot) == exits.OK
    assert (root / "etc/edge-recorder/archive.pw").read_text() == "archive-password-0123\n"


@pytest.mark.parametrize("line", ["level = info", "callback_format = twilio", "mode = fast"])
def test_an_unquoted_word_gets_the_quotes_hint(line):
    key, word = line.split(" = ")
    assert findings.hint_for(line) == f'text goes in double quotes: {key} = "{word}"'


def test_config_check_reads_the_encryption_key_as_the_box_will_without_showing_a_wrong_files_text(tmp_path, capsys):
    token = tmp_path / "api.token"
    token.write_text("Zq9-SECRET-token\n")
    path = tmp_path / "config.toml"
    path.write_text(f'[encryption]\npublic_key = "{token}"\n')
    assert main(["config", "check", str(path)]) == exits.CONFIG
    err = capsys.readouterr().err
    assert "its line is not an age recipient" in err and "Zq9" not in err
