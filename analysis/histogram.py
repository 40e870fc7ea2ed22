"""Binade histograms of ``|x|`` and what rounding into each format does to them.

One binning definition serves every histogram fpsim draws: bin ``k`` counts the values with
``2^k <= |x| < 2^(k+1)`` (``k = floor(log2|x|)``, exact for float64 subnormals), zeros, Inf and NaN
are counted apart, and a bar spans ``[k, k+1)`` on a log2 axis (:func:`binade_bars`), never a bar
centred on ``k``.

For each format the fractions of the non-zero finite inputs that underflow (round to ±0), become
subnormal, or overflow are fpsim's own counts: :func:`fpsim.quantize` with ``stats=True`` on those
inputs. From a :class:`~fpsim.Stats` (or a ``(k, counts)`` pair) alone only the histogram is
known, so the fractions are binade-resolution bounds, marked as such (see :func:`histogram`).

Typical use::

    h = fpsim.analysis.histogram(grads, formats=["fp16", "bf16", "e4m3"], path="grads")
    print(h)                     # the table; grads.png and grads.svg hold the plot
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from fpsim.numerics.format import Format
from fpsim.numerics.formats import format as _format
from fpsim.numerics.modes import Overflow, RoundMode
from fpsim.numerics.stats import Stats

#: Formats of :func:`histogram` and ``fpsim histogram`` when none are given.
DEFAULT_FORMATS = ("fp16", "bf16", "e5m2", "e4m3")

#: The three events of a row, in table order.
EVENTS = ("underflow", "subnormal", "overflow")

#: Line style of each threshold line: (row attribute, legend text, matplotlib linestyle).
THRESHOLD_LINES = (
    ("ftz", "flush to 0 at/below (RNE)", "--"),
    ("min_normal", "min normal", ":"),
    ("max", "max", "-"),
)


# ---- the one binning definition ---------------------------------------------------------------
def binade_bars(k, counts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bar geometry of a binade histogram on a log2 axis: ``(left_edges, widths, heights)``.

    Bar ``j`` spans ``[k_j, k_j + 1)``, the binade ``2^k_j <= |x| < 2^(k_j+1)``; draw it with
    ``ax.bar(left, heights, width=widths, align="edge")``.

    Args:
        k: the first binade ``k_min`` (an int: the bins are ``k_min, k_min+1, ...``) or one
            integer ``k`` per count.
        counts: the count of each binade.

    Raises:
        ValueError: ``k`` is not integer-valued, or its length differs from ``counts``.
    """
    heights = np.asarray(counts).reshape(-1)
    if np.ndim(k) == 0:
        left = np.asarray(k, np.float64) + np.arange(heights.size)
    else:
        left = np.asarray(k, np.float64).reshape(-1)
        if left.size != heights.size:
            raise ValueError(f"binade_bars: {left.size} binades but {heights.size} counts")
    if not np.all(np.isfinite(left) & (left == np.floor(left))):
        raise ValueError("binade_bars: binade exponents k must be integers (k = floor(log2|x|))")
    return left, np.ones_like(left), heights


