"""THE rounding routine (:func:`round_bits`) and the code packers built on its result.

Everything that produces a value in a target format calls :func:`round_bits`: quantization,
encoding, and (later) the emulated arithmetic, which hands it an exact result as carrier bits.

The routine works on *carrier bits*: the IEEE bit pattern of a float32 or float64 carrier with the
sign cleared, held in an int64. Three facts about those patterns make the routine short:

1. For non-negative floats, integer order is value order, and adding 1 to a pattern gives the next
   float up, carrying from the fraction into the exponent field exactly when the binade ends.
2. If the target's unit in the last place (ulp) at |x| is ``2^q`` and the carrier's is ``2^c``,
   the target's representable numbers near |x| are exactly the carrier patterns whose low
   ``d = q - c`` bits are zero. So "truncate toward zero" is ``a & ~(2^d - 1)`` and "the next
   representable number up" is that plus ``2^d`` -- a carry into the exponent lands exactly on the
   next binade's first value, which is representable.
3. Fact 2 holds while the target binade's leading bit ``2^E`` is itself a multiple of ``2^q``,
   i.e. for |x| at or above the target's smallest positive value T. Below T the only neighbours
   are 0 and T, which the routine handles by comparison with T/2.

With ``E = max(exponent of |x|, 1 - carrier bias)`` (carrier subnormals share the lowest binade's
ulp) and ``emin`` the target's lowest normal exponent, the target ulp exponent is
``q = max(E, emin) - man_bits`` and the carrier's is ``c = E - cm``, so
``d = cm - man_bits + max(0, emin - E)``; ``0 <= d <= cm`` whenever |x| >= T. (In formulas ``cm``
is the carrier's fraction width, ``P.carrier_man_bits``; T is ``P.min_positive_bits``.)
"""

from __future__ import annotations

import numpy as np
from numba import njit

from fpsim.numerics.format import SPECIALS_FINITE, SPECIALS_FN, SPECIALS_FNUZ, SPECIALS_IEEE
from fpsim.numerics.modes import Overflow, RoundMode
from fpsim.kernels.bits import bit_length

RNE = int(RoundMode.RNE)
RNA = int(RoundMode.RNA)
RTZ = int(RoundMode.RTZ)
RUP = int(RoundMode.RUP)
RDN = int(RoundMode.RDN)
RTO = int(RoundMode.RTO)
SR = int(RoundMode.SR)
SATURATE = int(Overflow.SATURATE)

#: The kernels' event word gives each event a 12-bit field (in the order of the Event bits):
#: adding the words of up to 4095 elements counts every event at once, one vector add per
#: element instead of five. ``(ev >> (EV_FIELD * j)) & 1`` is the flag of ``Event`` bit j.
EV_FIELD = 12
EV_UNDERFLOW = 1 << (EV_FIELD * 0)
EV_SUBNORMAL = 1 << (EV_FIELD * 1)
EV_OVERFLOW = 1 << (EV_FIELD * 2)
EV_NAN = 1 << (EV_FIELD * 3)
EV_INEXACT = 1 << (EV_FIELD * 4)
#: Largest number of event words that can be summed without one field spilling into the next.
EV_MAX_SUM = (1 << EV_FIELD) - 1

#: Number of random bits used by stochastic rounding when the caller does not limit them.
SR_BITS_MAX = 62


@njit(cache=True, inline="always")
def overflow_result(P, mode, overflow, sign):
    """Carrier bits an overflowing magnitude becomes: SoftFloat's rule, then the format's means.

    ±max when the policy saturates, when the rounding direction points toward zero (rtz, rto, rup
    for negatives, rdn for positives), or when the format has neither Inf nor NaN; else Inf, or
    NaN for formats without Inf.
    """
    toward_zero = (mode == RTZ) | (mode == RTO) | ((mode == RUP) & (sign == 1)) | (
        (mode == RDN) & (sign == 0))
    if (overflow == SATURATE) | toward_zero | ((P.has_inf == 0) & (P.has_nan == 0)):
        return np.int64(P.max_bits)
    return np.int64(P.carrier_inf_bits) if P.has_inf == 1 else np.int64(P.carrier_nan_bits)


