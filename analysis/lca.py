"""The loss-change-allocation study: which layers help and hurt the training loss, step by step,
under float32 and under emulated bf16 / fp16 / FP8 training (:mod:`fpsim.training.lca`).

:func:`run_study` trains each model under each precision policy and seed with ``lca=True``
(recorded in a run-record database, reused when the study runs again), allocates every step's
change of the float32 training-set loss by adaptive Simpson (and, for the float32 runs, by
first order too), and writes ``table.md``, ``results.json``, ``runs.csv`` and the figures (PNG and
SVG). ``fpsim lca --study`` is its command line; :func:`plot_run` draws one run's figures for
``fpsim lca --out``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os

import numpy as np

from fpsim.analysis.plots import mean_ci_linear, running_mean
from fpsim.training import lca

#: Models of the study: label -> TrainConfig fields.
MODELS = {
    "mlp-digits": dict(model="mlp", dataset="digits"),
    "lenet-digits": dict(model="lenet", dataset="digits", epochs=10),
}
#: Precision settings: label -> TrainConfig fields (each with the loss scaler it trains with).
POLICIES = {
    "fp32": dict(policy="fp32"),
    "bf16": dict(policy="mixed_bf16"),
    "fp16": dict(policy="mixed_fp16", scaler="dynamic"),
    "fp8": dict(policy="fp8_e4m3_e5m2", scaler="dynamic"),
}
COLORS = {"fp32": "black", "bf16": "tab:blue", "fp16": "tab:green", "fp8": "tab:red"}


@dataclasses.dataclass
class StudyConfig:
    """What :func:`run_study` runs: ``models`` and ``policies`` (labels of :data:`MODELS`,
    :data:`POLICIES`), ``seeds`` per cell, ``epochs`` (None: each model's), the Simpson
    tolerance ``tol`` and cap ``max_splits``, and ``first_order`` (also allocate the float32
    runs by first order)."""

    models: tuple = tuple(MODELS)
    policies: tuple = tuple(POLICIES)
    seeds: int = 5
    epochs: int | None = None
    tol: float = 1e-3
    max_splits: int = 32
    first_order: bool = True

    @classmethod
    def quick_config(cls, **kw) -> "StudyConfig":
        """A small study for smoke tests: the MLP under fp32 and FP8, 2 seeds, 2 epochs."""
        base = dict(models=("mlp-digits",), policies=("fp32", "fp8"), seeds=2, epochs=2)
        base.update({k: v for k, v in kw.items() if v is not None})
        return cls(**base)

    def __post_init__(self):
        for k, known in (("models", MODELS), ("policies", POLICIES)):
            bad = [v for v in getattr(self, k) if v not in known]
            if bad:
                raise ValueError(f"unknown {k[:-1]} {bad[0]!r}; choose from {', '.join(known)}")
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        lca.check_options("simpson", self.tol, self.max_splits, "train")


def _name(cfg: StudyConfig, model: str, policy: str, seed: int) -> str:
    return f"lca:{model}:{policy}:{seed}" + (f":e{cfg.epochs}" if cfg.epochs else "")


def trained_runs(cfg: StudyConfig, db: str, log=print) -> dict:
    """``{(model, policy, seed): run id}``, training with ``lca=True`` whatever ``db`` does not
    hold finished yet."""
    from fpsim.training.loop import trained
    runs = {}
    for model in cfg.models:
        for policy in cfg.policies:
            for seed in range(cfg.seeds):
                runs[(model, policy, seed)] = dict(
                    MODELS[model], **POLICIES[policy], seed=seed,
                    name=_name(cfg, model, policy, seed), lca=True, instrument=False,
                    hist_every=0, **({"epochs": cfg.epochs} if cfg.epochs else {}))
    return trained(runs, db, log)


def allocations(cfg: StudyConfig, db: str, runs: dict, log=print) -> dict:
    """``{(model, policy, seed, method): LCAResult}``, cached as ``.npz`` files in the folder
    ``<db>.lca`` (recomputed when absent)."""
    cache = db + ".lca"
    os.makedirs(cache, exist_ok=True)
    out = {}
    for (model, policy, seed), rid in runs.items():
        methods = ["simpson"] + (["first_order"] if cfg.first_order and policy == "fp32" else [])
        for method in methods:
            path = os.path.join(cache, f"{_name(cfg, model, policy, seed)}:{method}:"
                                       f"{cfg.tol:g}:{cfg.max_splits}.npz".replace(":", "_"))
            if os.path.exists(path):
                res = lca.LCAResult.load(path)
            else:
                res = lca.allocate(db, rid, method=method, tol=cfg.tol, max_splits=cfg.max_splits)
                res.save(path)
                log(f"allocated {model} {policy} seed {seed} ({method}): "
                    f"{res.evaluations} gradients, {res.seconds:.1f} s")
            out[(model, policy, seed, method)] = res
    return out


def run_study(cfg: StudyConfig, out: str, db: str | None = None, log=print) -> dict:
    """Run the study into the folder ``out`` (module docstring); returns the summary dict."""
    from fpsim.training.records import RunDB
    os.makedirs(out, exist_ok=True)
    db = db or os.path.join(out, "runs.sqlite")
    runs = trained_runs(cfg, db, log)
    res = allocations(cfg, db, runs, log)
    with RunDB(db) as rdb:
        acc = {key: rdb.run(rid)["summary"]["test_accuracy"] for key, rid in runs.items()}
    rows = [dict(r.summary(), model=m, policy=p, seed=s, test_accuracy=acc[(m, p, s)],
                 helped_late=late_helped(r))
            for (m, p, s, meth), r in res.items()]
    figures = [plot_layers(res, cfg, out), plot_helped(res, cfg, out),
               plot_trajectories(res, cfg, out), plot_reconstruction(res, cfg, out)]
    summary = dict(config=dataclasses.asdict(cfg), rows=rows, figures=[f for f in figures if f])
    _write(summary, out)
    return summary


# ------------------------------------------------------------------------------- tables
def late_helped(r: "lca.LCAResult") -> float:
    """The mean helping fraction over the last quarter of the steps that moved (late training,
    where updates are small next to the rounding of low-precision formats)."""
    h = r.helped[r.moved > 0]
    return float(h[-max(1, len(h) // 4):].mean()) if len(h) else float("nan")


def paired(rows, model, policy, key, base="fp32") -> tuple | None:
    """Mean and 95% interval over seeds of ``key`` under ``policy`` minus under ``base``
    (paired by seed; Simpson rows); None without pairs."""
    a = {r["seed"]: r[key] for r in _select(rows, model=model, policy=policy, method="simpson")}
    b = {r["seed"]: r[key] for r in _select(rows, model=model, policy=base, method="simpson")}
    seeds = sorted(set(a) & set(b))
    return mean_ci_linear([a[s] - b[s] for s in seeds]) if seeds else None


def _ci(values, scale=1.0, digits=3, sign="+") -> str:
    """``mean [lo, hi]`` (95% Student-t interval over the values, times ``scale``)."""
    m, lo, hi = mean_ci_linear(np.asarray(values, float) * scale)
    return f"{m:{sign}.{digits}f} [{lo:{sign}.{digits}f}, {hi:{sign}.{digits}f}]"


def _select(rows, **kw):
    return [r for r in rows if all(r[k] == v for k, v in kw.items())]


def layer_difference(rows, model, policy, layer, base="fp32") -> tuple | None:
    """Mean and 95% interval over seeds of the layer's LCA total under ``policy`` minus under
    ``base`` (paired by seed; Simpson); None without pairs."""
    rows = [dict(r, _layer=r["layers"][layer]) for r in rows if layer in r["layers"]]
    return paired(rows, model, policy, "_layer", base)


def _diff_text(d, scale=1.0, digits=3) -> str:
    return "n/a" if d is None else (f"{scale * d[0]:+.{digits}f} [{scale * d[1]:+.{digits}f}, "
                                    f"{scale * d[2]:+.{digits}f}]")


def table_markdown(summary) -> str:
    """Three tables: per model and policy the run's numbers (test accuracy, ΔL and its
    allocation, the helping fraction); per layer the LCA totals (mean and 95% interval over
    seeds) and the paired difference to float32; Simpson against first order."""
    rows, cfg = summary["rows"], summary["config"]
    lines = ["| model | policy | test accuracy % | ΔL (train) | max \\|ΔL − ΣA\\| per step | "
             "steps within tol | helping % (all steps) | minus fp32 | helping % (last quarter) "
             "| minus fp32 | Simpson intervals (mean) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in cfg["models"]:
        for p in cfg["policies"]:
            sel = _select(rows, model=m, policy=p, method="simpson")
            if not sel:
                continue
            lines.append(
                f"| {m} | {p} | {_ci([r['test_accuracy'] for r in sel], 100, 1, '')} | "
                f"{_ci([r['delta_loss'] for r in sel])} | "
                f"{max(r['max_abs_error'] for r in sel):.1e} | "
                f"{sum(r['steps_within_tol'] for r in sel)}/{sum(r['steps'] for r in sel)} | "
                f"{_ci([r['helped_mean'] for r in sel], 100, 1, '')} | "
                f"{_diff_text(paired(rows, m, p, 'helped_mean'), 100, 1) if p != 'fp32' else ''} | "
                f"{_ci([r['helped_late'] for r in sel], 100, 1, '')} | "
                f"{_diff_text(paired(rows, m, p, 'helped_late'), 100, 1) if p != 'fp32' else ''} | "
                f"{np.mean([r['splits_mean'] for r in sel]):.2f} |")
    out = ["\n".join(lines), ""]
    for m in cfg["models"]:
        sel = _select(rows, model=m, method="simpson")
        if not sel:
            continue
        layers = list(sel[0]["layers"])
        head = ["| parameter | " + " | ".join(cfg["policies"]) + " | " +
                " | ".join(f"{p} − fp32" for p in cfg["policies"] if p != "fp32") + " |",
                "|---|" + "---|" * (2 * len(cfg["policies"]) - ("fp32" in cfg["policies"]))]
        for layer in layers:
            cells = [_ci([r["layers"][layer] for r in _select(sel, policy=p)])
                     for p in cfg["policies"]]
            diffs = []
            for p in cfg["policies"]:
                if p == "fp32":
                    continue
                diffs.append(_diff_text(layer_difference(rows, m, p, layer)))
            head.append(f"| {layer} | " + " | ".join(cells + diffs) + " |")
        out += [f"LCA per parameter tensor, {m} (Σ over all steps; negative helps):", "",
                "\n".join(head), ""]
    fo = _select(rows, method="first_order")
    if fo:
        cmp = ["| model | method | max \\|ΔL − ΣA\\| per step | mean \\|ΔL − ΣA\\| | "
               "loss rebuilt at the end, relative error | gradients per step |",
               "|---|---|---|---|---|---|"]
        for m in cfg["models"]:
            for meth in ("simpson", "first_order"):
                sel = _select(rows, model=m, policy="fp32", method=meth)
                if sel:
                    cmp.append(
                        f"| {m} | {meth} | {max(r['max_abs_error'] for r in sel):.2e} | "
                        f"{np.mean([r['mean_abs_error'] for r in sel]):.2e} | "
                        f"{np.mean([r['reconstruction_error'] for r in sel]):.2e} | "
                        f"{np.mean([r['evaluations'] / r['steps'] for r in sel]):.2f} |")
        out += ["Simpson (adaptive) against first order, float32 runs:", "", "\n".join(cmp), ""]
    return "\n".join(out)


def _write(summary, out):
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
    keys = [k for k in summary["rows"][0] if k != "layers"] if summary["rows"] else []
    with open(os.path.join(out, "runs.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(summary["rows"])
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(table_markdown(summary))


# ------------------------------------------------------------------------------- figures
def _figure(figsize):
    from fpsim.analysis.histogram import new_figure
    fig = new_figure(figsize)
    fig.set_layout_engine("constrained")
    return fig


def _save(fig, out, name) -> str:
    from fpsim.analysis.histogram import save_figure
    return os.path.basename(save_figure(fig, os.path.join(out, name + ".png"))[0])


def _short(name: str) -> str:
    return name.replace(".weight", ".w").replace(".bias", ".b")


def plot_layers(res, cfg: StudyConfig, out) -> str:
    """One panel per model: each parameter tensor's LCA total (mean over seeds, 95% interval
    bars), one bar per policy; below zero the tensor helped over the run."""
    fig = _figure((max(6.0, 1.2 * 8), 3.4 * len(cfg.models)))
    axes = fig.subplots(len(cfg.models), 1, squeeze=False)[:, 0]
    width = 0.8 / len(cfg.policies)
    for ax, model in zip(axes, cfg.models):
        names = None
        for k, p in enumerate(cfg.policies):
            tots = [r.layer_totals() for (m, pp, s, meth), r in res.items()
                    if m == model and pp == p and meth == "simpson"]
            if not tots:
                continue
            names = list(tots[0])
            stats = [mean_ci_linear([t[n] for t in tots]) for n in names]
            mean = np.array([s[0] for s in stats])
            err = np.array([[s[0] - s[1] for s in stats], [s[2] - s[0] for s in stats]])
            x = np.arange(len(names)) + (k - (len(cfg.policies) - 1) / 2) * width
            ax.bar(x, mean, width, yerr=err, color=COLORS[p], label=p, capsize=2)
        if names:
            ax.set_xticks(np.arange(len(names)), [_short(n) for n in names], rotation=30,
                          ha="right", fontsize=8)
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_ylabel("Σ_t Σ_i A (loss change)")
        ax.set_title(f"{model}: loss change allocated per parameter tensor "
                     f"(mean of {cfg.seeds} seeds, 95% CI)", fontsize=9)
        ax.legend(fontsize=8, title="policy", title_fontsize=8)
    return _save(fig, out, "lca_layers")


def _helped_axes(ax, series, label, color, window):
    """Draw the mean (over seeds) helping fraction against step, smoothed over ``window``
    steps, with the seeds' min..max band."""
    n = min(len(s) for s in series)
    arr = np.array([running_mean(s[:n], window) for s in series])
    x = np.arange(n)
    ax.plot(x, 100 * arr.mean(0), color=color, label=label, lw=1.4)
    if len(series) > 1:
        ax.fill_between(x, 100 * arr.min(0), 100 * arr.max(0), color=color, alpha=0.15, lw=0)