# ---- per-format rows --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FormatRow:
    """What rounding the non-zero finite inputs into one format does.

    A fraction is ``None`` where only binade-resolution bounds are known (``exact`` False); the
    ``*_range`` pairs always hold ``(low, high)`` bounds, equal to the fraction when exact.
    """

    #: Display name: the format's name, with ``:rounding[:overflow]`` when not rne/ieee.
    name: str
    #: The format.
    format: Format
    #: Rounding mode of the fractions (``"rne"``, ``"sr"``, ...).
    rounding: str
    #: Overflow policy of the fractions (``"ieee"`` or ``"saturate"``).
    overflow_policy: str
    #: Flush-to-zero threshold under round-to-nearest-even: magnitudes at or below it round to ±0
    #: (half the smallest subnormal; half the smallest normal without subnormals). ``None`` for
    #: formats without a zero.
    ftz: float | None
    #: Smallest positive value.
    min_subnormal: float
    #: Smallest positive normal value.
    min_normal: float
    #: Largest finite value.
    max: float
    #: Whether the fractions are fpsim's counts (array input) or bounds (histogram input).
    exact: bool
    #: Fraction of the non-zero finite inputs that round to ±0.
    underflow: float | None
    #: Fraction that rounds to a non-zero subnormal.
    subnormal: float | None
    #: Fraction whose magnitude exceeds max after rounding with an unbounded exponent.
    overflow: float | None
    #: Fraction that rounds to NaN (overflow in formats without Inf, negatives in unsigned ones).
    nan: float | None
    underflow_range: tuple[float, float] = (0.0, 0.0)
    subnormal_range: tuple[float, float] = (0.0, 0.0)
    overflow_range: tuple[float, float] = (0.0, 0.0)
    nan_range: tuple[float, float] = (0.0, 0.0)

    def as_dict(self) -> dict:
        """The row as a JSON-ready dict (the format as its name and spec)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["format"] = {"name": str(self.format), "spec": self.format.spec}
        for key in ("underflow_range", "subnormal_range", "overflow_range", "nan_range"):
            d[key] = list(d[key])
        return d


def ftz_threshold(fmt: Format) -> float | None:
    """Largest magnitude that rounds to ±0 under round-to-nearest-even, or None without a zero.

    The smallest positive value ``T`` is ``min_subnormal`` (``min_normal`` without subnormals);
    below ``T/2`` a value is nearer to 0, and ``T/2`` itself is a tie that goes to the even
    code, 0 (ties-away rounds it up to ``T``; directed and stochastic roundings differ more).
    """
    if not fmt.zero:
        return None
    return fmt.min_subnormal / 2


def parse_format_spec(spec, rounding="rne", overflow="ieee") -> tuple[Format, str, str, str]:
    """``(Format, rounding, overflow, display name)`` of a Format or ``NAME[:ROUNDING[:OVERFLOW]]``
    (``rounding`` and ``overflow`` where the spec names none).

    Raises:
        ValueError: unknown format, rounding or overflow policy; TypeError: not a str or Format.
    """
    if isinstance(spec, Format):
        fmt, parts = spec, []
    elif isinstance(spec, str):
        head, *parts = spec.split(":")
        if len(parts) > 2:
            raise ValueError(f"format {spec!r}: expected NAME[:ROUNDING[:OVERFLOW]]")
        fmt = _format(head)
    else:
        raise TypeError(f"a format is a Format or a name such as 'fp16' or 'e3m4:sr', got {spec!r}")
    r = RoundMode.parse(parts[0] if parts else rounding).name.lower()
    o = Overflow.parse(parts[1] if len(parts) > 1 else overflow).name.lower()
    name = str(fmt) + ("" if r == "rne" and o == "ieee" else f":{r}") + ("" if o == "ieee" else f":{o}")
    return fmt, r, o, name


def _row(fmt, r, o, name, exact, fractions: dict) -> FormatRow:
    """A row from ``{event: (low, high)}`` fractions."""
    ranges = {f"{e}_range": (float(lo), float(hi)) for e, (lo, hi) in fractions.items()}
    values = {e: (float(lo) if exact else None) for e, (lo, hi) in fractions.items()}
    return FormatRow(name=name, format=fmt, rounding=r, overflow_policy=o, ftz=ftz_threshold(fmt),
                     min_subnormal=fmt.min_subnormal, min_normal=fmt.min_normal, max=fmt.max,
                     exact=exact, **values, **ranges)


def binade_bounds(k: np.ndarray, counts: np.ndarray, fmt: Format, overflow: str = "ieee") -> dict:
    """Bounds on the event counts of rounding to nearest from a binade histogram alone.

    Returns ``{event: (low, high)}`` counts for ``underflow``, ``subnormal``, ``overflow`` and
    ``nan``, valid for rne and rna. With ``T = 2^t`` the smallest positive value, ``N = 2^n``
    the smallest normal and ``e = floor(log2 max)``:

    * binades ``k <= t-2`` lie below ``T/2``: they underflow; binade ``t-1`` ``[T/2, T)``
      may (only ``T/2`` itself does, under rne), otherwise it rounds to ``T``;
    * binades ``t <= k <= n-2`` become subnormal; the top of binade ``n-1`` rounds up to ``N``;
    * binades ``k > e`` overflow; binade ``e`` holds the overflow boundary ``max + ulp/2``;
    * a format with NaN but no Inf turns overflow into NaN under the ieee policy.

    Raises:
        ValueError: ``fmt`` is unsigned (the histogram holds magnitudes; negatives are NaN there).
    """
    if not fmt.signed:
        raise ValueError(f"{fmt} is unsigned: negative inputs become NaN, and a histogram of |x| "
                         "cannot say how many there are; pass the array")
    k = np.asarray(k, np.int64)
    c = np.asarray(counts, np.int64)

    def total(mask) -> int:
        return int(c[mask].sum())

    t = round(math.log2(fmt.min_subnormal))
    n, e = fmt.emin, fmt.emax
    out = {ev: (0, 0) for ev in (*EVENTS, "nan")}
    if fmt.zero:
        certain = total(k <= t - 2)
        out["underflow"] = (certain, certain + total(k == t - 1))
        if fmt.subnormals and fmt.man_bits > 0:
            certain = total((k >= t) & (k <= n - 2))
            out["subnormal"] = (certain, certain + total(k == t - 1) + total(k == n - 1))
    certain = total(k > e)
    out["overflow"] = (certain, certain + total(k == e))
    if fmt.has_nan and not fmt.has_inf and Overflow.parse(overflow) == Overflow.IEEE:
        out["nan"] = out["overflow"]
    return out


# ---- the result -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class Histogram:
    """A binade histogram of ``|x|`` and one :class:`FormatRow` per format.

    Bin ``j`` counts ``2^left[j] <= |x| < 2^right[j]`` with ``right = left + 1``.
    """

    #: Left bin edges in log2 units: the binade exponents ``k`` (int64).
    left: np.ndarray
    #: Right bin edges in log2 units, ``left + 1``.
    right: np.ndarray
    #: Count of each binade (int64).
    counts: np.ndarray
    #: Number of ±0 inputs.
    zeros: int
    #: Number of ±Inf inputs.
    infs: int
    #: Number of NaN inputs.
    nans: int
    #: One row per format, in the order given.
    rows: tuple[FormatRow, ...]
    #: Whether the fractions are fpsim's counts (array input) rather than bounds.
    exact: bool
    #: Title of the plot and the table.
    title: str | None = None
    #: Files written by :func:`histogram` (``path=``), PNG first.
    files: tuple[str, ...] = ()

    @property
    def n(self) -> int:
        """Number of non-zero finite inputs (the denominator of every fraction)."""
        return int(self.counts.sum())

    def bars(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(left_edges, widths, heights)`` of the bars (:func:`binade_bars`)."""
        return binade_bars(self.left, self.counts)

    def as_dict(self) -> dict:
        """JSON-ready dict: histogram, special counts and rows."""
        return {
            "title": self.title, "exact": self.exact, "n_nonzero_finite": self.n,
            "zeros": self.zeros, "infs": self.infs, "nans": self.nans,
            "left": self.left.tolist(), "right": self.right.tolist(),
            "counts": self.counts.tolist(),
            "formats": [r.as_dict() for r in self.rows], "files": list(self.files),
        }

    def summary(self) -> str:
        """One line: how many values, their binade span and the special counts."""
        span = (f" in [{_pow2(self.left[0])}, {_pow2(self.right[-1])})" if self.n else "")
        return (f"{self.n} non-zero finite value{'s' * (self.n != 1)}{span}; "
                f"zeros {self.zeros}, Inf {self.infs}, NaN {self.nans}")

    def table(self) -> str:
        """The per-format table: thresholds and event fractions."""
        from fpsim.cli.common import render_table

        show_nan = any(r.nan_range[1] > 0 for r in self.rows)
        events = EVENTS + (("nan",) if show_nan else ())
        headers = ["format", "flush to 0 at/below", "min normal", "max", *events]
        columns = [[r.name for r in self.rows],
                   [_value(r.ftz) for r in self.rows],
                   [_value(r.min_normal) for r in self.rows],
                   [_value(r.max) for r in self.rows]]
        for ev in events:
            columns.append([_fraction(getattr(r, f"{ev}_range"), r.exact) for r in self.rows])
        return render_table(headers, columns, right=set(range(1, len(headers))))

    def text(self) -> str:
        """Title, summary line, table and a note on what the fractions are."""
        lines = [self.title] if self.title else []
        lines.append(self.summary())
        if self.rows:
            lines += ["", self.table(), ""]
            if self.exact:
                lines.append("fractions of the non-zero finite values: fpsim's rounding counts "
                             "(fpsim.quantize stats)")
            else:
                lines.append("fractions of the non-zero finite values: low-high bounds from the "
                             "binade histogram (round to nearest); pass the array for exact counts")
        return "\n".join(lines)

    __str__ = text

    def plot(self, ax=None, path=None, title=None, table: bool | None = None):
        """Draw the histogram and the format thresholds; returns the Axes.

        Bars span ``[k, k+1)`` on a log2|x| axis (labelled with powers of two). Each format gets a
        colour and three vertical lines (their ``gid`` is ``"<attr>:<row name>"`` with ``attr``
        one of ``ftz``, ``min_normal``, ``max``, at ``log2`` of that value) rising to the format's
        range strip at the top (subnormals light, normals dark; an end beyond the shown range is
        labelled with its value). ``table`` prints the fractions below the axes (default: only
        when the figure is made here, as it would cover a neighbouring subplot).

        Args:
            ax: Matplotlib Axes to draw into; None makes a figure (without pyplot).
            path: also save the figure as PNG and SVG (:func:`save_figure`).
            title: the plot title (default :attr:`title`).
        """
        table = ax is None if table is None else table
        ax = _draw(self, ax, title if title is not None else self.title, table)
        if path is not None:
            save_figure(ax.figure, path)
        return ax


