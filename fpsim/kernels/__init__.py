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


#: Lock files of the kernels this process is compiling (a lock is taken once per process).
_held_locks: set = set()


def _compile_under_lock(dispatcher, lock_dir: str) -> None:
    """Make ``dispatcher.compile`` hold a lock file of its own in the kernel cache while it
    looks in the cache, compiles and saves, so that processes sharing the cache compile each
    kernel one at a time: the second one waits and then loads the first one's result.

    Two processes compiling the same ``parallel=True`` function at once can leave cache files
    that do not belong together, and a process loading them crashes (numba/numba#10128). It
    also saves the second compilation. Deadlock-free: a
    process takes Numba's (in-process) compiler lock before any of these, so only one thread
    of a process holds them, and a kernel's compilation only waits for the kernels it calls,
    never for its callers (the call graph has no cycles)."""
    import fcntl
    from numba.core.compiler_lock import global_compiler_lock

    compile_ = dispatcher.compile
    fn = dispatcher.py_func
    path = os.path.join(lock_dir, f"{fn.__module__}.{fn.__qualname__}.lock")

    def compile(sig):
        with global_compiler_lock:
            if path in _held_locks:  # a nested compilation of the same kernel
                return compile_(sig)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:  # a cache that cannot be written is not shared either
                return compile_(sig)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                _held_locks.add(path)
                try:
                    return compile_(sig)
                finally:
                    _held_locks.discard(path)
            finally:
                os.close(fd)  # (releases the lock; the kernel releases it if we die)

    dispatcher.compile = compile


def _start_threads_on_load(dispatcher) -> None:
    """Make ``dispatcher.compile`` start Numba's threading layer before it compiles or loads.

    A kernel that is not ``parallel=True`` but calls one that is (the segmented cast kernels of
    :mod:`.batched` call the quantize drivers) crashes with SIGSEGV on its first call when it
    is loaded from the cache in a process that has not started the threading layer yet:
    loading a ``parallel=True`` kernel from the cache starts it, loading its caller does not
    (numba/numba#8578, open). Starting it first is what loading the callee would have done;
    starting it after the load is too late (measured: the first call still crashes).
    """
    from numba.np.ufunc.parallel import _launch_threads

    compile_ = dispatcher.compile

    def compile(sig):
        # (before the load: the loaded code's calls into the threading layer are linked
        # against the symbols that starting it registers; idempotent after the first call)
        _launch_threads()
        return compile_(sig)

    dispatcher.compile = compile


def _lock_compilations(modules) -> None:
    """:func:`_compile_under_lock` for every cached CPU kernel of ``modules`` (POSIX only)."""
    if os.name != "posix":
        return
    lock_dir = os.path.join(numba.config.CACHE_DIR, "locks")
    try:
        os.makedirs(lock_dir, exist_ok=True)
    except OSError:
        return
    for module in modules:
        for obj in vars(module).values():
            if (isinstance(obj, numba.core.registry.CPUDispatcher)
                    and obj.py_func.__module__ == module.__name__):
                _compile_under_lock(obj, lock_dir)


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
    for _kernel in batched.SEGMENTS:  # (the kernels that call parallel=True kernels; inside
        _start_threads_on_load(_kernel)  # the lock, which wraps every kernel's compile last)
    _lock_compilations((accumulate, arith, batched, bits, cpu, fixed, histogram, rng, round,
                        scaled, tensor_core))
