"""Run-time state of the cast sites, owned by whoever runs the steps.

A :class:`~fpsim.training.precision.Policy` is a declaration; what changes while a model trains
lives here: the step that keys stochastic rounding, the bypass of the float32 shadow pass, and the
capture of activation gradients. ``Policy.apply`` makes a :class:`RunContext` (or takes the one
the training loop passes) and every cast site reads it when it runs.

Steps. Inside ``with ctx.at_step(n):`` every cast uses step ``n`` — the training loop does this,
so a resumed run draws the same bits as an uninterrupted one. Outside such a block the context
counts for itself: each forward pass of the model's root in training mode starts a new step
(0, 1, 2, ...), so a hand-written loop gets fresh stochastic-rounding bits every step without
having to remember anything; evaluation passes (``model.eval()``) do not advance it.
"""

from __future__ import annotations

import contextlib


class RunContext:
    """Step, bypass and capture state of one run's cast sites.

    Attributes:
        seed: key of stochastic rounding (with site, role and step).
        bypass: True while every site passes values through unrounded (float32 shadow pass).
        capture: None, or a dict receiving each activation-gradient site's rounded cotangent.
        training: whether the root's latest forward pass ran in training mode.
    """

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self.bypass = False
        self.capture: dict | None = None
        self._explicit: int | None = None
        self._auto = -1  # the last step drawn by a root forward pass outside at_step
        self.training = True  # the mode of the root's latest forward pass

    @property
    def step(self) -> int:
        """The step the casts use now."""
        return self._explicit if self._explicit is not None else max(self._auto, 0)

    @contextlib.contextmanager
    def at_step(self, step: int):
        """Casts inside the block use ``step`` (restored afterwards; nests)."""
        if int(step) != step or step < 0:
            raise ValueError(f"a step is a non-negative integer, got {step!r}")
        old, self._explicit = self._explicit, int(step)
        try:
            yield self
        finally:
            self._explicit = old

    def forward_started(self, module) -> None:
        """Called by the root's first input hook: a training-mode forward pass outside
        :meth:`at_step` starts the next step. Every forward pass records whether it trains
        (:attr:`training`: stateful casts update only in training passes)."""
        self.training = bool(module.training)
        if self._explicit is None and module.training:
            self._auto += 1

    @contextlib.contextmanager
    def shadow(self):
        """A float32 shadow pass: inside, every site passes values through unrounded (and model
        products fall back to float32 BLAS); yields the dict that captures the activation
        gradients of that pass."""
        old = self.bypass, self.capture
        self.bypass, self.capture = True, {}
        try:
            yield self.capture
        finally:
            self.bypass, self.capture = old

    @contextlib.contextmanager
    def capturing(self):
        """Inside, each activation-gradient site stores its rounded cotangent in the yielded
        dict (site name -> array)."""
        old, self.capture = self.capture, {}
        try:
            yield self.capture
        finally:
            self.capture = old