def _pow2(k) -> str:
    return f"2^{int(k)}"


def _value(v: float | None) -> str:
    """A threshold for the table: ``2^k`` for powers of two, else the shortest repr."""
    if v is None:
        return "-"
    m, e = math.frexp(v)
    return f"2^{e - 1}" if m == 0.5 else repr(float(v))


def _fraction(bounds: tuple[float, float], exact: bool) -> str:
    lo, hi = bounds

    def pct(v):
        return "0" if v == 0 else f"{100 * v:.4g}%"

    return pct(lo) if exact or lo == hi else f"{pct(lo)}-{pct(hi)}"


# ---- building a Histogram ---------------------------------------------------------------------
def histogram(x_or_stats, formats=DEFAULT_FORMATS, ax=None, path=None, title=None, *,
              rounding="rne", overflow="ieee", seed: int = 0) -> Histogram:
    """Binade histogram of ``|x|`` and, per format, the underflow/subnormal/overflow fractions.

    Args:
        x_or_stats: a host array-like of real numbers (float16/32/64, ml_dtypes floats,
            integers up to 2^53: anything :func:`fpsim.quantize` converts exactly), or a
            :class:`~fpsim.Stats`, or a ``(k, counts)`` pair (binade exponents, or the first one,
            and their counts).
        formats: Formats, names, or ``"NAME:ROUNDING[:OVERFLOW]"`` (``"e3m4:sr"``).
        ax: draw into this Matplotlib Axes (see :meth:`Histogram.plot`).
        path: save the plot as PNG and SVG (:func:`save_figure`); a figure is made if ``ax`` is
            None.
        title: title of the plot and the table.
        rounding, overflow, seed: rounding mode, overflow policy and sr seed of formats given
            without them. With sr, element ``i`` of the non-zero finite values (in C order) gets
            the random bits of index ``i``.

    Returns:
        A :class:`Histogram`. For an array the fractions are exact: the counts of
        ``fpsim.quantize(v, fmt, stats=True)`` on the non-zero finite values ``v`` divided by
        their number (so Inf inputs never count as overflow). For a histogram input they are
        ``(low, high)`` bounds (:func:`binade_bounds`) and the exact fields are None.

    Raises:
        ValueError: unknown format; a histogram input with a rounding other than rne/rna or
            an unsigned format; malformed ``(k, counts)``.
        TypeError: ``x`` holds no real numbers (complex, object, long double).
    """
    specs = [parse_format_spec(f, rounding, overflow) for f in
             ([formats] if isinstance(formats, (str, Format)) else list(formats))]
    if isinstance(x_or_stats, Stats) or _is_k_counts(x_or_stats):
        h = _from_hist(x_or_stats, specs, title)
    else:
        h = _from_array(x_or_stats, specs, title, seed)
    if ax is not None or path is not None:
        ax = h.plot(ax=ax, title=title)
        if path is not None:
            h = dataclasses.replace(h, files=tuple(save_figure(ax.figure, path)))
    return h


