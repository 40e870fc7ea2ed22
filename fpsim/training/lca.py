"""Loss-change allocation (Lan, Liu, Zhou, Yosinski, NeurIPS 2019): which parameters, layers and
neurons lowered or raised the training loss at every step of a recorded run.

Along the straight segment from θ_t to θ_{t+1} (Δ_t = θ_{t+1} − θ_t, the parameters after t and
t + 1 steps of a run trained with ``lca=True``), the change of the full training-set loss L is a
path integral, split exactly over the parameters::

    L(θ_{t+1}) − L(θ_t) = Σ_i A_{t,i},    A_{t,i} = Δ_{t,i} · ∫_0^1 ∂_i L(θ_t + sΔ_t) ds

A_{t,i} < 0: parameter i *helped* at step t (lowered the loss); > 0: it hurt. The integral is
computed by composite Simpson's rule on n intervals — weights ``[1, 4, 2, 4, …, 2, 4, 1] / 3n``
on the gradients at θ_t + (j/n)Δ_t — starting at n = 2 and doubling n (reusing every gradient
already evaluated; only the new odd points are computed) while
``|L(θ_{t+1}) − L(θ_t) − Σ_i A_{t,i}| > tol`` and n < ``max_splits``, as the authors' code does.
The gradients at the ends are shared with the neighbouring steps, so n = 2 costs 2 new
full-set gradients per step. ``method="first_order"`` is the Euler variant
``A_{t,i} = ∂_i L(θ_t) Δ_{t,i}`` (1 gradient per step).

The landscape: L is the unweighted training objective without weight decay (cross-entropy, or
MSE for regression) in float32 arithmetic with *no* precision policy: a run trained under an
emulated fp16 / bf16 / FP8 policy moved through the same float32 landscape along its own path,
so its allocation says how its (rounded) updates changed the true loss. Every evaluation covers
the whole split (training set by default), in chunks of ``chunk`` examples whose mean losses and
gradients are combined with weights ``len(chunk) / N`` in float64; BatchNorm uses the statistics
of each chunk (batch-statistics mode: one chunk of the whole set, the default, is the authors'
setting), dropout is off, and every buffer (running statistics) is restored after each
evaluation.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from fpsim import engine as E
from fpsim.training import determinism, instrument, nn
from fpsim.training.records import RecordError, RunDB

METHODS = ("simpson", "first_order")


class Landscape:
    """The full-set loss and gradient of ``model`` as functions of its flat parameter vector.

    Args:
        model: the module; its parameters are overwritten by every call.
        x, y: the examples and targets (the whole training set, or the test set).
        classify: cross-entropy (True) or mean squared error (False).
        chunk: examples per forward/backward pass (None: all in one).

    Attributes:
        names, shapes, sizes: of the parameters, in ``named_parameters`` order;
        offsets: where each begins in the flat vector; evaluations: calls so far.
    """

    def __init__(self, model, x, y, classify: bool = True, chunk: int | None = None):
        if len(x) == 0:
            raise ValueError("the loss landscape needs at least one example; the split is empty")
        if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer))
                                  or chunk < 1):
            raise ValueError(f"chunk must be a positive number of examples, got {chunk!r}")
        hooked = sorted({n or type(m).__name__ for n, m in model.named_modules()
                         if any(m._hooks.values())})
        if hooked:
            raise ValueError(f"the model has hooks attached (a precision policy or scaler; at "
                             f"{', '.join(hooked[:3])}): the loss landscape is float32 with no "
                             "casts, so give a freshly built model (fpsim.training.loop.run_model)")
        self.model, self.x, self.y, self.classify = model, x, y, classify
        self.chunk = len(x) if chunk is None else int(chunk)
        named = list(model.named_parameters())
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.shapes = [p.data.shape for p in self.params]
        self.sizes = np.array([p.data.size for p in self.params], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.size = int(self.sizes.sum())
        self.evaluations = 0

    def set(self, theta: np.ndarray) -> None:
        """Put the flat vector ``theta`` into the model's parameters (rounded to float32)."""
        theta = np.asarray(theta)
        if theta.shape != (self.size,):
            raise ValueError(f"a parameter vector of {theta.size} values does not fit the model's "
                             f"{self.size} parameters")
        for p, o, n, shape in zip(self.params, self.offsets, self.sizes, self.shapes):
            p.data[...] = theta[o:o + n].reshape(shape)

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """``(L(theta), ∇L(theta))``: the mean loss over the split (float64) and its gradient
        as one float64 vector."""
        self.set(theta)
        model, n_total = self.model, len(self.x)
        buffers = model.buffer_values()
        was_training = {m: m.training for _, m in model.named_modules()}
        model.train()
        for _, m in model.named_modules():
            if isinstance(m, nn.Dropout):
                m.training = False
        loss_sum, grad = 0.0, np.zeros(self.size, np.float64)
        try:
            with instrument.paused():
                for s in range(0, n_total, self.chunk):
                    xb, yb = self.x[s:s + self.chunk], self.y[s:s + self.chunk]
                    w = len(xb) / n_total
                    for p in self.params:
                        p.grad = None
                    out = model(E.Tensor(xb))
                    loss = E.cross_entropy(out, yb) if self.classify else E.mse(out, yb)
                    loss.backward()
                    loss_sum += w * float(loss.data)
                    for p, o, k in zip(self.params, self.offsets, self.sizes):
                        if p.grad is not None:
                            grad[o:o + k] += w * np.asarray(p.grad, np.float64).ravel()
        finally:
            model.set_buffer_values(buffers)
            for m, mode in was_training.items():
                m.training = mode
            for p in self.params:
                p.grad = None
        self.evaluations += 1
        return loss_sum, grad


