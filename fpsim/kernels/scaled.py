"""CPU drivers of the scaled and block formats (:mod:`fpsim.numerics.scaled`).

Every element goes through THE rounding routine (:func:`~fpsim.kernels.round.round_bits`) on a
float64 carrier; what these drivers add is the scale: computed per tile from the tile's amax,
applied before rounding and undone after. Inputs are float32 arrays (the recipes scale float32
tensors); the scaled value ``y`` handed to the rounding is exact in float64 for power-of-two
scales (a float32 ``x`` times ``2^-k``, ``|k| <= 127``, stays far inside float64's range) and
is the float32 product or quotient the recipe defines for float32 scales (``fp32(x * s)``).

Tiles: the input is viewed as ``(B, R, C)`` (batch, rows, columns: the last two axes) and cut
into tiles of ``tr x tc`` (ragged at the ends); a block of ``k`` along the last axis is a
``1 x k`` tile. A tile row (``tr`` rows, every tile column) is one unit of parallel work and
writes only its own outputs, so results do not depend on the thread count (the serial twin
in the tests checks that).

Per-tensor rules (current and delayed scaling) take the scale from the caller and run the
flat drivers :func:`tensor_amax` and :func:`tensor_round`; S2FP8 adds :func:`log2_sums` (its
statistics, summed exactly) and :func:`s2fp8_round`.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from fpsim.kernels.bitcast import bits_f64, f64_bits
from fpsim.kernels.bits import bit_length
from fpsim.kernels.rng import random_bits
from fpsim.kernels.round import (RNE, SR, carrier_bits, pack_code, round_bits,
                                 unpack_code)

#: How a tile's elements are mapped onto the element grid (``y``) and back (the dequantized
#: value): ``POW2``: ``y = x * 2^-k`` and ``q * 2^k``, exact, in float64; ``MUL32``:
#: ``y = fp32(x * e)`` and ``fp32(q * d)``; ``DIV32``: ``y = fp32(x / d)`` and ``fp32(q * d)``;
#: ``NAN``: the tile's scale is NaN, every value NaN.
POW2, MUL32, DIV32, NANTILE = 0, 1, 2, 3
#: Tile rules (see :mod:`fpsim.numerics.scaled` for their definitions and sources).
RULE_MX, RULE_NVFP4, RULE_TILE = 0, 1, 2

_INF32 = np.int64(0x7F800000)
_ABS32 = np.int64(0x7FFFFFFF)
_SIGN64 = np.int64(1) << 63
_ABS64 = ~_SIGN64
_FLT_MAX = np.float32(3.4028234663852886e38)


@njit(cache=True, inline="always")
def _f32_value(a):
    """float64 value of non-negative finite float32 bits ``a`` (exact)."""
    e = a >> 23
    m = a & 0x7FFFFF
    if e == 0:
        return np.float64(m) * 2.0 ** -149
    return np.float64(m | 0x800000) * bits_f64(np.int64(e - 150 + 1023) << 52)


@njit(cache=True, inline="always")
def _pow2(k):
    """2^k as a float64, for -1022 <= k <= 1023."""
    return bits_f64(np.int64(k + 1023) << 52)


@njit(cache=True, inline="always")
def floor_log2(v):
    """floor(log2(v)) of a positive finite float64 ``v``, from its exponent field."""
    b = f64_bits(v)
    e = (b >> 52) & 0x7FF
    if e == 0:  # float64 subnormal: the bit length of the fraction gives the binade
        return np.int64(bit_length(b & ((np.int64(1) << 52) - 1))) - 1 - 1074
    return e - 1023


@njit(cache=True, inline="always")
def round_value(y, P, mode, overflow, rnd, srk, simple=0):
    """Round the float64 ``y`` into the element format ``P`` (float64-carrier params):
    ``(value, code, events)``. ``simple`` as :func:`~fpsim.kernels.round.round_bits` takes it."""
    b = f64_bits(y)
    a = b & _ABS64
    sign = (b >> 63) & 1
    r, s, ev = round_bits(a, sign, P, mode, overflow, rnd, srk, simple)
    return bits_f64(carrier_bits(r, s, P)), pack_code(r, s, P), ev


@njit(cache=True, inline="always")
def _round_q(y, P, mode, overflow, rnd, srk, simple):
    """The element value (float64) of :func:`round_value`, without the code or the events, so
    that the loops that only want values keep none of pack_code's branches."""
    b = f64_bits(y)
    r, s, ev = round_bits(b & _ABS64, (b >> 63) & 1, P, mode, overflow, rnd, srk, simple)
    return bits_f64(carrier_bits(r, s, P))


