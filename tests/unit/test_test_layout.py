"""The test harness stays in one piece: one way to start a stack and to wait (tests/support), every end-to-end file
marked `e2e`, and tests that observe the product through its public surface.

Read from the source (no test is imported or run), so a file that breaks a rule fails here by name.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
SUPPORT = TESTS / "support"
# The harness's helpers, each defined once in tests/support: a second definition elsewhere is a fork of it.
HARNESS_HELPERS = {"entry_for", "wait_until", "wait_until_async", "until", "make_stack", "write_models_yaml"}
GONE_MODULES = {"tests.e2e.stack", "tests.e2e.engine_process", "tests.conftest"}


def _modules(folder: Path) -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text(encoding="utf-8")) for path in sorted(folder.rglob("*.py"))}


def _imported(path: Path, tree: ast.Module) -> set[str]:
    """Absolute names of the modules `tree` imports from (relative imports resolved against `path`)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            names.add(module)
            names |= {f"{module}.{alias.name}" for alias in node.names}
    return names


def _marks_e2e(tree: ast.Module) -> bool:
    """A module-level `pytestmark` that is, or lists, `pytest.mark.e2e`."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "pytestmark" for t in node.targets):
            values = node.value.elts if isinstance(node.value, (ast.List, ast.Tuple)) else [node.value]
            return any(ast.unparse(value) == "pytest.mark.e2e" for value in values)
    return False


def test_every_end_to_end_file_is_marked_e2e():
    unmarked = [
        path.relative_to(ROOT).as_posix()
        for path, tree in _modules(TESTS / "e2e").items()
        if path.name.startswith("test_") and not _marks_e2e(tree)
    ]
    assert not unmarked, f"tests/e2e files without `pytestmark = pytest.mark.e2e`: {unmarked}"


def test_nothing_imports_the_old_harness_modules():
    offenders = [
        f"{path.relative_to(ROOT).as_posix()} imports {name}"
        for folder in (TESTS, ROOT / "benchmarks")
        for path, tree in _modules(folder).items()
        for name in sorted(_imported(path, tree) & GONE_MODULES)
    ]
    assert not offenders, f"the harness is tests/support (stack.py, processes.py, models_yaml.py): {offenders}"


def test_harness_helpers_are_defined_once_in_tests_support():
    forks = [
        f"{path.relative_to(ROOT).as_posix()}:{node.lineno} defines {node.name}"
        for path, tree in _modules(TESTS).items()
        if SUPPORT not in path.parents
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in HARNESS_HELPERS
    ]
    assert not forks, f"use the one in tests/support instead: {forks}"