def _is_k_counts(obj) -> bool:
    return (isinstance(obj, tuple) and len(obj) == 2
            and np.ndim(obj[1]) == 1 and np.ndim(obj[0]) in (0, 1))


def _from_array(x, specs, title, seed) -> Histogram:
    # Imported here: the rounding kernels (and Numba) load on first use, not with fpsim.analysis.
    from fpsim.numerics.backend import as_float_array, is_device_array
    from fpsim.numerics.convert import quantize

    if is_device_array(x):
        raise TypeError("histogram takes host arrays; copy a device array to the host first")
    a = as_float_array(x).reshape(-1)
    finite = np.isfinite(a)
    keep = finite & (a != 0)
    zeros, infs = int((a == 0).sum()), int(np.isinf(a).sum())
    nans = int(a.size - finite.sum() - infs)
    v = a if keep.all() else a[keep]
    n = v.size
    rows, stats = [], None
    for fmt, r, o, name in specs:
        _, st = quantize(v, fmt, r, o, seed, stats=True)
        stats = st if stats is None else stats
        fr = {ev: (getattr(st, ev) / n if n else 0.0,) * 2 for ev in (*EVENTS, "nan")}
        rows.append(_row(fmt, r, o, name, True, fr))
    if stats is None:  # no formats: the histogram alone, from the same kernel (float64 is exact)
        _, stats = quantize(v, "float64", stats=True)
    k, counts = stats.binades()
    return _hist_result(k, counts, zeros, infs, nans, rows, True, title)


