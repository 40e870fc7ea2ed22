"""The autodiff core: :class:`Tensor`, graph nodes, and one topological backward sweep.

A :class:`Tensor` wraps a float32 or float64 numpy array. Every primitive op (in
:mod:`~fpsim.engine.ops` and :mod:`~fpsim.engine.nnops`) computes its value with numpy and
returns :func:`node` ``(value, parents, vjp)``: ``vjp(g)`` maps the cotangent of the output to
one cotangent per parent (``None`` for a parent that needs none). :meth:`Tensor.backward` visits
the graph once in reverse topological order, summing cotangents that reach a tensor along
several paths. Nothing here knows about number formats; rounding reaches the graph only through
:func:`custom`, an op whose forward and backward are functions the caller supplies.
"""

from __future__ import annotations

import contextlib

import numpy as np

_FLOATS = (np.float32, np.float64)
_grad_enabled = True


@contextlib.contextmanager
def no_grad():
    """Within the block, ops record no graph (evaluation, optimizer updates)."""
    global _grad_enabled
    old, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = old


def as_float_array(x, dtype=None) -> np.ndarray:
    """``x`` as a float32/float64 array: float arrays keep their dtype, everything else
    becomes ``dtype`` (float32 if None). Raises TypeError for non-numeric data."""
    a = np.asarray(x)
    if dtype is not None:
        return a.astype(dtype, copy=False)
    if a.dtype in _FLOATS:
        return a
    if a.dtype.kind not in "biuf":
        raise TypeError(f"a Tensor holds real numbers; got an array of dtype {a.dtype}")
    return a.astype(np.float32)


class Tensor:
    """An array with an optional gradient, recording the ops that produced it.

    Attributes:
        data: the value (numpy float32 or float64 array).
        grad: the accumulated gradient of the last :meth:`backward` (same shape and dtype), or
            None; only kept for tensors created with ``requires_grad=True`` (leaves).
        requires_grad: whether gradients flow to this tensor.
    """

    __slots__ = ("data", "grad", "requires_grad", "_parents", "_vjp", "__weakref__")
    __array_priority__ = 100  # numpy scalars/arrays on the left defer to Tensor's operators

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        self.data = as_float_array(data, dtype)
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._parents = ()
        self._vjp = None

    # -- introspection -------------------------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)
    size = property(lambda self: self.data.size)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        return f"Tensor({self.data!r}{', requires_grad=True' if self.requires_grad else ''})"

    def numpy(self) -> np.ndarray:
        """The value as a numpy array (no copy)."""
        return self.data

    def item(self) -> float:
        """The value of a one-element tensor as a Python float."""
        return self.data.item()

    def detach(self) -> "Tensor":
        """The same value, cut from the graph."""
        return Tensor(self.data)

    # -- backward -----------------------------------------------------------------------------
    def backward(self, grad=None, *, tag=None, merge=None) -> None:
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf with ``requires_grad``.

        Args:
            grad: cotangent of ``self`` (default: ones; for a scalar loss that is dL/dL = 1,
                and a loss scale ``s`` is passed as ``grad=s``). Broadcast to ``self.shape``.
            tag: an opaque label travelling with the cotangent (a loss-scaling algorithm keeps
                the scale it has applied there). Every derivative rule is linear in the
                cotangent, so ordinary ops hand their output's tag to their inputs unchanged;
                ops made by :func:`custom` with ``tagged=True`` read and replace it.
            merge: ``merge((g1, tag1), (g2, tag2)) -> (g, tag)`` combines the cotangents of a
                tensor used more than once when their tags differ (default: tags must be
                equal, and the cotangents are added).
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad "
                               "(no input had requires_grad=True, or it was made under no_grad)")
        seed = np.ones_like(self.data) if grad is None else np.broadcast_to(
            np.asarray(grad, self.data.dtype), self.data.shape).copy()
        order = _topological(self)
        cot = {id(self): (seed, tag)}
        for t in reversed(order):
            g, tg = cot.pop(id(t), (None, None))
            if g is None:
                continue
            if t._vjp is None:  # a leaf: own a copy (g may be a view shared with other tensors)
                g = np.array(g, dtype=t.data.dtype)
                t.grad = g if t.grad is None else t.grad + g
                continue
            if getattr(t._vjp, "tagged", False):
                grads, tg = t._vjp(g, tg)
            else:
                grads = t._vjp(g)
            for p, gp in zip(t._parents, grads):
                if gp is None or not p.requires_grad:
                    continue
                k = id(p)
                if k not in cot:
                    cot[k] = (gp, tg)
                elif cot[k][1] == tg:
                    cot[k] = (cot[k][0] + gp, tg)
                elif merge is None:
                    raise ValueError(f"cotangents with different tags {cot[k][1]!r} and {tg!r} "
                                     "meet at one tensor and backward() got no merge function")
                else:
                    cot[k] = merge(cot[k], (gp, tg))

    # -- operators (defined in ops.py, attached there) ------------------------------------------


