"""Child processes that do not outlive the command that started them.

The TensorFlow converter, the GPU worker and the host benchmark child write into folders
their parent cleans up; if the parent is killed (SIGKILL, or SIGTERM while it waits),
an orphan would go on writing. On Linux the kernel kills the child when the parent dies
(``PR_SET_PDEATHSIG``); elsewhere this is a no-op.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Looked up once, here in the parent: the child only calls it. A dlopen between fork and
# exec, in a parent with many threads (torch, the export's pool), could deadlock.
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def child_setup(nice: int = 0) -> Callable[[], None] | None:
    """A ``preexec_fn`` for subprocess: the child dies with its parent (and is niced).

    The kernel sends the signal when the *thread* that started the child ends; the long-
    lived workers are started from the main thread, or from a pool thread that outlives
    them (the export's GPU gate closes its session before its thread ends)."""
    if _PRCTL is None and not nice:
        return None
    parent = os.getpid()

    def setup() -> None:
        if _PRCTL is not None:
            _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)
        if nice:
            os.nice(nice)

    return setup


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # malloc.h


def reuse_freed_memory() -> None:
    """Keeps glibc from handing large freed blocks back to the kernel at once.

    By default every block above a few MB is its own mmap: each PyTorch op at 480x864
    then maps fresh pages and faults them in, and a step spent a third of its time in the
    kernel (``time`` of a float32 step: 0.16 s of 0.53 CPU-seconds). With freed blocks
    kept for reuse the same step took 0.19 s instead of 0.28 s of wall time. The process's
    resident memory then stays near its peak until it exits. A no-op off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)
    libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1)
