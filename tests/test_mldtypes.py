"""Named formats equal the ml_dtypes / numpy casts bit for bit (RNE, ieee overflow).

float32 inputs: the format-grid edge set plus random bit patterns and log-uniform values, through
both ``encode`` (codes) and ``quantize`` (values). float64 inputs: numpy's float16 and float32
casts round float64 directly (correctly rounded); ml_dtypes rounds float64 through float32 first
(a double rounding) before 0.7.0, so for those versions it is an oracle only for float64 inputs that
are float32 values.

ml_dtypes 0.7.0 fixed both of its defects that fpsim's docs record (formats.md section 8): the
float64 double rounding and the e8m0 result for float32 subnormals. The comparisons are therefore
version-aware: for versions that have a defect, the test checks that the difference is exactly the
documented one (and that fpsim agrees with the exact reference there); for versions without it, the
peer is an oracle on those inputs too and must equal fpsim bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

import fpsim
from fpsim import reference
from fpsim.validate.quantize import MLDTYPES_ROUNDING, Mismatches, compare_with_oracle, oracle_dtype
from _inputs import assert_same_bits, edge_values, random_values

import ml_dtypes

#: ml_dtypes releases before this one double-round float64 inputs (through float32) and send
#: float32 subnormals in (2^-127, 1.5 * 2^-127) to e8m0 2^-126 (measured: 0.5.4 and 0.6.0 have
#: both defects, 0.7.0 neither).
MLDTYPES_DEFECTS_FIXED = (0, 7)
HAS_DEFECTS = tuple(int(p) for p in ml_dtypes.__version__.split(".")[:2]) < MLDTYPES_DEFECTS_FIXED


def _without_e8m0_defect_inputs(fmt, x):
    """Drop the float32 subnormals where old ml_dtypes is wrong in e8m0 (adjudicated below)."""
    if fmt.name == "float8_e8m0fnu" and HAS_DEFECTS:
        return x[~((np.abs(x) < np.float32(2.0 ** -126)) & (x != 0))]
    return x

ORACLE_FORMATS = [f for f in fpsim.formats.NAMED.values() if f.bits <= 32 and f.name != "tfloat32"]


@pytest.mark.parametrize("fmt", ORACLE_FORMATS, ids=lambda f: f.name)
def test_float32_inputs_equal_oracle(fmt):
    x = np.concatenate([edge_values(fmt, "float32"), random_values("float32", 200_000, seed=2)])
    x = _without_e8m0_defect_inputs(fmt, x)
    codes, values = Mismatches(), Mismatches()
    compare_with_oracle(x, fmt, codes, values)
    assert codes.count == 0, f"code mismatches (x bits, fpsim, oracle): {codes.examples}"
    assert values.count == 0, f"value mismatches (x bits, fpsim, oracle): {values.examples}"


@pytest.mark.parametrize("name,dtype", [("float16", np.float16), ("float32", np.float32)])
def test_float64_inputs_equal_numpy(name, dtype):
    fmt = fpsim.format(name)
    x = np.concatenate([edge_values(fmt, "float64"), random_values("float64", 200_000, seed=3)])
    y = fpsim.quantize(x, fmt)
    assert y.dtype == np.float64
    with np.errstate(all="ignore"):
        want = x.astype(dtype).astype(np.float64)
    nan = np.isnan(x)  # numpy keeps NaN payload bits; fpsim gives the canonical NaN, same sign
    assert np.array_equal(np.signbit(y[nan]), np.signbit(want[nan])) and np.isnan(y[nan]).all()
    assert_same_bits(y[~nan], want[~nan], x[~nan], name)


@pytest.mark.parametrize("fmt", [f for f in ORACLE_FORMATS if f.name not in ("float16", "float32")],
                         ids=lambda f: f.name)
def test_float64_inputs_that_are_float32_values_equal_mldtypes(fmt):
    x32 = np.concatenate([edge_values(fmt, "float32"), random_values("float32", 50_000, seed=4)])
    x32 = _without_e8m0_defect_inputs(fmt, x32[~np.isnan(x32)])
    rounding = MLDTYPES_ROUNDING.get(fmt.name, "rne")
    y = fpsim.quantize(x32.astype(np.float64), fmt, rounding)
    assert y.dtype == np.float64
    with np.errstate(all="ignore"):
        want = x32.astype(oracle_dtype(fmt)).astype(np.float64)
    keep = ~np.isnan(want)
    assert np.isnan(y[~keep]).all()
    assert_same_bits(y[keep], want[keep], x32[keep], fmt.name)


@pytest.mark.parametrize("fmt", [f for f in ORACLE_FORMATS if f.name not in ("float16", "float32")],
                         ids=lambda f: f.name)
@pytest.mark.skipif(HAS_DEFECTS, reason=f"ml_dtypes {ml_dtypes.__version__} double-rounds float64 "
                    "inputs (test_mldtypes_float64_inputs_double_rounding checks that instead)")
def test_float64_inputs_equal_mldtypes(fmt):
    """From 0.7.0 on, ml_dtypes rounds float64 directly: an oracle for any float64 input."""
    x = np.concatenate([edge_values(fmt, "float64"), random_values("float64", 50_000, seed=5)])
    x = x[~np.isnan(x)]
    y = fpsim.quantize(x, fmt, MLDTYPES_ROUNDING.get(fmt.name, "rne"))
    with np.errstate(all="ignore"):
        want = x.astype(oracle_dtype(fmt)).astype(np.float64)
    keep = ~np.isnan(want)
    assert np.isnan(y[~keep]).all()
    assert_same_bits(y[keep], want[keep], x[keep], fmt.name)


def test_mldtypes_float64_inputs_double_rounding():
    """1 + 2^-8 + 2^-40 is above the bfloat16 midpoint 1 + 2^-8, so it rounds up (fpsim and the
    exact reference). ml_dtypes before 0.7.0 goes through float32, where the 2^-40 is lost, and
    then ties to even (down) — the reason float64 inputs were compared with those versions only
    when they are float32 values. 0.7.0 gives the correct result."""
    x = 1 + 2.0 ** -8 + 2.0 ** -40
    assert fpsim.quantize(x, "bfloat16") == 1 + 2.0 ** -7 == reference.round_value(x, "bfloat16")
    peer = float(np.array([x]).astype(ml_dtypes.bfloat16)[0])
    assert peer == (1.0 if HAS_DEFECTS else 1 + 2.0 ** -7)


def test_e8m0_mldtypes_ties_away_and_fpsim_rne_ties_even():
    """ml_dtypes rounds float8_e8m0fnu ties away from zero; fpsim's rne goes to the even code."""
    x = np.array([3.0, 0.75, 1.5, 6.0], np.float32)
    assert fpsim.quantize(x, "e8m0").tolist() == [2.0, 0.5, 2.0, 8.0]  # codes 128, 126, 128, 130
    assert fpsim.quantize(x, "e8m0", "rna").tolist() == [4.0, 1.0, 2.0, 8.0]
    assert x.astype(ml_dtypes.float8_e8m0fnu).astype(np.float64).tolist() == [4.0, 1.0, 2.0, 8.0]


def test_e8m0_float32_subnormals_against_mldtypes():
    """The float32 subnormals in (2^-127, 1.5 * 2^-127) are nearest to 2^-127, which fpsim and
    the exact reference give; ml_dtypes before 0.7.0 sends them to 2^-126, 0.7.0 to 2^-127."""
    x = np.array([0x00400001, 0x00500000, 0x005FFFFF], np.uint32).view(np.float32)
    peer = x.astype(ml_dtypes.float8_e8m0fnu).astype(np.float64)
    assert (peer == (2.0 ** -126 if HAS_DEFECTS else 2.0 ** -127)).all()
    for rounding in ("rne", "rna"):
        got = fpsim.quantize(x, "e8m0", rounding)
        want = [reference.round_value(float(v), "e8m0", rounding) for v in x]
        assert got.tolist() == want == [2.0 ** -127] * 3
