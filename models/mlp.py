"""Multi-layer perceptron: flatten, hidden Linear + activation layers, output Linear."""

import math

import numpy as np

from fpsim.training import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


class MLP(nn.Module):
    """``Flatten -> [Linear -> act] * len(hidden) -> Linear``; layers named ``net.0``, ...

    Args:
        in_features: flattened input size; out_features: classes or targets.
        hidden: widths of the hidden layers; activation: a key of :data:`ACTIVATIONS`.
        seed: initialization seed (layer i uses ``seed + i``).
        init_std: if given, weights are drawn from N(0, init_std^2) and biases set to 0 (the
            fixed-scale initialization of older networks; small values give small gradients)
            instead of PyTorch's default U(+-1/sqrt(fan_in)).
    """

    def __init__(self, in_features, out_features, hidden=(128, 128), activation="relu", seed=0,
                 init_std=None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
        layers, width = [nn.Flatten()], in_features
        for i, h in enumerate(hidden):
            layers += [nn.Linear(width, h, rng=seed + i), ACTIVATIONS[activation]()]
            width = h
        layers.append(nn.Linear(width, out_features, rng=seed + len(hidden)))
        self.net = nn.Sequential(*layers)
        if init_std is not None:
            rng = np.random.default_rng([seed, 1])
            for m in layers:
                if isinstance(m, nn.Linear):
                    m.weight.data = (rng.standard_normal(m.weight.shape) * init_std).astype(np.float32)
                    m.bias.data = np.zeros_like(m.bias.data)

    def forward(self, x):
        return self.net(x)


#: The keys of a model_config (besides those the dataset and run fill in).
CONFIG_KEYS = ("hidden", "activation", "init_std")


def check(config: dict) -> None:
    """Refuse a value of the wrong type or range among :data:`CONFIG_KEYS` (ValueError)."""
    from fpsim.models import positive_float, positive_ints
    if "hidden" in config:
        positive_ints("mlp", "hidden", config["hidden"])
    if "activation" in config and config["activation"] not in ACTIVATIONS:
        raise ValueError(f"mlp: model_config.activation must be one of "
                         f"{', '.join(sorted(ACTIVATIONS))}, got {config['activation']!r}")
    if config.get("init_std") is not None:
        positive_float("mlp", "init_std", config["init_std"])


def parameter_count(config: dict) -> int:
    """The number of parameters :func:`build` would allocate for ``config``."""
    widths = [math.prod(config["input_shape"]), *config.get("hidden", (128, 128)),
              config["num_classes"]]
    return sum((a + 1) * b for a, b in zip(widths, widths[1:]))  # weights and biases


def build(config: dict) -> MLP:
    """Config keys: ``input_shape``, ``num_classes`` (from the dataset), ``hidden`` (list of
    widths, default [128, 128]), ``activation`` (default relu), ``init_std``, ``seed``."""
    return MLP(math.prod(config["input_shape"]), config["num_classes"],
               tuple(config.get("hidden", (128, 128))), config.get("activation", "relu"),
               config.get("seed", 0), config.get("init_std"))
