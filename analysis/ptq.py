"""The post-training quantization study: accuracy against effective bits per weight of the
zoo's models under single-point, greedy multipoint, adaptive multipoint, random extra points
and per-layer mixed bit-widths (:mod:`fpsim.training.ptq`), and the greedy residual decay.

:func:`run_study` trains the models in float32 (one run per model and seed, recorded in
``OUT/runs.sqlite`` and reused when the study runs again), quantizes every checkpoint under
every method and bit-width, and writes ``table.md`` / ``results.csv`` / ``results.json``,
``counts.json`` (points per output channel), ``residuals.csv`` and the figures (PNG and SVG).
``fpsim ptq --study`` is its command line.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import time

import numpy as np

from fpsim.analysis.plots import mean_ci_linear
from fpsim.numerics import multipoint as mp
from fpsim.training import ptq

#: Models of the study: label -> TrainConfig fields (float32, no instrumentation).
MODELS = {
    "mlp-digits": dict(model="mlp", dataset="digits"),
    "lenet-digits": dict(model="lenet", dataset="digits"),
    "resnet-digits": dict(model="resnet", dataset="digits"),
    "transformer-digits": dict(model="transformer", dataset="digits"),
    "mlp-mnist1d": dict(model="mlp", dataset="mnist1d",
                        model_config={"hidden": [128, 128, 128, 128]}, optimizer="sgd", lr=0.1,
                        epochs=20, batch_size=128),
}
#: Methods of the table: label -> PTQConfig fields besides ``bits`` (``budget`` is filled in
#: from the study's budget for the adaptive family).
VARIANTS = {
    "uniform": dict(method="uniform"),
    "uniform+clip": dict(method="uniform", clip_search=True),
    "1 point": dict(method="greedy", points=1),
    "2 points": dict(method="greedy", points=2),
    "adaptive": dict(method="adaptive"),
    "random": dict(method="random"),
    "mixed bits": dict(method="mixed"),
    "adaptive, 8-bit act.": dict(method="adaptive", act_bits=8),
}
COLORS = {"uniform": "tab:gray", "uniform+clip": "black", "1 point": "tab:blue",
          "2 points": "tab:cyan", "adaptive": "tab:red", "random": "tab:orange",
          "mixed bits": "tab:green", "adaptive, 8-bit act.": "tab:purple"}
#: Line styles where two methods' curves nearly coincide (adaptive with and without 8-bit
#: activations): the dashed one stays visible on top of the solid one.
STYLES = {"adaptive": dict(lw=2.4, marker="s", ms=5), "adaptive, 8-bit act.": dict(ls="--", marker="x", ms=6)}
#: The prototype's relative residuals ||r_n||/||w|| (576-dim Gaussian), n = 1..4, per b.
PROTOTYPE = {2: (0.45, 0.21, 0.14, 0.077), 3: (0.22, 0.072, 0.026, 0.016),
             4: (0.110, 0.019, 0.0066, 0.0026)}

#: Gaussian vectors averaged in the residual study.
GAUSSIAN_DRAWS = 20


@dataclasses.dataclass
class StudyConfig:
    """What :func:`run_study` runs.

    Attributes:
        models: labels of :data:`MODELS`; seeds: training seeds per model (each also seeds
            the calibration draw and the random ablation).
        bits: point widths; budget: mean points per row of the adaptive family (and the
            integer bits of ``mixed bits``, in units of b).
        variants: labels of :data:`VARIANTS`; calib: calibration examples.
        residual_points: greedy points of the residual study; epochs: None for the models'
            defaults (``quick`` shortens training).
    """

    models: tuple = tuple(MODELS)
    seeds: int = 5
    bits: tuple = (2, 3, 4, 8)
    budget: float = 1.5
    variants: tuple = tuple(VARIANTS)
    calib: int = 256
    residual_points: int = 6
    epochs: int | None = None

    @classmethod
    def quick_config(cls, **kw) -> "StudyConfig":
        """A small study for smoke tests: the MLP, 2 seeds, b = 2 and 4, 3 epochs."""
        base = dict(models=("mlp-digits",), seeds=2, bits=(2, 4), epochs=3, residual_points=3)
        base.update({k: v for k, v in kw.items() if v is not None})
        return cls(**base)


def trained_runs(cfg: StudyConfig, db: str, log=print) -> dict:
    """``{(model label, seed): run id}``, training in float32 whatever ``db`` does not hold
    finished yet (runs are named ``ptq:<label>:<seed>[:e<epochs>]``)."""
    from fpsim.training.loop import trained
    runs = {}
    for label in cfg.models:
        for seed in range(cfg.seeds):
            name = f"ptq:{label}:{seed}" + (f":e{cfg.epochs}" if cfg.epochs else "")
            runs[(label, seed)] = dict(MODELS[label], seed=seed, name=name, instrument=False,
                                       hist_every=0, policy="fp32",
                                       **({"epochs": cfg.epochs} if cfg.epochs else {}))
    return trained(runs, db, log)


def run_study(cfg: StudyConfig, out: str, db: str | None = None, log=print) -> dict:
    """Run the study into the folder ``out`` (module docstring); returns the summary dict."""
    os.makedirs(out, exist_ok=True)
    db = db or os.path.join(out, "runs.sqlite")
    runs = trained_runs(cfg, db, log)
    rows, counts = [], {}
    for (label, seed), rid in runs.items():
        tm = ptq.load_run(db, rid)
        calib = ptq.calibration_batch(tm.data, cfg.calib, seed)
        loss, acc = ptq.evaluate(tm.model, tm.data.x_test, tm.data.y_test)
        rows.append(dict(model=label, seed=seed, variant="float32", bits=32, accuracy=acc,
                         loss=loss, effective_bits=32.0, output_error=0.0, seconds=0.0))
        for b in cfg.bits:
            for v in cfg.variants:
                fields = dict(VARIANTS[v], bits=b, seed=seed)
                if fields["method"] in ("adaptive", "random", "mixed"):
                    fields["budget"] = cfg.budget
                if fields["method"] == "mixed" and cfg.budget * b > 8:
                    continue  # wider than the widest layer grid
                res = ptq.ptq(tm.model, calib, tm.data.x_test, tm.data.y_test, **fields)
                w = np.array([np.prod(l.shape) for l in res.layers], float)
                rows.append(dict(model=label, seed=seed, variant=v, bits=b,
                                 accuracy=res.accuracy, loss=res.loss,
                                 effective_bits=res.effective_bits,
                                 output_error=float(np.average(
                                     [l.output_error for l in res.layers], weights=w)),
                                 seconds=res.seconds))
                if seed == 0 and v in ("adaptive", "random", "mixed bits"):
                    counts[f"{label} b={b} {v}"] = {
                        l.name: (l.counts.tolist() if v != "mixed bits" else l.bits)
                        for l in res.layers}
        log(f"quantized {label} seed {seed}")
    resid = residual_study(cfg, db, runs)
    figures = [plot_accuracy(rows, cfg, out), plot_residuals(resid, cfg, out),
               plot_counts(counts, cfg, out)]
    summary = dict(config=dataclasses.asdict(cfg), rows=rows, residuals=resid,
                   figures=[f for f in figures if f])
    _write(summary, counts, out)
    return summary


def residual_study(cfg: StudyConfig, db: str, runs: dict) -> dict:
    """``{"gaussian": {b: [...]}, "<model>/<layer>": {b: [...]}}``: the relative greedy
    residual ``||r_n||/||w||`` for n = 0 .. residual_points, averaged over the layer's rows
    (seed 0's model), and for 576-dim standard Gaussian vectors (the prototype's setting; the
    mean over :data:`GAUSSIAN_DRAWS` draws, since one draw's residual varies by ~10%)."""
    n = cfg.residual_points
    bits = [b for b in cfg.bits if b <= 4] or [min(cfg.bits)]
    rng = np.random.default_rng(0)
    gauss = rng.standard_normal((GAUSSIAN_DRAWS, 576))
    out = {"gaussian": {b: np.mean([mp.residuals(g, b, n) for g in gauss], axis=0).tolist()
                        for b in bits}}
    for label in cfg.models:
        tm = ptq.load_run(db, runs[(label, 0)])
        for name, m in ptq.quantizable(tm.model):
            W = ptq.weight_rows(m)
            out[f"{label}/{name}"] = {
                b: np.mean([mp.residuals(w, b, n) for w in W], axis=0).tolist() for b in bits}
    return out


# ------------------------------------------------------------------------------- tables
def aggregate(rows) -> list[dict]:
    """Mean and 95% Student-t interval of accuracy over seeds, per (model, variant, bits)."""
    keys = sorted({(r["model"], r["variant"], r["bits"]) for r in rows},
                  key=lambda k: (list(MODELS).index(k[0]) if k[0] in MODELS else 99, k[2],
                                 _vorder(k[1])))
    out = []
    for k in keys:
        sel = [r for r in rows if (r["model"], r["variant"], r["bits"]) == k]
        m, lo, hi = mean_ci_linear([r["accuracy"] for r in sel])
        out.append(dict(model=k[0], variant=k[1], bits=k[2], n=len(sel), accuracy=m,
                        lo=lo, hi=hi, effective_bits=float(np.mean([r["effective_bits"]
                                                                    for r in sel])),
                        output_error=float(np.mean([r["output_error"] for r in sel]))))
    return out


def _vorder(v):
    return -1 if v == "float32" else list(VARIANTS).index(v) if v in VARIANTS else 99


def paired_difference(rows, model, bits, a="adaptive", b="random") -> tuple:
    """Mean and 95% interval over seeds of accuracy(a) - accuracy(b) (paired by seed)."""
    acc = {(r["variant"], r["seed"]): r["accuracy"] for r in rows
           if r["model"] == model and r["bits"] == bits}
    seeds = sorted(s for v, s in acc if v == a and (b, s) in acc)
    return mean_ci_linear([acc[(a, s)] - acc[(b, s)] for s in seeds]) if seeds else None


def table_markdown(summary) -> str:
    """The accuracy table (one row per model and b, one column per method: accuracy in %
    with its 95% interval, and the effective bits per weight), then adaptive − random."""
    agg = aggregate(summary["rows"])
    cfg = summary["config"]
    variants = ["float32"] + list(cfg["variants"])
    lines = [f"Test accuracy (%), mean over {cfg['seeds']} seeds ± 95% half-interval; "
             "effective bits per weight in brackets.", "",
             "| model | b | " + " | ".join(variants) + " |",
             "|---" * (len(variants) + 2) + "|"]
    by = {(a["model"], a["variant"], a["bits"]): a for a in agg}
    for model in cfg["models"]:
        fp = by.get((model, "float32", 32))
        for b in cfg["bits"]:
            cells = [f"{100 * fp['accuracy']:.1f}" if fp else ""]
            for v in cfg["variants"]:
                a = by.get((model, v, b))
                cells.append("—" if a is None else
                             f"{100 * a['accuracy']:.1f}±{100 * (a['hi'] - a['accuracy']):.1f} "
                             f"[{a['effective_bits']:.2f}]")
            lines.append(f"| {model} | {b} | " + " | ".join(cells) + " |")
    lines += ["", "Adaptive minus random extra points (accuracy points, paired by seed, 95% "
              "interval):", "", "| model | " + " | ".join(f"b={b}" for b in cfg["bits"]) + " |",
              "|---" * (len(cfg["bits"]) + 1) + "|"]
    for model in cfg["models"]:
        cells = []
        for b in cfg["bits"]:
            d = paired_difference(summary["rows"], model, b)
            cells.append("—" if d is None else
                         f"{100 * d[0]:+.1f} [{100 * d[1]:+.1f}, {100 * d[2]:+.1f}]")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def residual_markdown(summary) -> str:
    """The residual table: the Gaussian vector against the prototype, and each layer."""
    res = summary["residuals"]
    n = summary["config"]["residual_points"]
    lines = ["Relative greedy residual ||r_n||/||w|| (mean over a layer's rows).", "",
             "| vector | b | " + " | ".join(f"n={i}" for i in range(1, n + 1)) + " |",
             "|---" * (n + 2) + "|"]
    for key, per_b in res.items():
        for b, r in per_b.items():
            lines.append(f"| {key} | {b} | " + " | ".join(f"{x:.3g}" for x in r[1:]) + " |")
            if key == "gaussian" and int(b) in PROTOTYPE:
                p = PROTOTYPE[int(b)]
                cells = [f"{x:.3g}" for x in p[:n]] + [""] * max(0, n - len(p))
                lines.append(f"| prototype (576-dim Gaussian) | {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write(summary, counts, out):
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({k: v for k, v in summary.items()}, f, indent=1, default=float)
    with open(os.path.join(out, "counts.json"), "w") as f:
        json.dump(counts, f, indent=1)
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(summary["rows"][0]))
        w.writeheader()
        w.writerows(summary["rows"])
    with open(os.path.join(out, "residuals.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["vector", "bits", "n", "relative_residual"])
        for key, per_b in summary["residuals"].items():
            for b, r in per_b.items():
                w.writerows([key, b, i, x] for i, x in enumerate(r))
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(table_markdown(summary) + "\n" + residual_markdown(summary))


# ------------------------------------------------------------------------------- figures
def _figure(figsize, ncols=1, nrows=1):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt.subplots(nrows, ncols, figsize=figsize, squeeze=False)


def _save(fig, out, name):
    from fpsim.analysis.histogram import save_figure
    paths = save_figure(fig, os.path.join(out, name + ".png"))
    import matplotlib.pyplot as plt
    plt.close(fig)
    return os.path.basename(paths[0])


def plot_accuracy(rows, cfg: StudyConfig, out) -> str:
    """One panel per model: accuracy (mean, 95% interval bars) against effective bits per
    weight, one line per method through b = 2, 3, 4, 8; the float32 accuracy dashed."""
    agg = aggregate(rows)
    ncols = min(3, len(cfg.models))
    nrows = -(-len(cfg.models) // ncols)
    fig, axes = _figure((4.6 * ncols, 3.6 * nrows), ncols, nrows)
    for i, model in enumerate(cfg.models):
        ax = axes[i // ncols][i % ncols]
        fp = [a for a in agg if a["model"] == model and a["variant"] == "float32"]
        for v in cfg.variants:
            pts = sorted((a for a in agg if a["model"] == model and a["variant"] == v),
                         key=lambda a: a["bits"])
            if not pts:
                continue
            x = [a["effective_bits"] for a in pts]
            y = [100 * a["accuracy"] for a in pts]
            err = [[100 * (a["accuracy"] - a["lo"]) for a in pts],
                   [100 * (a["hi"] - a["accuracy"]) for a in pts]]
            style = {**dict(marker="o", ms=3.5, lw=1.2), **STYLES.get(v, {})}
            ax.errorbar(x, y, yerr=err, capsize=2, color=COLORS.get(v), label=v, **style)
        if fp:
            ax.axhline(100 * fp[0]["accuracy"], color="k", ls="--", lw=0.8, label="float32")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("effective bits per weight")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(model)
        ax.grid(alpha=0.3)
        lows = [100 * a["accuracy"] for a in agg if a["model"] == model]
        ax.set_ylim(max(0.0, min(lows) - 3), 100.5)
    for j in range(len(cfg.models), nrows * ncols):
        axes[j // ncols][j % ncols].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)),
               bbox_to_anchor=(0.5, -0.02 - 0.03 * (len(labels) > 5)))
    fig.suptitle(f"PTQ accuracy vs effective bits (b = {', '.join(map(str, cfg.bits))}; "
                 f"{cfg.seeds} seeds, 95% intervals; extra points: {cfg.budget} per row)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return _save(fig, out, "ptq_accuracy")


def plot_residuals(resid, cfg: StudyConfig, out) -> str:
    """Relative residual ``||r_n||/||w||`` against n on a log axis: one panel per b, every
    layer (thin lines), the Gaussian vector (black) and the prototype's figures (crosses)."""
    bits = list(resid["gaussian"])
    fig, axes = _figure((4.4 * len(bits), 3.6), len(bits))
    for i, b in enumerate(bits):
        ax = axes[0][i]
        for key, per_b in resid.items():
            r = per_b[b]
            n = np.arange(len(r))
            if key == "gaussian":
                ax.semilogy(n, r, "k-o", ms=3, lw=1.8, label="576-dim Gaussian (mean of 20)", zorder=3)
            else:
                ax.semilogy(n, r, lw=0.7, alpha=0.55)
        if int(b) in PROTOTYPE:
            p = PROTOTYPE[int(b)]
            ax.semilogy(np.arange(1, len(p) + 1), p, "rx", ms=7, mew=1.5,
                        label="prototype figures", zorder=4)
        # The elementary bound ||r_i||_inf <= ||r_{i-1}||_inf / (2^b - 2): log2(2^b - 2)
        # bits per point.
        ax.set_title(f"b = {b} (bound: {np.log2(2 ** int(b) - 2):.2f} bits per point)")
        ax.set_xlabel("greedy points n")
        ax.set_ylabel("||r_n|| / ||w||")
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="upper right")
    fig.suptitle("Greedy multipoint residual decay (thin lines: every layer of every model, "
                 "mean over its rows)")
    fig.tight_layout()
    return _save(fig, out, "ptq_residuals")


def plot_counts(counts, cfg: StudyConfig, out) -> str | None:
    """Histogram of the points per output channel that adaptive and random gave, per layer,
    for the first model at its smallest b (seed 0)."""
    model, b = cfg.models[0], min(cfg.bits)
    keys = [f"{model} b={b} adaptive", f"{model} b={b} random"]
    if not all(k in counts for k in keys):
        return None
    layers = list(counts[keys[0]])
    fig, axes = _figure((3.2 * len(layers), 3.0), len(layers))
    for i, layer in enumerate(layers):
        ax = axes[0][i]
        for k, color in zip(keys, ("tab:red", "tab:orange")):
            c = np.array(counts[k][layer])
            edges = np.arange(0.5, c.max() + 1.5) if c.size else [0.5, 1.5]
            ax.hist(c, bins=edges, histtype="step", lw=1.6, color=color,
                    label=k.rsplit(" ", 1)[1])
        ax.set_title(layer)
        ax.set_xlabel("points per channel")
        ax.set_ylabel("channels")
        ax.legend()
    fig.suptitle(f"{model}, b = {b}, mean {cfg.budget} points per channel: where the extra "
                 "points went")
    fig.tight_layout()
    return _save(fig, out, "ptq_counts")
