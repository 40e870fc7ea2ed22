"""The HALP study: bit-centred SVRG against float64 SVRG and fixed-grid LP-SVRG / LP-SGD.

Problems (each a ``problem`` object for :mod:`fpsim.training.halp`, with ``w_star``, ``f_star``
and ``gap(params)`` computed to float64 accuracy):

* :class:`LeastSquares`: synthetic ``f(w) = ||A w - y||^2 / (2N)`` with a chosen condition number;
  ``w*`` from the normal equations (a float64 solve, then iterative refinement), and the exact
  gap ``(w - w*)^T H (w - w*) / 2``.
* :class:`Logistic`: L2-regularized logistic regression (weights and intercept, two tensors), on
  synthetic data or on the UCI digits one-vs-rest; ``w*`` by Newton's method to a gradient of a
  few ulps, and a cancellation-free gap.
* :class:`DigitsMLP`: a 64-32-10 MLP in fpsim's engine (float64), for bit-centring one layer.

:func:`run_study` runs everything and writes figures, ``curves.json`` / ``final.csv`` and
``summary.md``; ``fpsim halp`` is its command line.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time

import numpy as np

from fpsim.analysis.plots import mean_ci_linear
from fpsim.training.halp import HALP, LPSGD, LPSVRG, SVRG

METHODS = ("svrg", "halp", "lp-svrg", "lp-sgd")
LABELS = {"svrg": "SVRG fp64", "halp": "HALP", "lp-svrg": "LP-SVRG (fixed δ)",
          "lp-sgd": "LP-SGD (fixed δ)"}
COLORS = {"svrg": "black", "halp": "tab:blue", "lp-svrg": "tab:orange", "lp-sgd": "tab:red"}
#: What the statistics put at a value of exactly 0 (a run that hit w* exactly) on a log scale.
LOG_FLOOR = 1e-300
#: The plots' y range: values below (exact zeros, gaps below float64's resolution) are drawn at
#: the bottom edge, diverging runs at the top edge.
PLOT_RANGE = {"dist": (1e-17, 1e3), "gap": (1e-33, 1e5)}


def _flat(params) -> np.ndarray:
    return np.concatenate([np.ravel(p) for p in params])


# ------------------------------------------------------------------------------- problems
class LeastSquares:
    """``f(w) = ||A w - y||^2 / (2N)`` on synthetic data with Hessian condition number ``kappa``.

    ``A = sqrt(N) U diag(s) V^T`` with orthonormal ``U`` (N x d), ``V`` (d x d) and singular values
    ``s`` log-spaced in ``[1, sqrt(kappa)]``, so ``H = A^T A / N = V diag(s^2) V^T`` has
    eigenvalues ``1 .. kappa`` exactly up to rounding; ``y = A w0 + 0.1·noise``.
    """

    name = "lsq"

    def __init__(self, n=500, d=10, kappa=20.0, seed=0):
        rng = np.random.default_rng([seed, 101])
        U, _ = np.linalg.qr(rng.standard_normal((n, d)))
        V, _ = np.linalg.qr(rng.standard_normal((d, d)))
        s = np.sqrt(np.geomspace(1.0, kappa, d))
        self.A = math.sqrt(n) * (U * s) @ V.T
        w0 = rng.standard_normal(d)
        self.y = self.A @ w0 + 0.1 * rng.standard_normal(n)
        self.n, self.d = n, d
        self.H = self.A.T @ self.A / n
        eig = np.linalg.eigvalsh(self.H)
        self.mu, self.L = float(eig[0]), float(eig[-1])
        self.L_smooth = self.L  # the gradient's Lipschitz constant (the step size's scale)
        self.kappa = self.L / self.mu
        # w*: solve, then two steps of iterative refinement (residual in float64 is enough here:
        # the gradient at w* is then at the rounding level of computing it).
        w = np.linalg.solve(self.H, self.A.T @ self.y / n)
        for _ in range(3):
            w = w - np.linalg.solve(self.H, self.full_grad([w])[0])
        self.w_star = [w]
        self.f_star = self.loss(self.w_star)
        self._g_star = self.full_grad(self.w_star)[0]
        self.describe = (f"least squares, N={n}, d={d}, kappa={self.kappa:.1f} "
                         f"(mu={self.mu:.3g}, L={self.L:.3g})")

    def grad(self, params, idx):
        A = self.A[idx]
        return [A.T @ (A @ params[0] - self.y[idx]) / len(idx)]

    def full_grad(self, params):
        return [self.A.T @ (self.A @ params[0] - self.y) / self.n]

    def loss(self, params):
        r = self.A @ params[0] - self.y
        return float(r @ r) / (2 * self.n)

    def gap(self, params):
        """``f(w) - f* = g*·e + e^T H e / 2`` for ``e = w - w*`` (exact for a quadratic, no
        cancellation); ``g* = ∇f(w*)`` as computed in float64 (about 1e-16)."""
        e = params[0] - self.w_star[0]
        return float(self._g_star @ e + e @ self.H @ e / 2)

    def init(self):
        return [np.zeros(self.d)]


class Logistic:
    """L2-regularized logistic regression, ``f(w, b) = mean log(1 + exp(-y_i (x_i·w + b))) +
    lam/2 (||w||^2 + b^2)`` with labels ``y_i = ±1``; two tensors ``[w, b]``. The intercept is
    regularized too, so ``f`` is ``lam``-strongly convex in every direction.

    Args:
        x, y: features (N x d) and ±1 labels; lam: the regularization (the strong convexity).
        name, describe: labels for tables and plots.
    """

    def __init__(self, x, y, lam, name="logistic", describe=""):
        self.x, self.y, self.lam = np.asarray(x, float), np.asarray(y, float), float(lam)
        self.n, self.d = self.x.shape
        self.name = name
        X1 = np.hstack([self.x, np.ones((self.n, 1))])
        #: the gradient's global Lipschitz constant: sigmoid' <= 1/4
        self.L_smooth = float(np.linalg.eigvalsh(X1.T @ X1 / self.n)[-1] / 4 + lam)
        self.w_star = self._newton()
        self.f_star = self.loss(self.w_star)
        eig = np.linalg.eigvalsh(self._hessian(self.w_star))
        self.mu, self.L = float(eig[0]), float(eig[-1])
        self.kappa = self.L / self.mu
        self.describe = (f"{describe}, N={self.n}, d={self.d}, lam={lam:g}, kappa at w*="
                         f"{self.kappa:.1f}")

    @classmethod
    def synthetic(cls, n=500, d=20, lam=1e-2, seed=0):
        rng = np.random.default_rng([seed, 202])
        x = rng.standard_normal((n, d)) * np.geomspace(1.0, 0.2, d)
        w0 = rng.standard_normal(d)
        p = 1 / (1 + np.exp(-(x @ w0)))
        y = np.where(rng.random(n) < p, 1.0, -1.0)
        return cls(x, y, lam, "logistic", "synthetic logistic regression")

    @classmethod
    def digits(cls, digit=3, lam=5e-2):
        """The 1797 UCI digits, ``digit`` vs rest; pixels standardized (constant pixels dropped)."""
        from fpsim.training.data import _digits_raw

        images, labels = _digits_raw()
        x = images.reshape(len(labels), -1).astype(np.float64)
        sd = x.std(axis=0)
        keep = sd > 0
        x = (x[:, keep] - x[:, keep].mean(axis=0)) / sd[keep]
        y = np.where(labels == digit, 1.0, -1.0)
        return cls(x, y, lam, "digits", f"digits {digit}-vs-rest logistic regression")

    def _margins(self, params, idx=None):
        x = self.x if idx is None else self.x[idx]
        y = self.y if idx is None else self.y[idx]
        return y * (x @ params[0] + params[1][0]), x, y

    def grad(self, params, idx):
        m, x, y = self._margins(params, idx)
        s = -y * 0.5 * (1 - np.tanh(m / 2))  # -y sigmoid(-m), without overflow
        return [x.T @ s / len(s) + self.lam * params[0],
                np.array([s.mean() + self.lam * params[1][0]])]

    def full_grad(self, params):
        return self.grad(params, slice(None))

    def loss(self, params):
        m, _, _ = self._margins(params)
        return float(np.mean(np.logaddexp(0, -m))
                     + self.lam / 2 * (params[0] @ params[0] + params[1][0] ** 2))

    def gap(self, params):
        """``f(w) - f*`` without cancellation, from ``e = w - w*`` and the exact expansion
        ``f(w) - f* = g*·e + mean φ_i(m*_i - m_i) + lam/2 ||e||^2``: per example
        ``log(1+e^-m) - log(1+e^-m*) = log1p(s expm1(x))`` with ``x = m* - m`` (formed from ``e``)
        and ``s = sigmoid(-m*)``, whose linear part ``-s x`` is in ``g*·e``, so ``φ(x) =
        log1p(s expm1(x)) - s x >= 0`` (its Taylor series ``s(1-s) x^2/2 + s(1-s)(1-2s) x^3/6``
        for ``|x| < 1e-4``). ``g* = ∇f(w*)`` as computed in float64 (a few 1e-17): the
        gap's floor is about ``||g*|| ||e||``."""
        ws, bs = self.w_star
        ew, eb = params[0] - ws, params[1][0] - bs[0]
        x = -self.y * (self.x @ ew + eb)  # m* - m
        ms = self.y * (self.x @ ws + bs[0])
        s = 0.5 * (1 - np.tanh(ms / 2))  # sigmoid(-m*)
        small = np.abs(x) < 1e-4
        series = s * (1 - s) * x * x / 2 + s * (1 - s) * (1 - 2 * s) * x ** 3 / 6
        with np.errstate(over="ignore", invalid="ignore"):
            direct = np.log1p(s * np.expm1(x)) - s * x
        phi = np.where(small, series, direct)
        gs = self.full_grad(self.w_star)
        lin = float(gs[0] @ ew + gs[1][0] * eb)
        return float(np.mean(phi) + self.lam / 2 * (ew @ ew + eb * eb) + lin)

    def _hessian(self, params):
        m, x, _ = self._margins(params)
        p = 0.5 * (1 - np.tanh(m / 2))
        wgt = p * (1 - p)
        X = np.hstack([x, np.ones((self.n, 1))])
        return X.T @ (X * wgt[:, None]) / self.n + self.lam * np.eye(self.d + 1)

    def _newton(self):
        """Newton's method from 0 until the step stops shrinking (machine precision)."""
        v = np.zeros(self.d + 1)
        last = math.inf
        for _ in range(100):
            params = [v[:-1], v[-1:]]
            g = np.concatenate(self.full_grad(params))
            step = np.linalg.solve(self._hessian(params), g)
            size = float(np.linalg.norm(step))
            v = v - step
            if size == 0 or (size < 1e-14 * (1 + np.linalg.norm(v)) and size >= last / 2):
                break
            last = size
        return [v[:-1].copy(), v[-1:].copy()]

    def init(self):
        return [np.zeros(self.d), np.zeros(1)]


