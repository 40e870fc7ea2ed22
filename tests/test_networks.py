"""Whole networks through the engine against hand-derived numpy forward/backward passes
(fpsim.reference_nets), in float64 so that only the derivation, not rounding, can differ."""

import numpy as np
import pytest

from fpsim import engine as E
from fpsim import models
from fpsim.reference import nets as reference_nets

REL = 1e-12  # float64, same operations up to summation order


def _compare(name, ref, shape):
    rng = np.random.default_rng(3)
    model = models.build(name, {"input_shape": shape, "num_classes": 10, "seed": 1})
    for p in model.parameters():
        p.data = p.data.astype(np.float64)
    x = rng.standard_normal((6, *shape))
    y = rng.integers(0, 10, 6)
    loss = E.cross_entropy(model(E.Tensor(x)), y)
    loss.backward()
    params = {k: p.data for k, p in model.named_parameters()}
    want_loss, want = ref(params, x, y)
    assert abs(loss.item() - want_loss) <= REL * abs(want_loss)
    assert set(want) == set(params)
    for k, p in model.named_parameters():
        err = np.abs(p.grad - want[k]).max() / np.abs(want[k]).max()
        assert err < REL, (k, err)


def test_mlp_matches_hand_derived_numpy():
    _compare("mlp", reference_nets.mlp, (1, 8, 8))


def test_cnn_matches_hand_derived_numpy():
    _compare("cnn", reference_nets.lenet, (1, 8, 8))


@pytest.mark.parametrize("name", ["resnet", "transformer"])
def test_model_gradients_match_finite_differences(name):
    """The residual and attention models end to end (batch norm, layer norm, softmax,
    reshapes) against central differences on a few parameters."""
    rng = np.random.default_rng(4)
    model = models.build(name, {"input_shape": (1, 8, 8), "num_classes": 10, "seed": 2,
                                "widths": (4, 4), "dim": 8})
    for p in model.parameters():
        p.data = p.data.astype(np.float64)
    x = rng.standard_normal((4, 1, 8, 8))
    y = rng.integers(0, 10, 4)

    def loss():
        return E.cross_entropy(model(E.Tensor(x)), y)
    model.zero_grad()
    loss().backward()
    eps = 1e-6
    for pname, p in list(model.named_parameters())[::3]:
        j = rng.integers(p.size)
        flat = p.data.reshape(-1)
        keep = flat[j]
        flat[j] = keep + eps
        up = loss().item()
        flat[j] = keep - eps
        down = loss().item()
        flat[j] = keep
        numeric = (up - down) / (2 * eps)
        assert abs(p.grad.reshape(-1)[j] - numeric) <= 1e-6 * max(1.0, abs(numeric)), pname
