"""Optimizers (:mod:`fpsim.optim`) against their update rules written out here in numpy.

The references below are PyTorch's documented update rules, computed in the parameter's dtype
(float32) with the constants rounded to float32 once and the operations in the order the rule
is written, so a correct implementation matches them bit for bit (compared as uint32 patterns).
Where PyTorch's own kernel uses a different operation order (Adam's ``lerp`` / ``addcdiv``),
a second check compares with a float64 evaluation of that order at a stated tolerance.
"""

import math

import numpy as np
import pytest

from fpsim.training import optim
from fpsim.training.nn import Parameter

F32 = np.float32


def bits(a):
    return np.asarray(a, F32).view(np.uint32)


def assert_bits_equal(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype == F32
    np.testing.assert_array_equal(bits(a), bits(b))


def make_grads(n, shape=(5,), seed=0, dtype=F32):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for _ in range(n)]


W0 = np.array([0.7, -1.3, 2.1, 0.05, -0.4], F32)  # none of these is exact in binary


def run(opt_cls, grads, w0=W0, **kw):
    """Parameter values after ``opt_cls(..., **kw)`` stepped once per gradient."""
    p = Parameter(w0.copy(), dtype=w0.dtype)
    opt = opt_cls([("w", p)], **kw)
    for g in grads:
        p.grad = g.copy()
        opt.step()
    return p.data, opt


# -- references ------------------------------------------------------------------------------


def ref_sgd(w, grads, lr, momentum=0.0, nesterov=False, weight_decay=0.0, hook=None,
            dtype=F32):
    """PyTorch SGD: g += wd*w; b = g (first) or mu*b + g; g = g + mu*b (Nesterov) or b;
    w -= lr*g. ``hook`` rounds the stored momentum (as Optimizer.state_hook)."""
    dt = np.dtype(dtype).type
    w = w.astype(dtype).copy()
    lr, mu, wd = dt(lr), dt(momentum), dt(weight_decay)
    b = None
    for g in grads:
        g = g.astype(dtype)
        if weight_decay:
            g = g + wd * w
        if momentum:
            b = g.copy() if b is None else mu * b + g
            if hook is not None:
                b = hook(b)
            g = g + mu * b if nesterov else b
        w = w - lr * g
    return w, b


def ref_adam(w, grads, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False,
             lrs=None, hook=None):
    """Adam / AdamW in float32: (AdamW) w *= 1 - lr*wd; (Adam) g += wd*w;
    m = b1 m + (1-b1) g; v = b2 v + (1-b2) g g; w -= lr (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps)."""
    b1, b2 = betas
    w = w.copy()
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        lr_t = lr if lrs is None else lrs[t - 1]
        if weight_decay and decoupled:
            w = w * F32(1 - lr_t * weight_decay)
        if weight_decay and not decoupled:
            g = g + F32(weight_decay) * w
        m = F32(b1) * m + F32(1 - b1) * g
        v = F32(b2) * v + F32(1 - b2) * g * g
        if hook is not None:
            m, v = hook(m), hook(v)
        mhat = m / F32(1 - b1 ** t)
        vhat = v / F32(1 - b2 ** t)
        w = w - F32(lr_t) * mhat / (np.sqrt(vhat) + F32(eps))
    return w, m, v


def ref_adam_torch64(w, grads, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                     decoupled=False):
    """PyTorch's Adam kernel order (lerp for m, addcmul for v, addcdiv with step size
    lr / bc1 and denominator sqrt(v)/sqrt(bc2) + eps), in float64."""
    b1, b2 = betas
    w = w.astype(np.float64)
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        if decoupled:
            w = w * (1 - lr * weight_decay)
        elif weight_decay:
            g = g + weight_decay * w
        m = m + (1 - b1) * (g - m)
        v = b2 * v + (1 - b2) * (g * g)
        denom = np.sqrt(v) / math.sqrt(1 - b2 ** t) + eps
        w = w - (lr / (1 - b1 ** t)) * m / denom
    return w


# -- SGD -------------------------------------------------------------------------------------


SGD_CASES = {
    "plain": dict(lr=0.1),
    "momentum": dict(lr=0.1, momentum=0.9),
    "nesterov": dict(lr=0.05, momentum=0.9, nesterov=True),
    "weight_decay": dict(lr=0.1, weight_decay=0.01),
    "momentum_weight_decay": dict(lr=0.1, momentum=0.8, weight_decay=5e-4),
    "nesterov_weight_decay": dict(lr=0.03, momentum=0.95, nesterov=True, weight_decay=1e-2),
}


