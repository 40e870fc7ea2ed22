"""``fpsim validate gemm``: a GPU's GEMM output against fpsim's tensor-core models.

A user gives A, B (and C) and the D their GPU produced, and names a preset (``--preset
H100-fp16``) or asks ``--fit``. The report gives the exact-match count, the distribution of the
differences in units in the last place of the output format, the first mismatches in hex with
their indices, and with ``--fit`` every applicable preset (and two plain references: the
correctly rounded binary32 result and a sequential binary32 sum) ranked by how many results it
explains. Python: :func:`validate_gemm` returns a :class:`GemmValidation`.

Files are ``.npy`` or ``.npz`` (one array, or ``FILE.npz:KEY``), loaded without pickles (a file
never runs code). Arrays hold values (float16, float32, float64, ml_dtypes bfloat16/float8) or raw
bit patterns: uint32 are binary32 patterns, uint16 patterns of the 16-bit format involved (A/B:
the input format, fp16 or bf16; C/D: binary16), uint8 codes of the FP8 input format.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import numpy as np

#: The plain references ranked beside the presets with ``--fit``.
REFERENCES = {
    "fp32-correctly-rounded": "c + sum a*b computed exactly, rounded once to binary32 (RNE)",
    "fp32-sequential": "((c + a0 b0) + a1 b1) + ..., exact products, every addition rounded to "
                       "binary32 (RNE)",
}
#: ULP differences beyond this are counted together.
ULP_BINS = 8


class GemmInputError(ValueError):
    """A file or array that cannot be validated (shape, dtype, values), with the reason."""


@dataclasses.dataclass
class GemmValidation:
    """What :func:`validate_gemm` found.

    Attributes:
        preset: the model compared (with ``fit``: the best-ranked one).
        matches, total: results equal bit for bit (two NaNs match), results compared.
        ulp_differences: ``{difference: count}`` of ``D - model`` in units in the last place of
            the output format (signed, the results ordered as integers; ``">8"``/``"<-8"``
            collect the larger ones, ``"nan"`` a NaN on one side only).
        first_mismatches: up to ``show`` mismatches: ``{"index", "gpu", "model", "ulps"}``
            (values in hex).
        ranking: with ``fit``, ``[{"preset", "matches", "same_as"}]`` best first (``same_as``:
            presets with identical parameters, which no data can tell apart); else None.
    """

    preset: str
    matches: int
    total: int
    ulp_differences: dict
    first_mismatches: list
    ranking: list | None = None

    def to_dict(self) -> dict:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    def report(self) -> str:
        """A human-readable report."""
        pct = 100.0 * self.matches / self.total if self.total else 100.0
        lines = [f"model {self.preset}: {self.matches} / {self.total} results match bit for bit "
                 f"({pct:.2f}%)"]
        if self.total != self.matches:
            lines.append("differences (GPU - model) in ulps of the output format:")
            for k, v in self.ulp_differences.items():
                if k != "0":
                    lines.append(f"  {k:>4}: {v}")
            lines.append("first mismatches (index: GPU vs model):")
            for m in self.first_mismatches:
                lines.append(f"  {tuple(m['index'])}: {m['gpu']} vs {m['model']} ({m['ulps']} ulp)")
        if self.ranking is not None:
            lines.append("ranking (results explained):")
            for r in self.ranking:
                same = f"  (same parameters: {', '.join(r['same_as'])})" if r["same_as"] else ""
                lines.append(f"  {r['preset']:<26} {r['matches']:>9} / {self.total}{same}")
        return "\n".join(lines)


# ---- loading --------------------------------------------------------------------------------------
def load_array(spec: str) -> np.ndarray:
    """The array in ``spec``: ``FILE.npy``, ``FILE.npz`` holding one array, or ``FILE.npz:KEY``;
    never unpickles. GemmInputError naming the file otherwise."""
    path, key = spec, ""
    if ":" in spec and spec.rsplit(":", 1)[0].endswith(".npz"):
        path, key = spec.rsplit(":", 1)
    try:
        obj = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise GemmInputError(f"cannot read {path}: {err}") from None
    if isinstance(obj, np.lib.npyio.NpzFile):
        with obj:
            keys = list(obj.keys())
            if not key:
                if len(keys) != 1:
                    raise GemmInputError(f"{path} holds {len(keys)} arrays ({', '.join(keys)}): "
                                         f"name one as {path}:KEY")
                key = keys[0]
            if key not in keys:
                raise GemmInputError(f"{path} has no array {key!r} (it has {', '.join(keys)})")
            try:
                return obj[key]
            except ValueError as err:
                raise GemmInputError(f"cannot read {path}:{key}: {err}") from None
    if key:
        raise GemmInputError(f"{path} is a .npy file: it has no keys ({key!r} given)")
    return obj


def as_values(arr: np.ndarray, name: str, bits_format: str) -> np.ndarray:
    """``arr`` as float64 values: floats as they are, raw bit patterns decoded (uint32 as
    binary32, uint16 / uint8 as codes of the format named ``bits_format``)."""
    from fpsim.numerics.convert import decode
    arr = np.asarray(arr)
    kind, size = arr.dtype.kind, arr.dtype.itemsize
    if kind == "f":
        return arr.astype(np.float64)
    if kind == "u" and size == 4:
        return arr.view(np.float32).astype(np.float64)
    if (kind == "u" and size in (1, 2)) or kind == "V":
        try:
            from fpsim.numerics.formats import format as fmt_of
            fmt = fmt_of(bits_format)
        except ValueError:
            fmt = None
        if fmt is None or (fmt.exp_bits + fmt.man_bits + 1 + 7) // 8 != size:
            raise GemmInputError(f"{name} holds {size * 8}-bit patterns ({arr.dtype}), but its "
                                 f"format here is {bits_format}: give values or patterns of it")
        return decode(arr.view(f"u{size}"), fmt)
    try:  # ml_dtypes floats and other float-like dtypes
        return arr.astype(np.float64)
    except (TypeError, ValueError):
        raise GemmInputError(f"{name} has dtype {arr.dtype}: use float16/float32/float64, "
                             f"ml_dtypes floats, or uint32/uint16/uint8 bit patterns") from None


# ---- comparison -----------------------------------------------------------------------------------
def _ordered(v: np.ndarray, output: str) -> np.ndarray:
    """Values of the output format as integers in value order (+0 and -0 both 0), so that the
    difference of two is their distance in ulps."""
    if output == "fp16":
        b = v.astype(np.float16).view(np.int16).astype(np.int64)
        return np.where(b < 0, -(b & 0x7FFF), b)
    b = v.astype(np.float32).view(np.int32).astype(np.int64)
    return np.where(b < 0, -(b & 0x7FFFFFFF), b)


def _same(d: np.ndarray, m: np.ndarray, output: str) -> np.ndarray:
    """Bit equality of two arrays of the output format's values (two NaNs are equal)."""
    dt = np.float16 if output == "fp16" else np.float32
    return (d.astype(dt).view(f"u{np.dtype(dt).itemsize}")
            == m.astype(dt).view(f"u{np.dtype(dt).itemsize}")) | (np.isnan(d) & np.isnan(m))