@njit(cache=True, inline="always")
def _scaled_y(xv, kind, enc):
    """The value handed to the rounding for the float32 value ``xv`` (a float64 here)."""
    if kind == POW2:
        return xv * enc
    if kind == MUL32:
        return np.float64(np.float32(xv) * np.float32(enc))
    return np.float64(np.float32(xv) / np.float32(enc))


@njit(cache=True, inline="always")
def _dequant(q, kind, dec):
    """The dequantized value (a float64 holding the float32 result) of the element value ``q``."""
    if kind == POW2:
        return q * dec
    return np.float64(np.float32(q) * np.float32(dec))


@njit(cache=True, inline="always")
def _tile_scale(amax_bits, rule, P, SP, kmin, kmax, emax_elem, fmax_elem, fmax_scale, mult,
                gdec, pow2):
    """The scale of one tile from its amax (float32 bits, sign cleared; NaN/Inf patterns mean
    the tile holds one): ``(kind, enc, dec, scale_code, ideal)``. ``ideal`` is the scale the
    rule asks for before it is stored in the scale format (the Stats of the scales round it).
    """
    nan = np.float64(np.nan)
    if amax_bits >= _INF32:  # a NaN or an Inf in the tile: the tile's scale is NaN
        if rule == RULE_TILE:
            return NANTILE, nan, nan, np.int64(0x7FC00000), nan
        return NANTILE, nan, nan, np.int64(SP.nan_code), nan
    amax = _f32_value(amax_bits)
    if rule == RULE_MX:
        # OCP MX: X = 2^(floor(log2(amax)) - emax_elem), clamped below to the smallest E8M0
        # value; above the largest the scale is NaN. An all-zero block takes the smallest.
        if amax_bits == 0:
            k = kmin
            ideal = _pow2(k)
        else:
            k = floor_log2(amax) - emax_elem
            ideal = _pow2(k)
            if k > kmax:
                return NANTILE, nan, nan, np.int64(SP.nan_code), ideal
            if k < kmin:
                k = kmin
        code = pack_code(np.int64(k + 1023) << 52, 0, SP)
        return POW2, _pow2(-k), _pow2(k), code, ideal
    if rule == RULE_NVFP4:
        # Transformer Engine's reference order, all float32: block decode scale
        # amax * (tensor encode scale * 1/6) (``mult``), at most 448, stored in E4M3 (RNE); the
        # elements are multiplied by 1 / (stored scale * tensor decode scale), at most FLT_MAX
        # (a zero block scale gives FLT_MAX, and its elements round to codes whose value is 0).
        s = min(np.float32(amax) * np.float32(mult), _FLT_MAX)
        s = min(s, np.float32(fmax_scale))
        r, sgn, ev = round_bits(f64_bits(np.float64(s)), 0, SP, RNE, 1, 0, 62, 0)
        d_b = bits_f64(r)
        dd = np.float32(np.float32(d_b) * np.float32(gdec))
        if dd == 0:
            enc = _FLT_MAX
        else:
            enc = min(np.float32(1.0) / dd, _FLT_MAX)
        return MUL32, np.float64(enc), np.float64(dd), pack_code(r, 0, SP), np.float64(s)
    # RULE_TILE: decode scale amax / max of the element format, in float32 (DeepSeek-V3) or
    # as the smallest power of two not below it.
    if amax_bits == 0:
        return DIV32, 1.0, 1.0, np.int64(0x3F800000), 1.0
    if pow2 == 1:
        k = floor_log2(amax) - floor_log2(fmax_elem)
        if _pow2(k) * fmax_elem < amax:
            k += 1
        d = _pow2(k)
        return POW2, _pow2(-k), d, np.int64(k + 127) << 23, d
    d32 = np.float32(np.float32(amax) / np.float32(fmax_elem))
    return DIV32, np.float64(d32), np.float64(d32), _f32_bits_of(d32), np.float64(d32)


