"""The cast of a scaled or block format at a cast site (the cast protocol of :mod:`.casts`).

:class:`ScaledCast` rounds a site's tensor with a :class:`~fpsim.numerics.scaled.ScaledFormat`
(MX blocks, NVFP4, per-tensor current or delayed scaling, tiles, S2FP8): the tensor is scaled,
its elements rounded (any rounding mode; stochastic rounding keyed by the site, role and step
as every cast is), and the dequantized float32 values go on. The backward rule of a cast site
is the straight-through one (the cotangent passes, rounded by the backward cast), so nothing
here needs a derivative.

State: delayed scaling keeps an amax history per tensor: one :class:`DelayedScaling` per
(site, role, direction), created on first use, updated by training-mode casts only (an
evaluation pass reads the scale and leaves the history alone), saved in checkpoints through
:meth:`ScaledCast.state_dict`.

Records: when a recorder listens, each rounding also leaves a row of its scales (amax, the
per-tensor scale, S2FP8's alpha and beta, the number of tiles and how many of their scales fell
below or above the scale format's range) that the training loop collects with
:meth:`ScaledCast.scale_records` into the run record's ``tensor_scales`` table.
"""

from __future__ import annotations

import numpy as np

from fpsim.numerics import scaled
from fpsim.numerics.modes import RoundMode
from fpsim.kernels.round import SR_BITS_MAX


class ScaledCast:
    """Rounding into a scaled format at cast sites.

    Args:
        scaled_format: a :class:`~fpsim.numerics.scaled.ScaledFormat` or a preset name.
        rounding: the elements' rounding mode (None: the format's default, ``rne``).

    Attributes:
        format: the element :class:`~fpsim.numerics.format.Format` (what a loss scaler reads
            the gradient range from).
    """

    def __init__(self, scaled_format, rounding: str | None = None):
        sf = scaled.scaled_format(scaled_format)
        if sf is None:
            raise ValueError(f"{scaled_format!r} is not a scaled format; presets: "
                             + ", ".join(scaled.PRESETS))
        self.scaled = sf
        self.rounding = rounding or sf.rounding
        self._mode = int(RoundMode.parse(self.rounding))
        self.format = sf.element
        self._states: dict[str, scaled.DelayedScaling] = {}
        self._rows: list[dict] = []

    def _state(self, ctx):
        """The delayed-scaling state of this tensor; outside training a copy, so that the
        history only moves with training steps."""
        if not self.scaled.delayed:
            return None
        key = f"{ctx.site}|{ctx.role}|{ctx.direction}"
        st = self._states.get(key)
        if st is None:
            st = self._states[key] = self.scaled.state()
        if getattr(ctx, "training", True):
            return st
        copy = self.scaled.state()
        copy.load_state_dict(st.state_dict())
        return copy

    def round(self, x: np.ndarray, ctx):
        """``x`` scaled, rounded and dequantized, in ``x``'s dtype (a float64 input is rounded
        to float32 first: the formats scale float32 tensors), and the Stats of the element
        rounding (None unless ``ctx.stats``)."""
        if x.dtype not in (np.float32, np.float64):
            raise TypeError(f"cast sites round float32/float64 arrays, got {x.dtype}")
        x32 = np.ascontiguousarray(x, np.float32)
        res = scaled.run(x32, self.scaled, self._mode, ctx.key, SR_BITS_MAX, False, ctx.stats,
                         self._state(ctx))
        y = res["values"]
        if not ctx.stats:
            return (y if x.dtype == np.float32 else y.astype(x.dtype)), None
        elements = scaled.element_stats(res, self.scaled, self._mode, ctx.key, SR_BITS_MAX)
        _, under, over = scaled.scale_stats(res, self.scaled)
        tiles = int(np.size(res["ideal"])) if self.scaled.rule != "s2fp8" else 1
        row = {"site": ctx.site, "role": ctx.role, "direction": ctx.direction,
               "amax": res["amax"], "scale": None, "alpha": None, "beta": None,
               "tiles": tiles, "scale_underflow": under, "scale_overflow": over,
               "nonfinite": res["nonfinite"]}
        if self.scaled.rule == "tensor":
            row["scale"] = 1.0 / float(res["ideal"])  # the encode scale (ideal: its decode)
        elif self.scaled.rule == "s2fp8":
            row["alpha"], row["beta"] = (float(v) for v in res["ideal"])
        self._rows.append(row)
        return (y if x.dtype == np.float32 else y.astype(x.dtype)), elements

    def scale_records(self) -> list[dict]:
        """The scale rows of the roundings since the last call (and forget them)."""
        rows, self._rows = self._rows, []
        return rows

    def state_dict(self) -> dict:
        """Plain data: the delayed-scaling state of every tensor seen so far."""
        return {k: st.state_dict() for k, st in sorted(self._states.items())}

    def load_state_dict(self, d: dict) -> None:
        """Restore :meth:`state_dict` output."""
        self._states = {}
        for k, v in d.items():
            st = self.scaled.state()
            st.load_state_dict(v)
            self._states[k] = st

    def __str__(self):
        return f"{self.scaled.name}:{self.rounding}"

    def __repr__(self):
        return f"ScaledCast({self.scaled.name!r}, rounding={self.rounding!r})"
