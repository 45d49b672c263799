"""The adb layer against the stand-in `adb` (tests/standin/adb.py): no phone here."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from mobilevos_deploy.bench.adb import RC_MARK, Adb, find_adb, parse_devices
from mobilevos_deploy.errors import UserError

STANDIN = Path(__file__).resolve().parent / "standin" / "adb.py"


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    """An executable `adb` that runs the stand-in with this interpreter; returns its path."""
    exe = tmp_path / "bin" / "adb"
    exe.parent.mkdir()
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} {STANDIN} \"$@\"\n")
    exe.chmod(0o755)
    monkeypatch.setenv("MVOS_FAKE_ROOT", str(tmp_path / "phone"))
    monkeypatch.setenv("MVOS_FAKE_DEVICES", "R5CT10ABCDE:device")
    return str(exe)


def test_devices_listing_is_parsed():
    text = ("* daemon not running; starting now at tcp:5037\n* daemon started successfully\n"
            "List of devices attached\nR5CT10ABCDE\tdevice product:r0s model:SM_S901B\n"
            "emulator-5554\toffline\n\n")
    entries = parse_devices(text)
    assert [(e.serial, e.state) for e in entries] == [("R5CT10ABCDE", "device"),
                                                      ("emulator-5554", "offline")]
    assert entries[0].details["model"] == "SM_S901B"
    assert parse_devices("List of devices attached\n\n") == []


@pytest.mark.parametrize(("devices", "serial", "message"), [
    ("", None, "no Android device attached"),
    ("A:device,B:device", None, "several devices attached: A (device), B (device)"),
    ("A:device", "B", "no device with serial 'B'"),
    ("A:unauthorized", None, "accept the 'Allow USB debugging?' prompt"),
    ("A:offline", None, "adb kill-server"),
])
def test_device_selection_errors(fake_adb, monkeypatch, devices, serial, message):
    monkeypatch.setenv("MVOS_FAKE_DEVICES", devices)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("?", r"\?")):
        Adb.connect(fake_adb, serial)


def test_several_devices_with_serial(fake_adb, monkeypatch):
    monkeypatch.setenv("MVOS_FAKE_DEVICES", "A:device,B:device")
    assert Adb.connect(fake_adb, "B").serial == "B"


def test_missing_adb_names_the_install(monkeypatch, tmp_path):
    monkeypatch.delenv("MVOS_ADB", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match="apt install adb"):
        find_adb()
    with pytest.raises(UserError, match="adb not found"):
        find_adb(str(tmp_path / "nope"))


@pytest.mark.parametrize("no_rc", [False, True])
def test_exit_code_comes_from_the_marker(fake_adb, monkeypatch, no_rc):
    """Old adb exits 0 whatever the remote command did; the marker still has the code."""
    if no_rc:
        monkeypatch.setenv("MVOS_FAKE_NO_RC", "1")
    adb = Adb.connect(fake_adb)
    assert adb.shell("echo hello").output == "hello"
    result = adb.shell("echo oops >&2; exit 3")
    assert result.rc == 3 and RC_MARK not in result.output
    with pytest.raises(UserError, match="exited 3"):
        adb.check("exit 3")


def test_getprop(fake_adb):
    adb = Adb.connect(fake_adb)
    assert adb.getprop("ro.product.model") == "SM-S901B"
    assert adb.getprop("ro.soc.model") == "SM8450"


def test_push_skips_identical_files_and_verifies(fake_adb, tmp_path):
    adb = Adb.connect(fake_adb)
    local = tmp_path / "model.tflite"
    local.write_bytes(b"\x00" * 1000)
    remote = "/data/local/tmp/mobilevos/model.tflite"
    assert adb.push(local, remote) is True
    assert (tmp_path / "phone" / remote.lstrip("/")).read_bytes() == local.read_bytes()
    assert adb.push(local, remote) is False  # same sha256 on the phone: no transfer
    local.write_bytes(b"\x01" * 1000)
    assert adb.push(local, remote) is True


def test_device_gone_mid_session(fake_adb, monkeypatch):
    adb = Adb.connect(fake_adb)
    monkeypatch.setenv("MVOS_FAKE_DEVICES", "")
    with pytest.raises(UserError, match="adb shell on R5CT10ABCDE failed"):
        adb.shell("true")


def test_s22_profile_matches_the_standin_phone(fake_adb):
    from mobilevos_deploy.bench.devices import device_info, load_profile, profile_mismatches

    info = device_info(Adb.connect(fake_adb))
    assert info["model"] == "SM-S901B" and info["android"] == "14"
    profile = load_profile("s22")
    assert profile_mismatches(info, profile) == []
    other = dict(info, model="Pixel 8", soc="Tensor G3", board="zuma")
    assert len(profile_mismatches(other, profile)) == 2
    with pytest.raises(UserError, match="known: s22"):
        load_profile("s99")


def test_a_broken_or_foreign_device_profile_is_refused_with_its_fix(tmp_path, monkeypatch):
    """A user's profile with invalid JSON or a missing key, and a --device that is a path:
    each a message naming the fix, no traceback."""
    from mobilevos_deploy.bench import devices

    shutil.copy(devices.PROFILES / "s22.json", tmp_path / "s22.json")
    (tmp_path / "broken.json").write_text('{"name": "broken", ')
    data = json.loads((tmp_path / "s22.json").read_text())
    del data["socs"]
    (tmp_path / "nosoc.json").write_text(json.dumps(data))
    monkeypatch.setattr(devices, "PROFILES", tmp_path)
    assert devices.load_profile("s22").socs
    with pytest.raises(UserError, match="not a readable JSON device profile"):
        devices.load_profile("broken")
    with pytest.raises(UserError, match="lacks socs"):
        devices.load_profile("nosoc")
    (tmp_path.parent / "outside.json").write_text(json.dumps(data | {"socs": {}}))
    for name in ("../outside", "/etc/passwd", ".hidden"):
        with pytest.raises(UserError, match="is not a profile name"):
            devices.load_profile(name)