@njit(cache=True, inline="always")
def _f32_bits_of(v):
    """Bits (as int64) of a positive finite float32 value ``v``."""
    d = np.float64(v)
    if d < 2.0 ** -126:  # float32 subnormal: the fraction field counts units of 2^-149
        return np.int64(d * 2.0 ** 149)
    b = f64_bits(d)
    e = ((b >> 52) & 0x7FF) - 1023
    return (np.int64(e + 127) << 23) | ((b >> 29) & 0x7FFFFF)


@njit(cache=True, inline="always")
def _round_elems(xs, os, off, kind, enc, dec, P, mode, overflow, key, srk, simple):
    """Round the float32 slice ``xs`` (elements ``off ..`` of the flat array) scaled by
    ``kind``/``enc`` into ``os``, dequantized by ``dec``: values only.

    Callers pass ``kind``, ``mode`` and ``simple`` as constants, leaving a branch-free body
    that LLVM vectorizes. The loop indexes slices from 0: with a non-zero start Numba's
    negative-index wraparound check stays in the loop and blocks vectorization.
    """
    for j in range(xs.size):
        y = _scaled_y(np.float64(xs[j]), kind, enc)
        rnd = random_bits(key, off + j) if mode == SR else np.int64(0)
        q = _round_q(y, P, mode, overflow, rnd, srk, simple)
        os[j] = np.float32(_dequant(q, kind, dec))


@njit(cache=True)
def _values_rne(xs, os, kind, enc, dec, P, overflow):
    """:func:`_round_elems` in RNE, with the run-time ``kind`` (not NANTILE) and the format
    class (``simple``, see :func:`~fpsim.kernels.round.round_bits`) turned into constants: one
    vectorized loop per case. A function of its own, not inlined into the ``prange`` bodies:
    inlined, its six loops made Numba's parallel passes over those bodies take minutes to
    compile."""
    if P.simple_signs == 1:
        if kind == POW2:
            _round_elems(xs, os, 0, POW2, enc, dec, P, RNE, overflow, 0, 62, 1)
        elif kind == MUL32:
            _round_elems(xs, os, 0, MUL32, enc, dec, P, RNE, overflow, 0, 62, 1)
        else:
            _round_elems(xs, os, 0, DIV32, enc, dec, P, RNE, overflow, 0, 62, 1)
    else:
        if kind == POW2:
            _round_elems(xs, os, 0, POW2, enc, dec, P, RNE, overflow, 0, 62, 0)
        elif kind == MUL32:
            _round_elems(xs, os, 0, MUL32, enc, dec, P, RNE, overflow, 0, 62, 0)
        else:
            _round_elems(xs, os, 0, DIV32, enc, dec, P, RNE, overflow, 0, 62, 0)


@njit(cache=True)
def _values_any(xs, os, off, kind, enc, dec, P, mode, overflow, key, srk):
    """:func:`_round_elems` with a run-time mode (the modes other than RNE share this loop)."""
    if kind == POW2:
        _round_elems(xs, os, off, POW2, enc, dec, P, mode, overflow, key, srk, 0)
    elif kind == MUL32:
        _round_elems(xs, os, off, MUL32, enc, dec, P, mode, overflow, key, srk, 0)
    else:
        _round_elems(xs, os, off, DIV32, enc, dec, P, mode, overflow, key, srk, 0)


