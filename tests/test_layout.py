"""The house rules, checked: imports flow one way (recipes → entry points → features → core → leaves, no feature
importing another), no import cycles, hfopt never imports recipes or tests, every public module has __all__ and a
one-line docstring, and no recipe holds logic another recipe repeats."""

import ast
from collections import defaultdict
from pathlib import Path

import pytest

from tests.testing_utils import ROOT

LAYERS = {
    "entry": {"cli", "commands"},
    # compose features: the compression pipeline (distillation and compression), the search over it, and a
    # recipe's shared steps
    "workflow": {"pipeline", "optimize", "workflow"},
    "feature": {"callbacks", "distillation", "compression", "study"},
    "core": {"args", "data", "run", "models", "architectures", "metrics", "latency", "accelerate_config"},
    "leaf": {"errors", "hardware", "schedules", "augmentation", "tokenization", "quiet", "trainer_internals"},
}
RANK = {"entry": 4, "workflow": 3, "feature": 2, "core": 1, "leaf": 0}
LAYER_OF = {room: layer for layer, rooms in LAYERS.items() for room in rooms}
MODULES = sorted((ROOT / "hfopt").rglob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The hfopt modules a file imports (absolute names), at any place in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "hfopt" or target.startswith("hfopt."):
                found |= {f"{target}.{a.name}" for a in node.names} if node.module is None else {target}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("hfopt")}
    return found


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "hfopt"


def test_every_room_has_a_layer():
    rooms = {room(module_name(p)) for p in MODULES} - {"hfopt"}
    assert rooms <= set(LAYER_OF), f"rooms without a layer: {rooms - set(LAYER_OF)}"


def test_imports_flow_one_way_and_features_never_import_each_other():
    wrong = []
    for path in MODULES:
        source = room(module_name(path))
        if source == "hfopt":  # the package's public names
            continue
        for target in map(room, imports(path)):
            if target in (source, "hfopt"):
                continue
            a, b = LAYER_OF[source], LAYER_OF[target]
            if RANK[b] > RANK[a] or (a == b == "feature") or (a == b == "leaf" and target != "errors"):
                wrong.append(f"{module_name(path)} ({a}) imports {target} ({b})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_between_modules():
    graph = defaultdict(set)
    names = {module_name(p) for p in MODULES}
    for path in MODULES:
        for target in imports(path):
            while target not in names and "." in target:  # `from .x import name` names a module or an object
                target = target.rsplit(".", 1)[0]
            if target != module_name(path) and not path.name == "__init__.py":
                graph[module_name(path)].add(target)
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph[node]:
            if nxt.endswith("__init__") or nxt == "hfopt":
                continue
            if state.get(nxt) == 1:
                pytest.fail(f"import cycle: {' → '.join([*stack, node, nxt])}")
            if nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = 2

    for node in list(graph):
        if node not in state:
            visit(node, [])


def test_hfopt_never_imports_recipes_or_tests():
    for path in MODULES:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + (
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
                )
                assert not any(n.split(".")[0] in ("recipes", "tests") for n in names), path


@pytest.mark.parametrize(
    "path",
    [p for p in MODULES if not p.name.startswith("_")] + [p for p in MODULES if p.name == "__init__.py"],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_every_public_module_has_all_and_a_docstring(path):
    tree = ast.parse(path.read_text())
    docstring = ast.get_docstring(tree)
    assert docstring, f"{path} has no docstring"
    if path.name != "__init__.py" or any(isinstance(n, ast.ImportFrom) for n in tree.body):
        assert any(
            isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in n.targets) for n in tree.body
        ) or path.name in ("cli.py",), f"{path} has no __all__"
