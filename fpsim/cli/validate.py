"""``fpsim validate quantize|arith|hardware ...``: fpsim against independent oracles.

Each subject is a module ``fpsim.validate.<subject>`` that describes its options with
``add_arguments(parser)`` and runs with ``run(args) -> int``; this command only puts them under
one parser. A subject (or the whole ``fpsim.validate`` package) that cannot be imported still
gets a parser, so that ``fpsim validate ...`` names the missing module (status 2) instead of
failing to parse or breaking the other commands.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: The package of the validation programs.
PACKAGE = "fpsim.validate"

#: Subject name -> its one-line help in ``fpsim validate --help``.
SUBJECTS = {
    "quantize": "exhaustive float32 -> format conversions vs ml_dtypes/numpy",
    "arith": "arithmetic vs SoftFloat and exhaustive small formats vs the exact reference",
    "gemm": "a GPU's GEMM output vs the tensor-core models (exact matches, ulp differences, "
            "--fit ranks every model)",
    "hardware": "the GPU's fp16 / bf16 arithmetic and conversions vs the emulator, exhaustively "
                "(needs a CUDA GPU)",
}


def _import(name: str):
    """``(module, None)``, or ``(None, message)`` with the one-line error when ``name`` cannot be
    imported."""
    try:
        return importlib.import_module(name), None
    except ImportError as err:
        if getattr(err, "name", None) == name:
            return None, f"fpsim validate: error: this fpsim has no validation module ({name})"
        return None, f"fpsim validate: error: cannot import {name}: {err}"


def _unavailable(parser, message: str) -> None:
    """Make ``parser`` accept any arguments and carry ``message`` for :func:`run` to print:
    whatever follows, the answer is that the module is missing."""
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.set_defaults(import_error=message)


def register(subparsers) -> None:
    """Add the ``validate`` parser, with one sub-parser per subject of :data:`SUBJECTS`, to the
    ``fpsim`` sub-parsers ``subparsers``."""
    # The subjects' options live in their modules, so building the parser imports them; they
    # import numpy and fpsim.numerics at module level (the CUDA parts load only when run).
    package, error = _import(PACKAGE)
    if package is None:
        _unavailable(subparsers.add_parser("validate", help="validation (not available)",
                                           add_help=False), error)
        return
    p = subparsers.add_parser(
        "validate", help="validate fpsim against independent oracles",
        description="Validate fpsim against independent oracles: conversions (quantize), "
                    "arithmetic (arith), a GPU's own fp16 / bf16 arithmetic (hardware). "
                    "Status 0: no mismatch, 1: mismatches, 2: bad input.")
    sub = p.add_subparsers(dest="subject", metavar="SUBJECT")
    sub.required = True
    for name, help_text in SUBJECTS.items():
        module, error = _import(f"{PACKAGE}.{name}")
        if module is None:
            _unavailable(sub.add_parser(name, help=help_text, add_help=False), error)
            continue
        q = sub.add_parser(name, help=help_text)
        module.add_arguments(q)
        q.set_defaults(subject_run=module.run)


def run(args) -> int:
    """Run the subject named on the command line; 2 (one line on stderr) when its module is
    missing."""
    error = getattr(args, "import_error", None)
    if error:
        print(error, file=sys.stderr)
        return 2
    return args.subject_run(args)
