"""Named formats (ml_dtypes / OCP names), short aliases, and the :func:`format` lookup.

Each named format is a :class:`~fpsim.numerics.format.Format` instance and a module attribute, so
``fpsim.formats.float16`` and ``fpsim.format("fp16")`` are the same object. The names, their
spec strings and the aliases are data in :mod:`fpsim.numerics.names`, which
:mod:`fpsim.numerics.format` reads too (for :attr:`Format.spec`) without importing this module.
"""

from __future__ import annotations

from fpsim.numerics import names
from fpsim.numerics.format import Format, is_spec, parse_spec
from fpsim.numerics.names import ALIASES


def _named(name: str) -> Format:
    """The named format ``name``: its spec string in :data:`~fpsim.numerics.names.NAMED_SPECS`
    parsed by the grammar, with the display name attached."""
    return parse_spec(names.NAMED_SPECS[name]).replace(name=name)


float64 = _named("float64")
float32 = _named("float32")
tfloat32 = _named("tfloat32")
float16 = _named("float16")
bfloat16 = _named("bfloat16")
float8_e5m2 = _named("float8_e5m2")
float8_e4m3fn = _named("float8_e4m3fn")
float8_e4m3fnuz = _named("float8_e4m3fnuz")
float8_e5m2fnuz = _named("float8_e5m2fnuz")
float8_e4m3b11fnuz = _named("float8_e4m3b11fnuz")
float8_e3m4 = _named("float8_e3m4")
float8_e4m3 = _named("float8_e4m3")
float6_e3m2fn = _named("float6_e3m2fn")
float6_e2m3fn = _named("float6_e2m3fn")
float4_e2m1fn = _named("float4_e2m1fn")
float8_e8m0fnu = _named("float8_e8m0fnu")

#: Every named format, by its canonical (ml_dtypes / OCP) name, in display order (that of
#: :data:`~fpsim.numerics.names.NAMED_SPECS`).
NAMED: dict[str, Format] = {name: globals()[name] for name in names.NAMED_SPECS}


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
        if is_spec(key):  # understood as a spec: the range error says what is wrong
            raise
        known = ", ".join(list(NAMED) + list(ALIASES))
        raise ValueError(f"{err}; known names: {known}") from None
