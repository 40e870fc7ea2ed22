"""LeNet-style CNN: two conv-relu-maxpool stages, then two Linear layers."""

from fpsim.training import nn


class LeNet(nn.Module):
    """``[Conv3x3(pad 1) -> ReLU -> MaxPool2] x 2 -> Flatten -> Linear -> ReLU -> Linear``.

    Args:
        input_shape: (C, H, W) with H and W divisible by 4.
        num_classes: outputs; channels: the two conv widths; hidden: the Linear width.
    """

    def __init__(self, input_shape, num_classes, channels=(8, 16), hidden=64, seed=0):
        super().__init__()
        if len(input_shape) != 3 or input_shape[1] % 4 or input_shape[2] % 4:
            raise ValueError(f"LeNet needs (C, H, W) images with H, W divisible by 4, got "
                             f"input shape {tuple(input_shape)}")
        c, h, w = input_shape
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(c, c1, 3, padding=1, rng=seed), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1, rng=seed + 1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten())
        self.classifier = nn.Sequential(
            nn.Linear(c2 * (h // 4) * (w // 4), hidden, rng=seed + 2), nn.ReLU(),
            nn.Linear(hidden, num_classes, rng=seed + 3))

    def forward(self, x):
        return self.classifier(self.features(x))


#: The keys of a model_config (besides those the dataset and run fill in).
CONFIG_KEYS = ("channels", "hidden")


def check(config: dict) -> None:
    """Refuse a value of the wrong type or range among :data:`CONFIG_KEYS` (ValueError)."""
    from fpsim.models import positive_int, positive_ints
    if "channels" in config:
        positive_ints("cnn", "channels", config["channels"], length=2)
    if "hidden" in config:
        positive_int("cnn", "hidden", config["hidden"])


def parameter_count(config: dict) -> int:
    """The number of parameters :func:`build` would allocate for ``config`` (0 for an input
    shape LeNet refuses)."""
    shape = tuple(config["input_shape"])
    if len(shape) != 3:
        return 0
    c, h, w = shape
    c1, c2 = config.get("channels", (8, 16))
    hidden = config.get("hidden", 64)
    flat = c2 * (h // 4) * (w // 4)
    return ((c * 9 + 1) * c1 + (c1 * 9 + 1) * c2 + (flat + 1) * hidden
            + (hidden + 1) * config["num_classes"])


def build(config: dict) -> LeNet:
    """Config keys: ``input_shape``, ``num_classes``, ``channels`` ([8, 16]), ``hidden`` (64),
    ``seed``."""
    return LeNet(tuple(config["input_shape"]), config["num_classes"],
                 tuple(config.get("channels", (8, 16))), config.get("hidden", 64),
                 config.get("seed", 0))
