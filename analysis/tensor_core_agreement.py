"""Agreement of the tensor-core presets with the shipped GPU measurements, and how much each
parameter matters: every measured column against its preset, and against the preset with one
parameter changed (carry bit off, one extra bit fewer / more, the other final rounding).

Usage: ``python analysis/tensor_core_agreement.py`` (prints a markdown table; about a minute).
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

import fpsim
from fpsim.numerics import tensor_core as tcm

DATA = pathlib.Path(__file__).resolve().parent.parent / "data" / "tensor-core-validation"


def _matches(tc, a, b, c, d):
    r = fpsim.matmul(a[:, None, :], b[:, :, None], accum=tc, c=c[:, None, None])[:, 0, 0]
    return int((r.astype(np.float32).view(np.uint32) == d.astype(np.float32).view(np.uint32)).sum())


def main() -> None:
    print("| file | column | preset | matches | carry bit off | extra bits -1 | extra bits +1 "
          "| other rounding |")
    print("|---|---|---|---|---|---|---|---|")
    for path in sorted(DATA.glob("*.npz")):
        z = np.load(path)
        g = {k: z[k].view(np.float32).astype(np.float64) for k in z.files}
        gpu, fmt = path.stem.split("_")
        for key in ("d_fp32", "d_fp16"):
            if key not in g:
                continue
            name = f"{gpu}-{fmt.lower()}" + ("-fp16out" if key == "d_fp16" else "")
            tc = tcm.tensor_core(name)
            c = g["c"]
            if key == "d_fp16":
                c = c.astype(np.float16).astype(np.float64)
            elif gpu in ("H100", "H200") and fmt in ("E4M3", "E5M2"):
                c = np.zeros_like(c)  # measured from a zero accumulator
            custom = dataclasses.replace(tc, gpu="custom")
            variants = [custom,
                        dataclasses.replace(custom, carry_bit=not tc.carry_bit),
                        dataclasses.replace(custom, extra_bits=tc.extra_bits - 1),
                        dataclasses.replace(custom, extra_bits=min(tc.extra_bits + 1, 30)),
                        dataclasses.replace(custom, rounding="rne" if tc.rounding == "rtz"
                                            else "rtz")]
            counts = [_matches(v, g["a"], g["b"], c, g[key]) for v in variants]
            print(f"| {path.stem} | {key} | {name} | " + " | ".join(map(str, counts)) + " |",
                  flush=True)


if __name__ == "__main__":
    main()
