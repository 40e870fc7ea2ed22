"""Layers (:mod:`fpsim.nn`): names, forward values against numpy, state, modes, hooks, errors.

Forward values are compared exactly where the numpy reference performs the same float32
operations (Linear, pooling, reshapes, lookups, dropout scaling); otherwise in float64 at a
tolerance of 1e-12 (convolution by a direct loop, normalization layers), far below any
error an incorrect formula would make.
"""

import math

import numpy as np
import pytest

from fpsim import engine as E
from fpsim.training import nn
from fpsim.engine import Tensor

F32, F64 = np.float32, np.float64
TOL = 1e-12


def names(model):
    return [n for n, _ in model.named_parameters()]


def tensor(shape, seed=0, dtype=F32, scale=1.0, shift=0.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale + shift).astype(dtype)


# -- names ---------------------------------------------------------------------------------


def test_sequential_parameter_names():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    assert names(model) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert [n for n, _ in model.named_modules()] == ["", "0", "1", "2"]
    assert model.parameters()[0] is model.layers[0].weight
    assert model.parameters()[3] is model.layers[2].bias


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 5, rng=1), nn.Tanh(),
                                     nn.Sequential(nn.Linear(5, 5, rng=2, bias=False)))
        self.scale = nn.Parameter(np.ones(5))
        self.blocks = [nn.Linear(5, 5, rng=3), nn.LayerNorm(5)]
        self.head = nn.Linear(5, 2, rng=4)

    def forward(self, x):
        x = self.encoder(x) * self.param("scale")
        for b in self.blocks:
            x = b(x)
        return self.head(x)


NET_NAMES = ["scale", "encoder.0.weight", "encoder.0.bias", "encoder.2.0.weight",
             "blocks.0.weight", "blocks.0.bias", "blocks.1.weight", "blocks.1.bias",
             "head.weight", "head.bias"]


def test_nested_parameter_names_are_dotted_paths_in_definition_order():
    # own parameters first, then sub-modules depth first in assignment order (as PyTorch);
    # lists of modules are numbered, Linear(bias=False) has no bias entry
    assert names(Net()) == NET_NAMES
    assert names(Net()) == NET_NAMES  # stable across constructions
    assert [n for n, _ in Net().named_modules()] == [
        "", "encoder", "encoder.0", "encoder.1", "encoder.2", "encoder.2.0", "blocks.0",
        "blocks.1", "head"]
    assert names(Net().encoder) == ["0.weight", "0.bias", "2.0.weight"]
    assert names(nn.Linear(2, 2)) == ["weight", "bias"]
    assert [n for n, _ in nn.Linear(2, 2).named_parameters("fc")] == ["fc.weight", "fc.bias"]


def test_residual_names():
    body = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1))
    block = nn.Residual(body, nn.Conv2d(2, 4, 1))
    assert names(block) == ["body.0.weight", "body.0.bias", "body.1.weight", "body.1.bias",
                            "body.3.weight", "body.3.bias", "shortcut.weight", "shortcut.bias"]
    assert list(block.state_dict()) == names(block) + ["body.1.running_mean",
                                                       "body.1.running_var"]
    ident = nn.Residual(nn.Sequential(nn.Linear(3, 3)))
    assert names(ident) == ["body.0.weight", "body.0.bias"]


def test_residual_forward():
    body = nn.Linear(3, 3, rng=5)
    x = tensor((4, 3), seed=1)
    y = nn.Residual(body)(Tensor(x)).data
    want = x @ body.weight.data.T + body.bias.data + x
    np.testing.assert_array_equal(y, np.maximum(want, 0))
    sc = nn.Linear(3, 3, rng=6)
    y2 = nn.Residual(body, sc)(Tensor(x)).data
    want2 = (x @ body.weight.data.T + body.bias.data) + (x @ sc.weight.data.T + sc.bias.data)
    np.testing.assert_array_equal(y2, np.maximum(want2, 0))


# -- Linear / Conv2d ---------------------------------------------------------------------------


def test_linear_forward_exact():
    lin = nn.Linear(4, 3, rng=2)
    x = tensor((5, 4), seed=3)
    y = lin(Tensor(x))
    assert y.dtype == F32 and y.shape == (5, 3)
    np.testing.assert_array_equal(y.data, x @ lin.weight.data.T + lin.bias.data)
    xb = tensor((2, 5, 4), seed=4)  # leading batch axes
    np.testing.assert_array_equal(lin(Tensor(xb)).data, xb @ lin.weight.data.T + lin.bias.data)
    nob = nn.Linear(4, 3, rng=2, bias=False)
    assert nob.bias is None
    np.testing.assert_array_equal(nob(Tensor(x)).data, x @ nob.weight.data.T)


