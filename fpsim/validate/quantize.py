"""Validation against independent oracles: ``python -m fpsim.validate`` or ``fpsim validate``.

``fpsim validate quantize`` runs every float32 bit pattern (2^32 inputs) through
:func:`fpsim.encode` and :func:`fpsim.quantize` and through the ml_dtypes / numpy cast of the same
format, and reports mismatches (expected: 0) and the time taken.

What counts as equal (see docs/validation.md):

* codes must be identical, except that numpy's float16 cast keeps NaN payload bits while fpsim
  encodes the canonical quiet NaN: two NaN codes of the same sign are equal;
* quantized values must be bit-identical as float32, with the same NaN rule; formats that cannot
  encode NaN (``float4_e2m1fn``, ``float6_*``) keep NaN in fpsim's carrier where ml_dtypes returns
  a zero code, so NaN inputs are compared only through :func:`fpsim.encode` for those.
* ml_dtypes rounds ``float8_e8m0fnu`` ties away from zero (3.0 -> 4.0); fpsim's ``rne`` rounds
  them to the even code (2.0). That format is compared under ``rna``, its ml_dtypes behaviour.
  ml_dtypes before 0.7.0 still differs where it is wrong: float32 subnormals in
  (2^-127, 1.5 * 2^-127) become 2^-126 there, although 2^-127 is nearer (0.7.0 fixed this). Each reported example says whether the exact
  ``fpsim.reference`` agrees with fpsim or with the oracle.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import sys
import time

import numpy as np

from fpsim.numerics.convert import encode, quantize
from fpsim.numerics.format import Format
from fpsim.numerics.formats import format as _format

#: Formats the exhaustive run checks by default.
DEFAULT_FORMATS = ("float16", "bfloat16", "float8_e4m3fn", "float8_e5m2")

#: Rounding mode under which fpsim reproduces each format's ml_dtypes cast (default ``rne``).
MLDTYPES_ROUNDING = {"float8_e8m0fnu": "rna"}


def oracle_dtype(fmt: Format) -> np.dtype:
    """The numpy / ml_dtypes dtype implementing ``fmt`` (numpy's own for float16/32/64)."""
    name = fmt.name
    native = {"float16": np.float16, "float32": np.float32, "float64": np.float64}
    if name in native:
        return np.dtype(native[name])
    import ml_dtypes

    if name is None or not hasattr(ml_dtypes, name):
        raise ValueError(f"no ml_dtypes type implements {fmt}")
    return np.dtype(getattr(ml_dtypes, name))


def _nan_code(codes: np.ndarray, fmt: Format) -> np.ndarray:
    """Which codes of ``fmt`` are NaN (for ieee formats: all-ones exponent, non-zero fraction)."""
    m, e = fmt.man_bits, fmt.exp_bits
    mag = codes & ((1 << (e + m)) - 1)
    if fmt.specials == "ieee":
        return (mag >> m == (1 << e) - 1) & ((mag & ((1 << m) - 1)) != 0)
    if fmt.specials == "fn":
        return mag == (1 << (e + m)) - 1
    if fmt.specials == "fnuz":
        return codes == (1 << (e + m))
    return np.zeros(codes.shape, bool)


def _oracle_cast(x: np.ndarray, dt: np.dtype) -> np.ndarray:
    """``x.astype(dt)`` on two threads (numpy releases the GIL in casts; numpy's float16 cast is
    the slowest part of an exhaustive run)."""
    out = np.empty(x.shape, dt)
    halves = np.array_split(np.arange(x.size), 2)

    def cast(idx):
        if idx.size:
            with np.errstate(all="ignore"):
                out[idx[0]:idx[-1] + 1] = x[idx[0]:idx[-1] + 1].astype(dt)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(cast, halves))
    return out


@dataclasses.dataclass
class Mismatches:
    """Mismatch count and the first examples (input bits, fpsim, oracle) of one comparison."""

    count: int = 0
    examples: list = dataclasses.field(default_factory=list)

    def add(self, bad: np.ndarray, x: np.ndarray, ours: np.ndarray, theirs: np.ndarray) -> None:
        idx = np.flatnonzero(bad)
        self.count += int(idx.size)
        for i in idx[: max(0, 5 - len(self.examples))]:
            self.examples.append((int(x.view(np.uint32)[i]), int(ours[i]), int(theirs[i])))


def compare_with_oracle(x: np.ndarray, fmt: Format, codes: Mismatches, values: Mismatches) -> None:
    """Compare fpsim's encode/quantize of float32 ``x`` with the ml_dtypes/numpy cast of ``fmt``."""
    rounding = MLDTYPES_ROUNDING.get(fmt.name, "rne")
    ref = _oracle_cast(x, oracle_dtype(fmt))
    dt = ref.dtype
    code_t = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[dt.itemsize]
    ref_codes = ref.view(code_t).astype(np.uint64) & np.uint64((1 << fmt.bits) - 1)
    our_codes = encode(x, fmt, rounding).astype(np.uint64)
    sign = np.uint64(1 << (fmt.bits - 1)) if fmt.signed else np.uint64(0)
    bad = our_codes != ref_codes
    if bad.any():  # NaN payloads: equal when both are NaN codes with the same sign bit
        both_nan = _nan_code(our_codes, fmt) & _nan_code(ref_codes, fmt) & (
            (our_codes & sign) == (ref_codes & sign))
        bad &= ~both_nan
    codes.add(bad, x, our_codes, ref_codes)

    ours = quantize(x, fmt, rounding)
    with np.errstate(all="ignore"):
        ref_vals = ref.astype(ours.dtype)
    ut = np.uint32 if ours.dtype == np.float32 else np.uint64
    ob, rb = ours.view(ut), ref_vals.view(ut)
    bad = ob != rb
    if bad.any():
        nan_o, nan_r = np.isnan(ours), np.isnan(ref_vals)
        same_sign = np.signbit(ours) == np.signbit(ref_vals)
        bad &= ~(nan_o & nan_r & same_sign)
        if not fmt.has_nan:
            bad &= ~np.isnan(x)  # fpsim keeps NaN in the carrier; compared through codes above
    values.add(bad, x, ob, rb)


