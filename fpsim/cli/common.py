"""What several ``fpsim`` commands share: the parser class that turns usage errors into one line,
the command-line readers of values and formats, and the plain-text table."""

from __future__ import annotations

import argparse
import re

from fpsim.numerics.format import Format
from fpsim.numerics.formats import format as _format

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

    def parse_command(self, argv: list[str]) -> argparse.Namespace:
        """Parse the arguments of one command, positionals and options intermixed (so values
        may follow options: ``quantize 1 --format fp16 2``).

        argparse cannot intermix a parser with subcommands or a catch-all (REMAINDER)
        positional; those are parsed the ordinary way.
        """
        if any(a.nargs in (argparse.PARSER, argparse.REMAINDER) for a in self._actions):
            return self.parse_args(argv)
        return self.parse_intermixed_args(argv)


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


def run_one_or_study(command: str, args, one, study) -> int:
    """Run ``study(args)`` when ``args.study`` is set, else ``one(args)``; an input error
    (ValueError, TypeError, OSError, RecordError) becomes the one-line usage error
    ``fpsim COMMAND: error: ...`` (the commands with a single-run and a ``--study`` form)."""
    from fpsim.training.records import RecordError
    try:
        return study(args) if args.study else one(args)
    except (ValueError, TypeError, OSError, RecordError) as err:
        raise _UsageError(f"fpsim {command}: error: {err}") from None
