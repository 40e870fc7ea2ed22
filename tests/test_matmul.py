"""fpsim.matmul / fpsim.dot equal the plain-Python model (fpsim.reference_accumulate, every
rounding an exact rational rounded once) bit for bit, for every order, accumulator, product
format, compensation and rounding mode, on matrices with wide exponent ranges and cancellation;
the BLAS fast path equals the model wherever it is taken; Kahan summation helps as it should.
"""

from __future__ import annotations

import numpy as np
import pytest

import fpsim
import fpsim.numerics.accumulation as acc
from fpsim.reference import accumulate as ref
from fpsim.kernels import accumulate as kacc
from _inputs import assert_same_bits

MODES = ["rne", "rna", "rtz", "rup", "rdn", "rto", "sr"]


def _wide(shape, fmt, rng, spread=12):
    """Values of ``fmt`` with exponents spread over ``2^-spread .. 2^spread``, random signs, a
    few zeros and exact opposites (cancellation)."""
    x = rng.standard_normal(shape) * np.exp2(rng.integers(-spread, spread + 1, shape))
    x = fpsim.quantize(x, fmt)
    x.flat[:: 7] = 0.0
    if x.shape[0] > 1:
        x[1] = -x[0]
    return x


def _check(A, B, fmt, **model):
    rounding = model.get("rounding", "rne")
    got = fpsim.matmul(A, B, fmt, fast=False, **model)
    srk = acc._model(fmt, model.get("accum"), model.get("product"), rounding,
                     model.get("order", "sequential"), model.get("block"),
                     model.get("compensated", False), None, model.get("inputs"), "ieee", 0, 0,
                     None).srk
    want = ref.matmul(A, B, fmt, model.get("accum"), model.get("product"), rounding,
                      model.get("order", "sequential"), model.get("block"),
                      model.get("compensated", False), srk=srk)
    assert_same_bits(got, want)
    fast = fpsim.matmul(A, B, fmt, **model)
    assert_same_bits(fast, want)


MODELS = [
    dict(accum="float16"),
    dict(accum="float32"),
    dict(accum="bfloat16"),
    dict(accum=None),
    dict(accum="float16", order="pairwise"),
    dict(accum="float16", order="blocked", block=3),
    dict(accum="float32", order="blocked", block=4),
    dict(accum="float16", compensated=True),
    dict(accum="float16", product="float16"),
    dict(accum="float32", product="bfloat16", order="pairwise"),
    dict(accum="e4m3", product="e4m3"),
]


@pytest.mark.parametrize("rounding", MODES)
@pytest.mark.parametrize("model", MODELS, ids=lambda m: "-".join(f"{k}={v}" for k, v in m.items()))
def test_model_equals_python_reference(model, rounding):
    rng = np.random.default_rng(len(str(model)) + len(rounding))
    A = _wide((4, 11), "float16", rng)
    B = _wide((11, 3), "float16", rng)
    out = "float32" if model.get("accum") == "float32" else "float16"
    _check(A, B, out, rounding=rounding, **model)


@pytest.mark.parametrize("model", [dict(accum="float64"), dict(accum=None)])
def test_float64_and_exact_accumulators(model):
    rng = np.random.default_rng(5)
    A = _wide((5, 16), "bfloat16", rng, spread=60)
    B = _wide((16, 4), "bfloat16", rng, spread=60)
    _check(A, B, "float64" if model["accum"] == "float64" else "bfloat16", inputs="bfloat16",
           **model)


def test_specials_and_saturation():
    A = np.array([[np.inf, 1.0, 2.0], [np.nan, 0.0, 1.0], [65504.0, 65504.0, -65504.0]])
    B = np.array([[0.0, 1.0], [1.0, -np.inf], [2.0, 1.0]])
    for model in (dict(accum="float16"), dict(accum=None), dict(accum="float16",
                                                                  order="pairwise")):
        _check(A, B, "float16", **model)
    C = fpsim.quantize(np.array([[448.0, 448.0, 448.0]]), "e4m3")
    for policy in ("ieee", "saturate"):
        got = fpsim.matmul(C, C.T, "e4m3", accum="e4m3", overflow=policy, fast=False)
        assert (np.isnan(got[0, 0]) if policy == "ieee" else got[0, 0] == 448.0)