def _from_hist(src, specs, title) -> Histogram:
    if isinstance(src, Stats):
        k, counts = src.binades()
        zeros, infs, nans = src.hist_zero, src.hist_inf, src.hist_nan
    else:
        k0, c = src
        k, counts = binade_bars(k0, c)[0].astype(np.int64), np.asarray(c).reshape(-1)
        if counts.size and (counts.dtype.kind not in "iu" or counts.min() < 0):
            raise ValueError("histogram: (k, counts) needs non-negative integer counts")
        counts = counts.astype(np.int64)
        zeros = infs = nans = 0
    n = int(counts.sum())
    rows = []
    for fmt, r, o, name in specs:
        if r not in ("rne", "rna"):
            raise ValueError(f"format {name}: from a histogram only round-to-nearest (rne, rna) "
                             "fractions can be bounded; pass the array for other roundings")
        bounds = binade_bounds(k, counts, fmt, o)
        fr = {ev: ((lo / n, hi / n) if n else (0.0, 0.0)) for ev, (lo, hi) in bounds.items()}
        rows.append(_row(fmt, r, o, name, False, fr))
    return _hist_result(k, counts, zeros, infs, nans, rows, False, title)


def _hist_result(k, counts, zeros, infs, nans, rows, exact, title) -> Histogram:
    left = np.asarray(k, np.int64)
    return Histogram(left=left, right=left + 1, counts=np.asarray(counts, np.int64),
                     zeros=int(zeros), infs=int(infs), nans=int(nans), rows=tuple(rows),
                     exact=exact, title=title)


