"""Run records of a torch training loop: the per-step Stats a recorder collects, the step's
metrics and the epochs' evaluations, written into an fpsim run-record database that
``fpsim report`` reads like a run of ``fpsim train``.

::

    with fpsim.torch.RunRecord("runs.sqlite", policy="mixed_fp16", scaler="dynamic",
                               dataset="digits", model="my-cnn") as record:
        for step ...:
            with fpsim.recording(rec):
                ...forward, backward...
            summary = rec.end_step()
            applied = scaling.step(summary)
            record.step(summary, loss=loss.item(), accuracy=acc, lr=lr,
                        loss_scale=scaling.last_scale, skipped=not applied)
        record.epoch(test_loss=..., test_accuracy=...)

Rows are committed at every epoch and when the block ends; a run whose block raises is
recorded ``failed`` with the error (``interrupted`` for Ctrl-C), and what it recorded until its
last epoch stays. ``steps.seconds`` is the time since the record opened.
"""

from __future__ import annotations

import json
import time

from fpsim.training.records import RunDB


class RunRecord:
    """One torch run in a run-record database.

    Args:
        db: the database path (created if needed; a file that is not an fpsim database is
            refused untouched).
        policy: the precision policy as a spec fpsim rebuilds (a preset name, a cast word such
            as ``"fwd=e4m3+grads=e5m2"``, or a dict of :class:`~fpsim.Policy` arguments): the
            report reads the gradient format from it.
        scaler: the loss scaler's spec (``"none"``, ``"dynamic"``, ``"static:1024"``).
        dataset, model: names shown in the report; seed: the run's seed.
        epochs, batch_size, optimizer, lr: the training settings the report's header shows.
        name: the run's label (default: the report's ``policy / scaler``); study: its study.
        hist_every: write the exponent histograms every this many steps (0: never).
        config: further config fields to keep with the run.
    """

    def __init__(self, db: str, *, policy, scaler="none", dataset: str = "", model: str = "",
                 seed: int = 0, name: str = "", study: str | None = None,
                 hist_every: int = 50, epochs: int | None = None,
                 batch_size: int | None = None, optimizer: str | None = None,
                 lr: float | None = None, config: dict | None = None):
        if not isinstance(policy, (str, dict)):
            raise TypeError("fpsim.torch.RunRecord: policy must be a spec the report can "
                            f"rebuild (a name, a cast word or a dict), got {type(policy).__name__}")
        from fpsim.training.precision import policy as make_policy
        make_policy(policy)  # (refuse an unknown policy before anything is written)
        if int(hist_every) != hist_every or hist_every < 0:
            raise ValueError(f"hist_every must be a non-negative integer, got {hist_every!r}")
        self.config = {**(config or {}), "policy": policy, "scaler": scaler,
                       "dataset": dataset, "model": model, "seed": int(seed),
                       "epochs": epochs, "batch_size": batch_size, "optimizer": optimizer,
                       "lr": lr, "framework": "torch"}
        json.dumps(self.config)  # (plain data only: a record never holds code)
        self.hist_every = int(hist_every)
        self._db = RunDB(db)
        self.run_id = self._db.new_run(name, self.config, int(seed), _versions(), study)
        self.steps = 0
        self.epochs = 0
        self._t0 = time.perf_counter()
        self._last_loss = self._last_accuracy = None
        self._summary: dict = {}

    def step(self, summary, *, loss: float, accuracy: float | None = None, lr: float = 0.0,
             loss_scale: float = 1.0, skipped: bool = False, seconds: float | None = None):
        """Record one training step: its metrics and, if ``summary`` (a
        :class:`~fpsim.training.instrument.StepSummary`) is given, its per-site Stats (and the
        histograms every ``hist_every`` steps)."""
        metrics = dict(loss=float(loss), accuracy=None if accuracy is None else float(accuracy),
                       lr=float(lr), loss_scale=float(loss_scale), skipped=bool(skipped),
                       grad_underflow_rate=None if summary is None else
                       summary.grad_underflow_rate(),
                       nonfinite=0 if summary is None else summary.nonfinite(),
                       seconds=float(seconds) if seconds is not None else
                       time.perf_counter() - self._t0)
        self._db.add_step(self.run_id, self.steps, self.epochs, metrics, summary)
        if summary is not None and self.hist_every and self.steps % self.hist_every == 0:
            self._db.add_histograms(self.run_id, self.steps, summary)
        self._last_loss, self._last_accuracy = metrics["loss"], metrics["accuracy"]
        self.steps += 1

    def epoch(self, *, test_loss: float | None = None, test_accuracy: float | None = None,
              train_loss: float | None = None, train_accuracy: float | None = None):
        """Record the end of an epoch (train values default to the last step's) and commit."""
        self._db.add_epoch(self.run_id, self.epochs, self.steps, dict(
            train_loss=self._last_loss if train_loss is None else float(train_loss),
            train_accuracy=self._last_accuracy if train_accuracy is None else float(
                train_accuracy),
            test_loss=None if test_loss is None else float(test_loss),
            test_accuracy=None if test_accuracy is None else float(test_accuracy),
            seconds=time.perf_counter() - self._t0))
        self._db.commit()
        self.epochs += 1
        self._summary = dict(test_loss=None if test_loss is None else float(test_loss),
                             test_accuracy=None if test_accuracy is None else float(
                                 test_accuracy))

    def close(self, error: BaseException | None = None) -> None:
        """Commit and mark the run finished (``interrupted`` for Ctrl-C, ``failed`` with any
        other ``error``); a second call does nothing."""
        if self._db is None:
            return
        summary = dict(self._summary, steps=self.steps, run_id=self.run_id,
                       final_loss=self._last_loss,
                       seconds=round(time.perf_counter() - self._t0, 3))
        status = "finished"
        if isinstance(error, KeyboardInterrupt):
            status = "interrupted"
        elif error is not None:
            status = "failed"
            summary["error"] = f"{type(error).__name__}: {error}"
        db, self._db = self._db, None
        try:
            db.commit()
            db.set_status(self.run_id, status, summary)
        finally:
            db.close()

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        self.close(error)
        return False


def _versions() -> dict:
    import torch

    from fpsim.training.loop import versions
    return {**versions(), "torch": torch.__version__}
