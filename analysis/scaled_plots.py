"""The figures of a study's scaled formats, drawn from the ``tensor_scales`` rows of the run
records (:attr:`~fpsim.analysis.runs.RunData.tensor_scales`): per step and cast site of a scaled
format, the tensor's amax, the per-tensor encode scale (current / delayed scaling), S2FP8's
``alpha`` and ``beta``, and the tiles whose scale left the scale format's range.

- :func:`draw_s2fp8` (``s2fp8_stats``): S2FP8's alpha and beta per site over the steps.
- :func:`draw_tensor_scales` (``tensor_scales``): amax and the per-tensor scale (log2) per site.
- :func:`draw_scale_range` (``scale_range``): the fraction of tiles whose scale under- or
  overflowed, or that held Inf/NaN, per cell and role.

Each returns ``(Figure, matplotlib Figure)``, or None when no run has the data; :func:`omitted`
says why in a sentence, and only for studies that use scaled formats at all (a study without
them gets no text from here). The conventions are those of :mod:`fpsim.analysis.plots`: a cell
keeps its line style in every figure, a site its colour within a figure, lines are the mean
over a cell's seeds at each step, and every guard against ``log2(0)`` is a mask.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from fpsim.analysis.plots import (Figure, _figure, _grid, _handle, _legend, _legend_outside,
                                  _mean_over, _names, _palette, _seeds_text, _site_styles, align,
                                  cell_styles, ratio, safe_log2, seed_stats, shown)
from fpsim.analysis.runs import RunData, groups

#: Role groups, one row of panels each: what the forward pass casts, and the gradients.
ROLE_GROUPS = OrderedDict([("forward", ("activation", "weight", "input")),
                           ("gradients", ("activation-grad", "weight-grad"))])
_GROUP_TEXT = {"forward": "forward casts (activations, weights, inputs)",
               "gradients": "gradient casts (activation and weight gradients)"}
#: The three out-of-range counts of a tile, as (column, legend text, line style, marker).
RANGE_KINDS = (("scale_underflow", "scale underflowed", "-", "v"),
               ("scale_overflow", "scale overflowed", "--", "^"),
               ("nonfinite", "Inf/NaN in the tile", ":", "x"))


def role_group(row: dict) -> str:
    """``forward`` or ``gradients`` for a ``tensor_scales`` row (an unknown role goes by its
    direction)."""
    for group, roles in ROLE_GROUPS.items():
        if row["role"] in roles:
            return group
    return "forward" if row.get("direction") == "forward" else "gradients"


def _site_name(row: dict) -> str:
    return f"{row['site']} [{row['role']}]"


def _per_site(r: RunData, key: str, group: str, transform=None,
              need: str | None = None) -> "OrderedDict[str, tuple]":
    """Per ``site [role]`` of ``group``: ``(steps, values)`` of column ``key`` of the run's rows
    that have it (and column ``need``), the mean of a step's rows where a tensor was cast more
    than once in it (``transform``, e.g. :func:`safe_log2`, applied to each row first)."""
    acc: "OrderedDict[str, dict]" = OrderedDict()
    for row in r.tensor_scales:
        if row[key] is None or row[need or key] is None or role_group(row) != group:
            continue
        v = float(row[key])
        acc.setdefault(_site_name(row), {}).setdefault(int(row["step"]), []).append(v)
    out = OrderedDict()
    for name, by_step in acc.items():
        steps = np.array(sorted(by_step), np.float64)
        vals = np.array([by_step[int(s)] for s in steps], dtype=object)
        y = np.full(steps.size, np.nan)
        for i, vs in enumerate(vals):
            v = np.asarray(vs, np.float64)
            if transform is not None:
                v = transform(v)
            v = v[np.isfinite(v)]
            if v.size:
                y[i] = v.mean()
        out[name] = (steps, y)
    return out


def _cell_lines(items, key: str, group: str, transform=None,
                need: str | None = None) -> "OrderedDict[str, tuple]":
    """Per ``site [role]``: ``(steps, mean over the seeds)`` of the cell's runs ``items``."""
    per: "OrderedDict[str, list]" = OrderedDict()
    for r in items:
        for name, series in _per_site(r, key, group, transform, need).items():
            per.setdefault(name, []).append(series)
    out = OrderedDict()
    for name, series in per.items():
        x, y = align(series)
        out[name] = (x, seed_stats(y)[0])
    return out


