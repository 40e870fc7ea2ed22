"""Every engine op against central finite differences in float64.

Threshold: the relative error of :func:`fpsim.engine.gradcheck` (max abs difference over
max(1, max |numeric|)) must be below 1e-6; for smooth ops at eps = 1e-6 it is about 1e-9, so a
wrong rule (errors of order 1) cannot pass.
"""

import numpy as np
import pytest

from fpsim import engine as E
from fpsim.engine import Tensor, gradcheck

TOL = 1e-6
rng = np.random.default_rng(1234)


def rnd(*shape, low=None):
    x = rng.standard_normal(shape)
    return np.abs(x) + low if low is not None else x


CASES = {
    "add_broadcast": (lambda a, b: a + b, [rnd(3, 4), rnd(4)]),
    "sub_broadcast": (lambda a, b: a - b, [rnd(3, 1), rnd(1, 5)]),
    "mul_broadcast": (lambda a, b: a * b, [rnd(2, 3, 4), rnd(3, 1)]),
    "div": (lambda a, b: a / b, [rnd(3, 4), rnd(3, 4, low=0.5)]),
    "neg": (lambda a: -a, [rnd(5)]),
    "pow_scalar": (lambda a: a ** 3, [rnd(4, 3)]),
    "pow_tensor": (lambda a, p: a ** p, [rnd(3, 4, low=0.5), rnd(3, 4)]),
    "rpow": (lambda a: 2.0 ** a, [rnd(6)]),
    "exp": (E.exp, [rnd(3, 4)]),
    "log": (E.log, [rnd(3, 4, low=0.2)]),
    "sqrt": (E.sqrt, [rnd(3, 4, low=0.2)]),
    "tanh": (E.tanh, [rnd(3, 4)]),
    "sigmoid": (E.sigmoid, [rnd(3, 4)]),
    "relu": (E.relu, [rnd(4, 5)]),
    "gelu": (E.gelu, [rnd(4, 5)]),
    "matmul_2d": (E.matmul, [rnd(3, 4), rnd(4, 5)]),
    "matmul_batched_broadcast": (E.matmul, [rnd(2, 3, 4), rnd(4, 2)]),
    "matmul_vector": (E.matmul, [rnd(4), rnd(4, 3)]),
    "matmul_matrix_vector": (E.matmul, [rnd(3, 4), rnd(4)]),
    "sum_all": (lambda a: E.sum(a), [rnd(3, 4)]),
    "sum_axis_keepdims": (lambda a: E.sum(a, axis=(0, 2), keepdims=True), [rnd(2, 3, 4)]),
    "mean_axis": (lambda a: E.mean(a, axis=1), [rnd(2, 3, 4)]),
    "max_axis": (lambda a: E.max(a, axis=-1), [rnd(3, 5)]),
    "max_all": (lambda a: E.max(a), [rnd(3, 5)]),
    "reshape": (lambda a: a.reshape(6, 2) * np.arange(12.0).reshape(6, 2), [rnd(3, 4)]),
    "transpose": (lambda a, c=rnd(4, 2, 3): E.transpose(a, (2, 0, 1)) * c, [rnd(2, 3, 4)]),
    "getitem_slice": (lambda a: a[1:, ::2], [rnd(3, 5)]),
    "getitem_repeated_ints": (lambda a: a[np.array([0, 2, 0, 0])], [rnd(3, 2)]),
    "getitem_bool": (lambda a: a[np.array([True, False, True])], [rnd(3, 2)]),
    "concatenate": (lambda a, b: E.concatenate([a, b, a], axis=1), [rnd(2, 3), rnd(2, 1)]),
    "where": (lambda a, b: E.where(np.array([[True, False, True]]), a, b), [rnd(2, 3), rnd(3)]),
    "conv2d": (lambda x, w, b: E.conv2d(x, w, b), [rnd(2, 3, 5, 5), rnd(4, 3, 3, 3), rnd(4)]),
    "conv2d_stride_pad": (lambda x, w: E.conv2d(x, w, stride=2, padding=1),
                          [rnd(2, 2, 6, 5), rnd(3, 2, 3, 2)]),
    "conv_transpose2d": (lambda x, w, b: E.conv_transpose2d(x, w, b, stride=2, padding=1),
                         [rnd(2, 3, 3, 4), rnd(3, 2, 3, 3), rnd(2)]),
    "max_pool2d": (lambda x: E.max_pool2d(x, 2), [rnd(2, 3, 4, 6)]),
    "max_pool2d_overlapping": (lambda x: E.max_pool2d(x, 3, stride=1), [rnd(1, 2, 5, 5)]),
    "avg_pool2d": (lambda x: E.avg_pool2d(x, 2), [rnd(2, 3, 4, 6)]),
    "softmax": (lambda x: E.softmax(x, axis=1), [rnd(3, 4)]),
    "log_softmax": (E.log_softmax, [rnd(3, 4)]),
    "cross_entropy": (lambda x: E.cross_entropy(x, np.array([0, 3, 1])), [rnd(3, 4)]),
    "mse": (lambda p, t: E.mse(p, t), [rnd(3, 4), rnd(3, 4)]),
    "dropout": (lambda x: E.dropout(x, 0.3, np.random.default_rng(5)), [rnd(4, 5)]),
    "embedding": (lambda w: E.embedding(w, np.array([[1, 0], [1, 3]])), [rnd(4, 3)]),
    "layer_norm": (lambda x, g, b: E.layer_norm(x, g, b), [rnd(3, 5), rnd(5), rnd(5)]),
    "layer_norm_2axes": (lambda x: E.layer_norm(x, ndim=2), [rnd(2, 3, 4)]),
    "batch_norm_train_2d": (lambda x, g, b: E.batch_norm(x, g, b, np.zeros(3), np.ones(3), True),
                            [rnd(5, 3), rnd(3), rnd(3)]),
    "batch_norm_train_4d": (lambda x, g, b: E.batch_norm(x, g, b, np.zeros(2), np.ones(2), True),
                            [rnd(3, 2, 3, 3), rnd(2), rnd(2)]),
    "batch_norm_eval": (lambda x, g, b, m=rnd(2), v=rnd(2, low=0.5):
                        E.batch_norm(x, g, b, m, v, False),
                        [rnd(3, 2, 2, 2), rnd(2), rnd(2)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient_matches_finite_differences(name):
    f, inputs = CASES[name]
    assert gradcheck(f, inputs) < TOL


def test_gradcheck_catches_a_wrong_rule():
    """The check itself can fail: a deliberately wrong derivative is reported."""
    wrong = lambda a: E.custom(a, np.sin, lambda g: g)  # d sin = cos, not 1  # noqa: E731
    assert gradcheck(wrong, [rnd(5)]) > 1e-2


def test_cotangents_accumulate_over_paths():
    x = Tensor(np.array([3.0]), requires_grad=True)
    y = x * x + x * 2.0 + x
    y.backward()
    np.testing.assert_array_equal(x.grad, [9.0])  # 2x + 3


def test_shared_value_reached_by_paths_of_different_lengths():
    """A value used directly and through a longer path gets both cotangents before its own
    rule runs (a depth-first order that marks tensors when pushed gets this wrong)."""
    x = Tensor(np.array([2.0]), requires_grad=True)
    m = x * 3.0
    y = m + (m.exp() * 1.0).log() * 2.0  # = 3 m, but the second path is longer
    y.backward()
    np.testing.assert_allclose(x.grad, [9.0], rtol=1e-15)
    assert gradcheck(lambda a: (lambda m: m + (m.exp() * 1.0).log() * 2.0)(a * 3.0),
                     [rnd(3)]) < TOL


def test_backward_seed_scales_every_gradient():
    w = Tensor(rnd(3, 2), requires_grad=True)
    x = rnd(4, 3)
    E.matmul(x, w).sum().backward(1024.0)
    np.testing.assert_array_equal(w.grad, 1024.0 * x.T @ np.ones((4, 2)))


def test_float32_stays_float32():
    a = Tensor(rnd(3, 4).astype(np.float32), requires_grad=True)
    y = E.softmax(E.gelu(a * 2 + 1) @ Tensor(rnd(4, 2).astype(np.float32)))
    assert y.dtype == np.float32
    y.sum().backward()
    assert a.grad.dtype == np.float32


def test_no_grad_records_nothing():
    a = Tensor(rnd(3), requires_grad=True)
    with E.no_grad():
        y = a * 2
    assert not y.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_deep_graph_has_no_recursion_limit():
    x = Tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0
    y.backward()
    assert x.grad[0] == 1.0


@pytest.mark.parametrize("call, message", [
    (lambda: E.matmul(rnd(3, 4), rnd(5, 2)), "do not align"),
    (lambda: E.conv2d(rnd(1, 3, 4, 4), rnd(2, 2, 3, 3)), "same C"),
    (lambda: E.conv2d(rnd(1, 1, 2, 2), rnd(1, 1, 3, 3)), "larger than the padded input"),
    (lambda: E.cross_entropy(rnd(3, 4), np.array([0, 4, 1])), "0..3"),
    (lambda: E.cross_entropy(rnd(3, 4), np.array([0.0, 1, 1])), "integers"),
    (lambda: E.mse(rnd(3), rnd(4)), "shape"),
    (lambda: E.dropout(rnd(3), 1.0, np.random.default_rng()), "probability"),
    (lambda: E.embedding(rnd(3, 2), np.array([3])), "0..2"),
    (lambda: Tensor(np.array(["a"])), "real numbers"),
])
def test_bad_input_is_named(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_tags_pass_through_ordinary_ops_and_merge_where_paths_meet():
    """A tagged op sees the tag of its cotangent; ordinary ops pass tags on; where two
    differently tagged cotangents meet, the merge function combines them."""
    seen = []

    def mark(label):  # a tagged identity op that records the tag and relabels
        def bwd(g, tag):
            seen.append((label, tag))
            return g, f"{tag}>{label}"
        return lambda t: E.custom(t, lambda v: v, bwd, tagged=True)
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = mark("left")(E.exp(x) * 2.0) + mark("right")(x * 3.0)
    merged = []

    def merge(a, b):
        merged.append((a[1], b[1]))
        return a[0] + b[0], "merged"
    y.sum().backward(tag="top", merge=merge)
    assert sorted(seen) == [("left", "top"), ("right", "top")]
    assert sorted(merged[0]) == ["top>left", "top>right"]
    np.testing.assert_allclose(x.grad, 2 * np.exp([1.0, 2.0]) + 3.0, rtol=1e-15)
    with pytest.raises(ValueError, match="different tags"):
        (mark("a")(x) + mark("b")(x)).sum().backward(tag="t")


def test_review_regressions_negative_axes_dtype_and_vector_dot():
    """transpose with negative axes, max keeping float32, 1-D @ 1-D, mse with a float64 target."""
    assert gradcheck(lambda a, c=rnd(3, 2): E.transpose(a, (-1, 0)) * c, [rnd(2, 3)]) < TOL
    a = Tensor(rnd(3, 4).astype(np.float32), requires_grad=True)
    E.max(a, axis=1).sum().backward()
    assert a.grad.dtype == np.float32
    y = E.matmul(Tensor(np.array([1.0, 2.0])), Tensor(np.array([3.0, 4.0])))
    assert y.shape == () and y.item() == 11.0
    assert gradcheck(E.matmul, [rnd(4), rnd(4)]) < TOL
    p = Tensor(rnd(3).astype(np.float32), requires_grad=True)
    assert E.mse(p, np.zeros(3)).dtype == np.float32
