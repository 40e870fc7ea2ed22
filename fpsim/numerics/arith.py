"""Public elementwise arithmetic: add, sub, mul, div, sqrt, fma, correctly rounded once into any
format of at most 26 bits of precision, with IEEE exception flags.

Operands broadcast like numpy and must be values of the format (a non-representable operand is a
ValueError naming the operand and the first offending index). Results are float64 arrays. The
semantics are those of :mod:`fpsim.reference.arith` (SoftFloat's), which the tests prove equal.
"""

from __future__ import annotations

import numpy as np

from fpsim.numerics import backend
from fpsim.numerics.convert import quantize
from fpsim.numerics.format import Format
from fpsim.numerics.formats import format as _format
from fpsim.kernels import arith as karith
from fpsim.kernels.rng import stream_key
from fpsim.numerics.modes import Overflow, RoundMode, as_flag
from fpsim.numerics.modes import Flag

_OPS = {"add": karith.OP_ADD, "sub": karith.OP_SUB, "mul": karith.OP_MUL, "div": karith.OP_DIV,
        "sqrt": karith.OP_SQRT, "fma": karith.OP_FMA}
_NAMES = ("a", "b", "c")


def check_arith_format(fmt: Format) -> None:
    """Raise ValueError unless the exact float64 intermediates of :mod:`fpsim.kernels.arith`
    serve ``fmt``: at most 26 bits of precision and exponents within ±511."""
    lo = fmt.emin - fmt.man_bits if fmt.subnormals else fmt.emin
    if fmt.man_bits > 25 or lo < -511 or fmt.emax > 511:
        raise ValueError(
            f"arithmetic in {fmt} is not supported: it needs man_bits <= 25 and exponents within "
            f"+-511 (exact float64 intermediates); this format has man_bits={fmt.man_bits}, "
            f"smallest value 2^{lo}, largest binade 2^{fmt.emax}")


#: The operands as float64 host arrays broadcast to one shape (device operands copied).
_operands = backend.host_operands


def first_non_value(arr: np.ndarray, fmt: Format) -> tuple[int, ...] | None:
    """Index of the first element of the float64 array ``arr`` that is not a value of ``fmt``
    (NaN counts as one; ±0 when the format rounds it to zero), or None. For error messages: the
    kernels make the same check in their own pass."""
    back = quantize(arr, fmt, "rtz")
    bad = ~((back.view(np.uint64) == arr.view(np.uint64)) | np.isnan(arr)
            | ((arr == 0) & (back == 0)))
    if not np.any(bad):
        return None
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), arr.shape))


def _not_a_value(raw, fmt):
    """The ValueError naming the first operand that holds a non-value of ``fmt`` and where (an
    index in the operand's own shape). Device operands are copied to the host for it: the same
    message from both backends, on an error path only."""
    for name, x in zip(_NAMES, raw):
        arr = _operands([x])[0]
        where = first_non_value(arr, fmt)
        if where is not None:
            return ValueError(f"operand {name} holds {float(arr[where])!r} at index {where}, "
                              f"which is not a value of {fmt}: quantize it first")
    raise AssertionError("the kernel flagged an operand that is a value of the format")


def arith_sr_bits(fmt: Format, sr_bits) -> int:
    """Random bits stochastic rounding of an op result compares: ``sr_bits`` checked against
    ``51 - man_bits`` (the exact bits of the rounded-to-odd float64 intermediate), which is also
    the default."""
    srk_max = 51 - fmt.man_bits
    if sr_bits is None:
        return srk_max
    if isinstance(sr_bits, bool) or not isinstance(sr_bits, (int, np.integer)) or not (
            1 <= int(sr_bits) <= srk_max):
        raise ValueError(f"sr_bits={sr_bits!r} is invalid for arithmetic in {fmt}: use None or an "
                         f"int in 1..{srk_max} (the exact bits of the float64 intermediate)")
    return int(sr_bits)


def tininess_flag(tininess) -> int:
    """1 for tininess detected before rounding, 0 after; ValueError otherwise."""
    if tininess not in ("after", "before"):
        raise ValueError(f"tininess={tininess!r} is invalid: use 'after' or 'before'")
    return int(tininess == "before")


def _apply(op, args, fmt, rounding, overflow, seed, flags, stream, sr_bits,
                  tininess, stats):
    fmt = _format(fmt)
    check_arith_format(fmt)
    mode = int(RoundMode.parse(rounding))
    policy = int(Overflow.parse(overflow))
    tin = tininess_flag(tininess)
    srk = arith_sr_bits(fmt, sr_bits)
    done = backend.elementwise(_OPS[op], args, fmt, _wide(fmt), mode, policy,
                               stream_key(seed, stream), srk, tin, as_flag("flags", flags),
                               as_flag("stats", stats))
    if done is None:
        raise _not_a_value(args, fmt)
    vals, fl, st = done
    res = [backend.unwrap_0d(vals)]
    if flags:
        res.append(backend.unwrap_0d(fl))
    if stats:
        res.append(st)
    return res[0] if len(res) == 1 else tuple(res)


