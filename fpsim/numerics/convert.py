"""Public array API: :func:`quantize`, :func:`encode`, :func:`decode`.

Thin validated wrappers: each checks its arguments and turns names into kernel ints; the array
goes as it is to :mod:`fpsim.numerics.backend`, whose dispatch table picks the CPU or the CUDA
implementation by where the array lives (nothing here looks at that).
"""

from __future__ import annotations

import numpy as np

import dataclasses

from fpsim.numerics import backend
from fpsim.numerics import config
from fpsim.numerics import fixed as _fixed
from fpsim.numerics import scaled as _scaled
from fpsim.numerics.format import Format
from fpsim.numerics.formats import format as _format
from fpsim.kernels.batched import SEGMENTS as _SEGMENTS
from fpsim.kernels.histogram import STATS_LEN as _STATS_LEN
from fpsim.kernels.rng import stream_key
from fpsim.kernels.round import SR_BITS_MAX
from fpsim.numerics.stats import N_BINADES as _N_BINADES, Stats as _Stats
from fpsim.numerics.modes import Overflow, RoundMode, as_flag


#: Host coercion of array-likes (the CPU entries of the dispatch table use it); kept under its
#: old name for callers of this module.
_as_float_array = backend.as_float_array


def _sr_bits(sr_bits) -> int:
    if sr_bits is None:
        return SR_BITS_MAX
    if isinstance(sr_bits, bool) or not isinstance(sr_bits, (int, np.integer)) or not (
        1 <= int(sr_bits) <= SR_BITS_MAX
    ):
        raise ValueError(f"sr_bits={sr_bits!r} is invalid: use None or an int in 1..{SR_BITS_MAX}")
    return int(sr_bits)


def _scaled_prepare(sf, rounding, overflow, seed, stream, sr_bits):
    """``(ScaledFormat, mode, key, srk)`` for a scaled format (``overflow`` None keeps the
    format's element policy)."""
    if overflow is not None:
        sf = dataclasses.replace(sf, overflow=Overflow.parse(overflow).name.lower())
    return sf, int(RoundMode.parse(rounding)), stream_key(seed, stream), _sr_bits(sr_bits)


def _prepare(fmt, rounding, overflow, seed, stream, sr_bits):
    """The kernel arguments ``(Format, mode, policy, key, srk)`` of the public names."""
    fmt = _format(fmt)
    mode = RoundMode.parse(rounding)
    policy = Overflow.parse("ieee" if overflow is None else overflow)
    key = stream_key(seed, stream)
    return fmt, int(mode), int(policy), key, _sr_bits(sr_bits)


def quantize(x, fmt: "str | Format", rounding="rne", overflow=None, seed: int = 0,
             stats: bool = False, *, stream: int = 0, sr_bits: int | None = None,
             out: np.ndarray | None = None, state=None):
    """Round every element of ``x`` to the nearest value of ``fmt`` under a rounding mode.

    Args:
        x: array-like of real numbers (float32/float64; float16, ml_dtypes floats and integers up
            to 2^53 are converted to float64 exactly).
        fmt: a :class:`Format`, a name (``"bfloat16"``, ``"e4m3"``) or a spec (``"e5m10"``); or
            a scaled format (a :class:`~fpsim.numerics.scaled.ScaledFormat` or a preset name:
            ``"mxfp8_e4m3"``, ``"nvfp4"``, ``"fp8_current"``, ``"s2fp8"``, ...; see
            ``docs/scaled_formats.md``), which takes float32 ``x``, scales it per tensor, block
            or tile (blocks along the last axis) and returns the dequantized float32 values.
        rounding: ``rne``, ``rna``, ``rtz``, ``rup``, ``rdn``, ``rto`` or ``sr`` (for a scaled
            format: the elements' rounding; scales are computed deterministically).
        overflow: ``ieee`` (Inf, or NaN without Inf) or ``saturate`` (±max; Inf saturates too);
            None: ``ieee``, or a scaled format's own element policy.
        seed, stream: key of the counter-based random bits of ``sr`` (element ``i`` of the
            flattened array always gets the same bits for the same seed and stream).
        stats: True to also return a :class:`Stats` with event counts and the input exponent
            histogram, counted in the same pass (a bool: anything else is a TypeError).
        sr_bits: number of random bits ``sr`` compares (None: 62, i.e. exact for every input not
            below 2^-10 of the smallest subnormal).
        out: optional preallocated, writeable result array (C-contiguous, the result's shape
            and dtype); it may be ``x`` itself to round in place (any other overlap with ``x`` is
            handled by copying ``x`` first). It is returned, also for 0-d input. Element
            formats only.
        state: delayed scaling's :class:`~fpsim.numerics.scaled.DelayedScaling` (from
            ``ScaledFormat.state()``): this call uses its scale, then records its amax.

    Returns:
        The rounded values, same shape, in a float32 array when ``x`` is float32 and every value
        of ``fmt`` is a float32, else float64; with ``stats=True`` a tuple ``(values, Stats)``
        (for a scaled format ``(values, ScaledStats)``: Stats of the elements and of the scales).
        A NaN result carries the sign bit of the format's NaN code (negative for fnuz formats,
        positive for unsigned ones, the input's sign otherwise); NaN inputs stay NaN in the
        carrier even for formats that cannot encode NaN.
    """
    want_stats = as_flag("stats", stats)
    gf = _fixed.grid_format(fmt)
    if gf is not None:
        if state is not None:
            raise ValueError("state= belongs to delayed scaling (a scaled format), not to a "
                             "fixed-point format")
        res, st = _fixed.quantize(backend.to_host(x), gf, int(RoundMode.parse(rounding)),
                                  overflow, stream_key(seed, stream), _sr_bits(sr_bits),
                                  want_stats, out)
        res = res if out is not None else backend.unwrap_0d(res)
        return (res, st) if want_stats else res
    sf = _scaled.scaled_format(fmt)
    if sf is not None:
        if out is not None:
            raise ValueError(f"out= is not available for scaled formats ({sf.name})")
        sf, mode, key, srk = _scaled_prepare(sf, rounding, overflow, seed, stream, sr_bits)
        res, st = _scaled.quantize(backend.to_host(x), sf, mode, key, srk, want_stats, state)
        return (res, st) if want_stats else res
    if state is not None:
        raise ValueError("state= belongs to delayed scaling (a scaled format), not to an "
                         "element format")
    fmt, mode, policy, key, srk = _prepare(fmt, rounding, overflow, seed, stream, sr_bits)
    res, st = backend.quantize(x, fmt, mode, policy, key, srk, want_stats, out)
    res = res if out is not None else backend.unwrap_0d(res)  # out= is returned as it is
    return (res, st) if want_stats else res


