"""Named formats (ml_dtypes / OCP names), short aliases, and the :func:`format` lookup.

Each named format is a :class:`~fpsim.format.Format` instance and a module attribute, so
``fpsim.formats.float16`` and ``fpsim.format("fp16")`` are the same object.
"""

from __future__ import annotations

from fpsim.numerics.format import Format, parse_spec


def _named(name: str, e: int, m: int, **kw) -> Format:
    return Format(exp_bits=e, man_bits=m, name=name, **kw)


float64 = _named("float64", 11, 52)
float32 = _named("float32", 8, 23)
tfloat32 = _named("tfloat32", 8, 10)
float16 = _named("float16", 5, 10)
bfloat16 = _named("bfloat16", 8, 7)
float8_e5m2 = _named("float8_e5m2", 5, 2)
float8_e4m3fn = _named("float8_e4m3fn", 4, 3, specials="fn")
float8_e4m3fnuz = _named("float8_e4m3fnuz", 4, 3, bias=8, specials="fnuz")
float8_e5m2fnuz = _named("float8_e5m2fnuz", 5, 2, bias=16, specials="fnuz")
float8_e4m3b11fnuz = _named("float8_e4m3b11fnuz", 4, 3, bias=11, specials="fnuz")
float8_e3m4 = _named("float8_e3m4", 3, 4)
float8_e4m3 = _named("float8_e4m3", 4, 3)
float6_e3m2fn = _named("float6_e3m2fn", 3, 2, specials="finite")
float6_e2m3fn = _named("float6_e2m3fn", 2, 3, specials="finite")
float4_e2m1fn = _named("float4_e2m1fn", 2, 1, specials="finite")
float8_e8m0fnu = _named(
    "float8_e8m0fnu", 8, 0, bias=127, specials="fn", signed=False, subnormals=False, zero=False
)

#: Every named format, by its canonical (ml_dtypes / OCP) name, in display order.
NAMED: dict[str, Format] = {
    f.name: f
    for f in (
        float64, float32, tfloat32, float16, bfloat16,
        float8_e5m2, float8_e4m3fn, float8_e4m3fnuz, float8_e5m2fnuz, float8_e4m3b11fnuz,
        float8_e3m4, float8_e4m3,
        float6_e3m2fn, float6_e2m3fn, float4_e2m1fn, float8_e8m0fnu,
    )
}

#: Short aliases accepted by :func:`format`.
ALIASES: dict[str, str] = {
    "fp64": "float64", "double": "float64",
    "fp32": "float32", "single": "float32",
    "tf32": "tfloat32",
    "fp16": "float16", "half": "float16", "binary16": "float16",
    "bf16": "bfloat16",
    "e5m2": "float8_e5m2", "fp8_e5m2": "float8_e5m2",
    "e4m3": "float8_e4m3fn", "e4m3fn": "float8_e4m3fn", "fp8_e4m3": "float8_e4m3fn",
    "e4m3fnuz": "float8_e4m3fnuz", "e5m2fnuz": "float8_e5m2fnuz",
    "e4m3b11fnuz": "float8_e4m3b11fnuz",
    "e3m2": "float6_e3m2fn", "fp6_e3m2": "float6_e3m2fn",
    "e2m3": "float6_e2m3fn", "fp6_e2m3": "float6_e2m3fn",
    "e2m1": "float4_e2m1fn", "fp4": "float4_e2m1fn", "fp4_e2m1": "float4_e2m1fn",
    "e8m0": "float8_e8m0fnu", "e8m0fnu": "float8_e8m0fnu",
}


def format(fmt: "str | Format") -> Format:  # noqa: A001 - the public name the API promises
    """Return the :class:`Format` for a name, an alias, a spec string (``"e5m10"``) or a Format.

    Raises:
        ValueError: the name is unknown and not a valid spec; the message lists the names.
    """
    if isinstance(fmt, Format):
        return fmt
    if not isinstance(fmt, str):
        raise TypeError(f"format must be a str or Format, got {type(fmt).__name__}")
    key = fmt.strip().lower()
    key = ALIASES.get(key, key)
    if key in NAMED:
        return NAMED[key]
    try:
        return parse_spec(key)
    except ValueError as err:
        names = ", ".join(list(NAMED) + list(ALIASES))
        raise ValueError(f"{err}; known names: {names}") from None
