"""Fixed-point and integer-grid formats: :class:`Fixed` (Q-format) and :class:`IntGrid` (k·δ).

Both describe the value set ``{δ·k : k_min <= k <= k_max}`` of a ``bits``-wide integer ``k``
times a step ``δ``:

* :class:`Fixed` ``(bits, frac_bits)``: ``δ = 2^-frac_bits`` (Q-format); every value is a
  binary float, so :func:`fpsim.quantize` returns the values exactly.
* :class:`IntGrid` ``(bits, delta)``: any positive finite float ``δ`` (HALP's per-tensor scale,
  post-training quantization's ``max|w| / (2^(b-1) - 1)``). The rounding decides on the exact
  rational ``x/δ``; the value ``k·δ`` is then rounded once (to nearest even) into the result's
  float dtype, since it is in general no binary float.

Integer ranges (``b = bits``):

* signed, two's complement (the default): ``k ∈ [-2^(b-1), 2^(b-1) - 1]``, the range of an
  int8/int16 register and of HALP's iterates;
* signed, ``symmetric=True``: ``k ∈ [-(2^(b-1) - 1), 2^(b-1) - 1]``, without the most negative
  code, as symmetric post-training quantization and MXINT8 use (the code ``100...0`` is unused);
* unsigned: ``k ∈ [0, 2^b - 1]``.

Codes (:func:`fpsim.encode`) are ``k`` in two's complement, ``k mod 2^b``, held in the smallest
unsigned dtype (uint8 for ``b <= 8``, ...): int8's -1 is the code 255. ``docs/fixed_point.md``
has the conventions, the overflow policies and the spec strings (``int8``, ``uint4``, ``q7.8``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import re
from fractions import Fraction
from typing import NamedTuple

import numpy as np

from fpsim.numerics.modes import Overflow, RoundMode

#: Widest integer of a grid format: every ``k`` is exact in a float64.
MAX_BITS = 53
#: Range of ``log2 δ``: products ``k·δ`` and the ratios ``x/δ`` then neither overflow nor lose
#: bits to float64 underflow in the kernels' error-free steps (see :mod:`fpsim.kernels.fixed`).
DELTA_LOG2_MIN = -900
DELTA_LOG2_MAX = 900


class GridParams(NamedTuple):
    """A grid format compiled for the kernels: plain numbers, one compiled kernel for all.

    * ``bits``, ``signed``: the integer's width and signedness (0/1).
    * ``k_min``, ``k_max``: the integer range (``k_min`` is 0 for unsigned formats).
    * ``pow2``: 1 when δ is a power of two (then ``x/δ`` is an exact shift).
    * ``d_man``, ``d_exp``: δ = ``d_man · 2^d_exp`` with ``d_man`` odd (< 2^53).
    * ``d_log2``: ``floor(log2 δ)``; ``d_frac``: δ's 52 fraction bits (its float64 significand
      without the leading one), for the exact binade of ``|x|/δ``.
    * ``delta``, ``inv_delta``: δ and ``RN(1/δ)`` as float64 (the fast path's estimate).
    """

    bits: int
    signed: int
    k_min: int
    k_max: int
    pow2: int
    d_man: int
    d_exp: int
    d_log2: int
    d_frac: int
    delta: float
    inv_delta: float


def _as_int(field, value):
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    raise ValueError(f"{field}={value!r} is invalid: must be an int")


def _check_bits(bits, signed):
    lo = 2 if signed else 1
    if not lo <= bits <= MAX_BITS:
        kind = "signed" if signed else "unsigned"
        raise ValueError(f"bits={bits} is invalid: a {kind} fixed-point format has "
                         f"{lo}..{MAX_BITS} bits (every integer exact in a float64)")


class GridFormat:
    """What :class:`Fixed` and :class:`IntGrid` share: the integer range, δ and the derived
    quantities. (A mixin of the two frozen dataclasses; not constructed on its own.)"""

    bits: int
    signed: bool
    symmetric: bool

    # ---- the integer range ------------------------------------------------------------------
    @property
    def k_max(self) -> int:
        """Largest integer: ``2^(b-1) - 1`` signed, ``2^b - 1`` unsigned."""
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def k_min(self) -> int:
        """Smallest integer: ``-2^(b-1)`` (two's complement), ``-(2^(b-1) - 1)`` (symmetric), 0."""
        if not self.signed:
            return 0
        return -self.k_max if self.symmetric else -(1 << (self.bits - 1))

    @property
    def delta_exact(self) -> Fraction:
        """δ as an exact Fraction."""
        return Fraction(self.delta)

    @property
    def max(self) -> float:
        """Largest value ``k_max·δ`` (rounded to float64 for a non-power-of-two δ)."""
        return float(self.k_max * self.delta_exact)

    @property
    def min(self) -> float:
        """Most negative value ``k_min·δ`` (0 for unsigned formats)."""
        return float(self.k_min * self.delta_exact)

    @functools.cached_property
    def is_pow2(self) -> bool:
        """Whether δ is a power of two (then every value is a binary float)."""
        return math.frexp(self.delta)[0] == 0.5

    @functools.cached_property  # asked on every quantize call
    def fits_float32(self) -> bool:
        """Whether the result of a float32 input can be float32: for a power-of-two δ, whether
        every value is a float32; for another δ (whose values are rounded into the result's dtype
        anyway), whether the largest magnitude rounds to a finite float32."""
        extreme = max(abs(self.k_min), self.k_max) * self.delta_exact
        if not self.is_pow2:  # rounded values: the largest must round to a finite float32
            return extreme < Fraction(2) ** 128 * (1 - Fraction(1, 1 << 25))
        # exact values: every |k| < 2^24 (or the two's-complement -2^24), the step a float32,
        # the most negative / largest value finite (-2^(b-1) δ counts: 2^128 is not)
        lo = math.frexp(self.delta)[1] - 1  # log2 δ
        top = self.bits - (1 if self.signed else 0)
        flt_max = (2 - Fraction(1, 1 << 23)) * Fraction(2) ** 127
        return top <= 24 and lo >= -149 and extreme <= flt_max

    def value_of(self, k: int) -> Fraction:
        """Exact value ``k·δ`` of the integer ``k`` (ValueError outside the range)."""
        if not self.k_min <= k <= self.k_max:
            raise ValueError(f"integer {k} is outside {self.k_min}..{self.k_max} of {self}")
        return k * self.delta_exact

    def code_of(self, k: int) -> int:
        """Two's-complement code of the integer ``k``: ``k mod 2^bits``."""
        return int(k) % (1 << self.bits)

    def int_of_code(self, code: int) -> int:
        """Integer of a code (sign-extended for signed formats)."""
        code = int(code)
        if self.signed and code >= 1 << (self.bits - 1):
            return code - (1 << self.bits)
        return code

    def params(self) -> GridParams:
        """The kernels' :class:`GridParams` (cached per format)."""
        cached = self.__dict__.get("_params")
        if cached is None:
            cached = _compile(self)
            object.__setattr__(self, "_params", cached)
        return cached

    @functools.cached_property
    def lanes32(self) -> bool:
        """Whether float32 quantization may decide in float32 arithmetic (the kernels'
        ``lanes32``): at most 24 bits (every integer, and the clamp, exact in float32) and δ in
        ``2^-100 .. 2^100`` (``RN32(1/δ)`` normal, and exact for a power of two)."""
        e = math.frexp(self.delta)[1] - 1
        return self.bits <= 24 and -100 <= e <= 99 and self.fits_float32

    def __str__(self) -> str:
        return self.name or self.spec

    def _check_common(self):
        for field in ("signed", "symmetric"):
            if not isinstance(getattr(self, field), bool):
                raise ValueError(f"{field}={getattr(self, field)!r} is invalid: must be a bool")
        object.__setattr__(self, "bits", _as_int("bits", self.bits))
        _check_bits(self.bits, self.signed)
        if self.symmetric and not self.signed:
            raise ValueError("symmetric=True is invalid for an unsigned format (it drops the "
                             "most negative code of a signed one)")


@dataclasses.dataclass(frozen=True, eq=True)
class Fixed(GridFormat):
    """A binary fixed-point (Q-format) number: ``k·2^-frac_bits`` for a ``bits``-wide integer k.

    ``Fixed(8, 4)`` holds ``-128/16 .. 127/16`` in steps of 1/16; ``Fixed(8, 0)`` is int8.

    Args:
        bits: width of the integer, 2..53 signed (sign included), 1..53 unsigned.
        frac_bits: fraction bits (the binary point's position), ``0..bits``; others (a negative
            value, or more fraction bits than bits) need ``any_point=True``.
        signed: two's-complement signed (default) or unsigned.
        symmetric: drop the most negative integer (``k >= -(2^(b-1) - 1)``).
        any_point: allow ``frac_bits`` outside ``0..bits`` (the step may be any power of two,
            ``2^-900 .. 2^900`` as far as values stay float64 numbers).
    """

    bits: int
    frac_bits: int
    signed: bool = True
    symmetric: bool = False
    any_point: bool = dataclasses.field(default=False, compare=False)
    name: str | None = dataclasses.field(default=None, compare=False)

    def __post_init__(self):
        self._check_common()
        object.__setattr__(self, "frac_bits", _as_int("frac_bits", self.frac_bits))
        f = self.frac_bits
        if not self.any_point and not 0 <= f <= self.bits:
            raise ValueError(f"frac_bits={f} is invalid: allowed range is 0..{self.bits} (the "
                             f"bits); pass any_point=True for a binary point outside the word")
        if not DELTA_LOG2_MIN <= -f <= DELTA_LOG2_MAX:
            raise ValueError(f"frac_bits={f} is invalid: the step 2^{-f} must lie in "
                             f"2^{DELTA_LOG2_MIN}..2^{DELTA_LOG2_MAX}")

    @property
    def delta(self) -> float:
        """The step ``2^-frac_bits``."""
        return math.ldexp(1.0, -self.frac_bits)

    @property
    def spec(self) -> str:
        """Spec string read back by :func:`parse_fixed_spec`: ``int8``, ``uint4``, ``q3.4``,
        ``uq0.8``, with ``-sym`` for symmetric; ``fixed<b>f<f>`` for a point outside the word."""
        sym = "-sym" if self.symmetric else ""
        f, b = self.frac_bits, self.bits
        if f == 0:
            return f"{'' if self.signed else 'u'}int{b}{sym}"
        ints = b - f - (1 if self.signed else 0)
        if 0 <= f and ints >= 0:
            return f"{'' if self.signed else 'u'}q{ints}.{f}{sym}"
        return f"{'' if self.signed else 'u'}fixed{b}f{f}{sym}"

    def replace(self, **changes) -> "Fixed":
        """A copy with some fields changed (the name is dropped unless given)."""
        changes.setdefault("name", None)
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True, eq=True)
class IntGrid(GridFormat):
    """The scaled integer grid ``δ·k`` for a ``bits``-wide integer k and any float step δ.

    ``IntGrid(8, 0.1)`` holds ``-12.8 .. 12.7`` in steps of 0.1 (the float64 nearest 0.1, taken
    exactly); rounding decides on the exact ratio ``x/δ``, never on a float quotient.

    Args:
        bits: width of the integer, 2..53 signed, 1..53 unsigned.
        delta: the step δ, a positive finite float in ``2^-900 .. 2^900`` (a Python float,
            numpy float or Fraction convertible to float64 exactly).
        signed, symmetric: as for :class:`Fixed`.
    """

    bits: int
    delta: float
    signed: bool = True
    symmetric: bool = False
    name: str | None = dataclasses.field(default=None, compare=False)

    def __post_init__(self):
        self._check_common()
        d = self.delta
        if isinstance(d, bool) or not isinstance(d, (numbers.Real, Fraction)):
            raise ValueError(f"delta={d!r} is invalid: must be a positive finite float")
        fd = float(d)
        if isinstance(d, Fraction) and Fraction(fd) != d:
            raise ValueError(f"delta={d} is invalid: it is not a float64 number exactly")
        if not (math.isfinite(fd) and fd > 0):
            raise ValueError(f"delta={d!r} is invalid: must be a positive finite float")
        e = math.frexp(fd)[1] - 1
        if not DELTA_LOG2_MIN <= e <= DELTA_LOG2_MAX:
            raise ValueError(f"delta={fd!r} is invalid: allowed range is 2^{DELTA_LOG2_MIN}.."
                             f"2^{DELTA_LOG2_MAX}")
        object.__setattr__(self, "delta", fd)

    @property
    def spec(self) -> str:
        """``int8*0.1``-style: the integer spec, ``*`` and δ's shortest repr."""
        sym = "-sym" if self.symmetric else ""
        return f"{'' if self.signed else 'u'}int{self.bits}{sym}*{self.delta!r}"

    @property
    def frac_bits(self) -> int | None:
        """``-log2 δ`` for a power-of-two δ, else None."""
        return 1 - math.frexp(self.delta)[1] if self.is_pow2 else None

    def replace(self, **changes) -> "IntGrid":
        """A copy with some fields changed (the name is dropped unless given)."""
        changes.setdefault("name", None)
        return dataclasses.replace(self, **changes)


def _compile(fmt: GridFormat) -> GridParams:
    m, e = math.frexp(fmt.delta)  # delta = m * 2^e, 0.5 <= m < 1
    man = int(m * (1 << 53))
    exp = e - 53
    while man % 2 == 0:
        man //= 2
        exp += 1
    frac52 = int(m * (1 << 53)) - (1 << 52)
    return GridParams(
        bits=fmt.bits, signed=int(fmt.signed), k_min=fmt.k_min, k_max=fmt.k_max,
        pow2=int(man == 1), d_man=man, d_exp=exp, d_log2=e - 1, d_frac=frac52,
        delta=float(fmt.delta), inv_delta=1.0 / fmt.delta,
    )


_SPEC_RE = re.compile(
    r"^(u?)(?:int(\d+)|q(\d+)\.(\d+)|fixed(\d+)f(-?\d+))(-sym)?(?:\*(.+))?$")


def parse_fixed_spec(spec: str) -> GridFormat | None:
    """The grid format a spec string names, or None if it is no fixed-point spec.

    Grammar (case-insensitive): ``[u]int<b>`` (an integer, ``Fixed(b, 0)``), ``[u]q<m>.<n>``
    (Q-format with ``m`` integer and ``n`` fraction bits, *not counting* the sign bit: ``q7.8``
    is 16 bits, ``Fixed(16, 8)``; ``uq0.8`` is ``Fixed(8, 8, signed=False)``),
    ``[u]fixed<b>f<f>`` (``Fixed(b, f, any_point=True)``), each optionally followed by ``-sym``
    (symmetric) and ``*<delta>`` (an :class:`IntGrid` with that step, e.g. ``int8*0.05``).

    Raises:
        ValueError: the string looks like a fixed-point spec (starts with ``int``, ``uint``,
            ``q``, ``uq``, ``fixed``) but a field does not parse or is out of range; the message
            names the field.
    """
    text = spec.strip().lower()
    match = _SPEC_RE.match(text)
    if not match:
        if re.match(r"^u?(int|q\d|fixed)", text):
            raise ValueError(
                f"fixed-point spec {spec!r} is not understood: expected [u]int<bits>, "
                "[u]q<int bits>.<frac bits> or [u]fixed<bits>f<frac bits>, optionally with "
                "-sym and *<delta>, e.g. 'int8', 'q7.8', 'int8-sym*0.05'")
        return None
    unsigned, ib, qm, qn, fb, ff, sym, delta = match.groups()
    signed = not unsigned
    if ib is not None:
        bits, frac, any_point = int(ib), 0, False
    elif qm is not None:
        bits = int(qm) + int(qn) + (1 if signed else 0)
        frac, any_point = int(qn), False
    else:
        bits, frac, any_point = int(fb), int(ff), True
    symmetric = sym is not None
    if delta is None:
        return Fixed(bits, frac, signed=signed, symmetric=symmetric, any_point=any_point)
    if frac != 0:
        raise ValueError(f"fixed-point spec {spec!r}: a step *<delta> goes with an integer "
                         "spec (int<bits> or uint<bits>)")
    try:
        step = float(delta)
    except ValueError:
        raise ValueError(f"fixed-point spec {spec!r}: delta {delta!r} is not a number") from None
    return IntGrid(bits, step, signed=signed, symmetric=symmetric)


def grid_format(fmt) -> GridFormat | None:
    """``fmt`` as a grid format (a :class:`Fixed`/:class:`IntGrid`, or a spec string naming
    one), or None when it is something else (a float format, a scaled preset)."""
    if isinstance(fmt, GridFormat):
        return fmt
    if isinstance(fmt, str):
        return parse_fixed_spec(fmt)
    return None


# ---- the array operations (called by fpsim.quantize / encode / decode) --------------------------
def _kernels():
    """The jitted grid kernels (:mod:`fpsim.kernels.fixed`), imported on first use."""
    from fpsim.kernels import fixed as kfixed
    return kfixed


def _index(flat_index: int, shape) -> tuple:
    return tuple(int(i) for i in np.unravel_index(flat_index, shape)) if shape else ()


def _run(x, fmt: GridFormat, mode: int, overflow: int, key: int, srk: int, want_vals: bool,
         want_codes: bool, want_stats: bool, out=None):
    """Round host ``x`` onto ``fmt``: ``(values or None, int64 codes or None, Stats or None)``.

    The values' dtype is float32 when ``x`` is float32 and :attr:`GridFormat.fits_float32`,
    else float64 (``x`` is widened exactly first).
    """
    from fpsim.numerics import backend, config
    from fpsim.numerics.stats import N_BINADES, Stats

    x = backend.as_float_array(x)
    dtype = np.float32 if (x.dtype == np.float32 and fmt.fits_float32) else np.float64
    if out is not None:
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a numpy array, got {type(out).__name__}")
        if (out.dtype != dtype or out.shape != x.shape or not out.flags.c_contiguous
                or not out.flags.writeable):
            raise ValueError(f"out must be a writeable C-contiguous {np.dtype(dtype)} array of "
                             f"shape {x.shape}, got {out.dtype} {out.shape}")
        if np.shares_memory(out, x):
            # In place or overlapping: the kernel's exact pass and histogram read x after the
            # first pass has written values, so they read a copy.
            x = x.copy()
    if x.dtype != dtype:
        with np.errstate(invalid="ignore"):
            x = x.astype(dtype)
    flat = x.reshape(-1)
    n = flat.size
    serial = n < config.SERIAL_BELOW
    k = 1 if serial else backend.nchunks(n)
    if want_vals:
        vals = out if out is not None else np.empty(x.shape, dtype)
        vflat = vals.reshape(-1)
    else:
        vals, vflat = None, np.empty(0, dtype)
    codes = np.empty(n if want_codes else 0, np.int64)
    counts = np.zeros((k, 5), np.int64)
    hist = np.zeros((k, N_BINADES + 3 if want_stats else 0), np.int64)
    bad = np.full(k, -1, np.int64)
    kf = _kernels()
    lanes32 = (dtype == np.float32 and want_vals and not want_stats and fmt.lanes32
               and mode != int(RoundMode.SR) and overflow == int(Overflow.SATURATE))
    (kf.grid_round_serial if serial else kf.grid_round)(
        flat, vflat, codes, fmt.params(), mode, overflow, np.uint64(key), srk,
        int(dtype == np.float32), counts, hist, bad,
        int(lanes32))
    if np.any(bad >= 0):
        i = int(bad[bad >= 0].min())
        where = _index(i, x.shape)
        v = float(flat[i])
        if np.isnan(v) or (np.isinf(v) and overflow == int(Overflow.WRAP)):
            raise ValueError(f"x{list(where)} is {v}, which the integer format {fmt} cannot "
                             "encode")
        raise ValueError(f"x{list(where)} = {v!r} is outside the range {fmt.min!r}..{fmt.max!r} "
                         f"of {fmt} (overflow='error')")
    stats = None
    if want_stats:
        c = counts.sum(axis=0)
        h = hist.sum(axis=0)
        stats = Stats(total=n, underflow=int(c[0]), subnormal=int(c[1]), overflow=int(c[2]),
                      nan=int(c[3]), inexact=int(c[4]), exp_hist=h[:N_BINADES].copy(),
                      hist_zero=int(h[N_BINADES]), hist_inf=int(h[N_BINADES + 1]),
                      hist_nan=int(h[N_BINADES + 2]))
    return vals, (codes.reshape(x.shape) if want_codes else None), stats


def parse_overflow(overflow) -> int:
    """The kernel int of a grid format's overflow policy (None: ``saturate``)."""
    return int(Overflow.parse("saturate" if overflow is None else overflow, fixed=True))


def _policy_ok(fmt: GridFormat, overflow: int) -> None:
    if overflow == int(Overflow.WRAP) and fmt.symmetric:
        raise ValueError(f"overflow='wrap' needs a two's-complement range; {fmt} is symmetric "
                         "(use saturate or error)")


def quantize(x, fmt: GridFormat, mode: int, overflow, key: int, srk: int, want_stats: bool,
             out=None):
    """``(values, Stats or None)`` of host ``x`` rounded onto ``fmt`` (see :func:`fpsim.quantize`)."""
    policy = parse_overflow(overflow)
    _policy_ok(fmt, policy)
    vals, _, st = _run(x, fmt, mode, policy, key, srk, True, False, want_stats, out)
    return vals, st


def code_dtype(fmt: GridFormat) -> np.dtype:
    """Smallest unsigned dtype holding a code of ``fmt`` (uint8/16/32/64)."""
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        if fmt.bits <= np.dtype(dt).itemsize * 8:
            return np.dtype(dt)
    raise AssertionError("grid formats are at most 53 bits wide")


def encode(x, fmt: GridFormat, mode: int, overflow, key: int, srk: int) -> np.ndarray:
    """Two's-complement codes ``k mod 2^bits`` of host ``x`` rounded onto ``fmt``.

    Raises:
        ValueError: a NaN (or, under ``wrap``, an infinite) input, which no integer encodes; an
            out-of-range value under ``overflow='error'``.
    """
    policy = parse_overflow(overflow)
    _policy_ok(fmt, policy)
    _, codes, _ = _run(x, fmt, mode, policy, key, srk, False, True, False)
    return codes.astype(code_dtype(fmt))


def decode(codes, fmt: GridFormat) -> np.ndarray:
    """float64 values ``k·δ`` (rounded to nearest for a non-power-of-two δ) of codes of ``fmt``.

    Raises:
        TypeError: the codes are not integers.
        ValueError: a code outside ``0 .. 2^bits - 1``, or the unused code ``2^(bits-1)`` of a
            symmetric format; the message names the first offending index.
    """
    from fpsim.numerics import backend

    c64 = backend.host_codes(codes, fmt)
    if fmt.symmetric:
        hole = c64 == (1 << (fmt.bits - 1))
        if np.any(hole):
            where = _index(int(np.argmax(hole.reshape(-1))), c64.shape)
            raise ValueError(f"code {1 << (fmt.bits - 1)} at index {where} is not a value of "
                             f"the symmetric format {fmt} (its most negative code is unused)")
    out = np.empty(c64.shape, np.float64)
    _kernels().grid_decode(c64.reshape(-1), out.reshape(-1), fmt.params(),
                           backend.nchunks(c64.size))
    return out
