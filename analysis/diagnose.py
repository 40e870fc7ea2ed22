"""Why a run went wrong, in words, from its records: the first non-finite values (which site,
which role, how many values over which format's maximum, at which step), what the loss scale
did next, and the warnings the training loop caught."""

from __future__ import annotations

import math

import numpy as np

#: Cast roles -> the Policy field whose cast rounds them.
_ROLE_FIELD = {"input": "activations", "activation": "activations", "weight": "weights",
               "activation-grad": "activation_grads", "weight-grad": "weight_grads",
               "optimizer-state": "optimizer_state"}
#: Roles of the forward pass (rounded before the loss is known).
_FORWARD = ("input", "activation", "weight")


def _cast_format(config: dict, site: str, role: str):
    """The Format that rounds ``role`` at ``site`` under the run's policy, or None."""
    from fpsim.training.precision import policy
    try:
        cast = policy(config["policy"]).cast_for(_ROLE_FIELD[role], site)
    except (KeyError, ValueError, TypeError):
        return None
    return getattr(cast, "format", None) if cast is not None else None


def _fmt_value(v: float) -> str:
    return f"{v:.6g}"


def first_nonfinite(run) -> dict | None:
    """The first step with an overflow or a new NaN at some cast site: ``{step, site, role,
    direction, overflow, nan, format}`` of the first such site in the order the step ran
    (its forward pass in order, then its backward pass; the records' ``seq``), or None."""
    by_step: dict[int, list[dict]] = {}
    for e in run.events:
        if e["overflow"] or e["nan"]:
            by_step.setdefault(e["step"], []).append(e)
    if not by_step:
        return None
    step = min(by_step)
    rows = sorted(by_step[step], key=lambda e: (e["role"] not in _FORWARD, e.get("seq", 0)))
    e = rows[0]
    return {"step": step, "site": e["site"], "role": e["role"], "direction": e["direction"],
            "overflow": int(e["overflow"]), "nan": int(e["nan"]), "sites": len(rows),
            "format": _cast_format(run.config, e["site"], e["role"])}


def _scale_story(run, after_step: int) -> str | None:
    """What the global loss scale did from ``after_step`` on, if it fell."""
    steps, scale = run.steps.get("step"), run.steps.get("loss_scale")
    if steps is None or len(steps) == 0 or scale is None:
        return None
    mask = steps >= after_step
    if not mask.any():
        return None
    s = np.asarray(scale[mask], np.float64)
    start, low = float(s[0]), float(np.min(s))
    if not low < start:
        return None
    at = int(steps[mask][int(np.argmin(s))])
    if low == 0:
        return f"the loss scale then fell to 0 (step {at}): every later gradient is zero"
    return f"the loss scale then fell from {_fmt_value(start)} to {_fmt_value(low)} (step {at})"


def loss_divergence(run, factor: float = 2.0, window: int = 10):
    """``(step, start, value)``: the first step whose training loss exceeds ``factor`` times
    the mean of the first ``window`` steps' losses (non-finite counts), or None."""
    loss = np.asarray(run.steps.get("loss", np.zeros(0)), np.float64)
    if len(loss) <= window:
        return None
    start = float(np.mean(loss[:window]))
    bad = np.flatnonzero(~(loss[window:] <= factor * start))
    if bad.size == 0:
        return None
    i = window + int(bad[0])
    return int(run.steps["step"][i]), start, float(loss[i])


def underflow_story(run, threshold: float = 0.9) -> str | None:
    """A sentence when gradients were mostly lost to underflow (some layer's shadow underflow
    rate at least ``threshold``), naming the layer that flushed the most; else None."""
    rates = run.shadow_rates()
    lost = [k for k, v in rates.items() if v >= threshold]
    if not lost:
        return None
    flushed = run.flushed_rates()
    # Of the layers that lost that much, name the one that flushed the most itself: the
    # layers below a flushing one receive zeros and flush nothing themselves.
    worst = max(lost, key=lambda k: (flushed.get(k, 0.0), rates[k]))
    n = len(lost)
    return (f"gradients underflowed: at {worst} {100 * rates[worst]:.1f}% of the elements "
            f"non-zero in float32 were zero in the emulation ({100 * flushed.get(worst, 0):.1f}% "
            f"of its inputs flushed there), and {n} of {len(rates)} layers lost at least "
            f"{100 * threshold:.0f}%")


def explain(run, best_accuracy: float | None = None) -> list[str]:
    """Sentences that explain what went wrong in ``run`` (a RunData); empty when nothing did.

    A run is explained when it failed, skipped steps, ended with a non-finite loss, or ended
    below half of ``best_accuracy`` (the best cell's mean, if given)."""
    out = []
    summary = run.run.get("summary") or {}
    if run.run["status"] == "failed":
        out.append(f"the run failed: {summary.get('error', 'no error recorded')}")
    skipped = run.steps.get("skipped", np.zeros(0))
    n_skipped = int(np.sum(skipped)) if len(skipped) else 0
    loss = run.steps.get("loss", np.zeros(0))
    bad_loss = len(loss) and not math.isfinite(float(loss[-1]))
    acc = run.final("test_accuracy")
    low = best_accuracy is not None and acc is not None and acc < 0.5 * best_accuracy
    # A few skipped steps are how a dynamic scaler finds its scale (GradScaler halves 2^16
    # until the gradients are finite): only more than 5% of the steps is a problem.
    many_skipped = n_skipped > 0.05 * max(len(skipped), 1)
    if not (out or many_skipped or bad_loss or low):
        return out
    first = first_nonfinite(run)
    if first is not None:
        what = []
        fmt = first["format"]
        if first["overflow"]:
            over = f"{first['overflow']} values over " + (
                f"{fmt.name or fmt.spec}'s max {_fmt_value(fmt.max)}" if fmt is not None
                else "the format's max")
            what.append(over)
        if first["nan"]:
            what.append(f"{first['nan']} NaN results")
        kind = ("forward" if first["role"] in _FORWARD else "backward") + (
            " overflow" if first["overflow"] else " NaN")
        more = f" (and {first['sites'] - 1} other sites)" if first["sites"] > 1 else ""
        sentence = (f"{kind} at {first['site']} ({first['role']}): "
                    f"{' and '.join(what)} at step {first['step']}{more}")
        story = _scale_story(run, first["step"])
        out.append(sentence + (f"; {story}" if story else ""))
    rose = loss_divergence(run)
    if rose is not None:
        sentence = f"the training loss rose from {rose[1]:.4g} to {rose[2]:.4g} at step {rose[0]}"
        if first is None or rose[0] < first["step"]:
            # diverged first: that is the story's start, the overflow a consequence
            out.insert(len(out) - (first is not None), sentence + (
                ", before any value overflowed" if first is not None else ""))
        else:
            out.append(sentence)
    if many_skipped:
        first_skip = int(run.steps["step"][np.argmax(skipped.astype(bool))])
        out.append(f"{n_skipped} of {len(skipped)} steps skipped (non-finite gradients), the "
                   f"first at step {first_skip}")
    if bad_loss:
        out.append(f"the training loss is {float(loss[-1])} at the last step")
    if low:
        out.append(f"final test accuracy {100 * acc:.2f}%, under half of the best cell's "
                   f"{100 * best_accuracy:.2f}%")
        lost = underflow_story(run)
        if lost:
            out.append(lost)
    warned: dict[str, list[int]] = {}
    for n in run.notes:
        if n["kind"] == "warning":
            d = warned.setdefault(n["message"], [0, n["step"]])
            d[0] += n["count"]
    for message, (count, step) in warned.items():
        out.append(f"warning {count}x from step {step}: {message}")
    return out
