"""Slow, obviously correct accumulation models (:mod:`fpsim.numerics.accumulation`) in plain Python: every
product and addition is the exact rational result rounded by :mod:`fpsim.reference.arith`, in
the model's order, with the same stochastic-rounding counters as the kernels. The tests compare
:func:`fpsim.matmul` with :func:`matmul` here.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from fpsim.numerics.format import Format
from fpsim.numerics.formats import format as _format
from fpsim.kernels.rng import random_bits_py, stream_key
from fpsim.numerics.modes import Overflow, RoundMode
from fpsim.reference.rounding import round_rational
from fpsim.reference.arith import op_value


def _rounder(rounding, overflow, key, srk):
    def rnd_op(op, x, y, fmt, ctr):
        if fmt is None:  # native float64 accumulator (round to nearest even)
            return x + y if op == "add" else x - y
        return op_value(op, [x, y], fmt, rounding, overflow, rnd=random_bits_py(key, ctr),
                        sr_bits=srk, any_operands=True)[0]
    return rnd_op


def _exact_sum(terms, fmt: Format, rounding, overflow, rnd: int, srk: int) -> float:
    """The exact sum rounded once into ``fmt`` (IEEE's sign of an exact zero sum)."""
    if not all(math.isfinite(t) for t in terms):
        return op_value("add", [sum(terms), 0.0], fmt, rounding, overflow, any_operands=True)[0]
    X = sum((Fraction(t) for t in terms), Fraction(0))
    if X == 0:
        all_neg0 = bool(terms) and all(t == 0 and math.copysign(1, t) < 0 for t in terms)
        all_pos0 = all(t == 0 and math.copysign(1, t) > 0 for t in terms)
        neg = all_neg0 or (RoundMode.parse(rounding) == RoundMode.RDN and not all_pos0)
        return op_value("mul", [-0.0 if neg else 0.0, 1.0], fmt, rounding, overflow,
                        any_operands=True)[0]
    return round_rational(abs(X), X < 0, fmt, RoundMode.parse(rounding), Overflow.parse(overflow),
                          rnd, srk)[0]


def dot(a, b, fmt, accum=None, product=None, rounding="rne", order="sequential", block=None,
        compensated=False, overflow="ieee", key: int = 0, srk: int = 62, base: int = 0) -> float:
    """One output of the model: ``a``, ``b`` sequences of floats; ``accum`` a format, None
    (exact) or ``"float64"``; counters from ``base`` as in :mod:`fpsim.kernels.accumulate`."""
    fmt = _format(fmt)
    K = len(a)
    stride = 5 * K + 4
    rnd_op = _rounder(rounding, overflow, key, srk)
    prod = None if product is None else _format(product)
    terms = []
    for k in range(K):
        if prod is None:
            p = float(a[k]) * float(b[k])
            exact = not math.isfinite(p) or Fraction(p) == Fraction(a[k]) * Fraction(b[k])
            assert exact, "products of the inputs must be exact in float64"
        else:
            p = op_value("mul", [a[k], b[k]], prod, rounding, overflow,
                         rnd=random_bits_py(key, base + k), sr_bits=srk, any_operands=True)[0]
        terms.append(p)
    final_rnd = random_bits_py(key, base + stride - 1)
    if accum is None:
        return _exact_sum(terms, fmt, rounding, overflow, final_rnd, srk)
    acc = None if accum == "float64" else _format(accum)
    ctr = [base + K]

    def op(name, x, y):
        r = rnd_op(name, x, y, acc, ctr[0])
        ctr[0] += 1
        return r

    def first(p):
        return op("add", p, math.copysign(0.0, p))

    def seq(ts):
        s = first(ts[0])
        for p in ts[1:]:
            s = op("add", s, p)
        return s

    if K == 0:
        s = 0.0
    elif compensated:
        s = first(terms[0])
        c = 0.0
        for p in terms[1:]:
            y = op("sub", p, c)
            u = op("add", s, y)
            c = op("sub", op("sub", u, s), y)
            s = u
    elif order == "sequential":
        s = seq(terms)
    elif order == "blocked":
        s = None
        for lo in range(0, K, block):
            bs = seq(terms[lo:lo + block])
            s = bs if s is None else op("add", s, bs)
    else:  # pairwise, bottom up
        level = [first(p) for p in terms]
        while len(level) > 1:
            nxt = [op("add", level[2 * i], level[2 * i + 1]) for i in range(len(level) // 2)]
            if len(level) % 2:
                nxt.append(level[-1])
            level = nxt
        s = level[0]
    if fmt.man_bits > 50:  # float64 output of a float64 accumulator: nothing to round
        return s
    return op_value("mul", [s, 1.0], fmt, rounding, overflow, rnd=final_rnd, sr_bits=srk,
                    any_operands=True)[0]


def matmul(A, B, fmt, accum=None, product=None, rounding="rne", order="sequential", block=None,
           compensated=False, overflow="ieee", seed: int = 0, stream: int = 0,
           srk: int = 62) -> np.ndarray:
    """The model's ``A @ B`` (output element ``e = i*N + j`` uses counters from ``e * (5K+4)``)."""
    A, B = np.asarray(A, np.float64), np.asarray(B, np.float64)
    M, K = A.shape
    N = B.shape[1]
    key = stream_key(seed, stream)
    out = np.empty((M, N))
    for i in range(M):
        for j in range(N):
            out[i, j] = dot(A[i], B[:, j], fmt, accum, product, rounding, order, block,
                            compensated, overflow, key, srk, (i * N + j) * (5 * K + 4))
    return out
