"""A stand-in for the `adb` client: one emulated phone on this host (tests only).

Configured by environment variables:
  MVOS_FAKE_DEVICES  "serial:state[:model],..." (empty: no device); states as adb prints them
  MVOS_FAKE_ROOT     host folder that plays the phone's file system (/data/local/tmp inside)
  MVOS_FAKE_NO_RC    if set, `shell` always exits 0, as old adb versions do
Implements `devices [-l]`, `-s SERIAL`, `push`, `shell` (run by /bin/sh with phone paths
mapped into MVOS_FAKE_ROOT and a `getprop` that answers for a Galaxy S22), with adb's
error messages and exit codes as measured with adb 1.0.41.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PROPS = {"ro.product.model": "SM-S901B", "ro.soc.model": "SM8450", "ro.board.platform": "taro",
         "ro.build.version.release": "14", "ro.product.manufacturer": "samsung"}


def devices() -> list[tuple[str, str, str]]:
    spec = os.environ.get("MVOS_FAKE_DEVICES", "")
    out = []
    for item in filter(None, spec.split(",")):
        serial, state, *model = item.split(":")
        out.append((serial, state, model[0] if model else "SM_S901B"))
    return out


def fail(message: str) -> None:
    print(message, file=sys.stderr)
    sys.exit(1)


def main(argv: list[str]) -> None:
    serial = None
    if argv[:1] == ["-s"]:
        serial, argv = argv[1], argv[2:]
    command, args = argv[0], argv[1:]
    listed = devices()
    if command == "devices":
        print("List of devices attached")
        for s, state, model in listed:
            extra = f" product:r0s model:{model} device:r0s" if "-l" in args else ""
            print(f"{s}\t{state}{extra}")
        print()
        return
    if serial is None:
        if not listed:
            fail("error: no devices/emulators found")
        if len(listed) > 1:
            fail("error: more than one device/emulator")
        serial = listed[0][0]
    match = [d for d in listed if d[0] == serial]
    if not match:
        fail(f"error: device '{serial}' not found")
    if match[0][1] == "unauthorized":
        fail("error: device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is not set")
    if match[0][1] != "device":
        fail(f"error: device {match[0][1]}")
    root = Path(os.environ["MVOS_FAKE_ROOT"])
    if command == "push":
        target = root / args[1].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args[0], target)
        print(f"{args[0]}: 1 file pushed, 0 skipped.")
        return
    if command == "shell":
        script = " ".join(args).replace("/data/local/tmp", str(root / "data/local/tmp"))
        bin_dir = root / ".standin-bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        getprop = bin_dir / "getprop"
        if not getprop.exists():
            lines = "".join(f'  {k}) echo "{v}";;\n' for k, v in PROPS.items())
            getprop.write_text(f'#!/bin/sh\ncase "$1" in\n{lines}  *) echo "";;\nesac\n')
            getprop.chmod(0o755)
        env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
        proc = subprocess.run(["/bin/sh", "-c", script], env=env)
        sys.exit(0 if os.environ.get("MVOS_FAKE_NO_RC") else proc.returncode)
    fail(f"adb: unknown command {command}")


if __name__ == "__main__":
    main(sys.argv[1:])
