"""``fpsim compare`` (one setting trained under several loss scalers, then the report) and
``fpsim report DB`` (redraw a study's report).

The study itself is :mod:`fpsim.training.study`; it and the report writer are imported only when
a command runs, so building the parser stays cheap.
"""

from __future__ import annotations

import json
import os
import sys

from fpsim.cli.train import RUN_FLAGS, add_run_arguments


def register(subparsers) -> None:
    """Add the ``compare`` and ``report`` parsers to the ``fpsim`` sub-parsers ``subparsers``."""
    # The help lists the default scalers; study.py imports only the standard library at module
    # level (training and plotting load inside compare()), so this import costs next to nothing.
    from fpsim.training.study import DEFAULT_SCALERS

    from fpsim.models.configs import CONFIGS, DEFAULT

    p = subparsers.add_parser(
        "compare", help="train one setting under several loss scalers and policies; report",
        description="Train one model/dataset under several loss scalers and precision policies "
                    "(the cells; default scalers: %s) with the same seeds and data order; all "
                    "runs go to one study in --db; plots and report.md go to --out. With no "
                    "arguments: the embedded default config %s (%s)."
                    % (", ".join(DEFAULT_SCALERS), DEFAULT, CONFIGS[DEFAULT]["train"]["policy"]))
    p.add_argument("--config", help="a named config (%s) or a TOML file of training config "
                   "fields (default %s)" % (", ".join(CONFIGS), DEFAULT))
    add_run_arguments(p, policy_help="the policy of every cell (default: the config's; %s for "
                      "the default config); see --policies" % CONFIGS[DEFAULT]["train"]["policy"])
    p.add_argument("--scalers", help="comma-separated: fp32, none, static:S, dynamic[:variant], "
                   "adaptive, adaptive-paper (default: %s)" % ",".join(DEFAULT_SCALERS))
    p.add_argument("--policies", action="append", metavar="LIST",
                   help="compare these policies (each under every scaler): comma-separated "
                        "preset names (mixed_fp16, mixed_bf16, fp8_hybrid, e5m2-grads, ...) or "
                        "casts FORMAT[:ROUNDING[:OVERFLOW]] for every role (e3m4:sr), or one "
                        "ROLE=CAST list joined by + (fwd=e4m3+grads=e5m2; roles: activations, "
                        "weights, activation_grads, weight_grads, optimizer_state, groups fwd, "
                        "grads, all); ';' or a repeated --policies separates several lists")
    p.add_argument("--recipes", metavar="LIST",
                   help="compare recipes (a policy and a scaler each) instead of policies x "
                        "scalers: comma-separated names (fp32, fp8, fp8+static, fp8+dynamic, "
                        "fp8-hybrid, fp8-current, fp8-delayed, mxfp8, s2fp8, nvfp4-fwd, ...), "
                        "POLICY@SCALER words (fwd=mxfp8_e4m3+grads=mxfp8_e5m2@none), or "
                        "'default' for the FP8 comparison")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--shadow-every", type=int, default=10,
                   help="float32-shadow underflow measurement every K steps (default 10; 0: off)")
    p.add_argument("--db", default="runs.sqlite", help="run-record database (default runs.sqlite)")
    p.add_argument("--out", default="fpsim-report", help="report directory (default "
                   "./fpsim-report); a report.md or images there that fpsim did not write "
                   "are never replaced (the command stops before training)")
    p.add_argument("--resume", nargs="?", const=True, metavar="STUDY",
                   help="finish a study stopped by Ctrl-C, SIGTERM or a crash (default: the "
                        "newest in --db), given the arguments it was started with: finished "
                        "runs are kept, the interrupted one continues from its checkpoint, "
                        "the others train; then the full report")
    p.add_argument("--json", action="store_true", help="print the summary table as JSON")
    p.add_argument("--images", default="png,svg", help="image kinds of the plots: png,svg "
                   "(default), png or svg")
    p = subparsers.add_parser("report", help="the plots and report.md of a study or of fpsim "
                              "train runs", description="Write the plots (PNG and SVG) and "
                              "report.md of a study (default: the newest in the database; a "
                              "database of fpsim train runs without studies: all its runs, "
                              "seeds of the same name aggregated).")
    p.add_argument("db", help="run-record database")
    p.add_argument("--study", help="study name (see report.md or --list)")
    p.add_argument("--out", default="fpsim-report", help="report directory (a report.md or "
                   "images there that fpsim did not write are never replaced)")
    p.add_argument("--list", action="store_true", help="list the studies (or the runs) and exit")
    p.add_argument("--images", default="png,svg", help="image kinds of the plots: png,svg "
                   "(default), png or svg")
    p.add_argument("--reference", default="fp32", help="the cell of the paired differences "
                   "and of the per-seed targets (default fp32)")
    p.add_argument("--cells", help="report only the cells whose names match these "
                   "comma-separated globs (e.g. 'mixed_fp16*'; the fp32 cell is kept)")
    p.add_argument("--target", type=float, help="test accuracy (regression: test loss) of the "
                   "steps-to-target column (default: 98%% of the best cell's mean accuracy)")
    p.add_argument("--json", action="store_true", help="print the summary table as JSON")


def run(args) -> int:
    """Run ``fpsim compare`` or ``fpsim report``, whichever ``args.command`` names."""
    return run_report(args) if args.command == "report" else run_compare(args)


