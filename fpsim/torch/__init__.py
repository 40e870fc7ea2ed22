"""fpsim inside PyTorch: fpsim's exact roundings, Stats and policies on torch tensors and
modules (the optional extra ``fpsim[torch]``; ``import fpsim`` never imports torch).

- :func:`quantize`, :func:`encode`, :func:`decode` and the correctly rounded :func:`add`,
  :func:`sub`, :func:`mul`, :func:`div`, :func:`fma`, :func:`sqrt` take tensors and return
  tensors of the input's dtype and device, bit for bit the numpy path's values
  (:mod:`fpsim.torch.tensors`).
- :func:`cast` and :class:`Cast`: a rounding with a gradient: the forward value rounded, the
  incoming gradient rounded, straight through otherwise (:mod:`fpsim.torch.autograd`).
- :func:`apply_policy`: a precision policy's cast sites placed on a ``torch.nn.Module`` with
  hooks and parametrizations; with :func:`fpsim.recording` the per-site Stats fpsim's own
  engine records at the same sites (:mod:`fpsim.torch.policy`).
- :class:`LossScaling`: fpsim's global loss scalers (static, dynamic and its variants) driving a
  torch optimizer over float32 master weights (:mod:`fpsim.torch.scaling`).
- :class:`RunRecord`: a torch run's steps, per-site Stats and epochs written into an fpsim
  run-record database that ``fpsim report`` reads (:mod:`fpsim.torch.record`).
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError:  # pragma: no cover - exercised where torch is absent
    raise ImportError("fpsim.torch needs PyTorch: pip install 'fpsim[torch]' (the CPU build "
                      "is enough)") from None

from fpsim.torch.autograd import Cast, cast
from fpsim.torch.policy import PolicySites, apply_policy, remove_policy
from fpsim.torch.record import RunRecord
from fpsim.torch.scaling import LossScaling
from fpsim.torch.tensors import add, decode, div, encode, fma, mul, quantize, sqrt, sub

__all__ = ["Cast", "LossScaling", "PolicySites", "RunRecord", "add", "apply_policy", "cast", "decode", "div", "encode",
           "fma", "mul", "quantize", "remove_policy", "sqrt", "sub"]
