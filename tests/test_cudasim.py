"""Every CUDA driver family equals the CPU bit for bit, under the CUDA simulator, one test per
driver family and mode (tests/_cudasim_cases.py lists them).

numba's simulator must be chosen before numba.cuda is imported, and this session has imported
numba already, so the cases run in one subprocess per session with NUMBA_ENABLE_CUDASIM=1
(_cudasim_check.py), which writes each case's result to a JSON file; each test here reads its
own case, so one mismatch fails one test and hides no other. No GPU is needed. Without
numba-cuda's simulator every test skips, saying why.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _cudasim_cases import case_ids  # noqa: E402

_SCRIPT = pathlib.Path(__file__).with_name("_cudasim_check.py")


def _run_simulator(path: pathlib.Path) -> str:
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    env["PYTHONPATH"] = os.pathsep.join([str(_SCRIPT.parent.parent), env.get("PYTHONPATH", "")])
    try:
        proc = subprocess.run([sys.executable, str(_SCRIPT), str(path)], env=env,
                              capture_output=True, text=True, timeout=1800)
        return proc.stdout[-3000:] + proc.stderr[-3000:]
    except subprocess.TimeoutExpired as e:
        return f"the simulator run timed out after {e.timeout} s"


@pytest.fixture(scope="session")
def cudasim_results(tmp_path_factory, worker_id):
    """The results of every case: one subprocess run for the whole test run (the simulator's
    start and the CPU kernels' loading are paid once). Under pytest-xdist the workers share one
    run: the first to take the lock runs the simulator, the others wait for its file."""
    import fcntl

    shared = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        shared = shared.parent  # the directory all workers' base temps live in
    path, log = shared / "cudasim-results.json", shared / "cudasim-output.txt"
    with open(shared / "cudasim.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not log.exists():
            log.write_text(_run_simulator(path))
        out = log.read_text()
    results = json.loads(path.read_text()) if path.exists() else {}
    if "__skip__" in results:
        pytest.skip(results["__skip__"])
    return results, out


@pytest.mark.parametrize("case", case_ids())
def test_cuda_equals_cpu_under_simulator(cudasim_results, case):
    results, out = cudasim_results
    assert case in results, f"case {case} did not run; the simulator run ended with:\n{out}"
    r = results[case]
    assert r["ok"], f"{case}: CUDA differs from CPU: {r['detail']}"
