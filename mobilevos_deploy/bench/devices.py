"""Device profiles (android_benchmark/devices/<name>.json) and what a phone says it is."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .adb import Adb

PROFILES = Path(__file__).resolve().parents[2] / "android_benchmark" / "devices"
PROPS = {"model": "ro.product.model", "manufacturer": "ro.product.manufacturer",
         "soc": "ro.soc.model", "board": "ro.board.platform",
         "android": "ro.build.version.release"}


# What one GPU buffer may hold when a profile knows no measured figure: WebGPU's default
# maxStorageBufferBindingSize, which LiteRT's GPU backend (over WebGPU) is held to
DEFAULT_GPU_MAX_BUFFER = 128 * 2**20
DEFAULT_GPU_MAX_BUFFER_SOURCE = "WebGPU's default maxStorageBufferBindingSize (no measured figure)"


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    model_prefixes: tuple[str, ...]
    socs: dict[str, str]
    board_platforms: tuple[str, ...]
    gpu_max_buffer_bytes: int = DEFAULT_GPU_MAX_BUFFER  # the largest tensor its GPU takes
    gpu_max_buffer_source: str = DEFAULT_GPU_MAX_BUFFER_SOURCE


def profile_names() -> list[str]:
    return sorted(p.stem for p in PROFILES.glob("*.json"))


KEYS = {"name": str, "description": str, "model_prefixes": list, "socs": dict,
        "board_platforms": list}


def load_profile(name: str) -> DeviceProfile:
    """The profile ``android_benchmark/devices/<name>.json``; a name is a file name there,
    never a path."""
    if not name or name != Path(name).name or name.startswith("."):
        raise UserError(f"--device {name!r} is not a profile name; known: "
                        f"{', '.join(profile_names())} (profiles live in {PROFILES})")
    path = PROFILES / f"{name}.json"
    if not path.exists():
        raise UserError(f"no device profile {name!r}; known: {', '.join(profile_names())} "
                        f"(add one as {PROFILES}/{name}.json)")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a readable JSON device profile ({exc}); fix it, or "
                        f"compare it with {PROFILES / 's22.json'}") from None
    wrong = [key for key, kind in KEYS.items()
             if not isinstance(data, dict) or not isinstance(data.get(key), kind)]
    if wrong:
        raise UserError(f"{path}: the device profile lacks {', '.join(wrong)} (or has the "
                        f"wrong type there); every profile needs {', '.join(KEYS)}, as "
                        f"{PROFILES / 's22.json'} has")
    limit = data.get("gpu_max_buffer_bytes", DEFAULT_GPU_MAX_BUFFER)
    if type(limit) is not int or limit <= 0:
        raise UserError(f"{path}: gpu_max_buffer_bytes must be a positive integer (bytes), "
                        f"not {limit!r}")
    return DeviceProfile(data["name"], data["description"], tuple(data["model_prefixes"]),
                         dict(data["socs"]), tuple(data["board_platforms"]), limit,
                         str(data.get("gpu_max_buffer_source", DEFAULT_GPU_MAX_BUFFER_SOURCE)))


def device_info(adb: Adb) -> dict[str, str]:
    """Model, SoC, board and Android version as the phone reports them."""
    return {key: adb.getprop(prop) for key, prop in PROPS.items()}


def profile_mismatches(info: dict[str, str], profile: DeviceProfile) -> list[str]:
    """Human-readable reasons why this phone is not the profile's (empty if it is)."""
    problems = []
    if not info.get("model", "").startswith(profile.model_prefixes):
        problems.append(f"model {info.get('model')!r} is not a {profile.description} "
                        f"({'/'.join(p + '*' for p in profile.model_prefixes)})")
    soc, board = info.get("soc", ""), info.get("board", "")
    if soc not in profile.socs and board not in profile.board_platforms:
        problems.append(f"SoC {soc or '?'} / board {board or '?'} is none of "
                        f"{', '.join(profile.socs.values())}")
    return problems
