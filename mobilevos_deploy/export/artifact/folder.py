"""The export folder: built in a staging folder beside the target, moved into place only
when every gate passed, so a failed or interrupted export leaves no partial artifacts and a
rerun replaces the old folder whole. Only an empty folder, or an export of ours holding
nothing its manifest does not list, is ever replaced."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ...errors import UserError
from ...files import make_temp_dir, replace_dir
from .manifest import MANIFEST
from .verify import foreign_entries


def check_replaceable(folder: Path) -> None:
    """Only an empty folder, or an export of ours holding nothing its manifest does not
    list, may be replaced: anything else may be a user's files."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise UserError(f"{folder} exists and is a file, not an export folder; refusing to "
                        "replace it. Choose another --out.")
    try:
        foreign = foreign_entries(folder)
    except OSError as exc:
        raise UserError(f"cannot read {folder} ({exc.strerror}); choose another --out") from None
    if foreign:
        ours = (folder / MANIFEST).is_file() and MANIFEST not in foreign
        what = (f"{len(foreign)} entries its {MANIFEST} does not list" if ours
                else f"no valid {MANIFEST} of ours")
        raise UserError(f"{folder} exists and is not an export folder ({what}: "
                        f"{', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}); "
                        "refusing to replace it. Choose another --out, or move those "
                        "files away.")


@contextmanager
def staged(folder: Path) -> Iterator[Path]:
    """A staging folder beside ``folder`` (checked replaceable first), removed if the block
    fails; ``publish`` moves it into place."""
    check_replaceable(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = make_temp_dir(f".staging-{folder.name}-", folder.parent)
    except OSError as exc:
        raise UserError(f"cannot create the output folder {folder}: {exc.strerror} "
                        f"({exc.filename}). Choose another --out.") from None
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def publish(staging: Path, final: Path) -> None:
    """``staging`` becomes ``final``; an earlier export there is replaced whole."""
    if final.exists():
        check_replaceable(final)
    replace_dir(staging, final)
