"""Where the kernels cache their machine code (fpsim.kernels)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time

import pytest
from numba.core.registry import CPUDispatcher

import fpsim.kernels

#: The CPU kernel modules with jitted functions (the CUDA ones need numba.cuda and do not cache;
#: bitcast holds LLVM intrinsics only).
MODULES = ("accumulate", "arith", "batched", "bits", "cpu", "fixed", "histogram", "rng", "round",
           "scaled", "tensor_core")


def test_every_kernel_module_is_checked():
    """A new kernel module must be imported inside fpsim.kernels' cache context (and listed
    here): otherwise it caches beside itself, keyed on its own file."""
    here = os.path.dirname(fpsim.kernels.__file__)
    files = {f[:-3] for f in os.listdir(here) if f.endswith(".py")}
    assert files - {"__init__", "bitcast", "cuda", "cuda_hw"} == set(MODULES)


def _dispatchers(name):
    mod = importlib.import_module(f"fpsim.kernels.{name}")
    return [(f"{name}.{attr}", obj) for attr, obj in vars(mod).items()
            if isinstance(obj, CPUDispatcher) and obj.__module__ == mod.__name__]


@pytest.mark.parametrize("name", MODULES)
def test_every_kernel_caches_under_the_source_hash(name):
    """Numba keys a cached kernel on its own file only; a kernel that inlines a changed scalar
    core from another file would load stale code. Every kernel must therefore cache in the
    folder named by the hash of all kernel sources, whatever module imported it first."""
    # Another module's own cache folder would be this module's __pycache__ (numba's default).
    expected = os.path.realpath(fpsim.kernels._cache_dir())
    found = _dispatchers(name)
    assert found, f"no kernels found in fpsim.kernels.{name}"
    wrong = {label: disp._cache._cache_path for label, disp in found
             if disp._cache is not None and not os.path.realpath(
                 disp._cache._cache_path).startswith(expected)}
    assert not wrong, f"kernels caching outside {expected}: {wrong}"


@pytest.mark.parametrize("name", MODULES)
def test_every_kernel_compiles_under_the_cross_process_lock(name):
    """Every cached kernel compiles holding its lock file (fpsim.kernels._compile_under_lock)."""
    found = _dispatchers(name)
    wrapper = "_compile_under_lock.<locals>.compile"
    unlocked = [label for label, disp in found
                if getattr(disp.compile, "__qualname__", "") != wrapper]
    assert not unlocked, f"kernels compiling without the lock: {unlocked}"


def test_the_cast_kernels_start_the_threading_layer_before_they_load():
    """The segmented cast kernels call parallel=True drivers; loaded from the cache in a process
    whose threading layer has not started, their first call crashed (numba/numba#8578), so
    their compile starts it first (fpsim.kernels._start_threads_on_load), under the lock."""
    from fpsim.kernels import batched
    for disp in batched.SEGMENTS:
        inner = dict(zip(disp.compile.__code__.co_freevars,
                         (c.cell_contents for c in disp.compile.__closure__)))["compile_"]
        assert inner.__qualname__ == "_start_threads_on_load.<locals>.compile", disp


_FIRST_CAST = r"""
import numpy as np
from fpsim.training.casts import Cast, CastContext
x = np.linspace(-3, 3, 10, dtype=np.float32)
ctx = CastContext("s", "weight", "forward", 0, 0, True, True)
(y, st), _ = Cast.parse("fp16").round_many([x, x], [ctx, ctx])
assert np.array_equal(y, x.astype(np.float16).astype(np.float32)) and st.total == 10
print("ok")
"""


def test_a_fresh_process_whose_first_kernel_is_a_cached_cast_kernel_runs(tmp_path):
    """The README's first training example crashed (SIGSEGV) in processes whose first kernel
    was the cast sites' segmented kernel loaded from a cache the test suite had built. The
    crash depends on the cache's history (on the failing cache it happened 3 times of 3, and
    not once after the fix); this runs that first call in two fresh processes, the second
    loading what the first compiled or loaded."""
    script = tmp_path / "first_cast.py"
    script.write_text(_FIRST_CAST)
    for _ in range(2):
        res = subprocess.run([sys.executable, "-X", "faulthandler", str(script)],
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


_RACE = r"""
import os, sys, time
import numpy as np
import fpsim
from fpsim.kernels import cpu
ready, go = sys.argv[1], sys.argv[2]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.01)
fpsim.decode(np.arange(1000, dtype=np.uint16), "bfloat16")
print(sum(cpu.decode.stats.cache_misses.values()), sum(cpu.decode.stats.cache_hits.values()))
"""


def test_processes_sharing_a_cold_cache_compile_a_kernel_once(tmp_path):
    """Two processes that need the same parallel kernel at the same moment, with an empty cache:
    one compiles it, the other waits for the lock and loads the result (without the lock both
    compiled it, and concurrent saves of a parallel kernel can leave cache files that crash the
    process loading them, Numba issue 10128)."""
    script = tmp_path / "race.py"
    script.write_text(_RACE)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / f"ready{i}"), str(go)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    deadline = 600
    t0 = time.monotonic()
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
        assert time.monotonic() - t0 < deadline and all(p.poll() is None for p in procs), \
            [p.communicate() for p in procs if p.poll() is not None]
        time.sleep(0.05)
    go.write_text("")
    outs = [p.communicate(timeout=deadline) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    misses, hits = zip(*(tuple(map(int, out.split())) for out, _ in outs))
    assert sorted(misses) == [0, 1] and sorted(hits) == [0, 1], outs