def code_dtype(fmt: "str | Format") -> np.dtype:
    """Smallest unsigned dtype that holds a code of ``fmt`` (uint8/16/32/64)."""
    gf = _fixed.grid_format(fmt)
    if gf is not None:
        return _fixed.code_dtype(gf)
    return backend.code_dtype(_format(fmt))


def encode(x, fmt: "str | Format", rounding="rne", overflow=None, seed: int = 0, *,
           stream: int = 0, sr_bits: int | None = None, state=None):
    """Round ``x`` into ``fmt`` (as :func:`quantize`) and return the bit codes.

    Returns:
        An array of the smallest unsigned dtype holding a code (:func:`code_dtype`), same shape
        (for a device array: int64 codes as that kind of device array).
        NaN in a format without NaN (``float4_e2m1fn``, ``float6_*``) encodes as ml_dtypes does:
        the sign-only code of the opposite sign.
        For a scaled format an :class:`~fpsim.numerics.scaled.Encoded` tuple
        ``(element_codes, scale_codes)`` (NVFP4's tensor scale in ``.tensor_scale``).
    """
    gf = _fixed.grid_format(fmt)
    if gf is not None:
        return backend.unwrap_0d(_fixed.encode(backend.to_host(x), gf, int(RoundMode.parse(rounding)),
                                               overflow, stream_key(seed, stream), _sr_bits(sr_bits)))
    sf = _scaled.scaled_format(fmt)
    if sf is not None:
        sf, mode, key, srk = _scaled_prepare(sf, rounding, overflow, seed, stream, sr_bits)
        return _scaled.encode(backend.to_host(x), sf, mode, key, srk, state)
    fmt, mode, policy, key, srk = _prepare(fmt, rounding, overflow, seed, stream, sr_bits)
    codes = backend.encode(x, fmt, mode, policy, key, srk)
    return backend.unwrap_0d(codes)


def decode(codes, fmt: "str | Format", *, tensor_scale=None) -> np.ndarray:
    """float64 values of the codes of ``fmt``.

    Args:
        codes: array-like of non-negative integers below ``2**fmt.bits``; for a scaled format
            ``(element_codes, scale_codes)`` (what :func:`encode` returns), giving float32
            values; NVFP4 also needs ``tensor_scale`` (taken from an ``Encoded`` when given one).

    Raises:
        ValueError: a code is out of range (the message gives the first offending index).
    """
    gf = _fixed.grid_format(fmt)
    if gf is not None:
        return backend.unwrap_0d(_fixed.decode(backend.to_host(codes), gf))
    sf = _scaled.scaled_format(fmt)
    if sf is not None:
        if not (isinstance(codes, tuple) and len(codes) == 2):
            raise TypeError(f"decoding {sf.name} takes (element_codes, scale_codes), as encode "
                            "returns them")
        ts = tensor_scale if tensor_scale is not None else getattr(codes, "tensor_scale", None)
        return _scaled.decode(codes[0], codes[1], sf, ts)
    return backend.unwrap_0d(backend.decode(codes, _format(fmt)))


