"""``fpsim formats [NAMES...] [--json] [--plot [--out PATH]]``: the properties of named formats,
aliases or specs, and optionally a plot of their ranges and relative spacing."""

from __future__ import annotations

import json
import math
import sys

from fpsim.cli.common import _UsageError, render_table, resolve_format
from fpsim.numerics.fixed import GridFormat, parse_fixed_spec
from fpsim.numerics.format import Format
from fpsim.numerics.formats import NAMED


def register(subparsers) -> None:
    """Add the ``formats`` parser to the ``fpsim`` sub-parsers ``subparsers``."""
    p = subparsers.add_parser(
        "formats", help="table of format properties",
        description="Properties of floating-point formats (every named format by default).",
    )
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="format names, aliases or specs such as e5m10, ue8m0b127fn-nozero; "
                        "fixed-point specs such as int8, q7.8, int8-sym*0.05 get a table of "
                        "their own")
    p.add_argument("--json", action="store_true", help="print a JSON list of dicts")
    p.add_argument("--plot", action="store_true",
                   help="also draw the formats side by side: range and relative spacing")
    p.add_argument("--out", "-o", metavar="PATH", default=None,
                   help="with --plot: write PATH.png and PATH.svg (a .png/.svg ending is kept; "
                        "default: formats.png and formats.svg)")


def power_of_two(x: float) -> str | None:
    """``"2^k"`` when ``x`` is a positive power of two, else None."""
    if not (x > 0 and math.isfinite(x)):
        return None
    mant, exp = math.frexp(x)
    return f"2^{exp - 1}" if mant == 0.5 else None


def format_properties(fmt: Format) -> dict:
    """The properties shown by ``fpsim formats``, as a JSON-ready dict (floats are exact)."""
    return {
        "name": str(fmt), "spec": fmt.spec, "bits": fmt.bits,
        "exp_bits": fmt.exp_bits, "man_bits": fmt.man_bits, "bias": fmt.bias,
        "emin": fmt.emin, "emax": fmt.emax,
        "max": fmt.max, "min_normal": fmt.min_normal, "min_subnormal": fmt.min_subnormal,
        "eps": fmt.eps, "specials": fmt.specials,
        "subnormals": fmt.subnormals, "signed": fmt.signed, "n_finite": fmt.n_finite,
    }


#: Table columns of ``fpsim formats``: (header, key in :func:`format_properties`).
_FORMAT_COLUMNS = (
    ("name", "name"), ("bits", "bits"), ("e", "exp_bits"), ("m", "man_bits"), ("bias", "bias"),
    ("emin", "emin"), ("emax", "emax"), ("max", "max"), ("min normal", "min_normal"),
    ("min subnormal", "min_subnormal"), ("eps", "eps"), ("specials", "specials"),
    ("subnormals", "subnormals"), ("signed", "signed"), ("n_finite", "n_finite"),
)


def grid_properties(fmt: GridFormat) -> dict:
    """The properties of a fixed-point / integer-grid format shown by ``fpsim formats``."""
    return {
        "name": str(fmt), "spec": fmt.spec, "bits": fmt.bits, "signed": fmt.signed,
        "symmetric": fmt.symmetric, "delta": fmt.delta, "k_min": fmt.k_min, "k_max": fmt.k_max,
        "min": fmt.min, "max": fmt.max,
    }


def grids_table(fmts: list[GridFormat]) -> str:
    """The aligned plain-text table of :func:`grid_properties`."""
    props = [grid_properties(f) for f in fmts]
    keys = ("name", "bits", "signed", "symmetric", "delta", "k_min", "k_max", "min", "max")
    columns = []
    for key in keys:
        vals = [p[key] for p in props]
        if isinstance(vals[0], bool):
            columns.append(["yes" if v else "no" for v in vals])
        elif isinstance(vals[0], float):
            columns.append(_value_column(vals))
        else:
            columns.append([str(v) for v in vals])
    headers = ["name", "bits", "signed", "symmetric", "step δ", "k min", "k max", "min", "max"]
    return render_table(headers, columns, right={1, 4, 5, 6, 7, 8})


def _value_column(values: list[float]) -> list[str]:
    """Cells ``repr (2^k)``: reprs right-aligned, the powers of two aligned after them."""
    reprs = [repr(float(v)) for v in values]
    pows = [power_of_two(v) for v in values]
    w = max(map(len, reprs))
    if not any(pows):
        return [r.rjust(w) for r in reprs]
    wp = max(len(p) for p in pows if p) + 2
    return [r.rjust(w) + " " + (f"({p})" if p else "").ljust(wp) for r, p in zip(reprs, pows)]


def formats_table(fmts: list[Format]) -> str:
    """The aligned plain-text table of :func:`format_properties` printed by ``fpsim formats``."""
    props = [format_properties(f) for f in fmts]
    headers, columns, right = [], [], set()
    for i, (header, key) in enumerate(_FORMAT_COLUMNS):
        vals = [p[key] for p in props]
        if isinstance(vals[0], float):
            cells = _value_column(vals)
        elif isinstance(vals[0], bool):
            cells = ["yes" if v else "no" for v in vals]
        else:
            cells = [str(v) for v in vals]
        if isinstance(vals[0], (int, float)) and not isinstance(vals[0], bool):
            right.add(i)
        headers.append(header)
        columns.append(cells)
    return render_table(headers, columns, right)


def run(args) -> int:
    """``fpsim formats``: print the table (or JSON) of the named or given formats."""
    if args.out is not None and not args.plot:
        raise _UsageError("fpsim formats: error: --out is the file of --plot; add --plot")
    fmts, grids = [], []
    for name in args.names or list(NAMED):
        try:
            grid = parse_fixed_spec(name)
            if grid is not None:
                grids.append(grid)
            else:
                fmts.append(resolve_format(name))
        except ValueError as err:
            raise _UsageError(f"fpsim formats: error: {err}") from None
    if args.plot and grids:
        raise _UsageError("fpsim formats: error: --plot draws floating-point formats; "
                          f"leave out {', '.join(map(str, grids))}")
    files = _plot(fmts, args.out or "formats") if args.plot else []
    if args.json:
        print(json.dumps([format_properties(f) for f in fmts]
                         + [grid_properties(g) for g in grids], indent=2))
        if files:  # stdout stays the JSON list
            print(f"plot: {', '.join(files)}", file=sys.stderr)
    else:
        tables = ([formats_table(fmts)] if fmts else []) + ([grids_table(grids)] if grids else [])
        print("\n\n".join(tables))
        if files:
            print(f"\nplot: {', '.join(files)}")
    return 0


def _plot(fmts: list[Format], path: str) -> list[str]:
    """Draw ``fmts`` (:func:`fpsim.analysis.format_plot.plot_formats`) to PNG and SVG files."""
    # Imported here: matplotlib loads only for --plot.
    from fpsim.analysis.format_plot import plot_formats
    from fpsim.analysis.histogram import save_figure

    try:
        return save_figure(plot_formats(fmts), path)
    except OSError as err:
        raise _UsageError(f"fpsim formats: error: cannot write {path!r}: "
                          f"{err.strerror or err}") from None