def conv_loop(x, w, b, stride, pad):
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    xp = np.zeros((n, c, h + 2 * pad, wd + 2 * pad))
    xp[:, :, pad:pad + h, pad:pad + wd] = x
    ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    y = np.zeros((n, o, ho, wo))
    for ni in range(n):
        for oi in range(o):
            for i in range(ho):
                for j in range(wo):
                    acc = b[oi]
                    for ci in range(c):
                        for di in range(k):
                            for dj in range(k):
                                acc += (xp[ni, ci, i * stride + di, j * stride + dj]
                                        * w[oi, ci, di, dj])
                    y[ni, oi, i, j] = acc
    return y


@pytest.mark.parametrize("stride,pad", [(1, 0), (2, 1), (1, 2)])
def test_conv2d_forward_against_direct_loop(stride, pad):
    conv = nn.Conv2d(3, 4, 3, stride=stride, padding=pad, rng=7, dtype=F64)
    x = tensor((2, 3, 5, 6), seed=8, dtype=F64)
    y = conv(Tensor(x))
    want = conv_loop(x, conv.weight.data, conv.bias.data, stride, pad)
    assert y.dtype == F64 and y.shape == want.shape
    np.testing.assert_allclose(y.data, want, rtol=TOL, atol=TOL)


def test_conv2d_without_bias():
    conv = nn.Conv2d(2, 3, 2, bias=False, rng=1, dtype=F64)
    x = tensor((1, 2, 4, 4), seed=2, dtype=F64)
    want = conv_loop(x, conv.weight.data, np.zeros(3), 1, 0)
    np.testing.assert_allclose(conv(Tensor(x)).data, want, rtol=TOL, atol=TOL)


def test_init_bounds_fan_in():
    lin = nn.Linear(50, 40, rng=3)
    bound = 1 / math.sqrt(50)
    for p in (lin.weight, lin.bias):
        assert p.dtype == F32
        assert np.abs(p.data).max() <= bound
    assert np.abs(lin.weight.data).max() > 0.95 * bound  # uses the whole range, not a smaller one
    conv = nn.Conv2d(3, 16, 3, rng=4)
    cbound = 1 / math.sqrt(3 * 3 * 3)
    assert conv.weight.shape == (16, 3, 3, 3) and conv.bias.shape == (16,)
    assert np.abs(conv.weight.data).max() <= cbound
    assert np.abs(conv.bias.data).max() <= cbound
    assert np.abs(conv.weight.data).max() > 0.95 * cbound
    emb = nn.Embedding(1000, 16, rng=5)
    assert abs(emb.weight.data.mean()) < 0.02 and abs(emb.weight.data.std() - 1) < 0.02


def test_seeded_init_is_reproducible():
    for make in (lambda r: nn.Linear(6, 4, rng=r), lambda r: nn.Conv2d(2, 3, 3, rng=r),
                 lambda r: nn.Embedding(10, 3, rng=r)):
        a, b, c = make(11), make(11), make(12)
        for (na, pa), (_, pb), (_, pc) in zip(a.named_parameters(), b.named_parameters(),
                                              c.named_parameters()):
            np.testing.assert_array_equal(pa.data, pb.data, err_msg=na)
            assert not np.array_equal(pa.data, pc.data), na
    gen = np.random.default_rng(0)  # a shared Generator gives each layer fresh numbers
    l1, l2 = nn.Linear(3, 3, rng=gen), nn.Linear(3, 3, rng=gen)
    assert not np.array_equal(l1.weight.data, l2.weight.data)
    assert nn.Linear(3, 2, dtype=F64).weight.dtype == F64


# -- state dict ---------------------------------------------------------------------------------


def make_model(seed):
    return nn.Sequential(nn.Linear(4, 3, rng=seed), nn.BatchNorm1d(3), nn.Dropout(0.5, seed=3),
                         nn.Linear(3, 2, rng=seed + 1))


def test_state_dict_keys_and_copies():
    m = make_model(0)
    sd = m.state_dict()
    assert list(sd) == ["0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias",
                        "1.running_mean", "1.running_var", "2.calls"]
    sd["0.weight"][...] = 0
    sd["1.running_mean"][...] = 5
    assert m.layers[0].weight.data.any() and not m.layers[1].running_mean.any()