@pytest.mark.parametrize("case", sorted(SGD_CASES))
def test_sgd_matches_pytorch_rule_bitwise(case):
    kw = SGD_CASES[case]
    grads = make_grads(4, seed=1)
    got, opt = run(optim.SGD, grads, **kw)
    want, b = ref_sgd(W0, grads, **kw)
    assert_bits_equal(got, want)
    assert opt.t == 4
    if kw.get("momentum"):
        assert_bits_equal(opt.state["w"]["momentum"], b)
    else:
        assert opt.state["w"] == {}


def test_sgd_hand_computed_values():
    # dyadic numbers: every operation is exact, so the expected values are literals.
    # w=1, g=1, lr=0.5, mu=0.5:  b1 = 1, w = 0.5;  b2 = 0.5*1 + 1 = 1.5, w = 0.5 - 0.75 = -0.25
    got, _ = run(optim.SGD, [np.ones(1, F32)] * 2, w0=np.ones(1, F32), lr=0.5, momentum=0.5)
    assert got.tolist() == [-0.25]
    # Nesterov: step 1: b=1, g = 1 + 0.5*1 = 1.5, w = 1 - 0.75 = 0.25;
    #           step 2: b = 1.5, g = 1 + 0.75 = 1.75, w = 0.25 - 0.875 = -0.625
    got, _ = run(optim.SGD, [np.ones(1, F32)] * 2, w0=np.ones(1, F32), lr=0.5, momentum=0.5,
                 nesterov=True)
    assert got.tolist() == [-0.625]
    # weight decay 0.5, w=2, g=0: g = 1, w = 2 - 0.25*1 = 1.75
    got, _ = run(optim.SGD, [np.zeros(1, F32)], w0=np.array([2.0], F32), lr=0.25,
                 weight_decay=0.5)
    assert got.tolist() == [1.75]


def test_sgd_float64_master_weights():
    w0 = W0.astype(np.float64)
    grads = make_grads(3, seed=2, dtype=np.float64)
    got, opt = run(optim.SGD, grads, w0=w0, lr=0.1, momentum=0.9, nesterov=True,
                   weight_decay=1e-3)
    want, _ = ref_sgd(w0, grads, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3,
                      dtype=np.float64)
    assert got.dtype == np.float64 and opt.state["w"]["momentum"].dtype == np.float64
    np.testing.assert_array_equal(got.view(np.uint64), want.view(np.uint64))


def test_gradient_of_other_dtype_is_cast_to_master_dtype():
    g64 = np.array([0.1, -0.2, 0.3, 1 / 3, 1e-9])  # float64, not float32-representable
    got, _ = run(optim.SGD, [g64], lr=0.5)
    assert got.dtype == F32
    assert_bits_equal(got, W0 - F32(0.5) * g64.astype(F32))


@pytest.mark.parametrize("opt_cls,kw", [
    (optim.SGD, dict(lr=0.1)),
    (optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)),
    (optim.Adam, dict(lr=0.1, weight_decay=0.1)),
    (optim.AdamW, dict(lr=0.1)),
])
def test_step_does_not_modify_grad(opt_cls, kw):
    p = Parameter(W0.copy())
    opt = opt_cls([("w", p)], **kw)
    g = make_grads(1, seed=3)[0]
    for _ in range(2):
        p.grad = g.copy()
        opt.step()
        assert_bits_equal(p.grad, g)


# -- Adam / AdamW --------------------------------------------------------------------------------


ADAM_CASES = {
    "adam": (optim.Adam, dict(lr=1e-2)),
    "adam_betas_eps": (optim.Adam, dict(lr=3e-2, betas=(0.8, 0.99), eps=1e-6)),
    "adam_l2": (optim.Adam, dict(lr=1e-2, weight_decay=0.1)),
    "adamw": (optim.AdamW, dict(lr=1e-2, weight_decay=0.1)),
    "adamw_default_wd": (optim.AdamW, dict(lr=5e-2)),
}