def plot_helped(res, cfg: StudyConfig, out) -> str:
    """One panel per model: the fraction of moved parameters that helped, per step (running
    mean over 10 steps; mean of the seeds, band min..max), one line per policy; 50% dashed."""
    fig = _figure((6.4, 3.2 * len(cfg.models)))
    axes = fig.subplots(len(cfg.models), 1, squeeze=False)[:, 0]
    for ax, model in zip(axes, cfg.models):
        for p in cfg.policies:
            series = [r.helped for (m, pp, s, meth), r in res.items()
                      if m == model and pp == p and meth == "simpson"]
            if series:
                _helped_axes(ax, series, p, COLORS[p], 10)
        ax.axhline(50, color="gray", ls="--", lw=0.8)
        ax.set_xlabel("step")
        ax.set_ylabel("parameters helping (%)")
        ax.set_title(f"{model}: share of moved parameters with A < 0 "
                     f"(10-step running mean; {cfg.seeds} seeds, band min..max)", fontsize=9)
        ax.legend(fontsize=8)
    return _save(fig, out, "lca_helped")


def _trajectory_axes(ax, r, title):
    for j, (name, curve) in enumerate(r.layers(cumulative=True).items()):
        ax.plot(r.steps + 1, curve, lw=1.2, label=_short(name), color=f"C{j % 10}")
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("step")


