"""The ``fpsim`` command line: format tables, one-off roundings, and the validation run.

Subcommands::

    fpsim formats [NAMES...] [--json]       properties of named formats, aliases or specs
    fpsim quantize VALUES... --format F     round a few values, show code bits and events
    fpsim validate ...                      forwarded to ``fpsim.validate.main``
    fpsim train [--model M --policy P ...]  train with run records (see fpsim.cli_train)
    fpsim compare [--config C ...]          one setting under several loss scalers + report
    fpsim report DB [--study S]             redraw a study's report

Every error caused by the input (unknown format, bad rounding name, unparsable value) is one line
on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import re
import sys

import numpy as np

from fpsim.cli import train as cli_train
from fpsim.training import study as compare
from fpsim.numerics.convert import encode, quantize
from fpsim.numerics.format import Format
from fpsim.numerics.formats import NAMED
from fpsim.numerics.formats import format as _format
from fpsim.numerics.modes import Event, Overflow, RoundMode

_HEX_RE = re.compile(r"^[+-]?0x", re.IGNORECASE)


class _UsageError(Exception):
    """An error in the command line; ``main`` prints it as one line and returns 2."""


def parse_value(text: str) -> float:
    """Parse a command-line number: a decimal (``1e-8``), ``inf``, ``-inf``, ``nan``, or a hex
    float such as ``0x1.8p-3`` / ``-0x1p-24`` (read with :meth:`float.fromhex`).

    Raises:
        ValueError: the text is not a number; the message names it.
    """
    s = text.strip()
    try:
        return float.fromhex(s) if _HEX_RE.match(s) else float(s)
    except ValueError:
        raise ValueError(
            f"value {text!r} is not a number: use a decimal (1e-8), inf, -inf, nan "
            "or a hex float (0x1.8p-3)"
        ) from None


class _NumberLike:
    """Stands in for argparse's negative-number regex so ``-1e-8``, ``-inf`` and ``-0x1p-3`` are
    read as values, not as unknown options (argparse only knows ``-1`` and ``-1.5``)."""

    def match(self, arg: str):
        """Truthy when ``arg`` is a number that starts with ``-``."""
        try:
            parse_value(arg)
        except ValueError:
            return None
        return arg.startswith("-")


class _Parser(argparse.ArgumentParser):
    """ArgumentParser that raises :class:`_UsageError` instead of printing usage and exiting."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NumberLike()

    def error(self, message):
        """Raise the message (prefixed with the program name) as a one-line usage error."""
        raise _UsageError(f"{self.prog}: error: {message} (see '{self.prog} --help')")


def _arg_type(parse, name):
    """An argparse ``type=`` that calls ``parse`` and reports its ValueError as a usage error."""
    def convert(text):
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = name  # argparse names the type in its messages
    return convert


def resolve_format(text: str) -> Format:
    """:func:`fpsim.format` of a command-line name, alias or spec.

    Raises:
        ValueError: unknown or invalid; the message names ``text``.
    """
    try:
        return _format(text)
    except ValueError as err:
        msg = str(err)
        if repr(text.strip().lower()) not in msg:
            msg = f"format {text!r}: {msg}"
        raise ValueError(msg) from None


# ---- formats ----------------------------------------------------------------------------------
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


def _value_column(values: list[float]) -> list[str]:
    """Cells ``repr (2^k)``: reprs right-aligned, the powers of two aligned after them."""
    reprs = [repr(float(v)) for v in values]
    pows = [power_of_two(v) for v in values]
    w = max(map(len, reprs))
    if not any(pows):
        return [r.rjust(w) for r in reprs]
    wp = max(len(p) for p in pows if p) + 2
    return [r.rjust(w) + " " + (f"({p})" if p else "").ljust(wp) for r, p in zip(reprs, pows)]


