"""Tensor-core GEMM models: the measured GPU results, the Fraction reference, whole GEMMs, the
thread-count independence, ``fpsim validate gemm`` and the use in precision policies."""

from __future__ import annotations

import json
import zlib
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import fpsim
from fpsim.numerics import tensor_core as tcm
from fpsim.reference import tensor_core as ref

DATA = pathlib.Path(__file__).resolve().parent.parent / "data" / "tensor-core-validation"
FILES = sorted(p.stem for p in DATA.glob("*.npz"))

def _load(stem):
    z = np.load(DATA / f"{stem}.npz")
    return {k: z[k].view(np.float32).astype(np.float64) for k in z.files}


def _columns():
    for stem in FILES:
        z = np.load(DATA / f"{stem}.npz")
        for key in ("d_fp32", "d_fp16"):
            if key in z.files:
                yield stem, key


def _preset(stem, key):
    gpu, fmt = stem.split("_")
    return f"{gpu}-{fmt.lower()}" + ("-fp16out" if key == "d_fp16" else "")


def _addend(stem, key, c):
    """The addend the measurement used: c rounded to binary16 for fp16 output; zero for H100/H200
    FP8 with fp32 output (the measuring program started from a zero accumulator)."""
    if key == "d_fp16":
        return c.astype(np.float16).astype(np.float64)
    if stem.split("_")[0] in ("H100", "H200") and stem.split("_")[1] in ("E4M3", "E5M2"):
        return np.zeros_like(c)
    return c


def _bits32(x):
    return np.asarray(x, np.float64).astype(np.float32).view(np.uint32)


def test_the_data_is_there():
    assert len(FILES) == 18
    assert len(list(_columns())) == 28


@pytest.mark.parametrize("stem,key", list(_columns()))
def test_measured_results_reproduced(stem, key):
    """Every measured block FMA, bit for bit."""
    z = _load(stem)
    c = _addend(stem, key, z["c"])
    d = fpsim.matmul(z["a"][:, None, :], z["b"][:, :, None], preset=_preset(stem, key),
                     c=c[:, None, None])[:, 0, 0]
    assert int((_bits32(d) == _bits32(z[key])).sum()) == 5000


@pytest.mark.parametrize("stem,key", list(_columns()))
def test_reference_reproduces_measurements(stem, key):
    """The Fraction reference alone reproduces the measurements (first 150 rows per column)."""
    z = _load(stem)
    tc = tcm.tensor_core(_preset(stem, key))
    c = _addend(stem, key, z["c"])
    n = 150
    got = [float(ref.block_fma(z["a"][i], z["b"][i], c[i], tc)) for i in range(n)]
    assert (_bits32(got) == _bits32(z[key][:n])).all()


def test_correctly_rounded_explains_58_percent_on_h200_fp16():
    """The motivating number: the correctly rounded binary32 sum equals 58% of the H200 results."""
    from fpsim.validate.gemm import _reference
    z = _load("H200_fp16")
    cr = _reference("fp32-correctly-rounded", z["a"][:, None, :], z["b"][:, :, None],
                    z["c"][:, None, None])[:, 0, 0]
    assert int((_bits32(cr) == _bits32(z["d_fp32"])).sum()) == 2899


