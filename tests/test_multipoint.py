"""Multipoint quantization (fpsim.numerics.multipoint): the single point is exactly optimal,
greedy residuals never grow, the points lie on their integer grids, the allocation keeps its
budget."""

from __future__ import annotations

import numpy as np
import pytest

import fpsim
from fpsim.numerics import multipoint as mp


def _objective(r, a, m):
    """Squared error of the best integer pattern of each scale in ``a`` (a scalar or a 1-D
    grid of scales: one row of the same elementwise arithmetic per scale)."""
    a = np.asarray(a, np.float64)[..., None]
    q = np.clip(np.rint(r / a), -m, m)
    return np.sum((r - a * q) ** 2, axis=-1)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_best_point_is_optimal_against_a_dense_search(bits):
    """No scale of a dense grid (with its best integer pattern) beats the exact point."""
    m = (1 << (bits - 1)) - 1
    rng = np.random.default_rng(bits)
    for _ in range(20):
        r = rng.standard_normal(12) * rng.choice([1e-3, 1.0, 50.0])
        a, q = mp.best_point(r, bits)
        best = float(np.sum((r - a * q) ** 2))
        top = np.abs(r).max() * 2
        breaks = (np.abs(r)[:, None] / (np.arange(m) + 0.5)[None, :]).ravel()
        grid = np.concatenate([np.linspace(top / 20000, top, 20000),
                               breaks * (1 + 1e-9), breaks * (1 - 1e-9)])
        dense = float(_objective(r, grid, m).min())
        assert best <= dense * (1 + 1e-12) + 1e-300
        assert np.all(np.abs(q) <= m)


def test_scale_is_the_least_squares_refit_of_its_pattern():
    rng = np.random.default_rng(0)
    for bits in (2, 3, 4, 8):
        r = rng.standard_normal(64)
        a, q = mp.best_point(r, bits)
        direct = np.linalg.lstsq(q[:, None].astype(float), r, rcond=None)[0][0]
        assert a == pytest.approx(direct, rel=1e-14)


def test_greedy_residual_is_non_increasing_and_decays():
    rng = np.random.default_rng(1)
    w = rng.standard_normal(576)
    for bits in (2, 3, 4):
        res = mp.residuals(w, bits, 4)
        assert np.all(np.diff(res) <= 1e-15)
        assert res[4] < res[1] / 4  # each point buys bits: at least 2 bits over three points


def test_points_lie_on_their_integer_grids():
    """a_i q_i is a value of IntGrid(b, a_i, symmetric): encode gives q_i's codes and decode
    gives back the float64 product bit for bit."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal(200)
    for bits in (2, 4, 8):
        pts = mp.greedy(w, bits, 3)
        for a, q in zip(pts.scales, pts.ints):
            g = fpsim.IntGrid(bits, a, symmetric=True)
            v = a * q.astype(np.float64)
            codes = fpsim.encode(v, g)
            assert np.array_equal(codes.astype(np.int64), q % (1 << bits))
            assert np.array_equal(fpsim.decode(codes, g).view(np.int64), v.view(np.int64))


def test_allocation_keeps_the_budget_and_output_error_beats_random():
    rng = np.random.default_rng(3)
    W = rng.standard_normal((32, 48)) * rng.choice([0.1, 1.0, 5.0], size=(32, 1))  # uneven rows
    X = rng.standard_normal((256, 48))
    for rule in ("error", "random"):
        pts = mp.allocate(W, X, 3, extra=20, n_max=3, rule=rule, seed=5)
        assert sum(len(p) for p in pts) == 32 + 20
        assert max(len(p) for p in pts) <= 3 and min(len(p) for p in pts) >= 1
    err = {rule: np.mean((X @ (W - mp.value_matrix(mp.allocate(W, X, 3, 20, 3, rule, 5), 48)).T) ** 2)
           for rule in ("error", "random")}
    assert err["error"] < err["random"]


@pytest.mark.parametrize("call,match", [
    (lambda: mp.best_point(np.ones(3), 1), "bits=1"),
    (lambda: mp.best_point(np.ones(3), 9), "bits=9"),
    (lambda: mp.allocate(np.ones((2, 3)), np.zeros((0, 3)), 4, 1), "calibration"),
    (lambda: mp.allocate(np.ones((2, 3)), np.ones((4, 3)), 4, 5, n_max=3), "extra=5"),
    (lambda: mp.allocate(np.ones((2, 3)), np.ones((4, 3)), 4, -1), "extra=-1"),
    (lambda: mp.allocate(np.ones((2, 3)), np.ones((4, 3)), 4, 1, rule="best"), "rule"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
