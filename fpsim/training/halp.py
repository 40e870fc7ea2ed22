"""SVRG and HALP (bit-centred SVRG, De Sa et al. 2018), with the fixed-grid baselines.

Four optimizers over a list of float64 parameter tensors and a *problem*: any object with

* ``n``: the number of examples;
* ``grad(params, idx) -> list of arrays``: the mean gradient over the examples ``idx``;
* ``full_grad(params) -> list of arrays``: the mean gradient over all examples;
* ``loss(params) -> float``.

=========  ======================================================================================
class      what is stored in low precision
=========  ======================================================================================
SVRG       nothing: float64 SVRG written in offset form (``w = w~ + z``), the reference.
HALP       the offset ``z`` of each tensor, on ``IntGrid(bits, δ_l)`` re-scaled every epoch.
LPSVRG     the iterate ``w`` itself, on a fixed ``IntGrid(bits, δ)``; SVRG steps.
LPSGD      the iterate ``w`` itself, on a fixed ``IntGrid(bits, δ)``; plain SGD steps.
=========  ======================================================================================

HALP, as torchhalp implements it (``T`` counts minibatches; ``δ`` per tensor)::

    for k = 0 .. epochs-1:
        g~ = full_grad(w~)                                   # float64, at the anchor
        δ_l = ||g~_l||_2 / (mu (2^(b-1) - 1))                # per tensor l (see _delta)
        z_l = 0
        for t = 0 .. T-1:
            i = the next minibatch                           # identical for every method
            u = z - lr (grad(w~ + z, i) - grad(w~, i) + g~)  # float64
            z_l = Q(u_l) on IntGrid(b, δ_l)                  # sr (or rne), saturating
        w~ = w~ + z                                          # float64 re-centre

Randomness. Every method draws minibatch ``t`` of epoch ``k`` as
``rng.integers(0, n, batch_size)`` from one ``np.random.default_rng(seed)``, ``T`` minibatches per
epoch, so two methods with the same ``seed``, ``T`` and ``batch_size`` see the same examples in
the same order. Stochastic rounding takes fpsim's counter-based bits with key ``(seed, stream)``,
``stream = (k·T + t)·L + l`` for inner step ``t`` of epoch ``k`` and tensor ``l`` of ``L``: every
rounding of a run has its own stream.

Only the stored tensors are rounded: gradients, the anchor ``w~`` and the sum ``w~ + z`` are
float64 (a simulator, as torchhalp's float32 one). ``tensors=`` limits the low-precision storage
to some tensor indices (the others take the same steps in float64), for bit-centring one layer.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np

#: Smallest and largest step an :class:`~fpsim.numerics.fixed.IntGrid` takes (``2^-900 .. 2^900``):
#: a δ outside (``g~_l = 0``, or a gradient below ``2^-890``) is clamped to this range.
DELTA_MIN = math.ldexp(1.0, -900)
DELTA_MAX = math.ldexp(1.0, 900)
#: Widths the grid allows (two's complement, sign included); every ``k`` is exact in a float64.
BITS_MIN, BITS_MAX = 2, 53
ROUNDINGS = ("sr", "rne")


@dataclasses.dataclass
class History:
    """What a run recorded at its start (entry 0) and after every epoch (entries 1..epochs).

    Attributes:
        method: the optimizer's :attr:`name`.
        params: the full-precision iterate per entry (copies of the tensors).
        loss: ``problem.loss`` of each entry.
        dist: ``||w - w*||_2`` over all tensors (when ``w_star`` was given, else empty).
        gap: ``f(w) - f*`` (``problem.gap(params)`` when the problem has one, else
            ``loss - f_star`` when ``f_star`` was given, else empty).
        overflow: saturated elements per epoch and tensor, shape ``(epochs+1, L)`` (row 0 is 0).
        inexact: elements that rounding changed, per epoch and tensor (same shape).
        rounded: elements rounded per epoch and tensor (same shape).
        delta: δ per epoch and tensor (shape ``(epochs+1, L)``; row ``k+1`` is the grid of epoch
            ``k``; row 0 and float64 tensors are NaN).
        delta_clamped: number of δ values clamped to ``DELTA_MIN..DELTA_MAX`` (``g~_l = 0``).
        offsets: with ``keep_offsets=True``, ``(epoch, step, [z_l], [δ_l])`` after every inner step
            of the low-precision tensors (HALP) or ``(epoch, step, [w_l], [δ_l])`` (fixed grids).
    """

    method: str
    params: list = dataclasses.field(default_factory=list)
    loss: list = dataclasses.field(default_factory=list)
    dist: list = dataclasses.field(default_factory=list)
    gap: list = dataclasses.field(default_factory=list)
    overflow: list = dataclasses.field(default_factory=list)
    inexact: list = dataclasses.field(default_factory=list)
    rounded: list = dataclasses.field(default_factory=list)
    delta: list = dataclasses.field(default_factory=list)
    delta_clamped: int = 0
    offsets: list = dataclasses.field(default_factory=list)

    def arrays(self) -> dict:
        """The per-epoch curves as numpy arrays (``loss``, ``dist``, ``gap``, ``overflow``, ...)."""
        return {k: np.asarray(getattr(self, k), dtype=float)
                for k in ("loss", "dist", "gap", "overflow", "inexact", "rounded", "delta")}


def _positive(field, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            math.isfinite(value) and value > 0):
        raise ValueError(f"{field}={value!r} is invalid: must be a positive finite number")
    return float(value)


def _count(field, value, lo=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
        raise ValueError(f"{field}={value!r} is invalid: must be an int >= {lo}")
    return int(value)


def _bits(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not (
            BITS_MIN <= value <= BITS_MAX):
        raise ValueError(f"bits={value!r} is invalid: must be an int in {BITS_MIN}..{BITS_MAX} "
                         "(a signed integer grid, every integer exact in a float64)")
    return int(value)


def _rounding(value):
    if value not in ROUNDINGS:
        raise ValueError(f"rounding={value!r} is invalid: choose from {', '.join(ROUNDINGS)}")
    return value


def _as_params(params) -> list:
    out = [np.array(p, dtype=np.float64) for p in params]
    if not out:
        raise ValueError("params is empty: give a list of float64 arrays")
    return out


def _norm(tensors) -> float:
    return math.sqrt(sum(float(np.dot(t.ravel(), t.ravel())) for t in tensors))


class SVRG:
    """Float64 SVRG (Johnson & Zhang) in offset form: the reference HALP is compared with.

    Each epoch takes the full gradient ``g~`` at the anchor ``w~``, then ``T`` minibatch steps
    ``z <- z - lr (grad(w~ + z, i) - grad(w~, i) + g~)`` from ``z = 0``, then ``w~ <- w~ + z``.

    Args:
        lr: step size; T: inner steps (minibatches) per epoch; batch_size: examples per
            minibatch (drawn with replacement); seed: minibatch order and stochastic rounding.
        tensors: indices of the tensors stored in low precision (subclasses; None: all).
    """

    name = "svrg"
    #: Whether the method takes variance-reduced steps around an anchor.
    variance_reduced = True

    def __init__(self, lr: float, T: int, batch_size: int = 1, seed: int = 0, tensors=None):
        self.lr = _positive("lr", lr)
        self.T = _count("T", T)
        self.batch_size = _count("batch_size", batch_size)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"seed={seed!r} is invalid: must be an int >= 0")
        self.seed = int(seed)
        if tensors is not None:
            tensors = sorted({_count("tensors", i, lo=0) for i in tensors})
        self.tensors = tensors

    # ---- what subclasses change -----------------------------------------------------------------
    def _low(self, n_tensors) -> list:
        """Indices of the low-precision tensors (none for float64 SVRG)."""
        return []

    def _grids(self, k, anchor_grad, low) -> dict:
        """``{tensor index: IntGrid}`` of epoch ``k``."""
        return {}

    # ---- the loop -------------------------------------------------------------------------------
    def run(self, problem, params, epochs: int, *, w_star=None, f_star=None,
            keep_offsets: bool = False) -> History:
        """Run ``epochs`` epochs from ``params`` (not modified); returns the :class:`History`.

        Args:
            problem: the problem object (module docstring).
            params: initial tensors (list of arrays; copied to float64). For the fixed-grid
                methods they must lie on their grids (0 does).
            epochs: number of outer epochs (``>= 1``).
            w_star: the solution, for :attr:`History.dist`; f_star: the optimal loss.
            keep_offsets: keep every stored low-precision tensor in :attr:`History.offsets`.
        """
        epochs = _count("epochs", epochs)
        w = _as_params(params)
        L = len(w)
        low = self._low(L)
        if w_star is not None:
            w_star = _as_params(w_star)
            if [a.shape for a in w_star] != [a.shape for a in w]:
                raise ValueError("w_star has other tensor shapes than params")
        rng = np.random.default_rng(self.seed)
        hist = History(self.name)
        zeros = np.zeros(L)
        self._record(hist, problem, w, w_star, f_star, zeros, zeros, zeros, np.full(L, np.nan))
        for k in range(epochs):
            w, counts, deltas = self._epoch(problem, w, k, rng, low, hist, keep_offsets)
            self._record(hist, problem, w, w_star, f_star, *counts, deltas)
        return hist

    def _epoch(self, problem, w_anchor, k, rng, low, hist, keep):
        L = len(w_anchor)
        g_full = problem.full_grad(w_anchor)
        grids = self._grids(k, g_full, low)
        if hasattr(self, "_clamped"):
            hist.delta_clamped += self._clamped
        deltas = np.array([grids[i].delta if i in grids else np.nan for i in range(L)])
        counts = np.zeros((3, L))
        z = [np.zeros_like(a) for a in w_anchor]
        for t in range(self.T):
            idx = rng.integers(0, problem.n, self.batch_size)
            point = [a + b for a, b in zip(w_anchor, z)]
            g_here = problem.grad(point, idx)
            g_anchor = problem.grad(w_anchor, idx)
            for l in range(L):
                u = z[l] - self.lr * (g_here[l] - g_anchor[l] + g_full[l])
                z[l] = self._store(u, grids.get(l), (k * self.T + t) * L + l, counts[:, l])
            if keep and grids:
                hist.offsets.append((k, t, [z[l].copy() for l in grids],
                                     [grids[l].delta for l in grids]))
        return [a + b for a, b in zip(w_anchor, z)], counts, deltas

    def _store(self, u, grid, stream, counts):
        """``u`` rounded onto ``grid`` (float64 ``u`` itself when ``grid`` is None)."""
        if grid is None:
            return u
        import fpsim

        val, st = fpsim.quantize(u, grid, rounding=self.rounding, overflow="saturate",
                                 seed=self.seed, stream=stream, stats=True)
        counts += (st.overflow, st.inexact, st.total)
        return np.asarray(val, dtype=np.float64).reshape(u.shape)

    def _record(self, hist, problem, w, w_star, f_star, over, inexact, total, deltas):
        hist.params.append([a.copy() for a in w])
        loss = float(problem.loss(w))
        hist.loss.append(loss)
        if w_star is not None:
            hist.dist.append(_norm([a - b for a, b in zip(w, w_star)]))
        if hasattr(problem, "gap"):
            hist.gap.append(float(problem.gap(w)))
        elif f_star is not None:
            hist.gap.append(loss - float(f_star))
        hist.overflow.append(np.asarray(over, dtype=float).copy())
        hist.inexact.append(np.asarray(inexact, dtype=float).copy())
        hist.rounded.append(np.asarray(total, dtype=float).copy())
        hist.delta.append(np.asarray(deltas, dtype=float).copy())


def halp_delta(g, mu: float, bits: int) -> tuple[float, bool]:
    """HALP's step for one tensor: ``||g||_2 / (mu (2^(b-1) - 1))``, clamped to
    ``DELTA_MIN..DELTA_MAX``; returns ``(δ, clamped)``.

    A zero gradient (the anchor is optimal in this tensor) has no scale of its own; it gets the
    smallest grid step ``DELTA_MIN = 2^-900``, so the offset stays (within ``2^-893``) at 0.
    """
    norm = _norm([np.asarray(g, dtype=np.float64)])
    delta = norm / (mu * ((1 << (bits - 1)) - 1))
    if not math.isfinite(delta):
        raise ValueError(f"the full gradient's norm is not finite ({norm}); HALP cannot scale "
                         "its grid")
    if DELTA_MIN <= delta <= DELTA_MAX:
        return delta, False
    return (DELTA_MIN if delta < DELTA_MIN else DELTA_MAX), True


class HALP(SVRG):
    """HALP: SVRG whose offset ``z`` is stored on a b-bit grid re-centred and re-scaled each
    epoch (algorithm in the module docstring).

    Args:
        lr, T, batch_size, seed, tensors: as :class:`SVRG` (``tensors``: the tensors whose
            offsets are low precision; None: all).
        bits: grid width, 2..53 (two's complement, ``k ∈ [-2^(b-1), 2^(b-1)-1]``).
        mu: the strong-convexity constant (a hyperparameter) in ``δ_l = ||g~_l|| / (mu (2^(b-1)-1))``;
            a larger ``mu`` gives a finer, narrower grid (saturation when ``w*`` falls outside it),
            a smaller one a coarser, wider grid.
        rounding: ``sr`` (unbiased stochastic rounding, the default) or ``rne``.
    """

    name = "halp"

    def __init__(self, lr: float, T: int, batch_size: int = 1, seed: int = 0, bits: int = 8,
                 mu: float = 1.0, rounding: str = "sr", tensors=None):
        super().__init__(lr, T, batch_size, seed, tensors)
        self.bits = _bits(bits)
        self.mu = _positive("mu", mu)
        self.rounding = _rounding(rounding)

    def _low(self, n_tensors):
        low = list(range(n_tensors)) if self.tensors is None else self.tensors
        if low and low[-1] >= n_tensors:
            raise ValueError(f"tensors={self.tensors} is invalid: there are {n_tensors} tensors")
        return low

    def _grids(self, k, anchor_grad, low):
        import fpsim

        grids, self._clamped = {}, 0
        for l in low:
            delta, clamped = halp_delta(anchor_grad[l], self.mu, self.bits)
            self._clamped += clamped
            grids[l] = fpsim.IntGrid(self.bits, delta)
        return grids


class LPSVRG(HALP):
    """Low-precision SVRG with a fixed grid: the iterate ``w`` itself lives on
    ``IntGrid(bits, delta)`` (per tensor), and each step is an SVRG step rounded onto it::

        for each epoch: g~ = full_grad(w~); w = w~
            for t < T: w = Q(w - lr (grad(w, i) - grad(w~, i) + g~))
            w~ = w

    Args:
        delta: the fixed step, one float or one per tensor. The error floor scales with it.
        Others as :class:`HALP` (no ``mu``).
    """

    name = "lp-svrg"

    def __init__(self, lr: float, T: int, batch_size: int = 1, seed: int = 0, bits: int = 8,
                 delta=1.0, rounding: str = "sr", tensors=None):
        SVRG.__init__(self, lr, T, batch_size, seed, tensors)
        self.bits = _bits(bits)
        self.rounding = _rounding(rounding)
        deltas = delta if isinstance(delta, (list, tuple, np.ndarray)) else [delta]
        self.delta = [_positive("delta", d) for d in deltas]
        self._clamped = 0

    def _grids(self, k, anchor_grad, low):
        import fpsim

        if len(self.delta) not in (1, len(anchor_grad)):
            raise ValueError(f"delta has {len(self.delta)} values for {len(anchor_grad)} tensors")
        pick = (lambda l: self.delta[0]) if len(self.delta) == 1 else (lambda l: self.delta[l])
        return {l: fpsim.IntGrid(self.bits, pick(l)) for l in low}

    def _epoch(self, problem, w_anchor, k, rng, low, hist, keep):
        L = len(w_anchor)
        grids = self._grids(k, w_anchor, low)
        for l, grid in grids.items():
            a = w_anchor[l]
            if k == 0 and not np.array_equal(
                    np.asarray(fpsim_quantize(a, grid), dtype=np.float64), a):
                raise ValueError(f"params[{l}] is not on the grid {grid}: start from values on "
                                 "it (0 is)")
        deltas = np.array([grids[i].delta if i in grids else np.nan for i in range(L)])
        g_full = problem.full_grad(w_anchor) if self.variance_reduced else None
        counts = np.zeros((3, L))
        w = [a.copy() for a in w_anchor]
        for t in range(self.T):
            idx = rng.integers(0, problem.n, self.batch_size)
            g_here = problem.grad(w, idx)
            g_anchor = problem.grad(w_anchor, idx) if self.variance_reduced else None
            for l in range(L):
                step = g_here[l] if g_anchor is None else g_here[l] - g_anchor[l] + g_full[l]
                w[l] = self._store(w[l] - self.lr * step, grids.get(l),
                                   (k * self.T + t) * L + l, counts[:, l])
            if keep and grids:
                hist.offsets.append((k, t, [w[l].copy() for l in grids],
                                     [grids[l].delta for l in grids]))
        return w, counts, deltas


class LPSGD(LPSVRG):
    """Low-precision SGD: ``w = Q(w - lr grad(w, i))`` with ``w`` on a fixed
    ``IntGrid(bits, delta)``; an "epoch" is ``T`` minibatches (no full gradient is taken).

    Args: as :class:`LPSVRG`.
    """

    name = "lp-sgd"
    variance_reduced = False


def fpsim_quantize(x, grid):
    """``x`` rounded to nearest onto ``grid`` (saturating); used to check that a start is on it."""
    import fpsim

    return fpsim.quantize(x, grid, rounding="rne", overflow="saturate")


#: The optimizers by their :attr:`~SVRG.name`.
METHODS = {cls.name: cls for cls in (SVRG, HALP, LPSVRG, LPSGD)}