def test_zero_signs_on_every_path():
    """Exact zero sums take IEEE's sign: -0 only from -0 products, or under rdn."""
    A = np.array([[-0.0, -0.0], [1.0, -1.0], [0.0, -0.0]])
    B = np.array([[1.0, 1.0], [1.0, -0.0]])
    for rounding in ("rne", "rdn", "rup"):
        for model in (dict(accum="float16"), dict(accum=None), dict(accum="float32",
                                                                      order="pairwise")):
            _check(A, B, "float16", rounding=rounding, **model)


@pytest.mark.parametrize("model", MODELS[:7], ids=str)
def test_fast_path_equals_model_where_taken(model):
    rng = np.random.default_rng(1)
    A = rng.integers(-2, 3, (6, 6)) / 4.0  # small multiples of 1/4: every sum exact, even in
    B = rng.integers(-2, 3, (6, 5)) / 2.0  # bfloat16 (|sums| <= 3 < 2^(-3 + 8))
    A[0] = -0.0  # zero outputs: signs from the rule
    m = acc._model("float16", model.get("accum"), None, "rdn", model.get("order", "sequential"),
                   model.get("block"), False, None, None, "ieee", 0, 0, None)
    assert acc.blas_exact(A, B, m) is not None
    for rounding in ("rne", "rdn"):
        if rounding != "rne" and model.get("accum") == "float64":
            continue
        assert_same_bits(fpsim.matmul(A, B, "float16", rounding=rounding, **model),
                         fpsim.matmul(A, B, "float16", rounding=rounding, fast=False, **model))



def _exact_operands(rng, m, k, n):
    """Multiples of 1/8 in [-1, 1): every float32 partial sum is exact (the fast path runs)."""
    return rng.integers(-8, 8, (m, k)) / 8.0, rng.integers(-8, 8, (k, n)) / 8.0


def test_fast_path_scratch_never_reaches_a_result(monkeypatch):
    """The fast path's temporaries (float32 operand copies, the sgemm product) live in
    per-thread scratch buffers: a result must not change when later calls reuse them, with
    shapes growing and shrinking, and temporaries above the cap are allocated per call."""
    rng = np.random.default_rng(7)
    kw = dict(preset="fp16 inputs, fp32 accumulate")
    cases = [_exact_operands(rng, *shape) for shape in
             [(40, 30, 20), (64, 64, 64), (8, 70, 9), (64, 64, 64), (1, 1, 1)]]
    got = [fpsim.matmul(A, B, **kw) for A, B in cases]
    want = [fpsim.matmul(A, B, fast=False, **kw) for A, B in cases]
    for A, B in cases:  # (the scratch written again by every shape)
        fpsim.matmul(A, B, **kw)
    for g, w, (A, B) in zip(got, want, cases):
        assert acc.blas_exact(A, B, acc._model(None, None, None, "rne", "sequential", None,
                                               False, kw["preset"], None, "ieee", 0, 0, None))\
            is not None
        assert_same_bits(g, w)
    monkeypatch.setattr(acc, "SCRATCH_MAX_ELEMENTS", 100)
    A, B = cases[1]
    first, second = acc._scratch("product", (64, 64), np.float32), acc._scratch(
        "product", (64, 64), np.float32)
    assert not np.shares_memory(first, second)  # (above the cap: fresh each call)
    assert_same_bits(fpsim.matmul(A, B, **kw), want[1])


