"""Checkpoints: ``{"variant": str, "config": {...}, "state_dict": {...}}`` of plain tensors.

Loaded with ``torch.load(weights_only=True)`` and strict key matching; every way a file can
be wrong gets a :class:`CheckpointError` whose message says what to do.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, UserError
from ..files import atomic_path, sha256
from .config import DEFAULT_VARIANT, StudentConfig, get_variant
from .student import Student, build_student

_SHOW = 5  # names listed per problem before "... and N more"

# The trained default student: what every command uses when given neither --ckpt nor
# another --variant (models/mvos-synth-noaspp-v2.md is its model card). SEEDED, passed as
# --ckpt, asks for the seeded random-initialised student instead.
MODELS = Path(__file__).resolve().parents[2] / "models"
DEFAULT_CHECKPOINT = MODELS / "mobilenetv2-noaspp_synth.pt"
DEFAULT_NAME = "mvos-synth-noaspp-v2"
SEEDED = "seeded"


@dataclass(frozen=True)
class LoadedCheckpoint:
    variant: str
    config: StudentConfig
    student: Student
    path: Path
    sha256: str = ""  # of the bytes the weights were loaded from


def save_checkpoint(path: str | Path, student: Student, variant: str) -> Path:
    """Write atomically; the result loads with :func:`load_checkpoint`."""
    path = Path(path)
    payload = {
        "variant": variant,
        "config": student.config.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in student.state_dict().items()},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    more = len(names) - _SHOW
    return shown + (f", ... and {more} more" if more > 0 else "")


def read_checkpoint_file(path: Path) -> Any:
    return _checked_load(path)[0]


def _checked_load(path: Path) -> tuple[Any, str]:
    if not path.exists():
        raise CheckpointError(
            f"checkpoint not found: {path}. Check the path, or leave out --ckpt for the "
            f"trained default student (--ckpt {SEEDED}: the seeded untrained one)."
        )
    if path.is_dir():
        raise CheckpointError(f"checkpoint path {path} is a folder; pass the .pt file inside it.")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path {path} is not a regular file (a device or a "
                              "pipe?); pass the .pt file")
    return _load(path)


def _load(path: Path) -> tuple[Any, str]:
    """The file's content and the sha256 of the very bytes it was loaded from (a file
    rewritten meanwhile, say by a training run, cannot pair one's hash with other weights)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(_not_a_checkpoint(path, f"cannot read it: {exc.strerror}")) from None
    digest = hashlib.sha256(data).hexdigest()
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True), digest
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text and "GLOBAL" in text:
            found = re.search(r"GLOBAL ([\w.]+)", text)
            what = found.group(1) if found else "a Python object"
            raise CheckpointError(
                f"{path} stores pickled Python objects ({what}), not plain tensors. They are "
                "refused because loading them would run code from the file. Re-save it from "
                "the code that made it as plain tensors: torch.save({'variant': NAME, "
                "'config': CONFIG_DICT, 'state_dict': model.state_dict()}, PATH), or call "
                "mobilevos_deploy.model.checkpoint.save_checkpoint(PATH, model, NAME)."
            ) from None
        raise CheckpointError(_not_a_checkpoint(path, text)) from None
    except Exception as exc:  # noqa: BLE001 - torch.load fails in many ways on foreign files
        reason = _reason(data, exc)
        raise CheckpointError(_not_a_checkpoint(path, reason)) from None


def _reason(data: bytes, exc: Exception) -> str:
    """Why torch.load refused a file, in words: its bare errors can be a lone number (a
    text file gives KeyError(101), the 'e' of its first bytes read as a pickle opcode)."""
    head = data[:8]
    if not head:
        return "the file is empty"
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save's zip, or a legacy pickle
        kind = "text" if all(32 <= c < 127 or c in b"\t\r\n" for c in head) else "binary data"
        return f"it is not a torch.save file: it begins with {head!r}, {kind}"
    text = (str(exc).splitlines() or [""])[0]
    return text if len(text) > 8 else f"{type(exc).__name__} {text}".strip()


