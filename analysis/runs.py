"""Run records as data: one run's rows loaded once (:class:`RunData`), the metrics a study
reports computed from them, and seed aggregation with confidence intervals.

Every metric is defined here and only here (:data:`METRICS` holds the definitions the reports
print); the report and the plots read these methods, never the database directly.
"""

from __future__ import annotations

import math
import sqlite3
from collections import OrderedDict

import numpy as np

from fpsim.training.records import RecordError, RunDB, damage_message

GRAD_ROLE = "activation-grad"

#: name -> (column title, definition). One name, one definition.
METRICS = OrderedDict([
    ("underflow", ("underflow", "the paper's per-layer underflow rate (Zhao et al.): on the "
                   "shadow steps, the activation-gradient elements that are non-zero when the "
                   "step is recomputed in float32 (no rounding, no scaling) but zero in the "
                   "emulated step, as a fraction of the elements non-zero in float32; computed "
                   "per layer (cast site) over the run and averaged over the layers. It counts "
                   "values lost anywhere upstream.")),
    ("flushed", ("flushed (kernel)", "the in-kernel count: per activation-gradient cast site, "
                 "the non-zero inputs that the rounding turned into zero, as a fraction of the "
                 "site's non-zero inputs, over the run, averaged over the sites. Inputs already "
                 "zero (lost upstream, or zeroed by ReLU) are not in the denominator, so it "
                 "measures only the rounding at that site.")),
    ("overflow", ("overflow", "values whose rounding overflowed (to Inf, NaN or the saturated "
                  "maximum), as a fraction of all values rounded, over every cast site and "
                  "role (forward and backward).")),
    ("nan", ("NaN", "NaN results from non-NaN inputs, as a fraction of all values rounded, over "
             "every cast site and role.")),
    ("time_to_target", ("steps to target", "the first step at the end of which the test "
                        "accuracy (regression: test loss) reached the target: a given value, "
                        "or 98% of the final test accuracy of the fp32 run with the same seed "
                        "(regression: 1.02 times its test loss); mean over the seeds that "
                        "reached it, with how many did.")),
    ("delta", ("Δ (paired)", "per seed, the final test accuracy (regression: test loss) "
               "minus that of the reference cell's run with the same seed (same "
               "initialization and data order; the reference is fp32 unless `fpsim report "
               "--reference` names another); mean and 95% interval over the seeds.")),
])


def integer_ranges(values) -> str:
    """``0-4, 7`` for the integers ``values`` (two neighbours stay a list: ``3, 4``)."""
    v = sorted(set(int(x) for x in values))
    out, i = [], 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and v[j + 1] == v[j] + 1:
            j += 1
        out.append(str(v[i]) if j == i else f"{v[i]}-{v[j]}" if j > i + 1 else f"{v[i]}, {v[j]}")
        i = j + 1
    return ", ".join(out)


def _t975(n: int) -> float:
    """The 97.5% quantile of Student's t with ``n - 1`` degrees of freedom (n >= 2)."""
    from scipy.stats import t
    return float(t.ppf(0.975, n - 1))


def mean_ci(values) -> tuple[float | None, float | None, int]:
    """``(mean, half-width of the 95% confidence interval of the mean, n)`` of the finite
    values (Student's t with the sample standard deviation; half-width None for n < 2)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
    if v.size == 0:
        return None, None, 0
    if v.size == 1:
        return float(v[0]), None, 1
    return float(v.mean()), _t975(v.size) * float(v.std(ddof=1)) / math.sqrt(v.size), int(v.size)


def grad_format(config: dict):
    """The activation-gradient Format of a run's policy (None for float32 gradients)."""
    from fpsim.training.precision import policy
    cast = policy(config["policy"]).casts["activation_grads"]
    return None if cast is None else getattr(cast, "format", None)


