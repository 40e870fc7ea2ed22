"""The user documentation stays true to the software: README examples run as pasted, no user doc
names issue numbers or paths outside the repository, and every ``fpsim.<name>`` the reference
pages mention exists.

Each check is a small function over text, so ``test_checks_fail_on_broken_docs`` can show that it
catches a deliberately broken string; the tests over the real files then call the same functions.
"""

from __future__ import annotations

import importlib
import pathlib
import re
import subprocess
import sys
import types

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: Every user doc: the README and the pages under docs/ (loss_scaling.md included).
USER_DOCS = [README, *sorted((ROOT / "docs").rglob("*.md"))]
#: The pages whose backticked ``fpsim.<name>`` paths must resolve.
API_DOCS = [README, ROOT / "docs" / "formats.md"]

#: A fenced code block: its info string (``python``, ``bash``, ...), its body and where it starts.
_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)

#: What a user doc must not contain: development history (issue numbers) and paths that exist
#: only on the machine the docs were written on, outside the repository.
FORBIDDEN = {
    "issue number": re.compile(r"\bissues?\s*#?\s*\d", re.I),
    "next issue": re.compile(r"\bnext\s+issue\b", re.I),
    "path outside the repository (../shared)": re.compile(r"\.\./shared\b"),
    "absolute path /work/": re.compile(r"/work/"),
}

#: An attribute path ``fpsim.a.b`` inside inline code: it starts at ``fpsim`` that is not part of
#: a longer word, a dotted name or a file path (``fpsim/numerics/format.py`` has no dot after
#: ``fpsim``, so it never matches), and stops before a call's ``(``, a blank or punctuation.
#: Bare class attributes of the public classes (``Format.spec``, ``Stats.exp_edges``) are
#: resolved on ``fpsim`` too.
_API_PATH = re.compile(
    r"(?<![\w./-])(?:fpsim|Format|Stats|RoundMode|Overflow|Event|Flag)(?:\.[A-Za-z_]\w*)+")

#: Backticked ``fpsim.<...>`` strings that are not attribute paths (say a file name such as
#: ``fpsim.egg-info``). Empty: every match in the checked pages is an attribute path. Add an
#: entry only with a comment saying what it is instead.
NOT_ATTRIBUTES: frozenset[str] = frozenset()

#: Generous wall-clock limit for one README block: warm, each runs in about a second; the first
#: run on a cold Numba cache compiles the kernels it calls, which takes minutes on 2 busy cores.
BLOCK_TIMEOUT_S = 600


