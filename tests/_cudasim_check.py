"""Run by test_cudasim.py, once per test session, in a subprocess with NUMBA_ENABLE_CUDASIM=1:
every case of _cudasim_cases.py, CUDA driver against CPU driver bit for bit (values, Stats,
codes, flags), each case's result written to a JSON file.

Usage: ``NUMBA_ENABLE_CUDASIM=1 python tests/_cudasim_check.py RESULTS.json [CASE_ID ...]``,
or on a real GPU (``benchmarks/gpu_check.sh``), without the simulator:
``python tests/_cudasim_check.py --device RESULTS.json [CASE_ID ...]``. On the device the
inputs are larger (65,536 values per quantize case, 4,096 operands per elementwise op).

The JSON maps each case id to ``{"ok": bool, "detail": str, "seconds": float}``; a case that
raises is a failure with the traceback as its detail, and the others still run. The file is
rewritten after every case, so a run cut short keeps what it finished. When the simulator
cannot run, the file holds ``{"__skip__": reason}`` instead.

The simulator runs every thread as Python, so the inputs are small (400 values): the kernels'
logic is the CPU's scalar core either way; what this checks is the drivers (indexing, counters
of stochastic rounding, per-block statistics, flags, scratch rows, the dispatch and conversions).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cudasim_cases import MATMUL, MODES, OPS, QUANTIZE_FORMATS, case_ids  # noqa: E402


def _bits(a):
    """Bit patterns of a float array (NaN payloads and signed zeros compare exactly)."""
    a = np.asarray(a)
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def _diff(what, got, want) -> str:
    """'' when ``got`` and ``want`` are equal arrays bit for bit, else where they first differ."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape or got.dtype != want.dtype:
        return f"{what}: {got.dtype}{got.shape} != {want.dtype}{want.shape}"
    g = _bits(got) if got.dtype.kind == "f" else got
    w = _bits(want) if want.dtype.kind == "f" else want
    bad = np.flatnonzero((g != w).reshape(-1))
    if not bad.size:
        return ""
    i = int(bad[0])
    return (f"{what}: {bad.size} of {g.size} differ, first at flat index {i}: "
            f"cuda {got.reshape(-1)[i]!r} cpu {want.reshape(-1)[i]!r}")


