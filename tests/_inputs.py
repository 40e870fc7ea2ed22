"""Input generators and bit-level assertions shared by the tests.

Edge inputs are built from the target format's own grid, in the style of TestFloat's case
generators: every binade around the format's range x a few significands, the midpoints between
neighbours (ties), and one carrier ulp either side of each, plus the special thresholds.
"""

from __future__ import annotations

import functools
import math

import numpy as np

import fpsim


def _grid_points(fmt, k):
    """A few format values in binade 2^k (normal or subnormal spacing) and the next one up."""
    m = fmt.man_bits
    q = k - m if k >= fmt.emin else fmt.emin - m  # quantum of the binade
    steps = sorted({0, 1, 2, 3, (1 << m) // 2, (1 << m) - 2, (1 << m) - 1} - {-1, -2})
    base = 2.0 ** k if k >= fmt.emin else 0.0
    pts = []
    for j in steps:
        if j < 0 or (k >= fmt.emin and j >= (1 << m)):
            continue
        v = base + j * 2.0 ** q if k >= fmt.emin else j * 2.0 ** q
        if k < fmt.emin and not (2.0 ** k <= v < 2.0 ** (k + 1)):
            continue
        pts.append((v, v + 2.0 ** q))
    return pts


#: Cap on edge inputs per format (wide formats are sampled; see edge_values).
MAX_EDGE = 1500


@functools.lru_cache(maxsize=None)
def edge_values(fmt, dtype_name: str) -> np.ndarray:
    """Boundary-stressing inputs for rounding into ``fmt``, exactly representable in the dtype."""
    dtype = np.dtype(dtype_name)
    info = np.finfo(dtype)
    lo_k = max(fmt.emin - fmt.man_bits - 3, int(np.log2(info.smallest_subnormal)))
    hi_k = min(fmt.emax + 2, info.maxexp - 1)
    vals = []
    with np.errstate(all="ignore"):
        for k in range(lo_k, hi_k + 1):
            for v, nxt in _grid_points(fmt, k):
                mid = (v + nxt) / 2
                for c in (v, mid):
                    cc = dtype.type(c)
                    if not np.isfinite(cc) or float(cc) != c:
                        continue  # not representable in this carrier
                    vals += [cc, np.nextafter(cc, dtype.type(np.inf)), np.nextafter(cc, dtype.type(0))]
        special = [0.0, fmt.max, fmt.min_normal, fmt.min_subnormal, fmt.min_subnormal / 2,
                   fmt.min_subnormal * 1.5, fmt.min_normal / 2, fmt.eps, 1.0,
                   float(info.max), float(info.smallest_subnormal), float(info.tiny)]
        ulp_max = 2.0 ** (fmt.emax - fmt.man_bits)
        special += [fmt.max + ulp_max / 2, fmt.max + ulp_max, fmt.max + ulp_max / 4]
        for c in special:
            cc = dtype.type(c)
            if np.isfinite(cc) and float(cc) == c:
                vals += [cc, np.nextafter(cc, dtype.type(np.inf)), np.nextafter(cc, dtype.type(0))]
    arr = np.unique(np.array(vals, dtype=dtype))
    if arr.size > MAX_EDGE:
        # Wide formats: keep every value within 6 binades of the thresholds, sample the rest.
        lg = np.log2(np.maximum(np.abs(arr.astype(np.float64)), 1e-320))
        t_k = math.log2(fmt.min_subnormal)
        near = ((np.abs(lg - t_k) < 6) | (np.abs(lg - fmt.emin) < 6) | (np.abs(lg - fmt.emax) < 6)
                | (np.abs(lg) < 2))
        rest = np.flatnonzero(~near)
        pick = np.random.default_rng(1).choice(rest, min(rest.size, MAX_EDGE // 2), replace=False)
        arr = np.concatenate([arr[near], arr[np.sort(pick)]])
    arr = np.concatenate([arr, -arr, np.array([np.inf, -np.inf, np.nan, -np.nan], dtype)])
    return np.unique(arr.view(_uint(dtype))).view(dtype)


def random_values(dtype, n: int, seed: int = 0) -> np.ndarray:
    """Random inputs: half uniform bit patterns (every class, NaN payloads), half log-uniform."""
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    ut = _uint(dtype)
    bits = rng.integers(0, np.iinfo(ut).max, n // 2, dtype=ut, endpoint=True).view(dtype)
    with np.errstate(all="ignore"):
        mag = np.exp2(rng.uniform(-40, 40, n - n // 2)) * rng.choice([-1.0, 1.0], n - n // 2)
    return np.concatenate([bits, mag.astype(dtype)])


def _uint(dtype) -> type:
    return {2: np.uint16, 4: np.uint32, 8: np.uint64}[np.dtype(dtype).itemsize]


def bits64(a) -> np.ndarray:
    """float64 bit patterns of an array (float32 is widened exactly first)."""
    return np.asarray(a, dtype=np.float64).view(np.uint64)


def assert_same_bits(actual, expected, x=None, what: str = "") -> None:
    """Assert two float arrays are bit-identical (as float64); report the first mismatches in hex."""
    a, e = bits64(actual).ravel(), bits64(expected).ravel()
    assert a.shape == e.shape, f"{what}: shapes {a.shape} != {e.shape}"
    bad = np.flatnonzero(a != e)
    if bad.size:
        xs = np.asarray(x, dtype=np.float64).ravel() if x is not None else None
        lines = []
        for i in bad[:8]:
            src = f"x={xs[i]!r} ({float(xs[i]).hex()}) " if xs is not None else ""
            got, want = a[i:i + 1].view(np.float64)[0], e[i:i + 1].view(np.float64)[0]
            lines.append(f"  [{i}] {src}got {got!r} ({int(a[i]):#018x}) want {want!r} ({int(e[i]):#018x})")
        raise AssertionError(f"{what}: {bad.size} of {a.size} differ\n" + "\n".join(lines))


#: Formats the kernel-vs-reference tests cover: every named format plus customs that exercise
#: each field (no subnormals, unsigned, no zero, odd biases, m = 0, wide exponents).
CUSTOM_SPECS = [
    "e3m4", "e6m1", "e2m1ieee", "e5m10-nosub", "ue5m3", "e5m0b16fn", "e4m3b9fnuz", "e11m4",
    "e3m2finite", "ue4m0b9fn-nozero", "e8m22", "e7m30", "e5m2fn-nosub", "ue8m0b126fn-nozero",
]


def all_formats():
    return list(fpsim.formats.NAMED.values()) + [fpsim.format(s) for s in CUSTOM_SPECS]
