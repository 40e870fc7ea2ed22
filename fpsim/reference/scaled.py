"""The slow definition of the scale rules (:mod:`fpsim.numerics.scaled`), element by element.

Shares no code with the kernels or with :mod:`fpsim.numerics.scaled`: amaxes, powers of two and
the float32 steps of the recipes are exact :class:`~fractions.Fraction` arithmetic followed by
one rounding to float32 (:func:`fpsim.reference.round_rational`), and elements are rounded by
:func:`fpsim.reference.round_value`. The kernels are tested against this bit for bit (values,
element codes, scale codes). S2FP8's ``log2`` and ``exp2`` are the platform's libm
(``math.log2`` / ``math.exp2``), the functions the kernels call too; its mean is the exact sum
of the ``log2`` values rounded once.
"""

from __future__ import annotations

import math
import struct
from fractions import Fraction

import numpy as np

from fpsim.kernels.rng import random_bits_py, stream_key
from fpsim.numerics.formats import format as _format
from fpsim.numerics.modes import Overflow, RoundMode
from fpsim.reference.rounding import _floor_log2, encode_value, round_rational, round_value

_F32 = _format("float32")
FLT_MAX = Fraction(struct.unpack("<f", struct.pack("<I", 0x7F7FFFFF))[0])


def f32(v) -> float:
    """The exact value ``v`` (Fraction or float; ``inf`` allowed) rounded to float32 (RNE)."""
    if isinstance(v, float) and (math.isinf(v) or math.isnan(v)):
        return v
    v = Fraction(v)
    if v == 0:
        return 0.0
    return round_rational(abs(v), v < 0, _F32, RoundMode.RNE, Overflow.IEEE, 0, 62)[0]


def f32_bits(v: float) -> int:
    """float32 bit pattern of a float32 value."""
    return struct.unpack("<I", struct.pack("<f", v))[0]


def _fl(v: float) -> Fraction:
    return Fraction(v)


def times(a: float, b: Fraction, to_f32: bool = True) -> float:
    """``a * b`` for a float ``a`` and a positive exact ``b``, rounded to float32 (``to_f32``)
    or exact (the product must then be a float64); zeros keep ``a``'s sign, Inf and NaN stay."""
    if a == 0 or math.isnan(a) or math.isinf(a):
        return a
    p = Fraction(a) * Fraction(b)
    if not to_f32:
        v = float(p)
        assert Fraction(v) == p, "an exact product must be a float64"
        return v
    return f32(p)


def _f32_min(v: float) -> float:
    return min(v, float(FLT_MAX))


def _amax(values) -> float:
    """max |v| with NaN winning over Inf winning over finite values."""
    if any(math.isnan(v) for v in values):
        return math.nan
    return max((abs(v) for v in values), default=0.0)