def _has(r: RunData, key: str) -> bool:
    return any(row[key] is not None for row in r.tensor_scales)


def _cells_with(runs, key: str) -> "OrderedDict[str, list]":
    return OrderedDict((label, items) for label, items in groups(runs).items()
                       if any(_has(r, key) for r in items))


def _draw_site_panels(runs, cells, columns, title: str, need: str | None = None,
                      extra=()):
    """The rows (role groups) x ``columns`` panels of a per-site figure: ``columns`` are
    ``(key, transform, panel title, y label)``, drawn from the rows that have column ``need``
    (default: the panel's own). Returns the figure, the role groups drawn and the panels' axes
    by ``(group, key)``. ``extra``: legend handles after the sites'."""
    data = OrderedDict()
    for group in ROLE_GROUPS:
        per_col = OrderedDict()
        for key, transform, _, _ in columns:
            per_col[key] = OrderedDict((label, _cell_lines(items, key, group, transform, need))
                                       for label, items in cells.items())
        if any(lines for per_cell in per_col.values() for lines in per_cell.values()):
            data[group] = per_col
    sites = list(OrderedDict.fromkeys(
        name for per_col in data.values() for per_cell in per_col.values()
        for lines in per_cell.values() for name in lines))
    sst = _site_styles(sites)
    cst = cell_styles(runs)
    several = len(cells) > 1
    fig = _figure(4.6 * len(columns) + 2.2, 3.1 * len(data))
    grid = fig.subplots(len(data), len(columns), squeeze=False)
    axes = OrderedDict()
    for i, (group, per_col) in enumerate(data.items()):
        for j, (key, _, panel, ylabel) in enumerate(columns):
            ax = grid[i, j]
            axes[(group, key)] = ax
            for label, lines in per_col[key].items():
                for name, (x, mean) in lines.items():
                    ok = np.isfinite(mean)
                    if not ok.any():
                        continue
                    style = dict(color=sst[name]["color"],
                                 ls=cst[label]["ls"] if several else sst[name]["ls"])
                    ax.plot(x[ok], mean[ok], lw=1.2, marker="o" if ok.sum() == 1 else None,
                            ms=3, gid=f"{key}:{label}:{name}", **style)
            ax.set(title=f"{group.capitalize()}: {panel}", xlabel="step", ylabel=ylabel)
            _step_range(ax, {row["step"] for items in cells.values() for r in items
                             for row in r.tensor_scales})
    handles = [_handle(s, color=sst[s]["color"], ls="-" if several else sst[s]["ls"])
               for s in sites]
    if several:
        handles += [_handle(f"cell: {label}", color="0.3", ls=cst[label]["ls"])
                    for label in cells]
    handles += list(extra)
    _legend_outside(fig, handles, title="cast site [role]",
                    ncol=1 if len(handles) <= 24 else 2)
    fig.suptitle(title)
    return fig, list(data), axes


def _step_range(ax, steps):
    """The panel's x axis over ``steps`` (the whole recorded run, not just the points drawn:
    a lone point is not a zoomed-in dot)."""
    steps = np.asarray(list(steps), np.float64)
    if steps.size:
        lo, hi = float(steps.min()), float(steps.max())
        pad = 0.03 * (hi - lo) if hi > lo else 0.5
        ax.set_xlim(lo - pad, hi + pad)


def _absent_text(runs, cells, what: str) -> str:
    absent = [label for label in groups(runs) if label not in cells]
    return f" No line for {_names(absent)}: {what}." if absent else ""


def _groups_text(drawn) -> str:
    rows = [_GROUP_TEXT[g] for g in drawn]
    if len(rows) == 1:
        missing = [g for g in ROLE_GROUPS if g not in drawn]
        return (f"One row: {rows[0]}; the {_GROUP_TEXT[missing[0]].split(' (')[0]} have no "
                "such rows")
    return f"Top row: {rows[0]}; bottom row: {rows[1]}"


