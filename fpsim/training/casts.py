"""The cast protocol: what a cast site holds and how it is called.

A cast site (:mod:`fpsim.training.precision`) holds one object per direction with a method

    ``round(x, ctx) -> (y, stats)``

``x`` is a float32 / float64 numpy array, ``ctx`` a :class:`CastContext` (which site, role and
direction, the step and seed that key stochastic rounding, whether Stats are wanted), ``y`` the
rounded array in ``x``'s dtype and ``stats`` a :class:`~fpsim.numerics.stats.Stats` or None. The
training layer calls nothing else, so a scaled or block format (per-tensor scales, MX blocks) is
another implementation of the same method. An optional ``format`` attribute names the element
format; the adaptive loss scaler reads the gradient format's range from it. An optional method

    ``round_many(xs, ctxs) -> [(y, stats), ...]``

rounds several arrays at once, each exactly as ``round(x, ctx)`` would (same values, same
Stats); the sites use it to round every parameter of a forward pass in one call.

:class:`Cast` (an element format, a rounding mode and an overflow policy) is the implementation
every preset uses.
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np

from fpsim.numerics import fixed
from fpsim.numerics.convert import PreparedQuantize, _quantize_prepared
from fpsim.numerics.format import Format
from fpsim.numerics.formats import format as parse_format
from fpsim.numerics.modes import Overflow, RoundMode
from fpsim.kernels.rng import stream_key
from fpsim.kernels.round import SR_BITS_MAX


@dataclasses.dataclass(frozen=True)
class CastContext:
    """What a cast knows about the rounding it is asked for.

    Attributes:
        site: the cast site's name; role: ``activation``, ``weight-grad``, ...;
        direction: ``forward`` or ``backward``.
        step: the training step (keys stochastic rounding); seed: the run's seed.
        stats: True when a recorder listens (compute the Stats of the rounding).
        training: False during evaluation passes (stateful casts, such as delayed scaling,
            then leave their state alone).
    """

    site: str
    role: str
    direction: str
    step: int
    seed: int
    stats: bool
    training: bool = True

    @property
    def stream(self) -> int:
        """Random stream of stochastic rounding at this site, role and step: the low 32 bits
        name (site, role), the high bits the step, so SR bits never repeat across sites or steps
        and do not depend on call order."""
        return zlib.crc32(f"{self.site}|{self.role}".encode()) | (int(self.step) << 32)

    @property
    def key(self) -> int:
        """The 64-bit key of the counter-based random bits (:func:`fpsim.kernels.rng.stream_key`)."""
        return stream_key(self.seed, self.stream)


def is_cast(obj) -> bool:
    """True for any object implementing the cast protocol (a callable ``round``)."""
    return callable(getattr(obj, "round", None))


@dataclasses.dataclass(frozen=True)
class Cast:
    """Rounding into ``format`` with ``rounding`` and ``overflow`` (see :func:`fpsim.quantize`),
    element by element: the element cast of the cast protocol."""

    format: Format
    rounding: str = "rne"
    #: None: ``ieee`` for a float format, ``saturate`` for a fixed-point one.
    overflow: str | None = None

    def __post_init__(self):
        grid = fixed.grid_format(self.format)
        if grid is not None:  # fixed-point / integer grid (fpsim.Fixed, fpsim.IntGrid, "int8")
            object.__setattr__(self, "format", grid)
            policy = Overflow.parse("saturate" if self.overflow is None else self.overflow,
                                    fixed=True)
        else:
            object.__setattr__(self, "format", parse_format(self.format)
                               if not isinstance(self.format, Format) else self.format)
            policy = Overflow.parse("ieee" if self.overflow is None else self.overflow)
        object.__setattr__(self, "overflow", policy.name.lower())
        # The kernel arguments, parsed once: a training step makes dozens of casts.
        object.__setattr__(self, "_mode", int(RoundMode.parse(self.rounding)))
        object.__setattr__(self, "_overflow", int(policy))
        object.__setattr__(self, "_grid", grid is not None)
        # (only stochastic rounding reads the stream key: the other modes skip its hashing)
        object.__setattr__(self, "_keyed", self._mode == RoundMode.SR)
        object.__setattr__(self, "_prepared", None if grid is not None else PreparedQuantize(
            self.format, self._mode, self._overflow))

    def round(self, x: np.ndarray, ctx: CastContext):
        """``x`` (a float32/float64 array) rounded into the format, in ``x``'s dtype, and the
        Stats of the rounding (None unless ``ctx.stats``): :func:`fpsim.quantize` without its
        argument parsing."""
        if x.dtype not in (np.float32, np.float64):
            raise TypeError(f"cast sites round float32/float64 arrays, got {x.dtype}")
        arr = x if x.flags.c_contiguous else np.ascontiguousarray(x)
        if self._grid:
            y, st = fixed.quantize(arr, self.format, self._mode, self._overflow,
                                   self._key(ctx), SR_BITS_MAX, ctx.stats)
        else:
            ((y, st),) = _quantize_prepared([arr], self._prepared, [self._key(ctx)], ctx.stats)
        return (y if y.dtype == x.dtype else y.astype(x.dtype)), st

    def _key(self, ctx: CastContext) -> int:
        """The stream key of ``ctx`` where the mode reads it (stochastic rounding), else 0."""
        return ctx.key if self._keyed else 0

    def round_many(self, xs: list, ctxs: list) -> list:
        """``[self.round(x, ctx) for x, ctx in zip(xs, ctxs)]`` in one kernel call (Stats are
        computed when the first context asks for them, as the contexts of one pass all do)."""
        if self._grid or len({x.dtype for x in xs}) != 1:
            return [self.round(x, ctx) for x, ctx in zip(xs, ctxs)]
        if xs[0].dtype not in (np.float32, np.float64):
            raise TypeError(f"cast sites round float32/float64 arrays, got {xs[0].dtype}")
        arrs = [x if x.flags.c_contiguous else np.ascontiguousarray(x) for x in xs]
        res = _quantize_prepared(arrs, self._prepared, [self._key(ctx) for ctx in ctxs],
                                 ctxs[0].stats)
        return [(y if y.dtype == x.dtype else y.astype(x.dtype), st) for x, (y, st) in zip(xs, res)]

    @classmethod
    def parse(cls, spec):
        """A cast from a cast object (anything with ``round(x, ctx)``: returned as it is), a
        format name, ``"fp16:sr"`` / ``"e4m3:rne:saturate"``, a dict ``{"format", "rounding",
        "overflow"}``, or None / ``"fp32"`` / ``"float32"`` (no cast: None). A scaled format's
        preset name (``"mxfp8_e4m3"``, ``"fp8_delayed:sr"``; rounding of the elements after
        the colon) gives a :class:`~fpsim.training.scaled_cast.ScaledCast`."""
        if spec is None or is_cast(spec):
            return spec
        if isinstance(spec, dict):
            unknown = set(spec) - {"format", "rounding", "overflow"}
            if unknown:
                raise ValueError(f"unknown cast field(s) {sorted(unknown)}; "
                                 "allowed: format, rounding, overflow")
            spec = dict(spec)
            if spec.get("format") in (None, "fp32", "float32"):
                return None
            return cls(**spec)
        if not isinstance(spec, str):
            raise TypeError(f"a cast is a format name, a dict, a cast object or None, got {spec!r}")
        parts = spec.split(":")
        if parts[0] in ("fp32", "float32", "none"):
            return None
        from fpsim.numerics.scaled import PRESETS as SCALED
        if parts[0].strip().lower() in SCALED:
            from fpsim.training.scaled_cast import ScaledCast
            if len(parts) > 2:
                raise ValueError(f"cast {spec!r}: a scaled format takes FORMAT[:ROUNDING] (its "
                                 "elements' overflow policy is the format's)")
            return ScaledCast(parts[0].strip().lower(), parts[1] if len(parts) > 1 else None)
        if len(parts) > 3:
            raise ValueError(f"cast {spec!r}: expected FORMAT[:ROUNDING[:OVERFLOW]]")
        return cls(*parts)

    def __str__(self):
        return f"{self.format.name or self.format.spec}:{self.rounding}:{self.overflow}"