# ---- drawing ----------------------------------------------------------------------------------
def save_figure(fig, path, dpi: int = 150, kinds=("png", "svg")) -> list[str]:
    """Save ``fig`` as PNG and SVG (or the ``kinds`` of those two given); returns the paths
    written, PNG first.

    ``path`` ending in ``.png`` or ``.svg`` is honoured and the other file written next to it;
    any other path gets both extensions appended. Missing parent folders are created.
    """
    bad = set(kinds) - {"png", "svg"}
    if bad or not kinds:
        raise ValueError(f"image kinds are png and/or svg, got {', '.join(kinds) or 'none'}")
    path = os.fspath(path)
    base, ext = os.path.splitext(path)
    if ext.lower() not in (".png", ".svg"):
        base = path
    folder = os.path.dirname(base)
    if folder:
        os.makedirs(folder, exist_ok=True)
    files = [base + ".png", base + ".svg"]
    if ext.lower() in (".png", ".svg"):
        files[0 if ext.lower() == ".png" else 1] = path  # keep the given spelling (.PNG)
    files = [f for f, kind in zip(files, ("png", "svg")) if kind in kinds]
    for f in files:
        kw = {"dpi": dpi} if f[-3:].lower() == "png" else {}
        fig.savefig(f, format=f[-3:].lower(), bbox_inches="tight", **kw)
    return files


def new_figure(figsize):
    """A Matplotlib Figure that needs no pyplot (and no GUI backend): it draws with Agg."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def pow2_axis(axis, lo: float, hi: float, minor: bool = True) -> None:
    """Ticks of a log2 axis ``axis`` (``ax.xaxis``) on ``[lo, hi]``: majors labelled ``2^k``
    at a round step, minor ticks on every binade edge when there are not too many."""
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    span = max(hi - lo, 1.0)
    step = 2 ** max(0, math.ceil(math.log2(span / 12)))  # at most ~12 labels
    axis.set_major_locator(MultipleLocator(step))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"$2^{{{int(round(v))}}}$"))
    if minor and step > 1 and span <= 100:
        axis.set_minor_locator(MultipleLocator(1))


def format_colors(n: int) -> list:
    """``n`` distinct colours (tab10, then tab20) for formats."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


#: How far (in binades) beyond the data a threshold line may stretch the x axis.
_REACH = 12
#: Height of a format's range strip and the gap above it, in axes fractions.
_STRIP, _GAP = 0.05, 0.012


def range_strip(ax, y0: float, height: float, fmt_row, color, lo: float, hi: float,
                gid: str) -> None:
    """Draw a format's range as a strip in axes-fraction rows ``[y0, y0 + height]`` of ``ax``
    (x in log2 data units): subnormals light, normals dark; an end cut off by the x range
    ``[lo, hi]`` is labelled with its value at that edge."""
    from matplotlib.patches import Rectangle

    tr = ax.get_xaxis_transform()  # x in data units, y in axes fractions
    a, n, b = (math.log2(fmt_row.min_subnormal), math.log2(fmt_row.min_normal),
               math.log2(fmt_row.max))
    for start, end, alpha, part in ((a, n, 0.35, "subnormal"), (n, b, 0.9, "normal")):
        s, e = max(start, lo), min(end, hi)
        if e > s:
            ax.add_patch(Rectangle((s, y0), e - s, height, transform=tr, color=color, alpha=alpha,
                                   lw=0, gid=f"{gid}:{part}", clip_on=True))
    text = dict(transform=tr, va="center", fontsize=8, color="black",
                bbox=dict(facecolor="white", alpha=0.75, lw=0, pad=0.6))
    if a < lo <= b:
        ax.text(lo + 0.15, y0 + height / 2, f"\u2190 $2^{{{round(a)}}}$", ha="left", **text)
    if a <= hi < b:
        ax.text(hi - 0.15, y0 + height / 2, f"{fmt_row.max:.3g} \u2192", ha="right", **text)


