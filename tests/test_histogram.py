"""Binade histograms (fpsim.analysis.histogram), format plots and their commands.

The plotted bins are checked against binades computed independently with numpy, the fractions
against fpsim.quantize's own Stats, the threshold lines against the Format and against where
fpsim's rounding actually flushes to zero.
"""

from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import fpsim  # noqa: E402
from fpsim.analysis import binade_bars, histogram  # noqa: E402
from fpsim.analysis.format_plot import plot_formats, relative_spacing, ulp  # noqa: E402
from fpsim.analysis.histogram import binade_bounds, ftz_threshold  # noqa: E402
from fpsim.cli import main  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def numpy_binades(x) -> dict[int, int]:
    """{k: count} of floor(log2|x|) over the non-zero finite values, by np.log2 on float64.

    np.log2 rounds: just below a large power of two (2^1000 (1 - 2^-53)) it returns exactly
    1000.0, so each k is corrected against 2^k <= |x| < 2^(k+1) (np.ldexp is exact)."""
    a = np.abs(np.asarray(x, np.float64))
    a = a[np.isfinite(a) & (a != 0)]
    k = np.floor(np.log2(a)).astype(np.int64)
    with np.errstate(over="ignore"):
        k -= np.ldexp(1.0, k) > a
        k += np.ldexp(1.0, k + 1) <= a
        assert np.all((np.ldexp(1.0, k) <= a) & (a < np.ldexp(1.0, k + 1)))
    ks, counts = np.unique(k, return_counts=True)
    return dict(zip(ks.tolist(), counts.tolist()))


def drawn_bars(ax):
    """(left, width, height) of the histogram bars drawn on ``ax``."""
    bars = [p for p in ax.patches if p.get_gid() == "binade"]
    return (np.array([p.get_x() for p in bars]), np.array([p.get_width() for p in bars]),
            np.array([p.get_height() for p in bars]))


def drawn_lines(ax) -> dict[str, float]:
    """{gid: x} of the vertical threshold lines on ``ax``."""
    out = {}
    for line in ax.lines:
        if line.get_gid():
            xs = np.unique(line.get_xdata())
            assert xs.size == 1, line.get_gid()
            out[line.get_gid()] = float(xs[0])
    return out


def assert_bars_match(left, width, height, expected: dict[int, int]):
    assert np.all(width == 1.0)
    assert np.array_equal(left, np.arange(left[0], left[0] + left.size))  # contiguous, [k, k+1)
    got = {int(k): int(c) for k, c in zip(left, height) if c}
    assert got == expected
    assert left[0] == min(expected) and left[-1] == max(expected)


# ---- bins --------------------------------------------------------------------------------------
def _binade_edge_values() -> np.ndarray:
    """Powers of two, their neighbours, float64 subnormals and the extremes."""
    ks = np.arange(-1074, 1024)
    p = np.ldexp(1.0, ks)
    vals = [p, np.nextafter(p, 0), np.nextafter(p, np.inf), -p * 1.5,
            [np.finfo(np.float64).max, 5e-324, 3e-324, 2.2250738585072014e-308]]
    v = np.concatenate([np.asarray(a, np.float64).ravel() for a in vals])
    return np.concatenate([v[np.isfinite(v) & (v != 0)], [0.0, -0.0, np.inf, np.nan]])


def test_bars_equal_numpy_binades_at_powers_of_two_float64():
    x = _binade_edge_values()
    fig, ax = plt.subplots()
    h = histogram(x, formats=["fp16"], ax=ax)
    expected = numpy_binades(x)
    assert_bars_match(*h.bars(), expected)
    assert_bars_match(*drawn_bars(ax), expected)
    assert np.array_equal(h.right, h.left + 1)
    assert (h.zeros, h.infs, h.nans) == (2, 1, 1)
    assert h.n == sum(expected.values())
    plt.close(fig)


