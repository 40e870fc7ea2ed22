"""The Format descriptor: derived properties against ml_dtypes/numpy finfo, code values against the
ml_dtypes decoding of every bit pattern, spec round-trips, names and aliases, and validation."""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

import fpsim
from fpsim.numerics import formats
from fpsim.numerics.format import Format, parse_spec
from _inputs import CUSTOM_SPECS, all_formats

NAMED = list(formats.NAMED.values())

#: numpy/ml_dtypes scalar type of every named format that has one (tfloat32 has none).
ORACLE = {
    "float64": np.float64,
    "float32": np.float32,
    "float16": np.float16,
    **{n: getattr(ml_dtypes, n) for n in formats.NAMED if hasattr(ml_dtypes, n)},
}
WITH_ORACLE = [f for f in NAMED if f.name in ORACLE]


def _finfo(dtype):
    return np.finfo(dtype) if dtype in (np.float16, np.float32, np.float64) else ml_dtypes.finfo(dtype)


def test_every_named_format_but_tfloat32_has_an_oracle():
    assert {f.name for f in NAMED} - set(ORACLE) == {"tfloat32"}


# ---- derived properties ------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", WITH_ORACLE, ids=lambda f: f.name)
def test_derived_properties_equal_finfo(fmt):
    fi = _finfo(ORACLE[fmt.name])
    assert fmt.max == float(fi.max)
    assert fmt.min_normal == float(fi.smallest_normal)
    # finfo reports smallest_normal as smallest_subnormal for formats without subnormals.
    assert fmt.min_subnormal == float(fi.smallest_subnormal)
    assert fmt.eps == float(fi.eps)
    assert fmt.bits == fi.bits
    assert -fmt.max == float(fi.min) or not fmt.signed


def test_tfloat32_by_hand():
    f = formats.tfloat32
    assert f.max == (2 - 2.0 ** -10) * 2.0 ** 127
    assert f.min_normal == 2.0 ** -126
    assert f.min_subnormal == 2.0 ** -136
    assert f.eps == 2.0 ** -10
    assert f.bits == 19


def test_e8m0fnu_by_hand():
    f = formats.float8_e8m0fnu
    assert f.max == 2.0 ** 127
    assert f.min_normal == f.min_subnormal == 2.0 ** -127
    assert not f.zero and not f.signed and not f.subnormals
    assert not f.has_negzero and not f.has_inf and f.has_nan
    assert f.bits == 8
    assert f.value_of_code(0) == Fraction(1, 2 ** 127)
    assert f.value_of_code(254) == 2 ** 127
    assert math.isnan(f.value_of_code(255))


# ---- exact enumeration over codes --------------------------------------------------------------
SMALL = [f for f in all_formats() if f.bits <= 16]


@functools.lru_cache(maxsize=None)
def _values(fmt):
    return [fmt.value_of_code(c) for c in range(1 << fmt.bits)]


def test_small_formats_cover_named_and_custom():
    specs = {f.spec for f in SMALL}
    assert {"e5m10", "e8m7", "ue8m0fn-nozero", "e2m1finite"} <= specs
    assert sum(1 for s in CUSTOM_SPECS if fpsim.format(s).bits <= 16) >= 8


@pytest.mark.parametrize("fmt", SMALL, ids=lambda f: f.spec)
def test_n_finite_equals_enumeration(fmt):
    n = sum(1 for v in _values(fmt) if isinstance(v, Fraction))
    assert fmt.n_finite == n
    # Anything that is not finite is ±Inf or NaN, and Inf only in ieee formats.
    others = [v for v in _values(fmt) if not isinstance(v, Fraction)]
    assert all(math.isnan(v) or (math.isinf(v) and fmt.has_inf) for v in others)
    assert any(math.isnan(v) for v in others) == fmt.has_nan


@pytest.mark.parametrize("fmt", SMALL, ids=lambda f: f.spec)
def test_max_and_min_are_extremes_of_the_codes(fmt):
    finite = [v for v in _values(fmt) if isinstance(v, Fraction)]
    assert max(finite) == Fraction(fmt.max)
    assert min(abs(v) for v in finite if v) == Fraction(fmt.min_subnormal)
    assert min(finite) == (-Fraction(fmt.max) if fmt.signed else (0 if fmt.zero else fmt.min_subnormal))