def config_label(config: dict) -> str:
    """The label of an unnamed run: ``policy / scaler`` (``fp32`` for the float32 policy
    without a scaler, the reference cell's name)."""
    from fpsim.training.precision import policy_label
    scaler = config.get("scaler", "none")
    scaler = scaler.get("name", "scaler") if isinstance(scaler, dict) else str(scaler)
    pol = policy_label(config.get("policy", "fp32"))
    if pol == "fp32" and scaler == "none":
        return "fp32"
    return f"{pol} / {scaler.replace(':', ' ')}"


#: Config fields that do not make runs different settings (the seed repeats a cell; the rest
#: only measure or record, and training is the same with any of their values).
_NOT_SETTINGS = ("seed", "name", "checkpoint_every", "hist_every", "instrument", "shadow_every",
                 "lca", "lca_max_bytes")


def _labels(rows: list[dict]) -> dict:
    """``{run id: label}``: a run's name; for unnamed runs :func:`config_label` plus the config
    fields (seed aside) that differ between the unnamed runs, so only runs of one setting share
    a label."""
    import json
    unnamed = [r for r in rows if not r["name"]]
    keys = sorted({k for r in unnamed for k in r["config"]} - set(_NOT_SETTINGS)
                  - {"policy", "scaler"})
    differ = [k for k in keys
              if len({json.dumps(r["config"].get(k), sort_keys=True) for r in unnamed}) > 1]
    out = {}
    for r in rows:
        if r["name"]:
            out[r["id"]] = r["name"]
            continue
        extra = ", ".join(f"{k}={json.dumps(r['config'].get(k), sort_keys=True)}"
                          for k in differ)
        out[r["id"]] = config_label(r["config"]) + (f" ({extra})" if extra else "")
    return out