def _draw(h: Histogram, ax, title, table: bool):
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if ax is None:
        fig = new_figure((9.0, 4.2 + 0.25 * len(h.rows)))
        ax = fig.add_subplot()
    left, widths, heights = h.bars()
    bars = ax.bar(left, heights, width=widths, align="edge", color="#8da0cb", label="_binades")
    for patch in bars:
        patch.set_gid("binade")

    colors = format_colors(len(h.rows))
    lines = [(math.log2(getattr(r, attr)), attr, style, i)
             for i, r in enumerate(h.rows)
             for attr, _, style in THRESHOLD_LINES if getattr(r, attr) is not None]
    if h.n:
        lo, hi = float(h.left[0]), float(h.right[-1])
        near = [x for x, *_ in lines if lo - _REACH <= x <= hi + _REACH]
        lo, hi = min([lo, *near]) - 1, max([hi, *near]) + 1
    elif lines:
        lo, hi = min(x for x, *_ in lines) - 1, max(x for x, *_ in lines) + 1
    else:
        lo, hi = -1.0, 1.0
    ax.set_xlim(lo, hi)
    pow2_axis(ax.xaxis, lo, hi)
    # Thin white edges separate the bins, unless the bins are too narrow to show through them.
    for patch in bars:
        patch.set(edgecolor="white" if hi - lo <= 120 else "none", linewidth=0.5)
    if not h.n:
        ax.text(0.5, 0.4, "no non-zero finite values", transform=ax.transAxes, ha="center",
                fontsize=10, color="0.3")

    # One range strip per format at the top; its lines rise from the bottom to its strip, so
    # formats that share a threshold (fp16 and e5m2 at 2^-14) still show each line.
    strip_bottom = [1 - 0.015 - (i + 1) * (_STRIP + _GAP) + _GAP for i in range(len(h.rows))]
    for i, (r, c) in enumerate(zip(h.rows, colors)):
        range_strip(ax, strip_bottom[i], _STRIP, r, c, lo, hi, gid=f"range:{r.name}")
    for x, attr, style, i in lines:
        ax.axvline(x, ymax=strip_bottom[i], color=colors[i], ls=style, lw=1.4,
                   gid=f"{attr}:{h.rows[i].name}", label="_" + attr)
    region = 1 - (strip_bottom[-1] if h.rows else 1.0)
    top = float(heights.max()) if heights.size and heights.max() > 0 else 1.0
    ax.set_ylim(0, top / (1 - region - 0.04))

    ax.set_xlabel("|x| (log2 axis; bar k spans [2^k, 2^(k+1)))")
    ax.set_ylabel("count")
    if title:
        ax.set_title(title)
    handles = [Line2D([], [], color=c, lw=3, label=r.name) for r, c in zip(h.rows, colors)]
    handles += [Line2D([], [], color="0.2", ls=style, lw=1.4, label=text)
                for _, text, style in THRESHOLD_LINES]
    handles += [Patch(color="0.2", alpha=0.35, lw=0, label="subnormal range (strip)"),
                Patch(color="0.2", alpha=0.9, lw=0, label="normal range (strip)")]
    if h.rows:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9,
                  frameon=False, borderaxespad=0.0)
    if table:
        text = h.summary() + ("\n\n" + h.table() if h.rows else "")
        if h.rows and not h.exact:
            text += "\n(bounds from the binade histogram, round to nearest)"
        ax.annotate(text, xy=(0.0, 0.0), xycoords="axes fraction", xytext=(0, -44),
                    textcoords="offset points", ha="left", va="top", fontsize=8,
                    family="monospace")
    return ax