@pytest.mark.parametrize("case", sorted(ADAM_CASES))
def test_adam_matches_rule_bitwise(case):
    cls, kw = ADAM_CASES[case]
    grads = make_grads(5, seed=4)
    got, opt = run(cls, grads, **kw)
    decoupled = cls is optim.AdamW
    wd = kw.get("weight_decay", 1e-2 if decoupled else 0.0)
    want, m, v = ref_adam(W0, grads, kw["lr"], kw.get("betas", (0.9, 0.999)),
                          kw.get("eps", 1e-8), wd, decoupled)
    assert_bits_equal(got, want)
    assert_bits_equal(opt.state["w"]["m"], m)
    assert_bits_equal(opt.state["w"]["v"], v)
    # PyTorch's kernel order differs (lerp / addcdiv), so no bit match is possible there:
    # float32 rounding of ~10 operations per step over 5 steps stays far below rtol 1e-6.
    torch_like = ref_adam_torch64(W0, grads, kw["lr"], kw.get("betas", (0.9, 0.999)),
                                  kw.get("eps", 1e-8), wd, decoupled)
    np.testing.assert_allclose(got, torch_like, rtol=1e-6, atol=0)


def test_adam_first_step_moves_each_weight_by_lr():
    # bias correction: after one step mhat = g and vhat = g^2, so each weight moves by
    # lr * g / (|g| + eps) ~ lr * sign(g); without correction it would be ~ lr * 0.1/sqrt(0.001)
    grads = make_grads(1, seed=5)
    got, _ = run(optim.Adam, grads, lr=1e-3)
    np.testing.assert_allclose(W0 - got, 1e-3 * np.sign(grads[0]), rtol=1e-4)


def test_adamw_decay_is_decoupled_from_moments():
    # zero gradient: Adam's moments stay 0 and the update is exactly w * (1 - lr*wd)
    grads = [np.zeros(5, F32)] * 3
    got, opt = run(optim.AdamW, grads, lr=0.1, weight_decay=0.5)
    want = W0.copy()
    for _ in range(3):
        want = want * F32(1 - 0.1 * 0.5)
    assert_bits_equal(got, want)
    assert not opt.state["w"]["m"].any() and not opt.state["w"]["v"].any()
    # whereas L2 Adam feeds wd*w through the moments: its first step moves each weight by
    # lr * sign(w) (normalized by sqrt(v)), not by lr*wd*w
    got_l2, opt_l2 = run(optim.Adam, grads[:1], lr=0.1, weight_decay=0.5)
    assert opt_l2.state["w"]["m"].all()
    np.testing.assert_allclose(W0 - got_l2, 0.1 * np.sign(W0), rtol=1e-5)


# -- learning-rate schedules ---------------------------------------------------------------------


def cosine_formula(t, total, warmup, floor=0.0):
    if t < warmup:
        return (t + 1) / warmup
    frac = min(1.0, (t - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac))


def test_cosine_schedule_values():
    f = optim.cosine(12, warmup=4)
    assert f(0) == 0.25                 # start of warm-up: (0+1)/4
    assert f(1) == 0.5
    assert f(3) == 1.0                  # end of warm-up
    assert f(4) == 1.0                  # start of decay
    assert f(8) == pytest.approx(0.5, abs=1e-15)   # middle of decay
    assert f(6) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)), abs=1e-15)
    assert f(12) == pytest.approx(0.0, abs=1e-15)  # end
    assert f(20) == pytest.approx(0.0, abs=1e-15)  # held after the end
    for t in range(25):
        assert f(t) == pytest.approx(cosine_formula(t, 12, 4), abs=1e-15)
    g = optim.cosine(10, floor=0.1)
    assert g(0) == 1.0
    assert g(5) == pytest.approx(0.55, abs=1e-15)
    assert g(10) == pytest.approx(0.1, abs=1e-15)
    assert g(15) == pytest.approx(0.1, abs=1e-15)