def _no_band(cells) -> str:
    return "" if all(len(items) == 1 for items in cells.values()) else \
        " (no band, for readability)"


def _style_text(cells) -> str:
    if len(cells) > 1:
        return "one colour per cast site [role], one line style per cell"
    return "one colour and line style per cast site [role]"


# ---- 1. S2FP8 statistics ------------------------------------------------------------------------
def draw_s2fp8(runs: list[RunData]):
    """S2FP8's per-tensor ``alpha`` (squeeze) and ``beta`` (shift) per cast site over the steps,
    forward and gradient casts in separate rows; None when no run recorded them."""
    cells = _cells_with(runs, "alpha")
    if not cells:
        return None
    columns = (("alpha", None, "alpha (squeeze)", "alpha"),
               ("beta", None, "beta (shift)", "beta"))
    fig, drawn, axes = _draw_site_panels(
        runs, cells, columns, "S2FP8 statistics per cast site",
        extra=[_handle("alpha = 1 (no squeeze)", color="0.5", lw=0.8, ls=(0, (1, 2)))])
    for (group, key), ax in axes.items():
        if key == "alpha":  # alpha = 1: the tensor's range is 15 binades, kept as it is
            ax.axhline(1.0, color="0.5", lw=0.8, ls=(0, (1, 2)), gid="alpha=1")
    caption = ("S2FP8 (Cambier et al., ICLR 2020) maps each tensor, per step, by "
               "log2|y| = alpha log2|x| + beta before rounding y to E5M2, with alpha and beta "
               "chosen so that log2|y| has mean 0 and maximum 15 over the tensor's non-zero "
               "elements: alpha (the squeeze, left) = 15 / (max - mean of log2|x|), below 1 "
               "when the tensor's largest magnitude lies more than 15 binades above its mean "
               "log2 magnitude (dotted line: alpha = 1), above 1 when it lies closer; beta (the "
               "shift, right) = -alpha times that mean, which moves the tensor's typical "
               "magnitude (the geometric mean) to 1. "
               f"{_groups_text(drawn)}; {_style_text(cells)}. Unsmoothed; each line is "
               f"{_mean_over(cells)} at each step{_no_band(cells)}."
               + _absent_text(runs, cells, "no S2FP8 cast"))
    return Figure("s2fp8_stats", "S2FP8 squeeze (alpha) and shift (beta) per cast site",
                  caption), fig


# ---- 2. per-tensor scales -----------------------------------------------------------------------
def draw_tensor_scales(runs: list[RunData]):
    """The amax and the per-tensor encode scale (log2) per cast site over the steps, for the
    runs with current or delayed scaling; None when no run recorded a per-tensor scale."""
    cells = _cells_with(runs, "scale")
    if not cells:
        return None
    columns = (("amax", safe_log2, "amax", "log2 amax"),
               ("scale", safe_log2, "encode scale", "log2 scale"))
    # only the rows of per-tensor scaling (need="scale"): a block format's amax is not drawn
    fig, drawn, axes = _draw_site_panels(runs, cells, columns,
                                         "Per-tensor scaling: amax and scale per cast site",
                                         need="scale")
    if all(len(items) == 1 for items in cells.values()):
        agg = f"the log2 value of the one run of each cell ({_seeds_text(cells)})"
    else:
        agg = f"the mean of the log2 values over the {_seeds_text(cells)}"
    caption = ("Per-tensor scaling (Transformer Engine's current or delayed scaling): per cast "
               "site [role] and step, log2 of the tensor's amax (left: its largest magnitude) "
               "and of the encode scale the tensor was multiplied by before rounding (right: "
               "max_elem 2^-margin / amax, the amax being this step's under current scaling and "
               "the largest of the amax history under delayed scaling, which therefore lags a "
               "growing tensor). "
               f"{_groups_text(drawn)}; {_style_text(cells)}. Unsmoothed; each line is "
               f"{agg} at each step{_no_band(cells)}. A step whose amax is 0 (an all-zero "
               "tensor) or whose value is not finite has no point."
               + _absent_text(runs, cells, "no per-tensor scale (no current or delayed "
                                           "scaling)"))
    return Figure("tensor_scales", "Per-tensor scaling: amax and scale per cast site",
                  caption), fig


