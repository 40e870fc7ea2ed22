"""Optimizers over master weights, and learning-rate schedules.

The parameters' ``data`` arrays are the master weights (float32 or float64); an optimizer
updates them in their own dtype from ``grad`` (already unscaled by the training loop). Optimizer
state (momentum, Adam moments) is kept in the master dtype; a precision policy may round it
after each update through :attr:`Optimizer.state_hook` (``hook(param_name, key, array)``
returning the array to keep), which is how low-precision optimizer state is emulated.
"""

from __future__ import annotations

import math

import numpy as np


class Optimizer:
    """Base: ``step()`` updates every parameter that has a gradient.

    Args:
        params: ``(name, Parameter)`` pairs (``model.named_parameters()``).
        lr: base learning rate.
        schedule: optional ``schedule(step) -> factor`` (see :func:`cosine`, :func:`step_decay`);
            the learning rate of update ``t`` (0-based) is ``lr * schedule(t)``.
    """

    def __init__(self, params, lr: float, schedule=None):
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got no parameters")
        names = [n for n, _ in self.params]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"optimizer got parameters with the same name: {dup}")
        if not lr > 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        self.base_lr = float(lr)
        self.schedule = schedule
        self.t = 0  #: updates done so far
        self.state: dict[str, dict[str, np.ndarray]] = {n: {} for n, _ in self.params}
        self.state_hook = None

    @property
    def lr(self) -> float:
        """Learning rate of the next update."""
        return self.base_lr * (1.0 if self.schedule is None else self.schedule(self.t))

    def step(self) -> None:
        """One update of every parameter with a gradient."""
        lr = self.lr
        self.t += 1
        for name, p in self.params:
            if p.grad is not None:
                if p.grad.shape != p.data.shape:
                    raise ValueError(f"gradient of {name!r} has shape {p.grad.shape}, the "
                                     f"parameter {p.data.shape}")
                self._update(name, p, p.grad.astype(p.data.dtype, copy=False), lr)

    def _buffer(self, name, key, like):
        st = self.state[name]
        if key not in st:
            st[key] = np.zeros_like(like)
        return st[key]

    def _keep(self, name, key, value):
        """Store optimizer state (rounded by the policy's hook, if any)."""
        self.state[name][key] = value if self.state_hook is None else self.state_hook(name, key, value)
        return self.state[name][key]

    def zero_grad(self) -> None:
        for _, p in self.params:
            p.grad = None

    def state_dict(self) -> dict:
        """Update count and state arrays (copies), for checkpoints."""
        return {"t": self.t, "state": {n: {k: v.copy() for k, v in st.items()}
                                       for n, st in self.state.items()}}

    def load_state_dict(self, sd: dict) -> None:
        """Restore :meth:`state_dict` output (parameter names must match)."""
        if set(sd["state"]) != set(self.state):
            raise ValueError("optimizer state names do not match the parameters")
        shapes = {n: p.data.shape for n, p in self.params}
        for n, st in sd["state"].items():
            for k, v in st.items():
                if np.shape(v) != shapes[n]:
                    raise ValueError(f"optimizer state {n!r}/{k!r} has shape {np.shape(v)}, "
                                     f"the parameter {shapes[n]}")
        self.t = int(sd["t"])
        self.state = {n: {k: np.array(v) for k, v in st.items()} for n, st in sd["state"].items()}


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and L2 weight
    decay, as in PyTorch: ``g += wd * w; b = mu * b + g; w -= lr * (g + mu * b if nesterov
    else b)`` (plain ``w -= lr * g`` without momentum)."""

    def __init__(self, params, lr: float = 0.1, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, schedule=None):
        super().__init__(params, lr, schedule)
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay

    def _update(self, name, p, g, lr):
        dt = p.data.dtype.type
        if self.weight_decay:
            g = g + dt(self.weight_decay) * p.data
        if self.momentum:
            first = "momentum" not in self.state[name]
            b = g.copy() if first else dt(self.momentum) * self.state[name]["momentum"] + g
            b = self._keep(name, "momentum", b)
            g = g + dt(self.momentum) * b if self.nesterov else b
        p.data -= dt(lr) * g


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; ``weight_decay`` adds ``wd * w`` to the
    gradient (L2, as PyTorch's Adam). ``m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    w -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)``."""

    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, schedule=None):
        super().__init__(params, lr, schedule)
        self.b1, self.b2 = betas
        self.eps, self.weight_decay = eps, weight_decay

    def _update(self, name, p, g, lr):
        dt = p.data.dtype.type
        if self.weight_decay and not self.decoupled:
            g = g + dt(self.weight_decay) * p.data
        if self.weight_decay and self.decoupled:
            p.data *= dt(1 - lr * self.weight_decay)
        m = self._keep(name, "m", dt(self.b1) * self._buffer(name, "m", g) + dt(1 - self.b1) * g)
        v = self._keep(name, "v", dt(self.b2) * self._buffer(name, "v", g) + dt(1 - self.b2) * g * g)
        t = self.t
        mhat = m / dt(1 - self.b1 ** t)
        vhat = v / dt(1 - self.b2 ** t)
        p.data -= dt(lr) * mhat / (np.sqrt(vhat) + dt(self.eps))


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): ``w *= 1 - lr * wd`` before the
    Adam update."""

    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, schedule=None):
        super().__init__(params, lr, betas, eps, weight_decay, schedule)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


# -- learning-rate schedules: step -> factor ---------------------------------------------------


def constant():
    """Factor 1 at every step."""
    return lambda t: 1.0


def step_decay(every: int, gamma: float = 0.1):
    """Multiply by ``gamma`` every ``every`` steps."""
    return lambda t: gamma ** (t // every)


def cosine(total: int, warmup: int = 0, floor: float = 0.0):
    """Linear warm-up over ``warmup`` steps, then cosine decay from 1 to ``floor`` at ``total``."""
    def f(t):
        if t < warmup:
            return (t + 1) / warmup
        frac = min(1.0, (t - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac))
    return f


SCHEDULES = {"constant": constant, "step": step_decay, "cosine": cosine}

from fpsim.training.halp import HALP, LPSGD, LPSVRG, SVRG  # noqa: E402,F401  (fpsim.optim.HALP)
