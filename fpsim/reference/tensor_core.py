"""The tensor-core block-FMA model (``docs/tensor_cores.md`` sections 1 and 2), slowly and exactly.

Every value is an exact :class:`fractions.Fraction` or a signed integer significand with a power
of two; alignment, truncation and the final rounding are integer shifts and comparisons written
from the definition in the doc, step by step, with the step numbers in the comments. Nothing here
shares code with :mod:`fpsim.kernels.tensor_core` or with the preset machinery beyond reading a
:class:`~fpsim.numerics.tensor_core.TensorCore`'s fields; the kernels are tested against this
module and this module against the measured GPU outputs in ``shared/data/tensor-core-validation``.

Conventions the doc leaves implicit, fixed here (and used identically everywhere below):

* The carry-bit condition "``x_max`` belongs to a product with ``|P| >= 2^(2m+1)``" holds when
  *any* non-zero product whose unnormalised exponent equals ``x_max`` has a significand product
  in [2, 4) -- equivalently, when the products' largest alignment exponent is ``x_max + 1``.
* With ``late_addend`` the addend ``c`` takes no part in steps 3-5 at all. In each product step
  the previous step's result ``p`` takes ``c``'s place: when ``p != 0`` it is a term of the
  alignment, split (step 1) with ``product_format``'s fraction bits and ``emin``, its exponent
  joins ``E`` and the carry-bit condition reads ``p = 0 or p's exponent <= x_max``; ``p = 0``
  (always so in the first step) is evaluated as ``c = 0``.
* A product step's index is the product's position ``k - k0`` inside its block, so a shorter
  (zero-padded) last block keeps the same assignment of positions to steps; a step without
  products sums ``p`` alone, and a step with neither is the exact zero.
* A block, or a product step, whose products are all zero (or absent) has no ``x_max``: no
  carry bit.
* A product step's sum is rounded into ``product_format`` with the overflow rule of step 6 read
  with that format's ``emax`` (before rounding, or rounding to nearest up to ``2^(emax+1)``:
  ±Inf); an exact zero sum is 0. An infinite ``p`` ends the block: the result is that ``p``
  (the products of any later step and the finite ``c`` cannot change it).
* The old TensorCore objects without the late-addend fields read as ``product_steps = 1``,
  ``product_format = 'fp32'``, ``product_rounding = 'rtz'``.
* Exact zero results are +0 (step 6: ``S = 0``; late addend: ``p + c = 0``); signed zeros of the
  inputs are the value 0 and never reach the result's sign.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

#: Fraction bits of the alignment window's base (step 4) and of binary32.
_WINDOW_BASE = 23
#: The late addend's product formats (step 7): fraction bits, lowest and highest normal exponent.
_PRODUCT_FORMATS = {"fp32": (23, -126, 127), "fp16": (10, -14, 15)}


def _floor_log2(v: Fraction) -> int:
    """floor(log2 v) for a Fraction v > 0, exactly (integer bit lengths, then a fix-up)."""
    n, d = v.numerator, v.denominator
    e = n.bit_length() - d.bit_length()
    # Now 2^(e-1) < v < 2^(e+1); one comparison of integers settles which side of 2^e it is.
    if e >= 0:
        if n < d << e:
            e -= 1
    elif n << -e < d:
        e -= 1
    return e


def _pow2(k: int) -> Fraction:
    """2^k exactly, for any integer k."""
    return Fraction(1 << k) if k >= 0 else Fraction(1, 1 << -k)


def split(x: Fraction, man_bits: int, emin: int) -> tuple[int, int]:
    """Step 1: the signed integer significand ``s`` and exponent ``e`` of a value ``x`` of a
    binary format with ``man_bits`` fraction bits and lowest normal exponent ``emin``:
    ``x = s * 2^(e - man_bits)``, ``e = max(floor(log2|x|), emin)``, implicit bit included.

    Subnormals are not normalised: they keep ``e = emin`` and a significand below
    ``2^man_bits``. ``x = 0`` gives ``(0, emin)``. Raises ``ValueError`` if ``x`` is not a value
    of the format (``s`` would not be an integer).
    """
    x = Fraction(x)
    if x == 0:
        return 0, emin
    e = max(_floor_log2(abs(x)), emin)
    s = x / _pow2(e - man_bits)
    if s.denominator != 1:
        raise ValueError(f"{x} is not a value of a format with {man_bits} fraction bits and "
                         f"emin {emin}")
    return int(s), e


def round_to(v: Fraction, man_bits: int, emin: int, mode: str) -> Fraction:
    """Round the exact rational ``v`` into the binary format with ``man_bits`` fraction bits,
    lowest normal exponent ``emin`` (gradual underflow below it) and no upper exponent bound.

    ``mode`` is ``"rtz"`` (toward zero) or ``"rne"`` (nearest, ties to the even significand).
    The result is exact; its sign is ``v``'s (0 rounds to 0, and so does anything that rounds to
    zero -- the model has no signed zeros). Overflow is the caller's concern (step 6).
    """
    v = Fraction(v)
    if mode not in ("rtz", "rne"):
        raise ValueError(f"mode={mode!r} must be 'rtz' or 'rne'")
    if v == 0:
        return Fraction(0)
    neg = v < 0
    X = -v if neg else v
    # The quantum of X's binade; below emin the subnormal quantum 2^(emin - man_bits).
    e = max(_floor_log2(X), emin)
    k = e - man_bits
    # X / 2^k = n + r / den with 0 <= r < den, all integers.
    if k >= 0:
        num, den = X.numerator, X.denominator << k
    else:
        num, den = X.numerator << -k, X.denominator
    n, r = divmod(num, den)
    if mode == "rne" and r:
        # Compare the remainder with half a quantum (2r vs den); a tie goes to the even n. The
        # parity of n is the parity of the code's last bit: normal n lies in [2^m, 2^(m+1)),
        # subnormal n below 2^m, both with the quantum 2^k. n + 1 = 2^(m+1) is the next
        # binade's first value, which is still exact at this quantum.
        if 2 * r > den or (2 * r == den and n & 1):
            n += 1
    q = _pow2(k)
    return -(n * q) if neg else n * q


def _overflows(X: Fraction, r: Fraction, emax: int) -> bool:
    """Step 6's overflow rule for the exact value X and its rounding r: a magnitude at or above
    2^(emax+1) of the output format is Inf (before rounding; and, rounding to nearest, also when
    the rounding carries up to it -- r >= X's bound covers both, as rtz never goes up)."""
    bound = _pow2(emax + 1)
    return abs(X) >= bound or abs(r) >= bound


def _is_nan(x) -> bool:
    return isinstance(x, float) and math.isnan(x)


def _is_inf(x) -> bool:
    return isinstance(x, float) and math.isinf(x)


def _special(a, b, c):
    """Step 8 over the operands ``a``, ``b`` (equal-length sequences) and the addend ``c``: the
    special result (NaN or a signed Inf as a float), or None when every operand is finite.

    NaN when an operand or ``c`` is NaN or a product is Inf * 0; NaN when infinities of both
    signs meet (among the products and ``c``); else the one infinity's sign.
    """
    if _is_nan(c) or any(_is_nan(x) for x in a) or any(_is_nan(y) for y in b):
        return math.nan
    signs = set()
    for x, y in zip(a, b):
        if _is_inf(x) or _is_inf(y):
            if x == 0 or y == 0:  # Inf * 0 (either side): invalid
                return math.nan
            # Sign of the infinite product: the XOR of the factors' signs (neither is zero here,
            # so comparing with 0 gives the sign; -0.0 cannot occur).
            signs.add((x < 0) != (y < 0))
    if _is_inf(c):
        signs.add(c < 0)
    if not signs:
        return None
    if len(signs) == 2:
        return math.nan
    return -math.inf if signs.pop() else math.inf


def _products(a, b, m: int, emin_in: int) -> list[tuple[int, int]]:
    """Step 2: the exact non-zero products as ``(P, x)``: ``P = s_a * s_b`` (signed) at
    ``2^(x - 2m)``, ``x = e_a + e_b`` the unnormalised exponent. Zero products are left out:
    they neither set the exponent nor contribute."""
    out = []
    for x, y in zip(a, b):
        sa, ea = split(Fraction(x), m, emin_in)
        sb, eb = split(Fraction(y), m, emin_in)
        if sa and sb:
            out.append((sa * sb, ea + eb))
    return out


def _aligned_sum(prods, m: int, add_term, tc) -> tuple[int, int]:
    """Steps 3-5: the exact sum ``S`` of the terms truncated to the window, and the window's
    exponent ``E - F`` (the sum's value is ``S * 2^(E - F)``).

    ``prods`` are step 2's ``(P, x)``; ``add_term`` is ``(s, e, man_bits)`` of a non-zero term
    that joins the alignment beside the products -- the addend ``c`` (step 1 with the output
    format), or the late addend's previous product step ``p`` (with ``product_format``) -- or
    None (``c = 0``, or the first step of the late addend's product sum).
    """
    # Step 2: alignment exponent x + 1 for a significand product in [2, 4), i.e. |P| >= 2^(2m+1)
    # (the integer significands carry the scale 2^(2m)); subnormal factors stay at x.
    big = 1 << (2 * m + 1)
    align = [x + 1 if abs(P) >= big else x for P, x in prods]
    # Step 3: the reference exponent over the non-zero products and the joining term.
    cands = list(align)
    if add_term is not None:
        cands.append(add_term[1])
    if not cands:
        return 0, 0
    E = max(cands)
    # Step 4: the window, with the carry bit when the product(s) at the largest unnormalised
    # exponent reach [2, 4) and the joining term does not sit above x_max.
    F = _WINDOW_BASE + int(tc.extra_bits)
    if tc.carry_bit and prods:
        x_max = max(x for _, x in prods)
        top_big = any(x == x_max and abs(P) >= big for P, x in prods)
        if top_big and (add_term is None or add_term[1] <= x_max):
            F += 1
    unit = E - F  # the window's last bit is worth 2^unit

    def truncated(sig: int, lsb: int) -> int:
        # Step 5: a term sig * 2^lsb as a signed multiple of 2^unit, its magnitude truncated
        # toward zero (the bits below the window are dropped, not rounded).
        mag = abs(sig)
        sh = lsb - unit
        t = mag << sh if sh >= 0 else mag >> -sh
        return -t if sig < 0 else t

    S = sum(truncated(P, x - 2 * m) for P, x in prods)
    if add_term is not None:
        s_t, e_t, m_t = add_term
        S += truncated(s_t, e_t - m_t)
    return S, unit


def _late_params(tc) -> tuple[int, int, int, int, str]:
    """Step 7's parameters of ``tc``: ``(product_steps, man_bits, emin, emax, product_rounding)``
    of the product format; the fields absent on older TensorCore objects take their defaults
    (1 step, binary32, ``rtz``)."""
    steps = int(getattr(tc, "product_steps", 1))
    if steps < 1:
        raise ValueError(f"product_steps={steps} must be at least 1")
    fmt = getattr(tc, "product_format", "fp32")
    if fmt not in _PRODUCT_FORMATS:
        raise ValueError(f"product_format={fmt!r} must be one of {sorted(_PRODUCT_FORMATS)}")
    mode = getattr(tc, "product_rounding", "rtz")
    if mode not in ("rtz", "rne"):
        raise ValueError(f"product_rounding={mode!r} must be 'rtz' or 'rne'")
    man, emin, emax = _PRODUCT_FORMATS[fmt]
    return steps, man, emin, emax, mode


def _product_steps(prods_at, m: int, tc):
    """Step 7's product sum: the chained product steps over ``prods_at`` (step 2's non-zero
    products as ``(k - k0, P, x)``, their position in the block first).

    Returns ``p``, the last step's result, as an exact value of ``product_format`` (a Fraction),
    or ``float('inf')`` / ``float('-inf')`` when a step overflows that format.
    """
    steps, p_man, p_emin, p_emax, p_mode = _late_params(tc)
    p = Fraction(0)
    for step in range(steps):
        # Step 7: this step's products, floor((k - k0) / 2) mod product_steps == step.
        prods = [(P, x) for k, P, x in prods_at if (k // 2) % steps == step]
        # The previous step's p joins the alignment like c does in steps 2-5 (exponent split
        # with product_format's emin) when it is non-zero.
        p_term = None
        if p != 0:
            s_p, e_p = split(p, p_man, p_emin)
            p_term = (s_p, e_p, p_man)
        S, unit = _aligned_sum(prods, m, p_term, tc)
        if S == 0:  # an exact zero sum is 0
            p = Fraction(0)
            continue
        X = S * _pow2(unit)
        r = round_to(X, p_man, p_emin, p_mode)
        if _overflows(X, r, p_emax):
            # Overflow of the product format: ±Inf, which no later step (finite products) and
            # no finite c can change.
            return -math.inf if X < 0 else math.inf
        p = r
    return p


def block_fma(a, b, c, tc):
    """One tensor-core operation ``d = c + sum_k a_k * b_k`` of the model ``tc`` (a
    :class:`~fpsim.numerics.tensor_core.TensorCore`), ``docs/tensor_cores.md`` steps 1-8.

    ``a``, ``b``: equal-length sequences (at most ``tc.group`` long; shorter is the zero-padded
    last block) of floats or Fractions that are values of ``tc.input_format``; ``c``: a value of
    the output format (or of the result format, between blocks), float or Fraction.

    Returns the exact result as a Fraction (``Fraction(0)`` for the +0 result) when it is
    finite, else ``float('nan')``, ``float('inf')`` or ``float('-inf')``: step 8's special
    values, step 6's overflow, and a non-finite ``c`` passing through finite products.
    """
    a, b = list(a), list(b)
    if len(a) != len(b):
        raise ValueError(f"a and b have lengths {len(a)} and {len(b)}")
    sp = _special(a, b, c)
    if sp is not None:
        return sp
    fin, fout = tc.input_format, tc.output_format
    m, m_out = fin.man_bits, fout.man_bits
    rb = int(tc.result_bits)
    cv = Fraction(c)

    if tc.late_addend:
        # Step 7: the products (steps 1-2, with their positions k - k0 in the block) summed in
        # product_steps chained steps, each with steps 3-5 over its products and the previous
        # step's p, rounded into product_format with product_rounding ...
        prods_at = []
        for k, (x, y) in enumerate(zip(a, b)):
            prods_at.extend((k, P, xe) for P, xe in _products([x], [y], m, fin.emin))
        p = _product_steps(prods_at, m, tc)
        if _is_inf(p):  # an overflowing product sum is the result (c is finite here)
            return p
        # ... then p + c, exactly, rounded once into the result format with tc.rounding.
        X = p + cv
        if X == 0:
            return Fraction(0)
        r = round_to(X, rb, fout.emin, tc.rounding)
    else:
        prods = _products(a, b, m, fin.emin)  # steps 1-2
        # Step 1 for the addend, with the output format's emin; it joins steps 3-5 when non-zero.
        c_term = None
        if cv != 0:
            s_c, e_c = split(cv, m_out, fout.emin)
            c_term = (s_c, e_c, m_out)
        S, unit = _aligned_sum(prods, m, c_term, tc)
        if S == 0:  # step 6: an exact zero sum is +0
            return Fraction(0)
        X = S * _pow2(unit)
        r = round_to(X, rb, fout.emin, tc.rounding)
    if _overflows(X, r, fout.emax):
        return -math.inf if X < 0 else math.inf
    return r


def matmul(a, b, tc, c=None) -> np.ndarray:
    """The whole GEMM ``d = c + a @ b`` of the model ``tc``: a (M, K), b (K, N), c (M, N) or None
    (zeros); a float64 array (M, N) of the exact results.

    Each output first gets step 8 over its whole row of ``a``, column of ``b`` and ``c``; if that
    gives no special value, blocks of ``tc.group`` products are chained along K from ``d = c``
    (``d <- block_fma(a[k0:k0+G], b[k0:k0+G], d)``; the last block is shorter, which is the
    zero padding), ``d`` staying an exact result-format value between blocks. An overflowing
    block makes ``d`` infinite, and an infinite ``d`` passes through the rest of the blocks.
    Every result is a float64 value, so the final ``float()`` is exact.
    """
    A = [list(row) for row in a]
    M = len(A)
    K = len(A[0]) if M else 0
    Bt = [list(col) for col in zip(*[list(row) for row in b])]
    N = len(Bt)
    if any(len(row) != K for row in A) or (N and len(Bt[0]) != K):
        raise ValueError("a must be (M, K) and b (K, N)")
    C = [[0.0] * N for _ in range(M)] if c is None else [list(row) for row in c]
    G = int(tc.group)
    out = np.empty((M, N), dtype=np.float64)
    for i in range(M):
        for j in range(N):
            col = Bt[j]
            d = C[i][j]
            sp = _special(A[i], col, d)
            if sp is not None:
                out[i, j] = sp
                continue
            d = Fraction(d)
            for k0 in range(0, K, G):
                d = block_fma(A[i][k0:k0 + G], col[k0:k0 + G], d, tc)
            out[i, j] = float(d)
    return out