def plot_trajectories(res, cfg: StudyConfig, out) -> str:
    """Rows: models; columns: policies. The cumulative LCA of each parameter tensor against
    step (seed 0)."""
    nr, nc = len(cfg.models), len(cfg.policies)
    fig = _figure((3.3 * nc + 1.6, 2.8 * nr))
    axes = fig.subplots(nr, nc, squeeze=False, sharey="row")
    for i, model in enumerate(cfg.models):
        for j, p in enumerate(cfg.policies):
            r = res.get((model, p, 0, "simpson"))
            if r is not None:
                _trajectory_axes(axes[i, j], r, f"{model}, {p} (seed 0)")
        axes[i, 0].set_ylabel("cumulative Σ_i A")
        axes[i, -1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return _save(fig, out, "lca_trajectories")


def plot_reconstruction(res, cfg: StudyConfig, out) -> str | None:
    """Per model (float32, seed 0): the true training-set loss with the curves rebuilt from the
    Simpson and first-order allocations, and each step's |ΔL − ΣA| (log scale)."""
    models = [m for m in cfg.models if (m, "fp32", 0, "first_order") in res]
    if not models:
        return None
    fig = _figure((9.6, 3.2 * len(models)))
    axes = fig.subplots(len(models), 2, squeeze=False)
    for i, m in enumerate(models):
        s, f = res[(m, "fp32", 0, "simpson")], res[(m, "fp32", 0, "first_order")]
        x = np.arange(len(s.loss))
        ax = axes[i, 0]
        ax.plot(x, s.loss, color="black", lw=2.4, label="true L(θ_t)")
        ax.plot(x, s.reconstructed_loss(), color="tab:red", ls="--", lw=1.4,
                label="rebuilt, Simpson")
        ax.plot(x, f.reconstructed_loss(), color="tab:blue", ls=":", lw=1.6,
                label="rebuilt, first order")
        ax.set_title(f"{m}, fp32 seed 0: training-set loss", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend(fontsize=8)
        ax = axes[i, 1]
        for r, c, lab in ((s, "tab:red", "Simpson"), (f, "tab:blue", "first order")):
            e = np.abs(r.error)
            ax.semilogy(r.steps, np.where(e > 0, e, np.nan), ".", ms=2.5, color=c, label=lab)
        ax.axhline(s.tol, color="gray", ls="--", lw=0.8, label=f"tolerance {s.tol:g}")
        ax.set_title(f"{m}: per-step |ΔL − Σ_i A|", fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    return _save(fig, out, "lca_reconstruction")


def plot_run(r: "lca.LCAResult", out: str, title: str) -> list[str]:
    """The figures of one allocation (``fpsim lca --out``): cumulative LCA per parameter tensor
    and the helping fraction per step; returns the PNG names."""
    fig = _figure((7.6, 3.2))
    _trajectory_axes(fig.subplots(), r, title)
    fig.axes[0].set_ylabel("cumulative Σ_i A")
    fig.axes[0].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    names = [_save(fig, out, "lca_trajectory")]
    fig = _figure((6.4, 3.0))
    ax = fig.subplots()
    _helped_axes(ax, [r.helped], "helping", "black", 10)
    ax.axhline(50, color="gray", ls="--", lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("parameters helping (%)")
    ax.set_title(f"{title}: share of moved parameters with A < 0 (10-step running mean)",
                 fontsize=9)
    names.append(_save(fig, out, "lca_helped"))
    return names