@njit(cache=True, inline="always")
def _round_elems_fast(xs, os, off, kind, enc, dec, P, mode, overflow, key, srk):
    """Values only: RNE through :func:`_values_rne` (the common case), other modes through
    :func:`_values_any`."""
    if mode == RNE:
        _values_rne(xs, os, kind, enc, dec, P, overflow)
    else:
        _values_any(xs, os, off, kind, enc, dec, P, mode, overflow, key, srk)


@njit(cache=True)
def _round_elems_full(xs, os, es, ys, off, kind, enc, dec, P, mode, overflow, key, srk,
                      want_codes, want_y):
    """As :func:`_round_elems` with a run-time ``kind``, also writing the element codes to
    ``es`` and the scaled values to ``ys`` when asked (``encode`` and the Stats pass: the
    value-only loop stays free of these stores)."""
    for j in range(xs.size):
        y = _scaled_y(np.float64(xs[j]), kind, enc)
        rnd = random_bits(key, off + j) if mode == SR else np.int64(0)
        q, code, ev = round_value(y, P, mode, overflow, rnd, srk)
        os[j] = np.float32(_dequant(q, kind, dec))
        if want_codes:
            es[j] = code
        if want_y:
            ys[j] = y


@njit(cache=True, inline="always")
def _tile_amax_scale(xb, b, i0, i1, j0, j1, rule, P, SP, kmin, kmax, emax_elem, fmax_elem,
                     fmax_scale, mult, gdec, pow2):
    """The amax of the tile ``xb[b, i0:i1, j0:j1]`` and its scale (see :func:`_tile_scale`)."""
    amax = np.int64(0)
    for i in range(i0, i1):
        xr = xb[b, i][j0:j1]  # a slice indexed from 0 (see _round_elems)
        for j in range(xr.size):
            amax = max(amax, np.int64(xr[j]) & _ABS32)
    return _tile_scale(amax, rule, P, SP, kmin, kmax, emax_elem, fmax_elem, fmax_scale, mult,
                       gdec, pow2)


@njit(cache=True, inline="always")
def _tile_row(x, xb, out, ecodes, scodes, ideal, ybuf, t, nbr, nbc, tr, tc, rule, P, SP, kmin,
              kmax, emax_elem, fmax_elem, fmax_scale, mult, gdec, pow2, mode, overflow, key,
              srk, want_codes, want_y):
    """One tile row ``t`` (over the batch): every tile's amax, scale and elements (the general
    path: any mode, codes and scaled values when asked)."""
    B, R, C = x.shape
    b = t // nbr
    i0 = (t % nbr) * tr
    i1 = min(i0 + tr, R)
    for u in range(nbc):
        j0 = u * tc
        j1 = min(j0 + tc, C)
        kind, enc, dec, code, idl = _tile_amax_scale(xb, b, i0, i1, j0, j1, rule, P, SP, kmin,
                                                     kmax, emax_elem, fmax_elem, fmax_scale,
                                                     mult, gdec, pow2)
        scodes[b, t % nbr, u] = code
        ideal[b, t % nbr, u] = idl
        for i in range(i0, i1):
            base = (b * R + i) * C
            os = out[b, i][j0:j1]
            if kind == NANTILE:  # decided per tile, so the element loops never test it
                os[:] = np.float32(np.nan)
                if want_codes:
                    ecodes[b, i][j0:j1] = 0
                if want_y:
                    ybuf[base + j0:base + j1] = np.nan
            elif want_codes | want_y:  # the size-0 buffers are only sliced when wanted
                es = ecodes[b, i][j0:j1] if want_codes else ecodes.reshape(0)[0:0]
                ys = ybuf[base + j0:base + j1] if want_y else ybuf[0:0]
                _round_elems_full(x[b, i][j0:j1], os, es, ys, base + j0, kind, enc, dec, P,
                                  mode, overflow, key, srk, want_codes, want_y)
            else:
                _round_elems_fast(x[b, i][j0:j1], os, base + j0, kind, enc, dec, P, mode,
                                  overflow, key, srk)