def problem(name: str, seed: int = 0):
    """The named problem: ``lsq``, ``logistic`` (synthetic) or ``digits`` (logistic, real)."""
    if name == "lsq":
        return LeastSquares(seed=seed)
    if name == "logistic":
        return Logistic.synthetic(seed=seed)
    if name == "digits":
        return Logistic.digits()
    raise ValueError(f"problem={name!r} is invalid: choose lsq, logistic or digits")


#: Per problem: step size as a fraction of 1/L (L: the gradient's Lipschitz constant), epoch
#: length in passes over the data (T = passes·N/batch minibatches), minibatch size.
SETTINGS = {
    "lsq": dict(lr_frac=0.25, passes=4, batch=10),
    "logistic": dict(lr_frac=0.25, passes=4, batch=10),
    "digits": dict(lr_frac=0.25, passes=2, batch=50),
}


@dataclasses.dataclass
class Setup:
    """The shared settings of one problem's runs (every method uses the same)."""

    lr: float
    T: int
    batch: int
    mu: float
    fixed_delta: dict  #: bits -> per-tensor fixed δ of LP-SVRG / LP-SGD


def setup(prob, bits_list, settings=None) -> Setup:
    """Step size ``lr_frac / L``, ``T = passes·N/batch`` minibatches, HALP's ``mu`` = the true
    strong-convexity constant (the smallest Hessian eigenvalue at w*), and the fixed grids'
    δ = ``1.5 max|w*_l| / (2^(b-1) - 1)`` per tensor: the finest grid that still holds the
    solution with a margin, a choice generous to the fixed-δ baselines (it uses w*)."""
    s = {**SETTINGS.get(prob.name, SETTINGS["lsq"]), **(settings or {})}
    T = max(1, int(round(s["passes"] * prob.n / s["batch"])))
    fixed = {b: [1.5 * float(np.max(np.abs(w))) / ((1 << (b - 1)) - 1) for w in prob.w_star]
             for b in bits_list}
    return Setup(lr=s["lr_frac"] / prob.L_smooth, T=T, batch=s["batch"], mu=prob.mu,
                 fixed_delta=fixed)


