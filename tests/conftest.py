"""Test-suite plumbing: an opt-in log of Numba compilations per test.

``FPSIM_COMPILE_LOG=DIR pytest ...`` makes every test process append one JSON line per
top-level Numba compilation to ``DIR/compile-<pid>.jsonl``: the test, the kernel, its argument
types and the seconds it took (nested compilations are inside their caller's time). With a cold
kernel cache this shows where the suite's compile time goes; with a warm one, which tests still
compile (a signature missing from the cache or from ``fpsim warmup --all``).
"""

from __future__ import annotations

import json
import os
import time

import pytest

# fpsim train/compare warm the kernels up on first use (fpsim.warmup.auto), in parallel
# processes; the suite's processes compile what each test needs instead (the warm-up itself is
# tested in test_warmup.py). Set here, so CLI subprocesses inherit it.
os.environ.setdefault("FPSIM_WARMUP", "0")

_LOG_DIR = os.environ.get("FPSIM_COMPILE_LOG")
_current_test = {"id": "(collection)"}

if _LOG_DIR:
    from numba.core import event

    class _CompileLog(event.Listener):
        """Times the outermost ``numba:compile`` events and writes one line each."""

        def __init__(self, path: str):
            self.path, self.depth, self.t0 = path, 0, 0.0

        def on_start(self, ev):
            if self.depth == 0:
                self.t0 = time.perf_counter()
            self.depth += 1

        def on_end(self, ev):
            self.depth -= 1
            if self.depth:
                return
            disp = ev.data.get("dispatcher")
            name = getattr(getattr(disp, "py_func", None), "__qualname__", repr(disp))
            module = getattr(getattr(disp, "py_func", None), "__module__", "")
            line = {"test": _current_test["id"], "kernel": f"{module}.{name}",
                    "args": str(ev.data.get("args")), "seconds": time.perf_counter() - self.t0}
            with open(self.path, "a") as f:
                f.write(json.dumps(line) + "\n")

    os.makedirs(_LOG_DIR, exist_ok=True)
    event.register("numba:compile",
                   _CompileLog(os.path.join(_LOG_DIR, f"compile-{os.getpid()}.jsonl")))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    _current_test["id"] = item.nodeid
