"""Reports from run records: the summary table (mean and 95% confidence interval over seeds),
per-layer tables, what went wrong in failed or collapsed runs, the plots (PNG and SVG) and a
report.md with captions and the environment the runs ran in.

Everything here reads the SQLite run records through :mod:`fpsim.analysis.runs`, never engine
internals, so ``fpsim report DB`` can redraw any database later: a ``fpsim compare`` study or
the runs of ``fpsim train``.
"""

from __future__ import annotations

import os
import sys

from fpsim.analysis import diagnose
from fpsim.training.records import RESUME_SETTINGS_NOTE
from fpsim.analysis.runs import (METRICS, default_target, groups, integer_ranges,  # noqa: F401
                                 load, mean_ci, reference_runs, summary_table)


def _pct(v, digits=2) -> str:
    if v is None:
        return "n/a"
    if v != 0 and abs(100 * v) < 0.01:
        return f"{100 * v:.2g}%"
    return f"{100 * v:.{digits}f}%"


def _num(v, digits=4) -> str:
    return "n/a" if v is None else f"{v:.{digits}g}"


def _cell(row, key, pct=False) -> str:
    """``mean ± CI`` of a row's key (CI: half-width of the 95% interval over the seeds), with
    ``(n of N seeds)`` when some seeds have no finite value (a diverged or unfinished run)."""
    v, ci = row.get(key), row.get(key + "_ci")
    f = _pct if pct else _num
    n, total = row.get(key + "_n"), len(row["seeds"])
    part = f"{n} of {total} seeds" if n is not None and n < total and v is not None else ""
    return f(v) + ("" if ci is None else f" ± {f(ci)}") + (f" ({part})" if part else "")


def _time_cell(row) -> str:
    n, k = len(row["seeds"]), row["time_to_target_reached"]
    if not k:
        return f"never (0/{n})"
    v, ci = row["time_to_target"], row["time_to_target_ci"]
    return f"{v:.0f}" + ("" if ci is None else f" ± {ci:.0f}") + ("" if k == n else f" ({k}/{n})")


