"""fpsim: a bit-exact simulator of low-precision floating point for deep-learning studies.

Public API only. Importing fpsim never imports ``numba.cuda``.
"""

from . import formats
from .accumulation import PRESETS, dot, matmul
from .arith import add, div, fma, mul, sqrt, sub
from .convert import code_dtype, decode, encode, quantize
from .format import Format
from .formats import format
from .instrument import Stats
from .modes import Event, Overflow, RoundMode
from .reference_arith import Flag

__version__ = "0.1.0"

__all__ = [
    "Event", "Flag", "Format", "Overflow", "RoundMode", "Stats",
    "PRESETS", "add", "code_dtype", "decode", "div", "dot", "encode", "fma", "format", "formats",
    "matmul", "mul", "quantize", "sqrt", "sub",
]