def test_step_decay_and_constant_schedules():
    f = optim.step_decay(3, gamma=0.5)
    assert [f(t) for t in range(8)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert optim.step_decay(2)(4) == pytest.approx(0.01, rel=1e-15)
    assert optim.constant()(123) == 1.0
    assert optim.SCHEDULES["cosine"] is optim.cosine


def test_lr_property_follows_schedule_of_update_count():
    p = Parameter(np.zeros(1, F32))
    opt = optim.SGD([("w", p)], lr=0.8, schedule=optim.step_decay(1, 0.5))
    seen = []
    for _ in range(4):
        seen.append(opt.lr)
        p.grad = np.ones(1, F32)
        opt.step()
    assert seen == [0.8, 0.4, 0.2, 0.1]
    assert opt.lr == pytest.approx(0.05)
    # update t used lr * schedule(t), t = 0, 1, 2, 3 (dyadic, exact): 0.8+0.4+0.2+0.1
    assert p.data.tolist() == [-np.float32(0.8) - np.float32(0.4) - np.float32(0.2)
                               - np.float32(0.1)]
    assert opt.t == 4


def test_lr_without_schedule_is_base_lr():
    opt = optim.Adam([("w", Parameter(np.zeros(2)))], lr=0.003)
    assert opt.lr == 0.003


def test_adamw_with_cosine_schedule_bitwise():
    grads = make_grads(6, seed=6)
    sched = optim.cosine(6, warmup=2)
    got, _ = run(optim.AdamW, grads, lr=0.1, weight_decay=0.05, schedule=sched)
    want, _, _ = ref_adam(W0, grads, 0.1, weight_decay=0.05, decoupled=True,
                          lrs=[0.1 * sched(t) for t in range(6)])
    assert_bits_equal(got, want)


# -- state hook (low-precision optimizer state) ---------------------------------------------------


def to_half(v):
    return v.astype(np.float16).astype(F32)


def test_state_hook_rounds_sgd_momentum():
    calls = []

    def hook(name, key, v):
        calls.append((name, key, v.dtype))
        return to_half(v)

    grads = make_grads(4, seed=7)
    p = Parameter(W0.copy())
    opt = optim.SGD([("w", p)], lr=0.1, momentum=0.9, nesterov=True)
    opt.state_hook = hook
    for g in grads:
        p.grad = g.copy()
        opt.step()
    assert calls == [("w", "momentum", F32)] * 4
    want, b = ref_sgd(W0, grads, 0.1, 0.9, nesterov=True, hook=to_half)
    stored = opt.state["w"]["momentum"]
    assert_bits_equal(stored, b)
    assert_bits_equal(stored, to_half(stored))              # stored values are fp16 values
    _, b_unrounded = ref_sgd(W0, grads, 0.1, 0.9, nesterov=True)
    assert not np.array_equal(stored, b_unrounded)          # ... and the rounding did something
    assert_bits_equal(p.data, want)                          # the update used the rounded state


def test_state_hook_rounds_adam_moments():
    calls = []

    def hook(name, key, v):
        calls.append((name, key))
        return to_half(v)

    grads = make_grads(3, seed=8)
    p, q = Parameter(W0.copy()), Parameter(W0[:2].copy())
    opt = optim.Adam([("a", p), ("b", q)], lr=0.01)
    opt.state_hook = hook
    for g in grads:
        p.grad, q.grad = g.copy(), g[:2].copy()
        opt.step()
    assert calls == [("a", "m"), ("a", "v"), ("b", "m"), ("b", "v")] * 3
    want, m, v = ref_adam(W0, grads, 0.01, hook=to_half)
    assert_bits_equal(opt.state["a"]["m"], m)
    assert_bits_equal(opt.state["a"]["v"], v)
    assert_bits_equal(p.data, want)
    _, m_plain, _ = ref_adam(W0, grads, 0.01)
    assert not np.array_equal(opt.state["a"]["m"], m_plain)


# -- checkpoints -------------------------------------------------------------------------------


CKPT_CASES = {
    "sgd_nesterov": (optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3,
                                     schedule=optim.step_decay(3, 0.5))),
    "adam": (optim.Adam, dict(lr=0.01, weight_decay=0.01)),
    "adamw_cosine": (optim.AdamW, dict(lr=0.05, schedule=optim.cosine(8, warmup=2))),
}


@pytest.mark.parametrize("case", sorted(CKPT_CASES))
def test_state_dict_resume_is_bit_identical(case):
    cls, kw = CKPT_CASES[case]
    grads = make_grads(8, shape=(3, 2), seed=9)
    w0 = np.arange(6, dtype=F32).reshape(3, 2) / F32(7)

    def steps(opt, p, gs):
        for g in gs:
            p.grad = g.copy()
            opt.step()

    twin_p = Parameter(w0.copy())
    twin = cls([("layer.weight", twin_p)], **kw)
    steps(twin, twin_p, grads)

    p = Parameter(w0.copy())
    opt = cls([("layer.weight", p)], **kw)
    steps(opt, p, grads[:5])
    sd = opt.state_dict()
    weights = p.data.copy()
    steps(opt, p, grads[5:6])  # the saved copy must not follow later updates
    assert sd["t"] == 5

    p2 = Parameter(weights)
    fresh = cls([("layer.weight", p2)], **kw)
    fresh.load_state_dict(sd)
    assert fresh.t == 5 and fresh.lr == twin_lr_at(cls, kw, 5)
    for k in sd["state"]["layer.weight"]:
        sd["state"]["layer.weight"][k][...] = 99  # loading must have copied
    steps(fresh, p2, grads[5:])
    assert_bits_equal(p2.data, twin_p.data)
    for k, v in twin.state["layer.weight"].items():
        assert_bits_equal(fresh.state["layer.weight"][k], v)