def render_table(headers: list[str], columns: list[list[str]], right: set[int]) -> str:
    """Plain-text table: header, dashes, one row per entry; columns in ``right`` right-aligned."""
    widths = [max(len(h), *map(len, col)) for h, col in zip(headers, columns)]

    def line(cells):
        out = [c.rjust(w) if i in right else c.ljust(w)
               for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(out).rstrip()

    rows = [line(headers), line(["-" * w for w in widths])]
    rows += [line(cells) for cells in zip(*columns)]
    return "\n".join(rows)


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


def _cmd_formats(args) -> int:
    """``fpsim formats``: print the table (or JSON) of the named or given formats."""
    fmts = []
    for name in args.names or list(NAMED):
        try:
            fmts.append(resolve_format(name))
        except ValueError as err:
            raise _UsageError(f"fpsim formats: error: {err}") from None
    if args.json:
        print(json.dumps([format_properties(f) for f in fmts], indent=2))
    else:
        print(formats_table(fmts))
    return 0


# ---- quantize ---------------------------------------------------------------------------------
def code_fields(code: int, fmt: Format) -> str:
    """A code in binary split as ``sign|exponent|fraction`` (no sign field if unsigned, no
    fraction field if ``man_bits == 0``), e.g. ``0|01111|0000000000`` for 1.0 in float16."""
    bits = format(code, f"0{fmt.bits}b")
    fields = []
    if fmt.signed:
        fields, bits = [bits[0]], bits[1:]
    fields.append(bits[: fmt.exp_bits])
    if fmt.man_bits:
        fields.append(bits[fmt.exp_bits:])
    return "|".join(fields)


def quantize_one(value: float, fmt: Format, rounding="rne", overflow="ieee", seed: int = 0) -> dict:
    """Round one value as a one-element array and describe the result.

    Returns a dict with ``input`` and ``value`` (floats), ``code`` (int), ``hex`` (zero-padded to
    the format's width), ``binary`` (:func:`code_fields`) and ``events`` (lower-case
    :class:`~fpsim.modes.Event` names, in flag order).
    """
    x = np.array([value], dtype=np.float64)
    out, stats = quantize(x, fmt, rounding, overflow, seed, stats=True)
    code = int(encode(x, fmt, rounding, overflow, seed)[0])
    events = [e.name.lower() for e in Event if getattr(stats, e.name.lower())]
    return {
        "input": float(value), "value": float(out[0]), "code": code,
        "hex": f"0x{code:0{(fmt.bits + 3) // 4}x}", "binary": code_fields(code, fmt),
        "events": events,
    }


def _cmd_quantize(args) -> int:
    """``fpsim quantize``: print one row (or JSON dict) per value."""
    fmt = args.format
    rows = [quantize_one(v, fmt, args.rounding, args.overflow, args.seed) for v in args.values]
    if args.json:
        print(json.dumps([{"format": str(fmt), **r} for r in rows], indent=2))
        return 0
    fields = ["sign"] * fmt.signed + ["exponent"] + ["fraction"] * bool(fmt.man_bits)
    headers = ["input", f"{fmt} ({args.rounding.name.lower()})", "code", "|".join(fields), "events"]
    columns = [
        [repr(r["input"]) for r in rows], [repr(r["value"]) for r in rows],
        [r["hex"] for r in rows], [r["binary"] for r in rows],
        [",".join(r["events"]) or "-" for r in rows],
    ]
    print(render_table(headers, columns, right={0, 1}))
    return 0


# ---- validate ---------------------------------------------------------------------------------
def _cmd_validate(rest: list[str]) -> int:
    """``fpsim validate``: hand the arguments to ``fpsim.validate.main`` and return its status."""
    try:
        validate = importlib.import_module("fpsim.validate.quantize")
    except ImportError as err:
        if getattr(err, "name", None) == "fpsim.validate":
            print("fpsim validate: error: this fpsim has no validation module (fpsim.validate)",
                  file=sys.stderr)
        else:
            print(f"fpsim validate: error: cannot import fpsim.validate: {err}", file=sys.stderr)
        return 2
    try:
        rc = validate.main(rest)
    except SystemExit as exc:
        rc = exc.code
    if rc is None:
        return 0
    if isinstance(rc, int):
        return rc
    print(rc, file=sys.stderr)
    return 1


# ---- entry point ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``fpsim`` command (subcommands formats, quantize, validate)."""
    return _build()[0]


def _build() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser and its subcommand parsers by name."""
    parser = _Parser(prog="fpsim", description="Bit-exact low-precision floating-point simulator.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser(
        "formats", help="table of format properties",
        description="Properties of floating-point formats (every named format by default).",
    )
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="format names, aliases or specs such as e5m10, ue8m0b127fn-nozero")
    p.add_argument("--json", action="store_true", help="print a JSON list of dicts")
    p.set_defaults(handler=_cmd_formats)

    p = sub.add_parser(
        "quantize", help="round a few values into a format",
        description="Round each value into a format and show the result, its code and the events. "
                    "Each value is rounded as a one-element array, so with --rounding sr it gets "
                    "the random bits of element 0 for --seed.",
    )
    p.add_argument("values", nargs="+", metavar="VALUE", type=_arg_type(parse_value, "value"),
                   help="decimal, inf, -inf, nan or hex float (0x1.8p-3)")
    p.add_argument("--format", "-f", required=True, type=_arg_type(resolve_format, "format"),
                   help="format name, alias or spec")
    p.add_argument("--rounding", "-r", default=RoundMode.RNE,
                   type=_arg_type(RoundMode.parse, "rounding"),
                   help="rne (default), rna, rtz, rup, rdn, rto or sr")
    p.add_argument("--overflow", default=Overflow.IEEE, type=_arg_type(Overflow.parse, "overflow"),
                   help="ieee (default) or saturate")
    p.add_argument("--seed", type=int, default=0, help="seed of the sr random bits (default 0)")
    p.add_argument("--json", action="store_true", help="print a JSON list of dicts")
    p.set_defaults(handler=_cmd_quantize)

    sub.add_parser("validate", help="run the validation suite (arguments are forwarded)",
                   add_help=False)
    cli_train.add_parser(sub)
    compare.add_parsers(sub)
    return parser, sub.choices


def main(argv: list[str] | None = None) -> int:
    """Run the ``fpsim`` command with ``argv`` (default ``sys.argv[1:]``); return the exit status.

    Usage errors print one line on stderr and return 2.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["validate"]:
        return _cmd_validate(argv[1:])
    parser, commands = _build()
    try:
        if argv and argv[0] in commands:
            # Intermixed, so values may follow options: `quantize 1 --format fp16 2`.
            args = commands[argv[0]].parse_intermixed_args(argv[1:])
        else:
            args = parser.parse_args(argv)  # help, or an error naming the unknown command
        return args.handler(args)
    except _UsageError as err:
        print(err, file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except BrokenPipeError:  # `fpsim formats | head`: stop quietly, as the Python docs advise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
