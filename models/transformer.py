"""A tiny transformer classifier: patch tokens, pre-norm attention blocks, mean pool, Linear."""

import math

import numpy as np

from fpsim import engine as E
from fpsim.training import nn


class Attention(nn.Module):
    """Multi-head self-attention. Internal cast points: ``scores`` (q k^T / sqrt(d_head)),
    ``probs`` (softmax in float32), ``context`` (probs v)."""

    sites = ("scores", "probs", "context")

    def __init__(self, dim, heads, seed=0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim, rng=seed + i) for i in range(4))

    def forward(self, x):
        n, t, d = x.shape
        h, dh = self.heads, d // self.heads

        def split(y):  # (N, T, D) -> (N, H, T, Dh)
            return E.transpose(E.reshape(y, (n, t, h, dh)), (0, 2, 1, 3))
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = self.site("scores", E.matmul(q, E.transpose(k, (0, 1, 3, 2))) * (1 / math.sqrt(dh)))
        probs = self.site("probs", E.softmax(scores, axis=-1))
        ctx = self.site("context", E.matmul(probs, v))
        return self.o(E.reshape(E.transpose(ctx, (0, 2, 1, 3)), (n, t, d)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln1(x))`` (cast point ``mid``), then
    ``+ mlp(ln2(.))`` (the block's output)."""

    sites = ("mid",)
    cast_output = True

    def __init__(self, dim, heads, mlp_ratio=2, seed=0):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, seed)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * mlp_ratio, rng=seed + 4), nn.GELU(),
                                 nn.Linear(dim * mlp_ratio, dim, rng=seed + 5))

    def forward(self, x):
        x = self.site("mid", x + self.attn(self.ln1(x)))
        return x + self.mlp(self.ln2(x))


class TransformerClassifier(nn.Module):
    """Flattened input split into ``tokens`` patches -> Linear embedding + learned positions
    (cast point ``embed``) -> blocks -> LayerNorm -> mean over tokens -> Linear."""

    sites = ("embed",)

    def __init__(self, in_features, num_classes, tokens=8, dim=32, heads=2, depth=1, seed=0):
        super().__init__()
        if in_features % tokens:
            raise ValueError(f"input of {in_features} features does not split into {tokens} tokens")
        self.tokens, self.patch = tokens, in_features // tokens
        self.embed = nn.Linear(self.patch, dim, rng=seed)
        self.pos = nn.Parameter(np.random.default_rng(seed + 1).normal(0, 0.02, (tokens, dim)))
        self.blocks = nn.Sequential(*[Block(dim, heads, seed=seed + 10 * (i + 1)) for i in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes, rng=seed + 2)

    def forward(self, x):
        z = self.embed(E.reshape(x, (x.shape[0], self.tokens, self.patch)))
        z = self.blocks(self.site("embed", z + self.param("pos")))
        return self.head(E.mean(self.norm(z), axis=1))


#: The keys of a model_config (besides those the dataset and run fill in).
CONFIG_KEYS = ("tokens", "dim", "heads", "depth")


def check(config: dict) -> None:
    """Refuse a value of the wrong type or range among :data:`CONFIG_KEYS` (ValueError)."""
    from fpsim.models import positive_int
    for key in CONFIG_KEYS:
        if key in config:
            positive_int("transformer", key, config[key])


def parameter_count(config: dict) -> int:
    """The number of parameters :func:`build` would allocate for ``config``."""
    tokens, dim = config.get("tokens", 8), config.get("dim", 32)
    patch = math.prod(config["input_shape"]) // tokens
    block = 4 * dim + 4 * (dim + 1) * dim + (dim + 1) * 2 * dim + (2 * dim + 1) * dim
    return ((patch + 1) * dim + tokens * dim + config.get("depth", 1) * block + 2 * dim
            + (dim + 1) * config["num_classes"])


def build(config: dict) -> TransformerClassifier:
    """Config keys: ``input_shape``, ``num_classes``, ``tokens`` (8), ``dim`` (32), ``heads``
    (2), ``depth`` (1), ``seed``."""
    return TransformerClassifier(math.prod(config["input_shape"]), config["num_classes"],
                                 config.get("tokens", 8), config.get("dim", 32),
                                 config.get("heads", 2), config.get("depth", 1),
                                 config.get("seed", 0))
