"""Loss scalers behind one small interface (:class:`Scaler`): none, static, dynamic (PyTorch
GradScaler semantics and variants), adaptive per-site (ALS)."""

from __future__ import annotations

from fpsim.training.scaling.adaptive import AdaptiveScaler
from fpsim.training.scaling.base import PROTOCOL, Scaler, StepStats, implements_protocol
from fpsim.training.scaling.dynamic import VARIANTS as DYNAMIC_VARIANTS
from fpsim.training.scaling.dynamic import DynamicScaler
from fpsim.training.scaling.static import NoScaler, StaticScaler

__all__ = ["AdaptiveScaler", "DYNAMIC_VARIANTS", "DynamicScaler", "NoScaler", "Scaler",
           "StaticScaler", "StepStats", "PROTOCOL", "implements_protocol", "scaler"]


def scaler(spec, grad_format="float16") -> Scaler:
    """A scaler from a spec: a Scaler; ``"none"``; ``"static:1024"``; ``"dynamic"`` or
    ``"dynamic:apex"`` (a variant of DYNAMIC_VARIANTS); ``"adaptive"``; or a dict
    ``{"name": ..., **arguments}`` (e.g. ``{"name": "adaptive", "t_uf": 1e-4}``).
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
        elif arg:
            raise ValueError(f"scaler {spec!r}: {name!r} takes no ':' argument")
        spec = {"name": name, **args}
    if not isinstance(spec, dict) or "name" not in spec:
        raise TypeError(f"a scaler is a name, a dict with 'name', or a Scaler; got {spec!r}")
    args = dict(spec)
    name = args.pop("name")
    kinds = {"none": NoScaler, "static": StaticScaler, "dynamic": DynamicScaler,
             "adaptive": AdaptiveScaler}
    if name not in kinds:
        raise ValueError(f"unknown loss scaler {name!r}; choose from {', '.join(kinds)}")
    if name == "adaptive":
        args.setdefault("format", grad_format)
    try:
        return kinds[name](**args)
    except TypeError as e:
        raise ValueError(f"bad arguments for the {name} scaler: {e}") from None
