"""Hand-derived numpy forward and backward passes of the MLP and the LeNet CNN.

Written without the engine, from the textbook derivatives, so they serve two purposes: the
oracle that the engine's gradients of whole networks are tested against, and the "plain numpy"
baseline of the training-step benchmark. Parameter names match :mod:`fpsim.models` (``mlp``:
``net.1``, ``net.3``, ... ; ``cnn``: ``features.0``, ``features.3``, ``classifier.0``,
``classifier.2``). Convolutions here are stride 1 with "same" padding, as LeNet uses them.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def softmax_xent(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of logits ``z`` (N, K) for labels ``y`` and its gradient dL/dz =
    (softmax(z) - onehot(y)) / N."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    n = len(y)
    loss = -np.log(p[np.arange(n), y]).mean()
    p[np.arange(n), y] -= 1
    return float(loss), p / n


def mlp(params: dict, x: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
    """Loss and gradients of ``Flatten -> (Linear -> ReLU)* -> Linear`` with cross-entropy.

    ``params``: ``net.{i}.weight`` (out, in) and ``net.{i}.bias`` for the Linear layers in order.
    """
    names = sorted({k.rsplit(".", 1)[0] for k in params}, key=lambda s: int(s.split(".")[1]))
    h = x.reshape(len(x), -1)
    inputs, masks = [], []
    for i, name in enumerate(names):
        inputs.append(h)
        z = h @ params[name + ".weight"].T + params[name + ".bias"]
        if i < len(names) - 1:
            masks.append(z > 0)
            h = z * masks[-1]
        else:
            h = z
    loss, dz = softmax_xent(h, y)
    grads = {}
    for i in reversed(range(len(names))):
        name = names[i]
        grads[name + ".weight"] = dz.T @ inputs[i]   # z = h W^T + b
        grads[name + ".bias"] = dz.sum(axis=0)
        if i:
            dz = (dz @ params[name + ".weight"]) * masks[i - 1]
    return loss, grads


def _conv_same(x, w):
    """Stride-1 cross-correlation with zero padding (k-1)/2: x (N, C, H, W), w (O, C, k, k)."""
    k = w.shape[2]
    p = (k - 1) // 2
    win = sliding_window_view(np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))), (k, k), axis=(2, 3))
    return np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2)


def _conv_backward(x, w, dy):
    """Gradients of :func:`_conv_same`: dW[o,c,i,j] = sum dy[n,o,h,w] xpad[n,c,h+i,w+j], and
    dx = the same-padded correlation of dy with the kernel flipped in space and transposed in
    channels (the adjoint of a stride-1 correlation)."""
    k = w.shape[2]
    p = (k - 1) // 2
    win = sliding_window_view(np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))), (k, k), axis=(2, 3))
    dw = np.tensordot(dy, win, axes=([0, 2, 3], [0, 2, 3]))
    dx = _conv_same(dy, w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    return dx, dw


def _pool(x):
    """2x2 max pooling with stride 2."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def _pool_backward(x, y, dy):
    """Cotangent to every position equal to its window's maximum (here only ties of zeros
    after a ReLU, whose own derivative then removes them)."""
    up = lambda a: a.repeat(2, axis=2).repeat(2, axis=3)  # noqa: E731
    return (x == up(y)) * up(dy)


def lenet(params: dict, x: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
    """Loss and gradients of the LeNet of :mod:`fpsim.models.lenet` (conv-relu-pool twice,
    Linear-ReLU-Linear) with cross-entropy."""
    P = params
    z1 = _conv_same(x, P["features.0.weight"]) + P["features.0.bias"][:, None, None]
    a1 = np.maximum(z1, 0)
    p1 = _pool(a1)
    z2 = _conv_same(p1, P["features.3.weight"]) + P["features.3.bias"][:, None, None]
    a2 = np.maximum(z2, 0)
    p2 = _pool(a2)
    f = p2.reshape(len(x), -1)
    z3 = f @ P["classifier.0.weight"].T + P["classifier.0.bias"]
    a3 = np.maximum(z3, 0)
    z4 = a3 @ P["classifier.2.weight"].T + P["classifier.2.bias"]
    loss, d4 = softmax_xent(z4, y)
    g = {"classifier.2.weight": d4.T @ a3, "classifier.2.bias": d4.sum(0)}
    d3 = (d4 @ P["classifier.2.weight"]) * (z3 > 0)
    g["classifier.0.weight"], g["classifier.0.bias"] = d3.T @ f, d3.sum(0)
    dp2 = (d3 @ P["classifier.0.weight"]).reshape(p2.shape)
    dz2 = _pool_backward(a2, p2, dp2) * (z2 > 0)
    dp1, g["features.3.weight"] = _conv_backward(p1, P["features.3.weight"], dz2)
    g["features.3.bias"] = dz2.sum(axis=(0, 2, 3))
    dz1 = _pool_backward(a1, p1, dp1) * (z1 > 0)
    _, g["features.0.weight"] = _conv_backward(x, P["features.0.weight"], dz1)
    g["features.0.bias"] = dz1.sum(axis=(0, 2, 3))
    return loss, g


def sgd_momentum(params: dict, grads: dict, bufs: dict, lr: float, mu: float) -> None:
    """PyTorch's SGD with momentum in place: ``b = mu b + g`` (b = g at first), ``w -= lr b``."""
    for k, g in grads.items():
        bufs[k] = g.copy() if k not in bufs else mu * bufs[k] + g
        params[k] -= lr * bufs[k]
