"""The format name registry as plain data: canonical names with their spec strings, and aliases.

This is the one place names live. It imports nothing, so both :mod:`fpsim.numerics.format`
(whose :attr:`Format.spec` must avoid spellings that an alias claims for another format) and
:mod:`fpsim.numerics.formats` (which builds the named :class:`Format` objects and the
:func:`fpsim.format` lookup from it) read it without importing each other.
"""

from __future__ import annotations

#: Every named format (ml_dtypes / OCP names), in display order, with its canonical spec string
#: (the grammar of :func:`fpsim.numerics.format.parse_spec`; each equals ``Format.spec`` of the
#: format, which ``tests/test_format.py`` checks).
NAMED_SPECS: dict[str, str] = {
    "float64": "e11m52",
    "float32": "e8m23",
    "tfloat32": "e8m10",
    "float16": "e5m10",
    "bfloat16": "e8m7",
    "float8_e5m2": "e5m2",
    "float8_e4m3fn": "e4m3fn",
    "float8_e4m3fnuz": "e4m3b8fnuz",
    "float8_e5m2fnuz": "e5m2b16fnuz",
    "float8_e4m3b11fnuz": "e4m3b11fnuz",
    "float8_e3m4": "e3m4",
    "float8_e4m3": "e4m3ieee",
    "float6_e3m2fn": "e3m2finite",
    "float6_e2m3fn": "e2m3finite",
    "float4_e2m1fn": "e2m1finite",
    "float8_e8m0fnu": "ue8m0fn-nozero",
}

#: Short aliases accepted by :func:`fpsim.format`, each mapped to a key of :data:`NAMED_SPECS`.
#: An alias wins over the spec grammar: ``"e4m3"`` is ``float8_e4m3fn``, not the ieee ``e4m3``.
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


def resolve(key: str) -> str:
    """The spec string that the lowercase, stripped ``key`` stands for: an alias or a name
    becomes its format's spec string, anything else is returned unchanged (to be parsed)."""
    key = ALIASES.get(key, key)
    return NAMED_SPECS.get(key, key)