def make(method, st: Setup, bits, seed, rounding="sr", mu=None):
    """The optimizer ``method`` with the problem's :class:`Setup`."""
    common = dict(lr=st.lr, T=st.T, batch_size=st.batch, seed=seed)
    if method == "svrg":
        return SVRG(**common)
    if method == "halp":
        return HALP(**common, bits=bits, mu=st.mu if mu is None else mu, rounding=rounding)
    cls = LPSVRG if method == "lp-svrg" else LPSGD
    return cls(**common, bits=bits, delta=st.fixed_delta[bits], rounding=rounding)


def run_one(prob, opt, epochs):
    return opt.run(prob, prob.init(), epochs, w_star=prob.w_star, f_star=prob.f_star)


# ------------------------------------------------------------------------------- statistics
def _exp10(x):
    with np.errstate(over="ignore"):
        return float(np.power(10.0, x))


def mean_ci(values, level=0.95):
    """Geometric mean and its Student-t interval ``(mean, lo, hi)``, computed on log10 (the
    distances span many decades; an exact 0 counts as ``LOG_FLOOR``)."""
    from scipy import stats

    v = np.log10(np.maximum(np.asarray(values, float), LOG_FLOOR))
    m = float(v.mean())
    if len(v) < 2:
        return _exp10(m), _exp10(m), _exp10(m)
    h = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return _exp10(m), _exp10(m - h), _exp10(m + h)