# ---- 3. scales out of range ---------------------------------------------------------------------
def _tiled(r: RunData) -> bool:
    return any((row["tiles"] or 0) > 0 for row in r.tensor_scales)


def _role_fractions(r: RunData) -> "OrderedDict[tuple, tuple]":
    """Per ``(role, column)`` of :data:`RANGE_KINDS`: ``(steps, fraction)``, the column summed
    over the role's sites at each step, over the tiles summed the same way."""
    acc: "OrderedDict[str, dict]" = OrderedDict()
    for row in r.tensor_scales:
        tiles = row["tiles"] or 0
        if tiles <= 0:
            continue
        d = acc.setdefault(row["role"], {}).setdefault(int(row["step"]),
                                                         {"tiles": 0, **{k: 0 for k, *_ in
                                                                         RANGE_KINDS}})
        d["tiles"] += tiles
        for k, *_ in RANGE_KINDS:
            d[k] += row[k] or 0
    out = OrderedDict()
    for role, by_step in acc.items():
        steps = np.array(sorted(by_step), np.float64)
        tiles = np.array([by_step[int(s)]["tiles"] for s in steps], np.float64)
        for k, *_ in RANGE_KINDS:
            out[(role, k)] = (steps, ratio([by_step[int(s)][k] for s in steps], tiles))
    return out


def _range_panels(runs):
    """``(tiled cells, panels, clean, steps)``: the cells with tiles; per cell to draw, per
    ``(role, column)`` with a non-zero mean somewhere, ``(steps, mean over the seeds)``; the
    tiled cells with no out-of-range scale nor Inf/NaN in any seed; per cell drawn, the steps
    its tiles were recorded at."""
    tiled = OrderedDict((label, items) for label, items in groups(runs).items()
                        if any(_tiled(r) for r in items))
    panels, clean, steps = OrderedDict(), [], {}
    for label, items in tiled.items():
        per: "OrderedDict[tuple, list]" = OrderedDict()
        for r in items:
            for key, series in _role_fractions(r).items():
                per.setdefault(key, []).append(series)
        lines = OrderedDict()
        for key, series in per.items():
            x, y = align(series)
            mean = seed_stats(y)[0]
            if np.any(np.where(np.isfinite(mean), mean, 0.0) > 0):
                lines[key] = (x, mean)
        if lines:
            panels[label] = lines
            steps[label] = np.unique(np.concatenate([s for series in per.values()
                                                     for s, _ in series]))
        else:
            clean.append(label)
    return tiled, panels, clean, steps


def no_scale_out_of_range(runs: list[RunData]) -> bool:
    """True when no tile of any run had a scale out of range or held Inf/NaN."""
    return not _range_panels(runs)[1]


