"""The figures of a study report, drawn from run records (:class:`~fpsim.analysis.runs.RunData`).

:func:`write_all` draws every figure that has something to show, writes ``NAME.png`` and
``NAME.svg`` for each, and returns one :class:`Figure` (name, title, markdown caption) per figure
drawn. A figure with nothing to show is not drawn; :func:`omitted` says, in a sentence per
figure, what was left out and why (``no skipped steps in any run``), so the report can say so
instead of showing an empty panel.

Conventions shared by every figure:

- A *cell* is one label of :func:`~fpsim.analysis.runs.groups` (a scaler / policy), its runs the
  seeds. A cell's line is the mean over its seeds at each step; the shaded band (or the error
  bar, for sparse points) spans the minimum to the maximum over the seeds. A cell keeps one
  colour and line style in every figure (:func:`cell_styles`).
- Per-step series are aligned on the step number; a seed without a value at a step (a shorter
  run, a step without a shadow pass) does not count at that step.
- Every guard against ``log2(0)``, ``0/0`` and empty reductions is a mask, never a silenced
  warning: drawing raises no numpy RuntimeWarning.
- Histogram bars span ``[k, k+1)`` on a log2 axis (:func:`~fpsim.analysis.histogram.binade_bars`).

The metric definitions are :data:`~fpsim.analysis.runs.METRICS`; nothing here reads the database.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import OrderedDict

import numpy as np

from fpsim.analysis.histogram import binade_bars, ftz_threshold, new_figure, pow2_axis, save_figure
from fpsim.analysis.runs import GRAD_ROLE, RunData, groups
from fpsim.analysis.runs import integer_ranges as _ranges

#: Resolution of the PNG files (the SVG files are vector).
DPI = 110
#: Font sizes (points): text, tick labels and legends, titles.
FONT, SMALL, TITLE = 9, 8, 10
#: Line styles cycled with the colours, so overlapping lines stay distinguishable in greyscale.
LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))
#: Marker shapes of the sites in the overflow panels.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
#: Largest running-mean window of the training loss (see :func:`smoothing_window`).
MAX_WINDOW = 50
#: Panels per row of the per-cell and per-site grids.
COLUMNS = 3
#: How far (binades) beyond a histogram's data a threshold line may stretch its x axis.
REACH = 12

_RC = {"font.size": FONT, "axes.titlesize": TITLE, "axes.labelsize": FONT,
       "xtick.labelsize": SMALL, "ytick.labelsize": SMALL, "legend.fontsize": SMALL,
       "figure.titlesize": TITLE + 1, "svg.hashsalt": "fpsim", "svg.fonttype": "path"}


@dataclasses.dataclass(frozen=True)
class Figure:
    """One figure written by :func:`write_all`: ``out_dir/name.png`` and ``out_dir/name.svg``."""

    #: File name without extension (``curves``, ``hist_static_256``).
    name: str
    #: One-line title for a report heading.
    title: str
    #: Markdown: what the figure shows, the smoothing, the seeds, and what is absent.
    caption: str
    #: The cell a per-cell figure (``hist_*``) shows; None for figures of the whole study.
    cell: str | None = None


# ---- numbers: masks, alignment, smoothing -------------------------------------------------------
def mean_ci_linear(values, level=0.95):
    """Arithmetic mean and its Student-t interval ``(mean, lo, hi)``."""
    from scipy import stats

    v = np.asarray(values, float)
    m = float(v.mean())
    if len(v) < 2:
        return m, m, m
    h = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return m, m - h, m + h


def running_mean(y, k: int) -> np.ndarray:
    """Running mean of the finite values of ``y`` over the last ``k`` steps (shorter at the
    start); NaN where the window holds no finite value. ``k = 1`` returns ``y`` with the
    non-finite values as NaN."""
    y = np.asarray(y, np.float64).reshape(-1)
    ok = np.isfinite(y)
    csum = np.concatenate([[0.0], np.cumsum(np.where(ok, y, 0.0))])
    cnum = np.concatenate([[0], np.cumsum(ok)])
    idx = np.arange(1, y.size + 1)
    lo = np.maximum(0, idx - max(1, int(k)))
    num = cnum[idx] - cnum[lo]
    out = np.full(y.size, np.nan)
    np.divide(csum[idx] - csum[lo], num, out=out, where=num > 0)
    return out


def smoothing_window(n_steps: int) -> int:
    """The training-loss window of a run of ``n_steps``: about 1/20 of the run, 1 (unsmoothed)
    for runs under 40 steps, at most :data:`MAX_WINDOW`."""
    return int(min(MAX_WINDOW, max(1, n_steps // 20)))


def ratio(num, den) -> np.ndarray:
    """``num / den`` elementwise, NaN where ``den`` is not positive or either is not finite."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    ok = np.isfinite(num) & np.isfinite(den) & (den > 0)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=ok)
    return out


def safe_log2(x) -> np.ndarray:
    """``log2(x)`` where ``x`` is positive and finite, NaN elsewhere (no warning)."""
    x = np.asarray(x, np.float64)
    ok = np.isfinite(x) & (x > 0)
    out = np.full(x.shape, np.nan)
    np.log2(x, out=out, where=ok)
    return out


def align(series) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, Y)`` of per-seed ``(step, value)`` series: the union of the steps and one row
    per seed, NaN where the seed has no value at that step."""
    series = [(np.asarray(s, np.float64).reshape(-1), np.asarray(v, np.float64).reshape(-1))
              for s, v in series]
    steps = np.unique(np.concatenate([s for s, _ in series])) if series else np.zeros(0)
    y = np.full((len(series), steps.size), np.nan)
    for i, (s, v) in enumerate(series):
        y[i, np.searchsorted(steps, s)] = v
    return steps, y


def seed_stats(y) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(mean, low, high, n)`` over the rows (seeds) of ``y``, of the finite values only; NaN
    where no seed has a finite value."""
    y = np.atleast_2d(np.asarray(y, np.float64))
    ok = np.isfinite(y)
    n = ok.sum(axis=0)
    mean = np.full(y.shape[1], np.nan)
    np.divide(np.where(ok, y, 0.0).sum(axis=0), n, out=mean, where=n > 0)
    lo = np.where(ok, y, np.inf).min(axis=0)
    hi = np.where(ok, y, -np.inf).max(axis=0)
    lo[n == 0] = np.nan
    hi[n == 0] = np.nan
    return mean, lo, hi, n


# ---- words --------------------------------------------------------------------------------------
def _seeds_text(cells) -> str:
    """``seeds 0-4`` when every cell has the same seeds, else the seeds of each cell."""
    sets = {label: tuple(sorted(r.seed for r in items)) for label, items in cells.items()}
    if len(set(sets.values())) == 1:
        s = next(iter(sets.values()))
        return f"seed {s[0]}" if len(s) == 1 else f"seeds {_ranges(s)}"
    return "seeds " + "; ".join(f"{label}: {_ranges(s)}" for label, s in sets.items())


