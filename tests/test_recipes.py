"""Recipes (a precision policy and a loss scaler per cell) in fpsim compare."""

from __future__ import annotations

import pytest

from fpsim.cli.compare import parse_recipes
from fpsim.training.precision import policy
from fpsim.training.scaled_cast import ScaledCast
from fpsim.training.study import DEFAULT_RECIPES, RECIPES, cells, recipe


def test_every_named_recipe_builds():
    for name in RECIPES:
        label, pol, scaler = recipe(name)
        assert label == name
        policy(pol)


def test_recipe_words_and_cells():
    label, pol, sc = recipe("fwd=mxfp8_e4m3+grads=mxfp8_e5m2:sr@static:1024")
    assert sc == "static:1024"
    p = policy(pol)
    assert isinstance(p.casts["activations"], ScaledCast)
    assert p.casts["weight_grads"].rounding == "sr"
    plan = cells({"model": "mlp"}, (), recipes=["fp32", "s2fp8", "fp8+dynamic"])
    assert [lab for lab, _ in plan] == ["fp32", "s2fp8", "fp8+dynamic"]
    assert plan[2][1]["scaler"] == "dynamic"
    assert parse_recipes("default") == list(DEFAULT_RECIPES)


def test_bad_recipes_are_named():
    with pytest.raises(ValueError, match="unknown recipe 'fp9'"):
        recipe("fp9")
    with pytest.raises(ValueError, match="given twice"):
        cells({}, (), recipes=["fp8", "fp8"])
    with pytest.raises(ValueError):
        parse_recipes("fwd=nonsense@none")
