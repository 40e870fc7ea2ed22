"""Multipoint quantization of weight vectors (Liu, Ye, Zhou, Liu, "Mixed Precision without Mixed
Precision", AAAI 2021): ``w ≈ Σ_i a_i·q_i`` with full-precision scales ``a_i`` and integer
vectors ``q_i`` on the symmetric b-bit grid ``{-m .. m}``, ``m = 2^(b-1) - 1``.

The paper's full text was not available to this project; the algorithm below is a
reconstruction from its abstract and a third-party implementation, and these are its choices:

* **One point, exactly optimal** (:func:`best_point`): ``min over a >= 0 and q ∈ {-m..m}^d of
  ||r - a·q||²``. For a fixed ``a`` the best ``q`` is ``clip(round(r/a), -m, m)``, so the
  objective is ``f(a) = min_q ||r - a q||²``, piecewise quadratic in ``a``: ``q`` changes only
  where ``|r_j|/a`` crosses a half-integer ``k + 1/2`` (``k < m``; beyond ``m`` the clip
  holds). Between consecutive breakpoints ``q`` is constant and ``f(a) = ||r||² - 2a<r,q> +
  a²||q||²``, minimized at the least-squares refit ``a = <r,q>/||q||²`` clamped to the
  interval. Sorting the ``d·m`` breakpoints and accumulating ``<r,q>`` and ``||q||²`` across
  them evaluates every interval, so the minimum over ``a`` (hence over ``(a, q)``) is exact, up
  to float64 rounding. Ties inside ``round`` are measure-zero and go to the interval's pattern.
* **Greedy points** (:func:`greedy`): ``r_0 = w``, ``(a_i, q_i) = best_point(r_{i-1})``,
  ``r_i = r_{i-1} - a_i q_i``. Since ``a = 0`` is allowed, ``||r_i|| <= ||r_{i-1}||``.
* **Adaptive allocation** (:func:`allocate`): every channel (row) starts with one point; a
  budget of extra points goes one at a time to the channel whose output error on a
  calibration batch, ``mean_x ((w - w~)ᵀ x)²``, is largest (cap ``n_max`` per channel);
  the ablation gives the same number of extra points to channels drawn at random.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def _levels(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 8:
        raise ValueError(f"bits={bits!r} is invalid: allowed range is 2..8 (a symmetric "
                         "signed grid -(2^(b-1)-1) .. 2^(b-1)-1; the exact search sorts "
                         "d·(2^(b-1)-1) breakpoints)")
    return (1 << (int(bits) - 1)) - 1


def best_point(r, bits: int) -> tuple[float, np.ndarray]:
    """The exactly optimal single point ``(a, q)`` for the vector ``r`` (module docstring):
    ``a >= 0`` a float, ``q`` int64 in ``-m .. m``; ``a = 0, q = 0`` for ``r = 0``."""
    m = _levels(bits)
    r = np.asarray(r, np.float64).ravel()
    ar = np.abs(r)
    nz = np.flatnonzero(ar)
    if nz.size == 0:
        return 0.0, np.zeros(r.size, np.int64)
    # Breakpoints a = |r_j| / (k + 1/2), k = 0..m-1: below each, |q_j| is at least k + 1.
    half = np.arange(m, dtype=np.float64) + 0.5
    bp = (ar[nz][:, None] / half[None, :]).ravel()
    mag = np.broadcast_to(ar[nz][:, None], (nz.size, m)).ravel()
    k = np.broadcast_to(np.arange(m), (nz.size, m)).ravel()
    order = np.argsort(-bp, kind="stable")  # descending a
    bp, mag, k = bp[order], mag[order], k[order]
    # After crossing breakpoint i (a below bp[i]), |q_j| grows from k to k+1:
    # <r,q> grows by |r_j| and ||q||^2 by 2k+1.
    s1 = np.cumsum(mag)
    s2 = np.cumsum(2.0 * k + 1.0)
    lo = np.append(bp[1:], 0.0)  # the interval below breakpoint i is (lo[i], bp[i])
    a = np.clip(s1 / s2, lo, bp)
    obj = -2.0 * a * s1 + a * a * s2  # f(a) - ||r||^2
    i = int(np.argmin(obj))
    if obj[i] >= 0.0:
        return 0.0, np.zeros(r.size, np.int64)
    q = np.clip(np.rint(r / a[i]), -m, m).astype(np.int64)
    # The pattern of interval i, as rounding gives it inside the interval; the scale refit to
    # it exactly (least squares for this q).
    a_fit = float(np.dot(r, q) / np.dot(q, q))
    return a_fit, q


@dataclasses.dataclass
class Points:
    """The points of one vector: ``scales[i]`` and ``ints[i]`` (int64 vectors); its value is
    ``Σ_i scales[i]·ints[i]`` (:meth:`value`)."""

    scales: list = dataclasses.field(default_factory=list)
    ints: list = dataclasses.field(default_factory=list)

    def value(self, d: int | None = None) -> np.ndarray:
        """float64 ``Σ a_i q_i`` (zeros of length ``d`` without points)."""
        if not self.scales:
            return np.zeros(d or 0)
        return sum(a * q.astype(np.float64) for a, q in zip(self.scales, self.ints))

    def __len__(self) -> int:
        return len(self.scales)


def greedy(w, bits: int, n: int, points: Points | None = None) -> Points:
    """``n`` more greedy points for ``w`` (after ``points``, if given): each the
    :func:`best_point` of the current residual."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n={n!r} is invalid: the number of points is an int >= 0")
    w = np.asarray(w, np.float64).ravel()
    pts = points if points is not None else Points()
    r = w - pts.value(w.size)
    for _ in range(int(n)):
        a, q = best_point(r, bits)
        pts.scales.append(a)
        pts.ints.append(q)
        r = r - a * q
    return pts