def simpson_weights(n: int) -> np.ndarray:
    """Composite Simpson weights of ``n`` (even) intervals on [0, 1]: ``[1, 4, 2, …, 4, 1]/3n``
    (they sum to 1, so the weighted gradients are the mean gradient along the segment)."""
    if n < 2 or n % 2:
        raise ValueError(f"Simpson's rule needs an even number of intervals >= 2, got {n}")
    c = np.full(n + 1, 2.0)
    c[1::2] = 4.0
    c[0] = c[-1] = 1.0
    return c / (3 * n)


@dataclasses.dataclass
class LCAResult:
    """The allocation of a run's steps ``steps[0] .. steps[-1]``.

    Attributes:
        names, shapes: the parameters (``named_parameters`` order).
        steps: (T,) the step t of each allocation (θ_t → θ_{t+1}).
        loss: (T + 1,) L(θ_t) along the run (float64).
        per_param: (T, P) Σ of A_{t,i} over each parameter tensor's entries.
        helped: (T,) fraction of the parameters that moved (A ≠ 0) whose A_{t,i} < 0 (NaN for
            a step that moved nothing).
        moved: (T,) parameters with A_{t,i} ≠ 0.
        error: (T,) L(θ_{t+1}) − L(θ_t) − Σ_i A_{t,i}.
        splits: (T,) Simpson intervals used (1: first order, 0: the step did not move).
        total: (K,) Σ_t A_{t,i} per parameter entry.
        helped_steps: (K,) steps at which each entry helped.
        method, tol, max_splits, split, chunk: how it was computed.
        evaluations: full-set gradient evaluations made; seconds: wall time.
    """

    names: list
    shapes: list
    steps: np.ndarray
    loss: np.ndarray
    per_param: np.ndarray
    helped: np.ndarray
    moved: np.ndarray
    error: np.ndarray
    splits: np.ndarray
    total: np.ndarray
    helped_steps: np.ndarray
    method: str = "simpson"
    tol: float = 1e-3
    max_splits: int = 32
    split: str = "train"
    chunk: int = 0
    evaluations: int = 0
    seconds: float = 0.0

    # -- aggregations -------------------------------------------------------------------------
    @property
    def delta_loss(self) -> np.ndarray:
        """(T,) the true L(θ_{t+1}) − L(θ_t)."""
        return np.diff(self.loss)

    @property
    def allocated(self) -> np.ndarray:
        """(T,) Σ_i A_{t,i} per step."""
        return self.per_param.sum(axis=1)

    def layers(self, cumulative: bool = False) -> dict:
        """``{parameter name: (T,) Σ of its A per step}`` (cumulative over steps if asked)."""
        a = np.cumsum(self.per_param, axis=0) if cumulative else self.per_param
        return {n: a[:, j] for j, n in enumerate(self.names)}

    def layer_totals(self) -> dict:
        """``{parameter name: Σ_t Σ_i A_{t,i}}`` over the whole run (they add up to
        ``allocated.sum()``)."""
        return {n: float(v) for n, v in zip(self.names, self.per_param.sum(axis=0))}

    def modules(self) -> dict:
        """``{module name: Σ_t over its parameters}`` (a layer's weight, bias, BN scale and
        shift together; the name is the parameter's without its last component)."""
        out: dict[str, float] = {}
        for n, v in self.layer_totals().items():
            key = n.rsplit(".", 1)[0] if "." in n else n
            out[key] = out.get(key, 0.0) + v
        return out

    def _slices(self):
        sizes = [int(np.prod(s)) for s in self.shapes]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        return {n: slice(offsets[j], offsets[j + 1]) for j, n in enumerate(self.names)}

    def neurons(self, name: str) -> np.ndarray:
        """Σ_t of the A of each output unit of the weight ``name`` (a Linear's row, a
        convolution's output channel): the weight's entries summed over every axis but the
        first (the output axis), plus the unit's bias when the module has one. A 1-D weight
        (BatchNorm's or LayerNorm's scale) is returned per entry, without its shift."""
        sl = self._slices()
        if name not in sl:
            raise ValueError(f"no parameter {name!r}; the parameters are {', '.join(self.names)}")
        shape = self.shapes[self.names.index(name)]
        w = self.total[sl[name]].reshape(shape)
        per_unit = w.reshape(shape[0], -1).sum(axis=1) if len(shape) > 1 else w.copy()
        bias = name.rsplit(".", 1)[0] + ".bias" if name.endswith(".weight") else None
        if len(shape) > 1 and bias in sl and self.total[sl[bias]].size == shape[0]:
            per_unit = per_unit + self.total[sl[bias]]
        return per_unit

    def reconstructed_loss(self) -> np.ndarray:
        """(T + 1,) L(θ_0) + the cumulative Σ_i A: the loss curve rebuilt from the allocation."""
        return self.loss[0] + np.concatenate([[0.0], np.cumsum(self.allocated)])

    def reconstruction_error(self) -> float:
        """|rebuilt − true| at the end, relative to |L(θ_T) − L(θ_0)| (0 for no change)."""
        change = abs(self.loss[-1] - self.loss[0])
        end = abs(self.reconstructed_loss()[-1] - self.loss[-1])
        return float(end / change) if change else float(end)

    def summary(self) -> dict:
        """The headline numbers as a JSON-ready dict."""
        moved = self.moved > 0
        return dict(
            method=self.method, steps=int(len(self.steps)), split=self.split,
            loss_start=float(self.loss[0]), loss_end=float(self.loss[-1]),
            delta_loss=float(self.loss[-1] - self.loss[0]),
            allocated=float(self.allocated.sum()),
            max_abs_error=float(np.abs(self.error).max()) if len(self.error) else 0.0,
            mean_abs_error=float(np.abs(self.error).mean()) if len(self.error) else 0.0,
            steps_within_tol=int((np.abs(self.error) <= self.tol).sum()),
            reconstruction_error=self.reconstruction_error(),
            helped_mean=float(self.helped[moved].mean()) if moved.any() else float("nan"),
            helped_min=float(self.helped[moved].min()) if moved.any() else float("nan"),
            helped_max=float(self.helped[moved].max()) if moved.any() else float("nan"),
            splits_mean=float(self.splits[moved].mean()) if moved.any() else 0.0,
            evaluations=int(self.evaluations), seconds=round(self.seconds, 3),
            layers=self.layer_totals())

    # -- files ----------------------------------------------------------------------------------
    _ARRAYS = ("steps", "loss", "per_param", "helped", "moved", "error", "splits", "total",
               "helped_steps")

    def save(self, path: str) -> None:
        """Write the result to an ``.npz`` file (plain arrays and a JSON header; no pickles)."""
        import json
        head = dict(names=self.names, shapes=[list(s) for s in self.shapes], method=self.method,
                    tol=self.tol, max_splits=self.max_splits, split=self.split, chunk=self.chunk,
                    evaluations=self.evaluations, seconds=self.seconds)
        np.savez(path, header=np.frombuffer(json.dumps(head).encode(), np.uint8),
                 **{k: getattr(self, k) for k in self._ARRAYS})

    @classmethod
    def load(cls, path: str) -> "LCAResult":
        """Read :meth:`save` output (never unpickles)."""
        import json
        with np.load(path, allow_pickle=False) as z:
            head = json.loads(z["header"].tobytes().decode())
            arrays = {k: z[k] for k in cls._ARRAYS}
        head["shapes"] = [tuple(s) for s in head["shapes"]]
        return cls(**arrays, **head)


