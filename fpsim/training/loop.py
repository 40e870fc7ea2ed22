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
import platform
import signal
import time

import numpy as np

from fpsim.training import data as datasets
from fpsim import engine as E
from fpsim.training import instrument, optim, scaling
from fpsim.training.precision import policy as make_policy
from fpsim.training.records import RecordError, RunDB

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


@dataclasses.dataclass
class TrainConfig:
    """What to train and how. Fields left None take :data:`DEFAULTS` for the model/dataset.

    Attributes:
        model: a name of :data:`fpsim.models.MODELS`; model_config: its extra keys.
        dataset: a name of :data:`fpsim.data.DATASETS`; dataset_options: its options
            (``path`` for file loaders).
        policy: a precision preset name or a dict of Policy fields (see fpsim.precision).
        optimizer: ``sgd``, ``adam`` or ``adamw``; lr: base learning rate; momentum
            (SGD), weight_decay; schedule: ``constant`` or ``cosine`` (over the whole run).
        epochs, batch_size, seed.
        scaler: the loss scaler (see :func:`fpsim.scaling.scaler`): ``none``,
            ``static:S``, ``dynamic[:variant]``, ``adaptive`` or a dict.
        shadow_every: every K steps (0: never) recompute the step in float32 and count, per
            activation-gradient site, the elements non-zero there but zero in the emulation
            (the underflow rate as Zhao et al. define it; costs a second pass).
        instrument: record per-site event counts (Stats) at every cast site.
        hist_every: record the sites' exponent histograms every K steps (0: never).
        checkpoint_every: write a checkpoint (and commit the queued rows) every K steps, and at
            the end of every epoch.
        name: a label for the run.
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
    shadow_every: int = 0
    instrument: bool = True
    hist_every: int = 50
    checkpoint_every: int = 100
    name: str = ""

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Build from a dict (e.g. a parsed TOML file); unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown training config key(s) {unknown}; allowed: {sorted(names)}")
        return cls(**d)

    def resolved(self) -> "TrainConfig":
        """A copy with every None replaced by the defaults, validated."""
        from fpsim.models import MODELS
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose from {', '.join(MODELS)}")
        base = {**DEFAULTS[(self.model, None)], **DEFAULTS.get((self.model, self.dataset), {})}
        c = dataclasses.replace(self, **{k: v for k, v in base.items() if getattr(self, k) is None})
        if c.optimizer not in optim.OPTIMIZERS:
            raise ValueError(f"unknown optimizer {c.optimizer!r}; choose from {', '.join(optim.OPTIMIZERS)}")
        if c.schedule not in ("constant", "cosine"):
            raise ValueError(f"unknown schedule {c.schedule!r}; choose constant or cosine")
        for k in ("epochs", "batch_size"):
            if not isinstance(getattr(c, k), int) or getattr(c, k) < 1:
                raise ValueError(f"{k} must be a positive integer, got {getattr(c, k)!r}")
        if not (isinstance(c.lr, (int, float)) and c.lr > 0):
            raise ValueError(f"lr must be a positive number, got {c.lr!r}")
        for k in ("hist_every", "checkpoint_every", "shadow_every"):
            if getattr(c, k) < 0:
                raise ValueError(f"{k} must be >= 0")
        pol = make_policy(c.policy)  # validates
        scaling.scaler(c.scaler, _grad_format(pol))
        return c


def _grad_format(policy) -> str:
    """The activation-gradient format of a policy (u_min / u_max of the adaptive scaler)."""
    cast = policy.casts["activation_grads"]
    return "float32" if cast is None else cast.format


def versions() -> dict:
    """Versions recorded with each run."""
    import numba

    from fpsim import __version__
    return {"fpsim": __version__, "numpy": np.__version__, "numba": numba.__version__,
            "python": platform.python_version()}


class Session:
    """Data, model, policy and optimizer of one run, and the loop state, built from a
    resolved :class:`TrainConfig`.

    Attributes:
        step: steps done; epoch sums and run totals live in :attr:`totals`.
    """

    def __init__(self, cfg: TrainConfig):
        from fpsim.models import build
        self.cfg = cfg
        opts = dict(cfg.dataset_options)
        self.data = datasets.load(cfg.dataset, seed=cfg.seed, **opts)
        self.classify = self.data.task == "classification"
        self.model = build(cfg.model, {**cfg.model_config, "input_shape": self.data.input_shape,
                                       "num_classes": self.data.num_classes, "seed": cfg.seed})
        self.policy = make_policy(cfg.policy)
        self.policy.seed = cfg.seed
        n = len(self.data.x_train)
        self.steps_per_epoch = -(-n // cfg.batch_size)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        schedule = optim.cosine(self.total_steps) if cfg.schedule == "cosine" else None
        kw = dict(momentum=cfg.momentum) if cfg.optimizer == "sgd" else {}
        self.opt = optim.OPTIMIZERS[cfg.optimizer](self.model.named_parameters(), lr=cfg.lr,
                                                   weight_decay=cfg.weight_decay,
                                                   schedule=schedule, **kw)
        self.sites = self.policy.apply(self.model, self.opt)
        self.scaler = scaling.scaler(cfg.scaler, _grad_format(self.policy))
        self.scaler_sites = (self.scaler.attach(self.model) if self.scaler.per_site else [])
        self.params = self.model.parameters()
        self.step = 0
        #: epoch sums (loss, correct, count), skipped steps, gradient underflow / live counts
        self.totals = np.zeros(6, np.float64)

    # -- one step -------------------------------------------------------------------------------
    def loss(self, out, y):
        return E.cross_entropy(out, y) if self.classify else E.mse(out, y)

    def train_step(self, idx, recorder) -> dict:
        """Forward, backward and update on the examples ``idx``; returns the step's metrics."""
        t0 = time.perf_counter()
        self.policy.step = self.step
        x, y = self.data.x_train[idx], self.data.y_train[idx]
        shadow_now = bool(self.cfg.shadow_every) and self.step % self.cfg.shadow_every == 0
        self.policy.capture = {} if shadow_now else None
        if self.scaler.per_site:
            self.scaler.last = {}
        before = self._buffers() if shadow_now else None
        loss, out = self._forward_backward(x, y)
        shadow = self._shadow(x, y, before) if shadow_now else None
        scale = self.scale_used
        if not self.scaler.per_site and scale != 1.0:
            for p in self.params:  # GradScaler: grads times float32(1 / float64(scale))
                if p.grad is not None:
                    p.grad *= p.grad.dtype.type(1.0 / np.float64(scale))
        finite = all(np.isfinite(p.grad).all() for p in self.params if p.grad is not None)
        lr = self.opt.lr  # the rate of this step's update
        do_step = self.scaler.update(scaling.StepStats(
            not finite, recorder.peek() if recorder is not None else None))
        if do_step:
            self.opt.step()  # (optimizer-state casts report into this step too)
        summary = recorder.end_step() if recorder is not None else None
        correct = int((out.data.argmax(1) == y).sum()) if self.classify else 0
        self.totals[:3] += (float(loss.data) * len(idx), correct, len(idx))
        self.totals[3] += not do_step
        rate = float("nan")
        if summary is not None:
            t = summary.total()
            live = t.total - t.hist_zero - t.hist_inf - t.hist_nan
            self.totals[4:] += (t.underflow, live)
            rate = t.underflow / live if live else 0.0
        self.step += 1
        scales = dict(self.scaler.last) if self.scaler.per_site else None
        return dict(loss=float(loss.data), accuracy=correct / len(idx) if self.classify else None,
                    lr=lr, loss_scale=scale, skipped=not do_step,
                    grad_underflow_rate=rate,
                    nonfinite=0 if summary is None else summary.nonfinite(),
                    seconds=time.perf_counter() - t0, summary=summary, shadow=shadow,
                    scales=scales)

    def _forward_backward(self, x, y):
        for p in self.params:
            p.grad = None
        out = self.model(E.Tensor(x))
        loss = self.loss(out, y)
        self.scale_used = float(self.scaler.loss_scale())
        # Inf / NaN gradients are an expected event under loss scaling (the step is skipped).
        with np.errstate(over="ignore", invalid="ignore"):
            loss.backward(self.scale_used, tag=self.scale_used,
                          merge=self.scaler.merge if self.scaler.per_site else None)
        return loss, out

    def _buffers(self):
        """Copies of every module buffer (batch-norm statistics, dropout counters)."""
        return [(m, b, np.array(getattr(m, b), copy=True))
                for _, m in self.model.named_modules() for b in m._buffers]

    @staticmethod
    def _restore(buffers):
        for m, b, v in buffers:
            setattr(m, b, np.array(v, copy=True))

    def _shadow(self, x, y, before) -> dict:
        """Recompute the step in float32 — no rounding, no scaling, float32 BLAS products (any
        accumulation model off), the buffers as they were before the step (so dropout draws the
        same masks) — and compare each activation-gradient site: ``site -> (elements non-zero
        in float32 but zero emulated, elements non-zero in float32)``. Gradients, buffers and
        recorded data are left as the emulated step made them."""
        emulated = self.policy.capture
        grads = [p.grad for p in self.params]
        after = self._buffers()
        products = [(m, m.matmul) for _, m in self.model.named_modules() if hasattr(m, "matmul")]
        self._restore(before)
        self.policy.bypass, self.policy.capture = True, {}
        if self.scaler.per_site:
            self.scaler.enabled = False
        try:
            for m, _ in products:
                m.matmul = None
            with instrument.paused():
                self._forward_backward(x, y)
            reference = self.policy.capture
        finally:
            self.policy.bypass, self.policy.capture = False, None
            if self.scaler.per_site:
                self.scaler.enabled = True
            for m, mm in products:
                m.matmul = mm
            for p, g in zip(self.params, grads):
                p.grad = g
            self._restore(after)
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
        st["loop/totals"] = self.totals.copy()
        st["scaler"] = np.frombuffer(json.dumps(self.scaler.state_dict()).encode(), np.uint8)
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
        self.totals = st["loop/totals"].astype(np.float64).copy()
        self.scaler.load_state_dict(json.loads(st["scaler"].tobytes().decode()))


