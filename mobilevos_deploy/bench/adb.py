"""The real ``adb`` client, driven with the care a phone needs.

- ``adb devices`` exits 0 even with no phone, so its listing is parsed and every state a
  device can be in (``device``, ``unauthorized``, ``offline``, ...) gets its own message.
- Older adb / Android do not propagate the remote exit code, so every shell command runs
  as ``(command); echo __MVOS_RC__$?`` and the code is read from that marker.
- Pushes are skipped when the file on the phone already has the same sha256, and checked
  after pushing.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..files import sha256

ENV_VAR = "MVOS_ADB"
REMOTE_DIR = "/data/local/tmp/mobilevos"
RC_MARK = "__MVOS_RC__"
INSTALL_HINT = ("install the Android platform tools: Debian/Ubuntu `sudo apt install adb`, "
                "macOS `brew install android-platform-tools`, Windows: the SDK Platform-Tools "
                "zip from developer.android.com; or pass --adb PATH")


@dataclass(frozen=True)
class DeviceEntry:
    serial: str
    state: str  # device | unauthorized | offline | recovery | ...
    details: dict[str, str] = field(default_factory=dict)  # model:, product:, ...


@dataclass(frozen=True)
class ShellResult:
    rc: int
    output: str


def find_adb(path: str | None = None) -> str:
    """The adb binary: ``path``, else $MVOS_ADB, else the one on PATH."""
    candidate = path or os.environ.get(ENV_VAR) or shutil.which("adb")
    if not candidate or not (shutil.which(candidate) or Path(candidate).is_file()):
        raise UserError(f"adb not found ({candidate or 'not on PATH'}): {INSTALL_HINT}")
    return candidate


def parse_devices(text: str) -> list[DeviceEntry]:
    """``adb devices -l`` output → entries (daemon start-up chatter is ignored)."""
    entries = []
    listing = False
    for line in text.splitlines():
        if line.startswith("List of devices attached"):
            listing = True
            continue
        if not listing or not line.strip() or line.startswith("*"):
            continue
        parts = line.split()
        if len(parts) < 2:
            continue
        details = dict(p.split(":", 1) for p in parts[2:] if ":" in p)
        entries.append(DeviceEntry(parts[0], parts[1], details))
    return entries


_STATE_HELP = {
    "unauthorized": "unlock the phone and accept the 'Allow USB debugging?' prompt (tick "
                    "'Always allow'), then retry",
    "offline": "reconnect the USB cable; if it stays offline run `adb kill-server` and retry",
    "no permissions": "add a udev rule for the phone (Linux) or run `adb kill-server` and "
                      "retry",
}


def choose_device(entries: list[DeviceEntry], serial: str | None) -> DeviceEntry:
    """The device to use, or a UserError saying what to do."""
    listing = ", ".join(f"{e.serial} ({e.state})" for e in entries)
    if serial is not None:
        match = [e for e in entries if e.serial == serial]
        if not match:
            raise UserError(f"no device with serial {serial!r}; attached: {listing or 'none'}")
        chosen = match[0]
    elif not entries:
        raise UserError("no Android device attached (adb devices lists none): connect the "
                        "phone by USB with Developer options > USB debugging on, or run "
                        "mvos-bench without --device for the host benchmark")
    elif len(entries) > 1:
        raise UserError(f"several devices attached: {listing}; pick one with --serial")
    else:
        chosen = entries[0]
    if chosen.state != "device":
        help_text = _STATE_HELP.get(chosen.state, "check the phone and the cable, then retry")
        raise UserError(f"device {chosen.serial} is {chosen.state}: {help_text}")
    return chosen


class Adb:
    """One device, through the adb client binary."""

    def __init__(self, binary: str, serial: str, timeout_s: float = 120.0) -> None:
        self.binary, self.serial, self.timeout_s = binary, serial, timeout_s

    @classmethod
    def connect(cls, binary: str | None = None, serial: str | None = None) -> Adb:
        adb = find_adb(binary)
        proc = _run([adb, "devices", "-l"], 60)
        if proc.returncode != 0:
            raise UserError(f"`adb devices` failed (exit {proc.returncode}): "
                            f"{proc.stderr.strip() or proc.stdout.strip()}")
        device = choose_device(parse_devices(proc.stdout), serial)
        return cls(adb, device.serial)

    def _adb(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        return _run([self.binary, "-s", self.serial, *args], timeout or self.timeout_s)

    def shell(self, command: str, timeout: float | None = None) -> ShellResult:
        """Run ``command`` on the phone; the exit code comes from the appended marker."""
        # a subshell, so that even `exit N` inside the command reaches the marker
        proc = self._adb("shell", f"({command}); echo {RC_MARK}$?", timeout=timeout)
        text = proc.stdout + proc.stderr
        m = re.search(re.escape(RC_MARK) + r"(\d+)", text)
        if m is None:  # adb itself failed: device gone, daemon error
            raise UserError(f"adb shell on {self.serial} failed (exit {proc.returncode}): "
                            f"{text.strip()[-400:]}")
        return ShellResult(int(m[1]), text[: m.start()].rstrip("\n"))

    def check(self, command: str, timeout: float | None = None) -> str:
        result = self.shell(command, timeout)
        if result.rc != 0:
            raise UserError(f"on {self.serial}, `{command}` exited {result.rc}: "
                            f"{result.output.strip()[-400:]}")
        return result.output

    def getprop(self, name: str) -> str:
        return self.check(f"getprop {shlex.quote(name)}").strip()

    def remote_sha256(self, remote: str) -> str | None:
        result = self.shell(f"sha256sum {shlex.quote(remote)} 2>/dev/null")
        words = result.output.split()
        return words[0] if result.rc == 0 and words else None

    def push(self, local: Path, remote: str) -> bool:
        """Push unless the phone already has the same bytes; returns True if pushed."""
        digest = sha256(local)
        if self.remote_sha256(remote) == digest:
            return False
        self.check(f"mkdir -p {shlex.quote(str(Path(remote).parent))}")
        proc = self._adb("push", str(local), remote)
        if proc.returncode != 0:
            raise UserError(f"adb push {local} → {remote} failed: "
                            f"{(proc.stderr or proc.stdout).strip()[-400:]}")
        if self.remote_sha256(remote) != digest:
            raise UserError(f"{remote} on {self.serial} does not match {local} after the "
                            "push (storage full?); free space on the phone and retry")
        return True


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise UserError(f"`{' '.join(cmd[:4])} ...` did not answer within {timeout:.0f} s; "
                        "check the phone (screen on, not in a dialog) and retry") from None
    except OSError as exc:
        raise UserError(f"cannot run {cmd[0]}: {exc.strerror}; {INSTALL_HINT}") from None