def test_bars_equal_numpy_binades_every_float16_value():
    """All 2^16 float16 bit patterns, subnormals included (they are binades -24 .. -15)."""
    x = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    h = histogram(x, formats=[], path=None)
    expected = numpy_binades(x)
    assert min(expected) == -24 and expected[-24] == 2 and expected[-15] == 2 * 512
    assert_bars_match(*h.bars(), expected)
    assert h.zeros == 2 and h.infs == 2 and h.nans == 2 * 1023


def test_binade_bars_from_k_min_and_from_ks():
    left, width, height = binade_bars(-3, [1, 0, 5])
    assert left.tolist() == [-3.0, -2.0, -1.0] and width.tolist() == [1.0] * 3
    assert height.tolist() == [1, 0, 5]
    assert binade_bars(np.array([4, 7]), [2, 3])[0].tolist() == [4.0, 7.0]
    with pytest.raises(ValueError, match="integers"):
        binade_bars([0.5, 1.5], [1, 1])
    with pytest.raises(ValueError, match="2 binades but 3 counts"):
        binade_bars([0, 1], [1, 1, 1])


def test_bars_from_stats_equal_bars_from_array():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(2000) * np.exp2(rng.integers(-40, 10, 2000))
    _, st = fpsim.quantize(x, "bf16", stats=True)
    a, s = histogram(x, ["fp16"]), histogram(st, ["fp16"])
    for u, v in zip(a.bars(), s.bars()):
        assert np.array_equal(u, v)
    k0, counts = st.binades()
    assert np.array_equal(histogram((int(k0[0]), counts), []).counts, counts)


# ---- fractions ---------------------------------------------------------------------------------
FRACTION_FORMATS = ["fp16", "bf16", "e5m2", "e4m3", "e3m4", "e2m1", "e5m10-nosub"]


def crafted(names) -> np.ndarray:
    """For each format: values that underflow, become subnormal, stay normal and overflow,
    both signs, ties on each boundary; plus zeros, Inf and NaN."""
    vals = [0.0, -0.0, np.inf, -np.inf, np.nan]
    for name in names:
        f = fpsim.format(name)
        t, n, m = f.min_subnormal, f.min_normal, f.max
        vals += [t / 4, -t / 2, t / 2, t * 0.51, -t, 1.5 * t, n - t, -n / 2 * 1.5, n, -1.0,
                 m, -m * 1.01, m * 2, -m * 2 ** 10]
    return np.array(vals, np.float64)


@pytest.mark.parametrize("spec", FRACTION_FORMATS + ["e3m4:sr", "fp16:rtz", "e4m3:rne:saturate"])
def test_fractions_equal_quantize_stats_counts(spec):
    x = crafted(FRACTION_FORMATS)
    name, *mode = spec.split(":")
    rounding = mode[0] if mode else "rne"
    policy = mode[1] if len(mode) > 1 else "ieee"
    h = histogram(x, [spec])
    (row,) = h.rows
    v = x[np.isfinite(x) & (x != 0)]
    assert h.n == v.size
    _, st = fpsim.quantize(v, name, rounding, policy, stats=True)
    for event in ("underflow", "subnormal", "overflow", "nan"):
        assert getattr(row, event) == getattr(st, event) / v.size, event
        assert getattr(row, f"{event}_range") == (getattr(row, event),) * 2
    # The array has each kind for each format (subnormal-free formats: no subnormals).
    f = fpsim.format(name)
    assert row.underflow > 0 and row.overflow > 0
    assert (row.subnormal > 0) == f.subnormals
    # Underflow and subnormal never involve specials: the whole array counts the same.
    _, full = fpsim.quantize(x, name, rounding, policy, stats=True)
    if rounding != "sr":  # sr bits follow the element index
        assert (full.underflow, full.subnormal) == (st.underflow, st.subnormal)
    # The table prints them.
    line = next(ln for ln in h.text().splitlines() if ln.startswith(row.name + " "))
    for event in ("underflow", "subnormal", "overflow"):
        frac = getattr(row, event)
        assert (f"{100 * frac:.4g}%" if frac else " 0") in line