class _Interrupt:
    """SIGINT/SIGTERM set a flag; the loop checkpoints after the current step and stops."""

    def __init__(self):
        self.signal = None
        self._old = {}

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread: no handlers
                pass
        return self

    def _handle(self, signum, frame):
        self.signal = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


def train(config: TrainConfig | dict | None = None, *, db: str = "runs.sqlite",
          resume: int | bool | None = None, progress: bool = False,
          study: str | None = None) -> dict:
    """Train, recording the run in the SQLite database ``db``.

    Args:
        config: a TrainConfig or dict of its fields (ignored when resuming).
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
    with RunDB(db) as rdb:
        if resume is not None and resume is not False:
            run_id = rdb.latest_unfinished() if resume is True else int(resume)
            info = rdb.run(run_id)
            if info["status"] == "finished":
                raise RecordError(f"run {run_id} in {db} already finished; nothing to resume")
            cfg = TrainConfig.from_dict(info["config"]).resolved()
            session = Session(cfg)
            ckpt = rdb.load_checkpoint(run_id)
            if ckpt is not None:
                session.load(ckpt[1])
            rdb.truncate(run_id, session.step)
            rdb.set_status(run_id, "running")
        else:
            if isinstance(config, dict):
                config = TrainConfig.from_dict(config)
            cfg = (config or TrainConfig()).resolved()
            session = Session(cfg)
            run_id = rdb.new_run(cfg.name, dataclasses.asdict(cfg), cfg.seed, versions(), study)
        try:
            return _loop(session, rdb, run_id, progress)
        except BaseException as e:
            rdb.commit()
            rdb.set_status(run_id, "failed", {"error": f"{type(e).__name__}: {e}"})
            raise


def _loop(s: Session, rdb: RunDB, run_id: int, progress: bool) -> dict:
    from tqdm import tqdm
    cfg = s.cfg
    t_start = time.perf_counter()
    recorder = instrument.Recorder(keep=False) if cfg.instrument else None
    bar = tqdm(total=s.total_steps, initial=s.step, disable=not progress, unit="step",
               desc=f"run {run_id}", leave=False)
    status = "finished"
    with _Interrupt() as stop, (instrument.recording(recorder) if recorder else contextlib.nullcontext()):
        while s.step < s.total_steps:
            epoch, within = divmod(s.step, s.steps_per_epoch)
            order = datasets.batches(len(s.data.x_train), cfg.batch_size, cfg.seed, epoch)
            if recorder is not None:
                recorder.step = s.step
            step = s.step
            m = s.train_step(order[within], recorder)
            summary, shadow, scales = m.pop("summary"), m.pop("shadow"), m.pop("scales")
            rdb.add_step(run_id, step, epoch, m, summary, shadow, scales)
            if summary is not None and cfg.hist_every and step % cfg.hist_every == 0:
                rdb.add_histograms(run_id, step, summary)
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{m['loss']:.4f}", acc=m["accuracy"],
                                skipped=int(s.totals[3]))
            if within == s.steps_per_epoch - 1:
                _end_epoch(s, rdb, run_id, epoch, t_start)
            elif cfg.checkpoint_every and s.step % cfg.checkpoint_every == 0:
                rdb.checkpoint(run_id, s.step, epoch, s.state())
            if stop.signal is not None and s.step < s.total_steps:
                rdb.checkpoint(run_id, s.step, epoch, s.state())
                status = "interrupted"
                break
    bar.close()
    summary = _summary(s, rdb, run_id, status, time.perf_counter() - t_start)
    rdb.set_status(run_id, status, summary)
    return summary


def _end_epoch(s, rdb, run_id, epoch, t_start):
    loss_sum, correct, count = s.totals[:3]
    test_loss, test_acc = s.evaluate(s.data.x_test, s.data.y_test)
    rdb.add_epoch(run_id, epoch, s.step, dict(
        train_loss=loss_sum / count, train_accuracy=correct / count if s.classify else None,
        test_loss=test_loss, test_accuracy=test_acc, seconds=time.perf_counter() - t_start))
    s.totals[:3] = 0
    rdb.checkpoint(run_id, s.step, epoch + 1, s.state())


def _summary(s, rdb, run_id, status, seconds) -> dict:
    epochs = rdb.epochs(run_id)
    last = epochs[-1] if epochs else {}
    under, live = s.totals[4:]
    return {"run_id": run_id, "db": rdb.path, "status": status,
            "test_accuracy": last.get("test_accuracy"), "test_loss": last.get("test_loss"),
            "final_loss": last.get("train_loss"), "steps": s.step,
            "skipped_steps": int(s.totals[3]),
            "grad_underflow_rate": (float(under / live) if live else 0.0) if s.cfg.instrument else None,
            "seconds": round(seconds, 3)}