def residuals(w, bits: int, n_max: int) -> np.ndarray:
    """``||r_n|| / ||w||`` for ``n = 0 .. n_max`` greedy points (1 at n = 0)."""
    w = np.asarray(w, np.float64).ravel()
    norm = float(np.linalg.norm(w))
    out = [1.0]
    pts = Points()
    for _ in range(n_max):
        greedy(w, bits, 1, pts)
        out.append(float(np.linalg.norm(w - pts.value(w.size))) / norm if norm else 0.0)
    return np.array(out)


def output_error(w, approx, X) -> float:
    """``mean_x ((w - approx)ᵀ x)²`` over the rows ``x`` of the calibration inputs ``X``."""
    e = np.asarray(X, np.float64) @ (np.asarray(w, np.float64) - approx)
    return float(np.mean(e * e))


def gram(X) -> np.ndarray:
    """``XᵀX / n`` (float64) of calibration inputs ``X`` (n, d): with it the output error of
    a weight error ``e`` is ``eᵀ G e`` (:func:`output_error` without re-reading ``X``)."""
    X = np.asarray(X, np.float64)
    return X.T @ X / X.shape[0]


def allocate(W, X, bits: int, extra: int, n_max: int = 8, rule: str = "error",
             seed: int = 0, G=None) -> list[Points]:
    """Points for every row of ``W`` (out_features, in_features): one each, then ``extra``
    more, one at a time, to the row with the largest :func:`output_error` on ``X`` (``rule =
    "error"``) or to rows drawn uniformly among those below ``n_max`` (``rule = "random"``,
    the ablation, seeded). No row gets more than ``n_max`` points.

    ``G`` may hold :func:`gram` of ``X`` already (then ``X`` is only checked for its shape);
    the errors are computed as ``eᵀ G e``, which equals :func:`output_error` up to float64
    rounding.

    Raises:
        ValueError: an empty calibration set, a negative budget, a budget beyond what
            ``n_max`` allows, or an unknown rule.
    """
    W = np.asarray(W, np.float64)
    X = np.asarray(X)
    if W.ndim != 2:
        raise ValueError(f"W must be a 2-D (out, in) weight matrix, got shape {W.shape}")
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] != W.shape[1]:
        raise ValueError(f"the calibration inputs must be a non-empty (n, {W.shape[1]}) array, "
                         f"got shape {X.shape}")
    if rule not in ("error", "random"):
        raise ValueError(f"rule={rule!r} is invalid: use 'error' or 'random'")
    if isinstance(n_max, bool) or not isinstance(n_max, (int, np.integer)) or n_max < 1:
        raise ValueError(f"n_max={n_max!r} is invalid: the most points per row is an int >= 1")
    if isinstance(extra, bool) or not isinstance(extra, (int, np.integer)) or extra < 0:
        raise ValueError(f"extra={extra!r} is invalid: the budget of extra points is an int >= 0")
    if extra > W.shape[0] * (n_max - 1):
        raise ValueError(f"extra={extra} is more than {W.shape[0]} rows x {n_max - 1} extra "
                         f"points (n_max={n_max}) allow")
    G = gram(X) if G is None else np.asarray(G, np.float64)
    d = W.shape[1]

    def err(j):
        e = W[j] - pts[j].value(d)
        return float(e @ G @ e)

    pts = [greedy(w, bits, 1) for w in W]
    errs = np.array([err(j) for j in range(W.shape[0])])
    rng = np.random.default_rng(seed)
    for _ in range(int(extra)):
        open_rows = np.flatnonzero([len(p) < n_max for p in pts])
        if rule == "error":
            j = int(open_rows[np.argmax(errs[open_rows])])
        else:
            j = int(rng.choice(open_rows))
        greedy(W[j], bits, 1, pts[j])
        errs[j] = err(j)
    return pts


def effective_bits(points: list[Points], bits: int, d: int, scale_bits: int = 32) -> float:
    """Bits per weight: ``b`` per integer of every point, plus one ``scale_bits`` scale per
    point spread over the ``d`` weights of its row."""
    n = sum(len(p) for p in points)
    return n * (bits * d + scale_bits) / (len(points) * d)


def value_matrix(points: list[Points], d: int) -> np.ndarray:
    """The quantized weight matrix ``[Σ_i a_ji q_ji]_j`` (float64)."""
    return np.stack([p.value(d) for p in points]) if points else np.zeros((0, d))
