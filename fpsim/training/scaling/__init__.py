"""Loss scalers behind one small interface (:class:`Scaler`): none, static, dynamic (PyTorch
GradScaler semantics and variants), adaptive per-site (ALS: the presets ``adaptive`` and
``adaptive-paper``)."""

from __future__ import annotations

from fpsim.training.scaling.adaptive import PRESETS as ALS_PRESETS
from fpsim.training.scaling.adaptive import AdaptiveScaler
from fpsim.training.scaling.base import PROTOCOL, Scaler, StepStats, implements_protocol
from fpsim.training.scaling.dynamic import VARIANTS as DYNAMIC_VARIANTS
from fpsim.training.scaling.dynamic import DynamicScaler
from fpsim.training.scaling.static import NoScaler, StaticScaler

__all__ = ["ALS_PRESETS", "AdaptiveScaler", "DYNAMIC_VARIANTS", "DynamicScaler", "NoScaler",
           "Scaler", "StaticScaler", "StepStats", "PROTOCOL", "implements_protocol", "scaler"]


def _option_value(text: str):
    """A value of the string form ``adaptive:key=value``: none -> None, true/on/yes -> True,
    false/off/no -> False, an int or float when it parses as one, else the text."""
    low = text.lower()
    if low == "none":
        return None
    if low in ("true", "on", "yes"):
        return True
    if low in ("false", "off", "no"):
        return False
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def scaler(spec, grad_format="float16") -> Scaler:
    """A scaler from a spec: a Scaler; ``"none"``; ``"static:1024"``; ``"dynamic"`` or
    ``"dynamic:apex"`` (a variant of DYNAMIC_VARIANTS); an ALS preset of
    :data:`~fpsim.training.scaling.adaptive.PRESETS`, ``"adaptive"`` (fpsim's version) or
    ``"adaptive-paper"`` (the reference as published), optionally followed by
    ``:key=value`` options replacing preset arguments (``"adaptive:output_site=none"``,
    ``"adaptive:unscale=format:wgrad_guard=off"``; values none, on/off/true/false, numbers or
    words; ``:`` separates them because ``fpsim compare --scalers`` splits on commas, and run
    names read ``adaptive output_site=none``); or a dict ``{"name": ..., **arguments}`` (e.g.
    ``{"name": "adaptive", "t_uf": 1e-4}``, ``{"name": "adaptive-paper", "period": 1}``).
    ``grad_format`` is the gradient format the adaptive scaler takes u_min / u_max from."""
    if isinstance(spec, Scaler) or implements_protocol(spec):
        return spec
    if isinstance(spec, str):
        name, _, arg = spec.partition(":")
        args = {}
        if name == "static":
            if not arg:
                raise ValueError("a static scaler needs a scale: 'static:1024'")
            try:
                args["scale"] = float(arg)
            except ValueError:
                raise ValueError(f"static scale {arg!r} is not a number") from None
        elif name == "dynamic" and arg:
            args["variant"] = arg
        elif name in ALS_PRESETS and arg:
            for item in arg.split(":"):
                key, eq, value = item.partition("=")
                if not eq or not key:
                    raise ValueError(f"scaler {spec!r}: options of {name!r} are key=value, "
                                     f"got {item!r}")
                if key in ("name", "format"):
                    raise ValueError(f"scaler {spec!r}: {key!r} cannot be set here")
                args[key] = _option_value(value)
        elif arg:
            raise ValueError(f"scaler {spec!r}: {name!r} takes no ':' argument")
        spec = {"name": name, **args}
    if not isinstance(spec, dict) or "name" not in spec:
        raise TypeError(f"a scaler is a name, a dict with 'name', or a Scaler; got {spec!r}")
    args = dict(spec)
    name = args.pop("name")
    kinds = {"none": NoScaler, "static": StaticScaler, "dynamic": DynamicScaler}
    if name not in kinds and name not in ALS_PRESETS:
        raise ValueError(f"unknown loss scaler {name!r}; choose from "
                         f"{', '.join([*kinds, *ALS_PRESETS])}")
    try:
        if name in ALS_PRESETS:
            return AdaptiveScaler.from_preset(name, args.pop("format", grad_format), **args)
        return kinds[name](**args)
    except TypeError as e:
        raise ValueError(f"bad arguments for the {name} scaler: {e}") from None