class RunData:
    """One run's records, loaded once: ``run`` (the runs row), ``steps`` (columns), ``epochs``,
    ``events`` (per step and site), ``scales``, ``hists``, ``notes`` (recorded warnings and
    events), ``tensor_scales`` (per step and cast site of a scaled format: amax, scale, S2FP8's
    alpha and beta, tiles and their out-of-range scales; empty for older databases),
    ``fmt`` (the activation-gradient Format or None)."""

    def __init__(self, db: RunDB, run: dict, label: str | None = None):
        self.run = run
        self.id = run["id"]
        self.label = label or run["name"] or config_label(run["config"])
        self.seed = run["seed"]
        self.config = run["config"]
        self.steps = db.steps(self.id)
        self.epochs = db.epochs(self.id)
        self.events = db.site_events(self.id)
        self.scales = db.scales(self.id)
        self.hists = db.histograms(self.id)
        self.notes = db.notes(self.id)
        self.tensor_scales = db.tensor_scales(self.id)  # [] without the table
        self.fmt = grad_format(self.config)

    @property
    def classify(self) -> bool:
        """True when the run's task is classification: its epochs hold a test accuracy (a run
        without epochs: its dataset is not a regression set)."""
        if self.epochs:
            return any(e["test_accuracy"] is not None for e in self.epochs)
        return "regression" not in str(self.config.get("dataset", ""))

    # -- per-site series ---------------------------------------------------------------------
    def site_steps(self, role: str = GRAD_ROLE) -> "OrderedDict[str, dict]":
        """Per site of ``role`` (``None``: every role, keyed ``site [role direction]``): the
        per-step columns ``step``, ``total``, ``zeros``, ``underflow``, ``overflow``, ``nan``,
        ``shadow_underflow``, ``shadow_total`` (NaN where no shadow pass ran), as arrays."""
        cache = self.__dict__.setdefault("_site_steps_cache", {})
        if role not in cache:
            cache[role] = self._site_steps(role)
        return cache[role]

    def _site_steps(self, role):
        out: "OrderedDict[str, dict]" = OrderedDict()
        keys = ("step", "total", "zeros", "underflow", "overflow", "nan", "shadow_underflow",
                "shadow_total")
        for e in self.events:
            if role is not None and e["role"] != role:
                continue
            name = e["site"] if role is not None else f"{e['site']} [{e['role']}]"
            d = out.setdefault(name, {k: [] for k in keys})
            for k in keys:
                d[k].append(np.nan if e[k] is None else e[k])
        return OrderedDict((s, {k: np.asarray(v, np.float64) for k, v in d.items()})
                           for s, d in out.items())

    def shadow_rates(self) -> "OrderedDict[str, float]":
        """Per activation-gradient site, the paper's underflow rate over the run (see
        :data:`METRICS`); empty when no shadow pass ran."""
        out = OrderedDict()
        for site, d in self.site_steps().items():
            total = np.nansum(d["shadow_total"])
            if total > 0:
                out[site] = float(np.nansum(d["shadow_underflow"]) / total)
        return out

    def flushed_rates(self) -> "OrderedDict[str, float]":
        """Per activation-gradient site, the in-kernel flushed fraction over the run."""
        out = OrderedDict()
        for site, d in self.site_steps().items():
            live = float(np.sum(d["total"] - d["zeros"]))
            out[site] = float(np.sum(d["underflow"]) / live) if live else 0.0
        return out

    def event_rates(self, key: str) -> "OrderedDict[str, float]":
        """Per activation-gradient site, ``key`` (``overflow`` or ``nan``) as a fraction of the
        values rounded there, over the run."""
        out = OrderedDict()
        for site, d in self.site_steps().items():
            total = float(np.sum(d["total"]))
            out[site] = float(np.sum(d[key]) / total) if total else 0.0
        return out

    def pooled_rate(self, key: str) -> float | None:
        """``key`` (``overflow`` or ``nan``) over every cast site and role, as a fraction of
        all values rounded (None without instrumentation)."""
        total = sum(e["total"] for e in self.events)
        return sum(e[key] for e in self.events) / total if total else None

    # -- run-level metrics ---------------------------------------------------------------------
    def final(self, key: str):
        """The last epoch's ``key`` (``test_accuracy``, ``test_loss``, ``train_loss``)."""
        return self.epochs[-1].get(key) if self.epochs else None

    def time_to_target(self, target: float | None) -> int | None:
        """The first step at the end of which the test accuracy reached ``target`` (for a
        regression run, the test loss fell to ``target``); None if never (or no target)."""
        if target is None:
            return None
        for e in self.epochs:
            v = e["test_accuracy"] if self.classify else e["test_loss"]
            if v is not None and (v >= target if self.classify else v <= target):
                return int(e["step"])
        return None

    def summary(self, target: float | None = None) -> dict:
        """The run's metrics (see :data:`METRICS`) and its status."""
        sh, fl = self.shadow_rates(), self.flushed_rates()
        s = self.run.get("summary") or {}
        skipped = self.steps.get("skipped", np.zeros(0))
        return {"label": self.label, "run_id": self.id, "seed": self.seed,
                "status": self.run["status"],
                "test_accuracy": self.final("test_accuracy"), "test_loss": self.final("test_loss"),
                "final_loss": self.final("train_loss"),
                "skipped_steps": int(np.sum(skipped)) if len(skipped) else 0,
                "steps": int(len(skipped)),
                "underflow": float(np.mean(list(sh.values()))) if sh else None,
                "flushed": float(np.mean(list(fl.values()))) if fl else None,
                "overflow": self.pooled_rate("overflow"), "nan": self.pooled_rate("nan"),
                "time_to_target": self.time_to_target(target),
                "seconds": s.get("seconds")}


