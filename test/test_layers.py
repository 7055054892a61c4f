"""The layering contract: which of the package's modules may import which.

Bottom to top: the domain packages (sensing, latency prediction, the decision
loop, inference, the network, load generation) import no ROS and nothing
above them; the nodes import the domain packages and rclpy, never the command
line or the experiment harness; ``tools`` (the command line and the harness)
may import anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "adascale_ros"
DOMAIN = ("resources", "profiling", "selection", "runtime", "model", "load")
# What each layer must not import (module prefixes); a function-level import counts too.
FORBIDDEN = {
    **{name: ("rclpy", "adascale_ros.nodes", "adascale_ros.tools") for name in DOMAIN},
    "nodes": ("adascale_ros.tools",),
}


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


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_layer_imports_one_above_it(layer):
    offenders = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for name in imported_modules(path):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[layer]):
                offenders.append(f"{path.relative_to(REPO_ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_the_contract_sees_a_forbidden_import_in_a_function(tmp_path):
    assert "numpy" in imported_modules(PACKAGE / "runtime" / "frames.py")
    bad = tmp_path / "adascale_ros" / "selection" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("def f():\n    from ..tools import cli\n    import rclpy.node\n")
    assert imported_modules(bad, tmp_path) == {"adascale_ros.tools", "rclpy.node"}