@njit(cache=True, inline="always")
def _rows_rne(x2, o2, tr, tc, kinds, encs, decs, P, overflow, simple):
    """RNE values of the rows ``x2`` (2-D, tile-aligned: row ``i`` is in tile row ``i // tr``)
    into ``o2``, tile ``(i // tr, u)`` scaled by ``kinds``/``encs``/``decs``; ``simple`` a
    constant. The kind branch is per tile; each kind's element loop is vectorized."""
    C = x2.shape[1]
    for i in range(x2.shape[0]):
        ti = i // tr
        for u in range(kinds.shape[1]):
            j0 = u * tc
            j1 = min(j0 + tc, C)
            xs = x2[i][j0:j1]
            os = o2[i][j0:j1]
            kind = kinds[ti, u]
            enc = encs[ti, u]
            dec = decs[ti, u]
            if kind == POW2:
                _round_elems(xs, os, 0, POW2, enc, dec, P, RNE, overflow, 0, 62, simple)
            elif kind == MUL32:
                _round_elems(xs, os, 0, MUL32, enc, dec, P, RNE, overflow, 0, 62, simple)
            elif kind == DIV32:
                _round_elems(xs, os, 0, DIV32, enc, dec, P, RNE, overflow, 0, 62, simple)
            else:
                os[:] = np.float32(np.nan)


@njit(cache=True)
def _tile_rows_rne(x2, o2, tr, tc, kinds, encs, decs, P, overflow):
    """:func:`_rows_rne` with the format class (``simple``) as a constant. A function of its
    own, called once per group of tile rows: inlined into the ``prange`` body, its loops made
    Numba's parallel passes take minutes to compile; called per tile, the call cost more than
    a 32-element tile's work."""
    if P.simple_signs == 1:
        _rows_rne(x2, o2, tr, tc, kinds, encs, decs, P, overflow, 1)
    else:
        _rows_rne(x2, o2, tr, tc, kinds, encs, decs, P, overflow, 0)


#: Tile rows whose scales the RNE value path computes before one call rounds their elements.
TILE_GROUP = 64


