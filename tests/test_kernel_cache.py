"""Where the kernels cache their machine code (fpsim.kernels)."""

from __future__ import annotations

import importlib
import os

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
