"""The floating-point format descriptor.

A :class:`Format` is data, not code: a frozen dataclass of the few independent fields that define a
binary floating-point format, with every other quantity (range, epsilon, code layout) derived as a
property. Kernels never see a ``Format``; they see :meth:`Format.params`, a tuple of plain integers
compiled once per (format, carrier) pair, so that one compiled kernel serves every format.

Value of a code (sign ``s``, exponent field ``E``, fraction field ``M``; ``m = man_bits``)::

    E >= emin_field:  (-1)^s * 2^(E - bias) * (1 + M / 2^m)        normal
    E == 0, M != 0:   (-1)^s * 2^(1 - bias) * (M / 2^m)            subnormal (if ``subnormals``)
    E == 0, M == 0:   (-1)^s * 0                                    zero (if ``zero``)

``emin_field`` is 1, except for formats without a zero (``zero=False``, e.g. ``float8_e8m0fnu``)
where the all-zero exponent field is an ordinary binade. ``specials`` decides which codes are
Inf/NaN (see :data:`SPECIALS`). The conventions are written down in ``docs/formats.md``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import re
from fractions import Fraction
from typing import NamedTuple

from fpsim.numerics import names

#: Which codes hold infinities and NaNs.
#: ``ieee``: all-ones exponent field is Inf (fraction 0) or NaN (fraction != 0).
#: ``fn``: no Inf; only the all-ones code (exponent and fraction) is NaN, the top binade holds normals.
#: ``fnuz``: no Inf, no negative zero; the code 1000...0 is the single NaN.
#: ``finite``: no Inf and no NaN; every code is a number.
SPECIALS = ("ieee", "fn", "fnuz", "finite")
#: :data:`SPECIALS` indices, the ``KernelParams.specials`` values the kernels compare against
#: (module-level ints, so Numba folds them into constants).
SPECIALS_IEEE, SPECIALS_FN, SPECIALS_FNUZ, SPECIALS_FINITE = range(len(SPECIALS))

_SPEC_RE = re.compile(r"^(u?)e(\d+)m(\d+)(?:b(-?\d+))?(ieee|fn|fnuz|finite)?$")


class KernelParams(NamedTuple):
    """A format compiled for one carrier (float32 or float64 bit patterns), for the jitted kernels.

    Every field is a plain int, so one compiled kernel serves every format. "Carrier bits" are the
    IEEE bit pattern of the carrier type read as a non-negative integer (sign cleared); on those,
    integer order equals value order, which the rounding routine relies on. T is the format's
    smallest positive value (:attr:`Format.min_subnormal`). Flags are 0 or 1.

    Carrier layout:

    * ``carrier_man_bits``: fraction bits of the carrier (23 or 52).
    * ``carrier_bias``: exponent bias of the carrier (127 or 1023).
    * ``carrier_exp_max``: the carrier's all-ones exponent field (255 or 2047).
    * ``carrier_sign_shift``: position of the carrier's sign bit (31 or 63).
    * ``carrier_inf_bits``: carrier bits of +Inf; every larger pattern is a NaN.
    * ``carrier_nan_bits``: carrier bits of the canonical quiet NaN (what NaN results become).

    The format, as carrier bits (what rounding compares against):

    * ``man_bits``: the format's stored fraction bits (:attr:`Format.man_bits`).
    * ``emin``: unbiased exponent of the format's lowest normal binade (:attr:`Format.emin`).
    * ``min_positive_bits``: carrier bits of T.
    * ``half_min_positive_bits``: carrier bits of T/2, or 0 when T/2 is not a carrier value.
    * ``min_positive_log2``: log2(T), an int.
    * ``min_normal_bits``: carrier bits of :attr:`Format.min_normal`.
    * ``max_bits``: carrier bits of :attr:`Format.max`, the largest finite value.
    * ``result_floor``: lowest result magnitude, as carrier bits: T for formats without zero
      (``zero=False``), else 0.
    * ``overflow_input_end``: the first input pattern that cannot overflow under the ``ieee``
      policy: ``carrier_inf_bits`` when the format keeps Inf inputs as Inf, else
      ``carrier_inf_bits + 1`` (an Inf input then counts as an overflow).
    * ``exp_lsb_flip``: 1 where bit ``carrier_man_bits`` of a pattern (the carrier's lowest exponent
      bit) is the complement of the last code bit of the value it was read from, when the ulp is
      ``2^carrier_man_bits`` carrier units: formats without fraction bits whose bias differs in
      parity from the carrier's, and the lowest subnormal binade [T, 2T) (code 1) when the carrier
      exponent of T is even. See ``docs/rounding.md`` section 4.
    * ``simple_signs``: 1 when the format is signed, has a zero and its NaN results keep the
      input's sign (ieee, fn, finite): the rounding routine then skips the unsigned / no-zero /
      fnuz rules.
    * ``nan_sign``: sign bit of a NaN result: -1 keeps the input's sign (ieee, fn, finite formats);
      1 for fnuz, whose NaN is the code 100...0; 0 for unsigned formats.
    * ``has_inf``, ``has_nan``, ``has_zero``, ``has_negzero``, ``signed``: the format's flags
      (:attr:`Format.has_inf`, :attr:`Format.has_nan`, :attr:`Format.zero`,
      :attr:`Format.has_negzero`, :attr:`Format.signed`).

    Code layout, for encode/decode:

    * ``exp_bits``: exponent field width (:attr:`Format.exp_bits`).
    * ``bias``: exponent bias (:attr:`Format.bias`).
    * ``emin_field``: biased exponent of the lowest normal binade (:attr:`Format.emin_field`).
    * ``sign_shift``: position of the code's sign bit, -1 if unsigned.
    * ``nan_code``: the NaN code's magnitude (the whole code 100...0 for fnuz), 0 without NaN.
    * ``inf_code``: the +Inf code, 0 without Inf.
    * ``specials``: :data:`SPECIALS` index of :attr:`Format.specials`, one of
      :data:`SPECIALS_IEEE`, :data:`SPECIALS_FN`, :data:`SPECIALS_FNUZ`, :data:`SPECIALS_FINITE`.
    """

    carrier_man_bits: int
    carrier_bias: int
    carrier_exp_max: int
    carrier_sign_shift: int
    carrier_inf_bits: int
    carrier_nan_bits: int
    man_bits: int
    emin: int
    min_positive_bits: int
    half_min_positive_bits: int
    min_positive_log2: int
    min_normal_bits: int
    max_bits: int
    result_floor: int
    overflow_input_end: int
    exp_lsb_flip: int
    simple_signs: int
    nan_sign: int
    has_inf: int
    has_nan: int
    has_zero: int
    has_negzero: int
    signed: int
    exp_bits: int
    bias: int
    emin_field: int
    sign_shift: int
    nan_code: int
    inf_code: int
    specials: int


@dataclasses.dataclass(frozen=True)
class Format:
    """A binary floating-point format.

    Attributes are the independent fields; everything else is a derived property.
    """

    #: Exponent field width in bits (1..11).
    exp_bits: int
    #: Stored fraction bits (0..52); the precision, hidden bit included, is ``man_bits + 1``.
    man_bits: int
    #: Exponent bias; ``None`` means the IEEE default ``2**(exp_bits-1) - 1``.
    bias: int | None = None
    #: Whether the format has subnormal values. Without them the codes with a zero exponent field
    #: and a non-zero fraction are non-canonical encodings of zero (they decode to ±0).
    subnormals: bool = True
    #: Where Inf and NaN live: one of :data:`SPECIALS`.
    specials: str = "ieee"
    #: Whether there is a sign bit (``False`` for scale formats such as ``float8_e8m0fnu``).
    signed: bool = True
    #: Whether the all-zero code is zero. ``False`` makes the zero exponent field an ordinary
    #: binade (``float8_e8m0fnu``); it requires ``subnormals=False``.
    zero: bool = True
    #: Display name; not part of the format's identity.
    name: str | None = dataclasses.field(default=None, compare=False)

    def __post_init__(self):
        def bad(field, value, allowed):
            raise ValueError(f"Format {field}={value!r} is invalid: {allowed}")

        for field in ("exp_bits", "man_bits", "bias"):
            value = getattr(self, field)
            if isinstance(value, numbers.Integral) and not isinstance(value, (bool, int)):
                object.__setattr__(self, field, int(value))  # numpy integers are welcome
        for field in ("exp_bits", "man_bits"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int):
                bad(field, value, "must be an int")
        if not 1 <= self.exp_bits <= 11:
            bad("exp_bits", self.exp_bits, "allowed range is 1..11")
        if not 0 <= self.man_bits <= 52:
            bad("man_bits", self.man_bits, "allowed range is 0..52")
        if self.bias is None:
            object.__setattr__(self, "bias", (1 << (self.exp_bits - 1)) - 1)
        elif isinstance(self.bias, bool) or not isinstance(self.bias, int):
            bad("bias", self.bias, "must be an int or None")
        if self.specials not in SPECIALS:
            bad("specials", self.specials, f"allowed values are {', '.join(SPECIALS)}")
        for field in ("subnormals", "signed", "zero"):
            if not isinstance(getattr(self, field), bool):
                bad(field, getattr(self, field), "must be a bool")
        if self.name is not None and not isinstance(self.name, str):
            raise TypeError(f"Format name={self.name!r} is invalid: must be a str or None")
        if self.specials == "ieee" and (self.exp_bits < 2 or self.man_bits < 1):
            bad("specials", "ieee", "needs exp_bits >= 2 and man_bits >= 1 (Inf and NaN codes)")
        if not self.zero and self.subnormals:
            bad("subnormals", True, "a format without zero (zero=False) cannot have subnormals")
        if not self.signed and self.specials in ("fnuz", "finite"):
            bad("specials", self.specials, "an unsigned format needs a NaN code: use 'ieee' or 'fn'")
        if not self.zero and self.specials == "fnuz":
            # Without zero, 100...0 is the code of -T; fnuz would make it NaN and lose -T.
            bad("specials", "fnuz", "needs a zero (zero=True): its NaN takes the -0 code")
        if self._max_field() < self.emin_field:
            bad("exp_bits", self.exp_bits, f"leaves no finite normal value with specials={self.specials!r}")
        # Every value must be a float64 number (the widest carrier).
        lo = self.emin - self.man_bits if self.subnormals else self.emin
        if lo < -1074:
            bad("bias", self.bias, f"puts the smallest value at 2^{lo}, below float64's 2^-1074")
        if self.emax > 1023:
            bad("bias", self.bias, f"puts the largest binade at 2^{self.emax}, above float64's 2^1023")
        if self.emin < -1022:
            # Normal numbers of the format would be float64 subnormals, whose spacing the rounding
            # kernel does not track (it reads the ulp off the carrier's exponent field).
            bad("bias", self.bias, f"puts the smallest normal at 2^{self.emin}, below float64's 2^-1022")

    # ---- derived quantities --------------------------------------------------------------
    @property
    def precision(self) -> int:
        """Significand precision in bits, hidden bit included (``man_bits + 1``)."""
        return self.man_bits + 1

    @property
    def bits(self) -> int:
        """Total width of a code in bits."""
        return int(self.signed) + self.exp_bits + self.man_bits

    @property
    def emin_field(self) -> int:
        """Biased exponent field of the lowest normal binade (1, or 0 for formats without zero)."""
        return 1 if self.zero else 0

    @property
    def emin(self) -> int:
        """Unbiased exponent of the smallest normal number."""
        return self.emin_field - self.bias

    def _max_field(self) -> int:
        top = (1 << self.exp_bits) - 1
        # ieee reserves the whole top binade; fn with no fraction bits has only the NaN code there.
        if self.specials == "ieee" or (self.specials == "fn" and self.man_bits == 0):
            return top - 1
        return top

    @property
    def emax(self) -> int:
        """Unbiased exponent of the largest finite binade."""
        return self._max_field() - self.bias

    def _max_fraction(self) -> int:
        full = (1 << self.man_bits) - 1
        top_is_nan_binade = self.specials == "fn" and self.man_bits > 0
        return full - 1 if top_is_nan_binade else full

    @property
    def max(self) -> float:
        """Largest finite value."""
        return math.ldexp(1 + self._max_fraction() / (1 << self.man_bits), self.emax)

    @property
    def min_normal(self) -> float:
        """Smallest positive normal value, ``2**emin``."""
        return math.ldexp(1.0, self.emin)

    @property
    def min_subnormal(self) -> float:
        """Smallest positive value: ``2**(emin - man_bits)`` with subnormals, else ``min_normal``."""
        return math.ldexp(1.0, self.emin - self.man_bits) if self.subnormals else self.min_normal

    @property
    def eps(self) -> float:
        """Distance from 1 to the next larger value, ``2**-man_bits``."""
        return math.ldexp(1.0, -self.man_bits)

    @property
    def has_inf(self) -> bool:
        """Whether ±Inf are codes of the format."""
        return self.specials == "ieee"

    @property
    def has_nan(self) -> bool:
        """Whether some code is NaN."""
        return self.specials != "finite"

    @property
    def has_negzero(self) -> bool:
        """Whether -0 is a code distinct from +0."""
        return self.signed and self.zero and self.specials != "fnuz"

    @property
    def n_finite(self) -> int:
        """Number of codes that decode to finite values (both zeros and non-canonical zeros count)."""
        total = 1 << self.bits
        nan = 0
        if self.specials == "ieee":
            per_sign = 1 << self.man_bits  # whole top binade: Inf + NaNs
            nan = per_sign * (2 if self.signed else 1)
        elif self.specials == "fn":
            nan = 2 if self.signed else 1
        elif self.specials == "fnuz":
            nan = 1
        return total - nan

    @functools.cached_property  # asked on every quantize call (a cast site makes dozens a step)
    def fits_float32(self) -> bool:
        """Whether a float32 carrier serves the format: every value is a float32 value and every
        normal number a float32 normal number."""
        lo = self.emin - self.man_bits if self.subnormals else self.emin
        # Normal numbers must be float32 normals too (see the float64 rule in __post_init__).
        return self.man_bits <= 23 and lo >= -149 and self.emin >= -126 and self.emax <= 127

    def __str__(self) -> str:
        return self.name or self.spec

    @property
    def spec(self) -> str:
        """Canonical spec string accepted by :func:`fpsim.format`, e.g. ``e5m10`` or ``ue8m0fn-nozero``."""
        head = f"{'' if self.signed else 'u'}e{self.exp_bits}m{self.man_bits}"
        tail = "" if self.subnormals else ("-nosub" if self.zero else "-nozero")
        default_bias = self.bias == (1 << (self.exp_bits - 1)) - 1
        # The shortest spelling that reads back as this format: drop the default bias and the
        # ieee suffix where that is unambiguous, otherwise spell them out.
        for s in (head + ("" if self.specials == "ieee" else self.specials),
                  head + self.specials, f"{head}b{self.bias}{self.specials}"):
            if not default_bias and "b" not in s[len(head):]:
                continue
            if _reads_back(s + tail) == self:
                return s + tail
        return f"{head}b{self.bias}{self.specials}{tail}"

    def replace(self, **changes) -> "Format":
        """Return a copy with some fields changed (the name is dropped unless given)."""
        changes.setdefault("name", None)
        return dataclasses.replace(self, **changes)

    # ---- exact values (used by docs, CLI and tests) -----------------------------------------
    def value_of_code(self, code: int) -> Fraction | float:
        """Exact value of a code as a Fraction, or ``math.inf``/``-math.inf``/``math.nan``.

        This is the format definition written out directly; ``fpsim.reference`` builds on it.
        """
        if not 0 <= code < (1 << self.bits):
            raise ValueError(f"code {code} is outside 0..{(1 << self.bits) - 1} for {self}")
        m = self.man_bits
        mag_mask = (1 << (self.exp_bits + m)) - 1
        neg = self.signed and bool(code >> (self.exp_bits + m))
        mag = code & mag_mask
        E, M = mag >> m, mag & ((1 << m) - 1)
        top = (1 << self.exp_bits) - 1
        if self.specials == "fnuz" and neg and mag == 0:
            return math.nan
        if self.specials == "fn" and mag == mag_mask:
            return math.nan
        if self.specials == "ieee" and E == top:
            if M:
                return math.nan
            return -math.inf if neg else math.inf
        if E < self.emin_field:  # zero exponent field of a format with zero
            v = Fraction(M, 1 << m) * Fraction(2) ** (1 - self.bias) if self.subnormals else Fraction(0)
            if v == 0:
                return v  # non-canonical zeros are +0 (the sign is the caller's to read, if -0 exists)
        else:
            v = (1 + Fraction(M, 1 << m)) * Fraction(2) ** (E - self.bias)
        return -v if neg else v

    @functools.lru_cache(maxsize=None)
    def params(self, carrier: str = "float64") -> KernelParams:
        """Compile the format into :class:`KernelParams` for a ``float32`` or ``float64`` carrier."""
        return _compile_params(self, carrier)


def _carrier_bits(value: float, carrier: str) -> int:
    import numpy as np

    if carrier == "float32":
        return int(np.array(value, np.float32).view(np.uint32))
    return int(np.array(value, np.float64).view(np.uint64))


def _compile_params(fmt: Format, carrier: str) -> KernelParams:
    if carrier == "float32":
        if not fmt.fits_float32:
            raise ValueError(f"format {fmt} does not fit a float32 carrier")
        cm, cbias, cexp = 23, 127, 8
        min_carrier_log2 = -149
    elif carrier == "float64":
        cm, cbias, cexp = 52, 1023, 11
        min_carrier_log2 = -1074
    else:
        raise ValueError(f"carrier={carrier!r} is invalid: use 'float32' or 'float64'")
    cexp_max = (1 << cexp) - 1
    cinf = cexp_max << cm
    cnan = cinf | (1 << (cm - 1))
    t = fmt.min_subnormal
    t_log2 = fmt.emin - fmt.man_bits if fmt.subnormals else fmt.emin
    h_bits = _carrier_bits(t / 2, carrier) if t_log2 - 1 >= min_carrier_log2 else 0
    m = fmt.man_bits
    top = (1 << fmt.exp_bits) - 1
    sign_shift = fmt.exp_bits + m if fmt.signed else -1
    if fmt.specials == "ieee":
        nan_code, inf_code = (top << m) | (1 << (m - 1)), top << m
    elif fmt.specials == "fn":
        nan_code, inf_code = (1 << (fmt.exp_bits + m)) - 1, 0
    elif fmt.specials == "fnuz":
        nan_code, inf_code = 1 << (fmt.exp_bits + m), 0
    else:
        nan_code, inf_code = 0, 0
    return KernelParams(
        carrier_man_bits=cm, carrier_bias=cbias, carrier_exp_max=cexp_max,
        carrier_sign_shift=cm + cexp, carrier_inf_bits=cinf, carrier_nan_bits=cnan,
        man_bits=m, emin=fmt.emin,
        min_positive_bits=_carrier_bits(t, carrier), half_min_positive_bits=h_bits,
        min_positive_log2=t_log2,
        min_normal_bits=_carrier_bits(fmt.min_normal, carrier),
        max_bits=_carrier_bits(fmt.max, carrier),
        result_floor=0 if fmt.zero else _carrier_bits(t, carrier),
        overflow_input_end=cinf if fmt.has_inf else cinf + 1,
        exp_lsb_flip=((fmt.bias ^ cbias) & 1) if m == 0 else (((fmt.emin - m + cbias) & 1) ^ 1),
        simple_signs=int(fmt.signed and fmt.zero and fmt.specials != "fnuz"),
        nan_sign=1 if fmt.specials == "fnuz" else (0 if not fmt.signed else -1),
        has_inf=int(fmt.has_inf), has_nan=int(fmt.has_nan), has_zero=int(fmt.zero),
        has_negzero=int(fmt.has_negzero), signed=int(fmt.signed),
        exp_bits=fmt.exp_bits, bias=fmt.bias, emin_field=fmt.emin_field, sign_shift=sign_shift,
        nan_code=nan_code, inf_code=inf_code, specials=SPECIALS.index(fmt.specials),
    )


def _reads_back(spelling: str) -> "Format | None":
    """The format :func:`fpsim.format` gives for a lowercase spelling (names and aliases first,
    then the grammar), or None if it is not valid. Reads the name registry as data
    (:mod:`fpsim.numerics.names`), so this module does not import :mod:`.formats`."""
    try:
        return parse_spec(names.resolve(spelling))
    except ValueError:
        return None


def _spec_parts(spec: str):
    """``(regex match or None, subnormals, zero)`` of a spec string (suffixes removed)."""
    text = spec.strip().lower()
    subnormals, zero = True, True
    if text.endswith("-nosub"):
        text, subnormals = text[: -len("-nosub")], False
    elif text.endswith("-nozero"):
        text, subnormals, zero = text[: -len("-nozero")], False, False
    return _SPEC_RE.match(text), subnormals, zero


def is_spec(spec: str) -> bool:
    """Whether ``spec`` follows the spec grammar of :func:`parse_spec` (its numbers may still
    be out of range)."""
    return _spec_parts(spec)[0] is not None


def parse_spec(spec: str) -> Format:
    """Parse a spec string such as ``e5m10``, ``e4m3fn``, ``e5m2b16fnuz`` or ``ue8m0fn-nozero``.

    Grammar: ``[u]e<exp>m<man>[b<bias>][ieee|fn|fnuz|finite][-nosub|-nozero]``; ``u`` makes it
    unsigned, ``-nosub`` removes subnormals, ``-nozero`` makes the zero exponent field a binade.
    """
    match, subnormals, zero = _spec_parts(spec)
    if not match:
        raise ValueError(
            f"format spec {spec!r} is not understood: expected a named format (see `fpsim formats`) "
            "or [u]e<exp>m<man>[b<bias>][ieee|fn|fnuz|finite][-nosub|-nozero], e.g. 'e5m10'"
        )
    unsigned, e, m, bias, specials = match.groups()
    return Format(
        exp_bits=int(e), man_bits=int(m), bias=None if bias is None else int(bias),
        subnormals=subnormals, specials=specials or "ieee", signed=not unsigned, zero=zero,
    )
