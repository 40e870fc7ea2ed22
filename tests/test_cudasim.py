"""Every CUDA driver family equals the CPU bit for bit, under the CUDA simulator.

numba's simulator must be chosen before numba.cuda is imported, so the check runs in a subprocess
with NUMBA_ENABLE_CUDASIM=1 (it never needs a GPU). Checks on a real device come with the CUDA backend.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys


def test_cuda_drivers_equal_cpu_under_simulator():
    script = pathlib.Path(__file__).with_name("_cudasim_check.py")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    env["PYTHONPATH"] = os.pathsep.join([str(script.parent), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "cudasim parity: all cases equal" in proc.stdout