class Runner:
    """Inputs shared by the cases, and one method per case family."""

    def __init__(self, n: int = 400, m: int = 96):
        from numba import cuda

        import fpsim
        from fpsim.kernels import cpu, cuda as kcuda
        self.cuda, self.fpsim, self.cpu, self.kcuda = cuda, fpsim, cpu, kcuda
        rng = np.random.default_rng(0)
        x64 = rng.standard_normal(n) * np.exp2(rng.uniform(-40, 40, n))
        x64[:8] = [0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, 1e-310, 65520.0]
        self.x64, self.x32 = x64, x64.astype(np.float32)
        ops = {k: fpsim.quantize(rng.standard_normal(m) * np.exp2(rng.integers(-16, 16, m)),
                                 "float16") for k in "abc"}
        ops["a"][:6] = [0.0, -0.0, np.inf, np.nan, 65504.0, 2.0 ** -24]
        ops["b"][:6] = [-0.0, 0.0, -np.inf, 1.0, 65504.0, -(2.0 ** -24)]
        self.ops = ops
        self.A = fpsim.quantize(rng.standard_normal((4, 9)), "float16")
        self.B = fpsim.quantize(rng.standard_normal((9, 3)), "float16")

    def run(self, cid: str) -> str:
        """Run case ``cid``: '' when CUDA equals CPU, else what differs."""
        kind, _, rest = cid.partition("-")
        if kind == "quantize" and rest.startswith("driver-"):
            mode, stats = rest[len("driver-"):].split("-")
            return self.quantize_driver(MODES.index(mode), stats == "stats")
        if kind == "quantize":
            return self.quantize_api(rest.rsplit("-", 1)[1])
        if kind == "encode":
            return self.encode_api(rest.rsplit("-", 1)[1])
        if kind == "decode":
            return self.decode_api()
        if cid == "elementwise-nonvalue-refused":
            return self.nonvalue_refused()
        if kind == "elementwise":
            op, mode = rest.split("-")
            return self.elementwise(op, mode)
        if kind == "matmul":
            return self.matmul(MATMUL[rest])
        if kind == "tensorcore":
            return self.tensor_core(rest)
        if kind == "hw":
            return self.hw_compare(rest == "compare-corrupted")
        raise KeyError(f"unknown case {cid!r}")

    def quantize_driver(self, mode: int, stats: bool) -> str:
        """``cuda.quantize`` against ``cpu.quantize``, the same call: formats x carriers x
        overflow policies, values and (with statistics) Stats."""
        from fpsim.kernels.histogram import STATS_LEN
        from fpsim.kernels.rng import stream_key
        from fpsim.numerics import backend
        from fpsim.numerics.stats import Stats
        problems = []
        for name in QUANTIZE_FORMATS[mode]:
            fmt = self.fpsim.format(name)
            for x in (self.x32, self.x64):
                carrier = "float32" if (x.dtype == np.float32 and fmt.fits_float32) else "float64"
                xc = x.astype(carrier)
                bits_t = np.uint32 if carrier == "float32" else np.int64
                P = fmt.params(carrier)
                for overflow in (0, 1):
                    res = {}
                    # The CPU's input read-only, as every cast site passes it
                    # (backend.read_only): its drivers are then the suite's compiled ones, not
                    # 14 signatures of their own (35-100 s each to compile with a cold cache).
                    # (The simulator copies kernel arguments back, so its input stays writeable.)
                    for label, drv, xb in (("cuda", self.kcuda, xc.view(bits_t)),
                                           ("cpu", self.cpu, backend.read_only(xc.view(bits_t)))):
                        out = np.empty_like(xc)
                        counts = np.zeros((1, 5), np.int64)
                        hist = np.zeros((1, STATS_LEN if stats else 0), np.int64)
                        drv.quantize(xb, out.view(bits_t), P, mode, overflow,
                                     stream_key(4, 0), 62, counts, hist)
                        res[label] = (out, Stats.from_kernel(xc.size, counts, hist, P)
                                      if stats else None)
                    where = f"{name} {carrier} overflow={overflow}"
                    d = _diff(f"{where} values", res["cuda"][0], res["cpu"][0])
                    if not d and res["cuda"][1] != res["cpu"][1]:
                        d = f"{where} Stats: cuda {res['cuda'][1]} cpu {res['cpu'][1]}"
                    if d:
                        problems.append(d)
        return "; ".join(problems)

    def quantize_api(self, mode: str) -> str:
        """``fpsim.quantize`` of a device array (the dispatch, the carrier rule, device Stats)
        against the host call."""
        from fpsim.numerics import backend
        d32 = self.cuda.to_device(self.x32)
        if not backend.is_device_array(d32) or backend.is_device_array(self.x32):
            return "backend.is_device_array misclassifies a simulator or a numpy array"
        if backend.kind_of(d32) != "cuda" or backend.kind_of(self.x32) != "cpu":
            return "backend.kind_of picks the wrong table column"
        y, st = self.fpsim.quantize(d32, "float16", mode, seed=9, stats=True)
        w, wst = self.fpsim.quantize(self.x32, "float16", mode, seed=9, stats=True)
        d = _diff("values", y.copy_to_host(), w)
        return d or ("" if st == wst else f"Stats: cuda {st} cpu {wst}")

    def encode_api(self, mode: str) -> str:
        """``fpsim.encode`` of a device array (int64 device codes) against the host call."""
        c = self.fpsim.encode(self.cuda.to_device(self.x32), "float8_e5m2", mode, seed=9)
        want = self.fpsim.encode(self.x32, "float8_e5m2", mode, seed=9)
        return _diff("codes", c.copy_to_host(), want.astype(np.int64))

    def decode_api(self) -> str:
        """``fpsim.decode`` of device codes against the host call."""
        codes = np.ascontiguousarray(np.arange(1 << 16, dtype=np.uint16)[::7])
        v = self.fpsim.decode(self.cuda.to_device(codes), "bfloat16")
        return _diff("values", v.copy_to_host(), self.fpsim.decode(codes, "bfloat16"))

    def elementwise(self, op: str, mode: str) -> str:
        """One op in one mode on device operands against the host: values and IEEE flags."""
        fn = getattr(self.fpsim, op)
        dev = [self.cuda.to_device(self.ops[k]) for k in OPS[op]]
        got, gf = fn(*dev, "float16", mode, flags=True, seed=5)
        want, wf = fn(*[self.ops[k] for k in OPS[op]], "float16", mode, flags=True, seed=5)
        return _diff("values", got.copy_to_host(), want) or _diff("flags", gf.copy_to_host(), wf)

    def nonvalue_refused(self) -> str:
        """A device operand that is not a value of the format: the host's ValueError."""
        msg = {}
        for label, to in (("cuda", self.cuda.to_device), ("cpu", np.asarray)):
            try:
                self.fpsim.add(to(np.array([0.1])), to(np.array([1.0])), "float16")
                msg[label] = "no error"
            except ValueError as e:
                msg[label] = str(e)
        ok = msg["cuda"] == msg["cpu"] and "index (0,)" in msg["cuda"]
        return "" if ok else f"cuda: {msg['cuda']!r}; cpu: {msg['cpu']!r}"

    def matmul(self, kw: dict) -> str:
        """The device model kernel against the host model kernel (``fast=False``)."""
        got = self.fpsim.matmul(self.cuda.to_device(self.A), self.cuda.to_device(self.B), **kw)
        want = self.fpsim.matmul(self.A, self.B, fast=False, **kw)
        return _diff("values", got.copy_to_host(), want)

    def tensor_core(self, name: str) -> str:
        """The device tensor-core kernel against the host one: wide-range operands with
        subnormals, a partial last block, an addend, and a row and a column with NaN / Inf."""
        tc = self.fpsim.tensor_core(name)
        rng = np.random.default_rng(1)
        q = self.fpsim.quantize
        A = q(rng.standard_normal((5, 37)) * np.exp2(rng.integers(-12, 6, (5, 37))),
              tc.input_format, overflow="saturate")
        B = q(rng.standard_normal((37, 4)) * np.exp2(rng.integers(-12, 6, (37, 4))),
              tc.input_format, overflow="saturate")
        C = q(rng.standard_normal((5, 4)), tc.output_format)
        A[1, 3] = np.nan
        B[2, 3] = np.inf if tc.input_format.has_inf else np.nan
        got = self.fpsim.matmul(self.cuda.to_device(A), self.cuda.to_device(B), preset=name,
                                c=self.cuda.to_device(C))
        want = self.fpsim.matmul(A, B, preset=name, c=C)
        return _diff("values", got.copy_to_host(), want)

    def hw_compare(self, corrupt: bool) -> str:
        """The hardware-validation compare kernel (``fpsim validate hardware``), fed with
        "hardware" results of numpy's float16 products (IEEE, round to nearest even): no
        mismatch, or one corrupted result found with its index."""
        from fpsim.kernels import cuda_hw
        from fpsim.numerics.arith import _wide
        f16 = self.fpsim.format("float16")
        P, W = f16.params("float64"), _wide(f16).params("float64")
        k0, nn = 0x3C00_3A00, 512  # pairs around 1.0
        kk = np.arange(k0, k0 + nn, dtype=np.int64)
        a = (kk >> 16).astype(np.uint16).view(np.float16)
        b = (kk & 0xFFFF).astype(np.uint16).view(np.float16)
        with np.errstate(all="ignore"):
            codes = (a * b).view(np.uint16).copy()
        if corrupt:
            codes[77] ^= 1
        mism = np.zeros(1, np.int64)
        first = np.full(cuda_hw.KEEP, -1, np.int64)
        cuda_hw.compare_op[cuda_hw.blocks(nn), cuda_hw.THREADS](2, k0, nn, 0, codes, P, W, 0x7C00,
                                                              0x3FF, mism, first)
        got, want = (int(mism[0]), int(first[0])), ((1, k0 + 77) if corrupt else (0, -1))
        return "" if got == want else f"(mismatches, first index) {got} != {want}"


