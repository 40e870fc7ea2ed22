"""The training loop, with run records and bit-identical resume.

One step (see docs/design.md): the policy's cast sites round activations, weights and
gradients while the model runs forward and backward; the active recorder collects their Stats;
parameter gradients are checked for Inf/NaN (a non-finite step is skipped); the optimizer
updates the fp32 master weights; the step's metrics and per-site counts are queued for the run
record and committed with each checkpoint.

Everything random is a pure function of the seed and a counter (initialization from the seed,
batch order from (seed, epoch), dropout masks from the call count, stochastic rounding from
(seed, site, role, step)), so a run is bit-identical to another with the same config, and a run
resumed from its checkpoint is bit-identical to one that never stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import numbers
import os
import platform
import signal
import sys
import time
import warnings

import numpy as np

from fpsim.training import data as datasets
from fpsim import engine as E
from fpsim.training import determinism, instrument, optim, scaling
from fpsim.training.precision import policy as make_policy
from fpsim.training.context import RunContext
from fpsim.numerics.modes import as_flag
from fpsim.training.records import RESUME_SETTINGS_NOTE, RecordError, RunDB, has_python_objects

#: Defaults per (model, dataset) that train to convergence (see docs/training.md): any field
#: of TrainConfig left None is taken from here (then from ``(model, None)``).
DEFAULTS = {
    ("mlp", None): dict(optimizer="sgd", lr=0.1, schedule="cosine", epochs=30, batch_size=128),
    ("cnn", None): dict(optimizer="sgd", lr=0.05, schedule="cosine", epochs=30, batch_size=64),
    ("lenet", None): dict(optimizer="sgd", lr=0.05, schedule="cosine", epochs=30, batch_size=64),
    ("resnet", None): dict(optimizer="adam", lr=3e-3, schedule="cosine", epochs=10, batch_size=64),
    ("transformer", None): dict(optimizer="adam", lr=3e-3, schedule="cosine", epochs=40,
                                batch_size=64),
    ("mlp", "mnist1d"): dict(optimizer="adam", lr=2e-3, schedule="cosine", epochs=40,
                             batch_size=128),
}


# ---------------------------------------------------------------------------- field checks
# One function per kind of TrainConfig field: (field name, value) -> the value, normalized
# (numpy scalars become Python numbers, so the run record's JSON holds plain numbers).

def _got(value) -> str:
    return f"{value!r} ({type(value).__name__})"


def _integer(field, value, low=0, high=None, high_text=None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{field} must be an integer, got {_got(value)}")
    if value < low or (high is not None and value >= high):
        if high is not None:
            raise ValueError(f"{field} must be an integer in [{low}, {high_text or high}), "
                             f"got {value!r}")
        raise ValueError(f"{field} must be {'a positive integer' if low == 1 else 'an integer >= 0'}"
                         f", got {value!r}")
    return int(value)


def _real(field, value) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{field} must be a number (a float or an integer), got {_got(value)}")
    return float(value)


def _positive(field, value) -> float:
    v = _real(field, value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{field} must be a positive number, got {v!r}")
    return v


def _nonnegative(field, value) -> float:
    v = _real(field, value)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{field} must be a finite number >= 0, got {v!r}")
    return v


def _momentum(field, value) -> float:
    v = _real(field, value)
    if not 0 <= v < 1:  # (1 or more never forgets a gradient: the velocity grows without bound)
        raise ValueError(f"{field} must lie in [0, 1), got {v!r}")
    return v


def _text(field, value) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a string, got {_got(value)}")
    return value


def _table(field, value) -> dict:
    if not isinstance(value, dict):
        raise TypeError(f"{field} must be a table (dict), got {_got(value)}")
    return dict(value)


def _model(field, value) -> str:
    from fpsim.models import MODELS
    if not isinstance(value, str) or value not in MODELS:
        raise ValueError(f"unknown model {value!r}; choose from {', '.join(MODELS)}")
    return value


def _dataset(field, value) -> str:
    return datasets.dataset_key(value)


def _spec(kinds: str):
    """A check of a field given as a name, a table or (the Python API) an object."""
    def check(field, value):
        if isinstance(value, (int, float, list, tuple, bool)) or value is None:
            raise TypeError(f"{field} must be {kinds}, got {_got(value)}")
        return value
    return check


def _optional(check):
    return lambda field, value: None if value is None else check(field, value)


#: field -> its check (the fields TrainConfig's __post_init__ checks, in declaration order).
_FIELD_CHECKS = {
    "model": _model, "dataset": _dataset,
    "policy": _spec("a preset name, a table of Policy fields or a Policy"),
    "optimizer": _optional(_text), "lr": _optional(_positive), "momentum": _momentum,
    "weight_decay": _nonnegative, "schedule": _optional(_text),
    "epochs": _optional(lambda f, v: _integer(f, v, low=1)),
    "batch_size": _optional(lambda f, v: _integer(f, v, low=1)),
    "seed": lambda f, v: _integer(f, v, 0, 2 ** 63, "2^63"),  # (SQLite INTEGER: 64-bit signed)
    "model_config": _table, "dataset_options": _table,
    "scaler": _spec("a scaler name, a table of scaler arguments or a Scaler"),
    "loss_weight": _positive, "shadow_every": _integer, "instrument": as_flag,
    "hist_every": _integer, "checkpoint_every": _integer, "name": _text, "lca": as_flag,
    "lca_max_bytes": lambda f, v: _integer(f, v, low=1),
}


@dataclasses.dataclass
class TrainConfig:
    """What to train and how. Fields left None take :data:`DEFAULTS` for the model/dataset.

    Attributes:
        model: a name of :data:`fpsim.models.MODELS`; model_config: its extra keys.
        dataset: a name of :data:`fpsim.training.data.DATASETS`; dataset_options: its options
            (``path`` for file loaders).
        policy: a precision preset name or a dict of Policy fields (see fpsim.training.precision).
        optimizer: ``sgd``, ``adam`` or ``adamw``; lr: base learning rate; momentum
            (SGD), weight_decay; schedule: ``constant`` or ``cosine`` (over the whole run).
        epochs, batch_size, seed.
        scaler: the loss scaler (see :func:`fpsim.training.scaling.scaler`): ``none``,
            ``static:S``, ``dynamic[:variant]``, ``adaptive`` or a dict.
        loss_weight: the training objective is ``loss_weight`` times the loss (a loss averaged
            over many outputs, or one term of a weighted sum, has small gradients: the setting
            where low-precision gradients underflow). With SGD and no weight decay, a power of
            two ``loss_weight`` and ``lr / loss_weight`` train bit-identically to weight 1 in
            float32, so only the rounding of the gradients differs. Recorded losses are the
            unweighted loss.
        shadow_every: every K steps (0: never) recompute the step in float32 and count, per
            activation-gradient site, the elements non-zero there but zero in the emulation
            (the underflow rate as Zhao et al. define it; costs a second pass).
        instrument: record per-site event counts (Stats) at every cast site.
        hist_every: record the sites' exponent histograms every K steps (0: never).
        checkpoint_every: write a checkpoint (and commit the queued rows) every K steps, and at
            the end of every epoch.
        name: a label for the run.
        lca: save the float32 parameters after every step (and the initial ones) in the run
            record's ``params`` table, for loss-change allocation (:mod:`fpsim.training.lca`).
            Costs ``4 * parameters * (steps + 1)`` bytes of database.
        lca_max_bytes: the most bytes ``lca`` may save; a run that would save more is refused
            before it starts (default 1 GiB).

    Construction checks every field's type and range (numbers finite; ``seed`` in
    ``[0, 2^63)``, the range a run record stores; ``momentum`` in ``[0, 1)``; bools only
    ``True`` / ``False``; ``model_config`` keys those of the model) and turns numpy scalars into
    Python numbers; :meth:`resolved` checks what depends on the defaults (optimizer, schedule,
    policy, scaler). Errors name the field: ``TypeError`` for a value of the wrong type,
    ``ValueError`` for one out of range.
    """

    model: str = "mlp"
    dataset: str = "digits"
    policy: str | dict = "fp32"
    optimizer: str | None = None
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    seed: int = 0
    model_config: dict = dataclasses.field(default_factory=dict)
    dataset_options: dict = dataclasses.field(default_factory=dict)
    scaler: str | dict = "none"
    loss_weight: float = 1.0
    shadow_every: int = 0
    instrument: bool = True
    hist_every: int = 50
    checkpoint_every: int = 100
    name: str = ""
    lca: bool = False
    lca_max_bytes: int = 2 ** 30

    def __post_init__(self):
        for field, check in _FIELD_CHECKS.items():
            setattr(self, field, check(field, getattr(self, field)))
        from fpsim.models import check_config
        check_config(self.model, self.model_config)
        datasets.check_options(self.dataset, self.dataset_options)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Build from a dict (e.g. a parsed TOML file); unknown keys are an error."""
        if not isinstance(d, dict):
            raise TypeError(f"a training config is a table (dict) of fields, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(map(str, set(d) - names))
        if unknown:
            raise ValueError(f"unknown training config key(s) {unknown}; allowed: {sorted(names)}")
        return cls(**d)

    def resolved(self) -> "TrainConfig":
        """A copy with every None replaced by the defaults, validated."""
        base = {**DEFAULTS[(self.model, None)], **DEFAULTS.get((self.model, self.dataset), {})}
        c = dataclasses.replace(self, **{k: v for k, v in base.items() if getattr(self, k) is None})
        if c.optimizer not in optim.OPTIMIZERS:
            raise ValueError(f"unknown optimizer {c.optimizer!r}; choose from {', '.join(optim.OPTIMIZERS)}")
        if c.schedule not in ("constant", "cosine"):
            raise ValueError(f"unknown schedule {c.schedule!r}; choose constant or cosine")
        pol = make_policy(c.policy)  # validates
        scaling.scaler(c.scaler, pol.gradient_format())
        return c


def build_model(cfg: TrainConfig, data):
    """The model of a resolved config for dataset ``data`` (as the run initialized it: float32,
    no precision policy attached)."""
    from fpsim.models import build
    return build(cfg.model, {**cfg.model_config, "input_shape": data.input_shape,
                             "num_classes": data.num_classes, "seed": cfg.seed})


def run_model(db: str, run_id: int):
    """``(resolved TrainConfig, dataset, freshly built model)`` of run ``run_id`` in the
    run-record database ``db`` (weights as initialized; no policy attached).

    Raises:
        RecordError: no such run, or a config holding Python objects (not rebuildable).
    """
    with RunDB(db) as rdb:
        info = rdb.run(run_id)
    if has_python_objects(info["config"]):
        raise RecordError(f"run {run_id} in {db} was configured with Python objects (a scaler "
                          "or cast instance), which the record holds only as their repr: its "
                          "model cannot be rebuilt from the record")
    cfg = TrainConfig.from_dict(info["config"]).resolved()
    data = datasets.load(cfg.dataset, seed=cfg.seed, **dict(cfg.dataset_options))
    return cfg, data, build_model(cfg, data)


def versions() -> dict:
    """Versions recorded with each run, and the BLAS the float32 GEMMs ran on."""
    import numba

    from fpsim import __version__
    from fpsim.training import determinism
    return {"fpsim": __version__, "numpy": np.__version__, "numba": numba.__version__,
            "python": platform.python_version(), "blas": determinism.blas_info(),
            "numba_threads": numba.get_num_threads(), "cpus": os.cpu_count(),
            "platform": platform.platform(), "machine": platform.machine(),
            "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]) if sys.argv else ""}


@dataclasses.dataclass
class RunTotals:
    """Running sums of one run: this epoch's loss, correct predictions and examples; over the
    whole run, skipped steps, underflowed gradient values and non-zero finite gradient values.
    Checkpoints store them as one float64 array (:meth:`to_array`, in field order)."""

    loss_sum: float = 0.0
    correct: float = 0.0
    count: float = 0.0
    skipped: float = 0.0
    grad_underflow: float = 0.0
    grad_live: float = 0.0

    def to_array(self) -> np.ndarray:
        """The fields as a float64 array (the checkpoint's ``loop/totals``)."""
        return np.array(dataclasses.astuple(self), np.float64)

    @classmethod
    def from_array(cls, a) -> "RunTotals":
        """Inverse of :meth:`to_array`."""
        return cls(*(float(v) for v in np.asarray(a, np.float64)))

    def end_epoch(self) -> None:
        """Start the next epoch's sums (run sums are kept)."""
        self.loss_sum = self.correct = self.count = 0.0


class Session:
    """Data, model, policy, scaler, optimizer and run context of one run, and the loop state,
    built from a resolved :class:`TrainConfig`.

    Attributes:
        step: steps done; :attr:`totals` (:class:`RunTotals`) the epoch and run sums;
        context: the :class:`~fpsim.training.context.RunContext` the cast sites read.
    """

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        opts = dict(cfg.dataset_options)
        self.data = datasets.load(cfg.dataset, seed=cfg.seed, **opts)
        self.classify = self.data.task == "classification"
        self.model = build_model(cfg, self.data)
        self.policy = make_policy(cfg.policy)
        n = len(self.data.x_train)
        self.steps_per_epoch = -(-n // cfg.batch_size)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        schedule = optim.cosine(self.total_steps) if cfg.schedule == "cosine" else None
        kw = dict(momentum=cfg.momentum) if cfg.optimizer == "sgd" else {}
        self.opt = optim.OPTIMIZERS[cfg.optimizer](self.model.named_parameters(), lr=cfg.lr,
                                                   weight_decay=cfg.weight_decay,
                                                   schedule=schedule, **kw)
        self.context = RunContext(cfg.seed)
        self.sites = self.policy.apply(self.model, self.opt, context=self.context)
        self.scaler = scaling.scaler(cfg.scaler, self.policy.gradient_format())
        self.scaler_sites = self.scaler.attach(self.model)
        self.params = self.model.parameters()
        self.step = 0
        self.totals = RunTotals()
        if cfg.lca:
            size = 4 * sum(p.data.size for p in self.params) * (self.total_steps + 1)
            if size > cfg.lca_max_bytes:
                raise ValueError(
                    f"lca=True would save {self.total_steps + 1} parameter vectors of "
                    f"{sum(p.data.size for p in self.params)} float32 values, "
                    f"{size} bytes ({size / 2**20:.1f} MiB), over lca_max_bytes = "
                    f"{cfg.lca_max_bytes} bytes: raise lca_max_bytes or train fewer steps")

    def flat_params(self) -> np.ndarray:
        """Every parameter's master values, concatenated in ``named_parameters`` order, as
        float32 (the vector ``lca=True`` saves after each step)."""
        return np.concatenate([np.asarray(p.data, np.float32).ravel() for p in self.params])

    # -- one step -------------------------------------------------------------------------------
    def loss(self, out, y):
        return E.cross_entropy(out, y) if self.classify else E.mse(out, y)

    def train_step(self, idx, recorder) -> dict:
        """Forward, backward and update on the examples ``idx``; returns the step's metrics."""
        with self.context.at_step(self.step):
            return self._train_step(idx, recorder)

    def _train_step(self, idx, recorder) -> dict:
        t0 = time.perf_counter()
        x, y = self.data.x_train[idx], self.data.y_train[idx]
        shadow_now = bool(self.cfg.shadow_every) and self.step % self.cfg.shadow_every == 0
        before = self.model.buffer_values() if shadow_now else None
        with (self.context.capturing() if shadow_now else contextlib.nullcontext({})) as emulated:
            loss, out, scale = self._forward_backward(x, y)
        shadow = self._shadow(x, y, before, emulated) if shadow_now else None
        self.scaler.unscale([p.grad for p in self.params])
        finite = all(np.isfinite(p.grad).all() for p in self.params if p.grad is not None)
        lr = self.opt.lr  # the rate of this step's update
        scales = self.scaler.report()
        notes = self.scaler.notes() if callable(getattr(self.scaler, "notes", None)) else {}
        do_step = self.scaler.update(scaling.StepStats(
            not finite, recorder.peek() if recorder is not None else None))
        if do_step:
            self.opt.step()  # (optimizer-state casts report into this step too)
        summary = recorder.end_step() if recorder is not None else None
        correct = int((out.data.argmax(1) == y).sum()) if self.classify else 0
        t = self.totals
        t.loss_sum += float(loss.data) * len(idx)
        t.correct += correct
        t.count += len(idx)
        t.skipped += not do_step
        rate = float("nan")
        if summary is not None:
            st = summary.total()
            live = st.total - st.hist_zero - st.hist_inf - st.hist_nan
            t.grad_underflow += st.underflow
            t.grad_live += live
            rate = st.underflow / live if live else 0.0
        self.step += 1
        return dict(loss=float(loss.data), accuracy=correct / len(idx) if self.classify else None,
                    lr=lr, loss_scale=scale, skipped=not do_step,
                    grad_underflow_rate=rate,
                    nonfinite=0 if summary is None else summary.nonfinite(),
                    seconds=time.perf_counter() - t0, summary=summary, shadow=shadow,
                    scales=scales, notes=notes, tensor_scales=self.policy.scale_records())

    def _forward_backward(self, x, y):
        """One forward and backward pass; returns (loss, output, the loss scale used)."""
        for p in self.params:
            p.grad = None
        out = self.model(E.Tensor(x))
        loss = self.loss(out, y)
        objective = loss if self.cfg.loss_weight == 1 else loss * np.float32(self.cfg.loss_weight)
        scale = float(self.scaler.loss_scale())
        # Inf / NaN gradients are an expected event under loss scaling (the step is skipped).
        with np.errstate(over="ignore", invalid="ignore"):
            objective.backward(scale, tag=scale, merge=self.scaler.merge)
        return loss, out, scale

    def _shadow(self, x, y, before, emulated) -> dict:
        """Recompute the step in float32 — no rounding, no per-site scaling, float32 BLAS
        products (any accumulation model off), the buffers as they were before the step (so
        dropout draws the same masks) — and compare each activation-gradient site: ``site ->
        (elements non-zero in float32 but zero emulated, elements non-zero in float32)``.
        Gradients, buffers and recorded data are left as the emulated step made them."""
        grads = [p.grad for p in self.params]
        after = self.model.buffer_values()
        self.model.set_buffer_values(before)
        try:
            with self.context.shadow() as reference, self.scaler.suspended(), \
                    instrument.paused():
                self._forward_backward(x, y)
        finally:
            for p, g in zip(self.params, grads):
                p.grad = g
            self.model.set_buffer_values(after)
        return {site: (int(((reference[site] != 0) & (g == 0)).sum()),
                       int((reference[site] != 0).sum()))
                for site, g in emulated.items() if site in reference}

    def evaluate(self, x, y, batch: int = 512) -> tuple[float, float | None]:
        """Mean loss and accuracy (None for regression) on ``(x, y)`` in evaluation mode."""
        self.model.eval()
        loss_sum, correct = 0.0, 0
        with E.no_grad(), instrument.paused():  # evaluation is not part of any step's record
            for s in range(0, len(x), batch):
                out = self.model(E.Tensor(x[s:s + batch]))
                loss_sum += float(self.loss(out, y[s:s + batch]).data) * len(out.data)
                if self.classify:
                    correct += int((out.data.argmax(1) == y[s:s + batch]).sum())
        self.model.train()
        return loss_sum / len(x), (correct / len(x) if self.classify else None)

    # -- checkpoint state -------------------------------------------------------------------------
    def state(self) -> dict:
        """Everything needed to continue bit-identically, as a flat dict of arrays."""
        st = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        osd = self.opt.state_dict()
        st["opt/t"] = np.array(osd["t"])
        for pname, d in osd["state"].items():
            for k, v in d.items():
                st[f"opt/{pname}/{k}"] = v
        st["loop/step"] = np.array(self.step)
        st["loop/totals"] = self.totals.to_array()
        st["scaler"] = np.frombuffer(json.dumps(self.scaler.state_dict()).encode(), np.uint8)
        casts = self.policy.state_dict()
        if casts:  # (delayed scaling's amax histories; absent otherwise, as in older checkpoints)
            st["casts"] = np.frombuffer(json.dumps(casts).encode(), np.uint8)
        return st

    def load(self, st: dict) -> None:
        """Restore :meth:`state` output."""
        self.model.load_state_dict({k[6:]: v for k, v in st.items() if k.startswith("model/")})
        opt_state = {n: {} for n, _ in self.opt.params}
        for k, v in st.items():
            if k.startswith("opt/") and k != "opt/t":
                pname, key = k[4:].rsplit("/", 1)
                opt_state[pname][key] = v
        self.opt.load_state_dict({"t": int(st["opt/t"]), "state": opt_state})
        self.step = int(st["loop/step"])
        self.totals = RunTotals.from_array(st["loop/totals"])
        self.scaler.load_state_dict(json.loads(st["scaler"].tobytes().decode()))
        if "casts" in st:
            self.policy.load_state_dict(json.loads(st["casts"].tobytes().decode()))


class _Interrupt:
    """SIGINT/SIGTERM set a flag; the loop checkpoints after the current step and stops.

    Scopes nest (``fpsim compare`` holds one around its whole study, each run's loop its
    own): an inner scope starts with the signal the outer one already caught and passes the
    ones it catches outwards, so a signal stops the run and the study whichever is listening.
    """

    def __init__(self):
        self.signal = None
        self._old = {}
        self._outer = None

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread: no handlers
                continue
            outer = getattr(self._old[s], "__self__", None)
            if isinstance(outer, _Interrupt):
                self._outer = outer
                self.signal = self.signal or outer.signal
        return self

    def _handle(self, signum, frame):
        self.signal = signum
        if self._outer is not None:
            self._outer._handle(signum, frame)

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


def train(config: TrainConfig | dict | None = None, *, db: str = "runs.sqlite",
          resume: int | bool | None = None, progress: bool = False,
          study: str | None = None) -> dict:
    """Train, recording the run in the SQLite database ``db``.

    Args:
        config: a TrainConfig or dict of its fields; None when resuming (a resumed run
            continues under its recorded config: giving one is an error). A new run's config
            is checked, its data loaded and its model built before ``db`` is opened, so an
            invalid config leaves no database behind.
        db: path of the run-record database (created if absent).
        resume: a run id, or True for the newest unfinished run: continue it from its
            checkpoint, bit-identically.
        progress: show a tqdm progress bar.
        study: the study (``fpsim compare`` invocation) the run belongs to.
    Returns:
        The summary: ``run_id``, ``db``, ``status`` (``finished`` or ``interrupted``),
        ``test_accuracy``, ``test_loss``, ``final_loss`` (mean training loss of the last
        epoch), ``steps``, ``skipped_steps``, ``grad_underflow_rate`` (underflowed / non-zero
        finite gradient values over the run; None without instrumentation), ``seconds``.
    """
    resuming = resume is not None and resume is not False
    if resuming and config is not None:
        raise ValueError("resume continues a run with its recorded config: pass config=None "
                         "(to change the settings, start a new run)")
    if not resuming:
        if isinstance(config, dict):
            config = TrainConfig.from_dict(config)
        cfg = (config or TrainConfig()).resolved()
        session = Session(cfg)
    with RunDB(db) as rdb:
        if resuming:
            # leased to this process: no other process resumes it while this one trains it
            run_id = rdb.claim(None if resume is True else int(resume))
            info = rdb.run(run_id)
            if has_python_objects(info["config"]):
                raise RecordError(f"run {run_id} in {db} was configured with Python objects "
                                  "(a scaler or cast instance), which the record holds only as "
                                  "their repr: it cannot be resumed from the record")
            cfg = TrainConfig.from_dict(info["config"]).resolved()
            session = Session(cfg)
            ckpt = rdb.load_checkpoint(run_id)
            if ckpt is not None:
                session.load(ckpt[1])
            rdb.truncate(run_id, session.step)
            _note_changed_settings(rdb, run_id, session.step, info)
            rdb.set_status(run_id, "running")
        else:
            run_id = rdb.new_run(cfg.name, dataclasses.asdict(cfg), cfg.seed, versions(), study)
        try:
            with determinism.pinned_blas():
                return _loop(session, rdb, run_id, progress)
        except BaseException as e:
            # A database that cannot be written (disk full) keeps its last checkpoint and
            # the run stays resumable; the original error is the one to report.
            with contextlib.suppress(RecordError):
                rdb.commit()
                rdb.set_status(run_id, "failed", {"error": f"{type(e).__name__}: {e}"})
            raise


def trained(runs: dict, db: str, log=print) -> dict:
    """``{key: run id}`` for ``runs`` = ``{key: TrainConfig fields with a unique name}``: the
    finished run of that name in ``db`` where there is one, else a new run trained now (the
    studies' way of reusing their runs when they run again)."""
    with RunDB(db) as rdb:
        done = {r["name"]: r["id"] for r in rdb.runs() if r["status"] == "finished"}
    out = {}
    for key, fields in runs.items():
        name = fields["name"]
        if name not in done:
            s = train(fields, db=db)
            done[name] = s["run_id"]
            log(f"trained {name}: test accuracy {s['test_accuracy']:.4f} "
                f"({s['seconds']:.1f} s)")
        out[key] = done[name]
    return out


def _note_changed_settings(rdb: RunDB, run_id: int, step: int, info: dict) -> None:
    """A resumed run is bit-identical to an uninterrupted one only under the settings it was
    recorded with (versions, BLAS build, thread counts): where they differ, the run carries a
    note from the step it resumed at (the report lists it) and a warning says so."""
    changed = determinism.setting_differences(info.get("versions") or {}, versions())
    if changed:
        message = (f"resumed at step {step} under settings that differ from the recorded ones "
                   f"({'; '.join(changed)}): the steps from here on may differ in their bits "
                   "from an uninterrupted run")
        rdb.add_note(run_id, step, RESUME_SETTINGS_NOTE, message)
        warnings.warn(f"run {run_id} {message}", RuntimeWarning, stacklevel=3)


def _loop(s: Session, rdb: RunDB, run_id: int, progress: bool) -> dict:
    from tqdm import tqdm
    cfg = s.cfg
    t_start = time.perf_counter()
    recorder = instrument.Recorder(keep=False) if cfg.instrument else None
    bar = tqdm(total=s.total_steps, initial=s.step, disable=not progress, unit="step",
               desc=f"run {run_id}", leave=False)
    status = "finished"
    if cfg.lca:  # the starting point (written again, identically, when a run resumes)
        rdb.add_params(run_id, s.step, s.flat_params())
    with _Interrupt() as stop, (instrument.recording(recorder) if recorder else contextlib.nullcontext()):
        while s.step < s.total_steps:
            epoch, within = divmod(s.step, s.steps_per_epoch)
            order = datasets.batches(len(s.data.x_train), cfg.batch_size, cfg.seed, epoch)
            if recorder is not None:
                recorder.step = s.step
            step = s.step
            with warnings.catch_warnings(record=True) as caught:
                # Every warning raised inside the step or the evaluation after it (numpy
                # floating-point warnings from an overflowing forward pass, ...) becomes a note
                # of the run record instead of text on the terminal; the report shows them.
                warnings.simplefilter("always")
                m = s.train_step(order[within], recorder)
                if cfg.lca:
                    rdb.add_params(run_id, s.step, s.flat_params())
                summary, shadow, scales = m.pop("summary"), m.pop("shadow"), m.pop("scales")
                rdb.add_step(run_id, step, epoch, m, summary, shadow, scales)
                rdb.add_tensor_scales(run_id, step, m.pop("tensor_scales"))
                for site, message in (m.pop("notes") or {}).items():
                    rdb.add_note(run_id, step, "scaler", message, site=site)
                end_of_epoch = within == s.steps_per_epoch - 1
                if end_of_epoch:
                    _end_epoch(s, rdb, run_id, epoch, t_start)
            for message, count in _warning_notes(caught).items():
                rdb.add_note(run_id, step, "warning", message, count=count)
            if summary is not None and cfg.hist_every and step % cfg.hist_every == 0:
                rdb.add_histograms(run_id, step, summary)
            # The checkpoint commits the step's rows, its notes and histograms included.
            if end_of_epoch:
                rdb.checkpoint(run_id, s.step, epoch + 1, s.state())
            elif cfg.checkpoint_every and s.step % cfg.checkpoint_every == 0:
                rdb.checkpoint(run_id, s.step, epoch, s.state())
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{m['loss']:.4f}", acc=m["accuracy"],
                                skipped=int(s.totals.skipped))
            if stop.signal is not None and s.step < s.total_steps:
                rdb.checkpoint(run_id, s.step, epoch, s.state())
                status = "interrupted"
                break
    bar.close()
    summary = _summary(s, rdb, run_id, status, time.perf_counter() - t_start)
    rdb.set_status(run_id, status, summary)
    return summary


def _warning_notes(caught) -> dict:
    """``{one-line description: count}`` of the warnings caught during a step; the location
    is given relative to the fpsim package (or as the file's name)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out: dict[str, int] = {}
    for w in caught:
        path = os.path.abspath(w.filename)
        where = os.path.relpath(path, os.path.dirname(root)) if path.startswith(root) \
            else os.path.basename(path)
        key = f"{w.category.__name__}: {w.message} ({where}:{w.lineno})"
        out[key] = out.get(key, 0) + 1
    return out


def _end_epoch(s, rdb, run_id, epoch, t_start):
    loss_sum, correct, count = s.totals.loss_sum, s.totals.correct, s.totals.count
    test_loss, test_acc = s.evaluate(s.data.x_test, s.data.y_test)
    rdb.add_epoch(run_id, epoch, s.step, dict(
        train_loss=loss_sum / count, train_accuracy=correct / count if s.classify else None,
        test_loss=test_loss, test_accuracy=test_acc, seconds=time.perf_counter() - t_start))
    s.totals.end_epoch()


def _summary(s, rdb, run_id, status, seconds) -> dict:
    epochs = rdb.epochs(run_id)
    last = epochs[-1] if epochs else {}
    under, live = s.totals.grad_underflow, s.totals.grad_live
    return {"run_id": run_id, "db": rdb.path, "status": status,
            "test_accuracy": last.get("test_accuracy"), "test_loss": last.get("test_loss"),
            "final_loss": last.get("train_loss"), "steps": s.step,
            "skipped_steps": int(s.totals.skipped),
            "grad_underflow_rate": (float(under / live) if live else 0.0) if s.cfg.instrument else None,
            "seconds": round(seconds, 3)}

