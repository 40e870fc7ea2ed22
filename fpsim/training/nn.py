"""Layers: :class:`Module` with named parameters, and the usual building blocks.

Modules know nothing of number formats either. They offer four generic hook points, registered
with :meth:`Module.register_hook` and removed by owner with :meth:`Module.remove_hooks`; precision
policies (:mod:`fpsim.training.precision`) and loss scalers place their ops through them:

- ``"input"``: ``hook(module, x) -> x`` on the first argument before :meth:`Module.forward`;
- ``"output"``: ``hook(module, output) -> output`` after :meth:`Module.forward`;
- ``"param"``: ``hook(module, name, param) -> tensor``, applied by :meth:`Module.param`,
  which every layer uses to read a parameter inside ``forward`` (so a rounded working copy of
  the master weight can be used there);
- ``"site"``: ``hook(module, name, tensor) -> tensor`` at named points inside a forward pass
  (:meth:`Module.site`, e.g. the attention scores).

Hooks of one kind run in ascending ``order``, ties in registration order. Forward values pass
the hooks in that order, so cotangents pass them in the reverse order during backward: a hook
with a lower order than a cast site sees the *rounded* gradient (see :data:`ORDER_BEFORE_CASTS`).

Parameters hold the master weights (float32 by default); their names are the dotted attribute
paths (``"layers.0.weight"``), stable across runs.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from fpsim import engine as E
from fpsim.engine import Tensor


#: The hook points of a :class:`Module`.
HOOK_KINDS = ("input", "output", "param", "site")
#: Conventional orders: precision policies place their cast sites at ``ORDER_CASTS``; an op that
#: must run before the cast going forward (so after it going backward) uses
#: ``ORDER_BEFORE_CASTS``, one that must run after it going forward ``ORDER_AFTER_CASTS``.
ORDER_BEFORE_CASTS, ORDER_CASTS, ORDER_AFTER_CASTS = -10, 0, 10


class Parameter(Tensor):
    """A trainable tensor (``requires_grad=True``): the master copy of a weight."""

    __slots__ = ()

    def __init__(self, data, dtype=np.float32):
        super().__init__(np.array(data, dtype=dtype), requires_grad=True)


class Module:
    """Base class: sub-modules and parameters are found from the attributes, in the order the
    constructor assigned them. Subclasses call ``super().__init__()`` first and define
    ``forward``.

    Attributes:
        training: train or evaluation behaviour (dropout, batch norm).
        exact: True when the module's output is exactly representable in any format its input
            is in and its derivative rule commutes with rounding (ReLU, max pooling, reshapes).
            A precision policy places no output cast after such a module, since one would be a
            no-op in both directions.
    """

    exact = False
    #: Composite modules whose output is a new value (not a sub-module's output) set this.
    cast_output = False

    def __init__(self):
        self.training = True
        self._buffers: list[str] = []
        #: kind -> [(order, sequence number, owner, fn)], kept sorted; read through _run_hooks
        self._hooks: dict[str, list] = {k: [] for k in HOOK_KINDS}
        self._hook_seq = 0

    def forward(self, *args):
        raise NotImplementedError

    # -- hooks ---------------------------------------------------------------------------------
    def register_hook(self, kind: str, fn, *, owner=None, order: int = ORDER_CASTS):
        """Add ``fn`` at the hook point ``kind`` (one of :data:`HOOK_KINDS`; signatures in the
        module docstring). ``owner`` labels the hook so that :meth:`remove_hooks` can take back
        everything one policy or scaler placed; ``order`` sorts the hooks of a kind (ascending,
        ties in registration order). Returns ``fn``."""
        if kind not in HOOK_KINDS:
            raise ValueError(f"unknown hook kind {kind!r}; choose from {', '.join(HOOK_KINDS)}")
        if not callable(fn):
            raise TypeError(f"a hook must be callable, got {type(fn).__name__}")
        self._hook_seq += 1
        hooks = self._hooks[kind]
        hooks.append((int(order), self._hook_seq, owner, fn))
        hooks.sort(key=lambda h: (h[0], h[1]))
        return fn

    def remove_hooks(self, owner) -> int:
        """Remove every hook of this module registered with ``owner``; returns how many."""
        n = 0
        for kind, hooks in self._hooks.items():
            keep = [h for h in hooks if h[2] is not owner]
            n += len(hooks) - len(keep)
            self._hooks[kind] = keep
        return n

    def hooks(self, kind: str) -> list:
        """The hook functions at ``kind``, in the order they run."""
        return [h[3] for h in self._hooks[kind]]

    def __call__(self, x, *args):
        for *_, hook in self._hooks["input"]:
            x = hook(self, x)
        out = self.forward(x, *args)
        for *_, hook in self._hooks["output"]:
            out = hook(self, out)
        return out

    def param(self, name: str) -> Tensor:
        """The parameter ``name`` as this forward pass sees it (after parameter hooks)."""
        p = getattr(self, name)
        for *_, hook in self._hooks["param"]:
            p = hook(self, name, p)
        return p

    def site(self, name: str, x: Tensor) -> Tensor:
        """Mark an intermediate value ``x`` as the point ``name`` (site hooks may round it)."""
        for *_, hook in self._hooks["site"]:
            x = hook(self, name, x)
        return x

    def register_buffer(self, name: str, value: np.ndarray) -> None:
        """Non-trainable state saved in :meth:`state_dict` (e.g. batch-norm running means)."""
        setattr(self, name, value)
        self._buffers.append(name)

    def named_buffers(self, prefix: str = ""):
        """``(dotted name, module, attribute)`` for every buffer here and below."""
        for mname, m in self.named_modules(prefix):
            for b in m._buffers:
                yield (f"{mname}.{b}" if mname else b), m, b

    def buffer_values(self) -> dict:
        """Copies of every buffer by dotted name (see :meth:`set_buffer_values`)."""
        return {n: np.array(getattr(m, b), copy=True) for n, m, b in self.named_buffers()}

    def set_buffer_values(self, values: dict) -> None:
        """Restore :meth:`buffer_values` output (copies, so the saved values stay intact)."""
        for n, m, b in self.named_buffers():
            setattr(m, b, np.array(values[n], copy=True))

    # -- traversal ----------------------------------------------------------------------------
    def children(self):
        """``(name, module)`` for each direct sub-module (lists/tuples of modules included)."""
        for name, v in vars(self).items():
            if isinstance(v, Module):
                yield name, v
            elif isinstance(v, (list, tuple)):
                for i, m in enumerate(v):
                    if isinstance(m, Module):
                        yield f"{name}.{i}", m

    def named_modules(self, prefix: str = ""):
        """``(dotted name, module)`` for this module (name ``prefix``) and all below it."""
        yield prefix, self
        for name, m in self.children():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def named_parameters(self, prefix: str = ""):
        """``(dotted name, Parameter)`` for every parameter, depth first in definition order."""
        seen = set()  # a parameter shared by two modules is listed once, under its first name
        for mname, m in self.named_modules(prefix):
            for name, v in vars(m).items():
                if isinstance(v, Parameter) and id(v) not in seen:
                    seen.add(id(v))
                    yield (f"{mname}.{name}" if mname else name), v

    def parameters(self) -> list[Parameter]:
        """All parameters (see :meth:`named_parameters`)."""
        return [p for _, p in self.named_parameters()]

    def train(self, mode: bool = True) -> "Module":
        """Set training mode here and below; returns self."""
        for _, m in self.named_modules():
            m.training = mode
        return self

    def eval(self) -> "Module":
        """Evaluation mode (``train(False)``)."""
        return self.train(False)

    def zero_grad(self) -> None:
        """Forget the gradients of the last backward pass."""
        for p in self.parameters():
            p.grad = None

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Copies of every parameter (master values) and buffer, by dotted name."""
        out = OrderedDict((n, p.data.copy()) for n, p in self.named_parameters())
        for mname, m in self.named_modules():
            for b in m._buffers:
                out[f"{mname}.{b}" if mname else b] = np.array(getattr(m, b), copy=True)
        return out

    def load_state_dict(self, state) -> None:
        """Set parameters and buffers from :meth:`state_dict` output; every name and shape
        must match (the error names what differs)."""
        own = self.state_dict()
        missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or extra:
            raise ValueError(f"state dict does not match the model: missing {missing}, "
                             f"unexpected {extra}")
        for k, v in own.items():
            if np.shape(state[k]) != v.shape:
                raise ValueError(f"state dict entry {k!r} has shape {np.shape(state[k])}, "
                                 f"the model's is {v.shape}")
        params = dict(self.named_parameters())
        for mname, m in self.named_modules():
            for b in m._buffers:
                key = f"{mname}.{b}" if mname else b
                setattr(m, b, np.array(state[key], dtype=np.asarray(getattr(m, b)).dtype))
        for k, p in params.items():
            p.data = np.array(state[k], dtype=p.data.dtype)

    def __repr__(self):
        inner = "".join(f"\n  ({n}): " + repr(m).replace("\n", "\n  ") for n, m in self.children())
        return f"{type(self).__name__}({self.extra_repr()}{inner}{chr(10) if inner else ''})"

    def extra_repr(self) -> str:
        return ""