def test_fast_path_from_several_threads_equals_one_thread():
    """Each thread has its own scratch: concurrent calls (BLAS releases the GIL) do not mix."""
    import concurrent.futures
    rng = np.random.default_rng(8)
    kw = dict(preset="fp16 inputs, fp32 accumulate")
    cases = [_exact_operands(rng, 48, 48, 48) for _ in range(8)]
    want = [fpsim.matmul(A, B, fast=False, **kw) for A, B in cases]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            got = list(pool.map(lambda ab: fpsim.matmul(*ab, **kw), cases))
            for g, w in zip(got, want):
                assert_same_bits(g, w)

def test_fast_path_refused_when_a_sum_is_inexact():
    rng = np.random.default_rng(2)
    A = fpsim.quantize(rng.standard_normal((8, 64)), "float16")
    B = fpsim.quantize(rng.standard_normal((64, 8)), "float16")
    m = acc._model("float16", "float16", None, "rne", "sequential", None, False, None, None,
                   "ieee", 0, 0, None)
    assert acc.blas_exact(A, B, m) is None
    m32 = acc._model("float32", "float32", None, "rne", "sequential", None, False, None,
                     "float16", "ieee", 0, 0, None)
    assert acc.blas_exact(A, B, m32) is None
    # 2^-24 + 1 + ... : the lowest bit and the sum span more than float32's 24 bits.
    A2 = np.array([[2.0**-24, 1.0, 1024.0]])  # float16 values
    B2 = np.array([[1.0], [1.0], [1.0]])
    assert acc.blas_exact(A2, B2, m32) is None


def test_parallel_kernel_equals_serial_twin():
    rng = np.random.default_rng(3)
    A = _wide((9, 13), "float16", rng)
    B = _wide((13, 4), "float16", rng)
    P = fpsim.format("float16").params("float64")
    outs = []
    for nchunk in (1, 3, 9):
        out = np.empty((9, 4))
        kacc.matmul_model(A, np.ascontiguousarray(B.T), out, 0, P, 1, P, P, 0, 1, False, 6, 0,
                          np.uint64(7), 41, nchunk)
        outs.append(out)
        seq = np.empty((9, 4))
        kacc.matmul_sequential(A, B, seq, 0, P, P, P, 6, 0, np.uint64(7), 41, nchunk)
        assert_same_bits(seq, out)
    assert_same_bits(outs[0], outs[1])
    assert_same_bits(outs[0], outs[2])


def test_stochastic_rounding_reproducible_and_seeded():
    rng = np.random.default_rng(4)
    A = _wide((6, 30), "float16", rng)
    B = _wide((30, 6), "float16", rng)
    x = fpsim.matmul(A, B, "float16", accum="float16", rounding="sr", seed=3)
    assert_same_bits(x, fpsim.matmul(A, B, "float16", accum="float16", rounding="sr", seed=3))
    assert not np.array_equal(x, fpsim.matmul(A, B, "float16", accum="float16", rounding="sr",
                                              seed=4))


def test_stagnation_of_fp16_accumulation():
    """The docs' example: 4096 x 0.1 (0.0999755859375 in float16) sums to 409.5 exactly with a
    float32 accumulator; a float16 accumulator stops at 256, whose half ulp (0.125) exceeds 0.1."""
    tenth = float(fpsim.quantize(0.1, "float16"))
    a, b = np.full(4096, tenth), np.ones(4096)
    assert fpsim.dot(a, b, preset="fp16 inputs, fp32 accumulate") == 409.5
    assert fpsim.dot(a, b, preset="fp16 accumulate") == 256.0
    assert fpsim.dot(a, b, "float16", accum="float16", compensated=True) == 409.5
    assert fpsim.dot(a, b, "float16", accum="float16", order="pairwise") == 409.5
    blocked = fpsim.dot(a, b, "float16", accum="float16", order="blocked", block=64)
    assert blocked == 412.25  # 64 block sums of 6.42578125 (each rounded 64 times in float16)


