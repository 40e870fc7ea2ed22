"""Every CUDA kernel compiles for a real GPU (PTX for compute capability 9.0), with the argument
types its driver launches it with: numba-cuda types and lowers the kernels as it would on a GPU,
which the CUDA simulator never does (it runs kernels as Python). A NumPy function missing from
numba-cuda's device library (``np.isinf`` was one) fails here, not on the GPU machine.

Runs _cuda_compile_check.py in a subprocess; skips, saying why, where numba-cuda and its NVVM
are not installed (``pip install "numba-cuda[cu12]"``; the test extra does not pull in its
several hundred megabytes).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

_SCRIPT = pathlib.Path(__file__).with_name("_cuda_compile_check.py")


def test_every_cuda_kernel_compiles_to_ptx():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = os.pathsep.join([str(_SCRIPT.parent.parent), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(_SCRIPT)], env=env, capture_output=True,
                          text=True, timeout=3000)
    out = proc.stdout + proc.stderr
    if proc.returncode == 2 and out.startswith("SKIP:"):
        pytest.skip(out.strip().splitlines()[0][len("SKIP: "):])
    assert proc.returncode == 0, out[-4000:]
    assert " 0 failed" in out
