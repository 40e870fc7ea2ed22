"""The ``fpsim`` command line (fpsim.cli.main)."""

import json
import re
import sys

import pytest

from fpsim.cli import main
from fpsim.numerics.formats import NAMED


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def cells(line):
    """Cells of a table row (columns are separated by at least two spaces)."""
    return re.split(r"\s{2,}", line.strip())


# ---- formats ---------------------------------------------------------------------------------
def test_formats_float16_row(capsys):
    rc, out, err = run(capsys, "formats", "float16")
    assert rc == 0 and err == ""
    header, dashes, row = out.splitlines()
    assert cells(header) == ["name", "bits", "e", "m", "bias", "emin", "emax", "max", "min normal",
                             "min subnormal", "eps", "specials", "subnormals", "signed", "n_finite"]
    assert set(dashes) == {"-", " "}
    assert cells(row) == ["float16", "16", "5", "10", "15", "-14", "15", "65504.0",
                          "6.103515625e-05 (2^-14)", "5.960464477539063e-08 (2^-24)",
                          "0.0009765625 (2^-10)", "ieee", "yes", "yes", "63488"]


def test_formats_all_named_in_order(capsys):
    rc, out, err = run(capsys, "formats")
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) - 2 == len(NAMED)
    assert [line.split()[0] for line in lines[2:]] == list(NAMED)
    widths = {len(line) for line in lines[:2]}
    assert len(widths) == 1  # header and dashes span the same width


def test_formats_aliases_and_specs(capsys):
    rc, out, _ = run(capsys, "formats", "e5m10", "ue8m0b127fn-nozero", "bf16")
    assert rc == 0
    rows = [cells(line) for line in out.splitlines()[2:]]
    assert rows[0][0] == "e5m10" and rows[0][7:10] == [
        "65504.0", "6.103515625e-05 (2^-14)", "5.960464477539063e-08 (2^-24)"]
    assert rows[1] == ["ue8m0fn-nozero", "8", "8", "0", "127", "-127", "127",
                       "1.7014118346046923e+38 (2^127)", "5.877471754111438e-39 (2^-127)",
                       "5.877471754111438e-39 (2^-127)", "1.0 (2^0)", "fn", "no", "no", "255"]
    assert rows[2][0] == "bfloat16"


def test_formats_json(capsys):
    rc, out, err = run(capsys, "formats", "--json")
    assert rc == 0 and err == ""
    data = json.loads(out)
    assert [d["name"] for d in data] == list(NAMED)
    by_name = {d["name"]: d for d in data}
    assert by_name["float8_e4m3fn"]["max"] == 448.0
    assert by_name["float8_e8m0fnu"]["max"] == 2.0**127
    assert by_name["float16"] == {
        "name": "float16", "spec": "e5m10", "bits": 16, "exp_bits": 5, "man_bits": 10, "bias": 15,
        "emin": -14, "emax": 15, "max": 65504.0, "min_normal": 2.0**-14,
        "min_subnormal": 2.0**-24, "eps": 2.0**-10, "specials": "ieee",
        "subnormals": True, "signed": True, "n_finite": 63488,
    }
    assert by_name["float8_e8m0fnu"]["spec"] == "ue8m0fn-nozero"
    assert by_name["float64"]["min_subnormal"] == 5e-324


def test_formats_unknown_name(capsys):
    rc, out, err = run(capsys, "formats", "float16", "nosuch")
    assert rc == 2 and out == ""
    assert err.count("\n") == 1
    assert err.startswith("fpsim formats: error: format spec 'nosuch' is not understood")


def test_formats_invalid_spec_names_input(capsys):
    rc, out, err = run(capsys, "formats", "e12m3")
    assert rc == 2 and out == ""
    assert err.startswith("fpsim formats: error: format 'e12m3': Format exp_bits=12 is invalid")


# ---- quantize --------------------------------------------------------------------------------
def quantize_rows(capsys, *argv):
    rc, out, err = run(capsys, "quantize", *argv)
    assert rc == 0 and err == ""
    return [cells(line) for line in out.splitlines()[2:]]


def test_quantize_one(capsys):
    rc, out, _ = run(capsys, "quantize", "1", "--format", "fp16")
    assert rc == 0
    assert cells(out.splitlines()[0]) == [
        "input", "float16 (rne)", "code", "sign|exponent|fraction", "events"]
    assert cells(out.splitlines()[2]) == ["1.0", "1.0", "0x3c00", "0|01111|0000000000", "-"]


def test_quantize_overflow(capsys):
    assert quantize_rows(capsys, "65520", "--format", "fp16") == [
        ["65520.0", "inf", "0x7c00", "0|11111|0000000000", "overflow,inexact"]]


def test_quantize_underflow(capsys):
    assert quantize_rows(capsys, "1e-8", "--format", "fp16") == [
        ["1e-08", "0.0", "0x0000", "0|00000|0000000000", "underflow,inexact"]]


def test_quantize_negative_hex_special_and_intermixed_values(capsys):
    rows = quantize_rows(capsys, "-1e-8", "--format", "fp16", "-0x1p-24", "0x1.8p-3", "-inf",
                         "nan", "3e-5")
    assert rows == [
        ["-1e-08", "-0.0", "0x8000", "1|00000|0000000000", "underflow,inexact"],
        ["-5.960464477539063e-08", "-5.960464477539063e-08", "0x8001", "1|00000|0000000001",
         "subnormal"],
        ["0.1875", "0.1875", "0x3200", "0|01100|1000000000", "-"],
        ["-inf", "-inf", "0xfc00", "1|11111|0000000000", "-"],
        ["nan", "nan", "0x7e00", "0|11111|1000000000", "-"],
        ["3e-05", "2.9981136322021484e-05", "0x01f7", "0|00000|0111110111", "subnormal,inexact"],
    ]