def _fmt(x):
    return f"{x:.2e}"


def _ci_text(values):
    m, lo, hi = mean_ci_linear(values)
    return f"{_fmt(m)} [{_fmt(lo)}, {_fmt(hi)}]"


# ------------------------------------------------------------------------------- figures
def _figure(figsize):
    from fpsim.analysis.histogram import new_figure

    return new_figure(figsize)


def _save(fig, path):
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def plot_curves(curves, prob, bits_list, out, key="dist"):
    """One panel per bit width: the median (line) and min..max band over seeds of ``key``."""
    fig = _figure((4.6 * len(bits_list), 3.8))
    axes = fig.subplots(1, len(bits_list), sharey=True, squeeze=False)[0]
    ylabel = "||w - w*||" if key == "dist" else "f(w) - f*"
    for ax, b in zip(axes, bits_list):
        for m in METHODS:
            runs = curves.get((b, m))
            if not runs:
                continue
            lo, hi = PLOT_RANGE[key]
            arr = np.clip(np.nan_to_num(np.array([r[key] for r in runs], float), nan=hi), lo, hi)
            ep = np.arange(arr.shape[1])
            ax.semilogy(ep, np.median(arr, 0), color=COLORS[m], label=LABELS[m], lw=1.6,
                        ls="--" if m == "lp-svrg" else "-")
            ax.fill_between(ep, arr.min(0), arr.max(0), color=COLORS[m], alpha=0.15, lw=0)
        ax.set_title(f"{b}-bit" if b else "")
        ax.set_ylim(*PLOT_RANGE[key])
        ax.set_xlabel("epoch (full gradient + T minibatches)")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel(ylabel)
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle(f"{prob.describe}: {ylabel}, median and range over seeds", fontsize=10)
    return _save(fig, out)


