"""Validation of the elementwise arithmetic (``fpsim validate arith``).

Two independent oracles:

* **Berkeley SoftFloat** (through ``softfloatpy``) for float16 and float32: every op under the
  five IEEE rounding modes, with tininess after (and, fewer cases, before) rounding; result codes
  and all five exception flags must be equal. Cases are TestFloat-style: boundary codes crossed
  with each other and with random codes, near-cancelling pairs (``b`` near ``-a``), ``c`` near
  ``-a*b`` for fma, and uniformly random codes. Signalling NaNs are left out (a float carrier
  cannot hold them); any two NaNs are equal (fpsim returns the canonical quiet NaN).
* **fpsim.reference** (exact rationals rounded once) for small formats: every operand pair of
  add/sub/mul/div, every operand of sqrt, every triple of fma (formats of at most 6 bits; a
  sample of triples for 8-bit ones), under every rounding mode including rto and sr.

The test suite runs the same functions with fewer cases.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import math
import multiprocessing
import sys
import time

import numpy as np

from fpsim.numerics import arith
from fpsim.numerics.convert import decode, encode
from fpsim.numerics.format import Format
from fpsim.numerics.formats import format as _format
from fpsim.kernels.rng import random_bits_py, stream_key
from fpsim.reference.arith import ARITY, op_value

IEEE_MODES = ("rne", "rna", "rtz", "rup", "rdn")
ALL_MODES = IEEE_MODES + ("rto", "sr")
OPS = tuple(ARITY)
#: Named formats of at most 8 bits, and custom ones, for the exhaustive runs.
SMALL_FORMATS = ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
                 "float8_e4m3b11fnuz", "float8_e3m4", "float8_e4m3", "float8_e8m0fnu",
                 "float6_e3m2fn", "float6_e2m3fn", "float4_e2m1fn", "e6m1", "e3m3")


@dataclasses.dataclass
class Result:
    """Outcome of one comparison: cases run, mismatches, the first few in hex, seconds."""

    what: str
    cases: int
    mismatches: int
    examples: list[str]
    seconds: float

    def line(self) -> str:
        ex = ("; first: " + " | ".join(self.examples[:3])) if self.examples else ""
        return (f"{self.what}: {self.cases} cases, {self.mismatches} mismatches, "
                f"{self.seconds:.1f} s{ex}")


# ---- SoftFloat ---------------------------------------------------------------------------------
_SF = {16: (5, 10), 32: (8, 23)}


def _boundary_codes(bits: int) -> np.ndarray:
    e, m = _SF[bits]
    top = ((1 << e) - 1) << m
    bias = (1 << (e - 1)) - 1
    one = bias << m
    mags = [0, 1, 2, 3, (1 << m) - 1, 1 << m, (1 << m) + 1, one - 1, one, one + 1, one + 2,
            top - 1, top - 2, top, top | (1 << (m - 1)), (bias + 5) << m, (bias - 7) << m | 5,
            1 << (m - 1), ((bias + 1) << m) | ((1 << m) - 1), (bias + m + 1) << m,
            (bias + e) << m | 1, ((1 << m) - 1) >> 1]
    return np.array(sorted({s | v for v in mags for s in (0, 1 << (bits - 1))}), np.int64)


def _is_snan(codes: np.ndarray, bits: int) -> np.ndarray:
    e, m = _SF[bits]
    mag = codes & ((1 << (bits - 1)) - 1)
    return ((mag >> m) == (1 << e) - 1) & ((mag & ((1 << m) - 1)) != 0) & (
        ((mag >> (m - 1)) & 1) == 0)


def softfloat_cases(bits: int, arity: int, n: int, seed: int) -> np.ndarray:
    """At least ``n`` TestFloat-style operand code tuples (an (>= n, arity) int64 array): a
    third uniform random, a third boundary x random, a third near-cancelling, plus every pair
    of boundary codes for unary and binary ops."""
    rng = np.random.default_rng(seed)
    bnd = _boundary_codes(bits)
    full = (1 << bits) - 1
    sign = 1 << (bits - 1)
    parts = []
    if arity <= 2:
        parts.append(np.array(list(itertools.product(bnd, repeat=arity)), np.int64))
    k = max(n - sum(len(p) for p in parts), 0) // 3 + 1
    rand = rng.integers(0, full + 1, (k, arity))
    parts.append(rand)
    mixed = rand.copy()
    mixed[:, 0] = rng.choice(bnd, k)
    parts.append(mixed[:, rng.permutation(arity)] if arity > 1 else mixed)
    near = rng.integers(0, full + 1, (k, arity))
    if arity >= 2:  # b = -a plus a few ulps: exact and inexact cancellation, tiny results
        near[:, 1] = (near[:, 0] ^ sign) + rng.integers(-4, 5, k)
    if arity == 3:  # b in [1, 2) and c near -a: a*b + c cancels partly or exactly
        e, m = _SF[bits]
        near[:, 1] = ((((1 << (e - 1)) - 1) << m) + rng.integers(0, 1 << m, k)) | (
            rng.integers(0, 2, k) << (bits - 1))
        near[:, 2] = np.clip((near[:, 0] ^ sign) + rng.integers(-(1 << m), 1 << m, k), 0, full)
    parts.append(near & full)
    cases = np.concatenate(parts)
    cases = cases[~_is_snan(cases, bits).any(axis=1)]
    while len(cases) < n:  # top up what the signalling-NaN filter removed, with random codes
        more = rng.integers(0, full + 1, (n - len(cases), arity))
        cases = np.concatenate([cases, more[~_is_snan(more, bits).any(axis=1)]])
    return cases


def _softfloat_run(op: str, bits: int, cases: np.ndarray, mode: str, tininess: str):
    import softfloatpy as sf

    t = sf.Float16 if bits == 16 else sf.Float32
    modes = {"rne": sf.RoundingMode.NEAR_EVEN, "rna": sf.RoundingMode.NEAR_MAX_MAG,
             "rtz": sf.RoundingMode.MIN_MAG, "rdn": sf.RoundingMode.MIN,
             "rup": sf.RoundingMode.MAX}
    sf.set_rounding_mode(modes[mode])
    sf.set_tininess_mode(sf.TininessMode.AFTER_ROUNDING if tininess == "after"
                         else sf.TininessMode.BEFORE_ROUNDING)
    prefix = "f16" if bits == 16 else "f32"
    fn = getattr(sf, f"{prefix}_{'mul_add' if op == 'fma' else op}")
    nb = bits // 8
    codes = np.empty(len(cases), np.int64)
    flags = np.empty(len(cases), np.int64)
    zero = sf.ExceptionFlag(0)
    for i, row in enumerate(cases.tolist()):
        vals = [t.from_bytes(c.to_bytes(nb, "big")) for c in row]
        sf.set_exception_flags(zero)
        codes[i] = int.from_bytes(fn(*vals).to_bytes(), "big")
        flags[i] = int(sf.get_exception_flags())
    return codes, flags


def check_softfloat(name: str, op: str, mode: str, tininess: str = "after", n: int = 50_000,
                    seed: int = 0) -> Result:
    """fpsim's ``op`` in ``name`` (float16/float32) against SoftFloat on ~``n`` cases."""
    t0 = time.perf_counter()
    fmt = _format(name)
    bits = fmt.bits
    cases = softfloat_cases(bits, ARITY[op], n, seed)
    cols = [decode(cases[:, j], fmt) for j in range(ARITY[op])]
    got, got_flags = getattr(arith, op)(*cols, fmt, mode, flags=True, tininess=tininess)
    got_codes = encode(got, fmt)
    want_codes, want_flags = _softfloat_run(op, bits, cases, mode, tininess)
    want_nan = np.isnan(decode(want_codes, fmt))
    same = np.where(want_nan, np.isnan(got), got_codes == want_codes) & (got_flags == want_flags)
    bad = np.flatnonzero(~same)
    ex = [f"{op}({', '.join(hex(int(c)) for c in cases[i])}) = {int(got_codes[i]):#x} "
          f"flags {int(got_flags[i])}, SoftFloat {int(want_codes[i]):#x} flags {int(want_flags[i])}"
          for i in bad[:5]]
    return Result(f"SoftFloat {name} {op} {mode} tininess={tininess}", len(cases), bad.size, ex,
                  time.perf_counter() - t0)