def _wide(fmt: Format) -> Format:
    """``fmt``'s precision with (about) float64's exponent range, for tininess after rounding:
    ``fmt``'s code layout with an unbounded exponent, as far as rounding near ``fmt``'s
    smallest normal can tell.

    Rounding can tell two things: the precision, and which of two neighbours a tie (``rne``) or
    round-to-odd (``rto``) picks, which is the one whose code ends in 0 (1). With fraction bits
    that is the fraction's last bit. Without them (``man_bits = 0``) it is the last bit of the
    biased exponent, so the wide format's bias must have ``fmt``'s bias parity (float64's 1023
    made 2^-16 odd in e5m0 with bias 16, where its code is 0, and sent every such tie and
    round-to-odd case into the other binade).

    With fraction bits: float64's exponent range (``ieee`` specials; ``fn`` would reach 2^1024).
    Without: 10 exponent bits and the bias ``fmt.bias + 510`` (same parity), whose binades
    2^(emin - 510) .. 2^(emin + 511) hold every result near ``fmt``'s smallest normal 2^emin, for
    every format :func:`check_arith_format` accepts (emin >= -511); ``fn`` specials, as
    ``ieee`` forbids ``man_bits = 0`` (no room for Inf and NaN codes). (No 11-bit format fits:
    with ``man_bits = 0`` only bias 1023 keeps its binades within float64's.) Formats beyond
    that range (the reference takes any) get the nearest bias of that parity that fits.

    The one definition: the reference (:mod:`fpsim.reference.arith`), the device kernels'
    callers and ``fpsim validate hardware`` all use this one."""
    if fmt.man_bits:
        return Format(exp_bits=11, man_bits=fmt.man_bits, specials="ieee")
    parity = fmt.bias & 1
    # Valid biases of a 10-bit fn format without fraction bits: -1 .. 1023 (2^-1022 .. 2^1023).
    bias = min(max(fmt.bias + 510, -parity), 1022 + parity)
    return Format(exp_bits=10, man_bits=0, bias=bias, specials="fn")


def _doc(formula):
    return (f"""Correctly rounded ``{formula}`` in ``fmt`` (one rounding), elementwise with numpy
    broadcasting.

    Args:
        rounding, overflow, seed, stream: as :func:`fpsim.quantize`; stochastic rounding compares
            ``sr_bits`` random bits (default and maximum ``51 - man_bits``, the exact bits of the
            float64 intermediate).
        flags: also return a uint8 array of :class:`fpsim.Flag` bits (INEXACT, UNDERFLOW,
            OVERFLOW, DIVBYZERO, INVALID), SoftFloat's conventions.
        tininess: ``"after"`` rounding (default, as SoftFloat) or ``"before"``.
        stats: also return a :class:`fpsim.Stats` of the rounding of the exact results (event
            counts, and their exponent histogram), as :func:`fpsim.quantize` counts them.

    Returns:
        float64 results, then the flags if asked, then the Stats if asked (a tuple when more
        than one).
    """)


def add(a, b, fmt, rounding="rne", overflow="ieee", seed=0, flags=False, *, stream=0,
        sr_bits=None, tininess="after", stats=False):
    return _apply("add", (a, b), fmt, rounding, overflow, seed, flags, stream, sr_bits,
                  tininess, stats)


def sub(a, b, fmt, rounding="rne", overflow="ieee", seed=0, flags=False, *, stream=0,
        sr_bits=None, tininess="after", stats=False):
    return _apply("sub", (a, b), fmt, rounding, overflow, seed, flags, stream, sr_bits,
                  tininess, stats)


def mul(a, b, fmt, rounding="rne", overflow="ieee", seed=0, flags=False, *, stream=0,
        sr_bits=None, tininess="after", stats=False):
    return _apply("mul", (a, b), fmt, rounding, overflow, seed, flags, stream, sr_bits,
                  tininess, stats)


def div(a, b, fmt, rounding="rne", overflow="ieee", seed=0, flags=False, *, stream=0,
        sr_bits=None, tininess="after", stats=False):
    return _apply("div", (a, b), fmt, rounding, overflow, seed, flags, stream, sr_bits,
                  tininess, stats)


def sqrt(a, fmt, rounding="rne", overflow="ieee", seed=0, flags=False, *, stream=0,
         sr_bits=None, tininess="after", stats=False):
    return _apply("sqrt", (a,), fmt, rounding, overflow, seed, flags, stream, sr_bits,
                  tininess, stats)


def fma(a, b, c, fmt, rounding="rne", overflow="ieee", seed=0, flags=False, *, stream=0,
        sr_bits=None, tininess="after", stats=False):
    return _apply("fma", (a, b, c), fmt, rounding, overflow, seed, flags, stream, sr_bits,
                  tininess, stats)


add.__doc__ = _doc("a + b")
sub.__doc__ = _doc("a - b")
mul.__doc__ = _doc("a * b")
div.__doc__ = _doc("a / b")
sqrt.__doc__ = _doc("sqrt(a)")
fma.__doc__ = _doc("a * b + c")

__all__ = ["Flag", "add", "check_arith_format", "div", "fma", "mul", "sqrt", "sub"]
