"""The ``fpsim`` command line: format tables, one-off roundings, validation and training.

Subcommands, one module each (:data:`COMMANDS`)::

    fpsim formats [NAMES...] [--json]       properties of named formats, aliases or specs
                  [--plot [--out PATH]]     ... and a plot of their ranges and spacing
    fpsim histogram FILE [--formats F,...]  binade histogram of an array, per-format underflow
    fpsim quantize VALUES... --format F     round a few values, show code bits and events
    fpsim validate quantize|arith|hardware  fpsim against independent oracles
    fpsim train [--model M --policy P ...]  train with run records
    fpsim compare [--config C ...]          one setting under several loss scalers + report
    fpsim report DB [--study S]             redraw a study's report
    fpsim halp [--problem P ...]            the HALP study (bit-centred SVRG)
    fpsim ptq --db DB --run ID [--bits B]   post-training quantization, multiple points
    fpsim lca --db DB --run ID              loss-change allocation per layer and step
    fpsim sweep SPEC.toml --db STUDY        a grid of runs on Dask, one study database
    fpsim warmup [--all] [--jobs N]         compile the kernels ahead of use

A command module has ``register(subparsers)``, which adds its parser(s), and ``run(args) -> int``,
which runs a parsed command line and returns the exit status.

Every error caused by the input (unknown format, bad rounding name, unparsable value) is one line
on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from fpsim import _interrupt
from fpsim.cli import (compare, formats, halp, histogram, lca, ptq, quantize, sweep, train,
                       validate, warmup)
from fpsim.cli.common import _Parser, _UsageError

#: The command modules, in the order of ``fpsim --help``.
COMMANDS = (formats, quantize, histogram, validate, train, compare, sweep, halp, ptq, lca,
            warmup)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``fpsim`` command, one subcommand per parser that a module of
    :data:`COMMANDS` registers."""
    return _build()[0]


def _build() -> tuple[argparse.ArgumentParser, dict]:
    """The parser, and ``{command name: (module, its parser)}``."""
    parser = _Parser(prog="fpsim", description="Bit-exact low-precision floating-point simulator.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    commands = {}
    for module in COMMANDS:
        before = set(sub.choices)
        module.register(sub)
        for name in sub.choices.keys() - before:
            command = sub.choices[name]
            # main parses a command's own parser, which does not fill in the top-level dest;
            # a module with several commands (compare, report) tells them apart by it.
            command.set_defaults(command=name)
            commands[name] = module, command
    return parser, commands


def main(argv: list[str] | None = None) -> int:
    """Run the ``fpsim`` command with ``argv`` (default ``sys.argv[1:]``); return the exit status.

    Usage errors print one line on stderr and return 2.
    """
    _interrupt.end_startup()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, commands = _build()
    try:
        if argv and argv[0] in commands:
            # The command's own parser, so values may follow options (`quantize 1 -f fp16 2`).
            args = commands[argv[0]][1].parse_command(argv[1:])
        else:
            args = parser.parse_args(argv)  # help, or an error naming the unknown command
        return commands[args.command][0].run(args)
    except _UsageError as err:
        print(err, file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:  # (a training loop handles its own, checkpointing first)
        print(_interrupt.MESSAGE, file=sys.stderr)
        return _interrupt.EXIT_INTERRUPTED
    except BrokenPipeError:  # `fpsim formats | head`: stop quietly, as the Python docs advise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
