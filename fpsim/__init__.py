"""fpsim: a bit-exact simulator of low-precision floating point for deep-learning studies.

Public API only. Importing fpsim never imports ``numba.cuda``.
"""

from . import formats
from .convert import code_dtype, decode, encode, quantize
from .format import Format
from .formats import format
from .instrument import Stats
from .modes import Event, Overflow, RoundMode

__version__ = "0.1.0"

__all__ = [
    "Event", "Format", "Overflow", "RoundMode", "Stats",
    "code_dtype", "decode", "encode", "format", "formats", "quantize",
]
