"""A small ResNet: conv stem, residual stages (basic blocks), global average pool, Linear."""

from fpsim import engine as E
from fpsim.training import nn


class GlobalAvgPool(nn.Module):
    """(N, C, H, W) -> (N, C): mean over the spatial axes."""

    def forward(self, x):
        return E.mean(x, axis=(2, 3))


def basic_block(cin, cout, stride, seed):
    """conv3x3-bn-relu-conv3x3-bn plus identity (or conv1x1-bn when the shape changes)."""
    body = nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False, rng=seed), nn.BatchNorm2d(cout), nn.ReLU(),
        nn.Conv2d(cout, cout, 3, 1, 1, bias=False, rng=seed + 1), nn.BatchNorm2d(cout))
    shortcut = None if stride == 1 and cin == cout else nn.Sequential(
        nn.Conv2d(cin, cout, 1, stride, bias=False, rng=seed + 2), nn.BatchNorm2d(cout))
    return nn.Residual(body, shortcut)


class ResNet(nn.Module):
    """``stem -> stages of basic blocks (first block of stages > 0 downsamples by 2) -> pool ->
    Linear``.

    Args:
        input_shape: (C, H, W); widths: channels per stage; blocks: residual blocks per stage.
    """

    def __init__(self, input_shape, num_classes, widths=(16, 32), blocks=1, seed=0):
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"ResNet needs (C, H, W) images, got input shape {tuple(input_shape)}")
        self.stem = nn.Sequential(nn.Conv2d(input_shape[0], widths[0], 3, 1, 1, bias=False, rng=seed),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        stages, cin, s = [], widths[0], seed + 10
        for i, w in enumerate(widths):
            for b in range(blocks):
                stages.append(basic_block(cin, w, 2 if i > 0 and b == 0 else 1, s))
                cin, s = w, s + 3
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(GlobalAvgPool(), nn.Linear(cin, num_classes, rng=seed + 1))

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))


#: The keys of a model_config (besides those the dataset and run fill in).
CONFIG_KEYS = ("widths", "blocks")


def check(config: dict) -> None:
    """Refuse a value of the wrong type or range among :data:`CONFIG_KEYS` (ValueError)."""
    from fpsim.models import positive_int, positive_ints
    if "widths" in config:
        positive_ints("resnet", "widths", config["widths"], allow_empty=False)
    if "blocks" in config:
        positive_int("resnet", "blocks", config["blocks"])


def parameter_count(config: dict) -> int:
    """The number of parameters :func:`build` would allocate for ``config`` (convolutions
    without bias, two per batch norm channel)."""
    widths, blocks = tuple(config.get("widths", (16, 32))), config.get("blocks", 1)
    cin = widths[0]
    count = 9 * config["input_shape"][0] * cin + 2 * cin  # stem
    for i, w in enumerate(widths):
        for b in range(blocks):
            count += 9 * cin * w + 9 * w * w + 4 * w
            if (i > 0 and b == 0) or cin != w:
                count += cin * w + 2 * w  # the 1x1 shortcut
            cin = w
    return count + (cin + 1) * config["num_classes"]


def build(config: dict) -> ResNet:
    """Config keys: ``input_shape``, ``num_classes``, ``widths`` ([16, 32]), ``blocks`` (1),
    ``seed``."""
    return ResNet(tuple(config["input_shape"]), config["num_classes"],
                  tuple(config.get("widths", (16, 32))), config.get("blocks", 1),
                  config.get("seed", 0))