def test_state_dict_round_trip_params_and_buffers():
    src = make_model(0)
    for i in range(3):  # move the batch-norm statistics and the dropout counter
        src(Tensor(tensor((8, 4), seed=i, shift=1.0)))
    sd = src.state_dict()
    assert int(sd["2.calls"]) == 3
    assert not np.array_equal(sd["1.running_mean"], np.zeros(3))

    dst = make_model(10)
    dst.load_state_dict(sd)
    got = dst.state_dict()
    assert list(got) == list(sd)
    for k in sd:
        assert got[k].dtype == sd[k].dtype, k
        np.testing.assert_array_equal(got[k], sd[k], err_msg=k)
    for k in sd:  # loading copied the arrays
        sd[k][...] = 0
    assert dst.layers[0].weight.data.any() and int(dst.state_dict()["2.calls"]) == 3

    x = tensor((6, 4), seed=20)
    np.testing.assert_array_equal(dst(Tensor(x)).data, src(Tensor(x)).data)  # training mode
    src.eval(), dst.eval()
    np.testing.assert_array_equal(dst(Tensor(x)).data, src(Tensor(x)).data)
    for k, v in src.state_dict().items():
        np.testing.assert_array_equal(dst.state_dict()[k], v, err_msg=k)


def test_load_state_dict_errors():
    m = make_model(0)
    sd = m.state_dict()
    missing = dict(sd)
    del missing["0.bias"]
    with pytest.raises(ValueError, match=r"missing \['0.bias'\], unexpected \[\]"):
        m.load_state_dict(missing)
    extra = dict(sd, **{"4.weight": np.zeros(2)})
    with pytest.raises(ValueError, match=r"missing \[\], unexpected \['4.weight'\]"):
        m.load_state_dict(extra)
    before = m.state_dict()
    bad = dict(sd)
    bad["0.bias"] = np.zeros(3)                     # valid, but must not be applied ...
    bad["3.weight"] = np.zeros((3, 2), F32)         # ... because this one is wrong
    with pytest.raises(ValueError, match=r"entry '3.weight' has shape \(3, 2\), "
                                         r"the model's is \(2, 3\)"):
        m.load_state_dict(bad)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    bad_buf = dict(sd, **{"1.running_var": np.ones(4, F32)})
    with pytest.raises(ValueError, match="'1.running_var' has shape"):
        m.load_state_dict(bad_buf)


# -- batch norm ----------------------------------------------------------------------------------


def set_affine(bn, seed):
    rng = np.random.default_rng(seed)
    bn.weight.data = rng.uniform(0.5, 2, bn.num_features).astype(bn.weight.dtype)
    bn.bias.data = rng.standard_normal(bn.num_features).astype(bn.bias.dtype)


def bn_ref(x, axes, gamma, beta, eps=1e-5):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma.reshape(shape) + beta.reshape(shape)