@njit(parallel=True, cache=True)
def tiles(x, xb, out, ecodes, scodes, ideal, ybuf, tr, tc, rule, P, SP, kmin, kmax, emax_elem,
          fmax_elem, fmax_scale, mult, gdec, pow2, mode, overflow, key, srk, want_codes,
          want_y, nchunk):
    """Quantize the ``(B, R, C)`` float32 array ``x`` (``xb``: its uint32 bits) in tiles of
    ``tr x tc`` with a tile rule; dequantized float32 values to ``out``.

    Outputs: ``scodes`` / ``ideal`` (B, tile rows, tile columns): each tile's scale code and the
    ideal scale; ``ecodes`` (B, R, C) the element codes when ``want_codes``; ``ybuf`` (flat) the
    scaled values handed to the rounding when ``want_y`` (the Stats pass reads them).
    ``mode`` is a runtime int. RNE without codes or scaled values (the common case) takes the
    scales of up to ``TILE_GROUP`` tile rows of one batch entry, then rounds their elements in
    one call of :func:`_tile_rows_rne` (RNE a constant, vectorized loops); everything else goes
    tile by tile through :func:`_tile_row`.
    """
    B, R, C = x.shape
    nbr = (R + tr - 1) // tr
    nbc = (C + tc - 1) // tc
    ntr = B * nbr
    values_rne = (mode == RNE) & (not want_codes) & (not want_y)
    for c in prange(nchunk):
        lo = (c * ntr) // nchunk
        hi = ((c + 1) * ntr) // nchunk
        if not values_rne:
            for t in range(lo, hi):
                _tile_row(x, xb, out, ecodes, scodes, ideal, ybuf, t, nbr, nbc, tr, tc, rule, P,
                          SP, kmin, kmax, emax_elem, fmax_elem, fmax_scale, mult, gdec, pow2,
                          mode, overflow, key, srk, want_codes, want_y)
            continue
        kinds = np.empty((TILE_GROUP, nbc), np.int64)
        encs = np.empty((TILE_GROUP, nbc), np.float64)
        decs = np.empty((TILE_GROUP, nbc), np.float64)
        g0 = lo
        while g0 < hi:
            b = g0 // nbr
            g1 = min(g0 + TILE_GROUP, hi, (b + 1) * nbr)  # one batch entry: contiguous rows
            for t in range(g0, g1):
                i0 = (t % nbr) * tr
                i1 = min(i0 + tr, R)
                for u in range(nbc):
                    j0 = u * tc
                    kind, enc, dec, code, idl = _tile_amax_scale(
                        xb, b, i0, i1, j0, min(j0 + tc, C), rule, P, SP, kmin, kmax, emax_elem,
                        fmax_elem, fmax_scale, mult, gdec, pow2)
                    scodes[b, t % nbr, u] = code
                    ideal[b, t % nbr, u] = idl
                    kinds[t - g0, u] = kind
                    encs[t - g0, u] = enc
                    decs[t - g0, u] = dec
            r0 = (g0 % nbr) * tr
            r1 = min(((g1 - 1) % nbr + 1) * tr, R)
            _tile_rows_rne(x[b, r0:r1], out[b, r0:r1], tr, tc, kinds, encs, decs, P, overflow)
            g0 = g1


@njit(cache=True, inline="always")
def _amax_bits(xs):
    """Largest of the float32 bits ``xs`` with the sign cleared (a slice indexed from 0)."""
    m = np.int64(0)
    for i in range(xs.size):
        m = max(m, np.int64(xs[i]) & _ABS32)
    return m


@njit(parallel=True, cache=True)
def tensor_amax(xb, nchunk):
    """Largest |x| of the float32 bits ``xb`` as float32 bits: NaN or Inf patterns (>= 0x7F800000)
    when the array holds one (a NaN pattern wins over Inf only by its larger bits: callers test
    ``>= 0x7F800000``)."""
    n = xb.size
    part = np.zeros(nchunk, np.int64)
    for c in prange(nchunk):
        lo = (c * n) // nchunk
        hi = ((c + 1) * n) // nchunk
        part[c] = _amax_bits(xb[lo:hi])
    return part.max() if nchunk > 0 else np.int64(0)


@njit(parallel=True, cache=True)
def tensor_round(x, out, ecodes, ybuf, kind, enc, dec, P, mode, overflow, key, srk, want_codes,
                 want_y, nchunk):
    """Quantize the flat float32 array ``x`` with one scale (``kind``, ``enc``, ``dec`` as in
    :func:`tiles`); dequantized values to ``out``."""
    n = x.size
    for c in prange(nchunk):
        lo = (c * n) // nchunk
        hi = ((c + 1) * n) // nchunk
        if want_codes | want_y:  # the size-0 buffers are only sliced when wanted
            es = ecodes[lo:hi] if want_codes else ecodes[0:0]
            ys = ybuf[lo:hi] if want_y else ybuf[0:0]
            _round_elems_full(x[lo:hi], out[lo:hi], es, ys, lo, kind, enc, dec, P, mode,
                              overflow, key, srk, want_codes, want_y)
        else:
            _round_elems_fast(x[lo:hi], out[lo:hi], lo, kind, enc, dec, P, mode, overflow, key,
                              srk)


