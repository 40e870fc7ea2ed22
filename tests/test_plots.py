"""The report's figures (fpsim.analysis.plots): files written, bars on the recorded binades,
threshold lines at the format's values, seed bands, collapsed scales without warnings, and
figures left out when there is nothing to show."""

import math
import sqlite3
import warnings

import numpy as np
import pytest

from fpsim.analysis import plots
from fpsim.analysis.runs import GRAD_ROLE, groups, load
from fpsim.numerics.format import Format
from fpsim.numerics.formats import format as parse_format
from fpsim.training.loop import train
from fpsim.training.records import RunDB

PNG = b"\x89PNG\r\n\x1a\n"
TINY = {"model": "mlp", "dataset": "digits", "policy": "mixed_fp16", "epochs": 1,
        "batch_size": 256, "shadow_every": 2, "hist_every": 1, "model_config": {"hidden": [16]}}
SCALERS = ("none", "adaptive", "static:65536")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A tiny study: three scalers x two seeds, every step instrumented, histograms at every
    step, a shadow pass every other step."""
    db = str(tmp_path_factory.mktemp("plots") / "study.sqlite")
    for seed in (0, 1):
        for spec in SCALERS:
            train(dict(TINY, seed=seed, scaler=spec, name=spec.replace(":", " ")), db=db,
                  study="t")
    return db


@pytest.fixture
def runs(study):
    return load(study)[1]


def _crafted(study, tmp_path, *statements):
    """A copy of the study database with ``statements`` (SQL) applied."""
    path = str(tmp_path / "crafted.sqlite")
    src, dst = sqlite3.connect(study), sqlite3.connect(path)
    src.backup(dst)
    src.close()
    with dst:
        for s in statements:
            dst.execute(s)
    dst.close()
    return load(path)[1]


def _run_id(runs, label, seed):
    return next(r.id for r in runs if r.label == label and r.seed == seed)


def _drawn(runs, name, target=None):
    return {m.name: (m, f) for m, f in plots.draw_all(runs, target)}[name]


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


# ---- files --------------------------------------------------------------------------------------
def test_write_all_writes_png_and_svg_of_every_figure_it_returns(runs, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figs = plots.write_all(runs, str(tmp_path / "out"), target=0.5)
    names = [f.name for f in figs]
    # the tiny study's scales are constant (adaptive's per-site ones too): said, not drawn
    assert names == ["curves", "underflow", "hist_none", "hist_adaptive", "hist_static_65536"]
    assert "loss_scale" in plots.omitted(runs)
    for f in figs:
        png = (tmp_path / "out" / f"{f.name}.png").read_bytes()
        svg = (tmp_path / "out" / f"{f.name}.svg").read_text()
        assert png[:8] == PNG and len(png) > 5000, f.name
        assert svg.startswith("<?xml") and "<svg" in svg, f.name
        assert f.title and f.caption
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f"{n}.{e}" for n in names for e in ("png", "svg"))


def test_captions_say_smoothing_seeds_and_measure(runs):
    by = {m.name: m for m, _ in plots.draw_all(runs, 0.5)}
    assert "unsmoothed" in by["curves"].caption  # 6 steps: window 1
    assert "mean over the seeds 0, 1" in by["curves"].caption
    assert "minimum to maximum" in by["curves"].caption
    assert "Shadow underflow" in by["underflow"].caption
    assert "INPUTS of the cast" in by["hist_none"].caption
    assert "seed 0" in by["hist_none"].caption
    assert "inputs of the cast" in by["hist_none"].title


# ---- 1. curves ----------------------------------------------------------------------------------
def test_seed_band_covers_min_to_max_of_the_seeds(runs):
    meta, fig = _drawn(runs, "curves")
    loss_ax = fig.axes[0]
    items = groups(runs)["none"]
    k = plots.smoothing_window(max(len(r.steps["step"]) for r in runs))
    seeds = np.vstack([plots.running_mean(r.steps["loss"], k) for r in items])
    assert not np.allclose(seeds[0], seeds[1])  # two seeds, two curves: a real band
    band = next(c for c in loss_ax.collections if c.get_gid() == "band:none")
    v = np.vstack([p.vertices for p in band.get_paths()])
    steps = items[0].steps["step"]
    for j, s in enumerate(steps):
        ys = v[np.isclose(v[:, 0], s), 1]
        assert ys.min() == pytest.approx(seeds[:, j].min(), rel=1e-12)
        assert ys.max() == pytest.approx(seeds[:, j].max(), rel=1e-12)
    line = next(ln for ln in loss_ax.lines if ln.get_gid() == "mean:none")
    np.testing.assert_allclose(line.get_ydata(), seeds.mean(axis=0), rtol=1e-12)


def test_every_cell_in_the_legend_and_the_target_line(runs):
    meta, fig = _drawn(runs, "curves", target=0.5)
    (legend,) = fig.legends
    labels = [t.get_text() for t in legend.get_texts()]
    for label in groups(runs):
        assert any(t.split(" (=")[0] == label for t in labels), label
    assert all(t.get_fontsize() >= 8 for t in legend.get_texts())
    acc_ax = fig.axes[1]
    (target,) = [ln for ln in acc_ax.lines if ln.get_gid() == "target"]
    assert target.get_ydata()[0] == pytest.approx(50.0)
    styles = plots.cell_styles(runs)
    assert len({(str(s["color"]), str(s["ls"])) for s in styles.values()}) == len(styles)
    assert len({str(s["ls"]) for s in styles.values()}) == len(styles)


# ---- 6. histograms ------------------------------------------------------------------------------
def test_histogram_bars_are_the_recorded_binades(study, runs):
    r = next(x for x in runs if x.label == "static 65536" and x.seed == 0)
    with RunDB(study) as db:
        rows = [h for h in db.histograms(r.id) if h["role"] == GRAD_ROLE]
    meta, fig = _drawn(runs, "hist_static_65536")
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    assert set(panels) == {h["site"] for h in rows}
    for site, ax in panels.items():
        summed = {}
        for h in rows:
            if h["site"] == site:
                for j, c in enumerate(h["counts"]):
                    if c:
                        summed[h["k_min"] + j] = summed.get(h["k_min"] + j, 0) + int(c)
        bars = sorted((p for p in ax.patches if p.get_gid() == "scaled"), key=lambda p: p.get_x())
        assert [p.get_x() for p in bars] == sorted(summed)  # left edge k: the bar is [k, k+1)
        assert all(p.get_width() == 1.0 for p in bars)
        assert [p.get_height() for p in bars] == [summed[k] for k in sorted(summed)]
        # unscaled: the same counts shifted by -log2(65536) = -16 binades
        (outline,) = [c for c in ax.patches if c.get_gid() == "unscaled"]
        edges = outline.get_path().vertices[:, 0]
        assert edges.min() == min(summed) - 16 and edges.max() == max(summed) + 1 - 16


def test_threshold_lines_at_log2_of_the_format_values(runs):
    meta, fig = _drawn(runs, "hist_none")
    fp16 = parse_format("fp16")
    want = {"ftz": math.log2(fp16.min_subnormal / 2), "min_normal": math.log2(fp16.min_normal),
            "max": math.log2(fp16.max)}
    assert want["ftz"] == -25 and want["min_normal"] == -14
    for ax in [a for a in fig.axes if a.get_title()]:
        lo, hi = ax.get_xlim()
        for gid, x in want.items():
            lines = [ln for ln in ax.lines if ln.get_gid() == gid]
            if lo <= x <= hi:
                assert len(lines) == 1 and lines[0].get_xdata()[0] == x, gid
            else:  # off the axis: an arrow note at the edge instead of a line
                assert not lines and any(t.get_gid() == f"{gid}-offaxis" for t in ax.texts)
    # without subnormals the smallest positive value is min_normal: flush below its half
    e4m3 = Format(exp_bits=4, man_bits=3, subnormals=False)
    got = {gid: x for gid, _, x, _, _ in plots.threshold_lines(e4m3)}
    assert got["ftz"] == math.log2(e4m3.min_normal / 2)
    assert got["min_normal"] == math.log2(e4m3.min_normal)
    assert got["max"] == math.log2(e4m3.max)
    assert plots.threshold_lines(None) == []


def test_unscaled_outline_of_fractional_shifts():
    # bins [0.5, 1.5) count 2 and [1, 2) count 3 overlap on [1, 1.5)
    edges, heights = plots._shifted_outline([(0.5, 2), (1.0, 3)])
    np.testing.assert_array_equal(edges, [0.5, 1.0, 1.5, 2.0])
    np.testing.assert_array_equal(heights, [2, 5, 3])


# ---- 2. loss scale, guards ----------------------------------------------------------------------
def test_collapsed_scale_draws_at_the_bottom_without_warnings(study, runs, tmp_path):
    static, adaptive = _run_id(runs, "static 65536", 0), _run_id(runs, "adaptive", 0)
    crafted = _crafted(
        study, tmp_path,
        f"UPDATE steps SET loss_scale = 0 WHERE run_id = {static} AND step >= 3",
        f"UPDATE scales SET carried = 0 WHERE run_id = {adaptive} AND site = 'net.1' "
        "AND step >= 2",
        f"UPDATE site_events SET scale = 0 WHERE run_id = {static} AND step >= 3")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy RuntimeWarnings and matplotlib warnings alike
        drawn = plots.draw_all(crafted)
        for m, f in drawn:  # what write_all does, keeping the figures to look into
            plots.save_figure(f, str(tmp_path / f"{m.name}.png"), dpi=plots.DPI)
    figs = {m.name: m for m, _ in drawn}
    fig = dict((m.name, f) for m, f in drawn)["loss_scale"]
    assert "the scale fell to 0 at step 3 (seed 0)" in figs["loss_scale"].caption
    top = fig.axes[0]
    assert [ln.get_xdata()[0] for ln in top.lines if ln.get_gid() == "collapse:3"] == [3]
    assert any("scale fell to 0 at step 3" in t for t in _texts(fig))
    line = next(ln for ln in top.lines if ln.get_gid() == "mean:static 65536")
    assert np.all(np.isfinite(line.get_ydata()))  # the collapsed seed is left out, not -inf
    assert "`adaptive` site `net.1`: the scale fell to 0 at step 2" in figs["loss_scale"].caption
    assert plots.constant_scales(crafted) is None
    assert "site-steps whose scale was 0 or not finite" in figs["hist_static_65536"].caption


def test_guards_raise_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(plots.safe_log2([0.0, -1.0, 4.0, np.inf]),
                                      [np.nan, np.nan, 2.0, np.nan])
        np.testing.assert_array_equal(plots.ratio([1, 0, 1], [0, 0, 4]), [np.nan, np.nan, 0.25])
        np.testing.assert_array_equal(plots.running_mean([1.0, np.nan, 3.0, 5.0], 2),
                                      [1.0, 1.0, 3.0, 4.0])
        np.testing.assert_array_equal(plots.running_mean([np.nan], 3), [np.nan])
        mean, lo, hi, n = plots.seed_stats([[1.0, np.nan], [3.0, np.nan]])
        np.testing.assert_array_equal(mean, [2.0, np.nan])
        np.testing.assert_array_equal(lo, [1.0, np.nan])
        np.testing.assert_array_equal(hi, [3.0, np.nan])
    assert plots.smoothing_window(30) == 1 and plots.smoothing_window(300) == 15
    assert plots.smoothing_window(10**6) == plots.MAX_WINDOW


# ---- 3. skipped ---------------------------------------------------------------------------------
def test_skipped_figure_absent_when_nothing_skipped(runs):
    assert plots.no_skipped(runs)
    assert plots.draw_skipped(runs) is None
    assert plots.omitted(runs)["skipped"] == "No run skipped a step."
    assert plots.no_overflow(runs) and plots.draw_overflow(runs) is None
    assert "overflow" in plots.omitted(runs)


def test_constant_scales_are_said_not_drawn(study, runs, tmp_path):
    assert plots.constant_scales(runs) == {"none": 1.0, "adaptive": 1.0, "static 65536": 65536.0}
    flat = plots.flat_site_scales(runs)
    assert list(flat) == ["adaptive"] and flat["adaptive"][0] == 0
    assert plots.draw_loss_scale(runs) is None
    why = plots.omitted(runs)["loss_scale"]
    assert "`static 65536` 65536 (2^16)" in why and "`adaptive` (seed 0) " in why
    plain = [r for r in runs if r.label != "adaptive"]
    assert plots.draw_loss_scale(plain) is None
    assert plots.omitted(plain)["loss_scale"].startswith("The global loss scale is constant")
    # a per-site scale that changes is drawn, in a panel of its own; the per-site cell has no
    # line in the global panel (it multiplies no loss)
    adaptive = _run_id(runs, "adaptive", 0)
    crafted = _crafted(study, tmp_path, f"UPDATE scales SET local = local * 2 WHERE run_id = "
                       f"{adaptive} AND site = 'net.1' AND step >= 2")
    meta, fig = _drawn(crafted, "loss_scale")
    assert [ax.get_title() for ax in fig.axes] == ["adaptive (seed 0): per-site scales"]
    assert "`static 65536` 65536 (2^16)" in meta.caption and "no global scale" in meta.caption


def test_skipped_figure_when_a_run_skipped(study, runs, tmp_path):
    rid = _run_id(runs, "none", 1)
    crafted = _crafted(study, tmp_path,
                       f"UPDATE steps SET skipped = 1 WHERE run_id = {rid} AND step >= 2")
    assert not plots.no_skipped(crafted) and "skipped" not in plots.omitted(crafted)
    meta, fig = _drawn(crafted, "skipped")
    (ax,) = fig.axes
    line = next(ln for ln in ax.lines if ln.get_gid() == "mean:none")
    n = len(line.get_xdata())
    np.testing.assert_allclose(line.get_ydata(), np.maximum(0, np.arange(n) - 1) / 2)
    assert not any(ln.get_gid() == "mean:adaptive" for ln in ax.lines)
    assert "`adaptive`, `static 65536`, which skipped no step" in meta.caption


# ---- 4./5. underflow and overflow ---------------------------------------------------------------
def test_underflow_is_the_shadow_rate_per_layer(runs):
    meta, fig = _drawn(runs, "underflow")
    ax = next(a for a in fig.axes if a.get_title() == "none")
    assert ax.get_ylabel() == "shadow underflow (%)"
    items = groups(runs)["none"]
    for site in items[0].site_steps():
        want = []
        for r in items:
            d = r.site_steps()[site]
            ok = d["shadow_total"] > 0
            want.append(dict(zip(d["step"][ok], d["shadow_underflow"][ok] / d["shadow_total"][ok])))
        line = next(ln for ln in ax.lines if ln.get_gid() == f"underflow:{site}")
        for s, y in zip(line.get_xdata(), line.get_ydata()):
            assert y == pytest.approx(100 * np.mean([w[s] for w in want]))
        assert list(line.get_xdata()) == sorted(want[0])  # shadow steps only, unsmoothed


def test_every_step_overflowed_shows_overflow_not_zero_underflow(study, runs, tmp_path):
    crafted = _crafted(
        study, tmp_path,
        "UPDATE site_events SET overflow = total, zeros = 0, underflow = 0, shadow_underflow = 0 "
        "WHERE role = 'activation-grad' AND run_id IN (SELECT id FROM runs WHERE name = 'none')",
        "UPDATE site_events SET nan = 1 WHERE role = 'activation-grad' AND run_id IN "
        "(SELECT id FROM runs WHERE name = 'none')")
    assert not plots.no_overflow(crafted)
    meta, fig = _drawn(crafted, "overflow")
    # a site with overflow and NaN is one legend entry (the line styles tell them apart)
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    labels = [t.get_text() for leg in legends for t in leg.get_texts()]
    assert labels and len(labels) == len(set(labels)), labels
    ax = next(a for a in fig.axes if a.get_title() == "none")
    lines = [ln for ln in ax.lines if ln.get_gid().startswith("overflow:")
             and "activation-grad" in ln.get_gid()]
    assert lines and all(np.allclose(ln.get_ydata(), 100.0) for ln in lines)
    assert ax.get_yscale() == "log"
    meta, fig = _drawn(crafted, "underflow")
    ax = next(a for a in fig.axes if a.get_title() == "none")
    assert not [ln for ln in ax.lines if ln.get_gid() and ln.get_gid().startswith("underflow:")]
    assert any("underflow is not measurable" in t.get_text() for t in ax.texts)
