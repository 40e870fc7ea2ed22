"""Primitive ops on :class:`~fpsim.engine.tensor.Tensor`, each followed by its
vector-Jacobian product (the derivative rule sits right under the forward computation).

Conventions: ``g`` is the cotangent of the output; every rule returns one cotangent per input
with that input's shape (:func:`unbroadcast` undoes numpy broadcasting). Values keep the dtype
of the inputs (float32 stays float32).
"""

from __future__ import annotations

import numpy as np

from fpsim.engine.tensor import Tensor, lift, node, unbroadcast

# -- elementwise arithmetic --------------------------------------------------------------------


def add(a, b) -> Tensor:
    """``a + b`` with numpy broadcasting."""
    a, b = _pair(a, b)
    return node(a.data + b.data, (a, b),
                lambda g: (unbroadcast(g, a.shape), unbroadcast(g, b.shape)))


def sub(a, b) -> Tensor:
    """``a - b`` with numpy broadcasting."""
    a, b = _pair(a, b)
    return node(a.data - b.data, (a, b),
                lambda g: (unbroadcast(g, a.shape), unbroadcast(-g, b.shape)))


def mul(a, b) -> Tensor:
    """``a * b`` with numpy broadcasting."""
    a, b = _pair(a, b)
    return node(a.data * b.data, (a, b),
                lambda g: (unbroadcast(g * b.data, a.shape), unbroadcast(g * a.data, b.shape)))


def div(a, b) -> Tensor:
    """``a / b`` with numpy broadcasting."""
    a, b = _pair(a, b)
    y = a.data / b.data
    return node(y, (a, b),
                lambda g: (unbroadcast(g / b.data, a.shape), unbroadcast(-g * y / b.data, b.shape)))


def neg(a) -> Tensor:
    """``-a``."""
    a = lift(a)
    return node(-a.data, (a,), lambda g: (-g,))


def pow(a, p) -> Tensor:  # noqa: A001 - the op's name
    """``a ** p``; ``p`` a number or a Tensor (then d/dp = a^p log a, for a > 0)."""
    a, p = _pair(a, p)
    y = a.data ** p.data

    def vjp(g):
        ga = unbroadcast(g * p.data * a.data ** (p.data - 1), a.shape)
        if not p.requires_grad:
            return ga, None
        with np.errstate(divide="ignore", invalid="ignore"):
            return ga, unbroadcast(g * y * np.log(a.data), p.shape)
    return node(y, (a, p), vjp)


def exp(a) -> Tensor:
    """``e^a``."""
    a = lift(a)
    y = np.exp(a.data)
    return node(y, (a,), lambda g: (g * y,))


def log(a) -> Tensor:
    """Natural logarithm."""
    a = lift(a)
    return node(np.log(a.data), (a,), lambda g: (g / a.data,))


def sqrt(a) -> Tensor:
    """Square root."""
    a = lift(a)
    y = np.sqrt(a.data)
    return node(y, (a,), lambda g: (g / (2 * y),))


def tanh(a) -> Tensor:
    """Hyperbolic tangent."""
    a = lift(a)
    y = np.tanh(a.data)
    return node(y, (a,), lambda g: (g * (1 - y * y),))


def sigmoid(a) -> Tensor:
    """Logistic function 1 / (1 + e^-a) (scipy's expit: no overflow for large |a|)."""
    a = lift(a)
    from scipy import special  # here, not at import: scipy costs ~0.3 s to load

    y = special.expit(a.data)
    return node(y, (a,), lambda g: (g * y * (1 - y),))


def relu(a) -> Tensor:
    """``max(a, 0)``; the derivative at 0 is taken as 0."""
    a = lift(a)
    mask = a.data > 0
    return node(a.data * mask, (a,), lambda g: (g * mask,))


_INV_SQRT2 = 0.7071067811865476
_INV_SQRT2PI = 0.3989422804014327


def gelu(a) -> Tensor:
    """Gaussian error linear unit, exact form ``a * Phi(a)`` with ``Phi`` the normal CDF."""
    a = lift(a)
    from scipy import special  # as in sigmoid

    cdf = 0.5 * (1 + special.erf(a.data * a.dtype.type(_INV_SQRT2)))
    pdf = a.dtype.type(_INV_SQRT2PI) * np.exp(-0.5 * a.data * a.data)
    return node(a.data * cdf, (a,), lambda g: (g * (cdf + a.data * pdf),))


def where(cond, a, b) -> Tensor:
    """``a`` where the boolean array ``cond`` holds, else ``b`` (broadcasting)."""
    cond = np.asarray(cond.data if isinstance(cond, Tensor) else cond, bool)
    a, b = _pair(a, b)
    return node(np.where(cond, a.data, b.data), (a, b),
                lambda g: (unbroadcast(np.where(cond, g, 0), a.shape),
                           unbroadcast(np.where(cond, 0, g), b.shape)))


# -- linear algebra ------------------------------------------------------------------------------


def matmul(a, b, impl=None) -> Tensor:
    """Matrix product with numpy's rules (batched over leading axes, 1-D operands promoted).

    Args:
        impl: the numpy-level product ``impl(x, y) -> array`` used in the forward pass and for
            both products of the backward pass (default ``np.matmul``). A precision policy passes
            an accumulation model here; the engine does not know what it does.
    """
    a, b = _pair(a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul needs operands with at least one axis, got shapes "
                         f"{a.shape} and {b.shape}")
    if a.ndim == 1 and b.ndim == 1:
        return reshape(matmul(reshape(a, (1, -1)), reshape(b, (-1, 1)), impl), ())
    if a.ndim == 1:
        return reshape(matmul(reshape(a, (1, -1)), b, impl), b.shape[:-2] + b.shape[-1:])
    if b.ndim == 1:
        return reshape(matmul(a, reshape(b, (-1, 1)), impl), a.shape[:-1])
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul shapes {a.shape} and {b.shape} do not align "
                         f"({a.shape[-1]} != {b.shape[-2]})")
    mm = np.matmul if impl is None else impl
    return node(mm(a.data, b.data), (a, b),
                lambda g: (unbroadcast(mm(g, np.swapaxes(b.data, -1, -2)), a.shape)
                           if a.requires_grad else None,
                           unbroadcast(mm(np.swapaxes(a.data, -1, -2), g), b.shape)
                           if b.requires_grad else None))