def _topological(root: Tensor) -> list[Tensor]:
    """Tensors reachable from ``root`` that require grad, each after all of its parents
    (iterative depth-first post-order, so deep graphs do not hit Python's recursion limit).

    A tensor is marked when it is expanded, not when it is pushed: a tensor pushed by one
    consumer may be reached again through another before it is expanded, and it must then still
    come out before both of them."""
    order, visited, stack = [], set(), [(root, False)]
    while stack:
        t, done = stack.pop()
        if done:
            order.append(t)
            continue
        if id(t) in visited:
            continue
        visited.add(id(t))
        stack.append((t, True))
        for p in t._parents:
            if p.requires_grad and id(p) not in visited:
                stack.append((p, False))
    return order


def node(value: np.ndarray, parents: tuple, vjp) -> Tensor:
    """The output tensor of a primitive op.

    Args:
        value: the computed output.
        parents: the input Tensors.
        vjp: ``vjp(g) -> tuple`` of cotangents, one per parent (or None), given the output's
            cotangent ``g``; only called if some parent requires grad.
    """
    out = Tensor(value)
    if _grad_enabled and any(p.requires_grad for p in parents):
        out.requires_grad = True
        out._parents = parents
        out._vjp = vjp
    return out


def lift(x, like: Tensor | None = None) -> Tensor:
    """``x`` as a Tensor; numbers and arrays take the dtype of ``like`` (so ``t * 2`` stays
    float32 for a float32 ``t``)."""
    if isinstance(x, Tensor):
        return x
    if like is not None and np.ndim(x) == 0:
        return Tensor(np.asarray(x, like.dtype))
    return Tensor(x)


def unbroadcast(g: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum ``g`` down to ``shape``: the cotangent of a value that numpy broadcast to
    ``g.shape`` (leading axes added, length-1 axes stretched)."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, n in enumerate(shape)
                                      if n == 1 and g.shape[i + lead] != 1)
    return g.sum(axis=axes, keepdims=True).reshape(shape) if axes else g.reshape(shape)


def custom(x: Tensor, forward, backward, tagged: bool = False) -> Tensor:
    """An op defined by the caller: value ``forward(x.data)``, cotangent ``backward(g)``.

    This is how rounding (cast sites) and per-site gradient scaling enter the graph without the
    engine knowing about formats: e.g. ``custom(x, round_to_fp16, round_to_fp16)``. With
    ``tagged=True`` the rule is ``backward(g, tag) -> (g_in, tag_in)`` and sees the cotangent's
    tag (see :meth:`Tensor.backward`).
    """
    if tagged:
        def vjp(g, tag):
            gi, ti = backward(g, tag)
            return (gi,), ti
        vjp.tagged = True
        return node(forward(x.data), (x,), vjp)
    return node(forward(x.data), (x,), lambda g: (backward(g),))
