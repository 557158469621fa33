"""First-boot provisioning (firmware/provision.py, ``edge-recorder provision``) on a fake boot
partition and a fake root file system, both temporary directories: nothing outside them is
touched.

Ownership: the files go to root:edge-recorder only when the test runs as root (as in CI and on
the development machine) and the fake root's /etc/group has the group; otherwise they keep the
test's own user, and only the modes are checked (``expect_owner``).
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import json
import os
import shlex
from pathlib import Path

import pyrage
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from firmware import provision
from firmware.cli import exits, main
from firmware.cli import provision as provision_cmd

from .programs import run, tool
from .releases import checked

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "edge-recorder-provision.service"
GID = 997  # the edge-recorder group in the fake root's /etc/group
RUNNING = b'[device]\nid = "box-before"\n'  # the config the box has before provisioning
AS_ROOT = os.geteuid() == 0

GOOD = """\
# from the installer, written on a laptop
[device]
id = "front-desk-3"

[mqtt]
url = "mqtts://broker.example.com:8883"
username = "box"
password = "s3cret"
"""


@pytest.fixture
def root(tmp_path):
    """A target root with the edge-recorder group and a running config."""
    root = tmp_path / "root"
    (root / "etc/edge-recorder").mkdir(parents=True)
    (root / "etc/edge-recorder").chmod(0o750)
    (root / "etc/group").write_text(f"root:x:0:\naudio:x:29:edge-recorder\nedge-recorder:x:{GID}:\n")
    config = root / "etc/edge-recorder/config.toml"
    config.write_bytes(RUNNING)
    config.chmod(0o640)
    return root


def run_cli(root: Path, *boot_dirs: Path, check: bool = False) -> int:
    """``edge-recorder provision --root ROOT --boot DIR... [--check]`` through the command's own parser."""
    parser = argparse.ArgumentParser()
    provision_cmd.add_parser(parser.add_subparsers())
    argv = ["provision", "--root", str(root)] + [arg for d in boot_dirs for arg in ("--boot", str(d))]
    argv += ["--check"] if check else []
    args = parser.parse_args(argv)
    return args.run(args)