def _print_summary(summary: dict, as_json: bool) -> None:
    """Print a report summary: JSON, or the markdown table and where the report went."""
    if as_json:
        print(json.dumps(summary))
        return
    if not summary["files"]:
        print(f"no report: no run of study {summary['study']} trained a step")
        return
    from fpsim.analysis.report import table_markdown
    print(table_markdown(summary["rows"], summary.get("reference", "fp32")))
    if summary.get("problems"):
        print(f"\n{len(summary['problems'])} run(s) went wrong; report.md says why "
              "(\"What went wrong\").")
    where = f"study {summary['study']}" if summary["study"] else "all runs"
    print(f"\nreport: {os.path.join(summary['out'], 'report.md')} ({where} in {summary['db']})")


def run_compare(args) -> int:
    """``fpsim compare``: 0 when every run finished and the report is written, 130 when
    SIGINT or SIGTERM stopped the study (as ``fpsim train``), 2 for bad input (one line on
    stderr)."""
    from fpsim.training.records import RecordError
    from fpsim.training.study import DEFAULT_SCALERS, compare, load_config
    try:
        name, cfg = load_config(args.config)
        cfg = dict(cfg)
        for field in RUN_FLAGS:
            v = getattr(args, field)
            if v is not None:
                cfg[field] = v
        scalers = tuple(x.strip() for x in args.scalers.split(",")) if args.scalers \
            else DEFAULT_SCALERS
        policies = parse_policies(args.policies)
        recipes = parse_recipes(args.recipes)
        if recipes and (policies or args.scalers or args.policy):
            raise ValueError("--recipes gives every cell's policy and scaler: drop --policy, "
                             "--policies and --scalers")
        if policies and args.policy:
            raise ValueError("give --policy or --policies, not both (--policies lists every "
                             "policy of the comparison)")
        try:
            seeds = tuple(int(s) for s in args.seeds.split(","))
        except ValueError:
            raise ValueError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
        from fpsim import warmup
        summary = compare(cfg, scalers, seeds, db=args.db, out=args.out, name=name,
                          before_runs=warmup.auto,
                          shadow_every=args.shadow_every, policies=policies,
                          log=None if args.json else (lambda m: print(m, file=sys.stderr)),
                          progress=not args.json and sys.stderr.isatty(),
                          command=command_line(), images=_images(args.images),
                          recipes=recipes, resume=args.resume)
    except (ValueError, TypeError, OSError, RecordError) as e:
        print(f"fpsim compare: error: {e}", file=sys.stderr)
        return 2
    _print_summary(summary, args.json)
    return 130 if summary["interrupted"] else 0


def _images(text: str) -> tuple:
    """The ``--images`` kinds, validated."""
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    if not kinds or set(kinds) - {"png", "svg"}:
        raise ValueError(f"--images takes png, svg or png,svg, got {text!r}")
    return kinds


def command_line() -> str:
    """This process's command line as the user typed it (``fpsim compare ...``)."""
    import shlex
    return "fpsim " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def parse_recipes(text) -> list | None:
    """The recipe words of ``--recipes`` (``default``: the FP8 comparison's), validated."""
    from fpsim.training.precision import policy
    from fpsim.training.study import DEFAULT_RECIPES, recipe
    if not text:
        return None
    words = []
    for w in (x.strip() for x in text.split(",")):
        if w:
            words += list(DEFAULT_RECIPES) if w == "default" else [w]
    for w in words:
        policy(recipe(w)[1])  # fail before any run, naming the word
    return words


def parse_policies(values) -> list | None:
    """The policies of ``--policies`` values (see its help): each value is split on ``;``,
    then on ``,``; consecutive ``ROLE=CAST`` items form one policy. None when not given."""
    from fpsim.training.precision import policy, policy_from_text
    if not values:
        return None
    out = []
    for value in values:
        for group in value.split(";"):
            roles: list[str] = []
            for item in (x.strip() for x in group.split(",")):
                if not item:
                    continue
                if "=" in item:
                    roles.append(item)
                    continue
                if roles:
                    out.append(policy_from_text("+".join(roles)))
                    roles = []
                out.append(policy_from_text(item))
            if roles:
                out.append(policy_from_text("+".join(roles)))
    for p in out:
        policy(p)  # validate every one before any run
    return out


def run_report(args) -> int:
    """``fpsim report``: redraw a study's report (or ``--list`` the studies); 2 for bad input."""
    from fpsim.training.records import RecordError, RunDB
    from fpsim.training.study import write_study_report
    try:
        if not os.path.exists(args.db):
            raise ValueError(f"{args.db} does not exist")
        if args.list:
            with RunDB(args.db) as db:
                studies, runs = db.studies(), db.runs()
            if studies:
                print("\n".join(studies))
            else:
                print(f"no studies in {args.db} (runs made by fpsim train; "
                      f"`fpsim report {args.db}` reports them all):")
            for r in runs if not studies else []:
                print(f"run {r['id']}: {r['name'] or '(no name)'} seed {r['seed']} {r['status']}")
            return 0
        summary = write_study_report(args.db, args.out, args.study, target=args.target,
                                     cells=args.cells, images=_images(args.images),
                                     reference=args.reference)
    except (ValueError, OSError, RecordError) as e:
        print(f"fpsim report: error: {e}", file=sys.stderr)
        return 2
    _print_summary(summary, args.json)
    return 0
