"""Fuzz the argument handling of ``fpsim.format``, ``fpsim.Format`` and ``fpsim.quantize``:
every outcome is a result or a ValueError/TypeError with a non-empty message, never another
exception (numpy's OverflowError, an IndexError, a Numba typing error...).

Derandomized and small. The calls that reach a kernel use only the float64/float32 carriers and
the modes rne, rtz and sr of the serial driver, which the rest of the suite compiles anyway: a
new dtype or mode here would compile a new kernel signature (tens of seconds) on a cold cache.
Each finding also has an explicit regression example below.
"""

from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

import fpsim  # noqa: E402

FUZZ = settings(derandomize=True, deadline=None, max_examples=150, database=None)

_TOKENS = ["u", "e", "m", "b", "-", "0", "1", "2", "3", "4", "5", "8", "10", "11", "52", "53",
           "99", "-7", "fn", "fnuz", "ieee", "finite", "-nosub", "-nozero", "x", " ", "E",
           "e5m2", "bf16", "float8_", "\u0663", "9" * 30]
_JUNK = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=True), st.text(max_size=3),
                  st.integers(-2**70, 2**70), st.just([]), st.just(object()))
_FIELD = st.one_of(st.integers(-5, 70), st.integers(2**62, 2**70), _JUNK)


def _ok_or_clean_error(call):
    """Run ``call``; a ValueError or TypeError must say something; anything else fails."""
    try:
        return call()
    except (ValueError, TypeError) as err:
        assert str(err).strip(), f"{type(err).__name__} without a message"
        return None


@FUZZ
@given(st.one_of(st.lists(st.sampled_from(_TOKENS), max_size=6).map("".join),
                 st.text(max_size=10), _JUNK))
def test_format_specs_give_a_format_or_a_clean_error(spec):
    fmt = _ok_or_clean_error(lambda: fpsim.format(spec))
    if fmt is not None:
        assert isinstance(fmt, fpsim.Format)
        assert fpsim.format(fmt.spec) == fmt  # the spec a format prints parses back to it


@FUZZ
@given(exp_bits=_FIELD, man_bits=_FIELD, bias=_FIELD,
       specials=st.one_of(st.sampled_from(["ieee", "fn", "fnuz", "finite", "", "IEEE"]), _JUNK),
       flags=st.tuples(*[st.one_of(st.booleans(), st.sampled_from([0, 1, None]))] * 3))
def test_format_fields_give_a_format_or_a_clean_error(exp_bits, man_bits, bias, specials, flags):
    subnormals, signed, zero = flags
    fmt = _ok_or_clean_error(lambda: fpsim.Format(
        exp_bits=exp_bits, man_bits=man_bits, bias=bias, specials=specials,
        subnormals=subnormals, signed=signed, zero=zero))
    if fmt is not None:
        # A valid format rounds (serial float64 rne driver: compiled by the rest of the suite).
        x = np.array([0.0, -1.5, 3.0, np.inf, -np.inf, np.nan, 1e300, 5e-324])
        y = fpsim.quantize(x, fmt)
        assert y.shape == x.shape and float(fmt.max) > 0 and str(fmt)


_DTYPES = ["float64", "float32", "float16", "int64", "int32", "uint64", "uint8", "bool",
           "complex128", "object", "U3", "M8[s]"]
_VALUES = st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                             st.integers(-2**64, 2**64), st.booleans()), min_size=0, max_size=6)


@st.composite
def _inputs(draw):
    values = draw(_VALUES)
    dtype = draw(st.sampled_from(_DTYPES + ["list"]))
    if dtype == "list":
        return values
    try:
        with np.errstate(all="ignore"):
            arr = np.array(values, dtype=dtype)
    except (ValueError, TypeError, OverflowError):
        arr = np.array([1, 2**60 + 1, -2**63], dtype="int64")  # still hostile: beyond 2^53
    layout = draw(st.sampled_from(["plain", "read-only", "strided", "2-d", "0-d"]))
    if layout == "read-only":
        arr.flags.writeable = False
    elif layout == "strided":
        arr = arr[::2]
    elif layout == "2-d" and arr.size:
        arr = arr.reshape(1, -1)
    elif layout == "0-d" and arr.size:
        arr = arr[0, ...] if arr.ndim else arr
    return arr


