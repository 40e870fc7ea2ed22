"""The adaptive loss scaling formula of the reference code, written out anew with numpy for the
tests (independent of fpsim.training.scaling): the per-site scale before the caps, and with the
caps and the power-of-two rounding."""

import math

import numpy as np
from scipy.special import erfinv


def spec_unbound(g, w, u_min, u_max, t_uf, variant):
    """The ``approx_range`` scale before the caps (float64 statistics): variant A (product
    statistic with the fan-in factor), A0 (without it) or B (gradient only)."""
    g = g.astype(np.float64)
    c = math.sqrt(2) * erfinv(t_uf)
    if variant == "B":
        sigma, umax, omax = g.std(), u_max, np.abs(g).max()
    else:
        w = w.astype(np.float64)
        k = w.shape[0] * int(np.prod(w.shape[2:]))
        sigma = math.sqrt((g.var() + g.mean() ** 2) * (w.var() + w.mean() ** 2))
        if variant == "A":
            sigma *= math.sqrt(0.5 * k)
        umax = u_max / k
        omax = max(abs(g.max() * w.max()), abs(g.min() * w.min()),
                   abs(g.max() * w.min()), abs(g.min() * w.max()))
    return 1.0 if sigma == 0 else min(max(u_min / (c * sigma), 1.0), umax / omax)


def spec_capped(unbound, a, sb, ab):
    """The caps (per site SB, accumulated AB given the carried scale a), then power-of-two
    rounding (floor)."""
    return 2.0 ** math.floor(math.log2(min(unbound, ab / a, sb)))


def spec_scale(g, w, a, u_min, u_max, t_uf=1e-3, sb=16.0, ab=1024.0, variant="A"):
    """The site's scale: :func:`spec_unbound`, then :func:`spec_capped`."""
    return spec_capped(spec_unbound(g, w, u_min, u_max, t_uf, variant), a, sb, ab)
