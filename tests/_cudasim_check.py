"""Run by test_cudasim.py, once per test session, in a subprocess with NUMBA_ENABLE_CUDASIM=1:
every case of _cudasim_cases.py, CUDA driver against CPU driver bit for bit (values, Stats,
codes, flags), each case's result written to a JSON file.

Usage: ``NUMBA_ENABLE_CUDASIM=1 python tests/_cudasim_check.py RESULTS.json [CASE_ID ...]``,
or on a real GPU (``benchmarks/gpu_check.sh``), without the simulator:
``python tests/_cudasim_check.py --device RESULTS.json [CASE_ID ...]``. On the device the
inputs are larger (65,536 values per quantize case, 4,096 operands per elementwise op). A GPU
machine with a cold kernel cache would spend minutes compiling the CPU references, so they can
be computed ahead on any machine, ``python tests/_cudasim_check.py --record REFS.npz``, and
replayed there: ``python tests/_cudasim_check.py --device --expected REFS.npz RESULTS.json``.

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
from _cudasim_cases import (MATMUL, MODES, OPS, QUANTIZE_FORMATS, case_ids,  # noqa: E402
                            torch_case_ids)


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


def _flatten(key: str, v, out: dict) -> None:
    """Store a CPU-side result (array, Stats, str, None or a tuple of them) under ``key`` as
    plain arrays, for an npz file read back with ``allow_pickle=False``."""
    from fpsim.numerics.stats import Stats
    if isinstance(v, tuple):
        out[key + ".tuple"] = np.array(len(v))
        for i, x in enumerate(v):
            _flatten(f"{key}.{i}", x, out)
    elif isinstance(v, Stats):
        out[key + ".stats"] = np.array([getattr(v, f) for f in _STATS_INTS], np.int64)
        out[key + ".hist"] = v.exp_hist
    elif isinstance(v, str):
        out[key + ".str"] = np.array(v)
    elif v is None:
        out[key + ".none"] = np.array(0)
    else:
        out[key + ".arr"] = np.asarray(v)


def _unflatten(key: str, d):
    """The value :func:`_flatten` stored under ``key`` in the npz ``d``."""
    from fpsim.numerics.stats import Stats
    if key + ".tuple" in d:
        return tuple(_unflatten(f"{key}.{i}", d) for i in range(int(d[key + ".tuple"])))
    if key + ".stats" in d:
        return Stats(*(int(i) for i in d[key + ".stats"][:6]), d[key + ".hist"],
                     *(int(i) for i in d[key + ".stats"][6:]))
    if key + ".str" in d:
        return str(d[key + ".str"])
    if key + ".none" in d:
        return None
    return d[key + ".arr"]


#: Stats' integer fields, in the order of its constructor (exp_hist goes between the two groups).
_STATS_INTS = ("total", "underflow", "subnormal", "overflow", "nan", "inexact", "hist_zero",
               "hist_inf", "hist_nan")


class Runner:
    """Inputs shared by the cases, and one method per case family.

    Each case computes a CUDA side and a CPU side. ``role`` says which run: ``"both"`` (the
    simulator, or a GPU computing its own references), ``"record"`` (the CPU side only, every
    result kept for :meth:`save`: no CUDA needed) or ``"replay"`` (the CUDA side against results
    recorded earlier, so that a GPU machine compiles no CPU kernel: a cold CPU kernel cache
    costs 35-100 s per driver signature there).
    """

    def __init__(self, n: int = 400, m: int = 96, role: str = "both", expected=None):
        import fpsim
        from fpsim.kernels import cpu
        self.fpsim, self.cpu, self.role = fpsim, cpu, role
        self.expected, self.recorded, self.key, self.count = expected, {}, "__init__", 0
        if role != "record":
            from numba import cuda

            from fpsim.kernels import cuda as kcuda
            self.cuda, self.kcuda = cuda, kcuda
        rng = np.random.default_rng(0)
        x64 = rng.standard_normal(n) * np.exp2(rng.uniform(-40, 40, n))
        x64[:8] = [0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, 1e-310, 65520.0]
        self.x64, self.x32 = x64, x64.astype(np.float32)

        def inputs():
            ops = tuple(fpsim.quantize(rng.standard_normal(m) * np.exp2(rng.integers(-16, 16, m)),
                                       "float16") for _ in "abc")
            return ops + (fpsim.quantize(rng.standard_normal((4, 9)), "float16"),
                          fpsim.quantize(rng.standard_normal((9, 3)), "float16"))
        a, b, c, self.A, self.B = self.cpu_side(inputs)
        a, b = a.copy(), b.copy()
        a[:6] = [0.0, -0.0, np.inf, np.nan, 65504.0, 2.0 ** -24]
        b[:6] = [-0.0, 0.0, -np.inf, 1.0, 65504.0, -(2.0 ** -24)]
        self.ops = {"a": a, "b": b, "c": c}

    def cpu_side(self, fn):
        """``fn()`` (the CPU reference), or in replay mode the result recorded for this call."""
        key = f"{self.key}/{self.count}"
        self.count += 1
        if self.role == "replay":
            return _unflatten(key, self.expected)
        v = fn()
        if self.role == "record":
            _flatten(key, v, self.recorded)
        return v

    def cuda_side(self, fn):
        """``fn()`` (the device computation), or None when recording."""
        return None if self.role == "record" else fn()

    def save(self, path: str) -> None:
        """Write the recorded CPU results to the npz file ``path``."""
        np.savez_compressed(path, **self.recorded)

    def run(self, cid: str) -> str:
        """Run case ``cid``: '' when CUDA equals CPU (or when only recording), else what
        differs."""
        self.key, self.count = cid, 0
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
            return "" if self.role == "record" else self.hw_compare(rest == "compare-corrupted")
        if kind == "torch":
            family, _, arg = rest.partition("-")
            return getattr(self, "torch_" + family)(arg)
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
                    def one(drv, xb):
                        out = np.empty_like(xc)
                        counts = np.zeros((1, 5), np.int64)
                        hist = np.zeros((1, STATS_LEN if stats else 0), np.int64)
                        drv.quantize(xb, out.view(bits_t), P, mode, overflow,
                                     stream_key(4, 0), 62, counts, hist)
                        return out, (Stats.from_kernel(xc.size, counts, hist, P)
                                     if stats else None)
                    # The CPU's input read-only, as every cast site passes it
                    # (backend.read_only): its drivers are then the suite's compiled ones, not
                    # 14 signatures of their own (35-100 s each to compile with a cold cache).
                    # (The simulator copies kernel arguments back, so its input stays writeable.)
                    got = self.cuda_side(lambda: one(self.kcuda, xc.view(bits_t)))
                    want = self.cpu_side(lambda: one(self.cpu, backend.read_only(xc.view(bits_t))))
                    if got is None:
                        continue
                    where = f"{name} {carrier} overflow={overflow}"
                    d = _diff(f"{where} values", got[0], want[0])
                    if not d and got[1] != want[1]:
                        d = f"{where} Stats: cuda {got[1]} cpu {want[1]}"
                    if d:
                        problems.append(d)
        return "; ".join(problems)

    def quantize_api(self, mode: str) -> str:
        """``fpsim.quantize`` of a device array (the dispatch, the carrier rule, device Stats)
        against the host call."""
        from fpsim.numerics import backend
        w, wst = self.cpu_side(lambda: self.fpsim.quantize(self.x32, "float16", mode, seed=9,
                                                           stats=True))
        if self.role == "record":
            return ""
        d32 = self.cuda.to_device(self.x32)
        if not backend.is_device_array(d32) or backend.is_device_array(self.x32):
            return "backend.is_device_array misclassifies a device or a numpy array"
        if backend.kind_of(d32) != "cuda" or backend.kind_of(self.x32) != "cpu":
            return "backend.kind_of picks the wrong table column"
        y, st = self.fpsim.quantize(d32, "float16", mode, seed=9, stats=True)
        d = _diff("values", y.copy_to_host(), w)
        return d or ("" if st == wst else f"Stats: cuda {st} cpu {wst}")

    def encode_api(self, mode: str) -> str:
        """``fpsim.encode`` of a device array (int64 device codes) against the host call."""
        want = self.cpu_side(lambda: self.fpsim.encode(self.x32, "float8_e5m2", mode, seed=9))
        c = self.cuda_side(lambda: self.fpsim.encode(self.cuda.to_device(self.x32),
                                                     "float8_e5m2", mode, seed=9))
        return "" if c is None else _diff("codes", c.copy_to_host(), want.astype(np.int64))

    def decode_api(self) -> str:
        """``fpsim.decode`` of device codes against the host call."""
        codes = np.ascontiguousarray(np.arange(1 << 16, dtype=np.uint16)[::7])
        want = self.cpu_side(lambda: self.fpsim.decode(codes, "bfloat16"))
        v = self.cuda_side(lambda: self.fpsim.decode(self.cuda.to_device(codes), "bfloat16"))
        return "" if v is None else _diff("values", v.copy_to_host(), want)

    def elementwise(self, op: str, mode: str) -> str:
        """One op in one mode on device operands against the host: values and IEEE flags."""
        fn = getattr(self.fpsim, op)
        want, wf = self.cpu_side(lambda: fn(*[self.ops[k] for k in OPS[op]], "float16", mode,
                                            flags=True, seed=5))
        done = self.cuda_side(lambda: fn(*[self.cuda.to_device(self.ops[k]) for k in OPS[op]],
                                         "float16", mode, flags=True, seed=5))
        if done is None:
            return ""
        got, gf = done
        return _diff("values", got.copy_to_host(), want) or _diff("flags", gf.copy_to_host(), wf)

    def nonvalue_refused(self) -> str:
        """A device operand that is not a value of the format: the host's ValueError."""
        def message(to):
            try:
                self.fpsim.add(to(np.array([0.1])), to(np.array([1.0])), "float16")
                return "no error"
            except ValueError as e:
                return str(e)
        cpu = self.cpu_side(lambda: message(np.asarray))
        dev = self.cuda_side(lambda: message(self.cuda.to_device))
        if dev is None:
            return ""
        ok = dev == cpu and "index (0,)" in dev
        return "" if ok else f"cuda: {dev!r}; cpu: {cpu!r}"

    def matmul(self, kw: dict) -> str:
        """The device model kernel against the host model kernel (``fast=False``)."""
        want = self.cpu_side(lambda: self.fpsim.matmul(self.A, self.B, fast=False, **kw))
        got = self.cuda_side(lambda: self.fpsim.matmul(self.cuda.to_device(self.A),
                                                       self.cuda.to_device(self.B), **kw))
        return "" if got is None else _diff("values", got.copy_to_host(), want)

    def tensor_core(self, name: str) -> str:
        """The device tensor-core kernel against the host one: wide-range operands with
        subnormals, a partial last block, an addend, and a row and a column with NaN / Inf."""
        tc = self.fpsim.tensor_core(name)

        def inputs():
            rng = np.random.default_rng(1)
            q = self.fpsim.quantize
            A = q(rng.standard_normal((5, 37)) * np.exp2(rng.integers(-12, 6, (5, 37))),
                  tc.input_format, overflow="saturate")
            B = q(rng.standard_normal((37, 4)) * np.exp2(rng.integers(-12, 6, (37, 4))),
                  tc.input_format, overflow="saturate")
            C = q(rng.standard_normal((5, 4)), tc.output_format)
            A[1, 3] = np.nan
            B[2, 3] = np.inf if tc.input_format.has_inf else np.nan
            return A, B, C
        A, B, C = self.cpu_side(inputs)
        want = self.cpu_side(lambda: self.fpsim.matmul(A, B, preset=name, c=C))
        got = self.cuda_side(lambda: self.fpsim.matmul(
            self.cuda.to_device(A), self.cuda.to_device(B), preset=name,
            c=self.cuda.to_device(C)))
        return "" if got is None else _diff("values", got.copy_to_host(), want)

    # ---- the PyTorch bridge on CUDA tensors (device only) ------------------------------------
    def _torch_inputs(self, seed=0, dtype=np.float32, n=4096):
        """The values of tests/test_torch.py's inputs (every binade of the tested formats,
        zeros, specials, ties), as numpy."""
        rng = np.random.default_rng(seed)
        x = rng.standard_normal(n) * np.exp2(rng.integers(-30, 20, n))
        x[:8] = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.5, 2.5, 65520.0]
        return x.astype(dtype).reshape(64, -1)

    def _torch(self):
        import torch
        if not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device")
        import fpsim.torch as ft
        return torch, ft

    @staticmethod
    def _host(t) -> np.ndarray:
        """A result tensor's values as numpy (bfloat16 as the float32 it widens to exactly)."""
        import torch
        t = t.detach().cpu()
        if t.dtype == torch.bfloat16:
            return (t.view(torch.int16).numpy().astype(np.uint16).astype(np.uint32)
                    << 16).view(np.float32)
        return t.numpy()

    def torch_quantize(self, fmt: str) -> str:
        """``fpsim.torch.quantize`` of CUDA tensors (float32, float64) against
        ``fpsim.quantize`` of the numpy arrays: every mode, both overflow policies."""
        problems = []
        for dtype in (np.float32,) if fmt == "mxfp8_e4m3" else (np.float32, np.float64):
            x = self._torch_inputs(dtype=dtype)
            for mode in MODES:
                for overflow in (None, "saturate"):
                    want = self.cpu_side(lambda: self.fpsim.quantize(
                        x, fmt, mode, overflow, seed=7, stream=3))
                    if self.role == "record":
                        continue
                    torch, ft = self._torch()
                    got = ft.quantize(torch.from_numpy(x).cuda(), fmt, rounding=mode,
                                      overflow=overflow, seed=7, stream=3)
                    where = f"{np.dtype(dtype).name} {mode} overflow={overflow}"
                    if got.device.type != "cuda" or got.dtype != torch.from_numpy(x).dtype:
                        problems.append(f"{where}: a {got.dtype} tensor on {got.device}")
                        continue
                    d = _diff(where, self._host(got), np.asarray(want, dtype))
                    if d:
                        problems.append(d)
        return "; ".join(problems)

    def torch_arith(self, op: str) -> str:
        """``fpsim.torch.<op>`` of CUDA tensors (the device kernels: flags, no Stats) against
        the numpy path: values and flags, fp16 / e4m3 / bfloat16, every mode."""
        problems = []
        for fmt in ("fp16", "e4m3", "bfloat16"):
            args = self.cpu_side(lambda: tuple(self.fpsim.quantize(
                np.abs(self._torch_inputs(seed=i)) if op == "sqrt" else
                self._torch_inputs(seed=i), fmt) for i in range(len(OPS[op]))))
            for mode in MODES:
                want, wflags = self.cpu_side(lambda: getattr(self.fpsim, op)(
                    *args, fmt, mode, seed=2, flags=True))
                if self.role == "record":
                    continue
                torch, ft = self._torch()
                got, flags = getattr(ft, op)(*[torch.from_numpy(a).cuda() for a in args], fmt,
                                             rounding=mode, seed=2, flags=True)
                where = f"{fmt} {mode}"
                d = (_diff(where + " values", self._host(got), np.asarray(want, np.float32))
                     or _diff(where + " flags", self._host(flags), wflags))
                if got.device.type != "cuda":
                    d = f"{where}: result on {got.device}"
                if d:
                    problems.append(d)
        return "; ".join(problems)

    def torch_codes(self, _arg: str) -> str:
        """Stats of ``fpsim.torch.quantize(..., stats=True)``, codes of ``encode`` and values
        of ``decode`` on CUDA tensors against the numpy path (a scaled format's pair too)."""
        x = self._torch_inputs()
        problems = []
        for fmt in ("fp16", "e4m3", "e2m1"):
            want, wst = self.cpu_side(lambda: self.fpsim.quantize(x, fmt, "sr", seed=1,
                                                                  stats=True))
            codes = self.cpu_side(lambda: self.fpsim.encode(x, fmt, "rna"))
            values = self.cpu_side(lambda: self.fpsim.decode(codes, fmt))
            if self.role == "record":
                continue
            torch, ft = self._torch()
            xt = torch.from_numpy(x).cuda()
            got, st = ft.quantize(xt, fmt, rounding="sr", seed=1, stats=True)
            gc = ft.encode(xt, fmt, rounding="rna")
            gv = ft.decode(gc, fmt)
            d = (_diff(fmt + " quantize", self._host(got), want)
                 or ("" if st == wst else f"{fmt} Stats: cuda {st} cpu {wst}")
                 or _diff(fmt + " codes", gc.to(torch.int64).cpu().numpy(),
                          codes.astype(np.int64))
                 or _diff(fmt + " decode", self._host(gv), values))
            if {got.device.type, gc.device.type, gv.device.type} != {"cuda"}:
                d = f"{fmt}: results on {got.device}, {gc.device}, {gv.device}"
            if d:
                problems.append(d)
        want = self.cpu_side(lambda: tuple(np.asarray(c, np.int64) for c in
                                           self.fpsim.encode(x, "mxfp8_e4m3")))
        if self.role != "record":
            torch, ft = self._torch()
            for i, (g, w) in enumerate(zip(ft.encode(torch.from_numpy(x).cuda(), "mxfp8_e4m3"),
                                           want)):
                d = _diff(f"mxfp8_e4m3 codes {i}", g.to(torch.int64).cpu().numpy(), w)
                if d:
                    problems.append(d)
        return "; ".join(problems)

    def torch_cast(self, _arg: str) -> str:
        """``fpsim.torch.cast`` on a CUDA tensor: the forward rounding and the backward's
        straight-through rounding of the gradient, stochastic rounding keyed as documented,
        against the numpy path."""
        import zlib
        x, up = self._torch_inputs(), self._torch_inputs(seed=5)
        problems = []
        for fwd, bwd in (("fp16", "e5m2"), ("e4m3:sr", "e5m2:sr:saturate"), (None, "bf16:rtz")):
            f, b = fwd and fwd.split(":"), bwd.split(":")
            key = zlib.crc32(b"blk|activation") | (3 << 32)
            gkey = zlib.crc32(b"blk|activation-grad") | (3 << 32)
            want_y = self.cpu_side(lambda: x if f is None else self.fpsim.quantize(
                x, f[0], *(f[1:] or ["rne"]), seed=11, stream=key))
            want_g = self.cpu_side(lambda: self.fpsim.quantize(
                up, b[0], *(b[1:] or ["rne"]), seed=11, stream=gkey))
            if self.role == "record":
                continue
            torch, ft = self._torch()
            xt = torch.from_numpy(x).cuda().requires_grad_()
            y = ft.cast(xt, fwd, bwd, site="blk", role="activation", step=3, seed=11)
            y.backward(torch.from_numpy(up).cuda())
            d = (_diff(f"{fwd}/{bwd} forward", self._host(y), np.asarray(want_y, np.float32))
                 or _diff(f"{fwd}/{bwd} gradient", self._host(xt.grad),
                          np.asarray(want_g, np.float32)))
            if d:
                problems.append(d)
        return "; ".join(problems)

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
    """Run the cases named after the results path (default: all). Options first:
    ``--device`` (the real GPU, not the simulator), ``--record REFS.npz`` (no results path: the
    CPU side of the device-sized cases only, written to ``REFS.npz``), ``--expected REFS.npz``
    (with ``--device``: compare with those CPU results instead of computing them)."""
    opts = {}
    while argv and argv[0].startswith("--"):
        flag = argv.pop(0)
        opts[flag] = argv.pop(0) if flag in ("--record", "--expected") else True
    device = "--device" in opts or "--record" in opts  # (device-sized inputs)
    if "--record" in opts:
        runner = Runner(1 << 16, 1 << 12, role="record")
        wanted = argv or case_ids() + torch_case_ids()
        for cid in wanted:
            runner.run(cid)
        runner.save(opts["--record"])
        print(f"recorded the CPU side of {len(wanted)} cases in {opts['--record']}")
        return 0
    path, wanted = argv[0], (argv[1:] or case_ids() + (torch_case_ids() if device else []))
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
        if "--expected" in opts:
            expected = np.load(opts["--expected"], allow_pickle=False)
            runner = Runner(1 << 16, 1 << 12, role="replay", expected=expected)
        else:
            runner = Runner(1 << 16, 1 << 12) if device else Runner()
    except ImportError as e:  # numba-cuda not installed, or failing to import here
        _write(path, {"__skip__": f"numba-cuda's simulator is unavailable ({type(e).__name__}: "
                                  f"{e})"})
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