def test_inf_inputs_are_not_overflow_of_finite_values():
    """float8_e4m3fn has no Inf: quantize counts an Inf input as an overflow; the fractions
    are of the non-zero finite values, so they do not."""
    x = np.array([np.inf, -np.inf, 1.0, 2.0])
    _, st = fpsim.quantize(x, "e4m3", stats=True)
    assert st.overflow == 2
    (row,) = histogram(x, ["e4m3"]).rows
    assert row.overflow == 0 and row.underflow == 0


@pytest.mark.parametrize("name", FRACTION_FORMATS)
def test_binade_bounds_from_stats_contain_exact_fractions(name):
    rng = np.random.default_rng(7)
    x = np.concatenate([crafted(FRACTION_FORMATS),
                        rng.standard_normal(5000) * np.exp2(rng.uniform(-150, 140, 5000))])
    _, st = fpsim.quantize(x, "fp32", stats=True)
    (exact,) = histogram(x, [name]).rows
    (bound,) = histogram(st, [name]).rows
    assert not bound.exact and bound.underflow is None
    for event in ("underflow", "subnormal", "overflow", "nan"):
        lo, hi = getattr(bound, f"{event}_range")
        assert lo <= getattr(exact, event) <= hi, (event, lo, getattr(exact, event), hi)


def test_binade_bounds_by_hand_float16():
    # binades -26 (certain underflow), -25 ([T/2, T)), -20 (subnormal), -15 (top subnormal
    # binade), 0 (normal), 15 (holds max), 16 (certain overflow)
    k = np.array([-26, -25, -20, -15, 0, 15, 16])
    c = np.array([1, 2, 4, 8, 16, 32, 64])
    b = binade_bounds(k, c, fpsim.format("fp16"))
    assert b["underflow"] == (1, 3)
    assert b["subnormal"] == (4, 4 + 2 + 8)
    assert b["overflow"] == (64, 96)
    assert b["nan"] == (0, 0)
    assert binade_bounds(k, c, fpsim.format("e4m3"))["nan"] == binade_bounds(
        k, c, fpsim.format("e4m3"))["overflow"]


def test_histogram_input_refuses_what_it_cannot_bound():
    _, st = fpsim.quantize(np.array([1.0, 1e-9]), "fp32", stats=True)
    with pytest.raises(ValueError, match="round-to-nearest"):
        histogram(st, ["e3m4:sr"])
    with pytest.raises(ValueError, match="unsigned"):
        histogram(st, ["e8m0"])
    with pytest.raises(ValueError, match="not understood"):
        histogram(np.ones(3), ["nosuch"])
    with pytest.raises(TypeError, match="real"):
        histogram(np.ones(3, complex), ["fp16"])


# ---- thresholds --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", FRACTION_FORMATS + ["e8m0", "e4m3fnuz"])
def test_ftz_threshold_is_where_rne_flushes(name):
    f = fpsim.format(name)
    ftz = ftz_threshold(f)
    if not f.zero:
        assert ftz is None
        return
    expected = (f.min_subnormal if f.subnormals else f.min_normal) / 2
    assert ftz == expected
    y = fpsim.quantize(np.array([ftz, np.nextafter(ftz, 1.0), -ftz]), f)
    assert y[0] == 0 and y[1] != 0 and y[2] == 0


@pytest.mark.parametrize("names", [["fp16", "bf16", "e5m2", "e4m3"], ["e5m10-nosub", "e8m0"]])
def test_threshold_lines_on_axes_equal_format_values(names):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(500) * np.exp2(rng.integers(-30, 12, 500))
    fig, ax = plt.subplots()
    h = histogram(x, names, ax=ax)
    lines = drawn_lines(ax)
    expected = {}
    for row in h.rows:
        f = row.format
        assert (row.min_normal, row.max, row.min_subnormal) == (f.min_normal, f.max,
                                                                f.min_subnormal)
        expected[f"min_normal:{row.name}"] = math.log2(f.min_normal)
        expected[f"max:{row.name}"] = math.log2(f.max)
        if f.zero:
            lo = f.min_subnormal if f.subnormals else f.min_normal
            expected[f"ftz:{row.name}"] = math.log2(lo / 2)
    assert lines == expected
    if "fp16" in names:
        assert lines["ftz:float16"] == -25 and lines["min_normal:float16"] == -14
        assert lines["max:float16"] == math.log2(65504)
    plt.close(fig)