# ---- the prepared entry of cast sites ------------------------------------------------------------
# A training step rounds dozens of small tensors with the same few casts; quantize's argument
# parsing, dispatch and statistics set-up cost more than the rounding there. A cast is checked
# once, when it is built (PreparedQuantize), and then rounds through _quantize_prepared: no
# per-call checks, one jitted call per group of tensors (kernels/batched.py).
class PreparedQuantize:
    """An element format, a rounding mode and an overflow policy, checked once and turned into
    the arguments of :mod:`fpsim.kernels.batched` (for :func:`_quantize_prepared`).

    Args:
        fmt: a :class:`Format` (not a fixed-point grid or scaled format).
        mode: a :class:`RoundMode` int; overflow: an :class:`Overflow` int (a float policy).
        sr_bits: random bits of stochastic rounding (None: all).
    """

    def __init__(self, fmt: Format, mode: int, overflow: int, sr_bits: int | None = None):
        if not isinstance(fmt, Format):
            raise TypeError(f"PreparedQuantize takes a Format, got {type(fmt).__name__}")
        self.fmt = fmt
        self.mode = int(RoundMode(mode))
        self.overflow = int(Overflow(overflow))
        self.srk = _sr_bits(sr_bits)
        self.fits_float32 = fmt.fits_float32
        self._params = {}  # carrier -> int64 parameter vector

    def params(self, carrier: str) -> np.ndarray:
        """The format's kernel parameters for ``carrier`` as the int64 vector the kernels take."""
        pv = self._params.get(carrier)
        if pv is None:
            pv = self._params[carrier] = np.array(self.fmt.params(carrier), np.int64)
        return pv


#: Scratch statistics rows of _quantize_prepared, ``{True: rows, False: width-0 rows}``:
#: allocated once and zeroed by the kernel after each use. One set serves every thread: the
#: kernels hold the GIL, so two calls never use the rows at the same time.
_SCRATCH: dict = {}


def _scratch_rows(nrows: int, want_stats: bool) -> np.ndarray:
    """Zeroed statistics rows for ``nrows`` chunks (width 0 without statistics)."""
    rows = _SCRATCH.get(want_stats)
    if rows is None or rows.shape[0] < nrows:
        rows = _SCRATCH[want_stats] = np.zeros((nrows, _STATS_LEN if want_stats else 0),
                                               np.int64)
    return rows


def _segment(start: int, end: int, key: int) -> tuple:
    """A row of the kernels' segment table: start, end, the number of chunks (1, the serial
    driver, below ``config.CAST_SERIAL_BELOW``) and the stream key's 64 bits as an int64."""
    n = end - start
    return (start, end, 1 if n < config.CAST_SERIAL_BELOW else backend.nchunks(n),
            key - (1 << 64) if key >= 1 << 63 else key)


def _quantize_prepared(xs: list, prep: PreparedQuantize, keys: list, want_stats: bool) -> list:
    """``[(values, Stats or None), ...]``: each array of ``xs`` rounded as
    ``quantize(x, fmt, rounding, overflow, stats=want_stats)`` with stream key ``keys[i]``
    would round it (bit for bit, Stats field for field), in one jitted call; serially below
    ``config.CAST_SERIAL_BELOW`` elements (results do not depend on the chunking).

    Pre-validated: ``xs`` are C-contiguous host float32/float64 arrays of one dtype, ``keys``
    64-bit stream keys (:func:`fpsim.kernels.rng.stream_key`). Nothing is checked here.
    """
    carrier = "float32" if xs[0].dtype == np.float32 and prep.fits_float32 else "float64"
    if len(xs) == 1:
        flat = xs[0].reshape(-1)
        rows = [_segment(0, flat.size, keys[0])]
    else:
        flat = np.concatenate([x.reshape(-1) for x in xs])
        bounds = np.cumsum([0] + [x.size for x in xs]).tolist()
        rows = [_segment(a, b, key) for a, b, key in zip(bounds, bounds[1:], keys)]
    if carrier == "float64" and flat.dtype != np.float64:
        with np.errstate(invalid="ignore"):  # signalling NaNs warn when widened; they stay NaN
            flat = flat.astype(np.float64)
    out = np.empty_like(flat)
    counts = np.zeros((len(xs), 8), np.int64)
    exp_hist = np.zeros((len(xs), _N_BINADES if want_stats else 0), np.int64)
    bits_t = np.uint32 if carrier == "float32" else np.int64
    # (the input read-only, as the public path passes it: the drivers this kernel calls then
    # have the same argument types and are compiled once for both paths, not twice)
    _SEGMENTS[prep.mode](backend.read_only(flat.view(bits_t)), out.view(bits_t),
                         np.array(rows, np.int64),
                         prep.params(carrier), prep.overflow, prep.srk, counts,
                         _scratch_rows(max(r[2] for r in rows), want_stats), exp_hist)
    ys = [out[a:b].reshape(x.shape) for x, (a, b, _, _) in zip(xs, rows)]
    if not want_stats:
        return [(y, None) for y in ys]
    return [(y, _Stats(x.size, *c[:5], exp_hist=h, hist_zero=c[5], hist_inf=c[6], hist_nan=c[7]))
            for y, x, c, h in zip(ys, xs, counts.tolist(), exp_hist)]