def _not_a_checkpoint(path: Path, reason: str) -> str:
    return (
        f"{path} is not a readable PyTorch checkpoint ({reason}). Expected a file written by "
        "torch.save holding {'variant', 'config', 'state_dict'} or a bare state_dict; the "
        "file may be truncated or of another format."
    )


def _unpack(obj: Any, path: Path, variant: str | None) -> tuple[str, StudentConfig, dict]:
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{path} holds a {type(obj).__name__}, not a checkpoint dict. Expected "
            "{'variant', 'config', 'state_dict'} or a bare state_dict."
        )
    if "state_dict" in obj:
        stored = obj.get("variant")
        if not isinstance(stored, str):
            raise CheckpointError(f"{path} has a state_dict but no 'variant' name string.")
        if variant is not None and variant != stored:
            raise CheckpointError(
                f"{path} is a {stored!r} checkpoint but --variant {variant} was asked for. "
                f"Drop --variant or pass --variant {stored}."
            )
        get_variant(stored)
        config = obj.get("config")
        if not isinstance(config, dict):
            raise CheckpointError(f"{path} has no 'config' dict for variant {stored!r}.")
        try:
            cfg = StudentConfig.from_dict(config)
        except (UserError, TypeError) as exc:
            raise CheckpointError(f"{path}: its config is invalid: {exc}") from None
        state = obj["state_dict"]
        if not (isinstance(state, dict) and all(isinstance(v, torch.Tensor)
                                                for v in state.values())):
            raise CheckpointError(f"{path}: its 'state_dict' is not a dict of tensors")
        return stored, cfg, state
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        if variant is None:
            raise CheckpointError(
                f"{path} is a bare state_dict with no variant name; pass --variant NAME "
                "to say which student it belongs to."
            )
        return variant, get_variant(variant).config, obj
    raise CheckpointError(
        f"{path} is a dict with keys {_listing(sorted(map(str, obj)))} but no 'state_dict'. "
        "Expected {'variant', 'config', 'state_dict'} or a bare state_dict."
    )


def _check_keys(state: dict, model: Student, variant: str, path: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_listing(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_listing(unexpected)})")
    shapes = [
        f"{k}: expected {tuple(expected[k].shape)}, got {tuple(state[k].shape)}"
        for k in sorted(set(expected) & set(state))
        if isinstance(state[k], torch.Tensor) and state[k].shape != expected[k].shape
    ]
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches ({_listing(shapes)})")
    if problems:
        raise CheckpointError(
            f"{path} does not match the {variant!r} student: " + "; ".join(problems)
            + ". Was it saved from another variant or another version of the model?"
        )


def non_finite(state: dict) -> list[str]:
    """The floating-point tensors of a state dict holding NaN or inf, each with its counts."""
    return [f"{k} ({int(torch.isnan(v).sum())} NaN, {int(torch.isinf(v).sum())} inf)"
            for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point()
            and not bool(torch.isfinite(v).all())]


def _check_finite(state: dict, path: Path) -> None:
    """NaN or infinite weights make every runtime emit empty masks with exit 0; refuse them
    here, naming the tensors, for every command that loads a checkpoint (a soup too)."""
    bad = non_finite(state)
    if bad:
        raise CheckpointError(f"{path} holds non-finite weights in {len(bad)} tensors: "
                              f"{_listing(bad)}. A diverged training run? Use an earlier "
                              "checkpoint (ckpt_NNNNNN.pt) or train again with a lower --lr.")


