"""The layering contract: which of the package's modules may import which.

The layers, bottom to top; a module may import its own layer and those below,
never one above (a function-level import counts too):

- the base: ``package_files`` (shipped files), ``timing`` (the timing primitive) and ``signals`` (stopping on
  SIGINT and SIGTERM);
- the domain, without ROS, in its own order: ``resources`` (sensing), ``load``
  (load generation), ``model`` (the network, training, export), ``runtime``
  (inference), ``profiling`` (latency prediction and calibration, which times
  the runtime under generated load), ``selection`` (the decision loop);
- ``nodes``: the thin rclpy nodes;
- ``graph``: the node graph's definition, launch support, the local runner (process control: it starts
  the nodes);
- ``harness``: the experiment harness (evaluation, scoring, soak, campaign, bags);
- ``cli``: the command line, which may import anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "adascale_ros"
LAYERS = (
    ("package_files", "timing", "signals"),
    ("resources",),
    ("load",),
    ("model",),
    ("runtime",),
    ("profiling",),
    ("selection",),
    ("nodes",),
    ("graph",),
    ("harness",),
    ("cli",),
)
NO_ROS = {"package_files", "timing", "signals", "resources", "load", "model", "runtime", "profiling", "selection"}


def forbidden(part: str) -> tuple[str, ...]:
    """The module prefixes ``part`` of the package must not import: every part above its layer, and rclpy
    for the layers without ROS."""
    level = next(i for i, layer in enumerate(LAYERS) if part in layer)
    above = tuple(f"adascale_ros.{name}" for layer in LAYERS[level + 1 :] for name in layer)
    return above + (("rclpy",) if part in NO_ROS else ())


def imported_modules(path: Path, root: Path = REPO_ROOT) -> set[str]:
    """Every module ``path`` (under ``root``) imports, anywhere in it, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
    return names


def test_every_part_of_the_package_has_a_layer():
    parts = {path.stem if path.is_file() else path.name for path in PACKAGE.iterdir() if path.name != "__init__.py"}
    parts = {part for part in parts if not part.startswith("__")}
    assert parts == {name for layer in LAYERS for name in layer}


@pytest.mark.parametrize("part", [name for layer in LAYERS for name in layer])
def test_no_part_imports_a_layer_above_it(part):
    paths = [PACKAGE / f"{part}.py"] if (PACKAGE / f"{part}.py").exists() else sorted((PACKAGE / part).rglob("*.py"))
    offenders = []
    for path in paths:
        for name in imported_modules(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden(part)):
                offenders.append(f"{path.relative_to(REPO_ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_the_contract_sees_a_forbidden_import_in_a_function(tmp_path):
    assert "numpy" in imported_modules(PACKAGE / "runtime" / "frames.py")
    bad = tmp_path / "adascale_ros" / "selection" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("def f():\n    from ..cli import main\n    import rclpy.node\n")
    assert imported_modules(bad, tmp_path) == {"adascale_ros.cli", "rclpy.node"}
    assert {"adascale_ros.cli", "adascale_ros.nodes", "rclpy"} <= set(forbidden("selection"))
