"""Scaled and block formats: an element :class:`~fpsim.numerics.format.Format` plus a scale.

A :class:`ScaledFormat` is data, like a Format: an element format, a scale rule, the tiles that
share one scale (the whole tensor, ``1 x k`` blocks along the last axis, or ``r x c`` tiles over
the last two axes) and the format the scales are stored in. The element formats stay as they
are; this layer only decides, per tile, which power of two or float32 factor to divide by before
the element rounding (THE rounding routine, every rounding mode) and to multiply by after it.
The rules and their sources are written down in ``docs/scaled_formats.md``:

* ``mx`` (OCP Microscaling v1.0, section 6.3): ``X = 2^(floor(log2 amax) - emax_elem)`` in E8M0,
  elements ``V_i / X`` rounded with normal values clamped to the element's max.
* ``nvfp4``: E2M1 elements, an E4M3 scale per 16, a float32 scale per tensor, in Transformer
  Engine's reference order of float32 operations.
* ``tile`` (DeepSeek-V3's 1 x 128 and 128 x 128 tiles): decode scale ``amax / max_elem`` in
  float32 (or the power of two at or above it); elements ``fp32(x / s)``.
* ``tensor`` (Transformer Engine's per-tensor scaling): ``scale = fp32(max_elem * 2^-margin /
  amax)`` from this tensor's amax (current scaling) or from an amax history (delayed scaling,
  kept in a :class:`DelayedScaling` state); elements ``fp32(x * scale)``.
* ``s2fp8`` (Cambier et al., ICLR 2020): per tensor, ``log2|y| = alpha log2|x| + beta`` with
  mean 0 and max 15 of ``log2|y|`` over the non-zeros, E5M2 elements.

Values are computed on float32 inputs (the recipes scale float32 tensors) and returned as
float32. :func:`quantize`, :func:`encode` and :func:`decode` here are what the public
``fpsim.quantize`` / ``encode`` / ``decode`` call for a scaled format's name.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np

from fpsim.numerics.format import Format
from fpsim.numerics.formats import format as parse_format
from fpsim.numerics.modes import Overflow, RoundMode
from fpsim.numerics.stats import Stats

RULES = ("mx", "nvfp4", "tile", "tensor", "s2fp8")
#: The largest float32 (scales that would exceed it are clamped to it, as the recipes do).
FLT_MAX = float(np.finfo(np.float32).max)
#: Elements per parallel chunk of the flat drivers; S2FP8's exact sums need chunks below 2^22.
_CHUNK = 1 << 18


@dataclasses.dataclass(frozen=True)
class ScaledFormat:
    """An element format, the tiles that share a scale, the scale rule and the scale's format.

    Attributes:
        name: display name (the preset name for presets).
        element: the element :class:`Format` (names and specs are parsed).
        rule: one of :data:`RULES`.
        tile: ``(rows, cols)`` of the tiles over the last two axes that share one scale;
            ``(1, k)`` is a block of ``k`` along the last axis; None: the whole tensor.
        scale: the Format scales are stored in (E8M0 for ``mx``, E4M3 for ``nvfp4``); None:
            float32.
        pow2: ``tile`` / ``tensor`` rules: round the scale to a power of two (up for a decode
            scale, down for an encode scale, so that the tile's amax stays within range).
        margin: ``tensor`` rule: the scale leaves ``2^margin`` headroom.
        history: ``tensor`` rule: amax history length of delayed scaling; 0: current scaling.
        algo: delayed scaling's amax of the history: ``max`` or ``most_recent``.
        overflow: element overflow policy (the recipes clamp: ``saturate``).
        rounding: default element rounding mode (``fpsim.quantize``'s ``rounding`` overrides).
        int_elements: element codes are two's complement integers (MXINT8).
    """

    name: str
    element: Format
    rule: str
    tile: tuple | None = None
    scale: Format | None = None
    pow2: bool = False
    margin: int = 0
    history: int = 0
    algo: str = "max"
    overflow: str = "saturate"
    rounding: str = "rne"
    int_elements: bool = False

    def __post_init__(self):
        object.__setattr__(self, "element", parse_format(self.element))
        if self.scale is not None:
            object.__setattr__(self, "scale", parse_format(self.scale))
        if self.rule not in RULES:
            raise ValueError(f"scale rule {self.rule!r} is unknown; rules: {', '.join(RULES)}")
        if self.tile is not None:
            t = tuple(int(v) for v in self.tile)
            if len(t) != 2 or min(t) < 1:
                raise ValueError(f"tile must be (rows, cols) of positive ints, got {self.tile!r}")
            object.__setattr__(self, "tile", t)
        per_tensor = self.rule in ("tensor", "s2fp8")
        if per_tensor != (self.tile is None):
            raise ValueError(f"rule {self.rule!r} " + ("scales whole tensors: tile must be None"
                             if per_tensor else "needs a tile (rows, cols)"))
        if self.rule == "mx" and (self.scale is None or self.scale.man_bits != 0):
            raise ValueError("the mx rule stores power-of-two scales: scale must be an E*M0 format")
        if self.rule == "nvfp4" and self.scale is None:
            raise ValueError("the nvfp4 rule needs a block scale format (E4M3)")
        if self.algo not in ("max", "most_recent"):
            raise ValueError(f"algo must be 'max' or 'most_recent', got {self.algo!r}")
        if self.history < 0:
            raise ValueError(f"history must be >= 0, got {self.history}")
        Overflow.parse(self.overflow)
        RoundMode.parse(self.rounding)

    @property
    def delayed(self) -> bool:
        """True for delayed scaling (a ``tensor`` rule with an amax history)."""
        return self.rule == "tensor" and self.history > 0

    @property
    def block_size(self) -> int | None:
        """Elements sharing one scale, for tiles (None per tensor)."""
        return None if self.tile is None else self.tile[0] * self.tile[1]

    @property
    def emax_elem(self) -> int:
        """Exponent of the element format's largest normal binade (OCP MX's ``emax_elem``)."""
        return self.element.emax

    def state(self) -> "DelayedScaling | None":
        """A fresh scaling state for one tensor site (delayed scaling), else None."""
        return DelayedScaling(self.history, self.algo) if self.delayed else None

    def __str__(self):
        return self.name


# ---- delayed scaling state ----------------------------------------------------------------------
class DelayedScaling:
    """The amax history and scale of one tensor under delayed scaling (Transformer Engine's
    ``DelayedScaling`` recipe), kept by the cast site that owns the tensor.

    Each cast uses :attr:`scale` (from earlier steps) and then :meth:`update` with its amax:
    the amax goes into slot 0 of the history, the new scale is computed from ``max(history)``
    (``algo="max"``) or slot 0 (``"most_recent"``) as ``fp32(max_elem * 2^-margin / amax)``,
    kept unchanged when that amax is 0 or not finite, and the history is rolled by one (slot
    ``i`` takes slot ``i+1``, the last takes slot 0, slot 0 is zeroed), as TE's update kernel
    does. The initial scale is 1.
    """

    def __init__(self, history: int, algo: str = "max"):
        self.amax_history = np.zeros(int(history), np.float32)
        self.algo = algo
        self.scale = np.float32(1.0)
        self.updates = 0

    def update(self, amax: float, max_elem: float, margin: int, pow2: bool = False) -> None:
        """Record this step's ``amax`` and compute the scale of the next cast."""
        h = self.amax_history
        h[0] = np.float32(amax)
        a = h.max() if self.algo == "max" else h[0]
        if np.isfinite(a) and a > 0:
            self.scale = tensor_scale(a, max_elem, margin, pow2)
        self.amax_history = np.roll(h, -1)
        self.amax_history[0] = 0
        self.updates += 1

    def state_dict(self) -> dict:
        """Plain data for checkpoints (float32 values as lists of floats)."""
        return {"amax_history": [float(v) for v in self.amax_history], "algo": self.algo,
                "scale": float(self.scale), "updates": self.updates}

    def load_state_dict(self, d: dict) -> None:
        """Restore :meth:`state_dict` output."""
        self.amax_history = np.asarray(d["amax_history"], np.float32)
        self.algo = d["algo"]
        self.scale = np.float32(d["scale"])
        self.updates = int(d["updates"])

    def __repr__(self):
        return (f"DelayedScaling(history={self.amax_history.size}, algo={self.algo!r}, "
                f"scale={float(self.scale)!r}, updates={self.updates})")


def tensor_scale(amax, max_elem: float, margin: int = 0, pow2: bool = False) -> np.float32:
    """Per-tensor encode scale ``fp32(fp32(max_elem * 2^-margin) / amax)`` (round to nearest),
    1 when ``amax`` is 0 or not finite, FLT_MAX when the quotient overflows; with ``pow2`` the
    power of two at or below it (its fraction bits cleared), as Transformer Engine computes it."""
    a = np.float32(amax)
    if not np.isfinite(a) or a == 0:
        return np.float32(1.0)
    with np.errstate(over="ignore", divide="ignore"):
        s = np.float32(np.float32(math.ldexp(max_elem, -margin)) / a)
    if np.isinf(s):
        s = np.float32(FLT_MAX)
    if pow2:
        s = np.array(s, np.float32).view(np.uint32) & np.uint32(0xFF800000)
        s = s.view(np.float32)[()]
    return np.float32(s)


# ---- presets ------------------------------------------------------------------------------------
def _mx(name, element, **kw):
    return ScaledFormat(name, element, "mx", tile=(1, 32), scale="float8_e8m0fnu", **kw)


PRESETS: dict[str, ScaledFormat] = {f.name: f for f in (
    _mx("mxfp8_e4m3", "float8_e4m3fn"),
    _mx("mxfp8_e5m2", "float8_e5m2"),
    _mx("mxfp6_e3m2", "float6_e3m2fn"),
    _mx("mxfp6_e2m3", "float6_e2m3fn"),
    _mx("mxfp4_e2m1", "float4_e2m1fn"),
    # INT8 with an implicit 2^-6: sign-magnitude e1m6 with bias 1 holds exactly k/64 for
    # |k| <= 127 (subnormals k < 64, normals 64..127), the symmetric range microxcaling uses;
    # "fnuz" because an integer has no -0 (its code 0x80 would be -128, which is not used).
    _mx("mxint8", "e1m6b1fnuz", int_elements=True),
    ScaledFormat("nvfp4", "float4_e2m1fn", "nvfp4", tile=(1, 16), scale="float8_e4m3fn"),
    ScaledFormat("fp8_current", "float8_e4m3fn", "tensor"),
    ScaledFormat("fp8_delayed", "float8_e4m3fn", "tensor", history=1024),
    ScaledFormat("fp8_current_e5m2", "float8_e5m2", "tensor"),
    ScaledFormat("fp8_delayed_e5m2", "float8_e5m2", "tensor", history=1024),
    ScaledFormat("fp8_tile_1x128", "float8_e4m3fn", "tile", tile=(1, 128)),
    ScaledFormat("fp8_tile_128x128", "float8_e4m3fn", "tile", tile=(128, 128)),
    ScaledFormat("s2fp8", "float8_e5m2", "s2fp8", overflow="ieee"),
)}


def scaled_format(fmt) -> ScaledFormat | None:
    """The :class:`ScaledFormat` for a preset name or a ScaledFormat, None for anything else
    (element formats)."""
    if isinstance(fmt, ScaledFormat):
        return fmt
    if isinstance(fmt, str):
        return PRESETS.get(fmt.strip().lower())
    return None


# ---- encoded values -----------------------------------------------------------------------------
class Encoded(tuple):
    """``(element_codes, scale_codes)`` of a scaled format, with ``tensor_scale`` (NVFP4's
    float32 tensor decode scale as uint32 bits, else None) and ``format`` as attributes.

    Element codes have the input's shape (uint8 for 8-bit and narrower elements; MXINT8's are
    two's complement). Scale codes: per tile, shaped ``lead + (tiles,)`` for ``1 x k`` blocks
    along the last axis and ``lead + (tile rows, tile cols)`` for 2-D tiles (E8M0 or E4M3 codes
    as uint8, float32 scales as uint32 bits); per tensor a 0-d uint32 (the float32 decode
    scale); S2FP8 a (2,) uint32 (float32 ``alpha``, ``beta``).
    """

    def __new__(cls, elements, scales, tensor_scale=None, format=None):
        obj = super().__new__(cls, (elements, scales))
        obj.tensor_scale = tensor_scale
        obj.format = format
        return obj

    @property
    def elements(self):
        return self[0]

    @property
    def scales(self):
        return self[1]


@dataclasses.dataclass(eq=False)
class ScaledStats:
    """Stats of a scaled rounding: ``elements`` (the rounding of the scaled values ``y`` into the
    element format: events and the histogram of ``y``) and ``scales`` (one entry per tile: the
    rounding of the ideal scale into the scale format), plus the tiles whose ideal scale fell
    below (``scale_underflow``) or above (``scale_overflow``) the scale format's range and the
    tiles holding an Inf or NaN (``nonfinite_tiles``)."""

    elements: Stats
    scales: Stats
    scale_underflow: int = 0
    scale_overflow: int = 0
    nonfinite_tiles: int = 0

    @property
    def tiles(self) -> int:
        """Number of tiles (scales)."""
        return self.scales.total

    def __add__(self, other):
        if not isinstance(other, ScaledStats):
            return NotImplemented
        return ScaledStats(self.elements + other.elements, self.scales + other.scales,
                           self.scale_underflow + other.scale_underflow,
                           self.scale_overflow + other.scale_overflow,
                           self.nonfinite_tiles + other.nonfinite_tiles)


# ---- the host side of the drivers ---------------------------------------------------------------
def _float32_input(x) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype != np.float32:
        if arr.dtype.kind in "fiu" or arr.dtype.kind == "V":
            raise TypeError(
                f"scaled formats quantize float32 arrays (the recipes scale float32 tensors), got "
                f"{arr.dtype}; convert first, e.g. x.astype(np.float32)")
        raise TypeError(f"x must be a float32 array, got {arr.dtype}")
    return np.ascontiguousarray(arr)


def _nchunk(n: int, unit: int = 1) -> int:
    import numba
    return int(max(1, min(4 * numba.get_num_threads(), -(-n // max(1, _CHUNK // unit)))))


def _tile_view(shape, tile):
    """How the kernel sees an array of ``shape`` cut into ``tile``: ``(view, ktile, kshape,
    scale_shape)``, the ``(B, R, C)`` view, the kernel's tile, its scale array's shape and the
    public scale codes' shape. Blocks along the last axis that divide it evenly are viewed one
    block per row, so the work splits into many rows even for a 1-D array."""
    tr, tc = tile
    shape = tuple(shape) or (1,)
    C = shape[-1]
    if tr == 1:
        lead = shape[:-1]
        R = int(np.prod(lead)) if lead else 1
        nbc = -(-C // tc)
        if C % tc == 0:
            return (1, R * nbc, tc), (1, tc), (1, R * nbc, 1), lead + (nbc,)
        return (1, R, C), (1, tc), (1, R, nbc), lead + (nbc,)
    R = shape[-2] if len(shape) >= 2 else 1
    lead = shape[:-2] if len(shape) >= 2 else ()
    B = int(np.prod(lead)) if lead else 1
    nbr, nbc = -(-R // tr), -(-C // tc)
    return (B, R, C), (tr, tc), (B, nbr, nbc), lead + (nbr, nbc)


def _scale_params(sf: ScaledFormat):
    """``(SP, kmin, kmax)``: the scale format's float64 params and its power-of-two range."""
    fmt = sf.scale if sf.scale is not None else parse_format("float32")
    kmin = int(math.floor(math.log2(fmt.min_subnormal)))
    kmax = int(math.floor(math.log2(fmt.max)))
    return fmt.params("float64"), kmin, kmax


def nvfp4_tensor_scales(amax) -> tuple[np.float32, np.float32, np.float32]:
    """NVFP4's tensor scales from the tensor's amax, float32, in Transformer Engine's order:
    ``(encode, decode, block multiplier)`` with encode ``min(448 * 6 / amax, FLT_MAX)`` (1 when
    that is 0, i.e. an infinite amax, and 1 for a NaN or zero amax, as TE's kernel does), decode ``1 / encode`` and the block
    multiplier ``encode * (1/6)`` (a block's E4M3 scale is ``amax_block * multiplier``)."""
    a = np.float32(amax)
    if a == 0:  # an all-zero tensor: TE's ComputeGlobalEncodeScaleFP4 returns 1
        return np.float32(1.0), np.float32(1.0), np.float32(np.float32(1.0) / np.float32(6.0))
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        enc = np.float32(np.float32(448.0 * 6.0) / a)
    if np.isnan(enc):
        enc = np.float32(1.0)
    enc = min(enc, np.float32(FLT_MAX))
    if enc == 0:
        enc = np.float32(1.0)
    dec = np.float32(np.float32(1.0) / enc)
    mult = np.float32(enc * np.float32(np.float32(1.0) / np.float32(6.0)))
    return np.float32(enc), dec, mult


def s2fp8_statistics(sums: np.ndarray, amax_bits: int) -> tuple[np.float32, np.float32]:
    """S2FP8's ``(alpha, beta)`` as float32 from the exact chunk sums of
    :func:`fpsim.kernels.scaled.log2_sums` and the amax (float32 bits, finite): ``mu`` the mean
    of ``log2|x|`` over the non-zero finite elements (the exact sum, rounded once), ``m`` the
    largest ``log2|x|``, ``alpha = 15 / (m - mu)``, ``beta = -alpha mu`` (float64, then stored
    as float32). A tensor with one non-zero magnitude (``m == mu``) takes ``alpha = 1``,
    ``beta = -mu`` (its values map to 1); one without non-zeros ``alpha = 1, beta = 0``."""
    se = int(sums[:, 0].sum())
    sh = sum(int(v) for v in sums[:, 1])
    sl = sum(int(v) for v in sums[:, 2])
    n = int(sums[:, 3].sum())
    if n == 0:
        return np.float32(1.0), np.float32(0.0)
    total = Fraction(se) + Fraction((sh << 40) + sl, 1 << 75)
    mu = float(total / n)
    m = _log2_split_float(amax_bits)
    if m == mu:
        alpha = 1.0
    else:
        alpha = 15.0 / (m - mu)
    beta = -alpha * mu
    return np.float32(alpha), np.float32(beta)


def _log2_split_float(a: int) -> float:
    """``e + log2(m)`` (float64 sum, libm log2) of non-zero finite float32 bits ``a`` (the
    definition of :func:`fpsim.kernels.scaled.split_log2`)."""
    e, f = a >> 23, a & 0x7FFFFF
    if e == 0:
        n = f.bit_length()
        return float(n - 1 - 149) + math.log2(f / 2.0 ** (n - 1))
    return float(e - 127) + math.log2(1.0 + f * 2.0 ** -23)


def _empty_outputs(x, want_codes, want_y):
    out = np.empty_like(x)
    ecodes = np.zeros(x.shape if want_codes else (0,) * x.ndim, np.int64)
    ybuf = np.zeros(x.size if want_y else 0, np.float64)
    return out, ecodes, ybuf


def run(x, sf: ScaledFormat, mode: int, key: int, srk: int, want_codes: bool, want_y: bool,
        state: DelayedScaling | None = None):
    """Quantize the float32 array ``x`` with ``sf``: a dict with ``values`` (float32, x's shape),
    ``codes`` (int64 element codes, or None), ``scales`` (int64 scale codes, shaped as
    :class:`Encoded` says), ``ideal`` (float64 ideal scales, same shape), ``y`` (the flat scaled
    values, or None), ``tensor_scale`` (NVFP4's decode scale bits, else None), ``amax`` (the
    tensor's amax for per-tensor rules) and ``nonfinite`` (tiles holding Inf/NaN)."""
    from fpsim.kernels import scaled as ks

    x = _float32_input(x)
    flat = x.reshape(-1)
    xb = flat.view(np.uint32)
    P = sf.element.params("float64")
    overflow = int(Overflow.parse(sf.overflow))
    res = {"tensor_scale": None, "amax": None}
    if sf.rule in ("mx", "nvfp4", "tile"):
        view, (tr, tc), kshape, scale_shape = _tile_view(x.shape, sf.tile)
        x3 = flat.reshape(view)
        out, ecodes, ybuf = _empty_outputs(x3, want_codes, want_y)
        scodes = np.zeros(kshape, np.int64)
        ideal = np.zeros(kshape, np.float64)
        SP, kmin, kmax = _scale_params(sf)
        rule = {"mx": ks.RULE_MX, "nvfp4": ks.RULE_NVFP4, "tile": ks.RULE_TILE}[sf.rule]
        gdec = mult = np.float32(1.0)
        if sf.rule == "nvfp4":
            amax_bits = int(ks.tensor_amax(xb, _nchunk(xb.size)))
            amax = np.array(amax_bits, np.uint32).view(np.float32)[()]
            _, gdec, mult = nvfp4_tensor_scales(amax)
            res["tensor_scale"] = np.array(gdec, np.float32).view(np.uint32)[()]
        fmax_scale = sf.scale.max if sf.scale is not None else FLT_MAX
        ntr = view[0] * -(-view[1] // tr)
        ks.tiles(x3, x3.view(np.uint32), out, ecodes, scodes, ideal, ybuf, tr, tc, rule, P, SP,
                 kmin, kmax, sf.emax_elem, sf.element.max, fmax_scale, float(mult), float(gdec),
                 int(sf.pow2), mode, overflow, np.uint64(key), srk, want_codes, want_y,
                 _nchunk(ntr, max(1, view[2] * tr)))
        res.update(values=out.reshape(x.shape),
                   codes=ecodes.reshape(x.shape) if want_codes else None,
                   scales=scodes.reshape(scale_shape), ideal=ideal.reshape(scale_shape),
                   y=ybuf if want_y else None,
                   nonfinite=int(np.count_nonzero(np.isnan(ideal))))
        return res
    nchunk = _nchunk(flat.size)
    amax_bits = int(ks.tensor_amax(xb, nchunk))
    amax = np.array(amax_bits, np.uint32).view(np.float32)[()]
    res["amax"] = float(amax)
    out, ecodes, ybuf = _empty_outputs(flat, want_codes, want_y)
    if sf.rule == "tensor":
        if sf.delayed:
            if state is None:
                raise ValueError(f"{sf.name} is delayed scaling: pass state= (a "
                                 "DelayedScaling from ScaledFormat.state()) to keep its history")
            enc = np.float32(state.scale)
        else:
            enc = tensor_scale(amax, sf.element.max, sf.margin, sf.pow2)
        dec = np.float32(np.float32(1.0) / enc)
        # float32 products, as the recipe computes them (also for power-of-two scales, whose
        # products can leave float32's range)
        ks.tensor_round(flat, out, ecodes, ybuf, ks.MUL32, float(enc), float(dec), P, mode, overflow,
                        np.uint64(key), srk, want_codes, want_y, nchunk)
        if sf.delayed:
            state.update(amax, sf.element.max, sf.margin, sf.pow2)
        scales = np.array(np.array(dec, np.float32).view(np.uint32), np.int64)
        ideal = np.array(float(dec))
    else:  # s2fp8
        sums = np.zeros((_nchunk(flat.size), 5), np.int64)
        ks.log2_sums(xb, sums.shape[0], sums)
        finite_amax = int(ks.finite_amax(xb, nchunk))
        alpha, beta = s2fp8_statistics(sums, finite_amax) if finite_amax else (
            np.float32(1.0), np.float32(0.0))
        ks.s2fp8_round(flat, xb, out, ecodes, ybuf, float(alpha), float(beta), P, mode, overflow,
                       np.uint64(key), srk, want_codes, want_y, nchunk)
        scales = np.array([np.array(v, np.float32).view(np.uint32) for v in (alpha, beta)],
                          np.int64)
        ideal = np.array([float(alpha), float(beta)])
    res.update(values=out.reshape(x.shape), codes=ecodes.reshape(x.shape) if want_codes else None,
               scales=scales, ideal=ideal, y=ybuf if want_y else None,
               nonfinite=int(amax_bits >= 0x7F800000))
    return res


def element_stats(res, sf: ScaledFormat, mode: int, key: int, srk: int) -> Stats:
    """Stats of the element rounding: the scaled values ``y`` rounded again by the core (the same
    rounding, mode and random bits, so the same events)."""
    from fpsim.numerics import backend
    y = res["y"]
    _, st = backend.quantize(y, sf.element, mode, int(Overflow.parse(sf.overflow)), key, srk, True)
    return st


def scale_stats(res, sf: ScaledFormat) -> tuple[Stats, int, int]:
    """Stats of the ideal scales rounded into the scale format (float32 when it has none), and
    the tiles whose ideal scale fell below / above its range."""
    from fpsim.numerics import backend
    fmt = sf.scale if sf.scale is not None else parse_format("float32")
    ideal = np.ascontiguousarray(res["ideal"], np.float64).reshape(-1)
    if sf.rule == "s2fp8":
        ideal = ideal[:0]
    _, st = backend.quantize(ideal, fmt, int(RoundMode.RNE), int(Overflow.IEEE), 0, 62, True)
    fin = ideal[np.isfinite(ideal)]
    under = int(np.count_nonzero((fin > 0) & (fin < fmt.min_subnormal)))
    over = int(np.count_nonzero(fin > fmt.max))
    return st, under, over


# ---- the public operations ----------------------------------------------------------------------
def quantize(x, sf: ScaledFormat, mode: int, key: int, srk: int, want_stats: bool,
             state: DelayedScaling | None = None):
    """``(values, ScaledStats or None)``: ``x`` quantized with ``sf`` and dequantized to float32."""
    res = run(x, sf, mode, key, srk, False, want_stats, state)
    if not want_stats:
        return res["values"], None
    st, under, over = scale_stats(res, sf)
    return res["values"], ScaledStats(element_stats(res, sf, mode, key, srk), st, under, over,
                                      res["nonfinite"])


def _code_dtype(fmt: Format | None):
    return np.dtype(np.uint32) if fmt is None else np.dtype(np.uint8 if fmt.bits <= 8 else np.uint16)


def encode(x, sf: ScaledFormat, mode: int, key: int, srk: int,
           state: DelayedScaling | None = None) -> Encoded:
    """The :class:`Encoded` codes of ``x`` under ``sf``."""
    res = run(x, sf, mode, key, srk, True, False, state)
    codes = res["codes"]
    if sf.int_elements:
        codes = _sign_magnitude_to_twos(codes)
    ecodes = codes.astype(_code_dtype(sf.element))
    if sf.rule in ("mx", "nvfp4"):
        scales = res["scales"].astype(_code_dtype(sf.scale))
    else:
        scales = res["scales"].astype(np.uint32)
    return Encoded(ecodes, scales, res["tensor_scale"], sf.name)


def _sign_magnitude_to_twos(codes: np.ndarray) -> np.ndarray:
    """8-bit sign-magnitude codes as two's complement bytes (-0 becomes 0)."""
    mag = codes & 0x7F
    return np.where((codes >> 7) == 1, (256 - mag) & 0xFF, mag)


def _twos_to_sign_magnitude(codes: np.ndarray) -> np.ndarray:
    c = codes.astype(np.int64)
    if np.any(c == 0x80):
        i = int(np.flatnonzero(c.reshape(-1) == 0x80)[0])
        raise ValueError(f"MXINT8 element code 0x80 (-128) at flat index {i} is outside the "
                         "symmetric range -127..127 this format uses")
    return np.where(c >= 128, 0x80 | (256 - c), c)


def _f32(bits) -> np.ndarray:
    return np.asarray(bits, np.int64).astype(np.uint32).view(np.float32)


def _spread(scales: np.ndarray, sf: ScaledFormat, shape) -> np.ndarray:
    """Per-tile values broadcast to every element of ``shape``."""
    tr, tc = sf.tile
    s = np.repeat(scales, tc, axis=-1)[..., :shape[-1]]
    if tr > 1:
        s = np.repeat(s, tr, axis=-2)[..., :shape[-2], :] if len(shape) >= 2 else s[..., 0, :]
    return s.reshape(shape)


def decode(elements, scales, sf: ScaledFormat, tensor_scale=None) -> np.ndarray:
    """float32 values of element codes and scale codes of ``sf`` (see :class:`Encoded`)."""
    from fpsim.numerics import backend
    codes = np.asarray(elements)
    if sf.int_elements:
        codes = _twos_to_sign_magnitude(codes)
    q = np.asarray(backend.decode(codes, sf.element), np.float64)
    shape = q.shape
    scales = np.asarray(scales)
    if sf.rule in ("mx", "nvfp4", "tile"):
        _, _, _, scale_shape = _tile_view(shape, sf.tile)
        if scales.shape != scale_shape:
            raise ValueError(f"{sf.name}: scale codes of shape {scales.shape} do not fit element "
                             f"codes of shape {shape} (expected {scale_shape})")
        if sf.rule == "mx":
            s = np.asarray(backend.decode(scales, sf.scale), np.float64)
            with np.errstate(invalid="ignore"):
                return (q * _spread(s, sf, shape)).astype(np.float32)
        if sf.rule == "nvfp4":
            if tensor_scale is None:
                raise ValueError("nvfp4 decoding needs the tensor scale (Encoded.tensor_scale)")
            gdec = _f32(tensor_scale)[()]
            d_b = np.asarray(backend.decode(scales, sf.scale), np.float64).astype(np.float32)
            dd = d_b * np.float32(gdec)
            with np.errstate(invalid="ignore"):
                return q.astype(np.float32) * _spread(dd, sf, shape)
        d = _f32(scales)
        with np.errstate(invalid="ignore"):
            return q.astype(np.float32) * _spread(d, sf, shape)
    if sf.rule == "tensor":
        if scales.shape != ():
            raise ValueError(f"{sf.name}: expected one scale code (0-d), got shape {scales.shape}")
        return q.astype(np.float32) * _f32(scales)[()]
    from fpsim.kernels import scaled as ks
    if scales.shape != (2,):
        raise ValueError(f"{sf.name}: expected scale codes (alpha, beta) of shape (2,), got "
                         f"{scales.shape}")
    alpha, beta = (float(v) for v in _f32(scales))
    out = np.empty(q.size, np.float32)
    ks.s2fp8_decode(np.ascontiguousarray(q.reshape(-1)), alpha, beta, out)
    return out.reshape(shape)


def block_parts(x, sf: ScaledFormat, mode: int = 0, key: int = 0, srk: int = 62):
    """``(elements, scales)`` of a block format along the last axis: the element values (float64,
    x's shape) and each block's decode scale (float64, ``x.shape[:-1] + (blocks,)``), so that
    the dequantized value is ``fp32(element * scale)``. NaN blocks have NaN scales."""
    if sf.tile is None or sf.tile[0] != 1:
        raise ValueError(f"{sf.name}: a block-scaled GEMM needs 1 x k blocks along the reduction "
                         "axis")
    from fpsim.numerics import backend
    enc = encode(x, sf, mode, key, srk)
    codes = _twos_to_sign_magnitude(enc[0]) if sf.int_elements else enc[0]
    q = np.asarray(backend.decode(codes, sf.element), np.float64)
    s = np.asarray(backend.decode(enc[1], sf.scale), np.float64)
    if sf.rule == "nvfp4":
        s = (s.astype(np.float32) * _f32(enc.tensor_scale)[()]).astype(np.float64)
    return q, s