@njit(cache=True, inline="always")
def round_away(mode, sign, inexact, above, tie, odd, frac, rnd, srk):
    """Whether a magnitude takes its upper neighbour (one step away from zero): the decision of
    every rounding mode, shared by :func:`round_bits` and the integer-grid rounding of
    :mod:`fpsim.kernels.fixed`.

    Args:
        mode: a :class:`~fpsim.numerics.modes.RoundMode` int (a compile-time constant in the
            drivers, so only its branch remains).
        sign: 1 for a negative value (rup and rdn depend on it).
        inexact: the magnitude is not its lower neighbour.
        above, tie: the distance to the lower neighbour is above / exactly half a step.
        odd: the lower neighbour's last code bit is 1 (ties to even, round to odd).
        frac: the distance to the lower neighbour in steps, scaled to ``srk`` bits and
            truncated, ``floor(dist / step * 2^srk)`` (read only by ``sr``).
        rnd: 62 random bits; ``sr`` compares their top ``srk`` bits R: up iff
            ``frac + R >= 2^srk``, with probability ``frac / 2^srk``.
    """
    if mode == RNE:
        return above | (tie & odd)
    if mode == RNA:
        return above | tie
    if mode == RUP:
        return inexact & (sign == 0)
    if mode == RDN:
        return inexact & (sign == 1)
    if mode == RTO:
        return inexact & (not odd)
    if mode == SR:
        return frac + (rnd >> (SR_BITS_MAX - srk)) >= (np.int64(1) << srk)
    return False  # RTZ


