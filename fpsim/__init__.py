"""fpsim: a bit-exact simulator of low-precision floating point for deep-learning studies.

Public API only. Importing fpsim never imports ``numba.cuda``.
"""

from fpsim import engine
from fpsim.numerics import formats
from fpsim.training import instrument, nn, optim, precision
from fpsim.numerics.accumulation import PRESETS, dot, matmul
from fpsim.numerics.arith import add, div, fma, mul, sqrt, sub
from fpsim.numerics.convert import code_dtype, decode, encode, quantize
from fpsim.numerics.format import Format
from fpsim.numerics.formats import format
from fpsim.training.instrument import Recorder, recording
from fpsim.numerics.stats import Stats
from fpsim.numerics.modes import Event, Overflow, RoundMode
from fpsim.training.precision import Policy
from fpsim.reference.arith import Flag

__version__ = "0.1.0"

__all__ = [
    "Event", "Flag", "Format", "Overflow", "Policy", "Recorder", "RoundMode", "Stats",
    "PRESETS", "add", "code_dtype", "decode", "div", "dot", "encode", "engine", "fma", "format",
    "formats", "instrument", "matmul", "mul", "nn", "optim", "precision", "quantize", "recording",
    "sqrt", "sub",
]
