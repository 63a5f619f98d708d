"""The layering of docs/ARCHITECTURE.md, checked on the source: a stage imports from
stages to its left (or its own rank), never from one to its right, and never another
stage's private modules."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "flopgap"
# rank of each stage, left to right (equal ranks may not import each other's privates either)
RANK = {"models": 0, "count": 1, "timing": 2, "machine": 3, "explain": 4, "generate": 5, "variants": 6,
        "study": 6, "report": 7, "store": 7, "cli": 8, "pytest_plugin": 8, "__main__": 9}   # python -m flopgap


ROOT_RANK = -1  # the shared modules at package level (flopgap._units, flopgap.errors ...) import no stage


def _stage(path: Path) -> str:
    rel = path.relative_to(SRC).parts
    name = rel[0].removesuffix(".py")
    return name if name in RANK else "(root)"


def _rank(stage: str) -> int:
    return RANK.get(stage, ROOT_RANK)


def _imports(path: Path):
    """(line, dotted name) of every import, ``from a.b import c`` giving both ``a.b`` and
    ``a.b.c``, relative imports resolved against the module's package."""
    package = ("flopgap",) + path.relative_to(SRC).parent.parts
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ((base,) if base else ()))
            yield node.lineno, base
            for a in node.names:
                yield node.lineno, f"{base}.{a.name}"


def test_no_stage_imports_a_stage_to_its_right():
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        me = _stage(path)
        for line, mod in _imports(path):
            parts = mod.split(".")
            if parts[0] != "flopgap" or len(parts) < 2 or parts[1] not in RANK or parts[1] == me:
                continue
            other = parts[1]
            if RANK[other] > _rank(me) or (RANK[other] == _rank(me) and other != me):
                bad.append(f"{path.relative_to(SRC)}:{line} ({me}) imports {mod} ({other})")
    assert not bad, "\n".join(bad)


def test_no_stage_reaches_into_another_stages_private_modules():
    """A stage asks another for a public name (its package's ``__all__``), never for one of
    its ``_private`` modules: the edges between stages stay visible in the ``__init__``s."""
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        me = _stage(path)
        for line, mod in _imports(path):
            parts = mod.split(".")
            if (parts[0] == "flopgap" and len(parts) > 2 and parts[1] in RANK and parts[1] != me
                    and parts[2].startswith("_")):
                bad.append(f"{path.relative_to(SRC)}:{line} imports {mod}")
    assert not bad, "\n".join(bad)


def test_the_cli_starts_without_torch():
    """``flopgap --help`` and every command's ``--help`` answer at once: torch is imported
    by the commands that run a model, when they run it."""
    import subprocess
    import sys

    code = "import sys, flopgap.cli; print('torch' in sys.modules)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "False", p.stderr