@njit(cache=True, inline="always")
def round_bits(a, sign, P, mode, overflow, rnd, srk, simple=0):
    """Round one carrier value into the format described by ``P``.

    Written as straight-line selects (no stores, no calls, ``&``/``|`` rather than the branching
    ``and``/``or``) so that array loops vectorize; the drivers pass ``mode`` as a compile-time
    constant so that only one mode's logic remains.

    Args:
        a: carrier bits of |x| (int64, sign cleared); NaN and Inf patterns allowed.
        sign: 1 if x is negative (sign bit set, -0 and -NaN included), else 0.
        P: :class:`fpsim.numerics.format.KernelParams` of the target format for this carrier.
        mode: a :class:`~fpsim.numerics.modes.RoundMode` int.
        overflow: an :class:`~fpsim.numerics.modes.Overflow` int.
        rnd: 62 random bits (int64 in [0, 2^62)); read only when ``mode == SR``.
        srk: number of random bits stochastic rounding compares (1..62).
        simple: 1 only if ``P.simple_signs`` is 1 (signed format with zero whose NaN keeps the input's
            sign); drivers pass it as a compile-time constant to drop the rules of step 4 that
            cannot apply (measured: 1.4x faster loops). 0 is always correct.

    Returns:
        ``(r, sign_out, events)``: ``r`` the carrier bits of |result|, the canonical quiet NaN
        pattern ``P.carrier_nan_bits`` when the result is NaN; ``sign_out`` the result's sign bit (0/1);
        ``events`` the event word (see ``EV_FIELD``).
    """
    # 1. Neighbours of |x|: `lower` (toward zero) and `lower + step` (one target ulp above), the
    #    remainder `rem` = |x| - lower and `half` = half an ulp, as carrier bit distances. Above
    #    T (the smallest positive value) they come from bit masks (module docstring). Below T the
    #    neighbours are 0 and T: rem = a and half = bits(T/2) compare the same way, because bit
    #    order is value order (bits(T/2) is 0 when T/2 is no carrier value; then only a = 0 is
    #    below T).
    below = a < P.min_positive_bits
    be = a >> P.carrier_man_bits
    # d = cm - m + max(0, emin - E) with E = max(be, 1) - cbias, clamped (d > cm only below T).
    d0 = P.carrier_man_bits - P.man_bits
    d = min(max(d0, d0 + P.emin + P.carrier_bias - max(be, 1)), 62)
    ulp = np.int64(1) << d
    rem = a if below else a & (ulp - 1)
    half = np.int64(P.half_min_positive_bits) if below else ulp >> 1
    step = np.int64(P.min_positive_bits) if below else ulp
    lower = a - rem
    inexact = rem != 0
    above = rem > half
    tie = inexact & (rem == half)
    # Last code bit of `lower` (0 below T, where lower = 0). Above T, bit d of `a` is that bit
    # (`lower` shares a's bits from d up) except where d == cm makes it the carrier's lowest
    # exponent bit. That happens in formats without fraction bits, whose code's last bit is the
    # exponent field's: the same bit, complemented when the biases differ in parity; and in the
    # lowest subnormal binade [T, 2T), where lower = T has code 1 (odd) whatever the carrier
    # exponent's parity. (Without subnormals and with fraction bits, d < cm above T.) `exp_lsb_flip`
    # holds the complement for the format; see KernelParams.
    odd = (not below) & ((((a >> d) & 1) ^ (P.exp_lsb_flip & np.int64(d == P.carrier_man_bits))) == 1)

    # 2. Round: take `lower + step` or `lower` (the nearest modes are finished below with the
    #    add-and-truncate form, which the compiler turns into fewer vector instructions; the
    #    decision of round_away for them is dead code then). SR compares the distance in ulps,
    #    frac = rem / step, scaled to srk bits.
    frac = np.int64(0)
    if mode == SR:
        if below:
            # frac = |x| / T = sig * 2^(E - cm - min_positive_log2); one shift scales it by 2^srk.
            sig = (a & ((np.int64(1) << P.carrier_man_bits) - 1)) | (np.int64(be != 0) << P.carrier_man_bits)
            s = P.carrier_man_bits + P.min_positive_log2 - srk - (max(be, 1) - P.carrier_bias)
            if s >= 63:
                frac = np.int64(0)
            elif s >= 0:
                frac = sig >> s
            else:
                frac = sig << -s
        elif d >= srk:
            frac = rem >> (d - srk)
        else:
            frac = rem << (srk - d)
    up = round_away(mode, sign, inexact, above, tie, odd, frac, rnd, srk)
    r = lower + step if up else lower
    if mode == RNE or mode == RNA:
        # Above T: add half an ulp (minus one, plus the last code bit, for ties to even; exactly
        # half for ties away) and truncate: a sum at or past the midpoint carries into bit d
        # (and from the fraction into the exponent field, landing on the next binade).
        # Below T: T when |x| is above T/2 (at T/2 exactly: ties to even keep 0, the even code;
        # ties away take T), else 0.
        if mode == RNE:
            near = (a + ((ulp - 1) >> 1) + np.int64(odd & (d != 0))) & ~(ulp - 1)  # d = 0: exact
            near_below = np.int64(P.min_positive_bits) if a > P.half_min_positive_bits else np.int64(0)
        else:
            near = (a + half) & ~(ulp - 1)
            near_below = np.int64(P.min_positive_bits) if above | tie else np.int64(0)
        r = near_below if below else near
    # Formats without zero: T is the only neighbour below T (result_floor = T, else 0).
    r = max(r, np.int64(P.result_floor))

    # 3. Overflow: the magnitude, rounded with unbounded exponent (the carrier is wider), exceeds
    #    max. Inf inputs count too unless the format keeps them under the ieee policy
    #    (overflow_input_end = carrier Inf then, else Inf + 1: saturate turns Inf into max, as
    #    CUDA's satfinite does); NaN inputs never do.
    ovf_end = P.overflow_input_end if overflow != SATURATE else P.carrier_inf_bits + 1
    ovf = (r > P.max_bits) & (a < ovf_end)
    if ovf:
        r = overflow_result(P, mode, overflow, 1) if sign == 1 else overflow_result(P, mode, overflow, 0)

    # 4. NaN results: NaN input, zero into a format without zero, negative into an unsigned one;
    #    the sign of zero and NaN results where the format fixes it. (Simple formats: only the
    #    first can happen, and every result keeps the input's sign.)
    x_nan = a > P.carrier_inf_bits
    if simple == 1:
        invalid = False
        if x_nan:
            r = np.int64(P.carrier_nan_bits)
        sign_out = sign
    else:
        invalid = (sign == 1) & (P.signed == 0) & (a != 0)
        if x_nan | invalid | ((a == 0) & (P.has_zero == 0)):
            r = np.int64(P.carrier_nan_bits)
        sign_out = sign if (r != 0) | (P.has_negzero == 1) else 0
        if (r == P.carrier_nan_bits) & (P.nan_sign >= 0):
            sign_out = P.nan_sign  # the sign bit of the format's NaN code (fnuz: 1, unsigned: 0)

    # 5. Events (dead code, removed by the compiler, in loops that do not count them).
    is_nan = r > P.carrier_inf_bits
    ev = ((np.int64((r == 0) & (a != 0)) * EV_UNDERFLOW)
          | (np.int64((r != 0) & (r < P.min_normal_bits)) * EV_SUBNORMAL)
          | (np.int64(ovf & (not invalid)) * EV_OVERFLOW)
          | (np.int64(is_nan & (not x_nan)) * EV_NAN)
          | (np.int64((r != a) & (not x_nan)) * EV_INEXACT))
    return r, sign_out, ev