@pytest.mark.parametrize("fmt", [f for f in WITH_ORACLE if f.bits <= 16], ids=lambda f: f.name)
def test_value_of_code_equals_ml_dtypes(fmt):
    codes = np.arange(1 << fmt.bits, dtype=np.uint16 if fmt.bits > 8 else np.uint8)
    with np.errstate(invalid="ignore"):  # signalling NaN patterns warn when widened
        ref = codes.view(ORACLE[fmt.name]).astype(np.float64)
    sign_bit = fmt.bits - 1
    bad = []
    for c, v, r in zip(codes.tolist(), _values(fmt), ref.tolist()):
        if isinstance(v, float) and math.isnan(v):
            ok = math.isnan(r)
        elif isinstance(v, float):  # ±Inf
            ok = v == r
        else:
            ok = not math.isnan(r) and not math.isinf(r) and Fraction(r) == v
            if ok and v == 0 and fmt.signed:  # the sign of zero comes from the sign bit
                ok = bool(math.copysign(1, r) < 0) == bool(c >> sign_bit)
        if not ok:
            bad.append((hex(c), v, r))
    assert not bad, bad[:8]


def test_value_of_code_rejects_out_of_range():
    with pytest.raises(ValueError, match="256"):
        formats.float8_e4m3fn.value_of_code(256)
    with pytest.raises(ValueError, match="-1"):
        formats.float8_e4m3fn.value_of_code(-1)


# ---- specs, names, aliases, identity -----------------------------------------------------------
@pytest.mark.parametrize("fmt", all_formats(), ids=lambda f: f.spec)
def test_spec_round_trip(fmt):
    again = fpsim.format(fmt.spec)
    assert again == fmt
    assert hash(again) == hash(fmt)
    assert parse_spec(fmt.spec) == fmt
    assert again.spec == fmt.spec


@pytest.mark.parametrize("alias,name", [
    ("fp16", "float16"), ("half", "float16"), ("binary16", "float16"), ("FP16", "float16"),
    (" float16 ", "float16"), ("bf16", "bfloat16"), ("e4m3", "float8_e4m3fn"),
    ("e4m3fn", "float8_e4m3fn"), ("e5m2", "float8_e5m2"), ("tf32", "tfloat32"),
    ("e8m0", "float8_e8m0fnu"), ("fp4", "float4_e2m1fn"), ("e2m1", "float4_e2m1fn"),
    ("e3m2", "float6_e3m2fn"), ("e2m3", "float6_e2m3fn"), ("fp32", "float32"),
    ("double", "float64"), ("e4m3fnuz", "float8_e4m3fnuz"), ("e5m2fnuz", "float8_e5m2fnuz"),
    ("e4m3b11fnuz", "float8_e4m3b11fnuz"),
])
def test_aliases_resolve_to_the_named_object(alias, name):
    assert fpsim.format(alias) is formats.NAMED[name]


def test_every_alias_and_name_resolves():
    for name, fmt in formats.NAMED.items():
        assert fpsim.format(name) is fmt
        assert getattr(formats, name) is fmt
    for alias, name in formats.ALIASES.items():
        assert fpsim.format(alias) is formats.NAMED[name]


def test_registry_specs_are_the_canonical_specs():
    # numerics/names.py writes each named format as a spec string; it must be the format's own
    # canonical spec, and the registry must hold exactly the named formats, in display order.
    from fpsim.numerics import names

    assert list(names.NAMED_SPECS) == list(formats.NAMED)
    for name, spec in names.NAMED_SPECS.items():
        assert formats.NAMED[name].spec == spec, name
        assert formats.NAMED[name].name == name