def _uniform(rng, shape, bound, dtype):
    return rng.uniform(-bound, bound, shape).astype(dtype)


def _rng(seed_or_rng):
    return (seed_or_rng if isinstance(seed_or_rng, np.random.Generator)
            else np.random.default_rng(seed_or_rng))


class Linear(Module):
    """``y = x W^T + b`` with W (out, in); PyTorch's default init U(±1/sqrt(in))."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, rng=0,
                 dtype=np.float32):
        super().__init__()
        rng, bound = _rng(rng), 1 / math.sqrt(in_features)
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(_uniform(rng, (out_features, in_features), bound, dtype), dtype)
        self.bias = Parameter(_uniform(rng, (out_features,), bound, dtype), dtype) if bias else None
        self.matmul = None  #: numpy-level product for the GEMMs (None: np.matmul)

    def forward(self, x):
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Linear({self.in_features}, {self.out_features}) got input of shape "
                             f"{x.shape} (last axis must be {self.in_features})")
        y = E.matmul(x, E.transpose(self.param("weight")), self.matmul)
        return y if self.bias is None else y + self.param("bias")

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}"


class Conv2d(Module):
    """2-D convolution, weight (out, in, k, k); PyTorch's default init U(±1/sqrt(in*k*k))."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = True, rng=0, dtype=np.float32):
        super().__init__()
        rng = _rng(rng)
        k = kernel_size
        bound = 1 / math.sqrt(in_channels * k * k)
        self.in_channels, self.out_channels, self.stride, self.padding = \
            in_channels, out_channels, stride, padding
        self.weight = Parameter(_uniform(rng, (out_channels, in_channels, k, k), bound, dtype), dtype)
        self.bias = Parameter(_uniform(rng, (out_channels,), bound, dtype), dtype) if bias else None
        self.matmul = None  #: numpy-level product for the GEMMs (None: np.matmul)

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"Conv2d({self.in_channels}, {self.out_channels}) expects input "
                             f"(N, {self.in_channels}, H, W), got {x.shape}")
        return E.conv2d(x, self.param("weight"), None if self.bias is None else self.param("bias"),
                        self.stride, self.padding, self.matmul)

    def extra_repr(self):
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}, padding={self.padding}"


