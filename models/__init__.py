"""Model zoo (installed as ``fpsim.models``): each module has ``build(config) -> Module``.

``config`` holds ``input_shape`` and ``num_classes`` (filled in from the dataset), ``seed``,
and the model's own keys (see each ``build``). Each module also lists its own keys in
``CONFIG_KEYS`` and counts the parameters a config would allocate in ``parameter_count``:
:func:`build` checks every key's value and refuses a model of more than
:data:`MAX_PARAMETERS` parameters before allocating anything.
"""

import math
import numbers
from importlib import import_module

#: Model name -> module under ``fpsim.models``.
MODELS = {"mlp": "mlp", "cnn": "lenet", "lenet": "lenet", "resnet": "resnet",
          "transformer": "transformer"}

#: The most parameters :func:`build` allocates (100 M float32 values, 400 MB before the
#: optimizer state): far above the zoo's configurations (at most about 10^6), low enough that a
#: typo such as ``hidden = [2**40]`` is an error naming the size instead of a MemoryError.
MAX_PARAMETERS = 10 ** 8

#: Keys the training loop fills in from the dataset and the run; a model_config may not set them.
RESERVED_KEYS = ("input_shape", "num_classes", "seed")


def _module(name: str):
    if not isinstance(name, str) or name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return import_module(f"{__name__}.{MODELS[name]}")


def check_config(name: str, model_config) -> None:
    """Refuse a ``model_config`` (the model's own keys, as TrainConfig holds them) that is not
    a dict, names a key model ``name`` does not have (a typo would otherwise be ignored) or one
    of :data:`RESERVED_KEYS`, or gives a key a value of the wrong type or range.

    Raises:
        ValueError / TypeError: naming the key and what it must be.
    """
    keys = _module(name).CONFIG_KEYS
    if not isinstance(model_config, dict):
        raise TypeError(f"model_config must be a table (dict) of {name} keys, got "
                        f"{type(model_config).__name__}")
    reserved = sorted(set(model_config) & set(RESERVED_KEYS))
    if reserved:
        raise ValueError(f"model_config: {', '.join(reserved)} come(s) from the dataset and the "
                         "run's seed, not from model_config")
    unknown = sorted(map(str, set(model_config) - set(keys)))
    if unknown:
        raise ValueError(f"model_config: unknown {name} key(s) {', '.join(unknown)}; "
                         f"{name} takes {', '.join(keys) or 'none'}")
    _module(name).check(model_config)


def build(name: str, config: dict):
    """Build model ``name`` from ``config`` (see the model modules' ``build``).

    Raises:
        ValueError / TypeError: unknown model, a key of the wrong type or range (named), or a
            model of more than :data:`MAX_PARAMETERS` parameters.
    """
    module = _module(name)
    module.check(config)
    count = module.parameter_count(config)
    if count > MAX_PARAMETERS:
        raise ValueError(f"{name}: this model_config would allocate {count} parameters, more "
                         f"than MAX_PARAMETERS = {MAX_PARAMETERS}")
    return module.build(config)


# ---------------------------------------------------------------------------- value checks
# Shared by the model modules' ``check`` functions.

def positive_int(model: str, key: str, value) -> int:
    """``value`` as an int >= 1, else a ValueError naming ``model_config.<key>``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{model}: model_config.{key} must be a positive integer, got {value!r}")
    return int(value)


def positive_ints(model: str, key: str, value, length: int | None = None,
                  allow_empty: bool = True) -> tuple:
    """``value`` as a tuple of ints >= 1 (of ``length`` items when given), else a ValueError
    naming ``model_config.<key>``."""
    want = f"a list of {length if length else ''} positive integers".replace("  ", " ")
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{model}: model_config.{key} must be {want}, got {value!r}")
    if (length is not None and len(value) != length) or (not value and not allow_empty):
        raise ValueError(f"{model}: model_config.{key} must be {want}, got {list(value)!r}")
    return tuple(positive_int(model, f"{key}[{i}]", v) for i, v in enumerate(value))


def positive_float(model: str, key: str, value) -> float:
    """``value`` as a finite float > 0, else a ValueError naming ``model_config.<key>``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{model}: model_config.{key} must be a finite number > 0, "
                         f"got {value!r}")
    return float(value)
