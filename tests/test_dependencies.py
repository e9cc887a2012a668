"""Every third-party module that mammosynth imports, at the top of a file or lazily inside a
function, is a core dependency in pyproject.toml, or is listed below as optional and imported
under a guard that turns its absence into a message. So a plain `pip install mammosynth` runs
every command (`demo` and `study serve` once crashed on fastapi, then only an extra)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "mammosynth"

#: Imported only where their absence is caught and explained; never needed by the core flow.
OPTIONAL = {
    "torch.utils.tensorboard": "TensorBoard logging beside metrics.jsonl (trainer)",
    "tifffile": "float or exotic TIFFs that Pillow cannot decode (data.imaging)",
    "torchvision": "the RetinaNet downstream detector (evaluate --detector retinanet)",
}
_GUARDS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


def _imports() -> list[tuple[str, Path, int, bool]]:
    """(module, file, line, guarded) for every absolute import under src/mammosynth."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        guarded_lines: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
                for stmt in node.body:
                    guarded_lines.update(n.lineno for n in ast.walk(stmt) if hasattr(n, "lineno"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found += [(name, path, node.lineno, node.lineno in guarded_lines) for name in names]
    return found


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(t, ast.Name) and t.id in _GUARDS for t in types)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _core_dependencies() -> set[str]:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_normalise(re.match(r"[A-Za-z0-9_.\-]+", req).group(0)) for req in project["dependencies"]}


def _optional(module: str) -> str | None:
    return next((o for o in OPTIONAL if module == o or module.startswith(o + ".")), None)


def test_every_third_party_import_is_a_core_dependency_or_guarded():
    core = _core_dependencies()
    dists = importlib.metadata.packages_distributions()
    problems = []
    for module, path, line, guarded in _imports():
        top = module.split(".")[0]
        where = f"{path.relative_to(ROOT)}:{line} imports {module}"
        if top in sys.stdlib_module_names or top == "mammosynth":
            continue
        if _optional(module) is not None:
            continue  # checked below
        names = {_normalise(d) for d in dists.get(top, [])}
        if not names:
            problems.append(f"{where}: no installed distribution provides it")
        elif not names & core:
            problems.append(f"{where}: from {', '.join(sorted(names))}, which is not in [project] dependencies")
    assert not problems, "\n".join(problems)


def test_optional_modules_are_imported_under_a_guard_in_each_file_that_uses_them():
    uses: dict[tuple[str, Path], list[bool]] = {}
    for module, path, _, guarded in _imports():
        key = _optional(module)
        if key is not None:
            uses.setdefault((key, path), []).append(guarded)
    assert {k for k, _ in uses} == set(OPTIONAL), "an optional module is no longer used: drop it from OPTIONAL"
    unguarded = [f"{path.relative_to(ROOT)} imports {key} without catching ImportError"
                 for (key, path), guards in uses.items() if not any(guards)]
    assert not unguarded, "\n".join(unguarded)


def test_the_study_extra_stays_an_alias():
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras.get("study") == []  # `pip install mammosynth[study]` keeps working, and adds nothing
