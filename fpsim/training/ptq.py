"""Post-training quantization of a trained model's weights, per output channel, with one or
several points (Liu, Ye, Zhou, Liu, "Mixed Precision without Mixed Precision", AAAI 2021).

Every Linear and Conv2d weight is quantized row by row (a row: one output unit's weights,
``W.reshape(out, -1)``); biases, normalization parameters and embeddings stay float32. The
methods (:data:`METHODS`):

* ``uniform``: one point ``a·q``, ``a = K / m`` with ``K = max|w|`` (``m = 2^(b-1) - 1``),
  ``q = clip(round(w / a))``: symmetric round-to-nearest. With ``clip_search`` the clip ``K``
  is chosen among ``K0·(0.5 .. 1)`` (16 values) to minimize the row's output error.
* ``greedy``: ``points`` greedy points per row, each the exactly optimal (least-squares) point
  of the residual (:func:`fpsim.numerics.multipoint.best_point`).
* ``adaptive``: one point per row, then extra points, one at a time, to the row of the layer
  whose output error on the calibration inputs is largest, until the layer holds ``budget``
  points per row on average (at most ``n_max`` per row).
* ``random``: the same number of extra points per layer, given to rows drawn at random (the
  ablation).
* ``mixed``: true per-layer bit-widths: one optimal point per row, with layer ``l`` at
  ``b_l >= b`` bits; widths are raised one bit at a time for the layer with the largest drop in
  relative output error per added bit, until the model's integer bits reach ``budget·b`` per
  weight (the bits ``adaptive`` spends).

The output error of a row ``w`` approximated by ``w~`` is ``mean_x ((w - w~)ᵀ x)²`` over the
layer's calibration inputs ``x``: the rows of the layer's input (for a convolution, every
spatial position's window, by im2col) when the float32 model runs on the calibration batch.
It is computed as ``eᵀ G e`` with the Gram matrix ``G = XᵀX / n``.

Inference runs through the engine with the quantized weights, ``Σ_i a_i q_i`` evaluated in
float64 and rounded once to float32 (the layers' float32 GEMMs then multiply them).
Optionally every quantized layer's input is rounded to a symmetric ``act_bits``-bit integer
grid with a per-tensor step ``max|x| / (2^(act_bits-1) - 1)`` calibrated on the calibration
batch (the training casts, :class:`~fpsim.training.casts.Cast` on an
:class:`~fpsim.numerics.fixed.IntGrid`).

Effective bits per weight count ``b`` bits per integer of every point and one ``scale_bits``
scale per point and row, over all quantized weights.
"""

from __future__ import annotations

import copy
import dataclasses
import time

import numpy as np

from fpsim import engine as E
from fpsim.numerics import multipoint as mp

#: The quantization methods (module docstring).
METHODS = ("uniform", "greedy", "adaptive", "random", "mixed")
#: Clip values tried by ``uniform`` with ``clip_search``, as fractions of max|w|.
CLIP_FRACTIONS = np.linspace(0.5, 1.0, 16)
#: Calibration rows kept per layer (a convolution sees N·Ho·Wo windows; a fixed subsample
#: keeps the Gram matrix cheap).
MAX_CALIB_ROWS = 8192


@dataclasses.dataclass(frozen=True)
class PTQConfig:
    """How to quantize (module docstring).

    Attributes:
        bits: integer bits of every point, 2..8.
        method: one of :data:`METHODS`.
        points: points per row for ``greedy``.
        budget: mean points per row for ``adaptive`` / ``random`` (>= 1), and the integer bits
            per weight of ``mixed`` in units of ``bits``.
        n_max: the most points one row may get (``adaptive`` / ``random``).
        clip_search: ``uniform`` searches its clip value by output error.
        act_bits: round every quantized layer's input to this many bits (None: float32).
        scale_bits: bits charged per scale in :attr:`PTQResult.effective_bits`.
        seed: the random ablation's seed.
    """

    bits: int
    method: str = "adaptive"
    points: int = 1
    budget: float = 1.5
    n_max: int = 4
    clip_search: bool = False
    act_bits: int | None = None
    scale_bits: int = 32
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer)) \
                or not 2 <= self.bits <= 8:
            raise ValueError(f"bits={self.bits!r} is out of range: PTQ takes integer grids of "
                             "2..8 bits")
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} is unknown; choose from {', '.join(METHODS)}")
        if not isinstance(self.points, (int, np.integer)) or self.points < 1:
            raise ValueError(f"points={self.points!r} is invalid: at least one point per row")
        if not isinstance(self.n_max, (int, np.integer)) or self.n_max < 1:
            raise ValueError(f"n_max={self.n_max!r} is invalid: at least one point per row")
        if not (isinstance(self.budget, (int, float, np.floating)) and np.isfinite(self.budget)):
            raise ValueError(f"budget={self.budget!r} is not a number")
        if self.budget < 1:
            raise ValueError(f"budget={self.budget} points per row is below one point per "
                             "channel: every output channel needs at least one point")
        if self.method in ("adaptive", "random") and self.budget > self.n_max:
            raise ValueError(f"budget={self.budget} points per row is more than n_max="
                             f"{self.n_max} allows")
        if self.method == "mixed" and self.budget * self.bits > 8:
            raise ValueError(f"budget={self.budget} x bits={self.bits} is more than 8 bits per "
                             "weight, the widest layer grid")
        if self.act_bits is not None and not (isinstance(self.act_bits, (int, np.integer))
                                              and 2 <= self.act_bits <= 16):
            raise ValueError(f"act_bits={self.act_bits!r} is invalid: 2..16 or None")