def load(db_path: str, study: str | None = None, cells: str | None = None,
         reference: str = "fp32", warnings: list | None = None
         ) -> tuple[str | None, list[RunData], list[dict]]:
    """``(study, runs, failed)``: the finished or interrupted runs of ``study`` (default: the
    newest study in the database; a database without studies, as ``fpsim train`` writes it,
    gives all its runs and study None) and the rows of the runs that failed. ``cells``: keep
    only the runs whose label matches one of these comma-separated globs (``mixed_fp16*``),
    and the ``reference`` cell.

    The database is opened read-only. A run whose records cannot be read (a damaged page, a
    field that does not hold what fpsim writes) is not reported: it is among ``failed`` with
    status ``unreadable`` and the reason. ``warnings``, if given, receives a sentence on a
    damaged database (what ``PRAGMA quick_check`` found).
    """
    with RunDB(db_path, readonly=True) as db:
        if db.damage and warnings is not None:
            warnings.append(damage_message(db_path, db.damage))
        try:
            studies = db.studies()
            if study is None and studies:
                study = studies[-1]
            elif study is not None and study not in studies:
                raise RecordError(f"no study {study!r} in {db_path}; studies: "
                                  f"{', '.join(studies) or 'none (runs made by fpsim train)'}")
            ids = db.run_ids(study)
        except sqlite3.DatabaseError as e:
            raise RecordError(f"cannot read the runs of {db_path}: {e}") from None
        rows, failed = [], []
        for run_id in ids:
            try:
                rows.append(_checked_config(db.run(run_id), db_path))
            except (RecordError, sqlite3.DatabaseError) as e:
                failed.append(_unreadable(run_id, e))
        if not rows and not failed:
            raise RecordError(f"{db_path} holds no run")
        labels = _labels(rows)
        if cells:
            import fnmatch
            patterns = [p.strip() for p in cells.split(",") if p.strip()]
            rows = [r for r in rows if labels[r["id"]] == reference
                    or any(fnmatch.fnmatchcase(labels[r["id"]], p) for p in patterns)]
            if all(labels[r["id"]] == reference for r in rows):
                raise RecordError(f"no cell matches {cells!r}; cells: "
                                  + ", ".join(dict.fromkeys(labels.values())))
        runs = []
        for r in rows:
            if r["status"] not in ("finished", "interrupted"):
                failed.append(r)
                continue
            try:
                runs.append(RunData(db, r, labels[r["id"]]))
            except (RecordError, sqlite3.DatabaseError) as e:
                failed.append(_unreadable(r["id"], e, r))
    if not runs:
        raise RecordError(f"{'study ' + repr(study) if study else db_path} has no finished run"
                          + "".join(f"; run {r['id']} {r['status']}"
                                    + (f": {(r.get('summary') or {}).get('error')}"
                                       if (r.get("summary") or {}).get("error") else "")
                                    for r in failed[:3]))
    return study, runs, failed


def _checked_config(row: dict, db_path: str) -> dict:
    """``row`` (a run), once its config gives what the report reads (its policy's gradient
    format and a label); RecordError naming the run and field otherwise."""
    try:
        grad_format(row["config"])
        config_label(row["config"])
    except KeyError as e:
        raise RecordError(f"run {row['id']} in {db_path}: its config has no {e} field") from None
    except (TypeError, ValueError) as e:
        raise RecordError(f"run {row['id']} in {db_path}: its config's policy cannot be "
                          f"read ({e})") from None
    return row


def _unreadable(run_id: int, err: Exception, row: dict | None = None) -> dict:
    """The ``failed`` entry of a run whose records cannot be read."""
    row = row or {}
    return {"id": run_id, "name": row.get("name"), "seed": row.get("seed"),
            "status": "unreadable", "summary": {"error": f"not reported: {err}"}}


def groups(runs: list[RunData]) -> "OrderedDict[str, list[RunData]]":
    """The runs by label (one list per scaler / policy cell, its seeds in order)."""
    out: "OrderedDict[str, list[RunData]]" = OrderedDict()
    for r in runs:
        out.setdefault(r.label, []).append(r)
    return out


def default_target(runs: list[RunData]) -> float | None:
    """The study's target: 98% of the best cell's mean final test accuracy (regression: 1.02
    times the best cell's mean final test loss)."""
    best = None
    classify = any(r.classify for r in runs)
    for items in groups(runs).values():
        v, _, n = mean_ci([r.final("test_accuracy" if classify else "test_loss") for r in items])
        if n and (best is None or (v > best if classify else v < best)):
            best = v
    if best is None:
        return None
    return 0.98 * best if classify else 1.02 * best