def tree(*dirs: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under ``dirs`` with its mode and content, to see that nothing changed."""
    out = {}
    for top in dirs:
        for path in sorted(top.rglob("*")):
            st = path.lstat()
            out[str(path)] = (st.st_mode, st.st_mtime_ns, path.read_bytes() if path.is_file() else None)
    return out


def expect_owner(path: Path, mode: int) -> None:
    st = path.stat()
    assert st.st_mode & 0o7777 == mode, f"{path}: {oct(st.st_mode & 0o7777)}"
    if AS_ROOT:
        assert (st.st_uid, st.st_gid) == (0, GID), path
    else:
        assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid()), path


def marker(root: Path) -> Path:
    return root / "var/lib/edge-recorder/provision-error"


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(".")]


def certificate_and_key(name: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


# -- a good file ---------------------------------------------------------------------------


def test_a_good_file_is_installed_for_the_daemon_and_removed_from_the_boot_partition(root, boot, capsys):
    (boot / "edge-recorder.toml").write_text(GOOD)

    assert run_cli(root, boot) == exits.OK

    config = root / "etc/edge-recorder/config.toml"
    assert config.read_text() == GOOD
    expect_owner(config, 0o640)
    assert list(boot.iterdir()) == []
    assert leftovers(root / "etc/edge-recorder") == []  # no temporary files
    assert not marker(root).exists()
    assert "applied" in capsys.readouterr().out


def test_certificates_keys_and_the_encryption_key_go_to_etc_readable_by_the_daemon_only(root, boot):
    ca, _ = certificate_and_key("ca")
    cert, key = certificate_and_key("front-desk-3")
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    files = {"ca.pem": ca, "client.pem": cert, "client.key": key, "encryption.pub": recipient.encode() + b"\n"}
    (boot / "edge-recorder").mkdir()
    for name, data in files.items():
        (boot / "edge-recorder" / name).write_bytes(data)
    (boot / "edge-recorder.toml").write_text(
        GOOD
        + 'ca_file = "/etc/edge-recorder/ca.pem"\n'
        + 'client_cert = "/etc/edge-recorder/client.pem"\n'
        + 'client_key = "/etc/edge-recorder/client.key"\n'
        + '\n[encryption]\npublic_key = "/etc/edge-recorder/encryption.pub"\n'
    )

    assert run_cli(root, boot) == exits.OK

    for name, data in files.items():
        installed = root / "etc/edge-recorder" / name
        assert installed.read_bytes() == data
        expect_owner(installed, 0o640)
    expect_owner(root / "etc/edge-recorder/config.toml", 0o640)
    assert list(boot.iterdir()) == []  # the folder too
    assert leftovers(root / "etc/edge-recorder") == []


def test_the_update_key_on_the_card_replaces_the_boxs_root_owned_and_readable_by_all(root, boot, tmp_path):
    """``edge-recorder/update.pub`` (what ``minisign -G`` writes) becomes the key update bundles must be signed with,
    also when the config does not name it; it is root's and 0644, as ``edge-recorder update`` requires."""
    minisign = tool("minisign", "minisign")
    checked(run(minisign, "-G", "-W", "-p", tmp_path / "update.pub", "-s", tmp_path / "update.key"))
    (boot / "edge-recorder").mkdir()
    (boot / "edge-recorder/update.pub").write_bytes((tmp_path / "update.pub").read_bytes())
    (root / "etc/edge-recorder").mkdir(parents=True, exist_ok=True)
    (root / "etc/edge-recorder/update.pub").write_text("the key the box was installed with\n")
    (boot / "edge-recorder.toml").write_text(GOOD)

    assert run_cli(root, boot) == exits.OK

    installed = root / "etc/edge-recorder/update.pub"
    assert installed.read_bytes() == (tmp_path / "update.pub").read_bytes()
    assert installed.stat().st_mode & 0o777 == 0o644
    assert not AS_ROOT or (installed.stat().st_uid, installed.stat().st_gid) == (0, 0)
    assert list(boot.iterdir()) == []


def test_an_update_key_that_is_not_one_is_refused(root, boot, capsys):
    (boot / "edge-recorder").mkdir()
    (boot / "edge-recorder/update.pub").write_text("-----BEGIN PUBLIC KEY-----\nnot minisign\n")
    (boot / "edge-recorder.toml").write_text(GOOD)

    assert run_cli(root, boot) == exits.CONFIG

    assert "edge-recorder/update.pub: not a minisign public key" in capsys.readouterr().err
    assert not (root / "etc/edge-recorder/update.pub").exists()


def test_secrets_are_overwritten_before_they_are_removed_from_the_boot_partition(root, boot, tmp_path):
    (boot / "edge-recorder").mkdir()
    (boot / "edge-recorder/mqtt.password").write_text("s3cret\n")
    (boot / "edge-recorder.toml").write_text(GOOD.replace('"s3cret"', '"file:/etc/edge-recorder/mqtt.password"'))
    # Second names for the same data: what the FAT's clusters still hold after the removal.
    (tmp_path / "config-data").hardlink_to(boot / "edge-recorder.toml")
    (tmp_path / "password-data").hardlink_to(boot / "edge-recorder/mqtt.password")

    assert run_cli(root, boot) == exits.OK

    assert (root / "etc/edge-recorder/mqtt.password").read_text() == "s3cret\n"
    for copy in ("config-data", "password-data"):
        data = (tmp_path / copy).read_bytes()
        assert data and data == bytes(len(data)), copy


@pytest.mark.parametrize("check", [False, True], ids=["provision", "check"])
def test_a_missing_secret_file_is_refused_saying_where_on_the_card_it_goes(root, boot, capsys, check):
    (boot / "edge-recorder.toml").write_text(GOOD.replace('"s3cret"', '"file:/etc/edge-recorder/mqtt.password"'))

    assert run_cli(root, boot, check=check) == exits.CONFIG  # neither on the card nor on the box

    fix = "no such file on the box: put it in edge-recorder/mqtt.password beside edge-recorder.toml"
    message = f"edge-recorder.toml:8:12: [mqtt] password = 'file:/etc/edge-recorder/mqtt.password': {fix}"
    if check:
        err = capsys.readouterr().err
        assert err.startswith(f"edge-recorder: error: {message}\n") and err.endswith(
            "the box would refuse edge-recorder.toml\n"
        )
        assert not marker(root).exists()
        return
    error = provision.read_error(root)
    assert (error["section"], error["key"]) == ("mqtt", "password")
    assert error["value"] == "file:/etc/edge-recorder/mqtt.password"  # as written, not where it was looked for
    assert error["allowed"] == fix and error["message"] == message
    assert f"allowed: {fix}\n" in (boot / "edge-recorder.toml.error.txt").read_text()


def test_a_missing_secret_file_elsewhere_says_it_cannot_be_read(root, boot):
    (boot / "edge-recorder.toml").write_text(GOOD.replace('"s3cret"', '"file:/home/pi/mqtt.password"'))

    assert run_cli(root, boot) == exits.CONFIG

    error = provision.read_error(root)
    assert error["value"] == "file:/home/pi/mqtt.password"
    assert error["allowed"] == "cannot read the secret file: No such file or directory"


def test_a_secret_file_the_box_already_has_is_kept_using(root, boot):
    """A box provisioned before has the file in /etc/edge-recorder; a new config may name it again."""
    (root / "etc/edge-recorder/mqtt.password").write_text("s3cret\n")
    text = GOOD.replace('"s3cret"', '"file:/etc/edge-recorder/mqtt.password"')
    (boot / "edge-recorder.toml").write_text(text)

    assert run_cli(root, boot) == exits.OK

    assert (root / "etc/edge-recorder/config.toml").read_text() == text


def test_a_file_saved_by_a_windows_editor_is_accepted_and_installed_as_plain_utf8(root, boot):
    (boot / "edge-recorder.toml").write_bytes(b"\xef\xbb\xbf" + GOOD.replace("\n", "\r\n").encode())

    assert run_cli(root, boot) == exits.OK

    assert (root / "etc/edge-recorder/config.toml").read_bytes() == GOOD.replace("\n", "\r\n").encode()


def test_macos_metadata_files_beside_the_certificates_are_ignored_and_removed(root, boot):
    (boot / "edge-recorder").mkdir()
    (boot / "edge-recorder/ca.pem").write_bytes(certificate_and_key("ca")[0])
    (boot / "edge-recorder/._ca.pem").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (boot / "edge-recorder/.DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (boot / "._edge-recorder.toml").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (boot / "edge-recorder.toml").write_text(GOOD + 'ca_file = "/etc/edge-recorder/ca.pem"\n')

    assert run_cli(root, boot) == exits.OK

    assert sorted(p.name for p in (root / "etc/edge-recorder").iterdir()) == ["ca.pem", "config.toml"]
    assert list(boot.iterdir()) == []


def test_the_older_boot_directory_is_searched_when_the_newer_has_no_file(root, tmp_path):
    firmware, old_boot = tmp_path / "boot/firmware", tmp_path / "boot"
    firmware.mkdir(parents=True)
    (old_boot / "edge-recorder.toml").write_text(GOOD)

    assert run_cli(root, firmware, old_boot) == exits.OK

    assert (root / "etc/edge-recorder/config.toml").read_text() == GOOD
    assert not (old_boot / "edge-recorder.toml").exists()


def test_without_the_group_in_the_target_the_files_keep_the_callers_owner(root, boot):
    (root / "etc/group").write_text("root:x:0:\n")
    (boot / "edge-recorder.toml").write_text(GOOD)

    assert provision.service_owner(root) is None
    assert run_cli(root, boot) == exits.OK

    st = (root / "etc/edge-recorder/config.toml").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (os.geteuid(), os.getegid(), 0o640)


# -- a bad file ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "section", "key", "value", "allowed"),
    [
        ('[mqtt]\nurl = "mqt://broker"\n', "mqtt", "url", "mqt://broker", 'expected "mqtt://host[:port]"'),
        ("[audio]\nsample_rate = 44100\n", "audio", "sample_rate", 44100, "expected 8000 or 16000"),
        ("[gpio]\nled = 17\n", "gpio", "led", 17, "pin already used by record_button"),
        ("[mqtt]\nuser = 'box'\n", "mqtt", "user", "box", "unknown key"),
        ("[audoi]\n", "audoi", None, None, "unknown section"),
        ("[device\nid = 1\n", None, None, None, "not valid TOML"),
    ],
    ids=["bad-value", "not-allowed", "cross-check", "unknown-key", "unknown-section", "not-toml"],
)
def test_a_bad_file_is_rejected_and_the_running_config_kept(root, boot, capsys, text, section, key, value, allowed):
    (boot / "edge-recorder.toml").write_text(text)
    before = tree(root / "etc")

    assert run_cli(root, boot) == exits.CONFIG

    assert tree(root / "etc") == before  # not a byte, not a mode, not a time stamp
    assert sorted(p.name for p in boot.iterdir()) == ["edge-recorder.toml.error.txt", "edge-recorder.toml.rejected"]
    assert (boot / "edge-recorder.toml.rejected").read_text() == text
    note = (boot / "edge-recorder.toml.error.txt").read_text()
    assert "did NOT apply edge-recorder.toml" in note and allowed in note
    if section:
        assert f"section: [{section}]" in note
    if key:
        assert f"key:     {key}" in note and f"value:   {value!r}" in note

    error = provision.read_error(root)
    assert error["code"] == "provision_rejected"
    assert (error["section"], error["key"], error["value"]) == (section, key, value)
    assert allowed in error["message"] and error["message"].startswith("edge-recorder.toml:")
    assert error["line"] == (1 if section in (None, "audoi") else 2)
    assert error["boot_file"] == str(boot / "edge-recorder.toml.rejected")
    expect_owner(marker(root), 0o640)
    stderr = capsys.readouterr().err
    assert allowed in stderr and "the box keeps its configuration" in stderr


def test_a_file_the_config_names_must_come_with_it(root, boot):
    (boot / "edge-recorder.toml").write_text(GOOD + 'ca_file = "/etc/edge-recorder/ca.pem"\n')

    assert run_cli(root, boot) == exits.CONFIG

    error = provision.read_error(root)
    assert (error["section"], error["key"], error["value"]) == ("mqtt", "ca_file", "/etc/edge-recorder/ca.pem")
    assert "put it in edge-recorder/" in error["allowed"]
    assert (root / "etc/edge-recorder/config.toml").read_bytes() == RUNNING


@pytest.mark.parametrize(
    ("name", "data", "problem"),
    [
        ("client.key", b"0\x82\x04\xbd\x02\x01\x000", "expected PEM text"),
        ("client.key", b"-----BEGIN CERTIFICATE-----\nMII=\n-----END CERTIFICATE-----\n", "expected a PEM private key"),
        ("encryption.pub", b"age1notakey\n", "is not an age recipient"),
        ("ssh", b"", "folders are not supported"),
        ("config.toml", b'[device]\nid = "x"\n', "the config goes in edge-recorder.toml"),
    ],
    ids=["der-key", "certificate-as-key", "bad-recipient", "folder", "config-in-folder"],
)
def test_a_bad_file_beside_the_config_rejects_the_whole_request(root, boot, name, data, problem):
    (boot / "edge-recorder").mkdir()
    if name == "ssh":
        (boot / "edge-recorder/ssh").mkdir()
    else:
        (boot / "edge-recorder" / name).write_bytes(data)
    (boot / "edge-recorder.toml").write_text(GOOD)
    before = tree(root / "etc")

    assert run_cli(root, boot) == exits.CONFIG

    assert tree(root / "etc") == before
    error = provision.read_error(root)
    assert error["file"] == f"edge-recorder/{name}" and problem in error["message"], error
    assert (boot / "edge-recorder").is_dir()  # kept for the installer to fix


def test_an_encryption_key_file_with_two_recipients_is_named_once_in_the_message(root, boot):
    recipients = [str(pyrage.x25519.Identity.generate().to_public()) for _ in range(2)]
    (boot / "edge-recorder").mkdir()
    (boot / "edge-recorder/encryption.pub").write_text("\n".join(recipients) + "\n")
    (boot / "edge-recorder.toml").write_text(
        GOOD + '\n[encryption]\npublic_key = "/etc/edge-recorder/encryption.pub"\n'
    )

    assert run_cli(root, boot) == exits.CONFIG

    error = provision.read_error(root)
    assert error["message"] == ("edge-recorder/encryption.pub: holds 2 recipients; expected exactly one 'age1...' line")
    assert "1. edge-recorder/encryption.pub: holds 2" in (boot / "edge-recorder.toml.error.txt").read_text()


def test_an_encryption_key_file_on_the_box_with_two_recipients_is_named_once_in_the_message(root, boot):
    recipients = [str(pyrage.x25519.Identity.generate().to_public()) for _ in range(2)]
    (root / "etc/edge-recorder/encryption.pub").write_text("\n".join(recipients) + "\n")  # from an earlier card
    (boot / "edge-recorder.toml").write_text(
        GOOD + '\n[encryption]\npublic_key = "/etc/edge-recorder/encryption.pub"\n'
    )

    assert run_cli(root, boot) == exits.CONFIG

    assert provision.read_error(root)["message"] == (
        "edge-recorder.toml:11:14: [encryption] public_key = '/etc/edge-recorder/encryption.pub': "
        "holds 2 recipients; expected exactly one 'age1...' line"
    )


def test_the_private_age_key_is_refused_on_the_box(root, boot):
    identity = pyrage.x25519.Identity.generate()
    (boot / "edge-recorder").mkdir()
    (boot / "edge-recorder/encryption.pub").write_text(str(identity) + "\n")
    (boot / "edge-recorder.toml").write_text(
        GOOD + '\n[encryption]\npublic_key = "/etc/edge-recorder/encryption.pub"\n'
    )

    assert run_cli(root, boot) == exits.CONFIG

    assert "must not be on the box" in provision.read_error(root)["message"]
    assert str(identity) not in (boot / "edge-recorder.toml.error.txt").read_text()


def test_an_encryption_key_the_config_does_not_use_is_refused(root, boot):
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    (boot / "edge-recorder").mkdir()
    (boot / "edge-recorder/encryption.pub").write_text(recipient + "\n")
    (boot / "edge-recorder.toml").write_text(GOOD)  # recordings would stay unencrypted

    assert run_cli(root, boot) == exits.CONFIG

    error = provision.read_error(root)
    assert (error["section"], error["key"]) == ("encryption", "public_key")
    assert 'set public_key = "/etc/edge-recorder/encryption.pub"' in error["allowed"]


def test_the_error_text_says_how_to_make_the_boxs_checks_on_a_computer(root, boot):
    (boot / "edge-recorder.toml").write_text('[mqtt]\nurl = "mqt://broker"\n')

    assert run_cli(root, boot) == exits.CONFIG

    lines = (boot / "edge-recorder.toml.error.txt").read_text().splitlines()
    assert "Fix edge-recorder.toml.rejected, rename it back to edge-recorder.toml and start the box again." in lines
    assert (
        "On a Linux computer with edge-recorder, 'edge-recorder provision --check --boot <the card's folder>' "
        "makes the box's checks first." in lines
    )
    assert not any("config check" in line for line in lines)  # it cannot read file: secrets for the box


def test_a_good_file_after_a_rejection_clears_the_error(root, boot):
    (boot / "edge-recorder.toml").write_text('[mqtt]\nurl = "mqt://broker"\n')
    assert run_cli(root, boot) == exits.CONFIG
    assert provision.read_error(root) is not None

    (boot / "edge-recorder.toml").write_text(GOOD)  # the installer's fixed copy
    assert run_cli(root, boot) == exits.OK

    assert provision.read_error(root) is None
    assert list(boot.iterdir()) == []  # the rejected copy held secrets too


# -- no file, and trouble --------------------------------------------------------------------


def test_check_alone_says_good_or_names_the_problem_and_changes_nothing(root, boot, capsys):
    """What an installer runs on a computer with the card: ``provision --check --boot /media/.../bootfs``."""
    (boot / "edge-recorder.toml").write_text(GOOD.replace('"s3cret"', '"file:/etc/edge-recorder/mqtt.password"'))
    (boot / "edge-recorder").mkdir()
    (boot / "edge-recorder/mqtt.password").write_text("s3cret\n")  # read from the card, not from this computer's /etc
    before = tree(root, boot)

    assert run_cli(root, boot, check=True) == exits.OK
    out = capsys.readouterr().out
    assert "good; at the first boot the box installs config.toml, mqtt.password in /etc/edge-recorder" in out
    # which MQTT command mode the box will be in (no command_token: nothing that records or deletes)
    assert "MQTT commands: list and get only: start, stop, pause, resume, button and delete need" in out
    assert tree(root, boot) == before  # the secret stays on the card, nothing in /etc

    (boot / "edge-recorder.toml").write_text(GOOD + 'ca_file = "/etc/edge-recorder/ca.pem"\n')
    before = tree(root, boot)
    assert run_cli(root, boot, check=True) == exits.CONFIG
    err = capsys.readouterr().err
    assert "[mqtt] ca_file" in err and "the box would refuse edge-recorder.toml" in err
    assert tree(root, boot) == before  # not renamed, no error file, no marker
    assert not marker(root).exists()

    (boot / "edge-recorder.toml").unlink()
    assert run_cli(root, boot, check=True) == exits.NOINPUT


def test_check_does_not_take_files_in_etc_edge_recorder_from_this_computer(root, boot, capsys):
    """``provision --check`` runs on the installer's computer, whose /etc/edge-recorder is not the box's: a file
    the config names there must be on the card, as a fresh box has nothing there at its first boot."""
    (root / "etc/edge-recorder/ca.pem").write_bytes(certificate_and_key("ca")[0])  # on the computer, not the card
    (boot / "edge-recorder.toml").write_text(GOOD + 'ca_file = "/etc/edge-recorder/ca.pem"\n')
    before = tree(root, boot)

    assert run_cli(root, boot, check=True) == exits.CONFIG

    err = capsys.readouterr().err
    assert (
        "edge-recorder.toml:9:11: [mqtt] ca_file = '/etc/edge-recorder/ca.pem': no such file on the box: "
        "put it in edge-recorder/ca.pem beside edge-recorder.toml\n"
    ) in err
    assert tree(root, boot) == before

    (boot / "edge-recorder").mkdir()  # with the certificate on the card, the check passes
    (boot / "edge-recorder/ca.pem").write_bytes(certificate_and_key("ca")[0])
    assert run_cli(root, boot, check=True) == exits.OK


def test_check_looks_up_paths_outside_etc_edge_recorder_under_root(root, boot, capsys):
    (root / "usr/share/ca").mkdir(parents=True)
    (root / "usr/share/ca/ca.pem").write_bytes(certificate_and_key("ca")[0])
    (boot / "edge-recorder.toml").write_text(GOOD + 'ca_file = "/usr/share/ca/ca.pem"\n')

    assert run_cli(root, boot, check=True) == exits.OK

    (root / "usr/share/ca/ca.pem").unlink()
    assert run_cli(root, boot, check=True) == exits.CONFIG


def test_the_check_help_says_this_computers_etc_edge_recorder_is_not_read(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # one line: argparse wraps at hyphens too
    parser = argparse.ArgumentParser()
    provision_cmd.add_parser(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["provision", "--help"])
    help_text = capsys.readouterr().out
    assert "this computer's /etc/edge-recorder (or the one under --root) is not read" in help_text
    assert "must be in edge-recorder/ on the card" in help_text


def test_no_file_on_the_boot_partition_changes_nothing(root, boot, capsys):
    before = tree(root, boot)

    assert run_cli(root, boot) == exits.OK

    assert tree(root, boot) == before
    assert provision.read_error(root) is None
    assert "nothing to do" in capsys.readouterr().out


def test_a_request_that_cannot_be_installed_stays_for_the_next_boot(root, boot):
    (root / "etc/edge-recorder/config.toml").unlink()
    (root / "etc/edge-recorder").rmdir()
    (root / "etc/edge-recorder").write_text("not a folder")  # the target cannot take the config
    (boot / "edge-recorder.toml").write_text(GOOD)

    assert run_cli(root, boot) == exits.CANTCREAT

    assert (boot / "edge-recorder.toml").read_text() == GOOD
    assert provision.read_error(root)["code"] == "provision_failed"


def test_a_copy_left_on_the_boot_partition_is_reported(root, boot, monkeypatch):
    (boot / "edge-recorder.toml").write_text(GOOD)
    monkeypatch.setattr(provision, "_wipe", lambda path: path.name != "edge-recorder.toml")

    assert run_cli(root, boot) == exits.CANTCREAT

    assert (root / "etc/edge-recorder/config.toml").read_text() == GOOD  # applied all the same
    error = provision.read_error(root)
    assert error["code"] == "provision_left_secrets" and str(boot / "edge-recorder.toml") in error["message"]


def test_an_unreadable_marker_still_reads_as_an_error(root):
    marker(root).parent.mkdir(parents=True)
    marker(root).write_text("half a json {")
    assert provision.read_error(root) == {"code": "provision_rejected", "message": "half a json {"}


# -- the unit --------------------------------------------------------------------------------


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(f"{section}.{key}", []).append(value)
    return settings


def test_the_unit_runs_provisioning_before_the_daemon_when_a_file_is_there():
    unit = unit_settings(UNIT.read_text())
    assert unit["Unit.ConditionPathExists"] == [f"|{d / provision.REQUEST}" for d in provision.BOOT_DIRS]
    # and a request saved under another name, which provisioning recognises (the glob as systemd reads it)
    globs = [g.removeprefix("|") for g in unit["Unit.ConditionPathExistsGlob"]]
    for name in ("edge-recorder.toml.txt", "Edge-Recorder (1).toml", "edge_recorder.toml"):
        assert any(fnmatch.fnmatchcase(f"{d}/{name}", g) for d in provision.BOOT_DIRS for g in globs), name
    assert "edge-recorder.service" in unit["Unit.Before"][0].split()
    assert not {"Unit.Requires", "Unit.Wants", "Unit.BindsTo"} & set(unit)  # the daemon starts even when this fails
    assert unit["Service.Type"] == ["oneshot"]
    program, *argv = shlex.split(unit["Service.ExecStart"][0])
    assert program == "/opt/edge-recorder/bin/edge-recorder"
    commands = main.parser()._subparsers._group_actions[0].choices
    assert "provision" in commands, (
        "edge-recorder has no 'provision' command: add provision.add_parser(sub) in firmware/cli/main.py"
    )
    args = main.parser().parse_args(argv)
    assert args.run is provision_cmd.run
    assert tuple(args.boot) == provision.BOOT_DIRS
    # Where the unit lets it write, under ProtectSystem=: the config folder and the boot partitions.
    writable = {p.lstrip("-") for p in unit["Service.ReadWritePaths"][0].split()}
    assert {str(provision.CONFIG_DIR), *map(str, provision.BOOT_DIRS)} <= writable
    assert unit["Service.ProtectSystem"] == ["full"]  # /var stays writable for the marker
    assert str(provision.MARKER).startswith("/var/")


def test_the_marker_is_json_the_daemon_can_read(root, boot):
    (boot / "edge-recorder.toml").write_text("[audio]\nchannels = 3\n")
    run_cli(root, boot)
    data = json.loads(marker(root).read_text())
    assert set(data) >= {"code", "message", "file", "section", "key", "value", "allowed", "boot_file", "time"}


def test_the_daemon_reports_a_refused_config_until_it_is_fixed(tmp_path):
    from firmware import config as cfg
    from firmware.cli import doctor

    from .daemon_run import Box, counter_signal

    box = Box.make(tmp_path, counter_signal(1.0), 8000, sim={"scenario": ""})
    marker = {
        "code": "provision_rejected",
        "message": "edge-recorder.toml: [audio] sample_rate = 44100: expected 8000 or 16000",
    }
    (tmp_path / "provision-error").write_text(json.dumps(marker))
    result = box.run()
    assert result.code == 0, result.stderr
    [event] = [e for e in result.of("device.error") if e["data"]["code"] == "provision_rejected"]
    assert "sample_rate = 44100" in event["data"]["message"]
    assert event["data"]["state"]["problems"] == {"provision_rejected": marker["message"]}
    check = doctor.check_provisioning(cfg.load(box.config))
    assert check.status is doctor.Status.FAIL and "44100" in check.detail