@dataclasses.dataclass
class LayerResult:
    """One quantized layer.

    Attributes:
        name: the module's dotted name; shape: the weight's shape; bits: its grid width.
        counts: points per row (int array, one per output channel).
        effective_bits: bits per weight of this layer (module docstring).
        weight_error: ``||W - W~|| / ||W||`` (Frobenius).
        output_error: ``Σ_rows eᵀGe / Σ_rows wᵀGw``: the relative output error on the
            calibration inputs.
    """

    name: str
    shape: tuple
    bits: int
    counts: np.ndarray
    effective_bits: float
    weight_error: float
    output_error: float
    points: list = dataclasses.field(repr=False, default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready fields (points per channel as a list, no point data)."""
        return dict(name=self.name, shape=list(self.shape), bits=self.bits,
                    counts=self.counts.tolist(), effective_bits=self.effective_bits,
                    weight_error=self.weight_error, output_error=self.output_error)


@dataclasses.dataclass
class PTQResult:
    """What :func:`quantize_model` made: the quantized model, its layers, and (after
    :func:`evaluate`) test loss and accuracy."""

    config: PTQConfig
    model: object
    layers: list
    effective_bits: float
    seconds: float
    accuracy: float | None = None
    loss: float | None = None

    def to_dict(self) -> dict:
        """JSON-ready summary (the config, the totals, every layer)."""
        return dict(config=dataclasses.asdict(self.config), effective_bits=self.effective_bits,
                    seconds=self.seconds, accuracy=self.accuracy, loss=self.loss,
                    layers=[l.to_dict() for l in self.layers])


# ------------------------------------------------------------------------------- the model side
def quantizable(model) -> list:
    """``[(name, module)]`` of the model's Linear and Conv2d layers, in definition order."""
    from fpsim.training import nn
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def weight_rows(module) -> np.ndarray:
    """The module's weight as float64 rows ``(out, in·k·k)``: one output channel per row."""
    w = module.weight.data
    return w.reshape(w.shape[0], -1).astype(np.float64)


def layer_rows(module, x: np.ndarray) -> np.ndarray:
    """The rows a layer's weight rows multiply, from its input ``x``: ``x`` itself (leading
    axes flattened) for a Linear, the im2col windows for a Conv2d."""
    from fpsim.engine.nnops import conv_patches
    from fpsim.training import nn
    if isinstance(module, nn.Conv2d):
        k = module.weight.data.shape[2:]
        return conv_patches(x, k[0], k[1], module.stride, module.padding)
    return x.reshape(-1, x.shape[-1])


def calibration_inputs(model, x, max_rows: int = MAX_CALIB_ROWS, seed: int = 0) -> dict:
    """``{layer name: (rows, amax)}``: each quantizable layer's input rows (float64, at most
    ``max_rows``, a seeded subsample) and the largest ``|x|`` of its input, from one float32
    forward pass of ``model`` in evaluation mode on the calibration batch ``x``."""
    x = np.asarray(x)
    if x.ndim == 0 or len(x) == 0:
        raise ValueError("the calibration set is empty: give at least one example")
    layers = quantizable(model)
    seen = {}
    owner = object()

    def hook(module, inp):
        seen[id(module)] = np.asarray(inp.data if hasattr(inp, "data") else inp)
        return inp

    for _, m in layers:
        m.register_hook("input", hook, owner=owner, order=-(1 << 30))
    was_training = model.training
    model.eval()
    try:
        with E.no_grad():
            model(E.Tensor(x))
    finally:
        for _, m in layers:
            m.remove_hooks(owner)
        model.train(was_training)
    rng = np.random.default_rng(seed)
    out = {}
    for name, m in layers:
        inp = seen[id(m)]
        rows = layer_rows(m, inp)
        if len(rows) > max_rows:
            rows = rows[np.sort(rng.choice(len(rows), max_rows, replace=False))]
        out[name] = (rows.astype(np.float64), float(np.max(np.abs(inp))))
    return out


# ------------------------------------------------------------------------------- one layer
def _uniform(W, G, bits, clip_search) -> list:
    """Symmetric round-to-nearest points, the clip optionally searched by output error."""
    m = (1 << (bits - 1)) - 1
    out = []
    for w in W:
        k0 = float(np.max(np.abs(w)))
        if k0 == 0.0:
            out.append(mp.Points([0.0], [np.zeros(w.size, np.int64)]))
            continue
        best = None
        for frac in (CLIP_FRACTIONS if clip_search else (1.0,)):
            a = k0 * frac / m
            q = np.clip(np.rint(w / a), -m, m).astype(np.int64)
            e = w - a * q
            err = float(e @ G @ e)
            if best is None or err < best[0]:
                best = (err, a, q)
        out.append(mp.Points([best[1]], [best[2]]))
    return out


def _rel_output_error(W, pts, G) -> float:
    """``Σ eᵀGe / Σ wᵀGw`` over the rows (0 for an all-zero layer)."""
    E_ = W - mp.value_matrix(pts, W.shape[1])
    num = float(np.einsum("ij,jk,ik->", E_, G, E_))
    den = float(np.einsum("ij,jk,ik->", W, G, W))
    return num / den if den > 0 else 0.0


def quantize_rows(W, G, cfg: PTQConfig, bits: int | None = None) -> list:
    """The points of every row of ``W`` under ``cfg`` (``bits`` overrides ``cfg.bits``;
    ``mixed`` is per-layer and is handled by :func:`quantize_model`: here it gives one optimal
    point per row)."""
    b = cfg.bits if bits is None else bits
    rows = W.shape[0]
    if cfg.method == "uniform":
        return _uniform(W, G, b, cfg.clip_search)
    if cfg.method == "greedy":
        return [mp.greedy(w, b, cfg.points) for w in W]
    if cfg.method in ("adaptive", "random"):
        extra = int(round((cfg.budget - 1.0) * rows))
        rule = "error" if cfg.method == "adaptive" else "random"
        return mp.allocate(W, np.empty((1, W.shape[1])), b, extra, cfg.n_max, rule, cfg.seed, G=G)
    return [mp.greedy(w, b, 1) for w in W]


# ------------------------------------------------------------------------------- the model
def quantize_model(model, calib_x, cfg: PTQConfig, *, max_rows: int = MAX_CALIB_ROWS) -> PTQResult:
    """Quantize a copy of ``model`` (left unchanged) with the calibration batch ``calib_x``
    under ``cfg``; returns the :class:`PTQResult` holding the quantized copy.

    Raises:
        ValueError: an empty calibration set, a model without Linear / Conv2d layers.
    """
    t0 = time.perf_counter()
    if not isinstance(cfg, PTQConfig):
        raise TypeError(f"cfg must be a PTQConfig, got {type(cfg).__name__}")
    layers = quantizable(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no Linear or Conv2d layer to quantize")
    calib = calibration_inputs(model, calib_x, max_rows, cfg.seed)
    grams = {n: mp.gram(calib[n][0]) for n, _ in layers}
    weights = {n: weight_rows(m) for n, m in layers}
    if cfg.method == "mixed":
        widths = _mixed_widths(weights, grams, cfg)
    else:
        widths = {n: cfg.bits for n, _ in layers}
    qmodel = copy.deepcopy(model)
    qmods = dict(quantizable(qmodel))
    results, total_bits, total_w = [], 0.0, 0
    for name, m in layers:
        W, G, b = weights[name], grams[name], widths[name]
        pts = quantize_rows(W, G, cfg, b)
        counts = np.array([len(p) for p in pts])
        d = W.shape[1]
        Wq = mp.value_matrix(pts, d)
        qmods[name].weight.data = Wq.reshape(m.weight.data.shape).astype(m.weight.data.dtype)
        eff = mp.effective_bits(pts, b, d, cfg.scale_bits)
        total_bits += eff * W.size
        total_w += W.size
        norm = float(np.linalg.norm(W))
        results.append(LayerResult(
            name, tuple(m.weight.data.shape), b, counts, eff,
            float(np.linalg.norm(W - Wq)) / norm if norm else 0.0,
            _rel_output_error(W, pts, G), pts))
    if cfg.act_bits is not None:
        quantize_activations(qmodel, {n: calib[n][1] for n, _ in layers}, cfg.act_bits)
    return PTQResult(cfg, qmodel, results, total_bits / total_w, time.perf_counter() - t0)


def _mixed_widths(weights, grams, cfg) -> dict:
    """Per-layer widths: all at ``cfg.bits``, then one bit at a time to the layer with the
    largest drop in relative output error per added integer bit, while the model's integer
    bits stay within ``budget·bits`` per weight."""
    widths = {n: cfg.bits for n in weights}
    n_w = sum(W.size for W in weights.values())
    allowed = cfg.budget * cfg.bits * n_w
    used = cfg.bits * n_w
    err = {n: _rel_output_error(W, quantize_rows(W, grams[n], cfg, cfg.bits), grams[n])
           for n, W in weights.items()}
    while True:
        best = None
        for n, W in weights.items():
            if widths[n] >= 8 or used + W.size > allowed:
                continue
            e1 = _rel_output_error(W, quantize_rows(W, grams[n], cfg, widths[n] + 1), grams[n])
            gain = (err[n] - e1) / W.size
            if best is None or gain > best[0]:
                best = (gain, n, e1)
        if best is None:
            return widths
        _, n, e1 = best
        widths[n] += 1
        used += weights[n].size
        err[n] = e1


def quantize_activations(model, amax: dict, bits: int) -> None:
    """Round the input of each named layer (``{name: max|x| on the calibration batch}``) to
    a symmetric ``bits``-bit grid of step ``amax / (2^(bits-1) - 1)`` (round to nearest even,
    saturating), through the training casts, as an input hook of the layer."""
    from fpsim.numerics.fixed import IntGrid
    from fpsim.training.casts import Cast, CastContext
    mods = dict(quantizable(model))
    m = (1 << (bits - 1)) - 1
    for name, a in amax.items():
        step = a / m if a > 0 else 1.0
        cast = Cast(IntGrid(bits, step, symmetric=True))
        ctx = CastContext(site=f"{name}.input", role="activation", direction="forward",
                          step=0, seed=0, stats=False, training=False)

        def hook(module, x, cast=cast, ctx=ctx):
            y, _ = cast.round(np.asarray(x.data), ctx)
            return E.Tensor(y)

        mods[name].register_hook("input", hook, owner="ptq-activations")


def evaluate(model, x, y, batch: int = 512) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)`` in evaluation mode, float32
    through the engine."""
    model.eval()
    loss_sum, correct = 0.0, 0
    with E.no_grad():
        for s in range(0, len(x), batch):
            out = model(E.Tensor(x[s:s + batch]))
            loss_sum += float(E.cross_entropy(out, y[s:s + batch]).data) * len(out.data)
            correct += int((out.data.argmax(1) == y[s:s + batch]).sum())
    return loss_sum / len(x), correct / len(x)


# ------------------------------------------------------------------------------- run records
@dataclasses.dataclass
class TrainedModel:
    """A model restored from a run record: the module, the run's dataset, its config and the
    step of the checkpoint it holds."""

    model: object
    data: object
    config: object
    step: int
    run_id: int


def load_run(db: str, run_id: int) -> TrainedModel:
    """The model of run ``run_id`` in the run-record database ``db`` at its latest checkpoint
    (float32 master weights; no precision policy attached), with its dataset.

    Raises:
        RecordError: no such run, or a run without a checkpoint.
    """
    from fpsim.training.loop import run_model
    from fpsim.training.records import RecordError, RunDB
    with RunDB(db) as rdb:
        rdb.run(run_id)  # (no such run: RecordError)
        ckpt = rdb.load_checkpoint(run_id)
    if ckpt is None:
        raise RecordError(f"run {run_id} in {db} has no checkpoint: nothing to quantize")
    cfg, data, model = run_model(db, run_id)
    load_weights(model, ckpt[1], f"run {run_id} ({cfg.model})")
    return TrainedModel(model, data, cfg, ckpt[0], run_id)


def load_weights(model, state: dict, what: str = "the checkpoint") -> None:
    """Load a checkpoint's ``model/...`` entries (or a plain state dict) into ``model``;
    a checkpoint of another model is a ValueError naming both."""
    st = {k[6:]: v for k, v in state.items() if k.startswith("model/")} or dict(state)
    try:
        model.load_state_dict(st)
    except ValueError as err:
        raise ValueError(f"{what} is a checkpoint of another model than "
                         f"{type(model).__name__}: {err}") from None


def calibration_batch(data, size: int, seed: int = 0) -> np.ndarray:
    """``size`` training examples drawn without replacement (seeded): the calibration batch."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"calibration size {size!r} is invalid: the calibration set needs "
                         "at least one example")
    n = len(data.x_train)
    idx = np.random.default_rng([seed, 7]).choice(n, min(int(size), n), replace=False)
    return data.x_train[np.sort(idx)]


def ptq(model, calib_x, x_test, y_test, **config) -> PTQResult:
    """Quantize ``model`` with :class:`PTQConfig` ``(**config)`` on the calibration batch and
    evaluate it on ``(x_test, y_test)``: the result's ``loss`` and ``accuracy`` are set."""
    res = quantize_model(model, calib_x, PTQConfig(**config))
    res.loss, res.accuracy = evaluate(res.model, x_test, y_test)
    return res