@njit(cache=True, inline="always")
def carrier_bits(r, sign_out, P):
    """Signed carrier bit pattern of a :func:`round_bits` result."""
    return r | (np.int64(sign_out) << P.carrier_sign_shift)


@njit(cache=True, inline="always")
def pack_code(r, sign_out, P):
    """The format's code (an int64 holding the unsigned code) of a :func:`round_bits` result.

    NaN codes: ``ieee`` sign | all-ones exponent | quiet bit; ``fn`` sign | all ones; ``fnuz``
    the code 1000...0; ``finite`` formats have no NaN and, following ml_dtypes, encode NaN as
    the sign-only code of the *opposite* sign (+NaN -> 100...0, -NaN -> 0).
    """
    if P.signed == 1:
        sbit = np.int64(1) << P.sign_shift
    else:
        sbit = np.int64(0)
    s = sbit if sign_out == 1 else np.int64(0)
    if r > P.carrier_inf_bits:
        if P.specials == SPECIALS_FNUZ:  # one NaN code, the "negative zero" pattern
            return np.int64(P.nan_code)
        if P.specials == SPECIALS_FINITE:  # no NaN code; ml_dtypes' convention
            return sbit ^ s
        return np.int64(P.nan_code) | s
    if r == P.carrier_inf_bits:
        return np.int64(P.inf_code) | s
    if r == 0:
        return s
    # Normalise the carrier value to sig * 2^(E - cm) with the leading bit of sig at position cm
    # (a carrier subnormal can be a normal number of the format, e.g. 2^-127 in float8_e8m0fnu).
    cmask = (np.int64(1) << P.carrier_man_bits) - 1
    be = r >> P.carrier_man_bits
    if be != 0:
        E = be - P.carrier_bias
        sig = (r & cmask) | (np.int64(1) << P.carrier_man_bits)
    else:
        n = bit_length(r)
        E = 1 - P.carrier_bias - P.carrier_man_bits + n - 1
        sig = r << (P.carrier_man_bits - (n - 1))
    if E >= P.emin:
        mag = (np.int64(E + P.bias) << P.man_bits) | ((sig & cmask) >> (P.carrier_man_bits - P.man_bits))
    else:  # subnormal in the format: the code is the value in units of 2^(emin - m)
        mag = sig >> (P.carrier_man_bits - P.man_bits + P.emin - E)
    return mag | s


@njit(cache=True, inline="always")
def unpack_code(code, P):
    """float64 bit pattern (int64) of a code's value. ``P`` must be the float64-carrier params.

    Non-canonical codes of formats without subnormals (zero exponent field, non-zero fraction)
    decode to ±0; NaN codes decode to the canonical quiet NaN with the code's sign.
    """
    m = P.man_bits
    if P.signed == 1:
        neg = (code >> P.sign_shift) & 1
    else:
        neg = np.int64(0)
    mag = code & ((np.int64(1) << (P.exp_bits + m)) - 1)
    E = mag >> m
    M = mag & ((np.int64(1) << m) - 1)
    top = (np.int64(1) << P.exp_bits) - 1
    sbit = neg << 63
    if P.specials == SPECIALS_FNUZ and neg == 1 and mag == 0:
        return np.int64(P.carrier_nan_bits) | sbit
    if P.specials == SPECIALS_FN and mag == (np.int64(1) << (P.exp_bits + m)) - 1:
        return np.int64(P.carrier_nan_bits) | sbit
    if P.specials == SPECIALS_IEEE and E == top:
        if M != 0:
            return np.int64(P.carrier_nan_bits) | sbit
        return np.int64(P.carrier_inf_bits) | sbit
    if E < P.emin_field:  # zero exponent field of a format with zero: zero or subnormal
        if P.min_positive_bits == P.min_normal_bits or M == 0:  # no subnormals: non-canonical zero
            return sbit if P.has_negzero == 1 else np.int64(0)
        # value = M * 2^(emin - m): normalise M (bit length n) into a float64 pattern.
        n = bit_length(M)
        ev = P.emin - m + n - 1  # exponent of the value's leading bit
        if ev >= -1022:
            frac = (M << (52 - (n - 1))) & ((np.int64(1) << 52) - 1)
            return (np.int64(ev + 1023) << 52) | frac | sbit
        return (M << (P.emin - m + 1074)) | sbit  # float64 subnormal: units of 2^-1074
    return (np.int64(E - P.bias + 1023) << 52) | (M << (52 - m)) | sbit