def test_compensated_summation_reduces_error():
    rng = np.random.default_rng(6)
    x = fpsim.quantize(rng.uniform(0, 1, 8192), "float16")
    ones = np.ones_like(x)
    exact = float(np.sum(x.astype(np.float64)))  # exact: 8192 terms of 11 bits in float64
    naive = fpsim.dot(x, ones, "float32", accum="float16", inputs="float16")
    kahan = fpsim.dot(x, ones, "float32", accum="float16", inputs="float16", compensated=True)
    assert abs(kahan - exact) * 100 < abs(naive - exact)
    assert abs(kahan - exact) <= 2.0  # one float16 ulp at 4096


def test_presets_and_aliases():
    assert acc.preset("fp16-fp32acc") == fpsim.PRESETS["fp16 inputs, fp32 accumulate"]
    a = np.array([[1.0, 2.0**-20]])
    b = np.array([[1.0], [1.0]])
    assert fpsim.matmul(a, b, preset="bf16-fp32acc")[0, 0] == 1.0 + 2.0**-20
    with pytest.raises(ValueError, match="preset='fp8'"):
        fpsim.matmul(a, b, preset="fp8")


@pytest.mark.parametrize("kwargs, match", [
    (dict(fmt="float16", order="zigzag"), "order='zigzag'"),
    (dict(fmt="float16", accum="float16", order="blocked"), "block"),
    (dict(fmt="float16", accum="float16", block=4), "block=4"),
    (dict(fmt="float16", compensated=True), "compensated"),
    (dict(fmt="float16", accum="float16", order="pairwise", compensated=True), "compensated"),
    (dict(fmt="float16", accum="float64", rounding="rtz"), "rtz"),
    (dict(fmt="float64", accum="float32"), "float64 output"),
    (dict(), "fmt"),
    (dict(fmt="float16", accum="float64x"), "float64x"),
])
def test_bad_models_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fpsim.matmul(np.ones((2, 2)), np.ones((2, 2)), **kwargs)


def test_bad_operands_are_named():
    with pytest.raises(ValueError, match=r"do not align"):
        fpsim.matmul(np.ones((2, 3)), np.ones((2, 3)), "float16")
    with pytest.raises(ValueError, match=r"operand b holds 0.1 at index \(1, 0\)"):
        fpsim.matmul(np.ones((2, 2)), np.array([[1.0, 1.0], [0.1, 1.0]]), "float16")
    with pytest.raises(ValueError, match="2-D"):
        fpsim.matmul(np.ones(3), np.ones((3, 1)), "float16")
    with pytest.raises(ValueError, match="1-D"):
        fpsim.dot(np.ones((2, 2)), np.ones(2), "float16")
    with pytest.raises(ValueError, match="could overflow"):
        fpsim.matmul(np.full((1, 2), 2.0**500), np.full((2, 1), 2.0**500), "e10m10-nosub",
                     fast=False)


def test_empty_inner_dimension_gives_zeros():
    out = fpsim.matmul(np.zeros((2, 0)), np.zeros((0, 3)), "float16", accum="float16")
    assert out.shape == (2, 3) and not np.signbit(out).any() and (out == 0).all()


# ---- the fused operand scan of the fast path ----------------------------------------------------
def _old_scan(X, fmt):
    """What the separate checks before the fused pass found, in plain numpy: ``(n_not_values,
    finite, lowest, max_abs, max_row_sum)`` (max_abs over the finite elements, rows summed in
    order as the scan does)."""
    from fpsim.numerics.arith import first_non_value
    back = fpsim.quantize(X, fmt, "rtz")
    bad = ~((back.view(np.uint64) == X.view(np.uint64)) | np.isnan(X) | ((X == 0) & (back == 0)))
    assert (first_non_value(X, fmt) is None) == (not bad.any())
    fin = X[np.isfinite(X) & (X != 0)]
    mant, exp = np.frexp(np.abs(fin))  # |x| = mant * 2^exp, 2^53 * mant an integer
    sig = (mant * 2.0**53).astype(np.int64)
    lowbit = exp.astype(np.int64) - 53 + np.log2(sig & -sig).astype(np.int64)
    lowest = int(lowbit.min()) if fin.size else kacc.NO_SET_BIT
    max_abs = float(np.abs(X[np.isfinite(X)]).max(initial=0.0))
    with np.errstate(over="ignore"):  # (edge values near float64's max overflow the sums)
        rows = np.cumsum(np.abs(X), axis=1)[:, -1] if X.shape[1] else np.zeros(X.shape[0])
    return int(bad.sum()), bool(np.isfinite(X).all()), lowest, max_abs, float(rows.max(
        initial=0.0))