# ---- exhaustive against fpsim.reference --------------------------------------------------------
def operand_tuples(fmt: Format, op: str, max_triples: int = 1 << 18, seed: int = 0):
    """Every operand (sqrt), every pair, or every triple (fma; a random sample of
    ``max_triples`` when there are more) of values of ``fmt``, as float64 columns."""
    vals = decode(np.arange(1 << fmt.bits), fmt)
    nan = np.isnan(vals)
    vals = np.concatenate([vals[~nan], vals[nan][:1]])  # one NaN is enough
    k = ARITY[op]
    if k == 3 and vals.size ** 3 > max_triples:
        rng = np.random.default_rng(seed)
        return [rng.choice(vals, max_triples) for _ in range(3)]
    grids = np.meshgrid(*([vals] * k), indexing="ij")
    return [g.ravel() for g in grids]


def check_exhaustive(name: str, op: str, mode: str, seed: int = 0,
                     max_triples: int = 1 << 18) -> Result:
    """fpsim's ``op`` in ``name`` against :func:`fpsim.reference.arith.op_value` on every
    operand tuple (see :func:`operand_tuples`): values and flags."""
    t0 = time.perf_counter()
    fmt = _format(name)
    cols = operand_tuples(fmt, op, max_triples, seed)
    got, got_flags = getattr(arith, op)(*cols, fmt, mode, flags=True, seed=seed)
    key = stream_key(seed, 0)
    srk = 51 - fmt.man_bits
    bad = []
    n = cols[0].size
    for i in range(n):
        xs = [float(c[i]) for c in cols]
        y, f = op_value(op, xs, fmt, mode, rnd=random_bits_py(key, i), sr_bits=srk)
        g = float(got[i])
        ok = (math.isnan(g) if math.isnan(y) else
              (np.float64(g).view(np.uint64) == np.float64(y).view(np.uint64))) and f == got_flags[i]
        if not ok:
            bad.append(f"{op}({', '.join(float(x).hex() for x in xs)}) = {g.hex()} flags "
                       f"{int(got_flags[i])}, reference {float(y).hex()} flags {f}")
    return Result(f"exhaustive {name} {op} {mode}", n, len(bad), bad[:5],
                  time.perf_counter() - t0)