def test_quantize_e4m3_rounding_and_saturate(capsys):
    assert quantize_rows(capsys, "500", "0.3", "-f", "e4m3", "-r", "rtz") == [
        ["500.0", "448.0", "0x7e", "0|1111|110", "overflow,inexact"],
        ["0.3", "0.28125", "0x29", "0|0101|001", "inexact"],
    ]
    assert quantize_rows(capsys, "500", "-f", "e4m3") == [
        ["500.0", "nan", "0x7f", "0|1111|111", "overflow,nan,inexact"]]
    assert quantize_rows(capsys, "500", "-f", "e4m3", "--overflow", "saturate") == [
        ["500.0", "448.0", "0x7e", "0|1111|110", "overflow,inexact"]]


def test_quantize_unsigned_no_fraction(capsys):
    rc, out, _ = run(capsys, "quantize", "1", "0.3", "--format", "e8m0")
    assert rc == 0
    lines = out.splitlines()
    assert cells(lines[0]) == ["input", "float8_e8m0fnu (rne)", "code", "exponent", "events"]
    assert [cells(line) for line in lines[2:]] == [
        ["1.0", "1.0", "0x7f", "01111111", "-"],
        ["0.3", "0.25", "0x7d", "01111101", "inexact"],
    ]


def test_quantize_json(capsys):
    rc, out, err = run(capsys, "quantize", "65520", "1", "--format", "fp16", "--json")
    assert rc == 0 and err == ""
    assert json.loads(out) == [
        {"format": "float16", "input": 65520.0, "value": float("inf"), "code": 0x7C00,
         "hex": "0x7c00", "binary": "0|11111|0000000000", "events": ["overflow", "inexact"]},
        {"format": "float16", "input": 1.0, "value": 1.0, "code": 0x3C00,
         "hex": "0x3c00", "binary": "0|01111|0000000000", "events": []},
    ]


def test_quantize_unknown_format(capsys):
    rc, out, err = run(capsys, "quantize", "1", "--format", "nosuch")
    assert rc == 2 and out == ""
    assert err.count("\n") == 1
    assert err.startswith(
        "fpsim quantize: error: argument --format/-f: format spec 'nosuch' is not understood")


def test_quantize_bad_rounding(capsys):
    rc, out, err = run(capsys, "quantize", "1", "--format", "fp16", "--rounding", "nearest_odd")
    assert rc == 2 and out == ""
    assert err == (
        "fpsim quantize: error: argument --rounding/-r: rounding='nearest_odd' is invalid: "
        "allowed values are rne, rna, rtz, rup, rdn, rto, sr (see 'fpsim quantize --help')\n")


def test_quantize_bad_value(capsys):
    rc, out, err = run(capsys, "quantize", "1.2.3", "--format", "fp16")
    assert rc == 2 and out == ""
    assert err.startswith("fpsim quantize: error: argument VALUE: value '1.2.3' is not a number")
    assert err.count("\n") == 1


def test_missing_or_unknown_command(capsys):
    rc, out, err = run(capsys)
    assert rc == 2 and err.startswith("fpsim: error: ")
    rc, out, err = run(capsys, "frobnicate")
    assert rc == 2 and "invalid choice: 'frobnicate'" in err and err.count("\n") == 1


def test_help_returns_zero(capsys):
    rc, out, _ = run(capsys, "quantize", "--help")
    assert rc == 0 and out.startswith("usage: fpsim quantize")


# ---- validate --------------------------------------------------------------------------------
@pytest.mark.parametrize("subject, argv, attr, value", [
    ("arith", ["--jobs", "1"], "jobs", 1),
    ("quantize", ["--formats", "float16", "--limit", "5"], "limit", 5),
])
def test_validate_dispatches_to_the_subject(monkeypatch, subject, argv, attr, value):
    """``fpsim validate SUBJECT ...`` parses the subject's arguments and returns what the
    subject module's ``run`` returns."""
    import importlib

    mod = importlib.import_module(f"fpsim.validate.{subject}")
    seen = []
    monkeypatch.setattr(mod, "run", lambda args: seen.append(args) or 3)
    assert main(["validate", subject, *argv]) == 3
    assert len(seen) == 1 and getattr(seen[0], attr) == value


def test_validate_missing_module(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "fpsim.validate", None)  # makes the import fail
    rc, out, err = run(capsys, "validate")
    assert rc == 2 and out == ""
    assert err.startswith("fpsim validate: error: ") and err.count("\n") == 1


def test_validate_arith_reports_counts_and_time(capsys):
    rc, out, err = run(capsys, "validate", "arith", "--cases", "300", "--formats", "float4_e2m1fn",
                       "--ops", "mul,fma", "--modes", "rne,rto", "--jobs", "1")
    assert rc == 0, out + err
    lines = out.splitlines()
    assert "SoftFloat float16 mul rne tininess=after: " in out
    assert "exhaustive float4_e2m1fn fma rto: 4096 cases, 0 mismatches" in out
    # 2 types x 2 ops x 1 IEEE mode x 2 tininess + 2 ops x 2 modes exhaustive
    assert re.fullmatch(r"arith: 12 comparisons, \d+ cases, 0 mismatches, \d+ s", lines[-1])


def test_validate_arith_rejects_unknown_op(capsys):
    rc, out, err = run(capsys, "validate", "arith", "--ops", "pow")
    assert rc == 2 and "unknown op 'pow'" in err