class _BatchNorm(Module):
    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5,
                 dtype=np.float32):
        super().__init__()
        self.num_features, self.momentum, self.eps = num_features, momentum, eps
        self.weight = Parameter(np.ones(num_features), dtype)
        self.bias = Parameter(np.zeros(num_features), dtype)
        self.register_buffer("running_mean", np.zeros(num_features, dtype))
        self.register_buffer("running_var", np.ones(num_features, dtype))

    def forward(self, x):
        if x.ndim != self.ndim:
            raise ValueError(f"{type(self).__name__} expects {self.ndim}-d input, got {x.shape}")
        return E.batch_norm(x, self.param("weight"), self.param("bias"), self.running_mean,
                            self.running_var, self.training, self.momentum, self.eps)


class BatchNorm1d(_BatchNorm):
    """Batch normalization of (N, C) features (statistics in float32)."""
    ndim = 2


class BatchNorm2d(_BatchNorm):
    """Batch normalization of (N, C, H, W) feature maps per channel (statistics in float32)."""
    ndim = 4


class LayerNorm(Module):
    """Normalization over the last axis of each example, with learned scale and shift."""

    def __init__(self, features: int, eps: float = 1e-5, dtype=np.float32):
        super().__init__()
        self.eps = eps
        self.weight = Parameter(np.ones(features), dtype)
        self.bias = Parameter(np.zeros(features), dtype)

    def forward(self, x):
        return E.layer_norm(x, self.param("weight"), self.param("bias"), self.eps)