def plot_mu(sweep, prob, out):
    """Final distance (median, range) vs mu, with the saturated fraction on a second axis."""
    fig = _figure((6.4, 4.0))
    ax = fig.subplots()
    mus = np.array(sorted(sweep))
    d = [np.clip(np.array(sweep[m]["dist"], float), *PLOT_RANGE["dist"]) for m in mus]
    ax.loglog(mus, [np.median(x) for x in d], "o-", color="tab:blue", label="final ||w - w*||")
    ax.fill_between(mus, [x.min() for x in d], [x.max() for x in d], color="tab:blue", alpha=0.15)
    ax.axvline(prob.mu, color="gray", ls="--", lw=1)
    ax.text(prob.mu, ax.get_ylim()[1], " true μ", va="top", fontsize=8, color="gray")
    ax.set_xlabel("μ (HALP's scale hyperparameter)")
    ax.set_ylabel("final ||w - w*|| (median, range)")
    ax.grid(True, which="major", alpha=0.3)
    ax2 = ax.twinx()
    sat = [np.mean(sweep[m]["sat_frac"]) for m in mus]
    ax2.semilogx(mus, np.maximum(sat, 0), "s--", color="tab:red", label="saturated fraction")
    ax2.set_ylabel("saturated fraction of roundings", color="tab:red")
    ax2.set_ylim(-0.02, max(0.1, 1.1 * max(sat)))
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="center left")
    fig.suptitle(f"HALP 8-bit μ sweep: {prob.describe}", fontsize=9)
    return _save(fig, out)


