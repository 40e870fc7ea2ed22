"""Neural-network primitives: convolution (im2col), pooling, softmax, losses, normalization,
dropout, embedding. Each forward is followed by its derivative rule, as in :mod:`.ops`.

Images are NCHW; convolution weights are (out_channels, in_channels, kh, kw), transposed
convolution weights (in_channels, out_channels, kh, kw) as in PyTorch.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from fpsim.engine import ops
from fpsim.engine.tensor import Tensor, lift, node

# -- convolution -------------------------------------------------------------------------------


def _pair2(v, what):
    t = (v, v) if np.ndim(v) == 0 else tuple(v)
    if len(t) != 2 or any(int(i) != i or i < 0 for i in t):
        raise ValueError(f"{what} must be a non-negative integer or a pair of them, got {v!r}")
    return int(t[0]), int(t[1])


def _windows(x: np.ndarray, kh: int, kw: int, sh: int, sw: int) -> np.ndarray:
    """Strided view (N, C, Ho, Wo, kh, kw) of the kh x kw windows of ``x`` (N, C, H, W)."""
    return sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]


def _im2col(x: np.ndarray, kh, kw, sh, sw) -> tuple[np.ndarray, tuple]:
    """Rows (N*Ho*Wo, C*kh*kw): one row per output position, the window it sees."""
    win = _windows(x, kh, kw, sh, sw)
    n, c, ho, wo = win.shape[:4]
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * kh * kw), (n, ho, wo)


def _col2im(cols: np.ndarray, xshape, kh, kw, sh, sw) -> np.ndarray:
    """Adjoint of :func:`_im2col`: add each row's window back to where it came from."""
    n, c, h, w = xshape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    cols = cols.reshape(n, ho, wo, c, kh, kw).transpose(0, 3, 4, 5, 1, 2)  # N C kh kw Ho Wo
    out = np.zeros(xshape, cols.dtype)
    for i in range(kh):  # kh*kw strided adds: fast for the small kernels of vision nets
        for j in range(kw):
            out[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] += cols[:, :, i, j]
    return out


def _pad(x, ph, pw):
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x


def _unpad(x, ph, pw):
    return x[:, :, ph:x.shape[2] - ph, pw:x.shape[3] - pw]


def conv_patches(x: np.ndarray, kh: int, kw: int, stride=1, padding=0) -> np.ndarray:
    """The rows :func:`conv2d` multiplies by its weight: ``(N*Ho*Wo, C*kh*kw)``, one row per
    output position (the zero-padded window it sees), in the order of ``w.reshape(O, -1)``'s
    columns. ``x`` is a numpy (N, C, H, W) array."""
    (sh, sw), (ph, pw) = _pair2(stride, "stride"), _pair2(padding, "padding")
    return _im2col(_pad(np.asarray(x), ph, pw), kh, kw, sh, sw)[0]


def conv2d(x, w, b=None, stride=1, padding=0, impl=None) -> Tensor:
    """2-D cross-correlation (PyTorch's ``conv2d``) by im2col and one matrix product.

    Args:
        x: (N, C, H, W) input; w: (O, C, kh, kw) weight; b: optional (O,) bias.
        stride, padding: ints or pairs (zero padding on both sides).
        impl: numpy-level matrix product for the three GEMMs (see :func:`ops.matmul`).
    """
    x, w = lift(x), lift(w)
    if x.ndim != 4 or w.ndim != 4 or x.shape[1] != w.shape[1]:
        raise ValueError(f"conv2d expects x (N, C, H, W) and w (O, C, kh, kw) with the same C, "
                         f"got {x.shape} and {w.shape}")
    (sh, sw), (ph, pw) = _pair2(stride, "stride"), _pair2(padding, "padding")
    o, c, kh, kw = w.shape
    if sh == 0 or sw == 0:
        raise ValueError("stride must be positive")
    xp = _pad(x.data, ph, pw)
    if xp.shape[2] < kh or xp.shape[3] < kw:
        raise ValueError(f"conv2d kernel {kh}x{kw} is larger than the padded input "
                         f"{xp.shape[2]}x{xp.shape[3]}")
    mm = np.matmul if impl is None else impl
    cols, (n, ho, wo) = _im2col(xp, kh, kw, sh, sw)
    wm = w.data.reshape(o, -1)
    y = mm(cols, wm.T).reshape(n, ho, wo, o).transpose(0, 3, 1, 2)

    def vjp(g):
        gm = g.transpose(0, 2, 3, 1).reshape(-1, o)
        gx = (_unpad(_col2im(mm(gm, wm), xp.shape, kh, kw, sh, sw), ph, pw)
              if x.requires_grad else None)
        gw = mm(gm.T, cols).reshape(w.shape) if w.requires_grad else None
        return gx, gw
    out = node(np.ascontiguousarray(y), (x, w), vjp)
    return out if b is None else ops.add(out, ops.reshape(b, (1, -1, 1, 1)))