# ---- the checks, as functions over text ---------------------------------------------------------
def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(first line number, code)`` of every fenced block whose info string is ``python``."""
    return [(text.count("\n", 0, m.start()) + 1, m.group(2)) for m in _FENCE.finditer(text)
            if m.group(1).strip().lower() == "python"]


def run_block(code: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    """Run ``code`` as a script in a fresh interpreter with working directory ``cwd``."""
    script = cwd / "block.py"
    script.write_text(code)
    return subprocess.run([sys.executable, str(script)], cwd=cwd, capture_output=True,
                          text=True, timeout=BLOCK_TIMEOUT_S)


def forbidden_hits(text: str) -> list[str]:
    """``"line N: <what>: <line>"`` for every line with a :data:`FORBIDDEN` pattern."""
    return [f"line {n}: {what}: {line.strip()}"
            for n, line in enumerate(text.splitlines(), 1)
            for what, pattern in FORBIDDEN.items() if pattern.search(line)]


def api_paths(text: str) -> list[str]:
    """The attribute paths (:data:`_API_PATH`) in inline code spans, in order, without repeats.

    Fenced blocks are cut out first, so that their triple backticks cannot pair with inline ones
    (the README's Python blocks are executed by their own test). Inline spans may wrap a line.
    """
    prose = _FENCE.sub("", text)
    found = (m.group(0) for span in re.findall(r"`([^`]+)`", prose)
             for m in _API_PATH.finditer(span))
    return [p for p in dict.fromkeys(found) if p not in NOT_ATTRIBUTES]


def resolve(path: str):
    """The object that ``path`` names, starting from the imported ``fpsim`` package.

    ``Format.spec`` is read as ``fpsim.Format.spec``. A name that is not yet an attribute of a
    *module* is imported as its submodule (``fpsim.reference``, ``fpsim.validate.quantize``:
    subpackages load on first import, to keep ``import fpsim`` light); on anything else, such as
    the function ``fpsim.format``, a missing attribute is an error.

    Raises:
        AttributeError or ImportError: the path does not resolve.
    """
    import fpsim

    parts = path.split(".")
    if parts[0] != "fpsim":
        parts = ["fpsim", *parts]
    obj = fpsim
    for i, name in enumerate(parts[1:], start=2):
        try:
            obj = getattr(obj, name)
        except AttributeError:
            if not isinstance(obj, types.ModuleType):
                raise
            obj = importlib.import_module(".".join(parts[:i]))
    return obj


def unresolved(paths: list[str]) -> list[str]:
    """``"path: error"`` for every path that :func:`resolve` cannot resolve."""
    bad = []
    for p in paths:
        try:
            resolve(p)
        except (AttributeError, ImportError) as e:
            bad.append(f"{p}: {type(e).__name__}: {e}")
    return bad


# ---- the tests over the real files --------------------------------------------------------------
README_BLOCKS = python_blocks(README.read_text())


def test_readme_has_python_blocks():
    # Guards the parametrization below: an empty list would run (and prove) nothing.
    assert len(README_BLOCKS) >= 2, "README.md lost its ```python examples (or the fence regex broke)"


@pytest.mark.parametrize("line,code", README_BLOCKS, ids=[f"README-line-{n}" for n, _ in README_BLOCKS])
def test_readme_python_block_runs_as_pasted(line, code, tmp_path):
    res = run_block(code, tmp_path)
    assert res.returncode == 0, (
        f"README.md line {line}: the block fails as pasted (exit {res.returncode})\n"
        f"--- code\n{code}--- stderr\n{res.stderr[-3000:]}")


@pytest.mark.parametrize("doc", USER_DOCS, ids=[str(p.relative_to(ROOT)) for p in USER_DOCS])
def test_user_doc_has_no_issue_numbers_or_outside_paths(doc):
    hits = forbidden_hits(doc.read_text())
    assert not hits, f"{doc.relative_to(ROOT)}:\n" + "\n".join(hits)


@pytest.mark.parametrize("doc", API_DOCS, ids=[str(p.relative_to(ROOT)) for p in API_DOCS])
def test_backticked_fpsim_names_resolve(doc):
    paths = api_paths(doc.read_text())
    assert paths, f"{doc.relative_to(ROOT)} names no fpsim attribute (or the regex broke)"
    bad = unresolved(paths)
    assert not bad, f"{doc.relative_to(ROOT)}: names that do not exist:\n" + "\n".join(bad)


# ---- the checks catch what they are for ---------------------------------------------------------
def test_checks_fail_on_broken_docs(tmp_path):
    # (a) a block using a name it never defines fails, one that defines it passes.
    broken = "Text.\n\n```python\nprint(x)\n```\n\n```bash\nexit 1\n```\n"
    assert [c for _, c in python_blocks(broken)] == ["print(x)\n"]
    assert run_block("print(x)\n", tmp_path).returncode != 0
    assert run_block("x = 1\nprint(x)\n", tmp_path).returncode == 0
    # (b) history and outside paths, whatever the case; ordinary words pass.
    for line in ("Loss scaling (next issue)", "as in issue 3", "(Issue #12)",
                 "see ../shared/specs/loss-scaling.md", "in /work/main/fpsim"):
        assert forbidden_hits(line), line
    assert forbidden_hits("Tissue 3, a known issue, ../docs/x.md and work/ here") == []
    # (c) a misspelled or invented name fails; real ones, calls and file paths pass.
    text = ("`fpsim.format.parse_spec` and `fpsim.formats.parse_spec(s)`, `Format.spec`, "
            "`fpsim.quantize(x, fmt)`, `fpsim/numerics/format.py`, `python -m fpsim`, "
            "`Stats.no_such_field`\n\n```python\nfpsim.not_checked_here\n```\n")
    paths = api_paths(text)
    assert paths == ["fpsim.format.parse_spec", "fpsim.formats.parse_spec", "Format.spec",
                     "fpsim.quantize", "Stats.no_such_field"]
    assert [b.split(":")[0] for b in unresolved(paths)] == ["fpsim.format.parse_spec",
                                                          "Stats.no_such_field"]
    assert unresolved(["fpsim.backend.cuda_module"]), "a module path that does not exist"
