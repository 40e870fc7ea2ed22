"""fpsim's MX and NVFP4 block formats against a dump of torchao's casts, bit for bit.

``python -m fpsim.validate.torchao_mx IN.npz OUT.npz [--examples N]`` prints a markdown table.

IN.npz holds float32 2-D arrays named ``x_<k>`` (last axis a multiple of 32). OUT.npz is a dump
of torchao's casts of those arrays, made in an environment with torch and torchao (fpsim's own
environment does not need either): for every ``x_<k>`` and format ``fmt``

* ``mxfp8_e4m3``, ``mxfp8_e5m2``, ``mxfp6_e3m2``, ``mxfp6_e2m3``, ``mxfp4_e2m1``: a dump made
  with torchao's ``MXTensor.to_mx(x, elem_dtype, block_size=32,
  scaling_mode=ScaleCalculationMode.FLOOR)`` (``to_mx`` in ``torchao.prototype.mx_formats``)
  and ``.dequantize(torch.float32)``;
* ``nvfp4``: ``NVFP4Tensor.to_nvfp4(x, block_size=16, per_tensor_scale=pts)`` with
  ``pts = per_tensor_amax_to_scale(max(abs(x)))`` (amax / 2688, the dynamic per-tensor recipe)
  and ``.dequantize(torch.float32)``;
* ``nvfp4_nopts``: the same without a per-tensor scale (single level). fpsim has no
  single-level NVFP4, so these entries are listed as having no fpsim counterpart;

stored as ``deq_<fmt>_<k>`` (float32, x's shape), ``elem_<fmt>_<k>`` (uint8 element codes, one
per element, unpacked: fp8 the raw byte, fp6 bits 0-5, fp4 bits 0-3), ``scale_<fmt>_<k>``
(uint8 per block: the E8M0 biased exponent for MX, the E4M3 bits for NVFP4) and
``tscale_nvfp4_<k>`` (float32 per-tensor scale).

For every array and format present in both, :func:`compare` computes fpsim's
:func:`fpsim.quantize` and :func:`fpsim.encode` of the array and counts

* elements whose dequantized float32 bits agree (any NaN equals any NaN; -0 and +0 differ),
* element codes that agree (and how many of the disagreeing ones lie in blocks that either side
  marks NaN, where the element codes carry no value),
* block scale codes that agree,
* for ``nvfp4`` whether the per-tensor decode scales agree as float32 bits (fpsim's
  ``Encoded.tensor_scale`` is ``1 / fp32(2688 / amax)``, torchao's is ``fp32(amax / 2688)``;
  both are decode-side scales, computed differently),

plus a few example mismatches. Disagreements are expected where the two implementations
follow different rules (fpsim: OCP MX v1.0 section 6.3 and Transformer Engine's NVFP4 order of
float32 operations; see :mod:`fpsim.numerics.scaled`), so the program exits 0 unless an input
cannot be read.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from fpsim.numerics.convert import encode, quantize

#: torchao dump format -> fpsim format (None: no fpsim counterpart).
FORMATS: dict[str, str | None] = {
    "mxfp8_e4m3": "mxfp8_e4m3",
    "mxfp8_e5m2": "mxfp8_e5m2",
    "mxfp6_e3m2": "mxfp6_e3m2",
    "mxfp6_e2m3": "mxfp6_e2m3",
    "mxfp4_e2m1": "mxfp4_e2m1",
    "nvfp4": "nvfp4",
    "nvfp4_nopts": None,
}
#: Elements per scale block of each fpsim format.
BLOCK = {"nvfp4": 16}
MX_BLOCK = 32


def _bits(a) -> np.ndarray:
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


def _same_f32(a, b) -> np.ndarray:
    """Elementwise: float32 bits equal, or both NaN."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    return (_bits(a) == _bits(b)) | (np.isnan(a) & np.isnan(b))


def _nan_scale(fmt: str, codes: np.ndarray) -> np.ndarray:
    """Block scale codes that decode to NaN (E8M0 0xFF; E4M3 0x7F / 0xFF)."""
    c = np.asarray(codes, np.int64)
    return c == 0xFF if fmt != "nvfp4" else (c & 0x7F) == 0x7F


