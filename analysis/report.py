"""Reports from run records: a summary table, PNG plots and a report.md for one study.

Everything here reads the SQLite run records (:mod:`fpsim.training.records`), never engine internals,
so ``fpsim report DB`` can redraw any study later.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict

import numpy as np

from fpsim.training.records import RecordError, RunDB

GRAD_ROLE = "activation-grad"


def _mpl():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _smooth(y: np.ndarray, k: int = 15) -> np.ndarray:
    """Running mean over ``k`` steps (shorter at the start)."""
    if len(y) == 0:
        return y
    c = np.cumsum(np.insert(np.asarray(y, np.float64), 0, 0.0))
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(0, idx - k)
    return (c[idx] - c[lo]) / (idx - lo)


def grad_format(config: dict):
    """The activation-gradient Format of a run's policy (None for float32 gradients)."""
    from fpsim.training.precision import policy
    cast = policy(config["policy"]).casts["activation_grads"]
    return None if cast is None else cast.format


class RunData:
    """One run's records, loaded once."""

    def __init__(self, db: RunDB, run: dict):
        self.run = run
        self.id = run["id"]
        self.label = run["name"] or f"run {self.id}"
        self.seed = run["seed"]
        self.steps = db.steps(self.id)
        self.epochs = db.epochs(self.id)
        self.events = db.site_events(self.id)
        self.scales = db.scales(self.id)
        self.hists = db.histograms(self.id)
        self.fmt = grad_format(run["config"])

    def site_rates(self) -> "OrderedDict[str, float]":
        """Per activation-gradient site: values flushed to zero / non-zero values, over the
        whole run (structural zeros — ReLU, pooling — are left out of the denominator)."""
        live, und = OrderedDict(), {}
        for e in self.events:
            if e["role"] == GRAD_ROLE:
                live[e["site"]] = live.get(e["site"], 0) + e["total"] - e["zeros"]
                und[e["site"]] = und.get(e["site"], 0) + e["underflow"]
        return OrderedDict((s, und[s] / t if t else 0.0) for s, t in live.items())

    def shadow_rate(self) -> float | None:
        """The paper's underflow rate: activation-gradient elements non-zero in the float32
        recomputation but zero in the emulation, over the elements non-zero in float32, on
        the shadow steps (None if never measured)."""
        rows = [e for e in self.events if e["shadow_total"] is not None]
        total = sum(e["shadow_total"] for e in rows)
        return sum(e["shadow_underflow"] for e in rows) / total if total else None

    def summary(self) -> dict:
        rates = self.site_rates()
        last = self.epochs[-1] if self.epochs else {}
        s = self.run.get("summary") or {}
        return {"label": self.label, "run_id": self.id, "seed": self.seed,
                "status": self.run["status"],
                "test_accuracy": last.get("test_accuracy"), "test_loss": last.get("test_loss"),
                "final_loss": last.get("train_loss"),
                "skipped_steps": int(np.sum(self.steps["skipped"])) if len(self.steps["step"]) else 0,
                "grad_underflow_rate": float(np.mean(list(rates.values()))) if rates else 0.0,
                "shadow_underflow_rate": self.shadow_rate(), "seconds": s.get("seconds")}


def load(db_path: str, study: str | None = None) -> tuple[str, list[RunData]]:
    """The runs of ``study`` (default: the newest study in the database)."""
    with RunDB(db_path) as db:
        studies = db.studies()
        if not studies:
            raise RecordError(f"{db_path} holds no study (runs made by fpsim compare)")
        if study is None:
            study = studies[-1]
        elif study not in studies:
            raise RecordError(f"no study {study!r} in {db_path}; studies: {', '.join(studies)}")
        runs = [RunData(db, r) for r in db.runs(study) if r["status"] == "finished"]
    if not runs:
        raise RecordError(f"study {study!r} in {db_path} has no finished run")
    return study, runs


def summary_table(runs: list[RunData]) -> list[dict]:
    """One row per label, averaged over its seeds (mean and standard deviation)."""
    groups: "OrderedDict[str, list[dict]]" = OrderedDict()
    for r in runs:
        groups.setdefault(r.label, []).append(r.summary())
    rows = []
    for label, items in groups.items():
        row = {"label": label, "seeds": [i["seed"] for i in items],
               "run_ids": [i["run_id"] for i in items]}
        for key in ("test_accuracy", "test_loss", "final_loss", "skipped_steps",
                    "grad_underflow_rate", "shadow_underflow_rate", "seconds"):
            vals = [i[key] for i in items if i[key] is not None]
            row[key] = float(np.mean(vals)) if vals else None
            row[key + "_std"] = float(np.std(vals)) if len(vals) > 1 else None
        rows.append(row)
    return rows


def _fmt(v, pct=False, digits=4):
    if v is None:
        return "n/a"
    return f"{100 * v:.2f}%" if pct else f"{v:.{digits}g}"


def _cell(row, key, pct=False):
    v, sd = row[key], row.get(key + "_std")
    return _fmt(v, pct) + ("" if sd is None else f" ± {_fmt(sd, pct)}")