def _arith_formats():
    from fpsim.numerics.arith import check_arith_format
    from _inputs import all_formats
    out = []
    for f in all_formats():
        try:
            check_arith_format(f)
        except ValueError:
            continue
        out.append(f)
    return out


@pytest.mark.parametrize("fmt", _arith_formats(), ids=str)
def test_fused_scan_equals_separate_checks_on_edge_values(fmt):
    """Element by element on every boundary value of the format (both signs, NaN, Inf, values
    one float64 ulp off the grid, beyond max, below T): the fused pass counts exactly the
    elements the rounding check rejects, and finds the same finiteness, lowest bit, largest
    magnitude and row sums."""
    from _inputs import edge_values
    x = edge_values(fmt, "float64").astype(np.float64)
    P = fmt.params("float64")
    got, want = kacc.scan_operand(x[None, :], P), _old_scan(x[None, :], fmt)
    assert got[:3] == want[:3], (got, want)
    finite = x[np.isfinite(x)][None, :]  # (sums and maxima matter only when all are finite)
    assert_same_bits(np.array(kacc.scan_operand(finite, P)[3:]),
                     np.array(_old_scan(finite, fmt)[3:]))
    back = fpsim.quantize(x, fmt, "rtz")
    bad = ~((back.view(np.uint64) == x.view(np.uint64)) | np.isnan(x) | ((x == 0) & (back == 0)))
    for v in x[bad]:  # each rejected element alone is rejected by the fused pass too
        assert kacc.scan_operand(np.array([[v]]), P)[0] == 1, f"{v!r} ({float(v).hex()})"


def _fast_path_cases():
    """(name, A, B, model keywords, fast path taken): exact fp16 data, NaN/Inf, one non-value, sums at the
    bound of float32 and float16 exactness, zero operands."""
    rng = np.random.default_rng(11)
    small = rng.integers(-8, 8, (24, 40)) / 8.0
    small_b = rng.integers(-8, 8, (40, 16)) / 16.0
    small[3, :] = -0.0
    nan_a, inf_b = small.copy(), small_b.copy()
    nan_a[5, 7] = np.nan
    inf_b[2, 3] = -np.inf
    fp32 = dict(preset="fp16 inputs, fp32 accumulate")
    fp16 = dict(preset="fp16 accumulate")
    # 2047 * K: 2^24 - 4 for K = 8196 (every float32 partial sum exact), beyond 2^24 for 8197.
    below = (np.full((1, 8196), 2047.0), np.ones((8196, 1)))
    above = (np.full((1, 8197), 2047.0), np.ones((8197, 1)))
    return [
        ("exact fp16", small, small_b, fp32, True),
        ("exact fp16, fp16 accumulate", small, small_b, fp16, True),
        ("exact fp16, fp16 out of fp32 sums, rdn", small, small_b,
         dict(fmt="float16", accum="float32", inputs="float16", rounding="rdn"), True),
        ("exact fp16, sr into e4m3 output", small / 4, small_b,
         dict(fmt="e4m3", accum="float32", inputs="float16", rounding="sr", seed=5), True),
        ("NaN in a", nan_a, small_b, fp32, False),
        ("-Inf in b", small, inf_b, fp32, False),
        ("float32 bound, below", *below, fp32, True),
        ("float32 bound, above", *above, fp32, False),
        ("float16 sum below max", np.array([[16384.0, 16384.0, 16384.0]]), np.ones((3, 1)), fp16,
         True),
        ("float16 sum at max", np.array([[32752.0, 32752.0]]), np.ones((2, 1)), fp16, False),
        ("float16 sum beyond max", np.array([[32768.0, 32768.0]]), np.ones((2, 1)), fp16, False),
        ("zero operand into fnuz, rdn", np.full((3, 4), -0.0), small_b[:4, :5],
         dict(fmt="float8_e4m3fnuz", accum="float32", inputs="float16", rounding="rdn"), True),
    ]


