"""The package's layers, checked on its source: lower layers never import higher ones, no import cycles,
imports at the top of modules, and command-line code (argparse, print) only in lensml/cli.

The layer order is the architecture (README, "How the code is laid out"); a module may import its own
layer and the ones below. Imports inside functions are allowed only for the optional dependencies
listed in LAZY_OK, each of which the module comments where it imports it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lensml"

#: Low to high. A module belongs to the first entry whose prefix names it (exact module or package).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("lensml", "lensml.errors", "lensml.io", "lensml.languages", "lensml.progress", "lensml.distributed",
              "lensml.provenance", "lensml.config", "lensml.tracking")),
    ("runtime", ("lensml.runtime", "lensml.data")),
    ("lens", ("lensml.lens",)),
    ("training", ("lensml.training",)),
    ("evaluation", ("lensml.evaluation",)),
    ("methods", ("lensml.methods",)),
    ("results", ("lensml.results",)),
    ("export", ("lensml.export",)),
    ("analysis", ("lensml.analysis",)),
    ("recipes", ("lensml.recipes",)),
    ("cli", ("lensml.cli",)),
]
#: Optional or environment-dependent packages a function may import lazily (see each module's comment).
LAZY_OK = {"datasets", "pyarrow", "fasttext", "gcld3", "httpx2", "huggingface_hub", "matplotlib", "lingua",
           "tensorboard", "wandb", "mlflow"}  # the experiment trackers of --report-to (lensml.tracking)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    best = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or (prefix != "lensml" and module.startswith(prefix + "."))) and \
                    (best is None or len(prefix) > best[1]):
                best = (rank, len(prefix))
    assert best is not None, f"{module} is in no layer: add it to LAYERS in {__file__}"
    return best[0]


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _top_level_imports(tree: ast.Module) -> list[ast.stmt]:
    """Imports executed when the module is imported (a TYPE_CHECKING block is not)."""
    out = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
        elif isinstance(node, ast.Try):
            out += [n for n in node.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        elif isinstance(node, ast.If) and not _is_type_checking(node):
            out += [n for n in node.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    return out


def _targets(node: ast.stmt, importer: str) -> list[str]:
    """The lensml modules an import statement loads (`from lensml.x import y` is lensml.x.y when that is a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "lensml"]
    base = node.module or ""
    if node.level:
        package = importer if MODULES[importer].name == "__init__.py" else importer.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    if base.split(".")[0] != "lensml":
        return []
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[name] = {t for node in _top_level_imports(tree) for t in _targets(node, name) if t != name}
    return graph


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
            for m, targets in graph.items() for t in sorted(targets) if layer_of(t) > layer_of(m)]


def import_cycles(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def test_every_module_is_in_a_layer_and_imports_only_its_own_or_lower_layers():
    wrong = upward_imports(import_graph())
    assert not wrong, "lower layers import higher ones:\n" + "\n".join(wrong)


def test_no_import_cycles():
    cycles = import_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checks_see_a_violation():
    """Not vacuous: the graph is read (relative and `from lensml import x` imports resolved), and an upward
    import and a cycle planted in a copy of it are found."""
    graph = import_graph()
    assert "lensml.runtime.models" in graph["lensml.runtime.topblock"]
    assert _targets(ast.parse("from lensml import distributed").body[0], "lensml.training") == ["lensml.distributed"]
    assert _targets(ast.parse("from . import quick").body[0], "lensml.evaluation.tasks") == ["lensml.evaluation.quick"]
    planted = {m: set(t) for m, t in graph.items()}
    planted["lensml.runtime.models"].add("lensml.cli")
    assert upward_imports(planted) == ["lensml.runtime.models (runtime) imports lensml.cli (cli)"]
    planted["lensml.runtime.shared_prefix"].add("lensml.runtime.topblock")
    assert any("lensml.runtime.topblock" in c and "lensml.runtime.shared_prefix" in c for c in import_cycles(planted))


def test_imports_are_at_the_top_except_optional_dependencies():
    lazy = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        allowed = {id(n) for n in _top_level_imports(tree)}
        allowed |= {id(n) for node in tree.body if isinstance(node, ast.If) and _is_type_checking(node)
                    for n in node.body}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in allowed:
                roots = {a.name.split(".")[0] for a in node.names} if isinstance(node, ast.Import) \
                    else {(node.module or "").split(".")[0]}
                if not roots <= LAZY_OK:
                    lazy.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)}")
    assert not lazy, "imports inside functions (move them to the top of the module):\n" + "\n".join(lazy)


def test_command_line_code_lives_only_in_cli():
    found = []
    for name, path in MODULES.items():
        if layer_of(name) == len(LAYERS) - 1:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} print()")
            if isinstance(node, ast.Import) and any(a.name == "argparse" for a in node.names):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} import argparse")
    assert not found, "the library prints or parses arguments outside lensml/cli:\n" + "\n".join(found)


@pytest.mark.parametrize("chunk", [0, 1])
def test_every_module_imports_in_a_fresh_interpreter(chunk):
    """Each module imported first in its own process would be slow; two processes each import half of them,
    in an order where every module is imported before the modules that import it would pull it in."""
    names = [m for m in sorted(MODULES) if not m.endswith("__main__")][chunk::2]  # __main__ runs the CLI
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    done = subprocess.run([sys.executable, "-c", code, *names], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