@pytest.mark.parametrize("cls,shape,axes", [
    (nn.BatchNorm1d, (8, 3), (0,)),
    (nn.BatchNorm2d, (4, 3, 2, 5), (0, 2, 3)),
])
def test_batchnorm_training_and_running_stats(cls, shape, axes):
    bn = cls(3, dtype=F64)
    set_affine(bn, 1)
    assert bn.running_mean.dtype == bn.running_var.dtype == F64
    m = int(np.prod(shape)) // 3
    rm, rv = np.zeros(3), np.ones(3)
    for step in range(3):
        x = tensor(shape, seed=step, dtype=F64, scale=2.0 + step, shift=[1.0, -3.0, 0.5][step])
        y = bn(Tensor(x)).data
        np.testing.assert_allclose(y, bn_ref(x, axes, bn.weight.data, bn.bias.data),
                                   rtol=TOL, atol=TOL)
        # PyTorch: r = 0.9 r + 0.1 batch, with the unbiased batch variance
        rm = 0.9 * rm + 0.1 * x.mean(axis=axes)
        rv = 0.9 * rv + 0.1 * x.var(axis=axes, ddof=1)
        assert np.var(x, axis=axes).mean() * m / (m - 1) == pytest.approx(
            x.var(axis=axes, ddof=1).mean())
        np.testing.assert_allclose(bn.running_mean, rm, rtol=TOL, atol=TOL)
        np.testing.assert_allclose(bn.running_var, rv, rtol=TOL, atol=TOL)
    # evaluation: running statistics, and no update
    bn.eval()
    x = tensor(shape, seed=9, dtype=F64)
    sh = (1, -1) + (1,) * (len(shape) - 2)
    want = ((x - rm.reshape(sh)) / np.sqrt(rv.reshape(sh) + 1e-5) * bn.weight.data.reshape(sh)
            + bn.bias.data.reshape(sh))
    np.testing.assert_allclose(bn(Tensor(x)).data, want, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(bn.running_mean, rm, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(bn.running_var, rv, rtol=TOL, atol=TOL)


def test_batchnorm_float32_first_step_values():
    bn = nn.BatchNorm1d(2)
    x = np.array([[1, 10], [2, 20], [3, 30], [6, 60]], F32)  # means 3, 30; unbiased var 14/3, 1400/3
    y = bn(Tensor(x))
    assert y.dtype == F32 and bn.running_mean.dtype == F32 and bn.running_var.dtype == F32
    np.testing.assert_allclose(bn.running_mean, [0.3, 3.0], rtol=1e-6)
    np.testing.assert_allclose(bn.running_var, [0.9 + 0.1 * 14 / 3, 0.9 + 0.1 * 1400 / 3],
                               rtol=1e-6)
    xc = x.astype(F64) - [3, 30]
    np.testing.assert_allclose(y.data, xc / np.sqrt(np.array([3.5, 350]) + 1e-5), rtol=1e-6,
                               atol=1e-6)


def test_batchnorm_errors():
    with pytest.raises(ValueError, match=r"BatchNorm1d expects 2-d input, got \(2, 3, 4\)"):
        nn.BatchNorm1d(3)(Tensor(np.zeros((2, 3, 4), F32)))
    with pytest.raises(ValueError, match=r"BatchNorm2d expects 4-d input, got \(2, 3\)"):
        nn.BatchNorm2d(3)(Tensor(np.zeros((2, 3), F32)))
    with pytest.raises(ValueError, match=r"expects \(N, 3\)"):
        nn.BatchNorm1d(3)(Tensor(np.zeros((2, 4), F32)))
    with pytest.raises(ValueError, match="more than one value per channel"):
        nn.BatchNorm1d(3)(Tensor(np.zeros((1, 3), F32)))


# -- other layers --------------------------------------------------------------------------------


def test_layernorm_forward():
    ln = nn.LayerNorm(5, dtype=F64)
    ln.weight.data = np.linspace(0.5, 2, 5)
    ln.bias.data = np.linspace(-1, 1, 5)
    x = tensor((2, 3, 5), seed=3, dtype=F64, scale=3, shift=2)
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    want = (x - mean) / np.sqrt(var + 1e-5) * ln.weight.data + ln.bias.data
    np.testing.assert_allclose(ln(Tensor(x)).data, want, rtol=TOL, atol=TOL)
    assert nn.LayerNorm(5)(Tensor(x.astype(F32))).dtype == F32


def test_embedding_lookup():
    emb = nn.Embedding(7, 3, rng=1)
    ids = np.array([[0, 6, 2], [2, 2, 5]])
    out = emb(ids)
    assert out.shape == (2, 3, 3) and out.dtype == F32
    np.testing.assert_array_equal(out.data, emb.weight.data[ids])
    with pytest.raises(ValueError, match=r"ids must lie in 0..6"):
        emb(np.array([7]))


def test_flatten():
    x = tensor((2, 3, 4, 5), seed=4)
    y = nn.Flatten()(Tensor(x))
    assert y.shape == (2, 60)
    np.testing.assert_array_equal(y.data, x.reshape(2, 60))


def test_max_and_avg_pool():
    x = tensor((2, 3, 4, 6), seed=5)
    blocks = x.reshape(2, 3, 2, 2, 3, 2)  # (n, c, ho, kh, wo, kw)
    np.testing.assert_array_equal(nn.MaxPool2d(2)(Tensor(x)).data, blocks.max(axis=(3, 5)))
    x64 = x.astype(F64)
    avg = nn.AvgPool2d(2)(Tensor(x64)).data
    np.testing.assert_allclose(avg, x64.reshape(2, 3, 2, 2, 3, 2).mean(axis=(3, 5)),
                               rtol=TOL, atol=TOL)
    avg32 = nn.AvgPool2d(2)(Tensor(x))
    assert avg32.dtype == F32
    np.testing.assert_allclose(avg32.data, blocks.astype(F64).mean(axis=(3, 5)), rtol=1e-6)
    # odd sizes: the last row/column that does not fill a window is dropped
    z = tensor((1, 2, 5, 7), seed=6)
    np.testing.assert_array_equal(nn.MaxPool2d(2)(Tensor(z)).data,
                                  z[:, :, :4, :6].reshape(1, 2, 2, 2, 3, 2).max(axis=(3, 5)))
    np.testing.assert_array_equal(nn.MaxPool2d(3)(Tensor(z)).data,
                                  z[:, :, :3, :6].reshape(1, 2, 1, 3, 2, 3).max(axis=(3, 5)))


# -- dropout -------------------------------------------------------------------------------------


def test_dropout_training_statistics_and_scale():
    p = 0.3
    d = nn.Dropout(p, seed=1)
    x = tensor((200, 200), seed=7)
    y = d(Tensor(x)).data
    zero = y == 0
    assert abs(zero.mean() - p) < 0.01  # 40000 draws: std of the fraction is 0.0023
    scale = F32(1 / (1 - p))
    np.testing.assert_array_equal(y[~zero], x[~zero] * scale)
    assert y.dtype == F32
    y2 = d(Tensor(x)).data
    assert not np.array_equal(y2 == 0, zero)  # a new mask each call
    assert int(d.state_dict()["calls"]) == 2


def test_dropout_eval_and_p0_are_identity():
    x = tensor((10, 10), seed=8)
    d = nn.Dropout(0.5).eval()
    np.testing.assert_array_equal(d(Tensor(x)).data, x)
    assert int(d.calls) == 0
    d0 = nn.Dropout(0.0)
    np.testing.assert_array_equal(d0(Tensor(x)).data, x)


@pytest.mark.parametrize("k", [0, 1, 4])
def test_dropout_mask_reproducible_from_state_dict(k):
    x = tensor((30, 30), seed=9)
    orig = nn.Dropout(0.5, seed=42)
    for _ in range(k):
        orig(Tensor(x))
    sd = orig.state_dict()
    nxt = orig(Tensor(x)).data
    fresh = nn.Dropout(0.5, seed=42)
    fresh.load_state_dict(sd)
    np.testing.assert_array_equal(fresh(Tensor(x)).data, nxt)
    np.testing.assert_array_equal(fresh(Tensor(x)).data, orig(Tensor(x)).data)  # and after
    if k:  # without the counter a fresh module would repeat the first mask instead
        first = nn.Dropout(0.5, seed=42)(Tensor(x)).data
        assert not np.array_equal(first, nxt)


def test_dropout_bad_probability():
    with pytest.raises(ValueError, match=r"dropout probability must be in \[0, 1\)"):
        nn.Dropout(1.0)(Tensor(np.ones(3, F32)))


# -- modes, gradients, hooks ---------------------------------------------------------------------


def test_train_eval_propagate():
    net = Net()
    mods = [m for _, m in net.named_modules()]
    assert len(mods) == 9 and all(m.training for m in mods)
    assert net.eval() is net
    assert not any(m.training for m in mods)
    assert net.train() is net
    assert all(m.training for m in mods)
    net.encoder.eval()  # a child's mode does not touch its parent or siblings
    assert net.training and net.head.training and not net.encoder.layers[2].layers[0].training


def test_zero_grad():
    net = Net()
    loss = E.sum(net(Tensor(tensor((3, 4), seed=10))))
    loss.backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_output_hook():
    lin = nn.Linear(4, 3, rng=1)
    x = tensor((2, 4), seed=11)
    plain = lin(Tensor(x)).data
    seen = []

    def hook(module, out):
        seen.append((module, out.data.copy()))
        return out * 2
    lin.register_hook("output", hook)
    y = lin(Tensor(x)).data
    assert len(seen) == 1 and seen[0][0] is lin
    np.testing.assert_array_equal(seen[0][1], plain)
    np.testing.assert_array_equal(y, plain * 2)
    # in a Sequential the next layer sees the hooked output
    model = nn.Sequential(lin, nn.ReLU())
    np.testing.assert_array_equal(model(Tensor(x)).data, np.maximum(plain * 2, 0))


def test_param_hook_sees_every_parameter_read():
    lin = nn.Linear(4, 3, rng=1)
    x = tensor((2, 4), seed=12)
    seen = []

    def hook(module, name, p):
        seen.append((module, name, p))
        return Tensor(np.zeros(p.shape, F32)) if name == "weight" else p
    lin.register_hook("param", hook)
    y = lin(Tensor(x)).data
    assert [(m, n) for m, n, _ in seen] == [(lin, "weight"), (lin, "bias")]
    assert seen[0][2] is lin.weight and seen[1][2] is lin.bias
    np.testing.assert_array_equal(y, np.broadcast_to(lin.bias.data, (2, 3)))
    assert lin.param("bias") is lin.bias

    for layer, inp in [(nn.Conv2d(2, 3, 3, rng=1), np.zeros((1, 2, 4, 4), F32)),
                       (nn.BatchNorm2d(2), tensor((2, 2, 3, 3), seed=1)),
                       (nn.LayerNorm(4), np.zeros((2, 4), F32)),
                       (nn.Embedding(5, 2), np.array([1, 2]))]:
        got = []
        layer.register_hook("param", lambda m, n, p, got=got: got.append(n) or p)
        layer(inp if inp.dtype.kind == "i" else Tensor(inp))
        assert got == [n for n, _ in layer.named_parameters()], type(layer).__name__


def test_input_hook():
    lin = nn.Linear(4, 3, rng=1)
    model = nn.Sequential(lin)
    x = tensor((2, 4), seed=13)
    seen = []

    def hook(module, inp):
        seen.append((module, inp))
        return inp + 1
    model.register_hook("input", hook)
    xt = Tensor(x)
    y = model(xt).data
    assert len(seen) == 1 and seen[0][0] is model and seen[0][1] is xt
    np.testing.assert_array_equal(y, lin(Tensor(x + F32(1))).data)


def test_site_hook():
    class Sq(nn.Module):
        def forward(self, x):
            return self.site("square", x * x) + 1

    m = Sq()
    seen = []
    m.register_hook("site", lambda mod, name, t: seen.append((mod, name, t.data.copy())) or t * 0)
    y = m(Tensor(np.array([2.0, 3.0], F32))).data
    assert seen[0][0] is m and seen[0][1] == "square"
    np.testing.assert_array_equal(seen[0][2], [4.0, 9.0])
    np.testing.assert_array_equal(y, [1.0, 1.0])


def test_hook_order_owner_and_removal():
    """Hooks run in ascending order (ties: registration order); remove_hooks takes back only
    one owner's hooks; a bad kind or a non-callable is refused with a message."""
    lin = nn.Linear(2, 2, rng=1)
    ran = []
    a, b = object(), object()
    lin.register_hook("output", lambda m, y: ran.append("late") or y, owner=a, order=10)
    lin.register_hook("output", lambda m, y: ran.append("first") or y, owner=b, order=-10)
    lin.register_hook("output", lambda m, y: ran.append("mid1") or y, owner=a)
    lin.register_hook("output", lambda m, y: ran.append("mid2") or y, owner=b)
    lin(Tensor(np.ones((1, 2), F32)))
    assert ran == ["first", "mid1", "mid2", "late"]
    assert lin.remove_hooks(a) == 2 and len(lin.hooks("output")) == 2
    ran.clear()
    lin(Tensor(np.ones((1, 2), F32)))
    assert ran == ["first", "mid2"]
    with pytest.raises(ValueError, match="unknown hook kind 'outptu'"):
        lin.register_hook("outptu", lambda m, y: y)
    with pytest.raises(TypeError, match="must be callable"):
        lin.register_hook("output", 3)


# -- errors ----------------------------------------------------------------------------------------


def test_linear_wrong_width():
    with pytest.raises(ValueError, match=r"Linear\(4, 3\) got input of shape \(2, 5\) "
                                         r"\(last axis must be 4\)"):
        nn.Linear(4, 3)(Tensor(np.zeros((2, 5), F32)))


def test_conv2d_wrong_channels():
    with pytest.raises(ValueError, match=r"Conv2d\(3, 4\) expects input \(N, 3, H, W\), "
                                         r"got \(1, 2, 5, 5\)"):
        nn.Conv2d(3, 4, 3)(Tensor(np.zeros((1, 2, 5, 5), F32)))
    with pytest.raises(ValueError, match=r"Conv2d\(3, 4\) expects input"):
        nn.Conv2d(3, 4, 3)(Tensor(np.zeros((3, 5, 5), F32)))


def test_shared_parameter_is_listed_once():
    lin = nn.Linear(3, 3, rng=1)
    model = nn.Residual(lin, lin)
    assert [n for n, _ in model.named_parameters()] == ["body.weight", "body.bias"]


def test_dropout_probability_checked_at_construction():
    with pytest.raises(ValueError, match="dropout probability"):
        nn.Dropout(1.5)