def conv_transpose2d(x, w, b=None, stride=1, padding=0, impl=None) -> Tensor:
    """Transposed convolution (PyTorch's ``conv_transpose2d``): the adjoint of :func:`conv2d`
    with respect to its input. Output size (H-1)*stride - 2*padding + kh.

    Args:
        x: (N, C_in, H, W); w: (C_in, C_out, kh, kw); b: optional (C_out,).
    """
    x, w = lift(x), lift(w)
    if x.ndim != 4 or w.ndim != 4 or x.shape[1] != w.shape[0]:
        raise ValueError(f"conv_transpose2d expects x (N, C_in, H, W) and w (C_in, C_out, kh, kw), "
                         f"got {x.shape} and {w.shape}")
    (sh, sw), (ph, pw) = _pair2(stride, "stride"), _pair2(padding, "padding")
    ci, co, kh, kw = w.shape
    n, _, h, wd = x.shape
    full = (n, co, (h - 1) * sh + kh, (wd - 1) * sw + kw)
    if full[2] <= 2 * ph or full[3] <= 2 * pw:
        raise ValueError(f"conv_transpose2d padding {ph, pw} leaves no output")
    mm = np.matmul if impl is None else impl
    xm = x.data.transpose(0, 2, 3, 1).reshape(-1, ci)
    wm = w.data.reshape(ci, -1)
    y = _unpad(_col2im(mm(xm, wm), full, kh, kw, sh, sw), ph, pw)

    def vjp(g):
        cols, _ = _im2col(_pad(g, ph, pw), kh, kw, sh, sw)
        gx = (mm(cols, wm.T).reshape(n, h, wd, ci).transpose(0, 3, 1, 2)
              if x.requires_grad else None)
        gw = mm(xm.T, cols).reshape(w.shape) if w.requires_grad else None
        return gx, gw
    out = node(np.ascontiguousarray(y), (x, w), vjp)
    return out if b is None else ops.add(out, ops.reshape(b, (1, -1, 1, 1)))


# -- pooling -------------------------------------------------------------------------------------


def max_pool2d(x, kernel=2, stride=None) -> Tensor:
    """Maximum over kernel windows (no padding); the cotangent goes to the first maximum of
    each window."""
    x = lift(x)
    (kh, kw) = _pair2(kernel, "kernel")
    (sh, sw) = _pair2(kernel if stride is None else stride, "stride")
    win = _windows(x.data, kh, kw, sh, sw)
    n, c, ho, wo = win.shape[:4]
    flat = win.reshape(n, c, ho, wo, kh * kw)
    arg = flat.argmax(axis=-1)
    y = np.take_along_axis(flat, arg[..., None], -1)[..., 0]

    def vjp(g):
        cols = np.zeros((n, c, ho, wo, kh * kw), g.dtype)
        np.put_along_axis(cols, arg[..., None], g[..., None], -1)
        cols = cols.reshape(n, c, ho, wo, kh, kw).transpose(0, 2, 3, 1, 4, 5)
        return (_col2im(cols, x.shape, kh, kw, sh, sw),)
    return node(y, (x,), vjp)


def avg_pool2d(x, kernel=2, stride=None) -> Tensor:
    """Mean over kernel windows (no padding)."""
    x = lift(x)
    (kh, kw) = _pair2(kernel, "kernel")
    (sh, sw) = _pair2(kernel if stride is None else stride, "stride")
    win = _windows(x.data, kh, kw, sh, sw)
    n, c, ho, wo = win.shape[:4]
    y = win.mean(axis=(-2, -1)).astype(x.dtype)

    def vjp(g):
        cols = np.broadcast_to((g / (kh * kw))[..., None, None], (n, c, ho, wo, kh, kw))
        return (_col2im(cols.transpose(0, 2, 3, 1, 4, 5), x.shape, kh, kw, sh, sw),)
    return node(y, (x,), vjp)


# -- softmax and losses -----------------------------------------------------------------------------


def _log_softmax(z: np.ndarray, axis: int) -> np.ndarray:
    shifted = z - z.max(axis=axis, keepdims=True)  # exp never overflows
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(x, axis: int = -1) -> Tensor:
    """``exp(x) / sum(exp(x))`` along ``axis`` (max-shifted)."""
    x = lift(x)
    y = np.exp(_log_softmax(x.data, axis))
    return node(y, (x,), lambda g: (y * (g - (g * y).sum(axis=axis, keepdims=True)),))


def log_softmax(x, axis: int = -1) -> Tensor:
    """``x - log(sum(exp(x)))`` along ``axis``."""
    x = lift(x)
    y = _log_softmax(x.data, axis)
    return node(y, (x,), lambda g: (g - np.exp(y) * g.sum(axis=axis, keepdims=True),))


def _labels(labels, n: int, k: int) -> np.ndarray:
    lab = np.asarray(labels.data if isinstance(labels, Tensor) else labels)
    if lab.shape != (n,) or lab.dtype.kind not in "iu":
        raise ValueError(f"labels must be {n} integers (one per row of logits), got "
                         f"{lab.dtype} array of shape {lab.shape}")
    if n and (lab.min() < 0 or lab.max() >= k):
        raise ValueError(f"labels must lie in 0..{k - 1}, got {lab.min()}..{lab.max()}")
    return lab


