"""Finite-difference check of the derivative rules (float64)."""

from __future__ import annotations

import numpy as np

from fpsim.engine.tensor import Tensor


def gradcheck(f, inputs, eps: float = 1e-6, seed: int = 0) -> float:
    """Largest relative error between backward-mode and central-difference gradients.

    The scalar ``L = sum(f(*inputs) * R)`` with a fixed random ``R`` makes every output element
    count, so the check covers the whole vector-Jacobian product ``R^T J``, not one direction.
    Each input element is perturbed by ``±eps`` (truncation error O(eps^2), round-off about
    1e-16 / eps, so near 1e-10 for smooth functions of O(1) values at eps = 1e-6).

    Args:
        f: function of Tensors returning a Tensor.
        inputs: float64 arrays; gradients are checked for all of them.
    Returns:
        ``max |analytic - numeric| / max(1, max |numeric|)`` over all inputs.
    """
    xs = [np.array(x, dtype=np.float64) for x in inputs]
    out = f(*[Tensor(x) for x in xs])
    r = np.random.default_rng(seed).standard_normal(out.shape)

    def loss(*arrays):
        return float((f(*[Tensor(a) for a in arrays]).data * r).sum())

    ts = [Tensor(x, requires_grad=True) for x in xs]
    f(*ts).backward(r)
    worst = 0.0
    for i, x in enumerate(xs):
        numeric = np.zeros_like(x)
        for j in range(x.size):
            flat = x.reshape(-1)
            keep = flat[j]
            flat[j] = keep + eps
            up = loss(*xs)
            flat[j] = keep - eps
            down = loss(*xs)
            flat[j] = keep
            numeric.reshape(-1)[j] = (up - down) / (2 * eps)
        analytic = ts[i].grad if ts[i].grad is not None else np.zeros_like(x)
        worst = max(worst, float(np.abs(analytic - numeric).max(initial=0.0)
                                 / max(1.0, np.abs(numeric).max(initial=0.0))))
    return worst
