"""HALP (bit-centred SVRG) and its baselines: the invariants of De Sa et al. 2018 on small
least-squares problems (fpsim.training.halp, fpsim.analysis.halp, ``fpsim halp``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fpsim
from fpsim.analysis import halp as study
from fpsim.training.halp import HALP, LPSGD, LPSVRG, SVRG

U = 2.0 ** -53  #: unit roundoff of float64


@pytest.fixture(scope="module")
def small():
    """N=200, d=5, kappa=10: fast, and converges to float64 accuracy in 20 epochs."""
    prob = study.LeastSquares(n=200, d=5, kappa=10.0, seed=1)
    return prob, dict(lr=0.25 / prob.L, T=80, batch_size=10)


def _bits64(params):
    return np.concatenate([np.ravel(p) for p in params]).view(np.uint64)


def _gamma(n):
    return n * U / (1 - n * U)


def test_halp_52_bit_rne_tracks_svrg_within_grid_resolution(small):
    """HALP with b = 52 and rne against float64 SVRG on identical minibatches.

    Per epoch, from HALP's anchor w~ (the same for both), float64 SVRG's offsets follow
    ``z' = z - lr (A_B^T A_B/B) z - lr c`` and HALP's the same map plus the rounding error e_t of
    the grid. The map is non-expansive when ``lr λmax(A_B^T A_B / B) <= 2`` (checked below for
    every minibatch), so after T steps ``||z_HALP - z_SVRG|| <= Σ_t ||e_t|| + ρ_t``:

    * grid: ``||e_t|| <= sqrt(d) δ/2 + u ||z_t||`` (round to nearest on the grid, then ``k·δ``
      rounded once into float64);
    * float64: both runs evaluate ``u = z - lr(g(w~+z) - g(w~) + g~)`` in float64, whose
      rounding errors differ; each gradient ``A_B^T(A_B x - y_B)/B`` is within
      ``γ_{d+B+2} |A_B|^T(|A_B||x| + |y_B|)/B`` (standard dot-product bounds), the sum
      ``w~ + z`` within ``u |w~ + z|`` and the update within ``2u |u_t|``; ρ_t is twice the
      sum (one per run).

    Both runs must then reach ||w - w*|| < 1e-12.
    """
    prob, kw = small
    A, y, d = prob.A, prob.y, prob.d
    epochs = 20
    halp = HALP(**kw, seed=3, bits=52, mu=prob.mu, rounding="rne")
    hist = halp.run(prob, prob.init(), epochs, w_star=prob.w_star, keep_offsets=True)
    svrg = SVRG(**kw, seed=3).run(prob, prob.init(), epochs, w_star=prob.w_star)
    assert hist.dist[-1] < 1e-12 and svrg.dist[-1] < 1e-12, (hist.dist[-1], svrg.dist[-1])
    assert np.sum(hist.overflow) == 0
    rng = np.random.default_rng(3)  # the minibatches every method draws
    lr, T, B = kw["lr"], kw["T"], kw["batch_size"]
    offsets = iter(hist.offsets)
    worst = 0.0
    for k in range(epochs):
        anchor = hist.params[k][0]
        g_full = prob.full_grad([anchor])[0]
        z = np.zeros(d)
        bound = 0.0
        for t in range(T):
            idx = rng.integers(0, prob.n, B)
            assert lr * np.linalg.eigvalsh(A[idx].T @ A[idx] / B)[-1] <= 2  # non-expansive
            ab, yb = np.abs(A[idx]), np.abs(y[idx])
            x = anchor + z
            u = z - lr * (prob.grad([x], idx)[0] - prob.grad([anchor], idx)[0] + g_full)
            _, _, (zh,), (delta,) = next(offsets)
            grad_err = _gamma(d + B + 2) * (
                np.linalg.norm(ab.T @ (ab @ np.abs(x) + yb)) +
                np.linalg.norm(ab.T @ (ab @ np.abs(anchor) + yb))) / B
            rho = 2 * (lr * grad_err + U * np.linalg.norm(x) + 2 * U * np.linalg.norm(u))
            bound += math.sqrt(d) * delta / 2 + U * np.linalg.norm(zh) + rho
            z = u
        diff = float(np.linalg.norm(zh - z))
        assert diff <= bound, f"epoch {k}: ||z_halp - z_svrg|| = {diff:.3e} > bound {bound:.3e}"
        worst = max(worst, diff / bound)
    assert next(offsets, None) is None
    print(f"worst ||z_halp - z_svrg|| / bound = {worst:.3g}")


def test_offset_never_leaves_its_grid(small):
    prob, kw = small
    hist = HALP(**kw, seed=0, bits=8, mu=prob.mu).run(prob, prob.init(), 4, keep_offsets=True)
    assert len(hist.offsets) == 4 * kw["T"]
    for k, t, zs, deltas in hist.offsets:
        for z, delta in zip(zs, deltas):
            grid = fpsim.IntGrid(8, delta)
            back = fpsim.decode(fpsim.encode(z, grid), grid).astype(np.float64)
            assert np.array_equal(back.view(np.uint64), z.view(np.uint64)), (k, t, z, back)
            ks = np.rint(z / delta)
            assert np.all(ks >= -128) and np.all(ks <= 127), (k, t, ks)
            assert np.all(np.abs(z - ks * delta) <= U * np.abs(z)), (k, t)


def test_saturation_is_counted(small):
    # δ = ||g~||/(mu (2^(b-1)-1)): the grid covers the ball ||z|| <= ||g~||/mu, which holds w*
    # for mu <= the true strong convexity. A mu 1e4 times too large gives a grid 1e4 times too
    # narrow (saturation); one 100 times too small a wide, coarse grid (never saturates).
    prob, kw = small
    narrow = HALP(**kw, seed=0, bits=8, mu=1e4 * prob.mu).run(prob, prob.init(), 3)
    wide = HALP(**kw, seed=0, bits=8, mu=1e-2 * prob.mu).run(prob, prob.init(), 3)
    assert np.sum(narrow.overflow) > 0
    assert np.sum(wide.overflow) == 0
    assert np.sum(wide.rounded) == 3 * kw["T"] * prob.d
    assert np.sum(narrow.overflow) <= np.sum(narrow.rounded)


def test_halp_8_bit_converges_where_lp_sgd_stalls():
    # The documented least-squares settings (fpsim.analysis.halp defaults, 30 epochs).
    prob = study.problem("lsq")
    st = study.setup(prob, (8,))
    for seed in (0, 1):
        h = study.run_one(prob, study.make("halp", st, 8, seed), 30)
        lp = study.run_one(prob, study.make("lp-sgd", st, 8, seed), 30)
        assert h.dist[-1] < 1e-10, h.dist[-1]
        assert lp.dist[-1] > 1e-3, lp.dist[-1]


@pytest.mark.parametrize("cls,extra", [(HALP, {"mu": 1.0}), (LPSVRG, {"delta": 0.05}),
                                       (LPSGD, {"delta": 0.05})])
def test_same_seed_bit_identical_other_seed_differs(small, cls, extra):
    prob, kw = small
    runs = [cls(**kw, seed=s, bits=8, **extra).run(prob, prob.init(), 3) for s in (5, 5, 6)]
    a, b, c = ([_bits64(p) for p in r.params] for r in runs)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[-1], c[-1])


def test_svrg_and_halp_draw_the_same_minibatches(small):
    prob, kw = small
    seen = []

    class Spy:
        n = prob.n
        full_grad, loss = prob.full_grad, prob.loss

        def grad(self, params, idx):
            seen.append(tuple(idx))
            return prob.grad(params, idx)

    SVRG(**kw, seed=2).run(Spy(), prob.init(), 1)
    first, seen[:] = list(seen), []
    HALP(**kw, seed=2, bits=8).run(Spy(), prob.init(), 1)
    assert seen == first and len(first) == 2 * kw["T"]


@pytest.mark.parametrize("kwargs,field", [
    (dict(bits=1), "bits"), (dict(bits=54), "bits"), (dict(bits=8.0), "bits"),
    (dict(mu=0.0), "mu"), (dict(mu=-1.0), "mu"), (dict(lr=0.0), "lr"), (dict(lr=-0.1), "lr"),
    (dict(T=0), "T"), (dict(batch_size=0), "batch_size"), (dict(rounding="rtz"), "rounding"),
])
def test_bad_arguments_name_the_field(kwargs, field):
    args = dict(lr=0.1, T=10, bits=8, mu=1.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=rf"\b{field}="):
        HALP(**args)


def test_fixed_grid_start_must_be_on_the_grid(small):
    prob, kw = small
    with pytest.raises(ValueError, match="not on the grid"):
        LPSGD(**kw, bits=8, delta=0.1).run(prob, [np.full(prob.d, 0.05)], 1)


def test_logistic_optimum_to_float64_accuracy():
    prob = study.Logistic.synthetic(n=200, d=5, lam=0.05, seed=3)
    g = np.concatenate(prob.full_grad(prob.w_star))
    assert np.linalg.norm(g) < 1e-15
    w = [p + 1e-3 for p in prob.w_star]
    # the cancellation-free gap agrees with the plain difference where that is accurate
    assert prob.gap(w) == pytest.approx(prob.loss(w) - prob.f_star, rel=1e-6)
    assert prob.gap(prob.w_star) == 0


def test_cli_quick_writes_figures_and_tables(tmp_path, capsys):
    from fpsim.cli import main

    assert main(["halp", "--quick", "--epochs", "3", "--out", str(tmp_path)]) == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert {"summary.md", "final.csv", "curves.json", "lsq_dist.png", "lsq_mu.png"} <= names
    assert "HALP" in capsys.readouterr().out


@pytest.mark.parametrize("argv,needle", [(["--bits", "1"], "--bits"),
                                         (["--problem", "mnist"], "--problem"),
                                         (["--seeds", "0"], "--seeds")])
def test_cli_bad_input_is_a_usage_error(argv, needle, capsys, tmp_path):
    from fpsim.cli import main

    assert main(["halp", "--quick", "--out", str(tmp_path), *argv]) == 2
    assert needle in capsys.readouterr().err