def cross_entropy(logits, labels) -> Tensor:
    """Mean negative log-likelihood of integer ``labels`` under ``softmax(logits)``.

    Args:
        logits: (N, K) scores; labels: (N,) integers in 0..K-1.
    """
    logits = lift(logits)
    if logits.ndim != 2:
        raise ValueError(f"cross_entropy expects (N, K) logits, got shape {logits.shape}")
    n, k = logits.shape
    lab = _labels(labels, n, k)
    logp = _log_softmax(logits.data, 1)
    rows = np.arange(n)
    loss = -logp[rows, lab].mean()

    def vjp(g):
        d = np.exp(logp)
        d[rows, lab] -= 1
        return (d * (g / n),)
    return node(np.asarray(loss, logits.dtype), (logits,), vjp)


def mse(pred, target) -> Tensor:
    """Mean squared error ``mean((pred - target)^2)``."""
    pred = lift(pred)
    target = target if isinstance(target, Tensor) else Tensor(target, dtype=pred.dtype)
    if pred.shape != target.shape:
        raise ValueError(f"mse: prediction shape {pred.shape} != target shape {target.shape}")
    d = ops.sub(pred, target)
    return ops.mean(ops.mul(d, d))


# -- regularization and lookup -------------------------------------------------------------------


def dropout(x, p: float, rng: np.random.Generator, training: bool = True) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by 1/(1-p) (inverted
    dropout); identity when not training or ``p == 0``. Randomness comes from ``rng``."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    x = lift(x)
    if not training or p == 0:
        return x
    keep = (rng.random(x.shape) >= p) * x.dtype.type(1 / (1 - p))
    return node(x.data * keep, (x,), lambda g: (g * keep,))


def embedding(weight, ids) -> Tensor:
    """Rows of ``weight`` (V, D) selected by integer ``ids`` (any shape): shape ids.shape + (D,)."""
    weight = lift(weight)
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise ValueError(f"embedding ids must be integers, got {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= weight.shape[0]):
        raise ValueError(f"embedding ids must lie in 0..{weight.shape[0] - 1}, "
                         f"got {ids.min()}..{ids.max()}")
    return ops.getitem(weight, ids)


# -- normalization ---------------------------------------------------------------------------------


def normalize(x, axes, eps: float) -> Tensor:
    """``(x - mean) / sqrt(var + eps)`` over ``axes`` (biased variance), the shared core of
    layer and batch normalization. The derivative rule is the closed form
    ``inv * (g - mean(g) - xhat * mean(g * xhat))``."""
    x = lift(x)
    mu = x.data.mean(axis=axes, keepdims=True)
    xc = x.data - mu
    inv = 1 / np.sqrt((xc * xc).mean(axis=axes, keepdims=True) + x.dtype.type(eps))
    xhat = xc * inv
    return node(xhat, (x,), lambda g: (inv * (g - g.mean(axis=axes, keepdims=True)
                                              - xhat * (g * xhat).mean(axis=axes, keepdims=True)),))


def layer_norm(x, gamma=None, beta=None, eps: float = 1e-5, ndim: int = 1) -> Tensor:
    """Normalize over the last ``ndim`` axes of each example, then scale and shift."""
    x = lift(x)
    y = normalize(x, tuple(range(x.ndim - ndim, x.ndim)), eps)
    y = y if gamma is None else ops.mul(y, gamma)
    return y if beta is None else ops.add(y, beta)


def batch_norm(x, gamma, beta, running_mean: np.ndarray, running_var: np.ndarray,
               training: bool, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Batch normalization over every axis but the channel axis 1 ((N, C) or (N, C, H, W)).

    Training normalizes with the batch statistics and updates ``running_mean`` /
    ``running_var`` in place (``r = (1 - momentum) r + momentum * batch``, unbiased variance as
    in PyTorch); evaluation uses the running statistics.
    """
    x = lift(x)
    if x.ndim not in (2, 4) or x.shape[1] != running_mean.shape[0]:
        raise ValueError(f"batch_norm expects (N, {running_mean.shape[0]}) or "
                         f"(N, {running_mean.shape[0]}, H, W) input, got {x.shape}")
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if training:
        m = x.size // x.shape[1]
        if m < 2:
            raise ValueError("batch_norm in training needs more than one value per channel")
        mean = x.data.mean(axis=axes)
        var = x.data.var(axis=axes)
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += momentum * var * (m / (m - 1))
        y = normalize(x, axes, eps)
    else:
        inv = (1 / np.sqrt(running_var + eps)).astype(x.dtype)
        y = ops.mul(ops.sub(x, running_mean.astype(x.dtype).reshape(shape)), inv.reshape(shape))
    return ops.add(ops.mul(y, ops.reshape(gamma, shape)), ops.reshape(beta, shape))