def _hex(v: float, output: str) -> str:
    if output == "fp16":
        return f"0x{int(np.float16(v).view(np.uint16)):04x}"
    return f"0x{int(np.float32(v).view(np.uint32)):08x}"


def compare(d: np.ndarray, model: np.ndarray, output: str, show: int = 10) -> tuple:
    """``(matches, ulp_differences, first_mismatches)`` of the GPU's ``d`` against ``model``
    (same shape; vectorized, one pass of numpy)."""
    same = _same(d, model, output)
    matches = int(same.sum())
    hist: dict[str, int] = {}
    one_nan = np.isnan(d) != np.isnan(model)
    both = ~np.isnan(d) & ~np.isnan(model)
    diff = np.zeros(d.shape, np.int64)
    diff[both] = _ordered(d[both], output) - _ordered(model[both], output)
    clipped = np.clip(diff[both & ~same], -ULP_BINS - 1, ULP_BINS + 1)
    values, counts = np.unique(clipped, return_counts=True)
    hist["0"] = matches
    for v, n in zip(values.tolist(), counts.tolist()):
        key = f">{ULP_BINS}" if v > ULP_BINS else f"<-{ULP_BINS}" if v < -ULP_BINS else str(v)
        hist[key] = hist.get(key, 0) + n
    if one_nan.any():
        hist["nan"] = int(one_nan.sum())
    first = []
    for idx in np.argwhere(~same)[:show]:
        t = tuple(int(i) for i in idx)
        first.append({"index": list(t), "gpu": _hex(d[t], output),
                      "model": _hex(model[t], output),
                      "ulps": "nan" if one_nan[t] else int(diff[t])})
    return matches, hist, first