def _arrays(inputs: dict) -> dict[str, np.ndarray]:
    """``k -> array`` from a dict keyed ``x_<k>`` (or plain ``k``)."""
    out = {}
    for name, a in inputs.items():
        k = name[2:] if name.startswith("x_") else name
        out[k] = np.ascontiguousarray(a, np.float32)
    return out


def compare_one(k: str, x: np.ndarray, fmt: str, tao: dict, examples: int = 4) -> dict:
    """One row of :func:`compare`: array ``k`` (float32 ``x``) in torchao format ``fmt``."""
    n = int(x.size)
    row = {"array": k, "format": fmt, "fpsim_format": FORMATS.get(fmt), "n": n}
    t_deq = np.asarray(tao[f"deq_{fmt}_{k}"], np.float32)
    t_elem = np.asarray(tao[f"elem_{fmt}_{k}"]).astype(np.int64)
    t_scale = np.asarray(tao[f"scale_{fmt}_{k}"]).astype(np.int64)
    sf = row["fpsim_format"]
    if sf is None:
        row.update(deq_equal=None, elem_equal=None, blocks=int(t_scale.size), scale_equal=None,
                   tscale_equal=None, examples=[])
        return row
    f_deq = np.asarray(quantize(x, sf), np.float32)
    enc = encode(x, sf)
    f_elem = np.asarray(enc[0]).astype(np.int64)
    f_scale = np.asarray(enc[1]).astype(np.int64)
    bs = BLOCK.get(sf, MX_BLOCK)
    if f_scale.shape != t_scale.shape:
        raise ValueError(f"{k}/{fmt}: scale shapes differ: fpsim {f_scale.shape}, "
                         f"torchao {t_scale.shape}")
    deq_ok = _same_f32(f_deq, t_deq)
    elem_ok = f_elem == t_elem
    scale_ok = f_scale == t_scale
    nan_block = _nan_scale(sf, f_scale) | _nan_scale(sf, t_scale)
    nan_elem = np.repeat(nan_block, bs, axis=-1).reshape(x.shape)
    row.update(deq_equal=int(deq_ok.sum()), elem_equal=int(elem_ok.sum()),
               elem_diff_in_nan_blocks=int((~elem_ok & nan_elem).sum()),
               blocks=int(f_scale.size), scale_equal=int(scale_ok.sum()))
    if sf == "nvfp4":
        f_ts = np.array(enc.tensor_scale, np.uint32).view(np.float32)[()]
        t_ts = np.float32(np.asarray(tao[f"tscale_{fmt}_{k}"], np.float32).reshape(()))
        row.update(tscale_equal=bool(_same_f32(f_ts, t_ts)), tscale_fpsim=float(f_ts),
                   tscale_torchao=float(t_ts))
    else:
        row["tscale_equal"] = None
    # value mismatches first, then code-only ones
    bad = np.concatenate([np.argwhere(~deq_ok), np.argwhere(deq_ok & ~elem_ok)])
    ex = []
    for idx in bad[:examples]:
        i = tuple(int(v) for v in idx)
        b = i[:-1] + (i[-1] // bs,)
        ex.append({"index": i, "input": float(x[i]), "fpsim": float(f_deq[i]),
                   "torchao": float(t_deq[i]), "fpsim_codes": (int(f_elem[i]), int(f_scale[b])),
                   "torchao_codes": (int(t_elem[i]), int(t_scale[b]))})
    row["examples"] = ex
    return row


def compare(inputs: dict[str, np.ndarray], torchao_out: dict, examples: int = 4) -> list[dict]:
    """Compare fpsim with a torchao dump (see the module docstring).

    Args:
        inputs: float32 2-D arrays keyed ``x_<k>`` (or ``k``), as in IN.npz.
        torchao_out: the dump's arrays (``deq_<fmt>_<k>``, ``elem_...``, ``scale_...``,
            ``tscale_nvfp4_<k>``), e.g. ``dict(np.load("OUT.npz"))``.
        examples: example mismatches kept per row.

    Returns:
        One dict per (array, format) present in both, in input order and :data:`FORMATS` order:
        ``array``, ``format``, ``fpsim_format`` (None for ``nvfp4_nopts``), ``n`` (elements),
        ``deq_equal``, ``elem_equal``, ``elem_diff_in_nan_blocks``, ``blocks``, ``scale_equal``,
        ``tscale_equal`` (nvfp4: bool, with ``tscale_fpsim`` / ``tscale_torchao``; else None) and
        ``examples`` (dicts with ``index``, ``input``, ``fpsim``, ``torchao`` and both sides'
        ``(element, scale)`` codes). Counts are None where fpsim has no counterpart.
    """
    rows = []
    for k, x in _arrays(inputs).items():
        for fmt in FORMATS:
            if f"deq_{fmt}_{k}" in torchao_out:
                rows.append(compare_one(k, x, fmt, torchao_out, examples))
    return rows


def _frac(ok, n) -> str:
    if ok is None:
        return "-"
    return f"{ok}/{n}" if ok != n else f"{ok} (all)"


def table(rows: list[dict]) -> str:
    """The markdown table of :func:`compare`'s rows, then the example mismatches."""
    lines = ["| array | format | n | deq bits equal | elem codes equal | scale codes equal "
             "| tensor scale equal |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["fpsim_format"] is None:
            lines.append(f"| {r['array']} | {r['format']} | {r['n']} | no fpsim counterpart "
                         "| - | - | - |")
            continue
        el = _frac(r["elem_equal"], r["n"])
        if r["elem_diff_in_nan_blocks"]:
            el += f" ({r['elem_diff_in_nan_blocks']} diff in NaN blocks)"
        ts = "-" if r["tscale_equal"] is None else (
            "yes" if r["tscale_equal"] else
            f"no ({r['tscale_fpsim']!r} vs {r['tscale_torchao']!r})")
        lines.append(f"| {r['array']} | {r['format']} | {r['n']} | "
                     f"{_frac(r['deq_equal'], r['n'])} | {el} | "
                     f"{_frac(r['scale_equal'], r['blocks'])} | {ts} |")
    ex = [(r, e) for r in rows for e in r["examples"]]
    if ex:
        lines += ["", "Example mismatches (codes are (element, block scale)):", ""]
        for r, e in ex:
            lines.append(f"- {r['array']}/{r['format']} {e['index']}: x={e['input']!r} "
                         f"fpsim={e['fpsim']!r} {e['fpsim_codes']} torchao={e['torchao']!r} "
                         f"{e['torchao_codes']}")
    return "\n".join(lines)


def add_arguments(parser) -> None:
    """The program's options: the two .npz files and ``--examples``."""
    parser.description = ("fpsim's MX / NVFP4 formats against a dump of torchao's casts "
                          "(see the module docstring); prints a markdown table.")
    parser.add_argument("inputs", help="IN.npz with float32 arrays x_<k>")
    parser.add_argument("dump", help="OUT.npz, torchao's dump of IN.npz")
    parser.add_argument("--examples", type=int, default=3,
                        help="example mismatches per (array, format) (default: %(default)s)")


def run(args) -> int:
    """Compare and print the table; 0, or 2 when a file cannot be read."""
    try:
        with np.load(args.inputs) as f:
            inputs = {n: f[n] for n in f.files if n.startswith("x_")}
        with np.load(args.dump) as f:
            dump = {n: f[n] for n in f.files}
    except (OSError, ValueError) as err:
        print(f"torchao_mx: error: {err}", file=sys.stderr)
        return 2
    print(table(compare(inputs, dump, args.examples)))
    return 0


def main(argv=None) -> int:
    """Program entry: ``python -m fpsim.validate.torchao_mx IN.npz OUT.npz``."""
    p = argparse.ArgumentParser(prog="python -m fpsim.validate.torchao_mx")
    add_arguments(p)
    return run(p.parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    raise SystemExit(main())
