"""A small reverse-mode autodiff engine over numpy (knows nothing of number formats).

``Tensor`` plus a table of primitive ops (:mod:`.ops`, :mod:`.nnops`), each followed by its
vector-Jacobian product, and one topological backward pass (:meth:`Tensor.backward`).
"""

from fpsim.engine.gradcheck import gradcheck
from fpsim.engine.nnops import avg_pool2d, batch_norm, conv2d, conv_transpose2d, cross_entropy, dropout, embedding, layer_norm, log_softmax, max_pool2d, mse, normalize, softmax
from fpsim.engine.ops import add, concatenate, div, exp, gelu, getitem, log, matmul, max, mean, mul, neg, pow, relu, reshape, sigmoid, sqrt, sub, sum, tanh, transpose, where
from fpsim.engine.tensor import Tensor, custom, no_grad

__all__ = [
    "Tensor", "add", "avg_pool2d", "batch_norm", "concatenate", "conv2d", "conv_transpose2d",
    "cross_entropy", "custom", "div", "dropout", "embedding", "exp", "gelu", "getitem",
    "gradcheck", "layer_norm", "log", "log_softmax", "matmul", "max", "max_pool2d", "mean", "mse",
    "mul", "neg", "no_grad", "normalize", "pow", "relu", "reshape", "sigmoid", "softmax", "sqrt",
    "sub", "sum", "tanh", "transpose", "where",
]