def _model_of(kw):
    return acc._model(kw.get("fmt"), kw.get("accum"), None, kw.get("rounding", "rne"),
                      "sequential", None, False, kw.get("preset"), kw.get("inputs"), "ieee",
                      kw.get("seed", 0), 0, None)


@pytest.mark.parametrize("case", _fast_path_cases(), ids=lambda c: c[0])
def test_fused_scan_takes_the_fast_path_exactly_when_the_old_checks_did(case):
    """The decision from the fused scans equals the decision from the separate checks (the same
    proof fed with :func:`_old_scan`'s findings), and the result equals the model kernel's
    (fast=False) bit for bit under 1 and 2 Numba and BLAS threads."""
    import numba
    from threadpoolctl import threadpool_limits
    name, A, B, kw, taken = case
    m = _model_of(kw)
    old = [acc._Scan(*_old_scan(X, m.inputs),
                     X.astype(np.float32) if m.inputs.fits_float32 else None) for X in (A, B)]
    assert (acc._exact_product(A, B, *old, m) is not None) == taken  # (both outcomes occur)
    assert (acc.blas_exact(A, B, m) is not None) == taken
    threads = numba.get_num_threads()
    try:
        for n in (1, 2):
            numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
            with threadpool_limits(n, "blas"):
                assert_same_bits(fpsim.matmul(A, B, **kw), fpsim.matmul(A, B, fast=False, **kw),
                                 what=name)
    finally:
        numba.set_num_threads(threads)


def test_fused_scan_rejects_one_non_value_as_before():
    """One element off the float16 grid among exact data: the same error, naming it, with or
    without the fast path (the fused pass falls back to the rounding check for it)."""
    A = np.random.default_rng(12).integers(-8, 8, (16, 16)) / 8.0
    A[9, 4] = 1.0 + 2.0**-11  # float16 holds 1 + 2^-10, not this
    for fast in (True, False):
        with pytest.raises(ValueError, match=r"operand a holds 1.00048828125 at index \(9, 4\)"):
            fpsim.matmul(A, np.ones((16, 2)), preset="fp16 inputs, fp32 accumulate", fast=fast)
    assert kacc.scan_operand(A, fpsim.format("float16").params("float64"))[0] == 1


def test_remembered_models_keep_every_check():
    """A model parsed once is remembered, but block=True stays refused after block=1 (equal
    keys unless typed), and a Format object is parsed anew each time."""
    a = np.ones((2, 3))
    kw = dict(fmt="float16", accum="float16", order="blocked")
    assert fpsim.matmul(a, a.T, block=1, **kw)[0, 0] == 3.0
    with pytest.raises(ValueError, match="block=True"):
        fpsim.matmul(a, a.T, block=True, **kw)
    assert acc._remembered_model("float16", None, None, "rne", "sequential", None, False, None,
                                 None, "ieee", 0, 0, None) is acc._remembered_model(
        "float16", None, None, "rne", "sequential", None, False, None, None, "ieee", 0, 0, None)
    f16 = fpsim.format("float16")
    assert acc._remembered_model(f16, None, None, "rne", "sequential", None, False, None, None,
                                 "ieee", 0, 0, None).fmt is f16