# ---- S2FP8 --------------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def split_log2(a):
    """``(e, l)`` with ``|x| = m * 2^e``, ``1 <= m < 2`` and ``l = log2(m)`` (libm, float64) for
    the non-zero finite float32 bits ``a``. S2FP8 defines ``log2|x|`` as ``e + l``."""
    e = a >> 23
    f = a & 0x7FFFFF
    if e == 0:  # float32 subnormal f * 2^-149: normalise f to 1.xxx
        n = bit_length(f)
        m = np.float64(f) / _pow2(n - 1)
        return np.int64(n - 1 - 149), np.log2(m)
    return e - 127, np.log2(1.0 + np.float64(f) * 2.0 ** -23)


@njit(parallel=True, cache=True)
def log2_sums(xb, nchunk, sums):
    """S2FP8's statistics, exactly: per chunk ``c``, ``sums[c] = (sum e, sum hi, sum lo, count,
    NaN/Inf count)`` over the non-zero finite elements, where ``l = log2(m)`` (a float64 in
    [0, 1) and a multiple of 2^-75: ``m - 1 >= 2^-23`` puts ``l`` at or above 2^-23, whose ulp
    is 2^-75) is split exactly into ``hi = floor(l * 2^35)`` and ``lo = (l - hi 2^-35) 2^75``
    (both integers below 2^40). The caller keeps every chunk under 2^22 elements (the sums
    then fit in int64) and adds them as Python ints: ``sum l = (2^40 sum hi + sum lo) 2^-75``.
    """
    n = xb.size
    for c in prange(nchunk):
        lo_i = (c * n) // nchunk
        hi_i = ((c + 1) * n) // nchunk
        se = np.int64(0)
        sh = np.int64(0)
        sl = np.int64(0)
        cnt = np.int64(0)
        bad = np.int64(0)
        for i in range(lo_i, hi_i):
            a = np.int64(xb[i]) & _ABS32
            if a >= _INF32:
                bad += 1
                continue
            if a == 0:
                continue
            e, l = split_log2(a)
            h = np.int64(np.floor(l * 2.0 ** 35))
            se += e
            sh += h
            sl += np.int64((l - np.float64(h) * 2.0 ** -35) * 2.0 ** 75)
            cnt += 1
        sums[c, 0] = se
        sums[c, 1] = sh
        sums[c, 2] = sl
        sums[c, 3] = cnt
        sums[c, 4] = bad


@njit(cache=True, inline="always")
def _s2fp8_range(xs, xb, os, es, ys, off, alpha, beta, P, mode, overflow, key, srk, tab,
                 want_codes, want_y):
    """S2FP8 of the slice ``xs`` (bits ``xb``; elements ``off ..`` of the flat array) into
    ``os``; codes to ``es`` and scaled values to ``ys`` when asked. ``tab`` (when not empty)
    holds :func:`s2fp8_unmap` of every positive magnitude code (see :func:`_unmap_table`)."""
    for i in range(xs.size):
        a = np.int64(xb[i]) & _ABS32
        neg = (np.int64(xb[i]) >> 31) & 1
        if a == 0 or a >= _INF32:
            y = np.float64(xs[i])  # zeros, Inf and NaN go through the rounding as they are
        else:
            e, l = split_log2(a)
            u = alpha * (np.float64(e) + l) + beta
            y = np.exp2(u)
            if neg == 1:
                y = -y
        rnd = random_bits(key, off + i) if mode == SR else np.int64(0)
        b = f64_bits(y)
        r, s, ev = round_bits(b & _ABS64, (b >> 63) & 1, P, mode, overflow, rnd, srk, 0)
        if tab.size == 0 or r == 0 or r >= P.carrier_inf_bits:
            os[i] = np.float32(s2fp8_unmap(bits_f64(carrier_bits(r, s, P)), alpha, beta))
        else:  # the unmap is odd: the magnitude's entry, negated for a negative result
            v = tab[pack_code(r, 0, P)]
            os[i] = -v if s == 1 else v
        if want_codes:
            es[i] = pack_code(r, s, P)
        if want_y:
            ys[i] = y


