"""Formats side by side: representable range and relative spacing (``fpsim formats --plot``).

Two panels share a log2|x| axis:

(a) the range of each format: subnormals (light) from the smallest subnormal to the smallest
    normal, normals (dark) from the smallest normal to the largest finite value;
(b) the relative spacing ``ulp(x)/|x|`` against ``|x|`` on log-log axes. In a normal binade
    ``[2^e, 2^(e+1))`` the spacing is ``2^(e-m)``, so the relative spacing falls from ``2^-m``
    to just above ``2^-(m+1)`` and jumps back: a sawtooth about a plateau set by the fraction
    bits ``m`` alone. Below the smallest normal the spacing stays the smallest subnormal ``T``,
    so the relative spacing ``T/|x|`` rises to 1 at ``|x| = T``: precision drains away.

The curves are exact (a polyline through the binade corners from the :class:`~fpsim.Format`
fields), not sampled.
"""

from __future__ import annotations

import math

import numpy as np

from fpsim.analysis.histogram import format_colors, new_figure, pow2_axis, save_figure
from fpsim.numerics.format import Format
from fpsim.numerics.formats import format as _format


def ulp(fmt: Format, x) -> np.ndarray:
    """Spacing of ``fmt``'s values at magnitude ``|x|``: the gap from the value at or below
    ``|x|`` to the next one up (``np.spacing`` of a float16 for ``float16``).

    ``2^(e - man_bits)`` in a normal binade ``e``; the smallest subnormal below the smallest
    normal (formats with subnormals); NaN outside ``[min_subnormal, max]``.
    """
    a = np.abs(np.asarray(x, np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        _, e = np.frexp(a)
    e = np.maximum(e.astype(np.int64) - 1, fmt.emin)  # subnormals: the spacing of binade emin
    out = np.ldexp(1.0, e - fmt.man_bits)
    inside = (a >= fmt.min_subnormal) & (a <= fmt.max)
    return np.where(inside, out, np.nan)


def relative_spacing(fmt: Format) -> tuple[np.ndarray, np.ndarray]:
    """The exact curve of ``log2(ulp(x)/|x|)`` against ``log2|x|`` from the smallest positive
    value to ``max``, as polyline vertices ``(log2_x, log2_rel)``.

    On log axes ``ulp/|x|`` is a line of slope -1 wherever the spacing is constant: across
    the subnormal range ``[T, N)`` (from ``0`` down to ``-man_bits``) and across each normal
    binade (from ``-m`` to ``-(m+1)``, then a jump back to ``-m`` at the next power of two).
    """
    m = fmt.man_bits
    xs, ys = [], []
    if fmt.subnormals and m > 0:
        t = math.log2(fmt.min_subnormal)
        xs += [t]
        ys += [0.0]
    top = math.log2(fmt.max)
    for e in range(fmt.emin, fmt.emax + 1):
        end = min(e + 1.0, top)
        xs += [float(e), end]
        ys += [-float(m), float(e - m) - end]  # log2(2^(e-m) / x) at x = 2^e and at the end
    return np.array(xs), np.array(ys)


def plot_formats(formats, path=None, title=None):
    """Draw the formats side by side; returns the Matplotlib Figure.

    Args:
        formats: Formats, names or specs (``["fp16", "e4m3"]``).
        path: also save as PNG and SVG (:func:`fpsim.analysis.histogram.save_figure`).
        title: figure title.

    Artists carry ``gid`` s for tests and tools: range bars ``"subnormal:<name>"`` and
    ``"normal:<name>"`` (x from log2 of the lower to log2 of the upper end), spacing curves
    ``"spacing:<name>"`` (the vertices of :func:`relative_spacing`).
    """
    fmts = [_format(f) for f in ([formats] if isinstance(formats, (str, Format)) else formats)]
    if not fmts:
        raise ValueError("plot_formats: no formats given")
    names = [str(f) for f in fmts]
    colors = format_colors(len(fmts))
    lo = min(math.log2(f.min_subnormal) for f in fmts)
    hi = max(math.log2(f.max) for f in fmts)
    span = hi - lo
    lo, hi = lo - 0.1 * span - 3, hi + 0.13 * span + 3  # room for the end labels

    fig = new_figure((9.5, 1.6 + 0.42 * len(fmts) + 3.6))
    grid = fig.add_gridspec(2, 1, height_ratios=[0.6 + 0.42 * len(fmts), 3.6], hspace=0.45)
    ax_r = fig.add_subplot(grid[0])
    ax_s = fig.add_subplot(grid[1], sharex=ax_r)

    # (a) ranges
    for i, (f, name, c) in enumerate(zip(fmts, names, colors)):
        a, n, b = math.log2(f.min_subnormal), math.log2(f.min_normal), math.log2(f.max)
        if n > a:
            ax_r.barh(i, n - a, left=a, height=0.5, color=c, alpha=0.35, lw=0,
                      gid=f"subnormal:{name}")
        ax_r.barh(i, b - n, left=n, height=0.5, color=c, alpha=0.9, lw=0, gid=f"normal:{name}")
        label = dict(fontsize=8, va="center")
        ax_r.text(a - 0.01 * (hi - lo), i, f"$2^{{{round(a)}}}$", ha="right", **label)
        ax_r.text(b + 0.01 * (hi - lo), i, f"{f.max:.6g}" if f.max < 1e6 else f"{f.max:.3g}",
                  ha="left", **label)
        if n > a:
            ax_r.text(n, i - 0.3, f"$2^{{{round(n)}}}$", ha="center", va="bottom", fontsize=8)
    ax_r.set_yticks(range(len(fmts)), names, fontsize=9)
    ax_r.set_ylim(len(fmts) - 0.5, -0.85)
    ax_r.set_title("(a) range: subnormals (light) from the smallest subnormal, "
                   "normals (dark) from the smallest normal to max", fontsize=9.5)
    ax_r.grid(axis="x", color="0.9", lw=0.6)
    ax_r.set_axisbelow(True)

    # (b) relative spacing
    ymin = 0.0
    for f, name, c in zip(fmts, names, colors):
        xs, ys = relative_spacing(f)
        ax_s.plot(xs, ys, color=c, lw=1.3, label=f"{name} (plateau $2^{{-{f.man_bits}}}$)",
                  gid=f"spacing:{name}")
        ymin = min(ymin, ys.min())
    ax_s.set_ylim(ymin - 1.5, 1.5)
    pow2_axis(ax_s.yaxis, ymin - 1.5, 1.5, minor=False)
    ax_s.set_ylabel("ulp(x) / |x|")
    ax_s.set_xlabel("|x| (log2 axis)")
    ax_s.set_title("(b) relative spacing: a sawtooth below $2^{-m}$ for normals, rising to 1 "
                   "across the subnormals", fontsize=9.5)
    ax_s.grid(color="0.9", lw=0.6)
    ax_s.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
                borderaxespad=0.0)
    ax_s.set_xlim(lo, hi)
    pow2_axis(ax_s.xaxis, lo, hi)
    ax_r.tick_params(labelbottom=True)
    if title:
        fig.suptitle(title)
    if path is not None:
        save_figure(fig, path)
    return fig