def _mean_over(cells) -> str:
    """``the mean over the seeds 0-4`` (or ``the one run of seed 0``)."""
    if all(len(items) == 1 for items in cells.values()):
        return f"the one run of each cell ({_seeds_text(cells)})"
    return f"the mean over the {_seeds_text(cells)}"


def _band_text(cells, what: str = "band") -> str:
    """How a cell's line and band aggregate its seeds."""
    n = {len(items) for items in cells.values()}
    seeds = _seeds_text(cells)
    if n == {1}:
        return f"one run per cell ({seeds}), so no {what}"
    return (f"line: mean over the {seeds}; {what}: minimum to maximum over the seeds"
            + ("" if 1 not in n else f" (none for cells with one seed)"))


def _names(labels) -> str:
    labels = list(labels)
    return ", ".join(f"`{x}`" for x in labels)


def slug(label: str) -> str:
    """A file-name part for a cell label (``static 256`` -> ``static_256``)."""
    s = "".join(c if c.isalnum() else "_" for c in label).strip("_")
    while "__" in s:
        s = s.replace("__", "_")
    if len(s) > 80:  # file names are at most 255 bytes: a long label is cut, kept apart by a hash
        import hashlib
        s = s[:64] + "_" + hashlib.sha1(label.encode()).hexdigest()[:12]
    return s or "cell"


def _pct(v: float) -> str:
    return f"{100 * v:.3g}%"


