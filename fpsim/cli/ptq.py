"""``fpsim ptq``: post-training quantization of a trained model with single or multiple points
per output channel.

    fpsim ptq --db DB --run ID [--bits B] [--method M] [--points N] [--budget P] [--n-max K]
              [--clip-search] [--act-bits A] [--calib N] [--seed S] [--json]
    fpsim ptq --study [--models L,...] [--seeds N] [--bits 2,3,4,8] [--budget P] [--out DIR]
              [--quick]

The first form quantizes one run's checkpoint and prints each layer's points per channel,
effective bits and output error, and the test accuracy before and after. The second runs the
study of ``docs/ptq.md`` (training the zoo's models in float32 first).
"""

from __future__ import annotations

import json

from fpsim.cli.common import _UsageError, run_one_or_study


def register(subparsers) -> None:
    """Add the ``ptq`` parser to the ``fpsim`` sub-parsers ``subparsers``."""
    p = subparsers.add_parser(
        "ptq", help="post-training quantization with multiple points per channel",
        description="Quantize a trained model's Linear / Conv2d weights per output channel "
                    "(uniform, greedy multipoint, adaptive multipoint by output error, random "
                    "extra points, per-layer mixed bit-widths) and evaluate it; or, with "
                    "--study, the accuracy-vs-bits study over the model zoo.")
    p.add_argument("--db", help="run-record database holding the trained run")
    p.add_argument("--run", type=int, help="the run id whose checkpoint is quantized")
    p.add_argument("--bits", default=None,
                   help="integer bits per point, 2..8 (default 4; --study: a comma list, "
                        "default 2,3,4,8)")
    p.add_argument("--method", default="adaptive",
                   help="uniform, greedy, adaptive, random or mixed (default adaptive)")
    p.add_argument("--points", type=int, default=1, help="points per channel of greedy")
    p.add_argument("--budget", type=float, default=1.5,
                   help="mean points per channel of adaptive / random, and mixed's integer bits "
                        "per weight in units of --bits (default 1.5)")
    p.add_argument("--n-max", type=int, default=4, help="most points per channel (default 4)")
    p.add_argument("--clip-search", action="store_true",
                   help="uniform: choose each channel's clip value by output error")
    p.add_argument("--act-bits", type=int, default=None,
                   help="also round every quantized layer's input to this many bits")
    p.add_argument("--calib", type=int, default=256,
                   help="calibration examples from the training set (default 256)")
    p.add_argument("--seed", type=int, default=0, help="calibration draw and random ablation")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--study", action="store_true", help="run the accuracy-vs-bits study")
    p.add_argument("--models", default=None, help="--study: comma-separated model labels")
    p.add_argument("--seeds", type=int, default=None, help="--study: seeds (default 5)")
    p.add_argument("--out", default="ptq-out", help="--study: output folder (default ptq-out)")
    p.add_argument("--quick", action="store_true", help="--study: a small smoke-test study")


def _fail(message: str):
    raise _UsageError(f"fpsim ptq: error: {message}")


def _bits_list(text: str) -> tuple:
    try:
        bits = tuple(int(b) for b in text.split(",") if b.strip())
    except ValueError:
        _fail(f"--bits {text!r} is invalid: give integers such as 4 or 2,3,4,8")
    if not bits or any(not 2 <= b <= 8 for b in bits):
        _fail(f"--bits {text!r} is out of range: every width must be in 2..8")
    return bits


def run(args) -> int:
    """Run the parsed ``args``; returns 0 (usage and input errors raise _UsageError)."""
    return run_one_or_study("ptq", args, _one, _study)


def _one(args) -> int:
    from fpsim.training import ptq
    if args.db is None or args.run is None:
        _fail("give --db and --run (the trained run to quantize), or --study")
    bits = _bits_list(args.bits or "4")
    if len(bits) != 1:
        _fail("--bits takes one width without --study")
    cfg = ptq.PTQConfig(bits=bits[0], method=args.method, points=args.points,
                        budget=args.budget, n_max=args.n_max, clip_search=args.clip_search,
                        act_bits=args.act_bits, seed=args.seed)
    tm = ptq.load_run(args.db, args.run)
    if tm.data.task != "classification":
        _fail(f"run {args.run} trained a regression model: PTQ reports classification "
              "accuracy")
    calib = ptq.calibration_batch(tm.data, args.calib, args.seed)
    loss0, acc0 = ptq.evaluate(tm.model, tm.data.x_test, tm.data.y_test)
    res = ptq.quantize_model(tm.model, calib, cfg)
    res.loss, res.accuracy = ptq.evaluate(res.model, tm.data.x_test, tm.data.y_test)
    if args.json:
        print(json.dumps(dict(res.to_dict(), float32_accuracy=acc0, float32_loss=loss0,
                              run=args.run, checkpoint_step=tm.step)))
        return 0
    print(f"run {args.run} ({tm.config.model} on {tm.config.dataset}, checkpoint at step "
          f"{tm.step}): {cfg.method}, b = {cfg.bits}, {len(calib)} calibration examples")
    print(f"{'layer':<24} {'shape':<18} {'bits':>4} {'points/channel':>22} {'eff. bits':>9} "
          f"{'rel. out. err':>13}")
    for l in res.layers:
        c = l.counts
        hist = ",".join(f"{k}:{int((c == k).sum())}" for k in range(1, int(c.max()) + 1)
                        if (c == k).any())
        print(f"{l.name:<24} {str(l.shape):<18} {l.bits:>4} {hist:>22} "
              f"{l.effective_bits:>9.3f} {l.output_error:>13.3e}")
    print(f"effective bits per weight {res.effective_bits:.3f}; test accuracy "
          f"{100 * res.accuracy:.2f}% (float32 {100 * acc0:.2f}%), loss {res.loss:.4f} "
          f"(float32 {loss0:.4f}); {res.seconds:.2f} s")
    return 0


def _study(args) -> int:
    from fpsim.analysis import ptq as study
    models = tuple(m for m in (args.models or "").split(",") if m) or None
    unknown = [m for m in models or () if m not in study.MODELS]
    if unknown:
        _fail(f"unknown model label(s) {unknown}; choose from {', '.join(study.MODELS)}")
    if args.seeds is not None and args.seeds < 1:
        _fail(f"--seeds {args.seeds} is invalid: must be >= 1")
    kw = dict(models=models, seeds=args.seeds,
              bits=_bits_list(args.bits) if args.bits else None, budget=args.budget)
    if args.quick:
        cfg = study.StudyConfig.quick_config(**kw)
    else:
        cfg = study.StudyConfig(**{k: v for k, v in kw.items() if v is not None})
    summary = study.run_study(cfg, args.out, db=args.db)
    print(study.table_markdown(summary))
    print(study.residual_markdown(summary))
    print(f"wrote {', '.join(summary['figures'])} (PNG and SVG), table.md, results.csv, "
          f"results.json, counts.json and residuals.csv to {args.out}")
    return 0