@pytest.mark.parametrize("fields,spec", [
    # Spellings an alias claims for another format are avoided (e4m3 is float8_e4m3fn, e2m1 is
    # float4_e2m1fn, e4m3fnuz has bias 8): the spec spells out ieee or the bias instead.
    (dict(exp_bits=4, man_bits=3), "e4m3ieee"), (dict(exp_bits=2, man_bits=1), "e2m1ieee"),
    (dict(exp_bits=4, man_bits=3, specials="fnuz"), "e4m3b7fnuz"),
    (dict(exp_bits=5, man_bits=2), "e5m2"), (dict(exp_bits=4, man_bits=3, specials="fn"), "e4m3fn"),
    (dict(exp_bits=5, man_bits=10, subnormals=False), "e5m10-nosub"),
])
def test_spec_avoids_alias_spellings(fields, spec):
    assert Format(**fields).spec == spec


def test_format_of_a_format_is_itself():
    assert fpsim.format(formats.bfloat16) is formats.bfloat16


def test_name_is_not_part_of_identity():
    assert Format(5, 10) == formats.float16
    assert hash(Format(5, 10)) == hash(formats.float16)
    assert Format(5, 10, name="my_half") == formats.float16
    assert formats.float16.replace(name="x") == formats.float16
    assert fpsim.format("e5m10") == formats.float16
    assert fpsim.format("e4m3fn") == formats.float8_e4m3fn
    assert fpsim.format("e4m3ieee") == formats.float8_e4m3
    assert fpsim.format("ue8m0b127fn-nozero") == formats.float8_e8m0fnu
    assert fpsim.format("e4m3b8fnuz") == formats.float8_e4m3fnuz
    assert {Format(8, 7), formats.bfloat16} == {formats.bfloat16}
    # ... but the fields are.
    assert Format(5, 10, bias=14) != formats.float16
    assert Format(5, 10, subnormals=False) != formats.float16
    assert Format(4, 3) != formats.float8_e4m3fn


def test_str_is_name_or_spec():
    assert str(formats.float16) == "float16"
    assert str(Format(5, 10)) == "e5m10"


# ---- validation ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,pattern", [
    (dict(exp_bits=0, man_bits=3), r"exp_bits=0.*1\.\.11"),
    (dict(exp_bits=12, man_bits=3), r"exp_bits=12.*1\.\.11"),
    (dict(exp_bits=5, man_bits=53), r"man_bits=53.*0\.\.52"),
    (dict(exp_bits=5, man_bits=-1), r"man_bits=-1.*0\.\.52"),
    (dict(exp_bits=5, man_bits=2, specials="foo"), r"specials='foo'.*ieee, fn, fnuz, finite"),
    (dict(exp_bits=5, man_bits=0), r"specials='ieee'.*man_bits >= 1"),
    (dict(exp_bits=1, man_bits=2), r"specials='ieee'.*exp_bits >= 2"),
    (dict(exp_bits=5, man_bits=2, zero=False), r"subnormals.*zero"),
    (dict(exp_bits=5, man_bits=2, specials="fnuz", signed=False), r"specials='fnuz'.*unsigned"),
    (dict(exp_bits=5, man_bits=2, specials="finite", signed=False), r"specials='finite'.*unsigned"),
    # Values below float64's range: smallest subnormal, then smallest normal.
    (dict(exp_bits=11, man_bits=52, bias=1100), r"bias=1100.*below float64"),
    (dict(exp_bits=11, man_bits=0, bias=1030, specials="fn", subnormals=False), r"bias=1030.*below float64"),
    # Top binade beyond float64.
    (dict(exp_bits=11, man_bits=52, bias=1000), r"bias=1000.*above float64"),
    (dict(exp_bits=5.0, man_bits=2), r"exp_bits=5\.0.*int"),
    (dict(exp_bits=True, man_bits=2), r"exp_bits=True.*int"),
    (dict(exp_bits=5, man_bits=2.0), r"man_bits=2\.0.*int"),
    (dict(exp_bits=5, man_bits=2, bias=15.0), r"bias=15\.0.*int"),
    (dict(exp_bits=5, man_bits=2, subnormals=1), r"subnormals=1.*bool"),
    (dict(exp_bits=5, man_bits=2, signed="yes"), r"signed='yes'.*bool"),
])
def test_invalid_fields_raise_value_error_naming_the_field(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        Format(**kwargs)


def test_bias_limits_are_exact():
    # Largest bias whose subnormals stay within float64 (2^(1-bias-52) >= 2^-1074): float64 itself.
    assert Format(11, 52, bias=1023) == formats.float64
    with pytest.raises(ValueError, match="bias"):
        Format(11, 52, bias=1024)
    # Smallest bias whose top binade (field 2046 for ieee) stays at or below 2^1023.
    Format(11, 52, bias=1023)
    with pytest.raises(ValueError, match="bias"):
        Format(11, 52, bias=1022)
    # A finite format uses the top binade too: with 11 exponent bits no bias fits float64.
    with pytest.raises(ValueError, match=r"bias=1023.*2\^1024, above"):
        Format(11, 52, bias=1023, specials="finite")
    with pytest.raises(ValueError, match=r"bias=1024.*2\^-1023, below"):
        Format(11, 52, bias=1024, specials="finite", subnormals=False)


@pytest.mark.parametrize("spec", ["nonsense", "e4", "m3", "e4m3xyz", "e4m3-nozeros", ""])
def test_unknown_spec_lists_known_names(spec):
    with pytest.raises(ValueError, match=r"known names: .*float16.*bf16"):
        fpsim.format(spec)


@pytest.mark.parametrize("spec,pattern", [("e12m3", "exp_bits"), ("e5m53", "man_bits"),
                                          ("e5m0", "specials"), ("ue5m2fnuz", "specials")])
def test_invalid_field_in_spec_names_the_field(spec, pattern):
    with pytest.raises(ValueError, match=pattern):
        fpsim.format(spec)


@pytest.mark.parametrize("bad", [3, 3.0, None, b"fp16", np.float16])
def test_format_of_a_non_string_is_type_error(bad):
    with pytest.raises(TypeError, match="str or Format"):
        fpsim.format(bad)


# ---- carriers ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["float16", "bfloat16", "float8_e5m2", "float8_e4m3fn",
                                  "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e4m3b11fnuz",
                                  "float8_e3m4", "float8_e4m3", "float6_e3m2fn", "float6_e2m3fn",
                                  "float4_e2m1fn", "tfloat32", "float32"])