#: Element formats with at most this many exponent and fraction bits unmap S2FP8 results
#: through a table of their magnitude codes.
UNMAP_TABLE_BITS = 16


@njit(cache=True)
def _unmap_table(P, alpha, beta):
    """float32 :func:`s2fp8_unmap` of the value of every magnitude code ``0 .. 2^(e + m) - 1`` of
    the element format (entries of NaN and Inf codes are never read), or an empty table for
    wider formats. A table entry is the same float64 expression rounded to float32 once, so it
    is bit for bit what the direct call gives; it replaces two libm calls per element (log2
    and exp2 do not vectorize) by one load."""
    nbits = P.exp_bits + P.man_bits
    if nbits > UNMAP_TABLE_BITS:
        return np.zeros(0, np.float32)
    tab = np.zeros(np.int64(1) << nbits, np.float32)
    for m in range(tab.size):
        tab[m] = np.float32(s2fp8_unmap(bits_f64(unpack_code(np.int64(m), P)), alpha, beta))
    return tab


@njit(parallel=True, cache=True)
def s2fp8_round(x, xb, out, ecodes, ybuf, alpha, beta, P, mode, overflow, key, srk, want_codes,
                want_y, nchunk):
    """S2FP8 of the flat float32 array ``x`` with its statistics ``alpha``, ``beta``:
    ``y = sign(x) 2^(alpha log2|x| + beta)`` rounded into the element format, then
    ``sign(q) 2^((log2|q| - beta) / alpha)`` as float32 (``log2`` as :func:`split_log2`
    defines it; zeros, Inf and NaN pass through the element rounding unmapped)."""
    n = x.size
    tab = _unmap_table(P, alpha, beta)
    for c in prange(nchunk):
        lo = (c * n) // nchunk
        hi = ((c + 1) * n) // nchunk
        es = ecodes[lo:hi] if want_codes else ecodes[0:0]
        ys = ybuf[lo:hi] if want_y else ybuf[0:0]
        _s2fp8_range(x[lo:hi], xb[lo:hi], out[lo:hi], es, ys, lo, alpha, beta, P, mode,
                     overflow, key, srk, tab, want_codes, want_y)


@njit(parallel=True, cache=True)
def finite_amax(xb, nchunk):
    """Largest |x| over the finite elements of the float32 bits ``xb``, as bits (0: none)."""
    n = xb.size
    part = np.zeros(nchunk, np.int64)
    for c in prange(nchunk):
        lo = (c * n) // nchunk
        hi = ((c + 1) * n) // nchunk
        m = np.int64(0)
        for i in range(lo, hi):
            a = np.int64(xb[i]) & _ABS32
            if a < _INF32:
                m = max(m, a)
        part[c] = m
    return part.max() if nchunk > 0 else np.int64(0)


@njit(cache=True, inline="always")
def s2fp8_unmap(q, alpha, beta):
    """S2FP8's value of the element value ``q`` (float64): ``sign(q) 2^((log2|q| - beta) /
    alpha)`` with ``log2`` split as :func:`split_log2`; zeros, Inf and NaN as they are."""
    qa = f64_bits(q) & _ABS64
    if qa == 0 or qa >= np.int64(0x7FF0000000000000):
        return q
    eq = (qa >> 52) - 1023
    mq = bits_f64((qa & ((np.int64(1) << 52) - 1)) | (np.int64(1023) << 52))
    v = np.exp2(((np.float64(eq) + np.log2(mq)) - beta) / alpha)
    return -v if q < 0 else v


@njit(cache=True)
def s2fp8_decode(q, alpha, beta, out):
    """:func:`s2fp8_unmap` of every element value ``q`` (flat float64) into float32 ``out``."""
    for i in range(q.size):
        out[i] = np.float32(s2fp8_unmap(q[i], alpha, beta))
