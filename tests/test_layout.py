"""The package layout's rules, read from the source (no imports): DESIGN.md, "Package layout".

* no import cycle between modules (a package's own ``__init__`` re-exporting its modules aside);
* gradcam_tf never imports msdnet_tf;
* no private name (``_x``) and no private module imported across modules;
* no module over 600 lines;
* each package ``__init__`` and each module declares ``__all__``.
"""

import ast
import os
import pathlib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("msdnet_tf", "gradcam_tf")
MAX_LINES = 600


def _modules() -> dict[str, str]:
    modules = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    modules[module.removesuffix(".__init__")] = path
    return modules


MODULES = _modules()


def _imports(path: str) -> list[tuple[str, list[str]]]:
    """(module, imported names) of every absolute import of the project's packages."""
    found = []
    for node in ast.walk(ast.parse(pathlib.Path(path).read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in PACKAGES:
                found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    found.append((alias.name, []))
    return found


def _graph() -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        edges = set()
        for target, names in _imports(path):
            candidates = [target] + [f"{target}.{name}" for name in names]
            edges |= {c for c in candidates if c in MODULES and c != module}
        # A package re-exporting its own modules is not a cycle.
        graph[module] = {e for e in edges if not e.startswith(module + ".")}
    return graph


def test_the_rules_see_every_subpackage():
    for package in ("model", "data", "training", "evaluation", "runs", "serving", "visualize"):
        assert f"msdnet_tf.{package}" in MODULES


def test_no_import_cycles():
    graph, cycles = _graph(), []
    state: dict[str, int] = {}

    def visit(module, stack):
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(stack[stack.index(target) :] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_gradcam_tf_never_imports_msdnet_tf():
    offenders = [
        module
        for module, path in MODULES.items()
        if module.startswith("gradcam_tf")
        and any(target.startswith("msdnet_tf") for target, _ in _imports(path))
    ]
    assert offenders == []


def test_no_private_name_is_imported_across_modules():
    offenders = []
    for module, path in MODULES.items():
        for target, names in _imports(path):
            private = [n for n in names if n.startswith("_") and n != "__version__"]
            if any(part.startswith("_") for part in target.split(".")) or private:
                offenders.append(f"{module}: from {target} import {names}")
    assert offenders == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_are_small_and_declare_their_api(module):
    text = pathlib.Path(MODULES[module]).read_text(encoding="utf-8")
    assert text.count("\n") <= MAX_LINES, f"{module} has over {MAX_LINES} lines"
    names = {
        target.id
        for node in ast.parse(text).body
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name)
    }
    assert "__all__" in names, f"{module} does not declare __all__"
