"""fpsim: a bit-exact simulator of low-precision floating point for deep-learning studies.

Public API only. Importing fpsim never imports ``numba.cuda``.
"""

from . import engine, formats, instrument, nn, optim, precision
from .accumulation import PRESETS, dot, matmul
from .arith import add, div, fma, mul, sqrt, sub
from .convert import code_dtype, decode, encode, quantize
from .format import Format
from .formats import format
from .instrument import Recorder, Stats, recording
from .modes import Event, Overflow, RoundMode
from .precision import Policy
from .reference_arith import Flag

__version__ = "0.1.0"

__all__ = [
    "Event", "Flag", "Format", "Overflow", "Policy", "Recorder", "RoundMode", "Stats",
    "PRESETS", "add", "code_dtype", "decode", "div", "dot", "encode", "engine", "fma", "format",
    "formats", "instrument", "matmul", "mul", "nn", "optim", "precision", "quantize", "recording",
    "sqrt", "sub",
]