def _reference(name: str, A, B, C) -> np.ndarray:
    """The plain reference ``name`` of :data:`REFERENCES` for stacked operands (binary32)."""
    from fpsim.numerics.accumulation import matmul
    kw = dict(fmt="float32", inputs="float32")
    kw.update(accum=None) if name == "fp32-correctly-rounded" else kw.update(accum="float32")
    out = np.empty(C.shape)
    N = C.shape[-1]
    eye = np.eye(N)
    for t in np.ndindex(A.shape[:-2]):
        # c as N extra products placed first: [C | A] @ [I ; B] = C + A @ B, with C's column j
        # meeting row j of I only (the other extra products are +0 and change nothing).
        out[t] = matmul(np.hstack([C[t], A[t]]), np.vstack([eye, B[t]]), **kw)
    return out


def _holds(x: np.ndarray, fmt) -> bool:
    """Whether every element of ``x`` is a value of ``fmt`` (NaN included)."""
    from fpsim.numerics.arith import first_non_value
    return x.size == 0 or first_non_value(np.ascontiguousarray(x, np.float64), fmt) is None


def validate_gemm(a, b, d, preset: str | None = None, c=None, fit: bool = False,
                  show: int = 10) -> GemmValidation:
    """Check a GPU's GEMM output ``d`` against a tensor-core model.

    Args:
        a: (..., M, K) values (or bit patterns, see the module docstring) of the input format.
        b: (..., K, N) values of the input format.
        d: (..., M, N) the GPU's result, values of the output format.
        preset: a tensor-core preset name (``"H100-fp16"``); or None with ``fit``.
        c: (..., M, N) the addend, or None (zeros).
        fit: rank every preset whose formats hold the operands (and the two references of
            :data:`REFERENCES`) by matches; the report's other fields are for the best.
        show: how many mismatches to list.

    Returns:
        A :class:`GemmValidation`. GemmInputError (a ValueError) for bad input: mismatched
        shapes, an unknown preset (the message lists the valid ones), operands that are not
        values of the preset's formats (which operand, where), a ``d`` of the wrong shape.
    """
    from fpsim.numerics import tensor_core as tcm
    if (preset is None) == (not fit):
        raise GemmInputError("give a preset or fit=True (one of them)")
    if preset is not None and preset not in tcm.PRESETS:
        raise GemmInputError(f"tensor-core preset {preset!r} does not exist; valid presets: "
                             + ", ".join(tcm.PRESET_NAMES))
    first_tc = tcm.PRESETS[preset] if preset else None
    in_bits = first_tc.inputs if first_tc else "fp16"
    A = as_values(a, "a", in_bits)
    B = as_values(b, "b", in_bits)
    if A.ndim < 2 or B.ndim < 2 or A.shape[-1] != B.shape[-2] or A.shape[:-2] != B.shape[:-2]:
        raise GemmInputError(f"shapes of a {A.shape} and b {B.shape} do not align: a (..., M, K) "
                             f"and b (..., K, N) with the same leading dimensions")
    shape = (*A.shape[:-2], A.shape[-2], B.shape[-1])
    D = as_values(d, "d", "fp16")
    if D.shape != shape:
        raise GemmInputError(f"d has shape {D.shape}, but a {A.shape} times b {B.shape} gives "
                             f"{shape}")
    C = np.zeros(shape) if c is None else as_values(c, "c", "fp16")
    if C.shape != shape:
        raise GemmInputError(f"c has shape {C.shape}; it must be {shape}")
    holds: dict[tuple, bool] = {}

    def held(name, x, fmt):
        if (name, fmt.name) not in holds:
            holds[name, fmt.name] = _holds(x, fmt)
        return holds[name, fmt.name]

    if fit:
        candidates = [n for n, tc in tcm.PRESETS.items()
                      if held("a", A, tc.input_format) and held("b", B, tc.input_format)
                      and held("c", C, tc.output_format) and held("d", D, tc.output_format)]
    else:
        candidates = [preset]
        if not held("d", D, first_tc.output_format):
            from fpsim.numerics.arith import first_non_value
            where = first_non_value(np.ascontiguousarray(D), first_tc.output_format)
            raise GemmInputError(f"d holds {D[where]!r} at index {where}, which is not a value "
                                 f"of {first_tc.output_format} (the output format of {preset})")
    results = {}
    for name in candidates:
        tc = tcm.PRESETS[name]
        try:
            model = tcm.tc_matmul(A, B, tc, C)
        except ValueError as err:
            raise GemmInputError(f"{name}: {err}") from None
        results[name] = (model, tc.output, int(_same(D, model, tc.output).sum()))
    if fit:
        for name in REFERENCES:
            if held("c", C, tcm.PRESETS["H100-fp16"].output_format):
                model = _reference(name, A, B, C)
                results[name] = (model, "fp32", int(_same(D, model, "fp32").sum()))
    if not results:
        raise GemmInputError("no preset's formats hold these operands: a and b must be values "
                             "of fp16, bf16, tf32, e4m3 or e5m2, c and d of fp32 or fp16")
    order = sorted(results, key=lambda n: -results[n][2])  # stable: table order among ties
    best = order[0]
    model, output, _ = results[best]
    matches, hist, first = compare(D, model, output, show)
    ranking = None
    if fit:
        def params(n):
            tc = tcm.PRESETS.get(n)
            return None if tc is None else (tc.inputs, tc.output, tc.group, tc.extra_bits,
                                            tc.carry_bit, tc.rounding, tc.result_bits,
                                            tc.late_addend)
        ranking = [{"preset": n, "matches": results[n][2],
                    "same_as": [o for o in order if o != n and params(o) is not None
                                and params(o) == params(n)]} for n in order]
    return GemmValidation(best, matches, int(D.size), hist, first, ranking)


