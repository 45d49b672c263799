"""Atomic file writes (a temp file in the target's folder, then os.replace), hashing, and the
up-front check that an output location can be written at all.

Files and folders we create get the modes the user's umask gives (0644 / 0755 under the
usual 022), as open() and mkdir() would: tempfile's private 0600 / 0700 is undone."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError


def _umask() -> int:
    """The process umask, read from /proc (setting it to read it would race with threads
    creating files meanwhile); elsewhere the set-and-restore fallback."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def public_mode(path: Path, folder: bool = False) -> None:
    """Give a file or folder made by tempfile the mode open() or mkdir() would have given."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


def make_temp_dir(prefix: str, parent: Path) -> Path:
    """tempfile.mkdtemp beside the target, with the mode mkdir would give it."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    public_mode(path, folder=True)
    return path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yields a temp path beside ``target``; on success it replaces ``target``, else vanishes."""
    target = Path(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    public_mode(tmp_path)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_writable(path: str | os.PathLike[str], what: str, *, folder: bool = False) -> None:
    """Raise a UserError now, before any work, when ``path`` (a file, or a folder with
    ``folder``) could not be written: an existing entry of the other kind, a file where a
    parent folder must be, or a folder this user cannot write in. Leaves nothing behind (a
    probe file is created and removed; no folder is made)."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise UserError(f"{what} {path} is a file, not a folder; choose another location")
    if not folder and path.is_dir():
        raise UserError(f"{what} {path} is a folder, not a file; choose another location")
    ancestor = path if folder else path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{what} {path} cannot be written: {ancestor} is a file, not a folder; "
                        "choose another location")
    try:
        fd, probe = tempfile.mkstemp(prefix=".mvos-write-check.", dir=ancestor)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{what} {path} cannot be written: no write access to {ancestor} "
                        f"({exc.strerror}); choose another location") from None


def real_out(path: str | os.PathLike[str]) -> Path:
    """An output path with its symlinks resolved: an output replaces what a link points to,
    and the link stays."""
    return Path(os.path.realpath(path))


_RENAME_EXCHANGE = 2  # linux/fs.h
_LIBC = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the
    system cannot."""
    global _LIBC
    try:
        import ctypes

        if _LIBC is None:
            _LIBC = ctypes.CDLL(None, use_errno=True)
        renameat2 = _LIBC.renameat2
    except (OSError, AttributeError):
        return False
    at_cwd = -100  # AT_FDCWD
    if renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    return False


def replace_dir(staging: Path, final: Path) -> None:
    """``staging`` becomes ``final``, an earlier folder there is replaced whole. Where the
    system swaps two paths in one step, no moment has neither folder in place; elsewhere
    the earlier one is moved aside first and moved back if the new one cannot take its
    place. Either way an interruption loses neither."""
    if not final.exists():
        os.replace(staging, final)
        return
    if _exchange(staging, final):
        shutil.rmtree(staging, ignore_errors=True)  # now the earlier folder
        return
    old = final.with_name(f".old-{final.name}-{os.getpid()}")
    os.replace(final, old)
    try:
        os.replace(staging, final)
    except BaseException:
        os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)
