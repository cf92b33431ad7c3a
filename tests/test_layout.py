"""The shape of the code: thin entry points, no import cycles, Hydra at the edges, small modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "lit_sft"
ENTRY_POINTS = {"train", "evaluate", "chat", "serve"}
# The Hydra edge: only these may import hydra or omegaconf.
EDGE = ("lit_sft.cli",)
MAX_LINES = 300


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, skip_main_block: bool = False) -> set[str]:
    """Every module `path` imports at any depth (TYPE_CHECKING blocks and functions included);
    with `skip_main_block`, not the lazy imports of its `if __name__ == "__main__":` block."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if skip_main_block:
        tree.body = [
            node
            for node in tree.body
            if not (isinstance(node, ast.If) and "__main__" in ast.unparse(node.test))
        ]
    package = module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *filter(None, [base])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def import_graph() -> dict[str, set[str]]:
    """lit_sft's modules and the lit_sft modules each imports (a package stands for its
    `__init__`)."""
    modules = package_modules()
    return {
        name: {t for t in imported_modules(path, skip_main_block=True) if t in modules} - {name}
        for name, path in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one_and_only_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_inside_lit_sft() -> None:
    assert find_cycle(import_graph()) is None


def test_no_test_or_library_module_imports_an_entry_point_script() -> None:
    offenders = [
        f"{path.relative_to(REPO)} imports {name}"
        for folder in ("tests", "lit_sft", "benchmarks")
        for path in (REPO / folder).rglob("*.py")
        for name in imported_modules(path)
        if name in ENTRY_POINTS
    ]
    assert offenders == []


def test_entry_points_import_no_other_entry_point() -> None:
    for script in ENTRY_POINTS:
        path = REPO / f"{script}.py"
        if path.is_file():
            assert not imported_modules(path) & (ENTRY_POINTS - {script}), script


def test_only_the_cli_edge_imports_hydra_or_omegaconf() -> None:
    offenders = [
        name
        for name, path in package_modules().items()
        if not name.startswith(EDGE)
        and any(m.split(".")[0] in ("hydra", "omegaconf") for m in imported_modules(path))
    ]
    assert offenders == []


@pytest.mark.parametrize("folder", ["lit_sft", "benchmarks"])
def test_no_module_is_over_300_lines(folder: str) -> None:
    long = {
        str(p.relative_to(REPO)): n
        for p in (REPO / folder).rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}
