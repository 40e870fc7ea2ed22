"""Named experiment configurations (``fpsim compare --config NAME``).

Each entry holds TrainConfig fields (without the scaler, which ``compare`` varies) and a
description of what the setting shows.
"""

#: name -> {"description": ..., "train": TrainConfig fields}
CONFIGS = {
    "digits-mlp-fp16": {
        "description": "The embedded default: the 128-128 ReLU MLP on the UCI digits, fp16 "
                       "weights, activations and gradients (mixed_fp16), SGD with momentum. "
                       "About a fifth of the activation-gradient elements underflow without "
                       "loss scaling, yet accuracy is unchanged: the lost values are the "
                       "smallest loss gradients, of examples already classified well.",
        "train": {"model": "mlp", "dataset": "digits", "policy": "mixed_fp16"},
    },
    "digits-mlp-e4m3-grads": {
        "description": "A stress test of the scalers' reach, not a training recipe (FP8 "
                       "training stores gradients in E5M2, or scales every tensor): the same "
                       "MLP with fp16 forward values and weights but gradients stored in FP8 "
                       "E4M3 (float8_e4m3fn: smallest subnormal 2^-9, largest 448, no Inf, "
                       "overflow gives NaN). Without scaling most gradient values underflow "
                       "and the network rarely trains; a static scale must be tuned (too small "
                       "underflows, too large overflows every step).",
        "train": {"model": "mlp", "dataset": "digits",
                  "policy": {"activations": "float16", "weights": "float16",
                             "activation_grads": "float8_e4m3fn",
                             "weight_grads": "float8_e4m3fn"}},
    },
    "digits-cnn-e4m3-grads": {
        "description": "The LeNet CNN with fp16 forward values and weights and FP8 E4M3 "
                       "gradients (as digits-mlp-e4m3-grads, with convolutions).",
        "train": {"model": "cnn", "dataset": "digits",
                  "policy": {"activations": "float16", "weights": "float16",
                             "activation_grads": "float8_e4m3fn",
                             "weight_grads": "float8_e4m3fn"}},
    },
    "mnist1d-mlp-small-loss": {
        "description": "Where fp16 gradients underflow for real: a deeper ReLU MLP (four hidden "
                       "layers of 128, no normalisation) on MNIST-1D with a 10,000-example test "
                       "set (one example = 0.01 points), trained on the loss times 2^-16 — the "
                       "per-element gradients of a loss averaged over 65,536 outputs — with SGD "
                       "at lr 0.1 x 2^16, which in float32 trains bit-identically to the "
                       "unweighted loss at lr 0.1. fp16 everywhere (activations too).",
        "train": {"model": "mlp", "dataset": "mnist1d", "policy": "mixed_fp16",
                  "model_config": {"hidden": [128, 128, 128, 128]},
                  "dataset_options": {"n_test": 10000}, "optimizer": "sgd",
                  "lr": 0.1 * 2.0 ** 16, "loss_weight": 2.0 ** -16, "epochs": 20,
                  "batch_size": 128},
    },
    "mnist1d-mlp": {
        "description": "The MLP of mnist1d-mlp-small-loss on the unweighted loss (lr 0.1), "
                       "float32 unless a policy or recipe says otherwise: the setting of the "
                       "FP8 recipe comparison (fpsim compare --recipes default), where "
                       "gradients are as small as a plain cross-entropy makes them.",
        "train": {"model": "mlp", "dataset": "mnist1d", "policy": "fp32",
                  "model_config": {"hidden": [128, 128, 128, 128]},
                  "dataset_options": {"n_test": 10000}, "optimizer": "sgd", "lr": 0.1,
                  "epochs": 20, "batch_size": 128},
    },
}

DEFAULT = "digits-mlp-fp16"


def get(name: str) -> dict:
    """The configuration ``name`` (a copy)."""
    import copy
    if name not in CONFIGS:
        raise ValueError(f"unknown experiment config {name!r}; choose from {', '.join(CONFIGS)} "
                         "(or give a TOML file)")
    return copy.deepcopy(CONFIGS[name])