# -- reductions ------------------------------------------------------------------------------


def _axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if np.ndim(axis) == 0 else tuple(axis)
    return tuple(sorted(int(ax) % ndim for ax in axes))


def _expand(g, shape, axes, keepdims):
    """Cotangent of a reduction back to the input's rank (reduced axes as length 1)."""
    return g if keepdims else np.expand_dims(g, axes)


def sum(a, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Sum over ``axis`` (int, tuple or None for all)."""
    a = lift(a)
    axes = _axes(axis, a.ndim)
    return node(a.data.sum(axis=axes, keepdims=keepdims), (a,),
                lambda g: (np.broadcast_to(_expand(g, a.shape, axes, keepdims), a.shape),))


def mean(a, axis=None, keepdims: bool = False) -> Tensor:
    """Arithmetic mean over ``axis``."""
    a = lift(a)
    axes = _axes(axis, a.ndim)
    n = int(np.prod([a.shape[i] for i in axes]))
    return node(a.data.mean(axis=axes, keepdims=keepdims), (a,),
                lambda g: (np.broadcast_to(_expand(g, a.shape, axes, keepdims) / n, a.shape),))


def max(a, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Maximum over ``axis``; tied maxima share the cotangent equally."""
    a = lift(a)
    axes = _axes(axis, a.ndim)
    m = a.data.max(axis=axes, keepdims=True)

    def vjp(g):
        hit = a.data == m
        ties = hit.sum(axis=axes, keepdims=True, dtype=a.dtype)  # (an int count would promote)
        return (hit * (_expand(g, a.shape, axes, keepdims) / ties),)
    return node(m if keepdims else m.squeeze(axes), (a,), vjp)


# -- shape -------------------------------------------------------------------------------------


def reshape(a, shape) -> Tensor:
    """The same values in a new shape (numpy rules, one ``-1`` allowed)."""
    a = lift(a)
    return node(a.data.reshape(shape), (a,), lambda g: (g.reshape(a.shape),))


def transpose(a, axes=None) -> Tensor:
    """Permute axes (default: reverse them)."""
    a = lift(a)
    axes = tuple(range(a.ndim))[::-1] if axes is None else tuple(int(ax) % a.ndim for ax in axes)
    inverse = tuple(np.argsort(axes))
    return node(a.data.transpose(axes), (a,), lambda g: (g.transpose(inverse),))


def _is_basic(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, np.integer, slice)) or i is None or i is Ellipsis
               for i in parts)


def getitem(a, index) -> Tensor:
    """``a[index]`` for basic (ints, slices) and advanced (integer / boolean array) indices.

    Repeated advanced indices accumulate their cotangents (``np.add.at``)."""
    a = lift(a)
    if isinstance(index, Tensor):
        raise TypeError("index a Tensor with a numpy array (integers or booleans), not a Tensor")

    def vjp(g):
        out = np.zeros_like(a.data)
        if _is_basic(index):
            out[index] = g
        else:
            np.add.at(out, index, g)
        return (out,)
    return node(a.data[index], (a,), vjp)


def concatenate(tensors, axis: int = 0) -> Tensor:
    """Join tensors along an existing axis."""
    ts = [lift(t) for t in tensors]
    if not ts:
        raise ValueError("concatenate needs at least one tensor")
    ax = axis % ts[0].ndim
    bounds = np.cumsum([t.shape[ax] for t in ts])[:-1]
    return node(np.concatenate([t.data for t in ts], axis=ax), tuple(ts),
                lambda g: tuple(np.split(g, bounds, axis=ax)))


def _pair(a, b):
    """Both operands as Tensors; a number takes the other operand's dtype."""
    if isinstance(a, Tensor):
        return a, lift(b, a)
    b = lift(b)
    return lift(a, b), b


# -- operator sugar ----------------------------------------------------------------------------
Tensor.__add__ = add
Tensor.__radd__ = lambda self, other: add(other, self)
Tensor.__sub__ = sub
Tensor.__rsub__ = lambda self, other: sub(other, self)
Tensor.__mul__ = mul
Tensor.__rmul__ = lambda self, other: mul(other, self)
Tensor.__truediv__ = div
Tensor.__rtruediv__ = lambda self, other: div(other, self)
Tensor.__pow__ = pow
Tensor.__rpow__ = lambda self, other: pow(other, self)
Tensor.__neg__ = neg
Tensor.__matmul__ = matmul
Tensor.__rmatmul__ = lambda self, other: matmul(other, self)
Tensor.__getitem__ = getitem
Tensor.T = property(lambda self: transpose(self))
Tensor.sum = sum
Tensor.mean = mean
Tensor.max = max
Tensor.exp = exp
Tensor.log = log
Tensor.sqrt = sqrt
Tensor.tanh = tanh
Tensor.relu = relu
Tensor.sigmoid = sigmoid
Tensor.reshape = lambda self, *shape: reshape(self, shape[0] if len(shape) == 1 else shape)
Tensor.transpose = lambda self, *axes: transpose(self, (axes[0] if len(axes) == 1 else axes)
                                                 if axes else None)