# ---- the fast model against the Fraction reference ------------------------------------------------
def _operands(tc, rng, n_blocks, K):
    """Random and adversarial blocks of values of the preset's formats: wide exponent spread,
    subnormal inputs, exact cancellation, addends zero / tiny / subnormal / huge."""
    fin, fout = tc.input_format, tc.output_format
    q = fpsim.quantize
    lo, hi = fin.emin - fin.man_bits, min(fin.emax, 60)
    A = rng.standard_normal((n_blocks, 1, K)) * np.exp2(rng.integers(lo, hi, (n_blocks, 1, K)))
    B = rng.standard_normal((n_blocks, K, 1)) * np.exp2(rng.integers(lo, hi, (n_blocks, K, 1)))
    A, B = q(A, fin, overflow="saturate"), q(B, fin, overflow="saturate")
    narrow = n_blocks // 4  # a quarter with a narrow spread, where truncation decides the bits
    A[:narrow] = q(rng.standard_normal((narrow, 1, K)), fin)
    B[:narrow] = q(rng.standard_normal((narrow, K, 1)), fin)
    sub = 2.0 ** (fin.emin - fin.man_bits)
    A[narrow:2 * narrow, 0, : K // 2] = sub * rng.integers(1, 2 ** fin.man_bits, (narrow, K // 2))
    for t in range(2 * narrow, 3 * narrow):  # exact cancellation of the largest pairs
        A[t, 0, 1], B[t, 1, 0] = A[t, 0, 0], -B[t, 0, 0]
    C = q(rng.standard_normal((n_blocks, 1, 1)) * np.exp2(rng.integers(-30, 10, (n_blocks, 1, 1))),
          fout)
    C[::7] = 0.0
    C[1::7] = -0.0
    C[2::7] = 2.0 ** (fout.emin - fout.man_bits) * 3  # subnormal addend
    C[3::7] = float(fout.max) * rng.choice([-1, 1], size=(len(C[3::7]), 1, 1))
    return A, B, C


@pytest.mark.parametrize("name", tcm.PRESET_NAMES)
def test_kernel_equals_reference_blocks(name):
    tc = tcm.tensor_core(name)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    A, B, C = _operands(tc, rng, 48, tc.group)
    got = fpsim.matmul(A, B, preset=name, c=C)[:, 0, 0]
    want = [ref.block_fma(A[t, 0], B[t, :, 0], C[t, 0, 0], tc) for t in range(len(A))]
    want = np.array([float(w) for w in want])
    assert ((got.view(np.uint64) == want.view(np.uint64)) | (np.isnan(got) & np.isnan(want))).all()


@pytest.mark.parametrize("name", ["H100-fp16", "H100-e5m2", "B200-e4m3", "A100-fp16-fp16out",
                                  "V100-fp16", "B200-e5m2-fp16out"])
def test_whole_gemm_equals_loop_over_blocks(name):
    """Several blocks along K (a partial last one), an addend, NaN / Inf rows and columns, and
    an overflow: the kernel equals the reference's chained blocks, and the parallel kernel its
    serial twin."""
    tc = tcm.tensor_core(name)
    rng = np.random.default_rng(7)
    fin, fout = tc.input_format, tc.output_format
    K = 2 * tc.group + 5
    A = fpsim.quantize(rng.standard_normal((6, K)) * 4, fin)
    B = fpsim.quantize(rng.standard_normal((K, 5)) * 4, fin)
    C = fpsim.quantize(rng.standard_normal((6, 5)), fout)
    A[1, 2] = np.nan
    B[3, 4] = np.inf if fin.has_inf else np.nan
    C[2, 0] = float(fout.max)
    A[2, :] = float(fin.max)  # row 2 times positive entries of B: towards overflow
    got = fpsim.matmul(A, B, preset=name, c=C)
    want = ref.matmul(A, B, tc, C)
    assert np.array_equal(got, want, equal_nan=True)
    assert np.array_equal(got.view(np.uint64), tcm.tc_matmul(A, B, tc, C, parallel=False)
                          .view(np.uint64))


def test_blocks_special_values():
    tc = tcm.tensor_core("H100-fp16")
    one = np.ones((1, 4))
    col = np.ones((4, 1))
    mm = lambda a, b, c=None: fpsim.matmul(a, b, preset="H100-fp16", c=c)[0, 0]  # noqa: E731
    assert np.isnan(mm(np.array([[np.inf, 0, 1, 1]]), np.array([[0.0], [1], [1], [1]])))
    assert np.isnan(mm(np.array([[np.inf, -np.inf, 1, 1]]), col))
    assert mm(np.array([[np.inf, 1, 1, 1]]), col) == np.inf
    assert np.isnan(mm(one, col, np.array([[np.nan]])))
    assert mm(one, col, np.array([[-np.inf]])) == -np.inf
    # an exact zero sum is +0, also from -0 terms
    z = mm(np.array([[-0.0, 0, 0, 0]]), col, np.array([[-0.0]]))
    assert z == 0 and not np.signbit(z)
    assert tc.name == "H100-fp16"
    # the late addend: products that cancel exactly leave c (B200 FP8), c = -products gives +0
    a8 = np.array([[2.0, -2.0] + [0.0] * 30])
    b8 = np.ones((32, 1))
    assert fpsim.matmul(a8, b8, preset="B200-e4m3", c=np.array([[0.375]]))[0, 0] == 0.375
    a8[0, 1] = 0.0
    r = fpsim.matmul(a8, b8, preset="B200-e4m3", c=np.array([[-2.0]]))[0, 0]
    assert r == 0 and not np.signbit(r)


def test_truncation_and_carry_bit_are_what_the_hardware_does():
    """The model is not correctly rounded: H100 fp16 truncates the block sum, and the aligned
    terms lose their bits below 2^(E-25); B200 FP8 rounds to nearest."""
    a = np.array([[1.0, 2.0 ** -24, 0, 0]])
    b = np.array([[1.0], [1.0], [0], [0]])
    # 1 + 2^-24: exact binary32 rounding gives 1 (tie to even); truncation gives 1 too, but
    # 1 + 3 * 2^-24 rounds up correctly (1 + 2^-22) and truncates to 1 + 2^-23.
    a3 = np.array([[1.0, 3 * 2.0 ** -24, 0, 0]])
    assert fpsim.matmul(a3, b, preset="H100-fp16")[0, 0] == 1 + 2.0 ** -23
    assert fpsim.matmul(a, b, preset="H100-fp16")[0, 0] == 1.0
    # Below the window (2^-25 below the leading 1 with 2 extra bits): dropped.
    small = np.array([[1.0, 2.0 ** -14, 0, 0]])
    tiny = np.array([[1.0], [2.0 ** -14], [0], [0]])  # the product 2^-28
    assert fpsim.matmul(small, tiny, preset="H100-fp16")[0, 0] == 1.0


# ---- determinism ----------------------------------------------------------------------------------
def test_bits_do_not_depend_on_thread_count():
    import numba
    rng = np.random.default_rng(3)
    A = fpsim.quantize(rng.standard_normal((33, 70)), "fp16")
    B = fpsim.quantize(rng.standard_normal((70, 17)), "fp16")
    saved = numba.get_num_threads()
    try:
        outs = []
        for n in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(n)
            outs.append(fpsim.matmul(A, B, preset="A100-fp16"))
    finally:
        numba.set_num_threads(saved)
    assert all(np.array_equal(o.view(np.uint64), outs[0].view(np.uint64)) for o in outs)


# ---- the API's errors -----------------------------------------------------------------------------
def test_bad_input_is_named():
    a = fpsim.quantize(np.ones((3, 4)), "fp16")
    b = fpsim.quantize(np.ones((4, 2)), "fp16")
    with pytest.raises(ValueError, match="does not exist; valid presets: V100-fp16"):
        fpsim.tensor_core("H300-fp16")
    with pytest.raises(ValueError, match="is unknown: use an accumulation preset"):
        fpsim.matmul(a, b, preset="H100-fp17")
    with pytest.raises(ValueError, match=r"do not align"):
        fpsim.matmul(a, b.T, preset="H100-fp16")
    bad = a.copy()
    bad[2, 1] = 1 + 2.0 ** -12
    with pytest.raises(ValueError, match=r"operand a holds 1.000244140625 at index \(2, 1\)"):
        fpsim.matmul(bad, b, preset="H100-fp16")
    with pytest.raises(ValueError, match=r"operand c holds .* not a value of float16"):
        fpsim.matmul(a, b, preset="H100-fp16-fp16out", c=np.full((3, 2), 0.1))
    with pytest.raises(ValueError, match=r"operand c has shape \(2, 3\), expected \(3, 2\)"):
        fpsim.matmul(a, b, preset="H100-fp16", c=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="rounding cannot be given"):
        fpsim.matmul(a, b, preset="H100-fp16", rounding="rtz")
    with pytest.raises(ValueError, match="c \\(an addend\\) is for tensor-core models"):
        fpsim.matmul(a, b, fmt="float16", c=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="no tensor-core model for bf16 inputs with fp16"):
        fpsim.TensorCore(gpu="H100", inputs="bf16", output="fp16")
    with pytest.raises(ValueError, match="custom TensorCore needs"):
        fpsim.TensorCore(gpu="custom", inputs="fp16", group=8)


def test_custom_model_and_accum_argument():
    rng = np.random.default_rng(5)
    A = fpsim.quantize(rng.standard_normal((4, 24)), "bf16")
    B = fpsim.quantize(rng.standard_normal((24, 3)), "bf16")
    tc = fpsim.TensorCore(gpu="custom", inputs="bf16", output="fp32", group=8, extra_bits=3,
                          carry_bit=False, rounding="rne", result_bits=23, late_addend=False)
    assert np.array_equal(fpsim.matmul(A, B, accum=tc), ref.matmul(A, B, tc))
    h = fpsim.TensorCore(gpu="H100", inputs="bf16")
    assert np.array_equal(fpsim.matmul(A, B, accum=h), fpsim.matmul(A, B, preset="H100-bf16"))


# ---- fpsim validate gemm --------------------------------------------------------------------------
def _dots_files(tmp_path, stem, key="d_fp32"):
    z = np.load(DATA / f"{stem}.npz")
    paths = {}
    for name, arr in (("a", z["a"]), ("b", z["b"]), ("c", z["c"]), ("d", z[key])):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], arr)
    return paths


