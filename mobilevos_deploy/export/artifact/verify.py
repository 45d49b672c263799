"""Whether an export folder is what its manifest says, before anything runs on it.

Commands that use an export (``mvos-run --model``, ``mvos-bench``, a re-export over an old
folder) read it through here:

- :func:`read_export` validates the manifest itself (schema, keys and their types, the
  graphs' declared I/O recomputed from the stored config, queue and size) and checks the
  sha256 and byte count of every file the command will use; any mismatch is a UserError
  naming the file and saying to export again. A flipped byte in a TFLite file would
  otherwise run with exit 0 and produce empty masks.
- :func:`foreign_entries` says what in a folder is not ours, so an export replaces only a
  folder it made (a folder that merely holds a file named manifest.json is refused).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from ...errors import UserError
from ...files import sha256
from ...model.config import StudentConfig, get_variant
from ...model.graphs import (
    NEXT,
    SINGLE_GRAPHS,
    config_specs,
    multi_graphs,
    shipped_graphs,
    tflite_file,
)
from .manifest import MANIFEST, SCHEMA, feeds, io_spec

# key: the type(s) its value must have
_KEYS: dict[str, type | tuple[type, ...]] = {
    "schema": int, "graph_revision": int, "variant": str, "queue": int, "size": list,
    "precisions": list, "trained": bool, "checkpoint": (dict, type(None)), "config": dict,
    "graphs": dict, "models": dict, "feeds": dict, "files": dict, "tools": dict,
    "gates": dict,
}
PRECISIONS = ("fp32", "fp16")


def graph_files(backend: str, precision: str,
                graphs: Sequence[str] = SINGLE_GRAPHS) -> list[str]:
    """The files of ``graphs`` a backend runs ("torch" runs none of them): an ONNX file a
    graph, or the precision's one TFLite model, which holds every graph."""
    if backend == "torch":
        return []
    if backend == "onnx":
        return [f"{g}.onnx" for g in graphs]
    return [tflite_file(precision)]


def _again(folder: Path) -> str:
    return (f"export it again (mvos-export --out {folder}, with the --ckpt, --queue and "
            "--size it was made with)")


def manifest_problems(manifest: object) -> list[str]:
    """Everything wrong with a manifest's content; empty when it is a valid export's."""
    if not isinstance(manifest, dict):
        return [f"it holds a {type(manifest).__name__}, not an object"]
    problems = [f"no {key!r}" for key in _KEYS if key not in manifest]
    problems += [f"{key!r} is a {type(manifest[key]).__name__}" for key, kind in _KEYS.items()
                 if key in manifest and not isinstance(manifest[key], kind)]
    if problems:
        return problems
    if manifest["schema"] != SCHEMA:
        return [f"schema {manifest['schema']}, this version reads schema {SCHEMA}"]
    size, queue = manifest["size"], manifest["queue"]
    if (len(size) != 2 or not all(type(v) is int and v > 0 for v in size)
            or type(queue) is not int or queue < 1):
        return [f"size {size} and queue {queue} are not positive integers"]
    if not manifest["precisions"] or set(manifest["precisions"]) - set(PRECISIONS):
        return [f"precisions {manifest['precisions']} (expected some of fp32, fp16)"]
    try:
        get_variant(manifest["variant"])
        cfg = StudentConfig.from_dict(manifest["config"])
        specs = config_specs(cfg, queue, *size)
    except (UserError, TypeError, ValueError) as exc:
        return [f"variant or config invalid: {exc}"]
    multi = multi_graphs(queue)
    shipped = [g for g in multi if g in manifest["graphs"]]
    if shipped and len(shipped) != len(multi):
        problems.append(f"it ships {', '.join(shipped)} of the K-object graphs, not all of "
                        f"{', '.join(multi)}")
    graphs = shipped_graphs(queue, objects=bool(shipped))
    for name in graphs:
        if manifest["graphs"].get(name) != io_spec(specs[name]):
            problems.append(f"the {name} graph's declared inputs and outputs are not those of "
                            f"queue {queue} at {size[0]}x{size[1]}")
    if manifest["feeds"] != feeds(specs["step"]):
        problems.append(f"'feeds' is not the step graph's {NEXT}* → state mapping")
    for p in manifest["precisions"]:
        entry = manifest["models"].get(tflite_file(p))
        if not isinstance(entry, dict) or entry.get("signatures") != list(graphs):
            problems.append(f"{tflite_file(p)}'s signatures are not {', '.join(graphs)}")
    needed = {f for p in manifest["precisions"] for b in ("onnx", "tflite")
              for f in graph_files(b, p, graphs)}
    for name in sorted(needed - set(manifest["files"])):
        problems.append(f"no sha256 and byte count for {name}")
    for name, entry in manifest["files"].items():
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                and type(entry.get("bytes")) is int):
            problems.append(f"the files entry {name!r} is not a sha256 and a byte count")
    ckpt = manifest["checkpoint"]
    if ckpt is not None and not (isinstance(ckpt.get("path"), str)
                                 and isinstance(ckpt.get("sha256"), str)):
        problems.append("'checkpoint' has no path and sha256")
    return problems