def check_options(method, tol, max_splits, split) -> None:
    """Raise a ValueError naming the first bad option of an allocation."""
    if method not in METHODS:
        raise ValueError(f"unknown LCA method {method!r}; choose {' or '.join(METHODS)}")
    if not (isinstance(tol, (int, float)) and not isinstance(tol, bool) and tol > 0):
        raise ValueError(f"tolerance must be a positive number, got {tol!r}")
    if isinstance(max_splits, bool) or not isinstance(max_splits, (int, np.integer)) \
            or max_splits < 2 or max_splits & (max_splits - 1):
        raise ValueError(f"max_splits must be a power of two >= 2, got {max_splits!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, got {split!r}")


def allocate_path(landscape: Landscape, thetas, *, method: str = "simpson", tol: float = 1e-3,
                  max_splits: int = 32, first_step: int = 0, progress=None) -> LCAResult:
    """The allocation of the path ``thetas`` (an iterable of flat parameter vectors θ_0, θ_1, …)
    on ``landscape`` (see the module docstring; ``first_step`` numbers the first segment)."""
    check_options(method, tol, max_splits, "train")
    t0 = time.perf_counter()
    evals0 = landscape.evaluations
    it = iter(thetas)
    try:
        theta0 = np.asarray(next(it), np.float64)
    except StopIteration:
        raise ValueError("the path holds no parameter vectors") from None
    L0, g0 = landscape(theta0)
    K, P = landscape.size, len(landscape.names)
    losses, per_param, helped, moved, errors, splits = [L0], [], [], [], [], []
    total = np.zeros(K, np.float64)
    helped_steps = np.zeros(K, np.int64)
    for theta1 in it:
        theta1 = np.asarray(theta1, np.float64)
        delta = theta1 - theta0  # exact: both are float32 values
        if not delta.any():  # a skipped step (non-finite gradients): nothing moved
            A, L1, g1, n = np.zeros(K), L0, g0, 0
        else:
            L1, g1 = landscape(theta1)
            if method == "first_order":
                A, n = g0 * delta, 1
            else:
                A, n = _simpson(landscape, theta0, delta, L1 - L0, g0 + g1, tol, max_splits)
        per_param.append(np.add.reduceat(A, landscape.offsets) if K else np.zeros(P))
        nz = int(np.count_nonzero(A))
        neg = A < 0
        moved.append(nz)
        helped.append(neg.sum() / nz if nz else np.nan)  # (NaN: nothing moved)
        errors.append((L1 - L0) - A.sum())
        splits.append(n)
        total += A
        helped_steps += neg
        losses.append(L1)
        theta0, L0, g0 = theta1, L1, g1
        if progress is not None:
            progress(len(splits))
    if not splits:
        raise ValueError("the path holds a single parameter vector: no step to allocate")
    return LCAResult(
        names=landscape.names, shapes=landscape.shapes,
        steps=np.arange(first_step, first_step + len(splits)), loss=np.array(losses),
        per_param=np.array(per_param), helped=np.array(helped, np.float64),
        moved=np.array(moved, np.int64), error=np.array(errors), splits=np.array(splits),
        total=total, helped_steps=helped_steps, method=method, tol=float(tol),
        max_splits=int(max_splits), chunk=landscape.chunk,
        evaluations=landscape.evaluations - evals0, seconds=time.perf_counter() - t0)