def twin_lr_at(cls, kw, t):
    s = kw.get("schedule")
    return kw["lr"] * (1.0 if s is None else s(t))


def test_fresh_optimizer_without_state_diverges():
    # the resume test is meaningful: without load_state_dict the continuation differs
    grads = make_grads(4, seed=10)
    p = Parameter(W0.copy())
    opt = optim.Adam([("w", p)], lr=0.01)
    for g in grads[:2]:
        p.grad = g.copy()
        opt.step()
    q = Parameter(p.data.copy())
    fresh = optim.Adam([("w", q)], lr=0.01)
    for g in grads[2:]:
        p.grad, q.grad = g.copy(), g.copy()
        opt.step()
        fresh.step()
    assert not np.array_equal(p.data, q.data)


# -- parameters without gradients; errors ------------------------------------------------------


@pytest.mark.parametrize("opt_cls,kw", [
    (optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.1)),
    (optim.Adam, dict(lr=0.1, weight_decay=0.1)),
    (optim.AdamW, dict(lr=0.1, weight_decay=0.1)),
])
def test_parameter_without_grad_is_untouched(opt_cls, kw):
    a, b = Parameter(W0.copy()), Parameter(W0[::-1].copy())
    opt = opt_cls([("a", a), ("b", b)], **kw)
    for g in make_grads(3, seed=11):
        a.grad, b.grad = g.copy(), None
        opt.step()
    assert_bits_equal(b.data, W0[::-1])
    assert opt.state["b"] == {}
    assert not np.array_equal(a.data, W0)
    opt.zero_grad()
    assert a.grad is None and b.grad is None


def test_no_parameters_is_an_error():
    with pytest.raises(ValueError, match="no parameters"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="no parameters"):
        optim.Adam(iter([]))


@pytest.mark.parametrize("lr", [0, -0.1, float("nan")])
def test_non_positive_lr_is_an_error(lr):
    with pytest.raises(ValueError, match="learning rate must be positive"):
        optim.SGD([("w", Parameter(W0))], lr=lr)
    with pytest.raises(ValueError, match="learning rate must be positive"):
        optim.AdamW([("w", Parameter(W0))], lr=lr)


def test_nesterov_needs_momentum():
    with pytest.raises(ValueError, match="Nesterov momentum needs momentum > 0"):
        optim.SGD([("w", Parameter(W0))], lr=0.1, nesterov=True)


def test_load_state_dict_with_other_names_is_an_error():
    opt = optim.SGD([("a", Parameter(W0))], lr=0.1, momentum=0.9)
    other = optim.SGD([("b", Parameter(W0))], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="state names do not match"):
        opt.load_state_dict(other.state_dict())
    both = optim.SGD([("a", Parameter(W0)), ("b", Parameter(W0))], lr=0.1)
    with pytest.raises(ValueError, match="state names do not match"):
        opt.load_state_dict(both.state_dict())
    assert opt.t == 0


def test_registry():
    assert optim.OPTIMIZERS == {"sgd": optim.SGD, "adam": optim.Adam, "adamw": optim.AdamW}


def test_duplicate_names_and_wrong_shapes_are_refused():
    w = Parameter(np.ones(5, np.float32))
    with pytest.raises(ValueError, match="same name"):
        optim.SGD([("w", w), ("w", Parameter(np.ones(2)))], lr=0.1)
    opt = optim.SGD([("w", w)], lr=0.1, momentum=0.9)
    w.grad = np.ones(1, np.float32)
    with pytest.raises(ValueError, match="gradient of 'w' has shape"):
        opt.step()
    with pytest.raises(ValueError, match="has shape"):
        opt.load_state_dict({"t": 1, "state": {"w": {"momentum": np.ones(1, np.float32)}}})