def test_plot_files_png_and_svg(tmp_path):
    x = np.array([1e-9, 1e-6, 3.0, 1e5])
    h = histogram(x, ["fp16"], path=tmp_path / "sub" / "h.png", title="t")
    assert h.files == (str(tmp_path / "sub" / "h.png"), str(tmp_path / "sub" / "h.svg"))
    assert (tmp_path / "sub" / "h.png").read_bytes()[:8] == PNG_MAGIC
    assert b"<svg" in (tmp_path / "sub" / "h.svg").read_bytes()[:400]
    h = histogram(np.zeros(3), ["fp16"], path=tmp_path / "empty")  # no bars: still a plot
    assert h.n == 0 and (tmp_path / "empty.png").read_bytes()[:8] == PNG_MAGIC


# ---- format plot -------------------------------------------------------------------------------
def test_ulp_equals_numpy_spacing_float16():
    x = np.arange(1, 0x7C00, dtype=np.uint16).view(np.float16)  # every positive finite float16
    below_max = x[:-1]
    assert np.array_equal(ulp(fpsim.formats.float16, below_max),
                          np.spacing(below_max).astype(np.float64))
    assert ulp(fpsim.formats.float16, 65504.0) == 32.0


@pytest.mark.parametrize("name", ["fp16", "e4m3", "e2m1", "e8m0", "e5m10-nosub"])
def test_relative_spacing_curve_is_log2_ulp_over_x(name):
    f = fpsim.format(name)
    xs, ys = relative_spacing(f)
    assert xs[0] == math.log2(f.min_subnormal) and xs[-1] == math.log2(f.max)
    # Each segment starts at a value of the format: there the curve is log2(ulp(x)/x) exactly.
    starts = xs[:-1][np.diff(xs) > 0]
    vals = np.exp2(starts)
    got = ys[:-1][np.diff(xs) > 0]
    assert np.array_equal(got, np.log2(ulp(f, vals) / vals))
    if f.subnormals and f.man_bits:
        assert ys[0] == 0.0  # ulp(T) / T = 1
    assert ys.max() <= 0 and ys.min() >= -(f.man_bits + 1)


def test_plot_formats_ranges_and_curves(tmp_path):
    fig = plot_formats(["fp16", "e4m3"], path=tmp_path / "f")
    ax_range, ax_spacing = fig.axes[:2]
    bars = {p.get_gid(): (p.get_x(), p.get_x() + p.get_width()) for p in ax_range.patches}
    assert bars["subnormal:float16"] == (-24, -14) and bars["normal:float16"][0] == -14
    assert bars["normal:float16"][1] == pytest.approx(math.log2(65504), abs=1e-12)
    assert bars["subnormal:float8_e4m3fn"] == (-9, -6)
    curve = next(ln for ln in ax_spacing.lines if ln.get_gid() == "spacing:float16")
    xs, ys = relative_spacing(fpsim.formats.float16)
    assert np.array_equal(curve.get_xdata(), xs) and np.array_equal(curve.get_ydata(), ys)
    assert (tmp_path / "f.png").read_bytes()[:8] == PNG_MAGIC


