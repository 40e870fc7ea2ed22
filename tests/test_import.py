"""``import fpsim`` stays light: no Numba, no scipy, no training stack until first use; the lazy
public names resolve to the same objects as a direct import."""

from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys

import pytest

#: Modules that ``import fpsim`` must not load (checked in ``sys.modules`` of a fresh process).
HEAVY = ("numba", "numba.cuda", "scipy", "fpsim.kernels", "fpsim.engine", "fpsim.training")


def _fresh(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON value, which is returned."""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def test_import_fpsim_loads_no_numba_scipy_or_training():
    loaded = _fresh("import sys, json, fpsim; "
                    f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    assert loaded == []


def test_eager_names_need_no_kernels():
    # Formats, modes, flags and Stats work without loading the kernels.
    loaded = _fresh("import sys, json, fpsim; s = fpsim.format('fp16').spec; "
                    "st = fpsim.Stats() + fpsim.Stats(); f = fpsim.Flag.INVALID | fpsim.Event.NAN; "
                    "print(json.dumps([s, 'numba' in sys.modules]))")
    assert loaded == ["e5m10", False]


@pytest.mark.parametrize("name,module,attr", [
    ("nn", "fpsim.training.nn", None), ("optim", "fpsim.training.optim", None),
    ("precision", "fpsim.training.precision", None), ("engine", "fpsim.engine", None),
    ("instrument", "fpsim.training.instrument", None),
    ("Policy", "fpsim.training.precision", "Policy"),
    ("Recorder", "fpsim.training.instrument", "Recorder"),
    ("recording", "fpsim.training.instrument", "recording"),
    ("quantize", "fpsim.numerics.convert", "quantize"), ("add", "fpsim.numerics.arith", "add"),
    ("matmul", "fpsim.numerics.accumulation", "matmul"),
])
def test_lazy_names_are_the_real_objects(name, module, attr):
    import importlib

    import fpsim

    target = importlib.import_module(module)
    if attr is not None:
        target = getattr(target, attr)
    assert getattr(fpsim, name) is target
    exec(f"from fpsim import {name} as got", globals())
    assert globals()["got"] is target
    assert name in dir(fpsim)


def test_every_public_name_resolves():
    import fpsim

    for name in fpsim.__all__:
        assert getattr(fpsim, name) is not None, name


def test_unknown_attribute_is_an_attribute_error():
    import fpsim

    with pytest.raises(AttributeError, match="no_such_thing"):
        fpsim.no_such_thing  # noqa: B018


def test_format_module_does_not_import_formats():
    # The name registry is data (numerics/names.py); format.py must not import formats.py, which
    # imports format.py (the cycle this replaced).
    src = pathlib.Path(__file__).resolve().parents[1] / "fpsim" / "numerics" / "format.py"
    imported = set()
    for node in ast.walk(ast.parse(src.read_text())):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module)
            imported.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    assert "fpsim.numerics.formats" not in imported