class Embedding(Module):
    """Lookup table (num, dim), initialized N(0, 1) like PyTorch."""

    def __init__(self, num: int, dim: int, rng=0, dtype=np.float32):
        super().__init__()
        self.weight = Parameter(_rng(rng).standard_normal((num, dim)), dtype)

    def forward(self, ids):
        return E.embedding(self.param("weight"), ids)


class Dropout(Module):
    """Inverted dropout with probability ``p``. Its random masks come from
    ``(seed, number of calls so far)``; the call counter is a buffer, so a model restored from a
    checkpoint draws the same masks as one that never stopped."""

    def __init__(self, p: float = 0.5, seed: int = 0):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p, self.seed = p, seed
        self.register_buffer("calls", np.zeros((), np.int64))

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        self.calls = self.calls + 1
        return E.dropout(x, self.p, np.random.default_rng([self.seed, int(self.calls)]))


class Sequential(Module):
    """Modules applied in order; sub-modules are named ``"0"``, ``"1"``, ..."""

    exact = True  # its output is its last module's output

    def __init__(self, *modules: Module):
        super().__init__()
        self.layers = list(modules)

    def children(self):
        for i, m in enumerate(self.layers):
            yield str(i), m

    def forward(self, x):
        for m in self.layers:
            x = m(x)
        return x


class _Function(Module):
    """A parameter-free layer applying ``fn``."""

    fn = None

    def forward(self, x):
        return type(self).fn(x)


class ReLU(_Function):
    """max(x, 0) (exact: keeps any format's values)."""
    exact = True
    fn = staticmethod(E.relu)


class GELU(_Function):
    """Gaussian error linear unit."""
    fn = staticmethod(E.gelu)


class Tanh(_Function):
    """Hyperbolic tangent."""
    fn = staticmethod(E.tanh)


class Sigmoid(_Function):
    """Logistic function."""
    fn = staticmethod(E.sigmoid)


class Identity(_Function):
    """Returns its input."""
    exact = True
    fn = staticmethod(lambda x: x)


class Flatten(_Function):
    """(N, ...) -> (N, prod(...))."""
    exact = True
    fn = staticmethod(lambda x: E.reshape(x, (x.shape[0], -1)))


class MaxPool2d(Module):
    """Max pooling over k x k windows with stride k (exact)."""

    exact = True

    def __init__(self, kernel: int = 2):
        super().__init__()
        self.kernel = kernel

    def forward(self, x):
        return E.max_pool2d(x, self.kernel)


class AvgPool2d(Module):
    """Average pooling over k x k windows with stride k."""

    def __init__(self, kernel: int = 2):
        super().__init__()
        self.kernel = kernel

    def forward(self, x):
        return E.avg_pool2d(x, self.kernel)


class Residual(Module):
    """``relu(body(x) + shortcut(x))``, shortcut the identity if None (a ResNet basic block
    when ``body`` is conv-bn-relu-conv-bn). The sum is this module's output."""

    cast_output = True

    def __init__(self, body: Module, shortcut: Module | None = None):
        super().__init__()
        self.body = body
        self.shortcut = shortcut

    def forward(self, x):
        s = x if self.shortcut is None else self.shortcut(x)
        return E.relu(self.body(x) + s)