def _simpson(landscape, theta0, delta, change, ends, tol, max_splits):
    """``(A, n)``: Simpson's allocation of one step, refined until it matches ``change``
    within ``tol`` or n reaches ``max_splits``. ``ends`` is the sum of the end gradients.

    At n intervals the points j/n with odd j carry weight 4 and the interior ones with even j
    weight 2. Doubling n keeps every old point (they become the even ones of 2n) and adds the
    new odd ones, so only sums are kept: ``even`` (all interior points of earlier levels) and
    ``odd`` (the points added last)."""
    n, even = 2, np.zeros_like(ends)
    odd = landscape(theta0 + 0.5 * delta)[1]
    while True:
        A = delta * (ends + 4.0 * odd + 2.0 * even) / (3 * n)
        if abs(change - A.sum()) <= tol or n >= max_splits:
            return A, n
        even += odd
        n *= 2
        odd = np.zeros_like(ends)
        for j in range(1, n, 2):
            odd += landscape(theta0 + (j / n) * delta)[1]


def allocate(db: str, run_id: int, *, method: str = "simpson", tol: float = 1e-3,
             max_splits: int = 32, split: str = "train", chunk: int | None = None,
             start: int = 0, stop: int | None = None, progress: bool = False) -> LCAResult:
    """The loss-change allocation of steps ``start .. stop - 1`` (default: all saved) of run
    ``run_id`` in the run-record database ``db``, trained with ``lca=True``.

    Args:
        method: ``simpson`` (adaptive composite Simpson) or ``first_order``.
        tol: the per-step tolerance on ``|ΔL − Σ A|`` that stops the refinement.
        max_splits: the most Simpson intervals per step (a power of two).
        split: the loss of the ``train`` set (the authors' choice: it measures training) or of
            the ``test`` set.
        chunk: examples per forward/backward pass (None: the whole split in one).

    Raises:
        RecordError: no such run, or a run that did not save its parameters.
        ValueError: bad options, or saved parameters that do not fit the run's model.
    """
    from fpsim.training.loop import run_model
    check_options(method, tol, max_splits, split)
    cfg, data, model = run_model(db, run_id)
    with RunDB(db) as rdb:
        saved = rdb.param_steps(run_id)
        if not saved:
            raise RecordError(f"run {run_id} in {db} did not save its parameters: loss-change "
                              "allocation needs a run trained with lca=True (fpsim train --lca)")
        last = saved[-1] if stop is None else int(stop)
        want = list(range(int(start), last + 1))
        missing = sorted(set(want) - set(saved))
        if len(want) < 2 or missing:
            have = (f"run {run_id} saved the parameter points {saved[0]}..{saved[-1]}"
                    f"{' with gaps' if len(saved) != saved[-1] - saved[0] + 1 else ''} "
                    f"(point t: after t steps)")
            if len(want) < 2:
                raise ValueError(f"{have}; start {start} and stop {last} leave no step to "
                                 "allocate: at least two points are needed")
            raise ValueError(f"{have}; steps {start}..{last - 1} need the points "
                             f"{start}..{last}, and {missing[:5]}"
                             f"{' ...' if len(missing) > 5 else ''} are missing")
        classify = data.task == "classification"
        x, y = (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)
        land = Landscape(model, x, y, classify, chunk)
        first = rdb.load_params(run_id, want[0])
        if first.size != land.size:
            raise ValueError(f"run {run_id} saved {first.size} parameters per step, but its "
                             f"model {cfg.model} has {land.size}: the record belongs to another "
                             "model")

        def path():
            yield first
            for t in want[1:]:
                yield rdb.load_params(run_id, t)

        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(want) - 1, unit="step", desc=f"LCA run {run_id}", leave=False)
        try:
            with determinism.pinned_blas():  # the training loop's BLAS setting
                res = allocate_path(land, path(), method=method, tol=tol, max_splits=max_splits,
                                    first_step=want[0],
                                    progress=None if bar is None else lambda k: bar.update(1))
        finally:
            if bar is not None:
                bar.close()
    res.split = split
    return res