# ---- command line ---------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``fpsim validate gemm``."""
    p.add_argument("--a", required=True, help="A (..., M, K): .npy, .npz or FILE.npz:KEY")
    p.add_argument("--b", required=True, help="B (..., K, N)")
    p.add_argument("--c", help="the addend C (..., M, N) (default zeros)")
    p.add_argument("--d", required=True, help="the GPU's result D (..., M, N)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--preset", help="a tensor-core model, e.g. H100-fp16, B200-e4m3-fp16out")
    g.add_argument("--fit", action="store_true", help="rank every applicable model")
    p.add_argument("--dots", action="store_true",
                   help="a and b are (T, K) rows and c, d (T,): T independent dot products")
    p.add_argument("--show", type=int, default=10, help="mismatches to list (default 10)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    """Run ``fpsim validate gemm``: status 0 when every result matches, 1 when some do not, 2
    for bad input."""
    try:
        a, b = load_array(args.a), load_array(args.b)
        d = load_array(args.d)
        c = None if args.c is None else load_array(args.c)
        if args.dots:
            if a.ndim != 2 or b.shape != a.shape:
                raise GemmInputError(f"--dots needs a and b of one shape (T, K); got {a.shape} "
                                     f"and {b.shape}")
            if d.shape != a.shape[:1] or (c is not None and c.shape != a.shape[:1]):
                raise GemmInputError(f"--dots needs c and d of shape ({a.shape[0]},)")
            a, b = a[:, None, :], b[:, :, None]
            d = d[:, None, None]
            c = None if c is None else c[:, None, None]
        res = validate_gemm(a, b, d, preset=args.preset, c=c, fit=args.fit, show=args.show)
    except ValueError as err:
        print(f"fpsim validate gemm: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(res.to_dict()) if args.json else res.report())
    return 0 if res.matches == res.total else 1


def main(argv=None) -> int:
    """``python -m fpsim.validate.gemm``."""
    p = argparse.ArgumentParser(prog="fpsim validate gemm", description=__doc__.split("\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
