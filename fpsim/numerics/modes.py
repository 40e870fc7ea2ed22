"""Rounding modes, overflow policies and per-element event bits: small ints handed to kernels."""

from __future__ import annotations

import enum
import numbers

import numpy as np


def _parse(cls, value, aliases: dict, what: str):
    """``value`` as a member of the IntEnum ``cls``: a member, its name or an alias in any case,
    or its int value (numpy integers too); anything else is a ValueError naming ``what``."""
    if isinstance(value, cls):
        return value
    if isinstance(value, enum.Enum):
        pass  # a member of another enum (e.g. an Overflow given as rounding) is an error
    elif isinstance(value, str):
        key = aliases.get(value.strip().lower(), value.strip().upper())
        if key in cls.__members__:
            return cls[key]
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool) and (
            int(value) in cls._value2member_map_):
        return cls(int(value))
    names = ", ".join(m.name.lower() for m in cls)
    raise ValueError(f"{what}={value!r} is invalid: allowed values are {names}")


def as_flag(name: str, value) -> bool:
    """``value`` as a bool, for an on/off argument such as ``stats=`` or ``flags=``: True/False
    (numpy's too); anything else, a string such as ``"no"`` above all, which ``bool()`` would
    take as true, is a TypeError naming ``name``."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be true or false, got {value!r} ({type(value).__name__})")


class RoundMode(enum.IntEnum):
    """Rounding modes. The int values are what kernels receive."""

    #: Round to nearest, ties to even.
    RNE = 0
    #: Round to nearest, ties away from zero.
    RNA = 1
    #: Round toward zero (truncate).
    RTZ = 2
    #: Round toward +Inf.
    RUP = 3
    #: Round toward -Inf.
    RDN = 4
    #: Round to odd: truncate, and if inexact make the last bit 1 ("jamming").
    RTO = 5
    #: Stochastic: round away from zero with probability equal to the distance from the value
    #: truncated toward zero, in units of that value's ulp.
    SR = 6

    @classmethod
    def parse(cls, mode: "str | int | RoundMode") -> "RoundMode":
        """Accept ``"rne"``, ``"RNE"``, an alias (``"nearest"``), ``RoundMode.RNE`` or ``0``."""
        return _parse(cls, mode, _ROUND_ALIASES, "rounding")


_ROUND_ALIASES = {
    "nearest": "RNE", "nearest_even": "RNE", "even": "RNE",
    "nearest_away": "RNA", "away": "RNA",
    "zero": "RTZ", "trunc": "RTZ", "toward_zero": "RTZ",
    "up": "RUP", "ceil": "RUP", "toward_positive": "RUP",
    "down": "RDN", "floor": "RDN", "toward_negative": "RDN",
    "odd": "RTO",
    "stochastic": "SR",
}


class Overflow(enum.IntEnum):
    """What a finite value beyond the largest finite value becomes."""

    #: IEEE 754: ±Inf, or NaN for formats without Inf (the ml_dtypes behaviour); ±max when the
    #: rounding direction points toward zero (rtz, rto, rup for negatives, rdn for positives).
    #: Formats with neither Inf nor NaN saturate.
    IEEE = 0
    #: ±max finite; Inf inputs saturate too (CUDA ``satfinite``); NaN stays NaN.
    SATURATE = 1
    #: Fixed-point and integer formats only: two's-complement wraparound (the integer is taken
    #: modulo ``2^bits``, as an integer register overflows).
    WRAP = 2
    #: Fixed-point and integer formats only: an out-of-range value raises ValueError.
    ERROR = 3

    @classmethod
    def parse(cls, policy: "str | int | Overflow", fixed: bool = False) -> "Overflow":
        """Accept ``"ieee"``, ``"saturate"`` (or ``"satfinite"``, ``"sat"``), an Overflow or its int.

        With ``fixed=True`` (fixed-point and integer formats) the policies are ``saturate``,
        ``wrap`` and ``error``; floating-point formats take ``ieee`` and ``saturate``. A policy
        of the other kind is a ValueError that says which kind takes it.
        """
        value = _parse(cls, policy, {"satfinite": "SATURATE", "sat": "SATURATE"}, "overflow")
        if fixed and value == cls.IEEE:
            raise ValueError("overflow='ieee' is invalid for a fixed-point format (it has no "
                             "Inf or NaN): allowed values are saturate, wrap, error")
        if not fixed and value in (cls.WRAP, cls.ERROR):
            raise ValueError(f"overflow={value.name.lower()!r} applies to fixed-point and "
                             "integer formats: floating-point formats take ieee or saturate")
        return value


class Event(enum.IntFlag):
    """Per-element events of a rounding, ORed by the kernel and counted into :class:`fpsim.Stats`."""

    #: A non-zero, non-NaN input became ±0.
    UNDERFLOW = 1
    #: The result is a non-zero subnormal number.
    SUBNORMAL = 2
    #: The input's magnitude, rounded with an unbounded exponent, exceeds the largest finite
    #: value (so the result is Inf, NaN or ±max), or the input is an Inf that the format or the
    #: policy does not keep. (65510 into float16 rounds to 65504: no overflow.) Negative inputs
    #: into unsigned formats are NaN events, not overflows.
    OVERFLOW = 4
    #: The result is NaN and the input was not.
    NAN = 8
    #: The result differs from the input (NaN compared equal to NaN, -0 equal to +0).
    INEXACT = 16


#: Number of event kinds; counters are indexed by bit position.
N_EVENTS = 5


class Flag(enum.IntFlag):
    """IEEE 754 exception flags of the arithmetic (:func:`fpsim.add` ... ``flags=True``).

    The bit values are Berkeley SoftFloat's ``softfloat_flag_*`` (INEXACT 1, UNDERFLOW 2,
    OVERFLOW 4, DIVBYZERO 8 (SoftFloat's ``infinite``), INVALID 16), deliberately *not* the order
    of :class:`Event`:

    * the kernels (:mod:`fpsim.kernels.arith`) write these bits and the validation against
      SoftFloat (``tests/test_reference_arith.py``, ``fpsim validate arith``) compares the flag
      words as integers with ``softfloat.get_exception_flags()``;
    * the names that both enums have do not mean the same thing, so no mask should serve both:
      ``Event.UNDERFLOW`` is "a non-zero input became ±0" while ``Flag.UNDERFLOW`` is IEEE's
      "tiny and inexact"; ``Event.OVERFLOW`` counts Inf inputs the format cannot keep, while
      ``Flag.OVERFLOW`` is never raised by an Inf operand; DIVBYZERO and INVALID have no event,
      SUBNORMAL and NAN no flag.
    """

    INEXACT = 1
    UNDERFLOW = 2
    OVERFLOW = 4
    DIVBYZERO = 8
    INVALID = 16