def draw_scale_range(runs: list[RunData]):
    """Per cell with any out-of-range tile scale (or a tile holding Inf/NaN), the fraction of
    tiles per role over the steps (log y, mean over seeds); None when there is none."""
    tiled, panels, clean, steps = _range_panels(runs)
    if not panels:
        return None
    roles = list(OrderedDict.fromkeys(role for lines in panels.values() for role, _ in lines))
    known = [r for rs in ROLE_GROUPS.values() for r in rs]
    roles.sort(key=lambda r: known.index(r) if r in known else len(known))
    colors = dict(zip(roles, _palette(len(roles))))
    kinds = {k: (text, ls, m) for k, text, ls, m in RANGE_KINDS}
    used = [k for k, *_ in RANGE_KINDS if any(key == k for lines in panels.values()
                                                for _, key in lines)]
    fig, axes, slot = _grid(len(panels), 4.2, 3.2)
    for ax, (label, lines) in zip(axes, panels.items()):
        low = 100.0
        for (role, key), (x, mean) in lines.items():
            ok = np.isfinite(mean) & (mean > 0)  # a log axis: steps without any are absent
            _, ls, marker = kinds[key]
            ax.plot(x[ok], 100 * mean[ok], color=colors[role], ls=ls, marker=marker, ms=4,
                    mfc="none", mew=1.0, lw=1.1, gid=f"{key}:{role}")
            low = min(low, float(100 * mean[ok].min()))
        ax.set_yscale("log")
        # the lowest point off the frame, at least a decade (labelled powers of ten); a
        # fraction is at most 100%
        ax.set_ylim(min(low / 3, 10.0), 150)
        ax.set(title=shown(label), xlabel="step", ylabel="tiles (%)")
        _step_range(ax, steps[label])
    handles = [_handle(role, color=colors[role], lw=2.5) for role in roles]
    handles += [_handle(kinds[k][0], color="0.3", ls=kinds[k][1], marker=kinds[k][2], ms=4,
                        mfc="none") for k in used]
    _legend(fig, slot, handles, title="role / event")
    caption = ("One panel per cell: per role (summed over the role's cast sites) and step, the "
               "percentage of the tiles (the blocks or tiles sharing one scale; 1 per tensor "
               "for per-tensor scaling and S2FP8) whose ideal scale fell below the range of the "
               "scale format (float32 for formats that keep the scale unrounded; solid, "
               "downward triangles) or above it (dashed, upward triangles), and of the tiles "
               "holding Inf or NaN (dotted, crosses); a colour per role; log axis, "
               f"unsmoothed, {_mean_over(OrderedDict((k, tiled[k]) for k in panels))} at each "
               "step. A step with no such tile has no point (log axis); a role and event "
               "without any in the cell is not drawn.")
    if clean:
        caption += (f" Not drawn: {_names(clean)}, with every tile's scale in range and no "
                    "Inf/NaN in any seed.")
    absent = [label for label in groups(runs) if label not in tiled]
    if absent:
        caption += f" No panel for {_names(absent)}: no scaled cast recorded."
    return Figure("scale_range", "Tile scales out of the scale format's range", caption), fig


# ---- all of it ----------------------------------------------------------------------------------
def uses_scaled(r: RunData) -> bool:
    """True when the run recorded scale rows or its policy holds a scaled cast."""
    if r.tensor_scales:
        return True
    from fpsim.training.precision import policy

    return any(callable(getattr(c, "scale_records", None))
               for _, c in policy(r.config["policy"]).cast_objects())


def draw_all(runs: list[RunData]) -> list:
    """The scaled-format figures with something to show, in report order."""
    return [d for d in (draw_s2fp8(runs), draw_tensor_scales(runs), draw_scale_range(runs))
            if d is not None]


def omitted(runs: list[RunData]) -> "OrderedDict[str, str]":
    """Figure name -> why it is not drawn; empty when no run uses a scaled format."""
    out: "OrderedDict[str, str]" = OrderedDict()
    scaled = [r for r in runs if uses_scaled(r)]
    if not scaled:
        return out
    recorded = any(r.tensor_scales for r in scaled)
    off = all(r.config.get("instrument", True) is False for r in scaled)
    none = "" if recorded else (" (the runs with scaled casts recorded no scale rows"
                                + (": instrumentation was off)" if off else ")"))
    if not any(_has(r, "alpha") for r in runs):
        out["s2fp8_stats"] = "No run recorded S2FP8 statistics (alpha, beta)" + (
            none or ": no S2FP8 cast") + "."
    if not any(_has(r, "scale") for r in runs):
        out["tensor_scales"] = "No run recorded a per-tensor scale" + (
            none or ": no current or delayed scaling") + "."
    if not any(_tiled(r) for r in runs):
        out["scale_range"] = "No scaled cast recorded its tiles" + none + "."
    elif no_scale_out_of_range(runs):
        out["scale_range"] = ("No block scale left the scale format's range. No tile held "
                              "Inf or NaN.")
    return out
