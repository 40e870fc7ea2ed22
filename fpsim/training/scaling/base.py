"""The loss-scaler protocol (one small strategy object per algorithm).

The training loop talks to a scaler through these methods only, on the model of PyTorch's
``GradScaler`` (``scale`` / ``unscale_`` / ``step`` / ``update``):

=========================  ===================================================================
``attach(model)``          place the scaler's ops in the model (per-site scalers; a global
                           scaler places none); returns the names of its sites
``loss_scale()``           the scale ``S`` the loss is multiplied by (the seed of backward, and
                           the tag the cotangents carry)
``merge(a, b)``            combine two cotangents ``(g, tag)`` of one tensor that arrive with
                           different tags (only per-site scalers make them differ)
``unscale(grads)``         the parameter gradients at true magnitude (global scalers multiply
                           by ``float32(1/S)``; per-site scalers unscaled them during backward)
``report()``               the step's per-site scales ``{site: (carried, local)}``, or None
``update(stats) -> bool``  adapt to the step; True: apply the optimizer step
``suspended()``            a context in which the scaler's ops pass values through and its state
                           does not change (the float32 shadow pass)
``state_dict()`` /         the state for checkpoints
``load_state_dict(d)``
=========================  ===================================================================

:class:`Scaler` implements all of them for a global scaler; a subclass overrides
:meth:`loss_scale` and :meth:`update`. A per-site scaler (:class:`~.adaptive.AdaptiveScaler`)
overrides the others it needs. Nothing in the loop asks which kind a scaler is.
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np


#: The methods the training loop calls on a scaler.
PROTOCOL = ("attach", "loss_scale", "merge", "unscale", "report", "update", "suspended",
            "state_dict", "load_state_dict")


def implements_protocol(obj) -> bool:
    """True when ``obj`` has every method of :data:`PROTOCOL` (a :class:`Scaler` subclass, or
    any object written to the protocol)."""
    return all(callable(getattr(obj, m, None)) for m in PROTOCOL)


@dataclasses.dataclass
class StepStats:
    """What a scaler learns about one step.

    Attributes:
        found_inf: some parameter gradient (after unscaling) is Inf or NaN.
        summary: the step's :class:`~fpsim.training.instrument.StepSummary` (per-site Stats),
            or None without instrumentation.
    """

    found_inf: bool
    summary: object = None


class Scaler:
    """Base class of loss scalers: a global scaler whose scale is :meth:`loss_scale`.

    Every gradient carries the factor ``S``; :meth:`unscale` multiplies the parameter gradients
    by ``float32(1 / float64(S))`` before the finiteness check, as PyTorch's GradScaler does.
    """

    name = "scaler"

    def attach(self, model) -> list[str]:
        """Place the scaler's ops in ``model``; a global scaler needs none (returns [])."""
        return []

    def loss_scale(self) -> float:
        """The scale of the loss for this step."""
        raise NotImplementedError

    def merge(self, a, b):
        """Combine cotangents ``(g1, tag1)``, ``(g2, tag2)`` with different tags. A global
        scaler's cotangents all carry ``S``, so this is never needed: an error."""
        raise ValueError(f"the {self.name} loss scaler gives every cotangent the same scale; "
                         f"cotangents tagged {a[1]!r} and {b[1]!r} met (a per-site op outside "
                         "the scaler?)")

    def unscale(self, grads: list) -> list:
        """Parameter gradients (numpy arrays or None) at true magnitude: each multiplied in
        place by ``float32(1 / float64(S))`` when ``S != 1``. Returns ``grads``."""
        scale = float(self.loss_scale())
        if scale != 1.0:
            for g in grads:
                if g is not None:
                    g *= g.dtype.type(1.0 / np.float64(scale))
        return grads

    def report(self) -> dict | None:
        """Per-site scales of the step (None: a global scaler has none beyond ``S``)."""
        return None

    def notes(self) -> dict:
        """Optional (the loop asks only scalers that have it): this step's events worth a
        note in the run record, ``{site: one-line message}``; called before :meth:`update`."""
        return {}

    def update(self, stats: StepStats) -> bool:
        """Adapt to the step; return True to apply the optimizer step."""
        raise NotImplementedError

    @contextlib.contextmanager
    def suspended(self):
        """While inside, the scaler's ops pass values through and its state does not change.
        A global scaler places no ops, so there is nothing to suspend; ``S`` stays the seed."""
        yield self

    def state_dict(self) -> dict:
        """The scaler's state as a dict of numbers (for checkpoints)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output."""
        for k, v in state.items():
            setattr(self, k, type(getattr(self, k))(v))

    def describe(self) -> str:
        """A short label for reports."""
        return self.name