def _validate(*args):
    return subprocess.run([sys.executable, "-m", "fpsim", "validate", "gemm", *map(str, args)],
                          capture_output=True, text=True)


def test_validate_gemm_fit_ranks_h200_data(tmp_path):
    p = _dots_files(tmp_path, "H200_fp16")
    r = _validate("--a", p["a"], "--b", p["b"], "--c", p["c"], "--d", p["d"], "--dots", "--fit",
                  "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    ranking = res["ranking"]
    assert {ranking[0]["preset"], ranking[1]["preset"]} == {"H100-fp16", "H200-fp16"}
    assert ranking[0]["matches"] == ranking[1]["matches"] == res["total"] == res["matches"] == 5000
    cr = next(x for x in ranking if x["preset"] == "fp32-correctly-rounded")
    assert abs(cr["matches"] / 5000 - 0.58) < 0.01


def test_validate_gemm_reports_mismatches(tmp_path):
    p = _dots_files(tmp_path, "A100_bf16")
    d = np.load(p["d"])
    i, j = np.flatnonzero(d < 0x80000000)[[3, 10]]  # two positive results, one ulp up
    d[[i, j]] += 1
    np.save(p["d"], d)
    r = _validate("--a", p["a"], "--b", p["b"], "--c", p["c"], "--d", p["d"], "--dots",
                  "--preset", "A100-bf16", "--json")
    assert r.returncode == 1
    res = json.loads(r.stdout)
    assert (res["matches"], res["total"]) == (4998, 5000)
    assert res["ulp_differences"] == {"0": 4998, "1": 2}
    assert [m["index"] for m in res["first_mismatches"]] == [[i, 0, 0], [j, 0, 0]]
    assert res["first_mismatches"][0]["gpu"] == f"0x{int(d[i]):08x}"
    assert res["first_mismatches"][0]["model"] == f"0x{int(d[i]) - 1:08x}"


def test_validate_gemm_bad_input(tmp_path):
    p = _dots_files(tmp_path, "A100_fp16")
    base = ["--a", p["a"], "--b", p["b"], "--c", p["c"], "--dots"]
    r = _validate(*base, "--d", p["d"], "--preset", "X100-fp16")
    assert r.returncode == 2 and "valid presets: V100-fp16" in r.stderr
    np.save(tmp_path / "short.npy", np.load(p["d"])[:10])
    r = _validate(*base, "--d", tmp_path / "short.npy", "--preset", "A100-fp16")
    assert r.returncode == 2 and "--dots needs c and d of shape (5000,)" in r.stderr
    np.save(tmp_path / "strings.npy", np.array(["x"] * 5000))
    r = _validate(*base, "--d", tmp_path / "strings.npy", "--preset", "A100-fp16")
    assert r.returncode == 2 and "dtype <U1" in r.stderr
    r = _validate(*base, "--d", p["d"], "--preset", "A100-bf16")
    assert r.returncode == 2 and "operand a holds" in r.stderr and "bfloat16" in r.stderr
    obj = tmp_path / "obj.npy"
    np.save(obj, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    r = _validate(*base, "--d", obj, "--preset", "A100-fp16")
    assert r.returncode == 2 and "cannot read" in r.stderr  # pickles are never loaded
    r = _validate("--a", p["a"], "--b", p["a"], "--d", p["d"], "--preset", "A100-fp16")
    assert r.returncode == 2 and "do not align" in r.stderr
    r = _validate(*base, "--d", p["d"], "--preset", "A100-fp16-fp16out")
    assert r.returncode == 2 and "d holds" in r.stderr and "output format of A100" in r.stderr
    np.save(tmp_path / "d16.npy", np.load(DATA / "A100_fp16.npz")["d_fp16"])
    r = _validate(*base, "--d", tmp_path / "d16.npy", "--preset", "A100-fp16-fp16out")
    assert r.returncode == 2 and "operand c holds" in r.stderr  # c must be rounded to fp16


def test_validate_gemm_api_matches_cli():
    z = _load("B200_fp16")
    res = fpsim.validate_gemm(z["a"][:, None, :], z["b"][:, :, None], z["d_fp16"][:, None, None],
                              preset="B200-fp16-fp16out",
                              c=z["c"].astype(np.float16).astype(np.float64)[:, None, None])
    assert (res.matches, res.total, res.ranking) == (5000, 5000, None)
    assert "5000 / 5000" in res.report()


# ---- training ---------------------------------------------------------------------------------------
def test_policy_runs_gemms_through_a_tensor_core_model():
    from fpsim.training import nn
    from fpsim.training.precision import Policy
    rng = np.random.default_rng(0)
    lin = nn.Linear(24, 5, bias=False, rng=rng)
    Policy("tc", activations="float16", weights="float16", matmul="H100-fp16").apply(lin)
    x = rng.standard_normal((3, 24)).astype(np.float32)
    y = lin(fpsim.engine.Tensor(x)).data
    q = lambda v: fpsim.quantize(v, "float16")  # noqa: E731
    want = fpsim.matmul(q(x), q(lin.weight.data).T, preset="H100-fp16")
    assert np.array_equal(y, q(want).astype(np.float32))  # the output cast rounds to fp16
    with pytest.raises(ValueError, match="not a tensor-core preset; valid presets"):
        Policy("x", matmul="H100-fp17")