def exhaustive_float32(fmt: Format, block: int = 1 << 24, limit: int | None = None,
                       progress=None) -> tuple[Mismatches, Mismatches, int, float]:
    """Every float32 bit pattern (or the first ``limit``) against the oracle cast of ``fmt``.

    Returns ``(code mismatches, value mismatches, inputs checked, seconds)``.
    """
    total = (1 << 32) if limit is None else min(limit, 1 << 32)
    codes, values = Mismatches(), Mismatches()
    compare_with_oracle(np.zeros(16, np.float32), fmt, Mismatches(), Mismatches())  # compile first
    t0 = time.perf_counter()
    for start in range(0, total, block):
        stop = min(start + block, total)
        x = np.arange(start, stop, dtype=np.uint64).astype(np.uint32).view(np.float32)
        compare_with_oracle(x, fmt, codes, values)
        if progress:
            progress(stop, total)
    return codes, values, total, time.perf_counter() - t0


def _report(fmt: Format, kind: str, mm: Mismatches) -> str:
    lines = [f"  {kind:6s} mismatches: {mm.count}"]
    for xb, ours, theirs in mm.examples:
        x = float(np.uint32(xb).view(np.float32))
        verdict = _adjudicate(x, fmt, kind, ours, theirs)
        lines.append(f"    x=0x{xb:08x} ({x!r}): fpsim 0x{ours:x}, oracle 0x{theirs:x}  [{verdict}]")
    return "\n".join(lines)


def _adjudicate(x: float, fmt: Format, kind: str, ours: int, theirs: int) -> str:
    """Which side fpsim.reference (exact rational arithmetic) agrees with."""
    from fpsim import reference

    want = reference.round_value(x, fmt, MLDTYPES_ROUNDING.get(fmt.name, "rne"))

    def agrees(bits: int) -> bool:
        if kind == "codes":
            return reference.encode_value(want, fmt) == bits
        carrier = np.array(bits, np.uint32 if fmt.fits_float32 else np.uint64).view(
            np.float32 if fmt.fits_float32 else np.float64)
        return bool(np.float64(want).view(np.uint64) == np.float64(carrier).view(np.uint64))

    if agrees(ours):
        return "reference agrees with fpsim"
    return "reference agrees with the oracle" if agrees(theirs) else "reference agrees with neither"


def add_arguments(parser) -> None:
    """Describe ``fpsim validate quantize`` on ``parser`` and add its options (read by
    :func:`run`)."""
    parser.description = ("Every float32 bit pattern (2^32 inputs, or the first --limit) "
                          "through fpsim.encode and fpsim.quantize and through the ml_dtypes / "
                          "numpy cast of the same format; reports the mismatches (expected: 0) "
                          "and the time taken. Status 1 on any mismatch.")
    parser.add_argument("--formats", default=",".join(DEFAULT_FORMATS),
                        help="comma-separated formats (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None,
                        help="check only the first N float32 bit patterns (default: all 2^32)")
    parser.add_argument("--block", type=int, default=1 << 24,
                        help="inputs per block (default: 2^24)")


def run(args) -> int:
    """Run ``fpsim validate quantize`` with the options of :func:`add_arguments` (``formats``,
    ``limit``, ``block``): print the counts and examples per format; 0 when nothing mismatched,
    1 on any mismatch, 2 for an unknown format or one no oracle implements."""
    try:
        fmts = [_format(name) for name in args.formats.split(",") if name]
        for fmt in fmts:
            oracle_dtype(fmt)
    except (ValueError, ImportError) as err:
        print(f"fpsim validate: error: {err}", file=sys.stderr)
        return 2
    failed = False
    for fmt in fmts:
        def progress(done, total, name=fmt.name):
            print(f"\r{name}: {done / total:6.1%}", end="", file=sys.stderr, flush=True)

        codes, values, n, secs = exhaustive_float32(fmt, args.block, args.limit, progress)
        print("\r", end="", file=sys.stderr)
        rounding = MLDTYPES_ROUNDING.get(fmt.name, "rne")
        print(f"{fmt.name} ({rounding}, ieee overflow): {n} float32 inputs in {secs:.1f} s")
        print(_report(fmt, "codes", codes))
        print(_report(fmt, "values", values))
        failed |= bool(codes.count or values.count)
    return 1 if failed else 0


def main(argv=None) -> int:
    """Program entry: ``python -m fpsim.validate.quantize [--formats ...]`` is
    ``fpsim validate quantize ...`` (``argv`` defaults to ``sys.argv[1:]``)."""
    from fpsim.cli import main as cli_main  # here, not at the top: the cli imports this module

    return cli_main(["validate", "quantize", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