def test_fits_float32_true(name):
    assert formats.NAMED[name].fits_float32


@pytest.mark.parametrize("fmt", [formats.float64, fpsim.format("e11m4"), formats.float8_e8m0fnu,
                                 fpsim.format("e8m24"), fpsim.format("e8m23b126"),
                                 fpsim.format("e8m23b128")],
                         ids=lambda f: f.spec)
def test_fits_float32_false(fmt):
    assert not fmt.fits_float32


def test_fits_float32_matches_params():
    for fmt in all_formats():
        if fmt.fits_float32:
            assert fmt.params("float32").carrier_man_bits == 23
        else:
            with pytest.raises(ValueError, match="float32"):
                fmt.params("float32")


def test_params_rejects_unknown_carrier():
    with pytest.raises(ValueError, match="float128"):
        formats.float16.params("float128")
    with pytest.raises(ValueError, match="float32"):
        formats.float64.params("float32")


def test_spec_round_trip_for_default_bias_fnuz_and_nosub_variants():
    for f in (fpsim.Format(4, 3, specials="fnuz"), fpsim.Format(5, 2, specials="fnuz"),
              fpsim.Format(4, 3, bias=8, specials="fnuz", subnormals=False),
              fpsim.Format(2, 1), fpsim.Format(3, 2), fpsim.Format(4, 3, specials="fn")):
        assert fpsim.format(f.spec) == f, f.spec


def test_fnuz_without_zero_is_rejected():
    with pytest.raises(ValueError, match="specials"):
        fpsim.Format(4, 3, specials="fnuz", subnormals=False, zero=False)


def test_fnuz_nosub_noncanonical_zero_codes_decode_to_plus_zero():
    f = fpsim.format("e4m3fnuz-nosub")
    d = fpsim.decode(np.arange(0x81, 0x88, dtype=np.uint8), f)
    assert (d.view(np.uint64) == 0).all()
    assert (fpsim.encode(d, f) == 0).all()