def _tiles(shape, tile):
    """Yield (scale index, list of flat element indices) of every tile, in any order."""
    shape = tuple(shape) or (1,)
    tr, tc = tile
    C = shape[-1]
    if tr == 1:
        lead = shape[:-1]
        for li in np.ndindex(*lead) if lead else [()]:
            row = int(np.ravel_multi_index(li, lead) if lead else 0) * C
            for u in range(-(-C // tc)):
                yield li + (u,), [row + j for j in range(u * tc, min(C, (u + 1) * tc))]
        return
    R = shape[-2] if len(shape) >= 2 else 1
    lead = shape[:-2] if len(shape) >= 2 else ()
    for li in np.ndindex(*lead) if lead else [()]:
        base = int(np.ravel_multi_index(li, lead) if lead else 0) * R * C
        for t in range(-(-R // tr)):
            for u in range(-(-C // tc)):
                idx = [base + i * C + j for i in range(t * tr, min(R, (t + 1) * tr))
                       for j in range(u * tc, min(C, (u + 1) * tc))]
                yield li + (t, u), idx


def _round_elem(y: float, sf, rounding, key, i, ys=None):
    if ys is not None:
        ys[i] = y
    rnd = random_bits_py(key, i)
    q = round_value(y, sf.element, rounding, sf.overflow, rnd)
    return q, encode_value(q, sf.element)


def quantize(x, sf, rounding="rne", seed=0, stream=0, enc_scale=None):
    """Quantize the float32 array ``x`` with the ScaledFormat ``sf``: a dict with ``values``
    (float32), ``codes`` (element codes, sign-magnitude), ``scales`` (scale codes, the public
    shape), ``y`` (flat: the scaled values the elements were rounded from) and ``tensor_scale`` (NVFP4's decode scale bits). ``enc_scale``: the encode scale of
    a delayed-scaling cast (the state's scale); None computes current scaling's."""
    x = np.asarray(x, np.float32)
    flat = [float(v) for v in x.reshape(-1)]
    n = len(flat)
    key = stream_key(seed, stream)
    vals = [0.0] * n
    codes = [0] * n
    ys = [math.nan] * n  # the scaled values handed to the element rounding (NaN tiles: NaN)
    res = {"tensor_scale": None}
    fmax = Fraction(sf.element.max)
    if sf.rule in ("mx", "nvfp4", "tile"):
        scale_codes = {}
        if sf.rule == "nvfp4":
            ga = _amax(flat)
            genc = math.nan if math.isnan(ga) else (
                1.0 if ga == 0 else _f32_min(f32(Fraction(2688) / _fl(ga)))
                if not math.isinf(ga) else 0.0)
            if math.isnan(genc) or genc == 0:
                genc = 1.0
            gdec = f32(1 / _fl(genc))
            mult = f32(_fl(genc) * _fl(f32(Fraction(1, 6))))
            res["tensor_scale"] = f32_bits(gdec)
        for sidx, idx in _tiles(x.shape, sf.tile):
            a = _amax([flat[i] for i in idx])
            if math.isnan(a) or math.isinf(a):
                scale_codes[sidx] = 0x7FC00000 if sf.rule == "tile" else sf.scale.params().nan_code
                for i in idx:
                    vals[i], codes[i] = math.nan, 0
                continue
            A = _fl(a)
            if sf.rule == "mx":
                kmin = _floor_log2(Fraction(sf.scale.min_subnormal))
                kmax = _floor_log2(Fraction(sf.scale.max))
                k = kmin if A == 0 else _floor_log2(A) - sf.element.emax
                if k > kmax:
                    scale_codes[sidx] = sf.scale.params().nan_code
                    for i in idx:
                        vals[i], codes[i] = math.nan, 0
                    continue
                k = max(k, kmin)
                scale_codes[sidx] = encode_value(2.0 ** k, sf.scale)
                for i in idx:
                    q, codes[i] = _round_elem(times(flat[i], Fraction(2) ** -k, False), sf,
                                              rounding, key, i, ys)
                    vals[i] = times(q, Fraction(2) ** k)
            elif sf.rule == "nvfp4":
                s = min(_f32_min(f32(A * _fl(mult))), sf.scale.max)
                sq = round_value(s, sf.scale, "rne", "saturate")
                scale_codes[sidx] = encode_value(sq, sf.scale)
                dd = f32(_fl(sq) * _fl(gdec))
                enc = float(FLT_MAX) if dd == 0 else _f32_min(f32(1 / _fl(dd)))
                for i in idx:
                    q, codes[i] = _round_elem(times(flat[i], _fl(enc)), sf, rounding, key, i, ys)
                    vals[i] = times(q, _fl(dd)) if dd != 0 else math.copysign(0.0, q)
            else:  # tile
                if A == 0:
                    d, pow2 = 1.0, False
                elif sf.pow2:
                    k = _floor_log2(A / fmax)
                    if Fraction(2) ** k < A / fmax:
                        k += 1
                    d, pow2 = float(Fraction(2) ** k), True
                else:
                    d, pow2 = f32(A / fmax), False
                scale_codes[sidx] = f32_bits(d)
                for i in idx:
                    q, codes[i] = _round_elem(times(flat[i], 1 / _fl(d), not pow2), sf,
                                              rounding, key, i, ys)
                    vals[i] = times(q, _fl(d))
        keys = sorted(scale_codes)
        shape = tuple(max(k[j] for k in keys) + 1 for j in range(len(keys[0])))
        sc = np.zeros(shape, np.int64)
        for k, v in scale_codes.items():
            sc[k] = v
        res["scales"] = sc
    elif sf.rule == "tensor":
        a = _amax(flat)
        if enc_scale is None:
            if math.isnan(a) or math.isinf(a) or a == 0:
                enc = 1.0
            else:
                enc = f32(_fl(f32(fmax / 2 ** sf.margin)) / _fl(a))
                enc = _f32_min(enc)
                if sf.pow2:
                    enc = 2.0 ** _floor_log2(_fl(enc))
        else:
            enc = float(enc_scale)
        dec = f32(1 / _fl(enc))
        for i in range(n):
            q, codes[i] = _round_elem(times(flat[i], _fl(enc)), sf, rounding, key, i, ys)
            vals[i] = times(q, _fl(dec))
        res["scales"] = np.array(f32_bits(dec), np.int64)
        res["amax"] = a
    else:  # s2fp8
        logs = []
        for v in flat:
            if v != 0 and not (math.isnan(v) or math.isinf(v)):
                m, e = math.frexp(abs(v))  # |v| = m 2^e, 0.5 <= m < 1
                logs.append((e - 1, math.log2(2 * m)))
        if not logs:
            alpha, beta = 1.0, 0.0
        else:
            mu = float(sum(Fraction(e) + Fraction(l) for e, l in logs) / len(logs))
            emax_, lmax = max(logs)
            M = float(emax_) + lmax
            alpha = 1.0 if M == mu else 15.0 / (M - mu)
            beta = -alpha * mu
        alpha, beta = f32(alpha), f32(beta)
        for i, v in enumerate(flat):
            if v == 0 or math.isnan(v) or math.isinf(v):
                y = v
            else:
                m, e = math.frexp(abs(v))
                y = math.copysign(math.exp2(alpha * (float(e - 1) + math.log2(2 * m)) + beta), v)
            q, codes[i] = _round_elem(y, sf, rounding, key, i, ys)
            if q == 0 or math.isnan(q) or math.isinf(q):
                vals[i] = q
            else:
                m, e = math.frexp(abs(q))
                r = math.exp2(((float(e - 1) + math.log2(2 * m)) - beta) / alpha)
                vals[i] = math.copysign(f32(r), q)
        res["scales"] = np.array([f32_bits(alpha), f32_bits(beta)], np.int64)
    res["values"] = np.array(vals, np.float32).reshape(x.shape)
    res["codes"] = np.array(codes, np.int64).reshape(x.shape)
    res["y"] = np.array(ys, np.float64)
    return res