def _write(path, results):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1)
    os.replace(tmp, path)  # a reader never sees half a file


def main(argv) -> int:
    """Run the cases named in ``argv[1:]`` (default: all), results to ``argv[0]``; with a
    leading ``--device``, on the real GPU instead of the simulator."""
    device = bool(argv) and argv[0] == "--device"
    argv = argv[1:] if device else argv
    path, wanted = argv[0], (argv[1:] or case_ids())
    simulated = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
    if simulated == device:
        _write(path, {"__skip__": "--device needs NUMBA_ENABLE_CUDASIM unset" if device else
                      "NUMBA_ENABLE_CUDASIM=1 must be set before numba is imported"})
        return 0
    try:
        import fpsim.kernels.cuda  # noqa: F401  (first: it makes numba.cuda importable here)
        from numba import cuda
        if not cuda.is_available():
            raise RuntimeError("numba.cuda.is_available() is False"
                               + ("" if device else " under the simulator"))
        runner = Runner(1 << 16, 1 << 12) if device else Runner()
    except ImportError as e:  # numba-cuda not installed, or failing to import here
        _write(path, {"__skip__": f"numba-cuda's simulator is unavailable ({type(e).__name__}: {e})"})
        return 0
    except Exception:  # noqa: BLE001 - setup failing is every case failing: say how
        tb = traceback.format_exc()
        _write(path, {cid: {"ok": False, "detail": "setup failed:\n" + tb, "seconds": 0.0}
                      for cid in wanted})
        return 1
    results = {}
    for cid in wanted:
        t0 = time.perf_counter()
        try:
            detail = runner.run(cid)
        except Exception:  # noqa: BLE001 - one case raising must not hide the others
            detail = "raised:\n" + traceback.format_exc()
        results[cid] = {"ok": not detail, "detail": detail,
                        "seconds": round(time.perf_counter() - t0, 3)}
        print(f"{cid}: {'equal' if not detail else 'MISMATCH ' + detail[:200]}", flush=True)
        _write(path, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
