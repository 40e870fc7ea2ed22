"""The scaled-format figures (fpsim.analysis.scaled_plots) on crafted run records: S2FP8's
alpha and beta, per-tensor amax and scale, tile scales out of range; what each draws, the
PNG files, and that a study without scaled formats gets neither figures nor sentences."""

import math
import warnings

import numpy as np
import pytest

from fpsim.analysis import plots, scaled_plots
from fpsim.analysis.runs import load
from fpsim.training.records import RunDB

PNG = b"\x89PNG\r\n\x1a\n"
TINY = {"model": "mlp", "dataset": "digits", "epochs": 1, "batch_size": 256,
        "optimizer": "sgd", "lr": 0.1, "scaler": "none", "model_config": {"hidden": [16]}}
STEPS = 6
NAMES = ("s2fp8_stats", "tensor_scales", "scale_range")
#: (site, role, direction) of every crafted cast: two forward GEMM sites and their gradients.
CASTS = (("net.0", "activation", "forward"), ("net.0", "weight", "forward"),
         ("net.2", "activation", "forward"), ("net.2", "activation-grad", "backward"),
         ("net.0", "activation-grad", "backward"))


def _row(site, role, direction, **kw):
    row = {"site": site, "role": role, "direction": direction, "amax": None, "scale": None,
           "alpha": None, "beta": None, "tiles": 1, "scale_underflow": 0, "scale_overflow": 0,
           "nonfinite": 0}
    row.update(kw)
    return row


def alpha_of(seed, step, i):
    return 0.6 + 0.05 * step + 0.1 * i + 0.02 * seed


def beta_of(seed, step, i):
    return -3.0 * i - 0.5 * step - seed


def amax_of(step, i):
    return 2.0 ** (i - step)


def s2fp8_rows(seed, step):
    return [_row(s, r, d, amax=amax_of(step, i), alpha=alpha_of(seed, step, i),
                 beta=beta_of(seed, step, i)) for i, (s, r, d) in enumerate(CASTS)]


def delayed_rows(seed, step):
    # the scale of the step before (delayed); step 0: 1; a nonfinite tile at step 4 in net.2's
    # gradient
    return [_row(s, r, d, amax=amax_of(step, i),
                 scale=448.0 / amax_of(step - 1, i) if step else 1.0,
                 nonfinite=int(step == 4 and s == "net.2" and r == "activation-grad"))
            for i, (s, r, d) in enumerate(CASTS)]


def mx_rows(seed, step):
    # 64 blocks per tensor; gradients lose 2*step of them below E8M0's range, net.0's
    # weights overflow one at step 5
    return [_row(s, r, d, amax=amax_of(step, i), tiles=64,
                 scale_underflow=2 * step if r == "activation-grad" else 0,
                 scale_overflow=int(step == 5 and r == "weight"))
            for i, (s, r, d) in enumerate(CASTS)]


def no_rows(seed, step):
    return []


def _add_run(db, name, policy, seed, rows_of, study="t", instrument=True):
    rid = db.new_run(name, {**TINY, "policy": policy, "seed": seed, "instrument": instrument},
                     seed, {}, study)
    for step in range(STEPS):
        db.con.execute("INSERT INTO steps VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                       (rid, step, 0, 2.0 - 0.1 * step - 0.01 * seed, 0.5, 0.1, 1.0, 0, 0.0, 0,
                        0.01))
        db.add_tensor_scales(rid, step, rows_of(seed, step))
    db.con.execute("INSERT INTO epochs VALUES (?,?,?,?,?,?,?,?)",
                   (rid, 0, STEPS, 1.5, 0.5, 1.6, 0.4 + 0.01 * seed, 0.1))
    db.set_status(rid, "finished", {"seconds": 0.1})
    return rid


@pytest.fixture
def scaled_db(tmp_path):
    """A crafted study: S2FP8 (two seeds), delayed scaling, MX blocks, and fp16 without any
    scaled cast."""
    path = str(tmp_path / "scaled.sqlite")
    with RunDB(path) as db:
        for seed in (0, 1):
            _add_run(db, "s2fp8", "fwd=s2fp8+grads=s2fp8", seed, s2fp8_rows)
        _add_run(db, "delayed", "fwd=fp8_delayed+grads=fp8_delayed_e5m2", 0, delayed_rows)
        _add_run(db, "mx", "fwd=mxfp8_e4m3+grads=mxfp8_e5m2", 0, mx_rows)
        _add_run(db, "fp16", "mixed_fp16", 0, no_rows)
    return path


@pytest.fixture
def runs(scaled_db):
    return load(scaled_db)[1]


