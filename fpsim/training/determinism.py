"""Results that do not depend on thread counts.

fpsim's own kernels are deterministic for any ``NUMBA_NUM_THREADS``: random bits are a function
of (key, element index), chunks own disjoint outputs, counts are integer sums. The float32 GEMMs
of the engine (forward and backward of Linear / Conv2d, attention) run on numpy's BLAS, and an
OpenBLAS build may pick different kernels and summation splits for different thread counts, so
the same seed gave different weights under ``OPENBLAS_NUM_THREADS=1`` and the default. The
training loop therefore runs every step with BLAS pinned to :data:`BLAS_THREADS` thread(s)
(:func:`pinned_blas`, through threadpoolctl). At the model sizes of the zoo the GEMMs are small,
and spreading them over threads only adds synchronisation (docs/performance.md has the
measurement), so one thread is also the faster choice.

What is left is the BLAS build itself (library, version, the CPU kernel it dispatches to):
:func:`blas_info` is recorded with every run, and resuming a run under a different BLAS warns.
"""

from __future__ import annotations

import contextlib
import os

#: BLAS threads while a training step runs.
BLAS_THREADS = 1


def blas_info() -> list[dict]:
    """numpy's BLAS library (the one the engine's products call), as a list of
    ``{"api", "version", "architecture", "prefix", "threads", "pinned_threads"}`` (``threads``:
    the library's default thread count; the loop pins :data:`BLAS_THREADS` while it trains).

    Other BLAS copies in the process (scipy wheels bring their own OpenBLAS, loaded with
    ``scipy.stats`` or ``scipy.linalg``) are left out: whether one is loaded depends on import
    order, not on the run, and listing them made a resumed run look as if its BLAS changed.
    When no library lies in numpy's folders (a numpy linked to a system BLAS) all are listed.
    """
    import numpy
    from threadpoolctl import threadpool_info

    found = [d for d in threadpool_info() if d.get("user_api") == "blas"]
    here = os.path.dirname(os.path.realpath(numpy.__file__))
    own = [d for d in found if os.path.realpath(d.get("filepath") or "").startswith(
        (here + os.sep, here + ".libs" + os.sep))]
    return [{"api": d.get("internal_api"), "version": d.get("version"),
             "architecture": d.get("architecture"), "prefix": d.get("prefix"),
             "threads": d.get("num_threads"), "pinned_threads": BLAS_THREADS}
            for d in own or found]


def same_blas(recorded: list[dict] | None, current: list[dict]) -> bool:
    """True when two :func:`blas_info` results name the same builds (thread defaults aside)."""
    def key(info):
        return sorted((d.get("api"), d.get("version"), d.get("architecture"), d.get("prefix"))
                      for d in info or [])
    return key(recorded) == key(current)


#: The recorded versions (see ``fpsim.training.loop.versions``) that can change a run's bits.
BIT_SETTINGS = {"fpsim": "fpsim", "numpy": "numpy", "numba": "numba", "python": "Python",
                "numba_threads": "Numba threads"}


def setting_differences(recorded: dict, current: dict) -> list[str]:
    """The bit-affecting settings that differ between two recorded ``versions`` dicts, in
    words (``Numba threads 2 -> 1``); the BLAS build and its pinned thread count included.
    Numba's thread count is listed although fpsim's kernels do not depend on it: a resumed run
    is flagged unless its settings are the recorded ones."""
    out = [f"{label} {recorded.get(key)} -> {current.get(key)}"
           for key, label in BIT_SETTINGS.items() if recorded.get(key) != current.get(key)]
    rec_blas, cur_blas = recorded.get("blas"), current.get("blas")
    if not same_blas(rec_blas, cur_blas):
        out.append(f"BLAS {_blas_words(rec_blas)} -> {_blas_words(cur_blas)}")
    pinned = [sorted(str(d.get("pinned_threads")) for d in b or []) for b in (rec_blas, cur_blas)]
    if pinned[0] != pinned[1]:
        out.append(f"BLAS threads while training {', '.join(pinned[0]) or '?'} -> "
                   f"{', '.join(pinned[1]) or '?'}")
    return out


def _blas_words(info) -> str:
    return ", ".join(f"{d.get('api')} {d.get('version')} ({d.get('architecture')})"
                     for d in info or []) or "unknown"


@contextlib.contextmanager
def pinned_blas(threads: int | None = None):
    """Inside, every loaded BLAS library uses ``threads`` threads (default
    :data:`BLAS_THREADS`; restored afterwards)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=BLAS_THREADS if threads is None else threads,
                           user_api="blas"):
        yield