def table_markdown(rows: list[dict]) -> str:
    """The summary table as markdown."""
    head = ("| run | seeds | test accuracy | test loss | final train loss | skipped steps | "
            "mean per-layer grad underflow | shadow underflow (fp32 non-zero, emulated zero) | "
            "seconds |\n|---|---|---|---|---|---|---|---|---|\n")
    lines = [f"| {r['label']} | {len(r['seeds'])} | {_cell(r, 'test_accuracy', True)} | "
             f"{_cell(r, 'test_loss')} | {_cell(r, 'final_loss')} | {_cell(r, 'skipped_steps')} | "
             f"{_cell(r, 'grad_underflow_rate', True)} | {_cell(r, 'shadow_underflow_rate', True)} | "
             f"{_fmt(r['seconds'], digits=3)} |" for r in rows]
    return head + "\n".join(lines)


# -- plots ---------------------------------------------------------------------------------------

def _first_seed(runs):
    seen, out = set(), []
    for r in runs:
        if r.label not in seen:
            seen.add(r.label)
            out.append(r)
    return out


def _save(plt, fig, path, dpi=110):
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def _grid(plt, n: int, height: float, **kw):
    """A figure of ``n`` panels, three to a row; the unused panels are hidden."""
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, height * rows), squeeze=False, **kw)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig, axes


def plot_curves(runs, path):
    plt = _mpl()
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2))
    for r in _first_seed(runs):
        a.plot(r.steps["step"], _smooth(r.steps["loss"]), label=r.label, lw=1.2)
        ep = [e["step"] for e in r.epochs]
        acc = [e["test_accuracy"] if e["test_accuracy"] is not None else e["test_loss"]
               for e in r.epochs]
        b.plot(ep, acc, marker=".", label=r.label, lw=1.2)
    a.set(xlabel="step", ylabel="training loss (running mean of 15 steps)", yscale="log",
          title="Training loss")
    regression = runs[0].epochs and runs[0].epochs[0]["test_accuracy"] is None
    b.set(xlabel="step", ylabel="test loss" if regression else "test accuracy",
          title="Test loss per epoch" if regression else "Test accuracy per epoch")
    if regression:
        b.set_yscale("log")
    b.legend(fontsize=8)
    _save(plt, fig, path)


def plot_scales(runs, path):
    plt = _mpl()
    adaptive = [r for r in _first_seed(runs) if r.scales]
    n = 1 + len(adaptive)
    fig, axes = plt.subplots(1, n, figsize=(6 * n, 4.2), squeeze=False)
    ax = axes[0, 0]
    for r in _first_seed(runs):
        if not r.scales:
            ax.plot(r.steps["step"], np.log2(r.steps["loss_scale"]), label=r.label, lw=1.2)
    ax.set(xlabel="step", ylabel="log2 loss scale", title="Global loss scale")
    ax.legend(fontsize=8)
    for ax, r in zip(axes[0, 1:], adaptive):
        by_site = OrderedDict()
        for row in r.scales:
            by_site.setdefault(row["site"], []).append((row["step"], row["carried"] * row["local"]))
        for site, pts in by_site.items():
            st, sc = zip(*pts)
            ax.plot(st, np.log2(sc), label=site, lw=1.0)
        ax.set(xlabel="step", ylabel="log2 scale of the data gradient below the site",
               title=f"{r.label}: per-site scales (carried x local)")
        ax.legend(fontsize=7, ncol=2)
    _save(plt, fig, path)


def plot_skipped(runs, path):
    plt = _mpl()
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in _first_seed(runs):
        ax.plot(r.steps["step"], np.cumsum(r.steps["skipped"]), label=r.label, lw=1.2)
    ax.set(xlabel="step", ylabel="skipped steps (cumulative)", title="Skipped steps")
    ax.legend(fontsize=8)
    _save(plt, fig, path)


def plot_underflow(runs, path):
    plt = _mpl()
    rs = [r for r in _first_seed(runs) if any(e["role"] == GRAD_ROLE for e in r.events)]
    if not rs:
        return False
    fig, axes = _grid(plt, len(rs), 3.6, sharey=True)
    for ax, r in zip(axes.flat, rs):
        by_site = OrderedDict()
        for e in r.events:
            if e["role"] == GRAD_ROLE:
                live = e["total"] - e["zeros"]
                by_site.setdefault(e["site"], []).append(
                    (e["step"], e["underflow"] / live if live else 0.0))
        for site, pts in by_site.items():
            st, rate = zip(*pts)
            ax.plot(st, 100 * _smooth(np.array(rate)), label=site, lw=1.0)
        ax.set(title=r.label, xlabel="step", ylabel="gradient underflow %")
        ax.legend(fontsize=6, ncol=2)

    fig.suptitle("Per-layer activation-gradient underflow (% of the non-zero values rounded to 0)")
    _save(plt, fig, path)
    return True