def load_checkpoint(path: str | Path, variant: str | None = None) -> LoadedCheckpoint:
    """Load a checkpoint into a fresh student in eval mode (strict key and shape match)."""
    path = Path(path)
    if variant is not None:
        get_variant(variant)
    obj, digest = _checked_load(path)
    name, cfg, state = _unpack(obj, path, variant)
    model = build_student(cfg, seed=None, centre=False)
    _check_keys(state, model, name, path)
    _check_finite(state, path)
    model.load_state_dict(state, strict=True)
    return LoadedCheckpoint(name, cfg, model.eval(), path, digest)


@dataclass(frozen=True)
class ChosenStudent:
    student: Student
    variant: str
    trained: bool  # False: the seeded random-initialised student
    checkpoint: Path | None = None  # the file it was loaded from
    name: str | None = None  # DEFAULT_NAME for the shipped default
    sha256: str | None = None  # of the bytes it was loaded from

    def label(self) -> str:
        if not self.trained:
            return "UNTRAINED seeded student"
        return self.name or f"checkpoint {self.checkpoint}"

    def manifest_entry(self) -> dict:
        """What an export's manifest says of the student it was made from."""
        checkpoint = None
        if self.checkpoint is not None:
            path = Path(self.checkpoint).resolve()  # the manifest's path works from anywhere
            checkpoint = {"path": str(path), "sha256": self.sha256 or sha256(path),
                          "name": self.name}
        return {"variant": self.variant, "trained": self.trained, "checkpoint": checkpoint,
                "config": self.student.config.to_dict()}

    @classmethod
    def from_manifest(cls, manifest: dict, folder: Path | str = "the export") -> ChosenStudent:
        """The student an export folder was made from: its checkpoint, refused when the
        file is gone or its bytes are not those the export hashed; else the seeded
        student."""
        ckpt = manifest.get("checkpoint")
        if not ckpt:
            return student_for(SEEDED, manifest["variant"])
        path = Path(ckpt["path"])
        if not path.is_file():
            raise UserError(f"{path}, the checkpoint {folder} was exported from, is missing; "
                            "restore it, or export again")
        chosen = student_for(path, manifest["variant"])
        if chosen.sha256 != ckpt.get("sha256"):
            raise UserError(f"{path} has changed since {folder} was exported from it (its "
                            "sha256 differs from the manifest's); export again")
        return cls(chosen.student, chosen.variant, True, chosen.checkpoint, ckpt.get("name"),
                   chosen.sha256)


def student_for(ckpt: str | Path | None, variant: str | None,
                default: str = DEFAULT_VARIANT) -> ChosenStudent:
    """The student a command runs.

    ``ckpt`` a file: that checkpoint. ``ckpt`` None: the shipped trained student when the
    variant asked for (or ``default``) is its variant, else the seeded untrained student of
    that variant. ``ckpt`` == SEEDED: the seeded untrained student, asked for by name.
    """
    name = variant or default
    seeded = ckpt is not None and str(ckpt) == SEEDED
    if ckpt and not seeded:
        loaded = load_checkpoint(ckpt, variant)
        return ChosenStudent(loaded.student, loaded.variant, True, Path(ckpt).resolve(),
                             sha256=loaded.sha256)
    if seeded or name != DEFAULT_VARIANT:
        return ChosenStudent(build_student(get_variant(name).config, seed=0), name, False)
    if not DEFAULT_CHECKPOINT.is_file():
        raise CheckpointError(
            f"the default trained student {DEFAULT_CHECKPOINT} is missing: it ships in the "
            "repository's models/ folder (install with pip install -e from a checkout), or "
            f"pass --ckpt FILE, or --ckpt {SEEDED} for the seeded untrained student")
    loaded = load_checkpoint(DEFAULT_CHECKPOINT, DEFAULT_VARIANT)
    return ChosenStudent(loaded.student, loaded.variant, True, DEFAULT_CHECKPOINT, DEFAULT_NAME,
                         loaded.sha256)


def manifest_student(manifest: dict, folder: Path | str = "the export") -> Student:
    """``ChosenStudent.from_manifest``'s network."""
    return ChosenStudent.from_manifest(manifest, folder).student