#: Columns of the summary table that are averaged over seeds.
AVERAGED = ("test_accuracy", "test_loss", "final_loss", "skipped_steps", "underflow", "flushed",
            "overflow", "nan", "seconds")


#: The cell that paired differences and per-seed targets refer to, when the study has it.
REFERENCE = "fp32"


def reference_runs(runs: list[RunData], reference: str = REFERENCE) -> dict:
    """``{seed: run}`` of the reference cell (empty when the study has none)."""
    return {r.seed: r for r in runs if r.label == reference}


def run_target(run: RunData, target: float | None, refs: dict) -> float | None:
    """The target of one run: ``target`` if given; else 98% of the final test accuracy of
    the reference run with the same seed (regression: 1.02 times its test loss); None
    without either."""
    if target is not None:
        return target
    ref = refs.get(run.seed)
    if ref is None:
        return None
    v = ref.final("test_accuracy" if ref.classify else "test_loss")
    return None if v is None else (0.98 * v if ref.classify else 1.02 * v)


def summary_table(runs: list[RunData], target: float | None = None,
                  reference: str = REFERENCE) -> list[dict]:
    """One row per label: for each key of :data:`AVERAGED` the mean over the seeds (``key``),
    the 95% CI half-width (``key_ci``) and the standard deviation (``key_std``); the paired
    difference of the final test accuracy (regression: test loss) to the ``reference`` run
    of the same seed (``delta``, ``delta_ci``: mean and CI of the per-seed differences, which
    cancel the variation that initialization and data order cause, the same in every cell);
    the steps to the target (see :func:`run_target`; mean over the seeds that reached it,
    ``time_to_target_reached`` of ``len(seeds)``); the per-site metrics averaged over the
    seeds (``sites``)."""
    refs = reference_runs(runs, reference)
    rows = []
    for label, items in groups(runs).items():
        sums = [r.summary(run_target(r, target, refs)) for r in items]
        row = {"label": label, "seeds": [s["seed"] for s in sums],
               "run_ids": [s["run_id"] for s in sums],
               "statuses": [s["status"] for s in sums]}
        row["classify"] = any(r.classify for r in items)
        key = "test_accuracy" if row["classify"] else "test_loss"
        diffs = [r.final(key) - refs[r.seed].final(key) for r in items
                 if r.seed in refs and r.final(key) is not None
                 and refs[r.seed].final(key) is not None]
        row["delta"], row["delta_ci"], row["delta_n"] = mean_ci(diffs) if refs else (None, None, 0)
        for key in AVERAGED:
            vals = [s[key] for s in sums if s[key] is not None and math.isfinite(s[key])]
            m, ci, n = mean_ci(vals)
            row[key], row[key + "_ci"], row[key + "_n"] = m, ci, n
            row[key + "_std"] = float(np.std(vals, ddof=1)) if n > 1 else None
        row["interrupted"] = sum(s["status"] == "interrupted" for s in sums)
        reached = [s["time_to_target"] for s in sums if s["time_to_target"] is not None]
        row["time_to_target"], row["time_to_target_ci"], _ = mean_ci(reached)
        row["time_to_target_reached"] = len(reached)
        row["sites"] = _site_table(items)
        rows.append(row)
    return rows


def _site_table(items: list[RunData]) -> "OrderedDict[str, dict]":
    """Per activation-gradient site: underflow (shadow), flushed, overflow and NaN rates,
    each the mean over the seeds."""
    per = [(r.shadow_rates(), r.flushed_rates(), r.event_rates("overflow"), r.event_rates("nan"))
           for r in items]
    sites = list(OrderedDict.fromkeys(s for p in per for s in p[1]))
    out = OrderedDict()
    for site in sites:
        out[site] = {key: mean_ci([p[i].get(site) for p in per])[0]
                     for i, key in enumerate(("underflow", "flushed", "overflow", "nan"))}
    return out
