"""Every CUDA driver family equals the CPU bit for bit, under the CUDA simulator, one test per
driver family and mode (tests/_cudasim_cases.py lists them).

numba's simulator must be chosen before numba.cuda is imported, and this session has imported
numba already, so the cases run in one subprocess per session with NUMBA_ENABLE_CUDASIM=1
(_cudasim_check.py), which writes each case's result to a JSON file; each test here reads its
own case, so one mismatch fails one test and hides no other. No GPU is needed. Without
numba-cuda's simulator every test skips, saying why.

The subprocess starts at collection, in the background (conftest.py: one test process starts it,
and these tests are moved to the end of the run): with a cold kernel cache it compiles the CPU
kernels it compares against for minutes, and a test process waiting for it meanwhile would
leave its core idle.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _cudasim_cases import case_ids  # noqa: E402

_SCRIPT = pathlib.Path(__file__).with_name("_cudasim_check.py")
#: Longest the simulator run may take (a cold kernel cache on a loaded 2-core machine: ~15 min).
TIMEOUT_S = 2400


def _run_simulator(path: pathlib.Path) -> str:
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    env["PYTHONPATH"] = os.pathsep.join([str(_SCRIPT.parent.parent), env.get("PYTHONPATH", "")])
    try:
        proc = subprocess.run([sys.executable, str(_SCRIPT), str(path)], env=env,
                              capture_output=True, text=True, timeout=TIMEOUT_S)
        return proc.stdout[-3000:] + proc.stderr[-3000:]
    except subprocess.TimeoutExpired as e:
        return f"the simulator run timed out after {e.timeout} s"


def shared_dir(config) -> pathlib.Path:
    """The folder every test process of this run can see: pytest's base temp, or under
    pytest-xdist the folder holding each worker's."""
    base = config._tmp_path_factory.getbasetemp()
    return base.parent if hasattr(config, "workerinput") else base


def start_in_background(folder: pathlib.Path) -> threading.Thread:
    """Run the simulator in a thread of this process: results to ``folder/cudasim-results.json``,
    its output's tail to ``cudasim-output.txt``, then ``cudasim.done``."""
    def run():
        out = "the simulator run raised before it ended"
        try:
            out = _run_simulator(folder / "cudasim-results.json")
        finally:
            (folder / "cudasim-output.txt").write_text(out)
            (folder / "cudasim.done").write_text("done")
    thread = threading.Thread(target=run, name="cudasim", daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="session")
def cudasim_results(request):
    """The results of every case, from the one simulator run of this test run (started at
    collection by conftest.py), waited for."""
    folder = shared_dir(request.config)
    done = folder / "cudasim.done"
    deadline = time.monotonic() + TIMEOUT_S + 60
    while not done.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"the simulator run did not finish within {TIMEOUT_S + 60} s "
                        f"(no {done})")
        time.sleep(0.5)
    out = (folder / "cudasim-output.txt").read_text()
    path = folder / "cudasim-results.json"
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
