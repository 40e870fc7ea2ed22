"""Model zoo (installed as ``fpsim.models``): each module has ``build(config) -> Module``.

``config`` holds ``input_shape`` and ``num_classes`` (filled in from the dataset), ``seed``,
and the model's own keys (see each ``build``).
"""

from importlib import import_module

#: Model name -> module under ``fpsim.models``.
MODELS = {"mlp": "mlp", "cnn": "lenet", "lenet": "lenet", "resnet": "resnet",
          "transformer": "transformer"}


def build(name: str, config: dict):
    """Build model ``name`` from ``config`` (see the model modules' ``build``)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return import_module(f"{__name__}.{MODELS[name]}").build(config)
