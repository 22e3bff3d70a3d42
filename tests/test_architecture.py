"""The package's shape (docs/architecture.md): stages whose imports point one way, no import circles,
and the readers of a run directory that never load torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "labelaudit"
#: The stages, lowest first; modules at the package's root (errors, reports, _atomic, resources,
#: _interrupt) are stage 0, below all of them. ``labelaudit/__init__.py`` is the facade over all.
STAGES = ("data", "nets", "train", "audit", "runs", "pipeline", "review", "cli")


def _module(file: Path) -> str:
    parts = list(file.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every module's imports of labelaudit modules, at module level or inside functions."""
    found: dict[str, set[str]] = {}
    for file in sorted(PACKAGE.rglob("*.py")):
        module = _module(file)
        package = module if file.name == "__init__.py" else module.rsplit(".", 1)[0]
        targets = found.setdefault(module, set())
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                if node.module:
                    targets.add(f"{base}.{node.module}")
                else:  # from . import x: a module of the package, or a name of its __init__
                    for alias in node.names:
                        name = f"{base}.{alias.name}"
                        targets.add(
                            name
                            if (PACKAGE.parent / name.replace(".", "/")).with_suffix(".py").exists()
                            or (PACKAGE.parent / name.replace(".", "/")).is_dir()
                            else base
                        )
            elif isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(node, "level", 0):
                names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                targets.update(n for n in names if n and n.startswith("labelaudit"))
    return found


def _stage(module: str) -> int:
    parts = module.split(".")
    return STAGES.index(parts[1]) + 1 if len(parts) > 1 and parts[1] in STAGES else 0


def test_imports_point_down_the_stages():
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in _imports().items()
        if module not in ("labelaudit", "labelaudit.__main__")
        for target in targets
        if _stage(target) > _stage(module)
    )
    assert upward == []


def test_no_import_circles():
    imports = _imports()  # once: parsing the package per target took two minutes
    graph = {
        m: {t for t in targets if t in imports and t != m}
        for m, targets in imports.items()
        if m != "labelaudit"
    }
    for module in graph:
        graph[module].discard("labelaudit")
    seen, stack, circles = set(), [], []

    def visit(module: str) -> None:
        if module in stack:
            circles.append(stack[stack.index(module) :] + [module])
            return
        if module in seen:
            return
        seen.add(module)
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            visit(target)
        stack.pop()

    for module in sorted(graph):
        visit(module)
    assert circles == []


@pytest.mark.parametrize(
    "module",
    [
        "labelaudit.runs.scan_run",
        "labelaudit.review.apply",
        "labelaudit.review.export",
        "labelaudit.review.page",
        "labelaudit.train.config",
        "labelaudit.cli",
    ],
)
def test_reading_a_run_and_the_command_line_do_not_load_torch(module):
    done = subprocess.run(
        [sys.executable, "-c", f"import sys, {module}; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_one_version():
    from importlib.metadata import version

    import labelaudit

    pyproject = (PACKAGE.parent / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and '\nversion = "' not in pyproject
    assert version("labelaudit") == labelaudit.__version__
