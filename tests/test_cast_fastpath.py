"""The cast sites' fast path (one prepared, pre-validated jitted call for one or several tensors,
fpsim.numerics.convert._quantize_prepared over fpsim.kernels.batched) equals the plain
per-tensor fpsim.quantize bit for bit and Stats field for field, on 1 and 2 Numba threads, in
one chunk and in many; and a training run through the fast path equals one through casts that
call the public quantize."""

from __future__ import annotations

import dataclasses

import numba
import numpy as np
import pytest

import fpsim
from fpsim.kernels.rng import stream_key
from fpsim.numerics import config
from fpsim.numerics.convert import PreparedQuantize, _quantize_prepared
from fpsim.numerics.formats import format as parse_format
from fpsim.numerics.modes import Overflow, RoundMode
from fpsim.numerics.stats import Stats
from fpsim.training import instrument
from fpsim.training.casts import Cast, CastContext
from fpsim.training.loop import Session, TrainConfig
from _inputs import assert_same_bits, random_values

#: (format, rounding, overflow): the training formats, and stochastic rounding.
CASTS = [("float16", "rne", "ieee"), ("bfloat16", "rne", "ieee"), ("float16", "sr", "saturate"),
         ("bfloat16", "sr", "ieee")]
SEED = 11


def _specials(dtype) -> np.ndarray:
    """Zeros, carrier subnormals, the formats' edges, Inf and NaN of both signs."""
    t = np.finfo(dtype).smallest_subnormal
    v = [0.0, t, 3 * t, np.finfo(dtype).tiny, 2.0 ** -24, 2.0 ** -25, 2.0 ** -133, 65504.0,
         65520.0, 3.4e38, np.inf, np.nan, 1.0, 1.0 + 2.0 ** -11, 1.0 + 2.0 ** -8]
    v = np.array(v, dtype)
    return np.concatenate([v, -v])


def _tensors(dtype) -> list[np.ndarray]:
    """Tensors of the sizes a training step rounds (empty, one element, a bias, a weight, an
    activation), of every class of value."""
    sizes = [0, 1, 10, 128, 1280, 8192, 16384]
    out = [random_values(dtype, n, seed=i) for i, n in enumerate(sizes)]
    out.append(_specials(dtype).reshape(2, -1))
    out.append(random_values(dtype, 64 * 129, seed=99).reshape(64, 129))
    return out


def _assert_same_stats(got: Stats, want: Stats, what: str) -> None:
    for f in dataclasses.fields(Stats):
        a, b = getattr(got, f.name), getattr(want, f.name)
        assert np.array_equal(a, b), f"{what}: Stats.{f.name} {a!r} != {b!r}"


def _plain(x, fmt, rounding, overflow, stream):
    return fpsim.quantize(x, fmt, rounding, overflow, seed=SEED, stats=True, stream=stream)


def _check_against_plain(xs, fmt, rounding, overflow, fused: bool):
    prep = PreparedQuantize(parse_format(fmt), int(RoundMode.parse(rounding)),
                            int(Overflow.parse(overflow)))
    streams = [1000 + 7 * i for i in range(len(xs))]
    keys = [stream_key(SEED, s) for s in streams]
    if fused:
        got = _quantize_prepared(xs, prep, keys, True)
    else:  # one call per tensor, twice: the scratch rows are reused across calls
        got = [_quantize_prepared([x], prep, [k], True)[0] for x, k in zip(xs, keys)]
        got = [_quantize_prepared([x], prep, [k], True)[0] for x, k in zip(xs, keys)]
    for i, (x, s, (y, st)) in enumerate(zip(xs, streams, got)):
        want_y, want_st = _plain(x, fmt, rounding, overflow, s)
        what = f"{fmt}:{rounding}:{overflow} tensor {i} ({x.dtype}, {x.shape})"
        assert y.dtype == want_y.dtype and y.shape == want_y.shape, what
        assert_same_bits(y, want_y, x, what)
        _assert_same_stats(st, want_st, what)
    nostats = _quantize_prepared(xs, prep, keys, False)
    for (y, st), (want_y, _) in zip(nostats, got):
        assert st is None
        assert_same_bits(y, want_y)


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    saved = numba.get_num_threads()
    numba.set_num_threads(min(request.param, numba.config.NUMBA_NUM_THREADS))
    yield request.param
    numba.set_num_threads(saved)