def _run(task):
    kind, args = task
    return (check_softfloat if kind == "softfloat" else check_exhaustive)(*args)


def add_arguments(parser) -> None:
    """Describe ``fpsim validate arith`` on ``parser`` and add its options (read by
    :func:`run`)."""
    parser.description = ("The elementwise arithmetic against Berkeley SoftFloat (float16, "
                          "float32: codes and the five flags under the IEEE modes) and against "
                          "the exact fpsim.reference on every operand tuple of small formats "
                          "(every mode). One line per comparison; status 1 on any mismatch.")
    parser.add_argument("--cases", type=int, default=200_000,
                        help="SoftFloat cases per type, op and mode (tininess after; a fifth "
                             "of that before)")
    parser.add_argument("--formats", default=",".join(SMALL_FORMATS),
                        help="small formats for the exhaustive runs ('' for none)")
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--modes", default=",".join(ALL_MODES))
    parser.add_argument("--skip-softfloat", action="store_true")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")


def _usage_error(message: str) -> int:
    """Print a bad-input message as one line on stderr; the status of a usage error (2)."""
    print(f"fpsim validate arith: error: {message}", file=sys.stderr)
    return 2


def run(args) -> int:
    """Run ``fpsim validate arith`` with the options of :func:`add_arguments` (``cases``,
    ``formats``, ``ops``, ``modes``, ``skip_softfloat``, ``jobs``): print one line per
    comparison and a total; 0 when nothing mismatched, 1 on any mismatch, 2 for an unknown op,
    mode or format."""
    ops = [o for o in args.ops.split(",") if o]
    modes = [m for m in args.modes.split(",") if m]
    for o in ops:
        if o not in OPS:
            return _usage_error(f"unknown op {o!r}: use {', '.join(OPS)}")
    for m in modes:
        if m not in ALL_MODES:  # checked here: a worker process would fail with a traceback
            return _usage_error(f"unknown mode {m!r}: use {', '.join(ALL_MODES)}")
    names = [f for f in args.formats.split(",") if f]
    for name in names:
        try:
            _format(name)  # fail before any comparison runs
        except ValueError as err:
            return _usage_error(str(err))
    tasks = []
    if not args.skip_softfloat:
        for name in ("float16", "float32"):
            for op in ops:
                for mode in (m for m in modes if m in IEEE_MODES):
                    tasks.append(("softfloat", (name, op, mode, "after", args.cases)))
                    tasks.append(("softfloat", (name, op, mode, "before", args.cases // 5, 1)))
    for name in names:
        for op in ops:
            for mode in modes:
                tasks.append(("exhaustive", (name, op, mode)))
    t0 = time.perf_counter()
    total = bad = 0
    if args.jobs <= 1:
        results = map(_run, tasks)
    else:
        # spawn, not fork: forking a process whose Numba thread pool is running kills workers
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn"))
        results = pool.map(_run, tasks)
    for res in results:
        print(res.line(), flush=True)
        total += res.cases
        bad += res.mismatches
    if args.jobs > 1:
        pool.shutdown()
    print(f"arith: {len(tasks)} comparisons, {total} cases, {bad} mismatches, "
          f"{time.perf_counter() - t0:.0f} s")
    return 1 if bad else 0


def main(argv=None) -> int:
    """Program entry: ``main([...])`` is ``fpsim validate arith ...`` (``argv`` defaults to
    ``sys.argv[1:]``)."""
    from fpsim.cli import main as cli_main  # here, not at the top: the cli imports this module

    return cli_main(["validate", "arith", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