def plot_ablation(curves, prob, out):
    fig = _figure((6.0, 3.8))
    ax = fig.subplots()
    for (label, color), runs in zip((("HALP sr", "tab:blue"), ("HALP rne", "tab:green"),
                                     ("SVRG fp64", "black")), curves):
        arr = np.clip(np.array([r["dist"] for r in runs], float), *PLOT_RANGE["dist"])
        ep = np.arange(arr.shape[1])
        ax.semilogy(ep, np.median(arr, 0), color=color, label=label)
        ax.fill_between(ep, arr.min(0), arr.max(0), color=color, alpha=0.15, lw=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel("||w - w*||")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(f"HALP 8-bit, stochastic vs nearest rounding: {prob.describe}", fontsize=9)
    return _save(fig, out)


def plot_network(net, out):
    fig = _figure((10, 3.8))
    a1, a2 = fig.subplots(1, 2)
    for m, runs in net["curves"].items():
        loss = np.array([r["loss"] for r in runs])
        acc = np.array([r["acc"] for r in runs])
        ep = np.arange(loss.shape[1])
        c = NET_COLORS[m]
        a1.semilogy(ep, loss.mean(0), color=c, label=NET_LABELS[m])
        a1.fill_between(ep, loss.min(0), loss.max(0), color=c, alpha=0.15, lw=0)
        a2.plot(ep, 100 * acc.mean(0), color=c, label=NET_LABELS[m])
        a2.fill_between(ep, 100 * acc.min(0), 100 * acc.max(0), color=c, alpha=0.15, lw=0)
    a1.set_xlabel("epoch")
    a1.set_ylabel("training loss (full batch)")
    a2.set_xlabel("epoch")
    a2.set_ylabel("test accuracy (%)")
    a2.set_ylim(max(0, 100 * net["acc_floor"]), 100)
    for a in (a1, a2):
        a.grid(True, alpha=0.3)
    a1.legend(fontsize=8)
    fig.suptitle(f"digits MLP 64-32-10, first layer's weight in {net['bits']}-bit "
                 f"({len(next(iter(net['curves'].values())))} seeds, mean and range)", fontsize=9)
    return _save(fig, out)


# ------------------------------------------------------------------------------- the network
NET_LABELS = {"svrg": "SVRG fp64", "halp": "HALP (layer 1 offsets 8-bit)",
              "lp-sgd": "LP-SGD (layer 1 weight 8-bit)", "sgd": "SGD fp64"}
NET_COLORS = {"svrg": "black", "halp": "tab:blue", "lp-sgd": "tab:red", "sgd": "gray"}


class DigitsMLP:
    """Cross-entropy of an MLP ``64 -> hidden -> 10`` (ReLU) in fpsim's engine, float64, on the
    digits training split; ``params = [W1, b1, W2, b2]``."""

    name = "digits-mlp"

    def __init__(self, hidden=32, seed=0):
        from fpsim import engine as E
        from fpsim.models.mlp import MLP
        from fpsim.training import data

        ds = data.load("digits", seed=0)
        self.E = E
        self.x = ds.x_train.reshape(len(ds.y_train), -1).astype(np.float64)
        self.y = ds.y_train
        self.x_test = ds.x_test.reshape(len(ds.y_test), -1).astype(np.float64)
        self.y_test = ds.y_test
        self.n = len(self.y)
        self.model = MLP(self.x.shape[1], 10, hidden=(hidden,), seed=seed)
        self.params = [p for _, p in self.model.named_parameters()]
        self.names = [n for n, _ in self.model.named_parameters()]
        for p in self.params:
            p.data = p.data.astype(np.float64)

    def init(self):
        return [p.data.copy() for p in self.params]

    def _forward(self, params, x, y, grad):
        E = self.E
        for p, v in zip(self.params, params):
            p.data = np.asarray(v, dtype=np.float64)
            p.grad = None
        if not grad:
            with E.no_grad():
                out = self.model(E.Tensor(x))
            return out
        out = self.model(E.Tensor(x))
        loss = E.cross_entropy(out, y)
        loss.backward()
        return [np.array(p.grad, dtype=np.float64) for p in self.params]

    def grad(self, params, idx):
        return self._forward(params, self.x[idx], self.y[idx], True)

    def full_grad(self, params):
        return self._forward(params, self.x, self.y, True)

    def loss(self, params):
        out = self._forward(params, self.x, self.y, False).data
        z = out - out.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        return float(-logp[np.arange(self.n), self.y].mean())

    def accuracy(self, params):
        out = self._forward(params, self.x_test, self.y_test, False).data
        return float((out.argmax(1) == self.y_test).mean())


def run_network(seeds, epochs=8, bits=8, quick=False, lr=0.1, batch=32, mu=1.0):
    """SVRG fp64, HALP on the first layer's weight (offsets on ``IntGrid(bits, δ)``, per-tensor
    δ), LP-SGD with that weight on a fixed grid (δ from the initial weights' range, 1.5x), and
    float64 SGD, on the digits MLP; returns curves of loss and test accuracy per seed."""
    curves = {m: [] for m in ("svrg", "halp", "lp-sgd", "sgd")}
    t0 = time.perf_counter()
    for s in seeds:
        prob = DigitsMLP(seed=s)
        w0 = prob.init()
        T = max(1, prob.n // batch)
        layer = prob.names.index("net.1.weight")
        delta = 1.5 * float(np.max(np.abs(w0[layer]))) / ((1 << (bits - 1)) - 1)
        w0[layer] = _on_grid(w0[layer], bits, delta)  # every method starts on the grid
        opts = {
            "svrg": SVRG(lr, T, batch, seed=s),
            "halp": HALP(lr, T, batch, seed=s, bits=bits, mu=mu, tensors=[layer]),
            "lp-sgd": LPSGD(lr, T, batch, seed=s, bits=bits, delta=delta, tensors=[layer]),
            "sgd": LPSGD(lr, T, batch, seed=s, bits=bits, delta=delta, tensors=[]),
        }
        for m, opt in opts.items():
            h = opt.run(prob, w0, epochs)
            curves[m].append(dict(loss=h.loss, acc=[prob.accuracy(p) for p in h.params],
                                  overflow=float(np.sum(h.overflow)),
                                  rounded=float(np.sum(h.rounded))))
    return dict(curves=curves, bits=bits, epochs=epochs, seeds=list(seeds), lr=lr, batch=batch,
                mu=mu, seconds=time.perf_counter() - t0, acc_floor=0.5)


def _on_grid(w, bits, delta):
    """``w`` rounded to nearest onto ``IntGrid(bits, delta)`` (so every method starts there)."""
    import fpsim

    return np.asarray(fpsim.quantize(w, fpsim.IntGrid(bits, delta), rounding="rne",
                                     overflow="saturate"), dtype=np.float64).reshape(w.shape)


# ------------------------------------------------------------------------------- the study
@dataclasses.dataclass
class StudyConfig:
    """What :func:`run_study` runs (the defaults are the documented full run)."""

    problems: tuple = ("lsq", "logistic", "digits")
    bits: tuple = (4, 8, 16)
    seeds: int = 5
    epochs: int = 30
    mu_factors: tuple = (1e-2, 1e-1, 1, 10, 100, 1e3, 1e4)
    sweep_seeds: int = 3
    network: bool = True
    net_epochs: int = 15
    net_seeds: int = 5
    quick: bool = False

    @classmethod
    def quick_config(cls, **kw):
        base = dict(problems=("lsq",), bits=(8,), seeds=2, epochs=6, mu_factors=(1.0, 1e3),
                    sweep_seeds=2, network=False, quick=True)
        base.update({k: v for k, v in kw.items() if v is not None})
        return cls(**base)


def run_study(cfg: StudyConfig, out: str, log=print) -> dict:
    """Run the study, write figures and tables under ``out``; returns the summary dict."""
    os.makedirs(out, exist_ok=True)
    t_start = time.perf_counter()
    seeds = list(range(cfg.seeds))
    summary = {"config": dataclasses.asdict(cfg), "problems": {}, "figures": []}
    rows = []
    for name in cfg.problems:
        t0 = time.perf_counter()
        prob = problem(name)
        st = setup(prob, cfg.bits)
        log(f"[{name}] {prob.describe}; lr={st.lr:.3g}, T={st.T}, batch={st.batch}, mu={st.mu:.3g}")
        curves = {}
        ps = {"describe": prob.describe, "kappa": prob.kappa, "mu": prob.mu, "L": prob.L,
              "n": prob.n, "lr": st.lr, "T": st.T, "batch": st.batch,
              "fixed_delta": {str(b): v for b, v in st.fixed_delta.items()}, "final": {},
              "curves": {}}
        svrg_runs = [run_one(prob, make("svrg", st, None, s), cfg.epochs) for s in seeds]
        for b in cfg.bits:
            for m in METHODS:
                hs = svrg_runs if m == "svrg" else [run_one(prob, make(m, st, b, s), cfg.epochs)
                                                    for s in seeds]
                curves[(b, m)] = [dict(dist=h.dist, gap=h.gap, loss=h.loss) for h in hs]
                dist = [h.dist[-1] for h in hs]
                gap = [max(h.gap[-1], 0.0) for h in hs]
                over = [float(np.sum(h.overflow)) for h in hs]
                total = [float(np.sum(h.rounded)) for h in hs]
                md, lo, hi = mean_ci_linear(dist)
                ps["final"][f"{b}/{m}"] = dict(dist_mean=md, dist_ci=[lo, hi],
                                               dist=dist, gap=gap, overflow=over, rounded=total)
                ps["curves"][f"{b}/{m}"] = curves[(b, m)]
                rows.append(dict(problem=name, bits=b, method=m, seeds=len(seeds),
                                 dist_mean=md, dist_ci_lo=lo, dist_ci_hi=hi,
                                 dist_min=min(dist), dist_max=max(dist),
                                 gap_median=float(np.median(gap)),
                                 overflow_mean=float(np.mean(over)),
                                 rounded_mean=float(np.mean(total))))
        for key in ("dist", "gap"):
            f = plot_curves(curves, prob, list(cfg.bits), os.path.join(out, f"{name}_{key}.png"),
                            key)
            summary["figures"].append(f)
        # mu sweep (8-bit, or the single width in a quick run) and the SR/RNE ablation
        b_sweep = 8 if 8 in cfg.bits else cfg.bits[0]
        sweep = {}
        for fac in cfg.mu_factors:
            hs = [run_one(prob, make("halp", st, b_sweep, s, mu=fac * prob.mu), cfg.epochs)
                  for s in seeds[:cfg.sweep_seeds]]
            sweep[fac * prob.mu] = dict(
                factor=fac, dist=[h.dist[-1] for h in hs],
                overflow=[float(np.sum(h.overflow)) for h in hs],
                sat_frac=[float(np.sum(h.overflow) / max(1, np.sum(h.rounded))) for h in hs])
        ps["mu_sweep"] = {f"{m:.6g}": v for m, v in sweep.items()}
        summary["figures"].append(plot_mu(sweep, prob, os.path.join(out, f"{name}_mu.png")))
        abl = [[run_one(prob, make("halp", st, b_sweep, s, rounding=r), cfg.epochs)
                for s in seeds[:cfg.sweep_seeds]] for r in ("sr", "rne")]
        ps["ablation"] = {r: dict(dist=[h.dist[-1] for h in hs],
                                  inexact=[float(np.sum(h.inexact)) for h in hs])
                          for r, hs in zip(("sr", "rne"), abl)}
        abl_curves = [[dict(dist=h.dist) for h in hs] for hs in abl]
        abl_curves.append(curves[(cfg.bits[0], "svrg")])
        ps["ablation_curves"] = abl_curves
        summary["figures"].append(plot_ablation(abl_curves, prob,
                                                os.path.join(out, f"{name}_sr_rne.png")))
        ps["seconds"] = time.perf_counter() - t0
        summary["problems"][name] = ps
        log(f"[{name}] done in {ps['seconds']:.1f} s")
    if cfg.network:
        net = run_network(list(range(cfg.net_seeds)), epochs=cfg.net_epochs)
        summary["network"] = net
        summary["figures"].append(plot_network(net, os.path.join(out, "network.png")))
        log(f"[network] done in {net['seconds']:.1f} s")
    summary["seconds"] = time.perf_counter() - t_start
    _write_tables(summary, rows, out)
    return summary


def _write_tables(summary, rows, out):
    with open(os.path.join(out, "final.csv"), "w", newline="") as fh:
        if rows:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    with open(os.path.join(out, "curves.json"), "w") as fh:
        json.dump(summary, fh, default=float)
    with open(os.path.join(out, "summary.md"), "w") as fh:
        fh.write(summary_markdown(summary))


def summary_markdown(summary) -> str:
    """The markdown tables of a :func:`run_study` result."""
    cfg = summary["config"]
    lines = [f"# HALP study ({cfg['seeds']} seeds, {cfg['epochs']} epochs"
             f"{', quick' if cfg['quick'] else ''}; {summary['seconds']:.0f} s)", ""]
    for name, ps in summary["problems"].items():
        lines += [f"## {ps['describe']}", "",
                  f"lr = {ps['lr']:.4g}, T = {ps['T']} minibatches of {ps['batch']}, HALP mu = "
                  f"{ps['mu']:.4g}; fixed δ per bits: "
                  + ", ".join(f"{b}: {', '.join(f'{d:.3g}' for d in v)}"
                              for b, v in ps["fixed_delta"].items()), "",
                  "Final ‖w − w*‖: mean [95% Student-t interval] over seeds, and min .. max; "
                  "f − f*: median; saturated: roundings that saturated (mean per run)", "",
                  "| bits | method | final ‖w − w*‖ | min .. max | f - f* (median) | saturated |",
                  "|---|---|---|---|---|---|"]
        for key, f in ps["final"].items():
            b, m = key.split("/")
            lines.append(f"| {b} | {LABELS[m]} | {_fmt(f['dist_mean'])} [{_fmt(f['dist_ci'][0])}"
                         f", {_fmt(f['dist_ci'][1])}] | {_fmt(min(f['dist']))} .. "
                         f"{_fmt(max(f['dist']))} | {_fmt(float(np.median(f['gap'])))} | "
                         f"{np.mean(f['overflow']):.0f} |")
        lines += ["", f"mu sweep (HALP, {len(next(iter(ps['mu_sweep'].values()))['dist'])} seeds"
                  "; final ‖w − w*‖ mean [95% t interval], saturated fraction of roundings):", "",
                  "| mu / true mu | mu | final ‖w − w*‖ | saturated fraction |", "|---|---|---|---|"]
        for mu, v in ps["mu_sweep"].items():
            lines.append(f"| {v['factor']:g} | {float(mu):.3g} | {_ci_text(v['dist'])} | "
                         f"{np.mean(v['sat_frac']):.2e} |")
        lines += ["", "SR vs RNE (HALP): final ‖w − w*‖, mean [95% t interval]", ""]
        for r, v in ps["ablation"].items():
            lines.append(f"* {r}: {_ci_text(v['dist'])}")
        lines.append("")
    net = summary.get("network")
    if net:
        lines += [f"## digits MLP, first layer {net['bits']}-bit ({len(net['seeds'])} seeds, "
                  f"{net['epochs']} epochs, lr {net['lr']}, batch {net['batch']}, mu {net['mu']}; "
                  f"{net['seconds']:.0f} s)", "",
                  "| method | final train loss | final test accuracy (%) | saturated |",
                  "|---|---|---|---|"]
        for m, runs in net["curves"].items():
            lm, llo, lhi = mean_ci_linear([r["loss"][-1] for r in runs])
            am, alo, ahi = mean_ci_linear([100 * r["acc"][-1] for r in runs])
            lines.append(f"| {NET_LABELS[m]} | {lm:.4f} [{llo:.4f}, {lhi:.4f}] | {am:.2f} "
                         f"[{alo:.2f}, {ahi:.2f}] | {np.mean([r['overflow'] for r in runs]):.0f} |")
        lines.append("")
    return "\n".join(lines)
