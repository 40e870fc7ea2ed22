"""Fuzz the training-config checks: any dict of fields (real names and junk, values of any
type, NaN, infinities, huge integers) either gives a valid config or a ValueError/TypeError
with a message, never another exception. Nothing is trained."""

import argparse
import dataclasses
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fpsim.cli.train import config_from_args
from fpsim.training.loop import TrainConfig

FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]
JUNK_KEYS = ["modle", "lr_", "", "Policy", "epochs ", "path"]

#: Plausible values for some fields, so the checks behind the type checks run too.
WORDS = ["mlp", "cnn", "resnet", "transformer", "digits", "mnist1d", "synthetic-regression",
         "mnist", "fp32", "mixed_fp16", "e4m3", "e3m4:sr", "fwd=e4m3+grads=e5m2", "sgd", "adam",
         "cosine", "constant", "none", "static:1024", "dynamic", "adaptive", "static:x",
         "float16", "x", ""]

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(-2 ** 70, 2 ** 70), st.sampled_from([0, 1, -1, 2 ** 63, 2 ** 63 - 1, 2 ** 64]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(WORDS),
    st.text(max_size=6))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(FIELDS + JUNK_KEYS + ["hidden", "channels", "widths",
                                                              "dim", "heads", "n_train",
                                                              "activations", "overrides",
                                                              "name", "format", "preset"]),
                        inner, max_size=3)),
    max_leaves=6)
configs = st.dictionaries(st.sampled_from(FIELDS + JUNK_KEYS), values, max_size=6)

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def _valid_or_clear_error(build):
    """Run ``build()``; return its result, or None for a ValueError/TypeError with a message
    (any other exception fails the test)."""
    try:
        return build()
    except (ValueError, TypeError) as e:
        assert str(e).strip(), f"{type(e).__name__} without a message"
        return None


@FUZZ
@given(configs)
def test_train_config_is_valid_or_a_clear_error(fields):
    _assert_checked(_valid_or_clear_error(lambda: TrainConfig.from_dict(fields).resolved()))


def _assert_checked(cfg):
    """A config that passed the checks holds values of the documented types and ranges."""
    if cfg is None:
        return
    assert type(cfg.epochs) is int and cfg.epochs >= 1 and type(cfg.batch_size) is int
    assert type(cfg.lr) is float and math.isfinite(cfg.lr) and cfg.lr > 0
    assert type(cfg.momentum) is float and 0 <= cfg.momentum < 1
    assert math.isfinite(cfg.weight_decay) and cfg.weight_decay >= 0
    assert type(cfg.seed) is int and 0 <= cfg.seed < 2 ** 63
    assert type(cfg.instrument) is bool and type(cfg.lca) is bool
    assert all(type(getattr(cfg, f)) is int and getattr(cfg, f) >= 0
               for f in ("hist_every", "checkpoint_every", "shadow_every"))


def _toml_value(v) -> str:
    """``v`` written as a TOML value (None cannot be written: the caller leaves it out)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return '"' + v.encode("unicode_escape").decode().replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f'"{k}" = {_toml_value(x)}' for k, x in v.items()) + "}"
    return str(v)


def _toml_safe(v):
    """``v`` with what TOML cannot hold (None, integers beyond int64) left out."""
    if isinstance(v, list):
        return [_toml_safe(x) for x in v if _toml_ok(x)]
    if isinstance(v, dict):
        return {k: _toml_safe(x) for k, x in v.items() if _toml_ok(x)}
    return v


def _toml_ok(v) -> bool:
    return v is not None and not (isinstance(v, int) and not isinstance(v, bool)
                                  and not -2 ** 63 <= v < 2 ** 63)


@FUZZ
@given(configs)
def test_toml_config_file_is_valid_or_a_clear_error(tmp_path_factory, fields):
    fields = _toml_safe({k: v for k, v in fields.items() if _toml_ok(v)})
    path = tmp_path_factory.mktemp("toml") / "c.toml"
    path.write_text("".join(f'"{k}" = {_toml_value(v)}\n' for k, v in fields.items()))
    args = argparse.Namespace(config=str(path), data_path=None, no_instrument=False, lca=False,
                              **{f: None for f in ("model", "dataset", "policy", "optimizer",
                                                   "lr", "momentum", "weight_decay",
                                                   "loss_weight", "schedule", "epochs",
                                                   "batch_size", "seed", "hist_every",
                                                   "checkpoint_every", "name", "scaler",
                                                   "shadow_every", "lca_max_bytes")})
    _assert_checked(_valid_or_clear_error(
        lambda: TrainConfig.from_dict(config_from_args(args)).resolved()))
