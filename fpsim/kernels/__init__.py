"""Jitted code only. The scalar cores (:mod:`.round`, :mod:`.rng`, :mod:`.bits`) are plain ``@njit``
functions that the CPU drivers (:mod:`.cpu`) and the CUDA drivers call unchanged.

Numba's on-disk cache (``cache=True``) is keyed on the *caller's* source file only: a driver whose
inlined scalar core changed would be loaded stale. So the kernels cache into a folder named by a
hash of every source file they are built from, and a change to any of them starts a fresh cache.
The folder is set only while the kernel modules are decorated; numba's global setting for other
code is restored afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import shutil

import numba

_HERE = pathlib.Path(__file__).resolve().parent
#: Every source file the compiled kernels depend on.
_SOURCES = sorted(_HERE.glob("*.py")) + [_HERE.parent / "numerics" / "modes.py",
                                         _HERE.parent / "numerics" / "format.py"]


def _cache_dir() -> str:
    digest = hashlib.sha256()
    for path in _SOURCES:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    tag = "numba-" + digest.hexdigest()[:16]
    user = os.environ.get("NUMBA_CACHE_DIR")
    if user:
        return os.path.join(user, "fpsim", tag)
    local = _HERE / "__pycache__"
    with contextlib.suppress(OSError):
        local.mkdir(exist_ok=True)
    if os.access(local, os.W_OK):
        for stale in local.glob("numba-*"):  # caches of earlier sources are never valid again
            if stale.name != tag:
                shutil.rmtree(stale, ignore_errors=True)
        return str(local / tag)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fpsim", tag)


@contextlib.contextmanager
def _kernel_cache():
    saved = numba.config.CACHE_DIR
    numba.config.CACHE_DIR = _cache_dir()
    try:
        yield
    finally:
        numba.config.CACHE_DIR = saved


# Every CPU kernel module is imported here, inside the context: a module imported later by
# ``from fpsim.kernels import fixed`` would be decorated outside it and cache in its own
# __pycache__, keyed on its own file only (the stale-inlined-core problem above). The CUDA
# modules need numba.cuda and load on demand (fpsim.numerics.backend).
with _kernel_cache():
    from fpsim.kernels import (accumulate, arith, batched, bits, cpu, fixed, histogram, rng,
                               round, scaled, tensor_core)