def read_manifest(folder: Path) -> dict:
    """The folder's manifest, validated; a UserError for a missing, unreadable or invalid
    one."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise UserError(f"{folder}: not an export folder (no {MANIFEST}); make one with "
                        "mvos-export, or pass --ckpt")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: unreadable manifest ({err}); {_again(folder)}") from None
    problems = manifest_problems(manifest)
    if problems:
        raise UserError(f"{path} is not a valid export manifest: {'; '.join(problems[:4])}. "
                        "Was it edited, or made by an older version? "
                        f"{_again(folder).capitalize()}.")
    return manifest


def verify_files(folder: Path, manifest: dict, names: Iterable[str]) -> None:
    """Each named file exists with the manifest's byte count and sha256."""
    folder = Path(folder)
    for name in names:
        entry = manifest["files"].get(name)
        path = folder / name
        if entry is None:
            raise UserError(f"{folder}'s manifest lists no {name}; {_again(folder)}")
        if not path.is_file():
            raise UserError(f"{path} is missing; {_again(folder)}")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise UserError(f"{path} has {size} bytes, its manifest says {entry['bytes']}: the "
                            f"file was changed or truncated since it was exported; "
                            f"{_again(folder)}")
        if sha256(path) != entry["sha256"]:
            raise UserError(f"{path} does not match the sha256 in its manifest: the file was "
                            f"changed since it was exported; {_again(folder)}")


def read_export(folder: Path, names: Iterable[str]) -> dict:
    """The validated manifest of ``folder``, after checking the files in ``names``."""
    manifest = read_manifest(folder)
    unknown = sorted(set(names) - set(manifest["files"]))
    if unknown:
        raise UserError(f"{folder} has no {', '.join(unknown)} (exported precisions: "
                        f"{', '.join(manifest['precisions'])}); export with --precision "
                        "fp32,fp16")
    verify_files(folder, manifest, names)
    return manifest


def foreign_entries(folder: Path) -> list[str]:
    """What in ``folder`` an export of ours did not put there (all of it when it has no
    manifest of ours); empty for an export folder or an empty folder.

    Ownership is judged loosely: a manifest of our schema with a files table. An export
    made by an older version (no graph revision, other graphs) is still ours to replace,
    though it is not valid to run or reuse."""
    entries = sorted(p.name for p in folder.iterdir())
    if not entries:
        return []
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return entries
    if not (isinstance(manifest, dict) and manifest.get("schema") == SCHEMA
            and isinstance(manifest.get("files"), dict)):
        return entries
    ours = {MANIFEST, *manifest["files"]}
    return [e for e in entries if e not in ours or not (folder / e).is_file()]
