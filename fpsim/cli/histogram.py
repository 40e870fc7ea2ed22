"""``fpsim histogram FILE [--formats F,...] [--out PATH] [--json]``: the binade histogram of the
values in a ``.npy`` / ``.npz`` file and what each format's rounding does to them.

Files are read with ``allow_pickle=False``: an untrusted file never runs code, and one holding a
pickled (object) array is refused.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np

from fpsim.cli.common import _UsageError

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


def register(subparsers) -> None:
    """Add the ``histogram`` parser to the ``fpsim`` sub-parsers ``subparsers``."""
    p = subparsers.add_parser(
        "histogram", help="binade histogram of an array and per-format underflow/overflow",
        description="Binade histogram of |x| (bin k: 2^k <= |x| < 2^(k+1)) of the values in a "
                    ".npy or .npz file, and per format the fractions of the non-zero finite "
                    "values that underflow (round to 0), become subnormal or overflow, counted "
                    "by fpsim's rounding. Files are read without unpickling.",
    )
    p.add_argument("file", metavar="FILE", help=".npy file, or .npz (see --key)")
    p.add_argument("--formats", "-f", default="fp16,bf16,e5m2,e4m3",
                   help="comma-separated formats, each NAME[:ROUNDING[:OVERFLOW]] "
                        "(default fp16,bf16,e5m2,e4m3)")
    p.add_argument("--key", help="array name inside a .npz (default: its only array)")
    p.add_argument("--rounding", "-r", default="rne",
                   help="rounding of formats given without one (default rne)")
    p.add_argument("--overflow", default="ieee",
                   help="overflow policy of formats given without one: ieee (default) or saturate")
    p.add_argument("--seed", type=int, default=0, help="seed of the sr random bits (default 0)")
    p.add_argument("--out", "-o", metavar="PATH",
                   help="write the plot to PATH.png and PATH.svg (a .png/.svg ending is kept)")
    p.add_argument("--title", help="plot title (default: the file name)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _fail(message: str):
    raise _UsageError(f"fpsim histogram: error: {message}")


def load_array(path: str, key: str | None = None) -> np.ndarray:
    """The array in a ``.npy`` file, or array ``key`` (default: the only one) of a ``.npz``,
    read with ``allow_pickle=False``.

    Raises:
        ValueError: the file is missing, not a .npy/.npz, holds pickled data or no numbers, or
            the key is missing or ambiguous; the message says which, in one line.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError as err:
        raise ValueError(f"cannot read {path!r}: {err.strerror or err}") from None
    if head not in (_NPY_MAGIC,) and head[:4] != _ZIP_MAGIC:
        raise ValueError(f"{path!r} is not a .npy or .npz file (pickled data is never loaded)")
    try:
        if head == _NPY_MAGIC:
            if key is not None:
                raise ValueError(f"--key {key!r} is for .npz files; {path!r} is a .npy file")
            arr = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as npz:
                names = list(npz.files)
                if key is None:
                    if len(names) != 1:
                        raise ValueError(f"{path!r} holds {len(names)} arrays "
                                         f"({', '.join(names) or 'none'}): choose one with --key")
                    key = names[0]
                elif key not in names:
                    raise ValueError(f"{path!r} has no array {key!r}; it holds: "
                                     f"{', '.join(names) or 'none'}")
                arr = npz[key]
    except ValueError as err:
        msg = str(err)
        if "allow_pickle" in msg or "pickled" in msg or "Object arrays" in msg:
            raise ValueError(f"{path!r} holds a pickled (object) array, which is never loaded: "
                             "save plain numeric arrays") from None
        if path in msg:
            raise
        raise ValueError(f"{path!r} cannot be read: {msg}") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise ValueError(f"{path!r} cannot be read: {err}") from None
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"{path!r} holds dtype {arr.dtype}, not real numbers")
    return arr


def run(args) -> int:
    """``fpsim histogram``: print the table (or JSON); write the plot with ``--out``."""
    from fpsim.analysis.histogram import histogram, parse_format_spec

    formats = [s.strip() for s in args.formats.split(",") if s.strip()]
    if not formats:
        _fail("--formats is empty: give one or more formats, e.g. fp16,bf16")
    try:  # formats first: a typo is reported before a large file is read
        for spec in formats:
            parse_format_spec(spec, args.rounding, args.overflow)
    except ValueError as err:
        _fail(str(err))
    try:
        arr = load_array(args.file, args.key)
    except ValueError as err:
        _fail(str(err))
    title = args.title if args.title is not None else args.file
    try:
        h = histogram(arr, formats, path=args.out, title=title, rounding=args.rounding,
                      overflow=args.overflow, seed=args.seed)
    except (ValueError, TypeError) as err:
        _fail(str(err))
    except OSError as err:
        _fail(f"cannot write {args.out!r}: {err.strerror or err}")
    if args.json:
        print(json.dumps(h.as_dict(), indent=2))
    else:
        print(h.text())
        if h.files:
            print(f"\nplot: {', '.join(h.files)}")
    return 0