@pytest.mark.parametrize("fmt,rounding,overflow", CASTS)
@pytest.mark.parametrize("fused", [False, True], ids=["per-tensor", "fused"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_prepared_equals_quantize_bits_and_stats(fmt, rounding, overflow, fused, dtype, threads):
    """Small tensors: the serial driver, one chunk each (the training-step case)."""
    _check_against_plain(_tensors(dtype), fmt, rounding, overflow, fused)


@pytest.mark.parametrize("fmt,rounding,overflow", CASTS)
def test_prepared_equals_quantize_in_many_chunks(fmt, rounding, overflow, threads, monkeypatch):
    """Tensors above the cast sites' serial threshold go through the parallel driver in several
    chunks, next to small ones in the same call."""
    monkeypatch.setattr(config, "CAST_SERIAL_BELOW", 1000)
    monkeypatch.setattr(config, "MIN_CHUNK", 333)
    xs = [random_values("float32", n, seed=n) for n in (5000, 10, 70_001, 999, 1000)]
    _check_against_plain(xs, fmt, rounding, overflow, fused=True)
    _check_against_plain(xs, fmt, rounding, overflow, fused=False)


@pytest.mark.parametrize("rounding", ["rne", "sr"])
def test_cast_round_equals_quantize(rounding, threads):
    """Cast.round (the element cast of every preset) through its fast path, against the public
    quantize keyed by the context's seed and stream; a non-contiguous input too."""
    cast = Cast("bfloat16", rounding)
    x = random_values("float32", 3 * 40 * 50, seed=4).reshape(3, 40, 50)[:, ::2, 1:]
    ctx = CastContext("layers.0", "activation", "forward", 7, SEED, True)
    y, st = cast.round(x, ctx)
    want_y, want_st = fpsim.quantize(x, "bfloat16", rounding, seed=SEED, stream=ctx.stream,
                                     stats=True)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert_same_bits(y, want_y, x)
    _assert_same_stats(st, want_st, "Cast.round")



@pytest.mark.parametrize("rounding, hashed", [("rne", 0), ("rtz", 0), ("sr", 2)])
def test_only_stochastic_rounding_hashes_the_stream_key(monkeypatch, rounding, hashed):
    """The key costs a CRC and a mix per call and only SR reads it (the equality with quantize
    above, which keys every mode, shows the others do not depend on it)."""
    looks = []
    monkeypatch.setattr(CastContext, "key", property(
        lambda ctx: looks.append(ctx.site) or stream_key(ctx.seed, ctx.stream)))
    cast, x = Cast("float16", rounding), random_values("float32", 64, seed=5)
    ctx = CastContext("layers.0", "activation", "forward", 7, SEED, True)
    cast.round(x, ctx)
    cast.round_many([x], [ctx])
    assert len(looks) == hashed

@dataclasses.dataclass(frozen=True)
class PublicQuantizeCast:
    """The cast protocol through the public fpsim.quantize (the reference of the fast path)."""

    format: str
    rounding: str = "rne"
    overflow: str = "ieee"

    def round(self, x, ctx):
        res = fpsim.quantize(x, self.format, self.rounding, self.overflow, seed=ctx.seed,
                             stream=ctx.stream, stats=ctx.stats)
        y, st = res if ctx.stats else (res, None)
        return y.astype(x.dtype, copy=False), st


def _run(policy, steps=6):
    s = Session(TrainConfig(model="mlp", policy=policy, batch_size=32, seed=3).resolved())
    rec = instrument.Recorder()
    losses = []
    with instrument.recording(rec):
        for i in range(steps):
            losses.append(s.train_step(np.arange(32 * i, 32 * (i + 1)), rec)["loss"])
    return losses, [p.data.copy() for p in s.params], rec.history


@pytest.mark.parametrize("fmt,rounding", [("float16", "rne"), ("bfloat16", "sr")])
def test_training_run_equals_public_quantize_casts(fmt, rounding):
    """Per-step losses, final parameters and every site's Stats of a short run are identical
    through the presets' casts and through casts calling the public quantize."""
    fast = {f: f"{fmt}:{rounding}" for f in ("activations", "activation_grads", "weights",
                                             "weight_grads")}
    plain = {f: PublicQuantizeCast(fmt, rounding) for f in fast}
    losses, params, history = _run({"name": "fast", **fast})
    losses0, params0, history0 = _run({"name": "plain", **plain})
    assert losses == losses0
    for p, p0 in zip(params, params0):
        assert_same_bits(p, p0)
    for summary, summary0 in zip(history, history0):
        assert sorted(summary.sites) == sorted(summary0.sites)
        for key in summary.sites:
            _assert_same_stats(summary.sites[key], summary0.sites[key], f"{key}")


def test_parameters_round_in_one_call_per_cast(monkeypatch):
    """A forward pass rounds all its parameters in one round_many call (one cast for all of
    them here); every parameter site then takes its result instead of rounding again."""
    calls = {"many": [], "round": []}
    many, single = Cast.round_many, Cast.round
    monkeypatch.setattr(Cast, "round_many", lambda self, xs, ctxs: calls["many"].append(
        [c.site for c in ctxs]) or many(self, xs, ctxs))
    monkeypatch.setattr(Cast, "round", lambda self, x, ctx: calls["round"].append(
        (ctx.site, ctx.role, ctx.direction)) or single(self, x, ctx))
    s = Session(TrainConfig(model="mlp", policy="mixed_fp16", batch_size=8).resolved())
    s.train_step(np.arange(8), None)
    params = [n for n, _ in s.model.named_parameters()]
    assert calls["many"] == [params]
    assert not [c for c in calls["round"] if c[1] == "weight"]
    assert len([c for c in calls["round"] if c[1] == "weight-grad"]) == len(params)


def test_parameter_replaced_before_its_site_is_rounded_again():
    """A parameter hook placed before the casts that hands the site another array (here twice
    the weights) gets that array rounded, not the one rounded at the start of the pass."""
    from fpsim import engine as E
    from fpsim.training.nn import ORDER_BEFORE_CASTS
    from fpsim.training.precision import policy

    def mlp():
        return Session(TrainConfig(model="mlp", policy="fp32", batch_size=8).resolved())
    s = mlp()
    model, x = s.model, E.Tensor(s.data.x_train[:8])
    policy("mixed_bf16").apply(model)
    for _, m in model.named_modules():
        m.register_hook("param", lambda mod, name, p: E.Tensor(p.data * np.float32(2)),
                        owner="test", order=ORDER_BEFORE_CASTS)
    doubled = model(x).data
    ref = mlp().model  # the same network with its parameters doubled
    for (_, p), (_, q) in zip(ref.named_parameters(), model.named_parameters()):
        p.data = q.data * np.float32(2)
    policy("mixed_bf16").apply(ref)
    assert_same_bits(doubled, ref(x).data)


def test_step_summary_total_equals_sum_of_stats():
    """StepSummary.total (summed field by field) equals the sum of the chosen sites' Stats."""
    from fpsim.training.instrument import GRAD_ROLES, StepSummary
    rng = np.random.default_rng(0)
    sites = {}
    for i in range(4):
        for role in ("activation", "activation-grad", "weight-grad"):
            x = rng.standard_normal(300) * 10.0 ** rng.integers(-9, 6, 300)
            sites[(f"s{i}", role, "backward")] = fpsim.quantize(x, "float16", stats=True)[1]
    summary = StepSummary(0, sites)
    for roles in (GRAD_ROLES, ("activation",)):
        want = sum((st for (_, r, _), st in sites.items() if r in roles), Stats())
        _assert_same_stats(summary.total(roles), want, str(roles))
    _assert_same_stats(StepSummary(0, {}).total(), Stats(), "empty")


def test_casts_and_quantize_share_the_compiled_drivers():
    """The cast sites' kernel calls the quantize drivers with the argument types the public
    path uses (a read-only input), so each driver is compiled once for both; a writeable-input
    signature would be a second compilation of every driver (~35 s each, cold)."""
    from fpsim.kernels import cpu
    from fpsim.numerics import convert
    from fpsim.numerics.modes import Overflow, RoundMode

    x = np.linspace(-3, 3, 100, dtype=np.float32)
    fpsim.quantize(x, "fp16", stats=True)
    prep = convert.PreparedQuantize(fpsim.format("fp16"), int(RoundMode.RNE), int(Overflow.IEEE))
    convert._quantize_prepared([x], prep, [np.uint64(0)], True)
    inputs = [sig[0] for sig in cpu.quantize_serial_rne.signatures]
    assert inputs and all(not t.mutable for t in inputs), inputs


def test_parallel_driver_and_serial_twin_share_the_chunk_kernels():
    """The parallel quantize driver (a ``prange`` over chunks, whose index Numba types uint64)
    and its serial twin (a plain range, int64) pass ``cpu._chunk`` the same argument types, so
    each ``_chunk`` version compiles once for both; a uint64 chunk index doubled them."""
    from fpsim.kernels import cpu

    x = np.linspace(-3, 3, config.SERIAL_BELOW + 1)  # the parallel driver
    fpsim.quantize(x, "fp16", stats=True)
    fpsim.quantize(x[:100], "fp16", stats=True)  # its serial twin
    assert cpu.quantize_rne.signatures and cpu.quantize_serial_rne.signatures
    rows = {str(sig[-1]) for sig in cpu._chunk.signatures}
    assert rows == {"int64"}, rows