# ---- commands ----------------------------------------------------------------------------------
def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_histogram_npy_round_trip(tmp_path, capsys):
    x = crafted(["fp16", "e4m3"]).astype(np.float32)
    np.save(tmp_path / "g.npy", x)
    rc, out, err = run(capsys, "histogram", tmp_path / "g.npy", "--formats", "fp16,e4m3",
                       "--out", tmp_path / "plot")
    assert rc == 0 and err == ""
    v = x[np.isfinite(x) & (x != 0)]
    for name, fmt in (("float16", "fp16"), ("float8_e4m3fn", "e4m3")):
        _, st = fpsim.quantize(v, fmt, stats=True)
        line = next(ln for ln in out.splitlines() if ln.startswith(name + " "))
        assert f"{100 * st.underflow / v.size:.4g}%" in line
        assert f"{100 * st.overflow / v.size:.4g}%" in line
    assert "2^-25" in out and "2^-14" in out and "65504.0" in out
    assert (tmp_path / "plot.png").read_bytes()[:8] == PNG_MAGIC
    svg = (tmp_path / "plot.svg").read_text()
    assert svg.startswith("<?xml") and "<svg" in svg


def test_cli_histogram_json_and_npz_key(tmp_path, capsys):
    x = np.array([1e-30, 1e-6, 1.0, 1e6, 0.0])
    np.savez(tmp_path / "a.npz", grads=x, other=np.ones(2))
    rc, out, err = run(capsys, "histogram", tmp_path / "a.npz", "--key", "grads", "-f", "fp16",
                       "--json")
    assert rc == 0
    d = json.loads(out)
    assert d["n_nonzero_finite"] == 4 and d["zeros"] == 1
    assert d["formats"][0]["underflow"] == 0.25 and d["formats"][0]["overflow"] == 0.25
    assert d["counts"][0] == 1 and d["left"][0] == math.floor(math.log2(1e-30))
    rc, out, err = run(capsys, "histogram", tmp_path / "a.npz")
    assert rc == 2 and "choose one with --key" in err


class _Payload:
    """Unpickling this object would create a file: a loader that unpickles runs code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_cli_histogram_refuses_pickled_object_npy(tmp_path, capsys):
    marker = tmp_path / "code_ran"
    np.save(tmp_path / "evil.npy", np.array([_Payload(str(marker)), 1.0], dtype=object),
            allow_pickle=True)
    assert not marker.exists()
    rc, out, err = run(capsys, "histogram", tmp_path / "evil.npy")
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "pickled" in err and not marker.exists()
    import pickle

    (tmp_path / "raw.pkl").write_bytes(pickle.dumps(_Payload(str(marker))))
    rc, out, err = run(capsys, "histogram", tmp_path / "raw.pkl")
    assert rc == 2 and err.count("\n") == 1 and not marker.exists()


@pytest.mark.parametrize("argv, message", [
    (["histogram", "MISSING.npy"], "cannot read"),
    (["histogram", "TEXT"], "is not a .npy or .npz file"),
    (["histogram", "GOOD", "--formats", "fp16,nosuch"], "'nosuch' is not understood"),
    (["histogram", "GOOD", "--formats", "fp16:fast"], "rounding='fast' is invalid"),
    (["histogram", "COMPLEX"], "not real numbers"),
])
def test_cli_histogram_errors_one_line_exit_2(tmp_path, capsys, argv, message):
    (tmp_path / "t.txt").write_text("1 2 3\n")
    np.save(tmp_path / "good.npy", np.ones(3))
    np.save(tmp_path / "c.npy", np.ones(3, complex))
    paths = {"MISSING.npy": tmp_path / "missing.npy", "TEXT": tmp_path / "t.txt",
             "GOOD": tmp_path / "good.npy", "COMPLEX": tmp_path / "c.npy"}
    rc, out, err = run(capsys, *[paths.get(a, a) for a in argv])
    assert rc == 2 and out == ""
    assert err.startswith("fpsim histogram: error: ") and err.count("\n") == 1
    assert message in err


def test_cli_formats_plot_writes_files(tmp_path, capsys):
    rc, out, err = run(capsys, "formats", "fp16", "e4m3", "--plot", "--out", tmp_path / "X")
    assert rc == 0
    assert out.splitlines()[0].startswith("name") and "float8_e4m3fn" in out
    assert (tmp_path / "X.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "X.svg").read_text().startswith("<?xml")
    rc, out, err = run(capsys, "formats", "fp16", "--out", tmp_path / "Y")
    assert rc == 2 and "--plot" in err and not (tmp_path / "Y.png").exists()