def _out_for(kind, x):
    shape = np.shape(x)
    if kind == "none":
        return None
    if kind == "float64":
        return np.empty(shape)
    if kind == "float32":
        return np.empty(shape, np.float32)
    if kind == "wrong shape":
        return np.empty(shape + (2,))
    if kind == "read-only":
        out = np.empty(shape)
        out.flags.writeable = False
        return out
    if kind == "int64":
        return np.empty(shape, np.int64)
    return [0.0] * int(np.size(x))  # a list


@FUZZ
@given(x=_inputs(),
       fmt=st.sampled_from(["bf16", "e4m3", "fp16", "e2m1", "e8m0", "e5m0b16fn", "nope"]),
       rounding=st.one_of(st.sampled_from(["rne", "rtz", "sr", "RNE", "nearest", "", "rnx"]),
                          st.sampled_from([0, 2, 6, 7, -1, 2.0, True, None])),
       overflow=st.sampled_from(["ieee", "saturate", "sat", "wrap", "x", None, 0, 1, 5, True]),
       seed=st.one_of(st.integers(-2**70, 2**70), st.sampled_from([None, 1.5, True, "1"])),
       stream=st.one_of(st.integers(-2**70, 2**70), st.sampled_from([None, 2.5, False])),
       sr_bits=st.one_of(st.none(), st.integers(-3, 70), st.sampled_from([True, 3.0, "8"])),
       stats=st.booleans(),
       out=st.sampled_from(["none", "float64", "float32", "wrong shape", "read-only", "int64",
                            "list"]))
def test_quantize_arguments_give_a_result_or_a_clean_error(x, fmt, rounding, overflow, seed,
                                                           stream, sr_bits, stats, out):
    out_arr = _out_for(out, x)
    res = _ok_or_clean_error(lambda: fpsim.quantize(
        x, fmt, rounding, overflow, seed, stats, stream=stream, sr_bits=sr_bits, out=out_arr))
    if res is not None:
        values = res[0] if stats else res
        assert np.shape(values) == np.shape(x)
        if out_arr is not None:
            assert values is out_arr


@FUZZ
@given(codes=st.one_of(st.lists(st.one_of(st.integers(-2**65, 2**65), st.booleans(),
                                          st.floats(width=64)), max_size=5),
                       st.sampled_from([np.array([1, 2], np.int8), np.array([-1]),
                                        np.array([1.0]), np.array([2**64 - 1], np.uint64),
                                        np.array(["1"]), np.array([1 + 1j])])),
       fmt=st.sampled_from(["bf16", "e4m3", "fp64", "e2m1", "e8m0"]))
def test_decode_arguments_give_a_result_or_a_clean_error(codes, fmt):
    _ok_or_clean_error(lambda: fpsim.decode(codes, fmt))


# ---- the findings, as explicit examples ----------------------------------------------------------
def test_decode_of_an_empty_list_is_an_empty_array():
    """decode([]) was a TypeError ('codes must be integers, got dtype float64': numpy reads an
    empty list as float64); an empty list holds no non-integer."""
    got = fpsim.decode([], "e4m3")
    assert got.shape == (0,) and got.dtype == np.float64


def test_format_name_must_be_a_string():
    """Format(name=3) was accepted and str() of it then raised 'returned non-string'."""
    with pytest.raises(TypeError, match="name"):
        fpsim.Format(exp_bits=5, man_bits=2, name=3)
    assert str(fpsim.Format(exp_bits=5, man_bits=2, name="mine")) == "mine"


def test_matmul_order_of_the_wrong_type_names_order():
    """order=['x'] was numpy-free Python's bare "unhashable type: 'list'"."""
    with pytest.raises(ValueError, match="order="):
        fpsim.matmul(np.ones((1, 2)), np.ones((2, 1)), "bf16", order=["x"])


def test_spec_that_parses_but_is_out_of_range_does_not_list_every_name():
    """'e99m2' is understood as a spec: its message is the range error alone, not followed by
    the list of every known format name (which suggested the spec was not understood)."""
    with pytest.raises(ValueError, match="exp_bits=99") as err:
        fpsim.format("e99m2")
    assert "known names" not in str(err.value)
