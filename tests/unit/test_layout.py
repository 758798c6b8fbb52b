"""The core's floors: batch -> video -> image -> model -> shared leaves, imports pointing down only."""

import ast
from pathlib import Path

import cartoon

CORE = Path(cartoon.__file__).parent
# Higher number, higher floor. The entry points (cli, __main__) sit above every floor.
FLOORS = {"errors": 0, "constants": 0, "retry": 0, "model": 1, "image": 2, "video": 3, "batch": 4,
          "cli": 5, "__main__": 5}


def floor_of(module: str) -> int:
    """The floor of a dotted module name under ``cartoon``."""
    return FLOORS[module.split(".")[1]]


def core_imports(path: Path) -> set[str]:
    """The ``cartoon.*`` modules (or packages) that ``path`` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("cartoon.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cartoon"):
            if node.module == "cartoon":
                found |= {f"cartoon.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in CORE.rglob("*.py")}


def test_every_module_sits_on_a_floor():
    assert all(name == "cartoon" or name.split(".")[1] in FLOORS for name in MODULES)


def test_imports_point_down_or_sideways():
    upward = [(name, imported) for name, path in MODULES.items() if name != "cartoon"
              for imported in core_imports(path) if floor_of(imported) > floor_of(name)]
    assert upward == []


def test_no_import_circle():
    graph = {name: {imported for imported in core_imports(path) if imported in MODULES} for name, path in MODULES.items()}
    visiting, done = set(), set()

    def visit(name: str, trail: list[str]) -> None:
        assert name not in visiting, f"import circle: {' -> '.join(trail + [name])}"
        if name in done:
            return
        visiting.add(name)
        for imported in graph[name]:
            visit(imported, trail + [name])
        visiting.discard(name)
        done.add(name)

    for name in graph:
        visit(name, [])


def test_ray_only_in_the_ray_engine():
    importers = {name for name, path in MODULES.items()
                 if any(isinstance(node, (ast.Import, ast.ImportFrom)) and
                        any(alias.name == "ray" or alias.name.startswith("ray.") for alias in node.names)
                        or isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ray"
                        for node in ast.walk(ast.parse(path.read_text())))}
    assert importers == {"cartoon.batch.ray_engine"}