def plot_histograms(r: RunData, path) -> bool:
    """Per activation-gradient site, the exponent histogram of the gradient values summed over
    the recorded steps: as rounded (after scaling, bars) and unscaled (before scaling, line),
    with the gradient format's smallest subnormal, smallest normal and largest value marked."""
    plt = _mpl()
    scale_of = {(e["step"], e["site"]): e["scale"] for e in r.events if e["role"] == GRAD_ROLE}
    after, before = OrderedDict(), OrderedDict()
    for h in r.hists:
        if h["role"] != GRAD_ROLE or len(h["counts"]) == 0:
            continue
        k = h["k_min"] + np.arange(len(h["counts"]))
        sc = scale_of.get((h["step"], h["site"])) or 1.0
        for store, shift in ((after, 0.0), (before, math.log2(sc))):
            d = store.setdefault(h["site"], {})
            for kk, c in zip(k - shift, h["counts"]):
                d[float(kk)] = d.get(float(kk), 0) + int(c)
    if not after:
        return False
    sites = list(after)
    fig, axes = _grid(plt, len(sites), 3.4)
    f = r.fmt
    for ax, site in zip(axes.flat, sites):
        ka = np.array(sorted(after[site]))
        ax.bar(ka, [after[site][k] for k in ka], width=1.0, alpha=0.55, label="after scaling")
        kb = np.array(sorted(before[site]))
        ax.step(kb, [before[site][k] for k in kb], where="mid", color="k", lw=0.9,
                label="before scaling")
        if f is not None:
            lo = f.min_subnormal if f.subnormals else f.min_normal
            for v, name, c in ((lo / 2, "flush to 0 below", "r"), (f.min_normal, "min normal", "orange"),
                               (f.max, "max", "purple")):
                ax.axvline(math.log2(v), color=c, ls="--", lw=1, label=name)
        ax.set(title=site, xlabel="log2 |gradient|", ylabel="count", yscale="log")
    axes.flat[0].legend(fontsize=7)
    fmt_name = "float32" if f is None else f.name
    fig.suptitle(f"{r.label}: activation-gradient exponent histograms ({fmt_name}; steps with "
                 "histograms summed)")
    _save(plt, fig, path, dpi=100)
    return True


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label).strip("_")


def write_report(db_path: str, out_dir: str, study: str | None = None, command: str = "") -> dict:
    """Write the plots and report.md of a study under ``out_dir``; returns the summary
    (``study``, ``rows``, ``files``)."""
    study, runs = load(db_path, study)
    os.makedirs(out_dir, exist_ok=True)
    files = []

    def out(name):
        files.append(name)
        return os.path.join(out_dir, name)
    plot_curves(runs, out("curves.png"))
    plot_scales(runs, out("loss_scale.png"))
    plot_skipped(runs, out("skipped.png"))
    if not plot_underflow(runs, os.path.join(out_dir, "underflow.png")):
        pass
    else:
        files.append("underflow.png")
    hist_files = []
    for r in _first_seed(runs):
        name = f"hist_{_slug(r.label)}.png"
        if plot_histograms(r, os.path.join(out_dir, name)):
            files.append(name)
            hist_files.append((r.label, name))
    rows = summary_table(runs)
    cfg = runs[0].run["config"]
    fmt = runs[0].fmt or next((r.fmt for r in runs if r.fmt is not None), None)
    md = [f"# fpsim compare: {study}", "",
          f"Model `{cfg['model']}` on `{cfg['dataset']}`, gradient format "
          f"`{fmt.name if fmt else 'float32'}`, {cfg['epochs']} epochs, batch {cfg['batch_size']}, "
          f"optimizer {cfg['optimizer']} (lr {cfg['lr']}), seeds "
          f"{sorted({r.seed for r in runs})}. Database `{db_path}`, runs {[r.id for r in runs]}.",
          "", table_markdown(rows), "",
          "Mean per-layer grad underflow: per activation-gradient site, the fraction of its "
          "non-zero values that rounding flushed to zero, over the whole run, averaged over the "
          "sites (counted in the quantize kernel at every step). Shadow underflow: on shadow steps, "
          "the activation-gradient elements non-zero in a float32 recomputation of the step but "
          "zero in the emulated one (Zhao et al.'s definition: it also counts values lost "
          "upstream), as a fraction of the elements non-zero in float32.", "",
          "## Loss and accuracy", "", "![curves](curves.png)", "",
          "## Loss scales", "", "![scales](loss_scale.png)", "",
          "## Skipped steps", "", "![skipped](skipped.png)", ""]
    if "underflow.png" in files:
        md += ["## Per-layer gradient underflow over training", "", "![underflow](underflow.png)", ""]
    if hist_files:
        md += ["## Underflow histograms", "",
               "Exponent histograms of the activation gradients at each site (bars: the values "
               "as rounded, after scaling; line: the same values before scaling). Values left of "
               "the red line round to zero.", ""]
        for label, name in hist_files:
            md += [f"### {label}", "", f"![{label}]({name})", ""]
    md += [f"Regenerate: `fpsim report {db_path} --study {study} --out {out_dir}`"
           + (f"; produced by `{command}`." if command else ".")]
    with open(os.path.join(out_dir, "report.md"), "w") as fh:
        fh.write("\n".join(md) + "\n")
    files.append("report.md")
    return {"study": study, "db": db_path, "out": out_dir, "rows": rows, "files": files}
