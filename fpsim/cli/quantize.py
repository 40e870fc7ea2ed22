"""``fpsim quantize VALUES... --format F``: round a few values, show their codes and events."""

from __future__ import annotations

import json

import numpy as np

from fpsim.cli.common import _UsageError, _arg_type, parse_value, render_table, resolve_format
from fpsim.numerics.convert import encode, quantize
from fpsim.numerics.fixed import GridFormat, parse_fixed_spec
from fpsim.numerics.format import Format
from fpsim.numerics.modes import Event, Overflow, RoundMode


def _resolve(text: str):
    """A fixed-point spec (``int8``, ``q7.8``, ``int8*0.05``) or a float format name/spec."""
    grid = parse_fixed_spec(text)
    return grid if grid is not None else resolve_format(text)


def _overflow(text: str) -> str:
    """An overflow policy's name (checked against the format when the values are rounded)."""
    return Overflow.parse(text, fixed=text.strip().lower() in ("wrap", "error")).name.lower()


def register(subparsers) -> None:
    """Add the ``quantize`` parser to the ``fpsim`` sub-parsers ``subparsers``."""
    p = subparsers.add_parser(
        "quantize", help="round a few values into a format",
        description="Round each value into a format and show the result, its code and the events. "
                    "Each value is rounded as a one-element array, so with --rounding sr it gets "
                    "the random bits of element 0 for --seed.",
    )
    p.add_argument("values", nargs="+", metavar="VALUE", type=_arg_type(parse_value, "value"),
                   help="decimal, inf, -inf, nan or hex float (0x1.8p-3)")
    p.add_argument("--format", "-f", required=True, type=_arg_type(_resolve, "format"),
                   help="format name, alias or spec; or a fixed-point spec (int8, q7.8, int8*0.05)")
    p.add_argument("--rounding", "-r", default=RoundMode.RNE,
                   type=_arg_type(RoundMode.parse, "rounding"),
                   help="rne (default), rna, rtz, rup, rdn, rto or sr")
    p.add_argument("--overflow", default=None, type=_arg_type(_overflow, "overflow"),
                   help="ieee (the default for float formats) or saturate; for fixed-point "
                        "formats saturate (default), wrap or error")
    p.add_argument("--seed", type=int, default=0, help="seed of the sr random bits (default 0)")
    p.add_argument("--json", action="store_true", help="print a JSON list of dicts")


def code_fields(code: int, fmt: Format) -> str:
    """A code in binary split as ``sign|exponent|fraction`` (no sign field if unsigned, no
    fraction field if ``man_bits == 0``), e.g. ``0|01111|0000000000`` for 1.0 in float16."""
    bits = format(code, f"0{fmt.bits}b")
    if isinstance(fmt, GridFormat):
        return bits  # a two's-complement integer: no fields
    fields = []
    if fmt.signed:
        fields, bits = [bits[0]], bits[1:]
    fields.append(bits[: fmt.exp_bits])
    if fmt.man_bits:
        fields.append(bits[fmt.exp_bits:])
    return "|".join(fields)


def quantize_one(value: float, fmt: Format, rounding="rne", overflow=None, seed: int = 0) -> dict:
    """Round one value as a one-element array and describe the result.

    Returns a dict with ``input`` and ``value`` (floats), ``code`` (int), ``hex`` (zero-padded to
    the format's width), ``binary`` (:func:`code_fields`) and ``events`` (lower-case
    :class:`~fpsim.numerics.modes.Event` names, in flag order).
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


def run(args) -> int:
    """``fpsim quantize``: print one row (or JSON dict) per value."""
    fmt = args.format
    try:
        rows = [quantize_one(v, fmt, args.rounding, args.overflow, args.seed) for v in args.values]
    except ValueError as err:  # a policy the format does not take, a value out of range
        raise _UsageError(str(err)) from None
    if args.json:
        print(json.dumps([{"format": str(fmt), **r} for r in rows], indent=2))
        return 0
    if isinstance(fmt, GridFormat):
        fields = ["two's complement" if fmt.signed else "unsigned integer"]
    else:
        fields = ["sign"] * fmt.signed + ["exponent"] + ["fraction"] * bool(fmt.man_bits)
    headers = ["input", f"{fmt} ({args.rounding.name.lower()})", "code", "|".join(fields), "events"]
    columns = [
        [repr(r["input"]) for r in rows], [repr(r["value"]) for r in rows],
        [r["hex"] for r in rows], [r["binary"] for r in rows],
        [",".join(r["events"]) or "-" for r in rows],
    ]
    print(render_table(headers, columns, right={0, 1}))
    return 0