def table_markdown(rows: list[dict], reference: str = "fp32") -> str:
    """The summary table as markdown: one row per cell, mean ± 95% CI over its seeds; Δ is
    the paired difference to the ``reference`` cell."""
    head = (f"| cell | seeds | test accuracy | Δ vs {reference} (paired) | steps to target | "
            "skipped steps | underflow | flushed (kernel) | overflow | final train loss | "
            "seconds |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        classify = r.get("classify", r.get("test_accuracy") is not None)
        acc = _cell(r, "test_accuracy", True) if classify else "loss " + _cell(r, "test_loss")
        if r.get("interrupted"):
            acc += f" ({r['interrupted']} interrupted)"
        if r.get("delta") is None:
            delta = "n/a"
        else:
            f = (lambda v: f"{100 * v:+.2f}") if classify else (lambda v: f"{v:+.4g}")
            delta = f(r["delta"]) + ("" if r["delta_ci"] is None else
                                     f" ± {f(r['delta_ci'])[1:]}") + (" points" if classify else "")
        lines.append(f"| {r['label']} | {len(r['seeds'])} | {acc} | {delta} | {_time_cell(r)} | "
                     f"{_cell(r, 'skipped_steps')} | {_cell(r, 'underflow', True)} | "
                     f"{_cell(r, 'flushed', True)} | {_pct(r.get('overflow'), 3)} | "
                     f"{_cell(r, 'final_loss')} | {_num(r.get('seconds'), 3)} |")
    return head + "\n".join(lines)


def sites_markdown(rows: list[dict]) -> str:
    """Per cell and activation-gradient site: underflow, flushed, overflow and NaN rates
    (means over the seeds)."""
    out = []
    for r in rows:
        if not r["sites"]:
            continue
        out += [f"**{r['label']}**", "", "| layer (cast site) | underflow | flushed (kernel) | "
                "overflow | NaN |", "|---|---|---|---|---|"]
        out += [f"| {site} | {_pct(d['underflow'])} | {_pct(d['flushed'])} | "
                f"{_pct(d['overflow'], 3)} | {_pct(d['nan'], 3)} |" for site, d in r["sites"].items()]
        out.append("")
    return "\n".join(out)


def problems_markdown(runs, problems: dict) -> list[str]:
    """One item per cell with problems: the first such seed's whole story, then the first
    sentence of each other seed's (they usually repeat it)."""
    out = []
    for label, items in groups(runs).items():
        bad = [r for r in items if r.id in problems]
        if not bad:
            continue
        first = bad[0]
        line = (f"- **{label}**, {len(bad)} of {len(items)} seeds. Seed {first.seed} (run "
                f"{first.id}): " + "; ".join(problems[first.id]) + ".")
        if len(bad) > 1:
            line += " Other seeds: " + "; ".join(
                f"seed {r.seed} (run {r.id}): {problems[r.id][0]}" for r in bad[1:]) + "."
        out.append(line)
    return out


def notes_markdown(runs) -> list[str]:
    """Per cell, the notes the runs recorded (scaler events such as the weight-gradient guard,
    warnings caught in the loop), counted over its seeds: one item per cell and kind."""
    out = []
    for label, items in groups(runs).items():
        kinds: dict[str, dict] = {}
        for r in items:
            for n in r.notes:
                k = kinds.setdefault(n["kind"], {"count": 0, "first": None, "sites": set(),
                                                 "seeds": set(), "message": n["message"]})
                k["count"] += n["count"]
                k["first"] = n["step"] if k["first"] is None else min(k["first"], n["step"])
                k["seeds"].add(r.seed)
                if n["site"]:
                    k["sites"].add(n["site"])
        for kind, k in kinds.items():
            sites = sorted(k["sites"])
            where = (f" at {', '.join(sites[:4])}{' and more' if len(sites) > 4 else ''}"
                     if sites else "")
            out.append(f"- **{label}**: {kind} notes, {k['count']} in all{where}, the first "
                       f"at step {k['first']}, in {len(k['seeds'])} of {len(items)} seeds; "
                       f"for example: {k['message']}")
    return out


def _resumed_elsewhere(r) -> list[str]:
    """The sentence of a run resumed under other settings than it was recorded with (its
    bits may differ from an uninterrupted run's), from its note."""
    return [n["message"] for n in r.notes if n["kind"] == RESUME_SETTINGS_NOTE][:1]


def _shown(path: str) -> str:
    """A path for report.md: relative to the working directory when it lies inside it, else
    as given (never a machine's absolute path when a relative one serves)."""
    absolute = os.path.abspath(path)
    rel = os.path.relpath(absolute, os.getcwd())
    return rel if not rel.startswith("..") else path


def _env_line(r) -> str:
    """One run's recorded environment in words (versions, BLAS, threads, machine)."""
    v = r.run.get("versions") or {}
    blas = "; ".join(f"{b.get('api')} {b.get('version')} ({b.get('architecture')}, "
                     f"{b.get('threads')} threads by default, pinned to "
                     f"{b.get('pinned_threads')} while training)" for b in v.get("blas") or [])
    return (f"fpsim {v.get('fpsim')}, numpy {v.get('numpy')}, numba {v.get('numba')} "
            f"({v.get('numba_threads', '?')} threads), Python {v.get('python')}; BLAS: "
            f"{blas or 'unknown'}; {v.get('cpus', '?')} CPUs, {v.get('platform', '?')}")


def environment_markdown(runs) -> list[str]:
    """The package versions, BLAS, thread counts, machine and command recorded with the runs."""
    seen, out = set(), []
    for r in runs:
        line = _env_line(r)
        if line not in seen:
            seen.add(line)
            ids = [x.id for x in runs if _env_line(x) == line]
            out.append(f"- runs {integer_ranges(ids)}: {line}")
    commands = sorted({(r.run.get("versions") or {}).get("command") for r in runs} - {None, ""})
    out += [f"- recorded command: `{c}`" for c in commands]
    return out


def _seeds(runs) -> str:
    seeds = sorted({r.seed for r in runs})
    return ", ".join(map(str, seeds))


def write_report(db_path: str, out_dir: str, study: str | None = None, command: str = "",
                 target: float | None = None, cells: str | None = None,
                 images=("png", "svg"), reference: str = "fp32") -> dict:
    """Write the plots (PNG and SVG) and report.md of a study (default: the newest study; a
    database without studies: all its runs) under ``out_dir``.

    Args:
        target: the test accuracy (regression: test loss) of the "steps to target" column;
            default 98% of the fp32 run's with the same seed (without an fp32 cell:
            :func:`fpsim.analysis.runs.default_target`).
        cells: comma-separated globs of the cells to report (and fp32); default all.
        images: the image kinds to write, ``png`` and/or ``svg``.
        reference: the cell of the paired differences and the per-seed targets.
    Returns:
        ``study``, ``db``, ``out``, ``target``, ``rows`` (one per cell), ``problems``
        (``{run id: sentences}``), ``files``.
    """
    _check_out_dir(out_dir)
    try:
        return _write_report(db_path, out_dir, study, command, target, cells, images, reference)
    except OSError as e:  # disk full, permissions: say where, in one line
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        raise OSError(f"cannot write the report under {out_dir}{where}: "
                      f"{e.strerror or e}") from e


def _check_out_dir(out_dir: str) -> None:
    """Raise OSError naming the problem when ``out_dir`` cannot be the report's directory."""
    path = os.path.abspath(out_dir)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise OSError(f"--out {out_dir}: {path} is a file, not a directory" if path ==
                      os.path.abspath(out_dir) else
                      f"--out {out_dir} lies below {path}, which is a file, not a directory")


def _write_report(db_path, out_dir, study, command, target, cells, images, reference) -> dict:
    """:func:`write_report` once ``out_dir`` is checked."""
    from fpsim.analysis import plots

    warnings: list[str] = []
    study, runs, failed = load(db_path, study, cells, reference, warnings)
    for w in warnings:  # (a damaged database: loud on the terminal and atop report.md)
        print(f"fpsim report: warning: {w}", file=sys.stderr)
    os.makedirs(out_dir, exist_ok=True)
    target_given = target
    has_ref = bool(reference_runs(runs, reference))
    if reference != "fp32" and not has_ref:
        raise ValueError(f"no cell {reference!r} to compare with; cells: "
                         + ", ".join(groups(runs)))
    if target is None and not has_ref:
        target = default_target(runs)
    rows = summary_table(runs, target, reference)
    images = tuple(images)
    figures = plots.write_all(runs, out_dir, target, images)
    files = [f"{f.name}.{ext}" for f in figures for ext in ("png", "svg") if ext in images]
    classify = any(r.classify for r in runs)
    best = max((r["test_accuracy"] for r in rows if r.get("test_accuracy") is not None),
               default=None)
    problems = {}
    for r in runs:
        why = diagnose.explain(r, best) + _resumed_elsewhere(r)
        if why:
            problems[r.id] = why

    cfg = runs[0].config
    fmt_names = sorted({(r.fmt.name or r.fmt.spec) if r.fmt is not None else "float32"
                        for r in runs})
    title = f"fpsim compare: {study}" if study else f"fpsim runs in {_shown(db_path)}"
    md = [f"# {title}", ""] + [f"**Warning: {w}.**\n" for w in warnings] + [
          f"Model `{cfg.get('model', '?')}` on `{cfg.get('dataset', '?')}`, "
          f"{cfg.get('epochs', '?')} epochs, batch {cfg.get('batch_size', '?')}, optimizer "
          f"{cfg.get('optimizer', '?')} (lr {cfg.get('lr', '?')})"
          + (f", loss weight {cfg['loss_weight']}" if cfg.get("loss_weight", 1) != 1 else "")
          + f"; gradient formats {', '.join(f'`{n}`' for n in fmt_names)}; seeds {_seeds(runs)}; "
          f"{len(runs)} runs in `{_shown(db_path)}`.", "",
          "Each cell: mean ± the half-width of the 95% confidence interval of the mean over its "
          "seeds (Student's t; no interval with one seed). The same seed gives the same "
          "initialization and data order in every cell, so the paired difference to the "
          f"{reference} run of the same seed (Δ) removes that variation; its interval is what "
          "resolves a difference between cells. " + (
              f"Target: test accuracy {100 * target:.2f}%." if classify and target is not None
              else f"Target: test loss {target:.4g}." if target is not None
              else f"Target: 98% of the final test accuracy of the {reference} run with the "
                   "same seed (regression: 1.02 times its test loss)." if has_ref
              else ""), "",
          table_markdown(rows, reference), ""]
    md += [f"- **{METRICS[k][0]}**: {METRICS[k][1]}" for k in METRICS]
    md.append("")
    if problems or failed:
        md += ["## What went wrong", ""]
        md += problems_markdown(runs, problems)
        for f in failed:
            err = (f.get("summary") or {}).get("error", "no error recorded")
            who = f"{f['name']} (seed {f['seed']}, run {f['id']})" if f.get("name") else \
                f"run {f['id']}"
            md.append(f"- {who}: {f['status']}: {err}.")
        md.append("")
    notes = notes_markdown(runs)
    md += ["## Events recorded", ""] + (notes or [
        "No run recorded a note (no warning inside the training loop, no scaler event such "
        "as the weight-gradient guard)."]) + [""]
    md += ["## Per layer", "", "Rates per activation-gradient cast site, means over the seeds "
           "(definitions above).", "", sites_markdown(rows)]
    drawn = {f.name for f in figures}
    for f in figures:
        first = "png" if "png" in images else "svg"
        md += [f"## {f.title}", "", f"![{f.title}]({f.name}.{first})", "", f.caption
               + (f" ([SVG]({f.name}.svg))" if first == "png" and "svg" in images else ""), ""]
    absent = [why for name, why in plots.omitted(runs).items() if name not in drawn]
    if absent:
        md += ["## Not drawn", ""] + [f"- {a}" for a in absent] + [""]
    md += ["## Environment", ""] + environment_markdown(runs) + [""]
    regen = f"fpsim report {_shown(db_path)}" + (f" --study {study}" if study else "") \
        + (f" --cells '{cells}'" if cells else "") \
        + (f" --reference '{reference}'" if reference != "fp32" else "") \
        + (f" --target {target_given}" if target_given is not None else "") \
        + f" --out {_shown(out_dir)}" \
        + ("" if images == ("png", "svg") else f" --images {','.join(images)}")
    md += [f"Regenerate: `{regen}`" + (f"; produced by `{command}`." if command else ".")]
    with open(os.path.join(out_dir, "report.md"), "w") as fh:
        fh.write("\n".join(md) + "\n")
    files.append("report.md")
    return {"study": study, "db": db_path, "out": out_dir, "target": target,
            "reference": reference, "rows": rows,
            "problems": {str(k): v for k, v in problems.items()}, "files": files}