def _drawn(runs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from log2(0) or 0/0
        return {m.name: (m, f) for m, f in plots.draw_all(runs)}


def _lines(fig):
    return {ln.get_gid(): ln for ax in fig.axes for ln in ax.lines if ln.get_gid()}


def _titles(fig):
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


# ---- records ------------------------------------------------------------------------------------
def test_rundata_loads_the_tensor_scales_rows(runs):
    by = {(r.label, r.seed): r for r in runs}
    assert len(by[("s2fp8", 1)].tensor_scales) == STEPS * len(CASTS)
    row = by[("s2fp8", 1)].tensor_scales[len(CASTS) + 2]  # step 1, the third cast
    assert (row["step"], row["site"], row["role"]) == (1, "net.2", "activation")
    assert row["alpha"] == pytest.approx(alpha_of(1, 1, 2)) and row["scale"] is None
    assert by[("fp16", 0)].tensor_scales == []


def test_figures_come_after_overflow_and_before_the_histograms(runs):
    names = list(_drawn(runs))
    assert [n for n in names if n in NAMES] == list(NAMES)
    assert names.index("s2fp8_stats") > names.index("curves")
    assert not any(n.startswith("hist_") for n in names[:names.index("scale_range")])


# ---- 1. S2FP8 -----------------------------------------------------------------------------------
def test_s2fp8_alpha_and_beta_per_site_mean_over_seeds(runs):
    meta, fig = _drawn(runs)["s2fp8_stats"]
    assert _titles(fig) == ["Forward: alpha (squeeze)", "Forward: beta (shift)",
                            "Gradients: alpha (squeeze)", "Gradients: beta (shift)"]
    lines = _lines(fig)
    drawn = sorted(g for g in lines if g.startswith(("alpha:", "beta:")))
    # only the S2FP8 cell: one line per site [role] and statistic
    assert drawn == sorted(f"{k}:s2fp8:{s} [{r}]" for k in ("alpha", "beta")
                           for s, r, _ in CASTS)
    for i, (s, r, _) in enumerate(CASTS):
        ln = lines[f"alpha:s2fp8:{s} [{r}]"]
        np.testing.assert_array_equal(ln.get_xdata(), np.arange(STEPS))
        np.testing.assert_allclose(ln.get_ydata(), [np.mean([alpha_of(seed, st, i)
                                                             for seed in (0, 1)])
                                                    for st in range(STEPS)])
        np.testing.assert_allclose(lines[f"beta:s2fp8:{s} [{r}]"].get_ydata(),
                                   [beta_of(0.5, st, i) for st in range(STEPS)])
    # the gradient rows hold the gradient sites only
    grad_ax = next(ax for ax in fig.axes if ax.get_title() == "Gradients: alpha (squeeze)")
    assert {ln.get_gid() for ln in grad_ax.lines} == {
        "alpha=1", "alpha:s2fp8:net.2 [activation-grad]", "alpha:s2fp8:net.0 [activation-grad]"}
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [f"{s} [{r}]" for s, r, _ in CASTS] + [
        "alpha = 1 (no squeeze)"]
    c = meta.caption
    assert "log2|y| = alpha log2|x| + beta" in c and "mean 0 and maximum 15" in c
    assert "squeeze" in c and "shift" in c and "Unsmoothed" in c
    assert "mean over the seeds 0, 1" in c
    assert "No line for `delayed`, `mx`, `fp16`: no S2FP8 cast." in c


def test_several_s2fp8_cells_get_a_line_style_each(tmp_path):
    path = str(tmp_path / "two.sqlite")
    with RunDB(path) as db:
        _add_run(db, "a", "fwd=s2fp8+grads=s2fp8", 0, s2fp8_rows)
        _add_run(db, "b", "fwd=s2fp8+grads=s2fp8", 0, s2fp8_rows)
    runs = load(path)[1]
    meta, fig = _drawn(runs)["s2fp8_stats"]
    lines = _lines(fig)
    a, b = lines["alpha:a:net.0 [activation]"], lines["alpha:b:net.0 [activation]"]
    assert a.get_color() == b.get_color() and a.get_linestyle() != b.get_linestyle()
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts[-3:] == ["cell: a", "cell: b", "alpha = 1 (no squeeze)"]
    assert "one line style per cell" in meta.caption and "one run of each cell" in meta.caption


# ---- 2. per-tensor scales -----------------------------------------------------------------------
def test_tensor_scales_draws_log2_amax_and_scale_of_the_delayed_cell(runs):
    meta, fig = _drawn(runs)["tensor_scales"]
    assert _titles(fig) == ["Forward: amax", "Forward: encode scale", "Gradients: amax",
                            "Gradients: encode scale"]
    lines = _lines(fig)
    # the S2FP8 and MX runs have an amax but no per-tensor scale: not drawn
    assert sorted(lines) == sorted(f"{k}:delayed:{s} [{r}]" for k in ("amax", "scale")
                                   for s, r, _ in CASTS)
    for i, (s, r, _) in enumerate(CASTS):
        np.testing.assert_allclose(lines[f"amax:delayed:{s} [{r}]"].get_ydata(),
                                   [i - st for st in range(STEPS)])
        np.testing.assert_allclose(lines[f"scale:delayed:{s} [{r}]"].get_ydata(),
                                   [0.0] + [math.log2(448.0) - (i - st + 1)
                                            for st in range(1, STEPS)])
    assert fig.axes[0].get_ylabel() == "log2 amax"
    c = meta.caption
    assert "delayed scaling" in c and "one run of each cell (seed 0)" in c
    assert "No line for `s2fp8`, `mx`, `fp16`" in c


# ---- 3. scales out of range ---------------------------------------------------------------------
def test_scale_range_fractions_per_cell_and_role(runs):
    meta, fig = _drawn(runs)["scale_range"]
    assert _titles(fig) == ["delayed", "mx"]  # s2fp8: every scale in range; fp16: no tiles
    delayed, mx = fig.axes[0], fig.axes[1]
    assert {ln.get_gid() for ln in delayed.lines} == {"nonfinite:activation-grad"}
    (ln,) = delayed.lines
    # step 4: 1 of the 2 activation-gradient tensors (one tile each) held Inf/NaN
    np.testing.assert_array_equal(ln.get_xdata(), [4])
    np.testing.assert_allclose(ln.get_ydata(), [50.0])
    by = {ln.get_gid(): ln for ln in mx.lines}
    assert set(by) == {"scale_underflow:activation-grad", "scale_overflow:weight"}
    u = by["scale_underflow:activation-grad"]
    # 2 sites x 2*step blocks of 2 x 64; step 0 has none (log axis: no point)
    np.testing.assert_array_equal(u.get_xdata(), np.arange(1, STEPS))
    np.testing.assert_allclose(u.get_ydata(), [100 * 4 * st / 128 for st in range(1, STEPS)])
    np.testing.assert_allclose(by["scale_overflow:weight"].get_ydata(), [100 / 64])
    assert mx.get_yscale() == "log" and mx.get_ylim()[0] < 100 / 64 and mx.get_ylim()[1] > 100
    # the whole run on the step axis, even for the lone point
    assert delayed.get_xlim()[0] < 0 and delayed.get_xlim()[1] > STEPS - 1
    texts = [t.get_text() for ax in fig.axes for lg in [ax.get_legend()] if lg
             for t in lg.get_texts()]
    assert {"activation-grad", "weight", "scale underflowed", "scale overflowed",
            "Inf/NaN in the tile"} <= set(texts)
    c = meta.caption
    assert "Not drawn: `s2fp8`" in c and "No panel for `fp16`" in c
    assert "summed over the role's cast sites" in c and "unsmoothed" in c


def test_scale_range_in_range_everywhere_is_a_sentence(tmp_path):
    path = str(tmp_path / "clean.sqlite")
    with RunDB(path) as db:
        _add_run(db, "s2fp8", "fwd=s2fp8+grads=s2fp8", 0, s2fp8_rows)
    runs = load(path)[1]
    assert "scale_range" not in _drawn(runs) and "s2fp8_stats" in _drawn(runs)
    why = plots.omitted(runs)
    assert why["scale_range"].startswith("No block scale left the scale format's range.")
    assert why["tensor_scales"] == ("No run recorded a per-tensor scale: no current or "
                                    "delayed scaling.")
    assert "s2fp8_stats" not in why


# ---- files and absence --------------------------------------------------------------------------
def test_write_all_writes_the_three_pngs(runs, tmp_path):
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figs = plots.write_all(runs, str(out), images=("png",))
    names = [f.name for f in figs]
    assert set(NAMES) <= set(names)
    for name in NAMES:
        png = (out / f"{name}.png").read_bytes()
        assert png[:8] == PNG and len(png) > 5000, name
    assert not set(NAMES) & set(plots.omitted(runs))


def test_a_study_without_scaled_formats_gets_no_figure_and_no_sentence(tmp_path):
    path = str(tmp_path / "plain.sqlite")
    with RunDB(path) as db:
        for seed in (0, 1):
            _add_run(db, "fp16", "mixed_fp16", seed, no_rows)
    runs = load(path)[1]
    assert not set(NAMES) & set(_drawn(runs))
    assert not set(NAMES) & set(plots.omitted(runs))
    assert scaled_plots.omitted(runs) == {} and scaled_plots.draw_all(runs) == []


def test_scaled_casts_without_rows_say_why(tmp_path):
    path = str(tmp_path / "off.sqlite")
    with RunDB(path) as db:
        _add_run(db, "s2fp8", "fwd=s2fp8+grads=s2fp8", 0, no_rows, instrument=False)
    runs = load(path)[1]
    assert not set(NAMES) & set(_drawn(runs))
    why = plots.omitted(runs)
    assert set(NAMES) <= set(why)
    assert all("instrumentation was off" in why[n] for n in NAMES)
