"""fpsim: a bit-exact simulator of low-precision floating point for deep-learning studies.

Public API only. Importing fpsim never imports ``numba.cuda``, and it imports neither Numba nor
scipy: the format descriptors, modes, flags and :class:`Stats` load eagerly (plain Python and
numpy), while everything backed by jitted kernels (``quantize``, the arithmetic, ``matmul``) and
the training stack (``engine``, ``nn``, ``optim``, ``precision``, ``instrument``) loads on first
access through the module ``__getattr__`` below. ``fpsim.quantize``, ``from fpsim import nn``
and ``import fpsim.nn``-style submodule access all keep working; only the first use pays the
import (and, for the kernels, Numba's cache load or compile).
"""

from __future__ import annotations

from fpsim import _interrupt

_interrupt.quiet_startup()  # (only when run as the fpsim command: Ctrl-C while loading exits 130)

import importlib  # noqa: E402

from fpsim.numerics import formats  # noqa: E402
from fpsim.numerics.format import Format  # noqa: E402
from fpsim.numerics.formats import format  # noqa: E402
from fpsim.numerics.modes import Event, Flag, Overflow, RoundMode  # noqa: E402
from fpsim.numerics.stats import Stats  # noqa: E402

__version__ = "0.1.0"

#: Lazily loaded public names: name -> (module, attribute or None for the module itself).
_LAZY = {
    "engine": ("fpsim.engine", None),
    "instrument": ("fpsim.training.instrument", None),
    "nn": ("fpsim.training.nn", None),
    "optim": ("fpsim.training.optim", None),
    "precision": ("fpsim.training.precision", None),
    "ptq": ("fpsim.training.ptq", None),
    "lca": ("fpsim.training.lca", None),
    "Recorder": ("fpsim.training.instrument", "Recorder"),
    "recording": ("fpsim.training.instrument", "recording"),
    "Policy": ("fpsim.training.precision", "Policy"),
    "PRESETS": ("fpsim.numerics.accumulation", "PRESETS"),
    "dot": ("fpsim.numerics.accumulation", "dot"),
    "matmul": ("fpsim.numerics.accumulation", "matmul"),
    "TensorCore": ("fpsim.numerics.tensor_core", "TensorCore"),
    "tensor_core": ("fpsim.numerics.tensor_core", "tensor_core"),
    "validate_gemm": ("fpsim.validate.gemm", "validate_gemm"),
    "add": ("fpsim.numerics.arith", "add"),
    "div": ("fpsim.numerics.arith", "div"),
    "fma": ("fpsim.numerics.arith", "fma"),
    "mul": ("fpsim.numerics.arith", "mul"),
    "sqrt": ("fpsim.numerics.arith", "sqrt"),
    "sub": ("fpsim.numerics.arith", "sub"),
    "code_dtype": ("fpsim.numerics.convert", "code_dtype"),
    "decode": ("fpsim.numerics.convert", "decode"),
    "encode": ("fpsim.numerics.convert", "encode"),
    "quantize": ("fpsim.numerics.convert", "quantize"),
    "scaled": ("fpsim.numerics.scaled", None),
    "Fixed": ("fpsim.numerics.fixed", "Fixed"),
    "IntGrid": ("fpsim.numerics.fixed", "IntGrid"),
    "ScaledFormat": ("fpsim.numerics.scaled", "ScaledFormat"),
    "DelayedScaling": ("fpsim.numerics.scaled", "DelayedScaling"),
}


def __getattr__(name: str):
    """Load a lazy public name (see :data:`_LAZY`) on first access and keep it as a module
    attribute, so later lookups are plain attribute reads; unknown names raise AttributeError."""
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'fpsim' has no attribute {name!r}") from None
    value = importlib.import_module(module)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names including the lazy ones (for ``dir(fpsim)`` and tab completion)."""
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "DelayedScaling", "Event", "Fixed", "Flag", "Format", "IntGrid", "Overflow", "Policy", "Recorder", "RoundMode",
    "ScaledFormat", "Stats", "scaled",
    "PRESETS", "add", "code_dtype", "decode", "div", "dot", "encode", "engine", "fma", "format",
    "TensorCore", "formats", "instrument", "matmul", "mul", "nn", "optim", "precision", "quantize", "recording", "tensor_core", "validate_gemm",
    "sqrt", "sub",
]