# ---- styles and layout --------------------------------------------------------------------------
def _palette(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def cell_styles(runs: list[RunData]) -> "OrderedDict[str, dict]":
    """Per cell label, its ``color`` and ``ls``: every figure draws a cell the same way."""
    labels = list(groups(runs))
    colors = _palette(max(len(labels), 1))
    return OrderedDict((label, {"color": colors[i], "ls": LINESTYLES[i % len(LINESTYLES)]})
                       for i, label in enumerate(labels))


def _site_styles(sites) -> "OrderedDict[str, dict]":
    colors = _palette(max(len(sites), 1))
    return OrderedDict((s, {"color": colors[i], "ls": LINESTYLES[i % len(LINESTYLES)]})
                       for i, s in enumerate(sites))


def _figure(width: float, height: float):
    fig = new_figure((width, height))
    fig.set_layout_engine("constrained")
    return fig


def _grid(n: int, width: float = 4.0, height: float = 3.0, legend_slot: bool = True):
    """A constrained-layout figure of ``n`` panels and, with ``legend_slot``, one more slot for
    the legend (see :func:`_legend`): 2 or 3 to a row; returns the figure, the ``n`` Axes and
    the legend's Axes (None without a slot). Slots past the last are never created."""
    slots = n + int(legend_slot)
    cols = 2 if slots in (2, 4) else max(1, min(COLUMNS, slots))
    rows = -(-slots // cols)
    fig = _figure(width * cols, height * rows)
    spec = fig.add_gridspec(rows, cols)
    axes = [fig.add_subplot(spec[i // cols, i % cols]) for i in range(slots)]
    return fig, axes[:n], (axes[n] if legend_slot else None)


#: Most legend entries drawn in a grid's own legend slot; more go right of the panels.
SLOT_ENTRIES = 14


def _legend(fig, slot, handles, title=None):
    """The figure's legend in its own panel ``slot`` when it fits there, else right of the
    panels (the slot then hidden); never over a curve."""
    if slot is not None and len(handles) <= SLOT_ENTRIES:
        slot.axis("off")
        slot.legend(handles=handles, loc="center left", fontsize=SMALL, frameon=False,
                    title=title, title_fontsize=SMALL, borderaxespad=0.0)
        return
    if slot is not None:
        slot.set_visible(False)
    _legend_outside(fig, handles, title=title, ncol=1 if len(handles) <= 24 else 2)


def _legend_outside(fig, handles, title=None, ncol: int = 1):
    """One legend for the whole figure, right of the panels, so it hides no curve."""
    if handles:
        fig.legend(handles=handles, loc="outside right upper", fontsize=SMALL, frameon=False,
                   title=title, title_fontsize=SMALL, ncol=ncol)


#: Characters of a run or site label a figure shows (a title or legend entry); longer labels
#: end in an ellipsis there (report.md names them in full). A 300-character run name would
#: otherwise leave the axes no room (Matplotlib's constrained layout then gives up).
SHOWN_LABEL = 60


def shown(label: str) -> str:
    """``label`` as a figure shows it: at most :data:`SHOWN_LABEL` characters."""
    return label if len(label) <= SHOWN_LABEL else label[:SHOWN_LABEL - 1] + "\u2026"


def _handle(label: str, **style):
    from matplotlib.lines import Line2D

    return Line2D([], [], label=shown(label), lw=style.pop("lw", 1.6), **style)


def _draw_band(ax, x, mean, lo, hi, style, label: str, *, markers: bool = False):
    """The mean line and the min..max band (``gid`` ``mean:LABEL`` and ``band:LABEL``)."""
    ok = np.isfinite(mean)
    if not ok.any():
        return
    kw = dict(marker="o", ms=3) if markers else {}
    ax.plot(x[ok], mean[ok], color=style["color"], ls=style["ls"], lw=1.4, gid=f"mean:{label}",
            label=label, **kw)
    both = ok & np.isfinite(lo) & np.isfinite(hi)
    if both.sum() >= 2 and np.any(hi[both] > lo[both]):
        ax.fill_between(x[both], lo[both], hi[both], color=style["color"], alpha=0.18, lw=0,
                        gid=f"band:{label}")


def _note(ax, text: str, y: float = 0.97):
    ax.text(0.02, y, text, transform=ax.transAxes, ha="left", va="top", fontsize=SMALL,
            bbox=dict(boxstyle="round,pad=0.25", fc="white", ec="0.7", alpha=0.9))


def _text_panel(ax, text: str):
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=FONT,
            wrap=True)


def _log_y_ok(*arrays) -> bool:
    vals = np.concatenate([np.asarray(a, np.float64).reshape(-1) for a in arrays])
    vals = vals[np.isfinite(vals)]
    return vals.size > 0 and bool(np.all(vals > 0)) and vals.max() / vals.min() > 10


# ---- 1. curves ----------------------------------------------------------------------------------
#: Two cells' mean curves "coincide" when they differ by at most this fraction of the panel's
#: value range at every step: they are then indistinguishable in the figure, and it says so.
COINCIDE = 2e-3


def coincident(curves) -> "OrderedDict[str, str]":
    """``label -> earlier label`` for the cells whose mean curve (``curves``: ``label ->
    [(x, y), ...]``, one pair per panel) matches an earlier cell's in every panel to within
    :data:`COINCIDE` of that panel's value range."""
    labels = list(curves)
    n_panels = max((len(v) for v in curves.values()), default=0)
    spans = []
    for p in range(n_panels):
        vals = np.concatenate([np.asarray(v[p][1], np.float64) for v in curves.values()]
                              or [np.zeros(0)])
        vals = vals[np.isfinite(vals)]
        spans.append(float(vals.max() - vals.min()) if vals.size else 0.0)
    out: "OrderedDict[str, str]" = OrderedDict()

    def same(a, b, span) -> bool:
        (xa, ya), (xb, yb) = a, b
        if xa.shape != xb.shape or not np.array_equal(xa, xb):
            return False
        fa, fb = np.isfinite(ya), np.isfinite(yb)
        if not np.array_equal(fa, fb) or not fa.any():
            return False
        return bool(np.all(np.abs(ya[fa] - yb[fa]) <= COINCIDE * span))

    for i, a in enumerate(labels):
        for b in labels[:i]:
            if b not in out and all(same(pa, pb, sp) for pa, pb, sp
                                    in zip(curves[a], curves[b], spans)):
                out[a] = b
                break
    return out


def _legend_label(label: str, twins) -> str:
    return f"{label} (= {twins[label]})" if label in twins else label


def _twins_text(twins) -> str:
    if not twins:
        return ""
    return (" Indistinguishable at this scale (within "
            f"{100 * COINCIDE:g}% of the axis range at every point), so drawn over each other "
            "and marked `(= other)` in the legend: "
            + "; ".join(f"`{a}` = `{b}`" for a, b in twins.items()) + ".")


def _epoch_key(classify: bool) -> str:
    return "test_accuracy" if classify else "test_loss"


def draw_curves(runs: list[RunData], target: float | None = None):
    """Training loss (running mean) and the per-epoch test accuracy (regression: test loss)
    against the step, one line per cell; ``(Figure, matplotlib Figure)``."""
    cells, styles = groups(runs), cell_styles(runs)
    classify = any(r.classify for r in runs)
    n_steps = max(len(r.steps.get("step", ())) for r in runs)
    k = smoothing_window(n_steps)
    key, factor = _epoch_key(classify), (100.0 if classify else 1.0)
    data, nonfinite = OrderedDict(), 0
    for label, items in cells.items():
        series = []
        for r in items:
            loss = np.asarray(r.steps.get("loss", np.zeros(0)), np.float64)
            nonfinite += int(np.sum(~np.isfinite(loss)))
            series.append((r.steps.get("step", np.zeros(0)), running_mean(loss, k)))
        xl, yl = align(series)
        ep = [(np.array([e["step"] for e in r.epochs], np.float64),
               factor * np.array([np.nan if e[key] is None else e[key] for e in r.epochs],
                                 np.float64)) for r in items]
        xe, ye = align(ep)
        data[label] = ((xl, yl), (xe, ye))
    twins = coincident(OrderedDict(
        (label, [(xl, seed_stats(yl)[0]), (xe, seed_stats(ye)[0])])
        for label, ((xl, yl), (xe, ye)) in data.items()))

    fig = _figure(11.5, 4.0)
    a, b = fig.subplots(1, 2, sharex=True)  # one step axis: a lone epoch is not a zoomed-in dot
    dodge = 0.01 * max(n_steps, 1)  # of the step axis, which spans the whole run
    for j, (label, ((xl, yl), (xe, ye))) in enumerate(data.items()):
        st = styles[label]
        mean, lo, hi, _ = seed_stats(yl)
        if label in twins:  # its band is its twin's: draw the line only
            lo = hi = mean
        _draw_band(a, xl, mean, lo, hi, st, label)
        mean, lo, hi, _ = seed_stats(ye)
        ok = np.isfinite(mean)
        if ok.any():
            off = (j - (len(data) - 1) / 2) * dodge
            b.errorbar(xe[ok] + off, mean[ok],
                       yerr=np.vstack([mean[ok] - lo[ok], hi[ok] - mean[ok]]),
                       color=st["color"], ls=st["ls"], lw=1.4, marker="o", ms=4, capsize=3,
                       label=label, gid=f"epochs:{label}")
    losses = [yl for (_, yl), _ in data.values()]
    if losses and _log_y_ok(*losses):
        a.set_yscale("log")
    smooth = "unsmoothed" if k == 1 else f"running mean of {k} steps"
    a.set(xlabel="step", ylabel=f"training loss ({smooth})", title="Training loss")
    what = "test accuracy (%)" if classify else "test loss"
    b.xaxis.set_tick_params(labelbottom=True)
    b.set(xlabel="step (end of epoch)", ylabel=what,
          title="Test accuracy per epoch" if classify else "Test loss per epoch")
    if not classify and _log_y_ok(*[ye for _, (_, ye) in data.values()]):
        b.set_yscale("log")
    handles = [_handle(_legend_label(label, twins), **dict(styles[label])) for label in cells]
    if target is not None:
        t = factor * target
        b.axhline(t, color="0.3", lw=1.0, ls=(0, (1, 2)), gid="target")
        handles.append(_handle(f"target ({t:.4g}{'%' if classify else ''})", color="0.3",
                               ls=(0, (1, 2)), lw=1.0))
    _legend_outside(fig, handles, title="cell")
    band = _band_text(cells)
    caption = (f"Left: training loss per step, {smooth}"
               + (f" (non-finite losses, {nonfinite} step-values, left out of the mean)"
                  if nonfinite else "")
               + f"; {band}. Right: {'test accuracy' if classify else 'test loss'} at the end "
               f"of each epoch; {band.replace('band', 'error bars')}"
               + (f"; the cells' points are offset horizontally (at most "
                  f"{dodge * (len(data) - 1) / 2:.2g} steps) so their error bars do not hide "
                  "each other." if len(data) > 1 else ".")
               + (f" Dotted line: the target ({t:.4g}{'%' if classify else ''})."
                  if target is not None else " No target line (no target given).")
               + _twins_text(twins))
    meta = Figure("curves", "Training loss and test " + ("accuracy" if classify else "loss"),
                  caption)
    return meta, fig


# ---- 2. loss scale ------------------------------------------------------------------------------
def _collapse(steps, scale) -> tuple[int | None, str]:
    """The first step at which ``scale`` stopped being positive and finite, and how."""
    steps, scale = np.asarray(steps), np.asarray(scale, np.float64)
    bad = ~(np.isfinite(scale) & (scale > 0))
    if not bad.any():
        return None, ""
    i = int(np.argmax(bad))
    v = scale[i]
    how = "fell to 0" if v == 0 else "became negative" if v < 0 else f"became {v}"
    return int(steps[i]), how


def _mark_collapses(ax, events, color):
    """Draw each collapse at the bottom of ``ax`` (x: data, y: axes fraction), annotated."""
    for j, (step, how, seeds) in enumerate(events):
        tr = ax.get_xaxis_transform()
        ax.plot([step], [0.03], transform=tr, marker="v", ms=7, color=color, ls="none",
                gid=f"collapse:{step}")
        ax.annotate(f"scale {how} at step {step} ({'seed' if len(seeds) == 1 else 'seeds'} "
                    f"{_ranges(seeds)})", xy=(step, 0.03), xycoords=tr,
                    xytext=(5, 4 + 11 * j), textcoords="offset points", fontsize=SMALL,
                    color=color)


def _scale_text(v: float) -> str:
    lg = math.log2(v)
    return f"{v:g} (2^{lg:g})" if lg == round(lg) else f"{v:g} (2^{lg:.3f})"


def constant_scales(runs: list[RunData]) -> "OrderedDict[str, float] | None":
    """``label -> scale`` when every run keeps one positive, finite global loss scale for its
    whole run and the seeds of a cell agree (the scale is then a fact for the caption, not a
    line); None otherwise."""
    out: "OrderedDict[str, float]" = OrderedDict()
    for label, items in groups(runs).items():
        vals = np.concatenate([np.asarray(r.steps.get("loss_scale", np.zeros(0)), np.float64)
                               for r in items])
        if vals.size == 0 or not np.all(np.isfinite(vals) & (vals > 0)) \
                or np.any(vals != vals[0]):
            return None
        out[label] = float(vals[0])
    return out


def flat_site_scales(runs: list[RunData]) -> "OrderedDict[str, tuple]":
    """``label -> (seed, {site: scale})`` for the cells with a per-site scaler whose every
    site keeps one scale (carried x local) over the whole run of its first seed with records."""
    out: "OrderedDict[str, tuple]" = OrderedDict()
    for label, items in groups(runs).items():
        r = next((r for r in items if r.scales), None)
        if r is None:
            continue
        by_site: "OrderedDict[str, set]" = OrderedDict()
        for row in r.scales:
            by_site.setdefault(row["site"], set()).add((row["carried"] or 0.0)
                                                       * (row["local"] or 0.0))
        if all(len(v) == 1 for v in by_site.values()):
            out[label] = (r.seed, OrderedDict((k, next(iter(v))) for k, v in by_site.items()))
    return out


def _flat_text(flat) -> str:
    return ("Per-site scales constant over the whole run (first seed; not drawn): "
            + "; ".join(f"`{label}` (seed {seed}) " + ", ".join(
                f"{site} {_pow2_text(v)}" for site, v in sites.items())
                for label, (seed, sites) in flat.items()) + ".")


def _pow2_text(v: float) -> str:
    """A scale as ``2^k`` when it is a power of two, else as a number."""
    if v > 0 and math.isfinite(v) and math.frexp(v)[0] == 0.5:
        return f"2^{math.frexp(v)[1] - 1}"
    return f"{v:g}"


def draw_loss_scale(runs: list[RunData]):
    """The global loss scale (log2) per cell, and for each per-site scaler's cell a panel of
    its per-site scales (log2 of carried x local, first seed with records). A global scale
    that never changes in any run is said in the caption instead of drawn as flat lines; None
    when that leaves nothing to draw."""
    all_cells, styles = groups(runs), cell_styles(runs)
    per_site = OrderedDict((label, next(r for r in items if r.scales))
                           for label, items in all_cells.items() if any(r.scales for r in items))
    # A per-site scaler multiplies no loss: its cells have no global scale to draw.
    cells = OrderedDict((k, v) for k, v in all_cells.items() if k not in per_site)
    flat = flat_site_scales(runs)  # per-site cells whose sites keep one scale: said, not drawn
    for label in flat:
        del per_site[label]
    constant = constant_scales([r for r in runs if r.label in cells]) if cells else {}
    if constant is not None and not per_site:
        return None
    n = int(constant is None) + len(per_site)
    fig = _figure(9.5, 3.4 * n)
    axes = list(fig.subplots(n, 1, squeeze=False)[:, 0])
    notes, collapsed_any, twins = [], False, {}
    if constant is None:
        ax = axes.pop(0)
        data = OrderedDict()
        for label, items in cells.items():
            series, events = [], OrderedDict()
            for r in items:
                s, sc = r.steps.get("step", np.zeros(0)), r.steps.get("loss_scale", np.zeros(0))
                series.append((s, safe_log2(sc)))
                step, how = _collapse(s, sc)
                if step is not None:
                    events.setdefault((step, how), []).append(r.seed)
            x, y = align(series)
            data[label] = (x, seed_stats(y), events)
        twins = coincident(OrderedDict((label, [(x, st[0])])
                                       for label, (x, st, _) in data.items()))
        for label, (x, (mean, lo, hi, _), events) in data.items():
            if label in twins:
                lo = hi = mean
            _draw_band(ax, x, mean, lo, hi, styles[label], label)
            if events:
                collapsed_any = True
                _mark_collapses(ax, [(st, how, seeds) for (st, how), seeds in events.items()],
                                styles[label]["color"])
                notes += [f"`{label}`: the scale {how} at step {st} "
                          f"(seed{'s' if len(sd) > 1 else ''} {_ranges(sd)})"
                          for (st, how), sd in events.items()]
        ax.set(xlabel="step", ylabel="log2 loss scale", title="Global loss scale")
        ax.legend(handles=[_handle(_legend_label(label, twins), **dict(styles[label]))
                           for label in cells],
                  loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=SMALL, frameon=False,
                  title="cell", title_fontsize=SMALL)
    for ax, (label, r) in zip(axes, per_site.items()):
        by_site = OrderedDict()
        for row in r.scales:
            by_site.setdefault(row["site"], []).append(
                (row["step"], (row["carried"] if row["carried"] is not None else np.nan)
                 * (row["local"] if row["local"] is not None else np.nan)))
        sst = _site_styles(list(by_site))
        for site, pts in by_site.items():
            st, sc = (np.array(v, np.float64) for v in zip(*pts))
            lg = safe_log2(sc)
            ok = np.isfinite(lg)
            ax.plot(st[ok], lg[ok], lw=1.2, label=site, gid=f"site-scale:{site}", **sst[site])
            step, how = _collapse(st, sc)
            if step is not None:
                collapsed_any = True
                _mark_collapses(ax, [(step, how, [r.seed])], sst[site]["color"])
                notes.append(f"`{label}` site `{site}`: the scale {how} at step {step}")
        ax.set(xlabel="step", ylabel="log2 (carried x local)",
               title=f"{label} (seed {r.seed}): per-site scales")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=SMALL, frameon=False,
                  title="site", title_fontsize=SMALL, ncol=1 if len(by_site) <= 16 else 2)
    if not cells:
        caption = ""
    elif constant is None:
        caption = ("Top: log2 of the global loss scale (the factor the loss is multiplied by "
                   f"before the backward pass) per step, unsmoothed; {_band_text(cells)}."
                   + _twins_text(twins))
    else:
        caption = ("The global loss scale (the factor the loss is multiplied by before the "
                   "backward pass) is constant in every run, so it is not drawn: "
                   + "; ".join(f"`{k}` {_scale_text(v)}" for k, v in constant.items()) + ".")
    scaled_per_site = [k for k in all_cells if k not in cells]
    if scaled_per_site:
        caption += (" Cells with a per-site scaler (" + _names(scaled_per_site)
                    + ") have no global scale.")
    if flat:
        caption += " " + _flat_text(flat)
    if per_site:
        caption += (f" {'Below' if constant is None else 'Drawn'}: one panel per cell with a "
                    f"per-site scaler ({_names(per_site)}; its first seed with records): per "
                    "GEMM site, log2 of the scale of the data gradient below the site (carried "
                    "x local), unsmoothed.")
    elif not flat:
        caption += " No cell uses a per-site scaler."
    if collapsed_any:
        caption += (" A scale that is no longer positive and finite has no log2: it is left "
                    "out of the line and marked by a triangle at the bottom of the panel: "
                    + "; ".join(notes) + ".")
    return Figure("loss_scale", "Loss scales", caption), fig


# ---- 3. skipped steps ---------------------------------------------------------------------------
def _skipped(r: RunData) -> np.ndarray:
    return np.asarray(r.steps.get("skipped", np.zeros(0)), np.float64)


def no_skipped(runs: list[RunData]) -> bool:
    """True when no run skipped a step (no skipped-steps figure is drawn)."""
    return not any(np.nansum(_skipped(r)) > 0 for r in runs)


def draw_skipped(runs: list[RunData]):
    """Cumulative skipped steps per cell that skipped any; None when no run skipped a step."""
    if no_skipped(runs):
        return None
    cells, styles = groups(runs), cell_styles(runs)
    fig = _figure(8.5, 3.6)
    ax = fig.subplots()
    drawn, clean = [], []
    for label, items in cells.items():
        if not any(np.nansum(_skipped(r)) > 0 for r in items):
            clean.append(label)
            continue
        x, y = align([(r.steps["step"], np.cumsum(np.nan_to_num(_skipped(r)))) for r in items])
        mean, lo, hi, _ = seed_stats(y)
        _draw_band(ax, x, mean, lo, hi, styles[label], label)
        drawn.append(label)
    ax.set(xlabel="step", ylabel="skipped steps (cumulative)", title="Skipped steps")
    ax.legend(handles=[_handle(label, **dict(styles[label])) for label in drawn],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=SMALL, frameon=False,
              title="cell", title_fontsize=SMALL)
    caption = ("Cumulative number of skipped steps (steps whose parameter gradients held Inf "
               f"or NaN, so the optimizer did not update), unsmoothed; {_band_text(cells)}."
               + (f" Not drawn: {_names(clean)}, which skipped no step in any seed."
                  if clean else ""))
    return Figure("skipped", "Skipped steps", caption), fig


# ---- 4. per-layer underflow ---------------------------------------------------------------------
def _all_overflowed(d) -> np.ndarray:
    """Per step of a site: True where every non-zero value overflowed or became NaN."""
    live = d["total"] - d["zeros"]
    return (live > 0) & (d["overflow"] + d["nan"] >= live)


def _has_shadow(items) -> bool:
    return any(np.any(np.nan_to_num(d["shadow_total"]) > 0)
               for r in items for d in r.site_steps().values())


def _underflow_series(items, shadow: bool, k: int):
    """Per site: ``(steps, mean, lo, hi)`` of the cell's underflow over the seeds, and the number
    of site-steps left out because every value there overflowed."""
    per_site, lost = OrderedDict(), 0
    for r in items:
        for site, d in r.site_steps().items():
            full = _all_overflowed(d)
            lost += int(full.sum())
            if shadow:
                rate = ratio(d["shadow_underflow"], d["shadow_total"])
                rate[full] = np.nan
            else:
                rate = ratio(d["underflow"], d["total"] - d["zeros"])
                rate[full] = np.nan
                rate = running_mean(rate, k)
            per_site.setdefault(site, []).append((d["step"], rate))
    out = OrderedDict()
    for site, series in per_site.items():
        x, y = align(series)
        out[site] = (x, *seed_stats(y)[:3])
    return out, lost


def _grad_cells(runs):
    return OrderedDict((label, items) for label, items in groups(runs).items()
                       if any(r.site_steps() for r in items))


def _underflow_panels(runs: list[RunData]):
    """``(cells, panels, zero, k)`` of the underflow figure: the cells with activation-gradient
    casts; per cell to draw ``(shadow?, per-site series, site-steps left out, peak)``; the cells
    with no underflow anywhere (or nothing measured); the flushed fraction's window."""
    cells = _grad_cells(runs)
    n_steps = max((len(r.steps.get("step", ())) for r in runs), default=0)
    k = smoothing_window(n_steps)
    panels, zero = OrderedDict(), []
    for label, items in cells.items():
        shadow = _has_shadow(items)
        series, lost = _underflow_series(items, shadow, k)
        peak = max((np.nanmax(m) if np.isfinite(m).any() else -1.0
                    for _, m, _, _ in series.values()), default=-1.0)
        if peak <= 0 and not lost:
            zero.append(label)
        else:
            panels[label] = (shadow, series, lost, peak)
    return cells, panels, zero, k


def draw_underflow(runs: list[RunData]):
    """Per cell with activation-gradient casts, a panel of the per-layer underflow over the
    steps (mean over seeds): the shadow underflow where shadow steps exist, else the kernel's
    flushed fraction. None without any activation-gradient cast site or any underflow."""
    cells, panels, zero, k = _underflow_panels(runs)
    if not panels:
        return None
    sites = list(OrderedDict.fromkeys(s for _, series, _, _ in panels.values() for s in series))
    sst = _site_styles(sites)
    fig, axes, slot = _grid(len(panels), 4.0, 3.1)
    for ax, (label, (shadow, series, lost, peak)) in zip(axes, panels.items()):
        if peak < 0:
            _text_panel(ax, "every activation-gradient value\noverflowed at every step:\n"
                            "underflow is not measurable")
            ax.set_title(shown(label))
            continue
        for site, (x, mean, lo, hi) in series.items():
            ok = np.isfinite(mean)
            ax.plot(x[ok], 100 * mean[ok], lw=1.1, label=site, gid=f"underflow:{site}",
                    marker="o" if shadow else None, ms=2.5, **sst[site])
        ax.set(title=shown(label), xlabel="step",
               ylabel="shadow underflow (%)" if shadow else
               ("flushed, kernel (%)" if k == 1 else f"flushed, kernel (%; mean of {k} steps)"))
        top = ax.get_ylim()[1]
        ax.set_ylim(-0.03 * top, top)  # a layer at 0% stays visible above the axis
        if lost:
            _note(ax, f"{lost} site-steps where every value\noverflowed: not drawn")
    _legend(fig, slot, [_handle(s, **dict(sst[s])) for s in sites], title="layer (cast site)")
    measures = {shadow for shadow, *_ in panels.values()}
    shadow_cells = [lb for lb, (sh, *_) in panels.items() if sh]
    kernel_cells = [lb for lb, (sh, *_) in panels.items() if not sh]
    parts = []
    if shadow_cells:
        parts.append(("Shadow underflow" if len(measures) == 1 else
                      f"For {_names(shadow_cells)}: shadow underflow")
                     + " (the `underflow` metric: per layer, on the shadow steps, the "
                     "activation-gradient elements non-zero in the float32 recomputation but "
                     "zero in the emulated step, as a percentage of those non-zero in "
                     "float32), one point per shadow step, unsmoothed")
    if kernel_cells:
        smooth = "unsmoothed" if k == 1 else f"running mean of {k} steps"
        parts.append(("Kernel flushed fraction" if len(measures) == 1 else
                      f"For {_names(kernel_cells)} (no shadow steps): kernel flushed fraction")
                     + " (the `flushed` metric: per cast site, the non-zero inputs of the cast "
                     f"that rounding turned into zero, as a percentage of its non-zero inputs), "
                     f"{smooth}")
    caption = ("One panel per cell, one line per layer (activation-gradient cast site). "
               + ". ".join(parts) + f". Each line is {_mean_over(cells)} at each step"
               + ("." if all(len(v) == 1 for v in cells.values()) else
                  " (no band, for readability)."))
    if any(lost for _, _, lost, _ in panels.values()):
        caption += (" Site-steps where every non-zero value overflowed or became NaN are left "
                    "out (their underflow would read 0%), and counted in the panel.")
    if zero:
        caption += f" Not drawn: {_names(zero)}, with no underflow at any layer in any seed."
    absent = [lb for lb in groups(runs) if lb not in cells]
    if absent:
        caption += (f" No panel for {_names(absent)}: no activation-gradient cast (float32 "
                    "gradients), so no underflow.")
    return Figure("underflow", "Per-layer gradient underflow over training", caption), fig


# ---- 5. overflow and NaN ------------------------------------------------------------------------
def no_overflow(runs: list[RunData]) -> bool:
    """True when no value overflowed or became NaN at any cast site of any run."""
    return not any(e["overflow"] or e["nan"] for r in runs for e in r.events)


def draw_overflow(runs: list[RunData]):
    """Per cell with any overflow or NaN, the per-site rates over the steps (log y, mean over
    seeds); None when no run had any."""
    if no_overflow(runs):
        return None
    panels, sites, clean = OrderedDict(), [], []
    for label, items in groups(runs).items():
        acc = OrderedDict()
        for r in items:
            for site, d in r.site_steps(role=None).items():
                for key in ("overflow", "nan"):
                    acc.setdefault((site, key), []).append((d["step"], ratio(d[key], d["total"])))
        lines = OrderedDict()
        for (site, key), series in acc.items():
            x, y = align(series)
            mean = seed_stats(y)[0]
            if np.nanmax(np.where(np.isfinite(mean), mean, 0.0), initial=0.0) > 0:
                lines[(site, key)] = (x, mean)
        if not lines:
            clean.append(label)
            continue
        panels[label] = lines
        sites += [s for s in dict.fromkeys(s for s, _ in lines) if s not in sites]
    sst = _site_styles(sites)
    # hollow markers of different shapes: sites at the same rate (all at 100%) stay visible
    marker = {s: MARKERS[i % len(MARKERS)] for i, s in enumerate(sites)}
    fig, axes, slot = _grid(len(panels), 4.2, 3.2)
    for ax, (label, lines) in zip(axes, panels.items()):
        for (site, key), (x, mean) in lines.items():
            ok = np.isfinite(mean) & (mean > 0)  # a log axis: steps without events are absent
            ax.plot(x[ok], 100 * mean[ok], color=sst[site]["color"],
                    ls="-" if key == "overflow" else "--", marker=marker[site], ms=5,
                    mfc="none", mew=1.0, lw=1.0, gid=f"{key}:{site}")
        ax.set_yscale("log")
        ax.set_ylim(top=150)  # a rate is at most 100%
        ax.set(title=shown(label), xlabel="step", ylabel="values rounded (%)")
    handles = [_handle(s, color=sst[s]["color"], marker=marker[s], ms=5, mfc="none", lw=0)
               for s in sites]
    handles += [_handle("overflow", color="0.3", ls="-"), _handle("NaN", color="0.3", ls="--")]
    _legend(fig, slot, handles, title="cast site [role]")
    caption = ("One panel per cell: per cast site and role (forward activations, weights and "
               "inputs as well as gradients), the percentage of the values rounded at that "
               "site and step whose rounding overflowed (to Inf, NaN or the saturated maximum; "
               "solid) or gave NaN from a non-NaN input (dashed); a colour and marker per "
               "site; log axis, "
               f"unsmoothed, {_mean_over(groups(runs))} at each step. Only "
               "sites with an event are drawn; a step without one has no point (log axis). "
               "100% means every value rounded there overflowed.")
    if clean:
        caption += f" Not drawn: {_names(clean)}, with no overflow or NaN in any seed."
    return Figure("overflow", "Overflow and NaN per cast site", caption), fig


# ---- 6. exponent histograms ---------------------------------------------------------------------
def _grad_rounding(config: dict) -> str | None:
    from fpsim.training.precision import policy

    cast = policy(config["policy"]).casts["activation_grads"]
    return None if cast is None else getattr(cast, "rounding", None)


def _shifted_outline(pieces) -> tuple[np.ndarray, np.ndarray]:
    """``(edges, heights)`` of the outline of unit-width bins ``[a, a+1)`` with counts
    (``pieces``: ``(a, count)``): the height of each interval between consecutive edges is the
    sum of the counts of the bins covering it (a count per binade, as the bars)."""
    a = np.array([p[0] for p in pieces], np.float64)
    c = np.array([p[1] for p in pieces], np.float64)
    edges = np.unique(np.concatenate([a, a + 1]))
    mids = (edges[:-1] + edges[1:]) / 2
    cover = (a[None, :] <= mids[:, None]) & (mids[:, None] < a[None, :] + 1)
    return edges, cover.astype(np.float64) @ c


def site_histograms(r: RunData) -> "OrderedDict[str, dict]":
    """Per activation-gradient site of ``r``: the cast's input exponent histogram summed over
    the recorded steps (``k``, ``counts``: integer binades, as scaled), the pieces of the same
    values unscaled (``pieces``: ``(k - log2(scale), count)`` per step and binade), the steps
    summed, the steps whose scale was unusable (``no_scale``) and whether any shift was not an
    integer (``fractional``)."""
    scale_of = {(e["step"], e["site"], e["direction"]): e["scale"] for e in r.events
                if e["role"] == GRAD_ROLE}
    out: "OrderedDict[str, dict]" = OrderedDict()
    for h in r.hists:
        if h["role"] != GRAD_ROLE:
            continue
        d = out.setdefault(h["site"], {"sum": {}, "pieces": {}, "steps": 0, "no_scale": 0,
                                       "fractional": False, "zeros": 0})
        d["steps"] += 1
        d["zeros"] += int(h["zeros"] or 0)
        counts = np.asarray(h["counts"], np.int64)
        if counts.size == 0 or not counts.any():
            continue
        ks = h["k_min"] + np.arange(counts.size)
        for kk, c in zip(ks, counts):
            if c:
                d["sum"][int(kk)] = d["sum"].get(int(kk), 0) + int(c)
        scale = scale_of.get((h["step"], h["site"], h["direction"]))
        shift = safe_log2(np.nan if scale is None else scale)
        if not np.isfinite(shift):
            d["no_scale"] += 1
            continue
        shift = float(shift)
        d["fractional"] |= shift != math.floor(shift)
        for kk, c in zip(ks, counts):
            if c:
                key = float(kk) - shift
                d["pieces"][key] = d["pieces"].get(key, 0) + int(c)
    for d in out.values():
        ks = np.array(sorted(d["sum"]), np.int64)
        d["k"], d["counts"] = ks, np.array([d["sum"][k] for k in ks], np.int64)
        d["pieces"] = sorted(d["pieces"].items())
    return OrderedDict((s, d) for s, d in out.items() if d["k"].size)


def threshold_lines(fmt) -> list[tuple[str, str, float, str, str]]:
    """``(gid, legend text, log2 value, colour, linestyle)`` of the gradient format's
    flush-to-zero threshold under round-to-nearest-even (half its smallest positive value:
    ``min_subnormal / 2``, or ``min_normal / 2`` without subnormals), min normal and max."""
    if fmt is None:
        return []
    out = []
    ftz = ftz_threshold(fmt)
    if ftz is not None:
        out.append(("ftz", f"flush to 0 at/below (RNE): 2^{math.log2(ftz):g}", math.log2(ftz),
                    "#d62728", "--"))
    out.append(("min_normal", f"min normal: 2^{math.log2(fmt.min_normal):g}",
                math.log2(fmt.min_normal), "#ff7f0e", ":"))
    out.append(("max", f"max: {fmt.max:g} (2^{math.log2(fmt.max):.3f})", math.log2(fmt.max),
                "#9467bd", "-"))
    return out


def draw_histograms(runs: list[RunData]) -> list:
    """Per cell with activation-gradient histograms (first seed that has them), one panel per
    site: the exponent histogram of the cast's inputs as scaled (bars over ``[k, k+1)``) and
    the same values unscaled (step outline), with the gradient format's thresholds."""
    out, used = [], set()
    for label, items in groups(runs).items():
        r = next((x for x in items if any(h["role"] == GRAD_ROLE for h in x.hists)), None)
        if r is None:
            continue
        hists = site_histograms(r)
        if not hists:
            continue
        name = "hist_" + slug(label)
        i = 2
        while name in used:
            name, i = f"hist_{slug(label)}_{i}", i + 1
        used.add(name)
        out.append(_draw_cell_histograms(r, label, name, hists))
    return out


def _draw_cell_histograms(r: RunData, label: str, name: str, hists):
    fmt = r.fmt
    lines = threshold_lines(fmt)
    fig, axes, slot = _grid(len(hists), 4.2, 3.2)
    # One x range for every panel: the bars and the outline, one binade of margin, and each
    # threshold line within REACH binades of them (a farther one would squash the bars; it is
    # marked by an arrow at the edge instead).
    # (a list for min / max: a site with no scaled pieces leaves one number, which min() alone
    # would take for an iterable)
    lo = min(min([float(d["k"][0]), *(p[0] for p in d["pieces"][:1])]) for d in hists.values())
    hi = max(max([float(d["k"][-1]), *(p[0] for p in d["pieces"][-1:])]) + 1
             for d in hists.values())
    lo, hi = lo - 1, hi + 1
    for _, _, x, _, _ in lines:
        if lo - REACH <= x <= hi + REACH:
            lo, hi = min(lo, math.floor(x) - 1), max(hi, math.ceil(x) + 1)
    fractional = any(d["fractional"] for d in hists.values())
    beyond = OrderedDict()
    for ax, (site, d) in zip(axes, hists.items()):
        left, widths, heights = binade_bars(d["k"], d["counts"])
        bars = ax.bar(left, heights, width=widths, align="edge", color="#8da0cb",
                      edgecolor="white", linewidth=0.4, label="as scaled")
        for p in bars:
            p.set_gid("scaled")
        top = float(heights.max())
        if d["pieces"]:
            edges, h = _shifted_outline(d["pieces"])
            ax.stairs(h, edges, color="k", lw=1.0, gid="unscaled", label="unscaled")
            top = max(top, float(h.max()))
        off = {"left": 0, "right": 0}
        for gid, text, x, color, ls in lines:
            if lo <= x <= hi:
                ax.axvline(x, color=color, ls=ls, lw=1.3, gid=gid)
                continue
            side = "left" if x < lo else "right"
            beyond[gid] = text.split(":")[0]
            short = text.split(" (")[0] if gid == "max" else text
            ax.annotate(f"\u2190 {short}" if side == "left" else f"{short} \u2192",
                        xy=(0.01 if side == "left" else 0.99,
                        0.97 - 0.08 * off[side]), xycoords="axes fraction", ha=side, va="top",
                        fontsize=SMALL, color=color, gid=f"{gid}-offaxis")
            off[side] += 1
        ax.set_yscale("log")
        ax.set_ylim(0.5, top * 4)  # a bar of count 1 stays visible; room for the arrows
        ax.set_xlim(lo, hi)
        pow2_axis(ax.xaxis, lo, hi)
        ax.set(title=site, xlabel="|gradient| (log2 axis)",
               ylabel=f"count ({d['steps']} steps summed)")
    handles = [_patch("as scaled: the cast's inputs", "#8da0cb"),
               _handle("unscaled: inputs / their scale", color="k", lw=1.0)]
    handles += [_handle(text, color=color, ls=ls, lw=1.3) for _, text, _, color, ls in lines]
    _legend(fig, slot, handles)
    fmt_name = "float32" if fmt is None else (fmt.name or fmt.spec)
    fig.suptitle(f"{shown(label)} (seed {r.seed}): activation-gradient exponent histograms, "
                 f"inputs of the cast to {fmt_name}")
    steps = sorted({h["step"] for h in r.hists if h["role"] == GRAD_ROLE})
    rounding = _grad_rounding(r.config)
    no_scale = sum(d["no_scale"] for d in hists.values())
    which = _ranges(steps) if len(steps) <= 12 else f"steps {steps[0]} to {steps[-1]}"
    caption = (f"Cell `{label}`, seed {r.seed} (the cell's first seed), one panel per "
               "activation-gradient cast site. Bars: the exponent histogram of the INPUTS of "
               f"the cast to {fmt_name} (the scaled gradient values before rounding), summed over "
               f"the {len(steps)} recorded steps ({which}); "
               "bar k spans [2^k, 2^(k+1)), log count axis. Outline: the same values divided by "
               "the loss scale they carried at that site and step (each binade shifted by "
               "-log2(scale))."
               + (" Some scales are not powers of two, so a shifted binade straddles two "
                  "binades; the outline then gives each log2 interval the counts of every "
                  "shifted binade covering it." if fractional else
                  " Every scale is a power of two, so the outline's bins are exact binades.")
               + (f" {no_scale} site-steps whose scale was 0 or not finite are left out of "
                  "the outline (they are in the bars)." if no_scale else "")
               + " Zeros are not in the histogram.")
    if lines:
        caption += (f" Vertical lines: {fmt_name}'s flush-to-zero threshold under "
                    "round-to-nearest-even (magnitudes at or below half the smallest positive "
                    f"value{'' if fmt.subnormals else ' (min normal: no subnormals)'} round "
                    "to 0; dashed), min normal (dotted) and max (solid)."
                    + (f" Beyond the plotted range, so marked by an arrow at the panel's edge: "
                       + ", ".join(beyond.values()) + "." if beyond else ""))
        if rounding and rounding.lower() != "rne":
            caption += (f" This cast rounds with `{rounding}`, not RNE: the flush threshold "
                        "line is the RNE one.")
    return Figure(name, f"Exponent histograms, {label} (inputs of the cast)", caption,
                  cell=label), fig


def _patch(label, color):
    from matplotlib.patches import Patch

    return Patch(color=color, label=label)


# ---- all of it ----------------------------------------------------------------------------------
def omitted(runs: list[RunData]) -> "OrderedDict[str, str]":
    """Figure name -> one sentence on why :func:`write_all` does not draw it (for the report:
    ``skipped`` -> "No run skipped a step."). Per-cell histograms are named ``hist_<cell>``."""
    out: "OrderedDict[str, str]" = OrderedDict()
    if no_skipped(runs):
        out["skipped"] = "No run skipped a step."
    flat = flat_site_scales(runs)
    global_runs = [r for r in runs if not r.scales and r.label not in flat]
    constant = constant_scales(global_runs) if global_runs else OrderedDict()
    varying_site = any(r.scales for r in runs if r.label not in flat)
    if constant is not None and not varying_site:
        out["loss_scale"] = " ".join(
            ([("The global loss scale is constant in every run (no figure): "
               + "; ".join(f"`{k}` {_scale_text(v)}" for k, v in constant.items()) + ".")]
             if constant else []) + ([_flat_text(flat)] if flat else []))
    cells, panels, _, _ = _underflow_panels(runs)
    if not cells:
        out["underflow"] = "No run casts activation gradients (float32 gradients): no underflow."
    elif not panels:
        out["underflow"] = "No activation-gradient value underflowed in any run."
    if no_overflow(runs):
        out["overflow"] = "No value overflowed or became NaN at any cast site in any run."
    # -- scaled formats (fpsim.analysis.scaled_plots): nothing for studies without them --
    from fpsim.analysis import scaled_plots
    out.update(scaled_plots.omitted(runs))
    # -- end scaled formats --
    for label, items in groups(runs).items():
        if not any(site_histograms(r) for r in items):
            out["hist_" + slug(label)] = (
                f"`{label}`: no activation-gradient histogram recorded"
                + (" (float32 gradients are not cast)." if all(r.fmt is None for r in items)
                   else "."))
    return out


def draw_all(runs: list[RunData], target: float | None = None) -> list:
    """Every figure with something to show, as ``(Figure, matplotlib Figure)`` pairs (drawn,
    not saved; for tests and for callers that add to the figures)."""
    import matplotlib

    if not runs:
        return []
    from matplotlib.ticker import MaxNLocator

    with matplotlib.rc_context(_RC):
        from fpsim.analysis import scaled_plots  # s2fp8_stats, tensor_scales, scale_range

        drawn = [draw_curves(runs, target), draw_loss_scale(runs), draw_skipped(runs),
                 draw_underflow(runs), draw_overflow(runs), *scaled_plots.draw_all(runs),
                 *draw_histograms(runs)]
    drawn = [d for d in drawn if d is not None]
    for _, fig in drawn:
        for ax in fig.axes:
            if ax.get_xlabel().startswith("step"):  # steps are whole numbers
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return drawn


def write_all(runs: list[RunData], out_dir: str, target: float | None = None,
              images=("png", "svg")) -> list[Figure]:
    """Draw every figure with something to show and write ``out_dir/NAME.png`` (at :data:`DPI`)
    and ``out_dir/NAME.svg`` for each (``images``: the kinds to write); returns the
    :class:`Figure` of each, in report order (curves, loss_scale, skipped, underflow, overflow,
    s2fp8_stats, tensor_scales, scale_range, hist_<cell>...). :func:`omitted` says what is
    left out."""
    import matplotlib

    os.makedirs(out_dir, exist_ok=True)
    out = []
    with matplotlib.rc_context(_RC):
        for meta, fig in draw_all(runs, target):
            save_figure(fig, os.path.join(out_dir, meta.name + ".png"), dpi=DPI, kinds=images)
            out.append(meta)
    return out
