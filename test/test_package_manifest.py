"""Every import of the package is declared for a robot install: a rosdep key in package.xml, or a line of
requirements-robot.txt where rosdep has none."""

from __future__ import annotations

import ast
import re
import sys
import xml.etree.ElementTree as ET

from conftest import REPO_ROOT

# Import name -> the rosdep key that installs it (ROS packages are their own key).
ROSDEP_KEYS = {
    "cv2": "python3-opencv",
    "numpy": "python3-numpy",
    "yaml": "python3-yaml",
    "psutil": "python3-psutil",
    "tqdm": "python3-tqdm",
    "PIL": "python3-pil",
    "onnxruntime": "python3-onnxruntime-pip",
    "sklearn": "python3-sklearn",
    "scipy": "python3-scipy",
    "pynvml": "python3-pynvml",
    "rosbags": "python3-rosbags-pip",
    "matplotlib": "python3-matplotlib",
    "hypothesis": "python3-hypothesis",
}
ROS_PACKAGES = {
    "rclpy", "rcl_interfaces", "ament_index_python", "std_msgs", "sensor_msgs", "diagnostic_msgs",
    "rosgraph_msgs", "vision_msgs", "cv_bridge", "launch", "launch_ros",
}  # fmt: skip
# Import name -> the pip distribution requirements-robot.txt names (rosdep has no key, or no usable one).
PIP_ONLY = {"torch": "torch", "torchvision": "torchvision", "onnx": "onnx", "BTrees": "BTrees"}
OURS = {"adascale_ros", "adascale_msgs"}


def imported_modules() -> dict[str, str]:
    """Top-level modules the package and its launch files import, outside the standard library: name -> a file."""
    found: dict[str, str] = {}
    for path in sorted([*(REPO_ROOT / "adascale_ros").rglob("*.py"), *(REPO_ROOT / "launch").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in OURS and top != "__future__":
                    found.setdefault(top, str(path.relative_to(REPO_ROOT)))
    return found


def manifest_keys() -> set[str]:
    root = ET.parse(REPO_ROOT / "package.xml").getroot()
    return {e.text.strip() for tag in ("depend", "exec_depend", "test_depend") for e in root.iter(tag) if e.text}


def robot_requirements() -> set[str]:
    lines = (REPO_ROOT / "requirements-robot.txt").read_text().splitlines()
    return {re.split(r"[=<>!~;\[ ]", line.strip())[0] for line in lines if line.strip()[:1].isalnum()}


def test_every_import_is_declared_for_a_robot_install():
    keys, pip = manifest_keys(), robot_requirements()
    undeclared = {}
    for module, where in imported_modules().items():
        if module in ROS_PACKAGES:
            ok = module in keys
        elif module in ROSDEP_KEYS:
            ok = ROSDEP_KEYS[module] in keys
        else:
            ok = PIP_ONLY.get(module) in pip
        if not ok:
            undeclared[module] = where
    assert not undeclared, f"imports neither package.xml nor requirements-robot.txt declares: {undeclared}"


def test_the_declarations_are_read_from_the_files():
    # The walk sees the package's real imports, and the readers see the real files (not empty sets).
    modules = imported_modules()
    assert {"rclpy", "onnxruntime", "cv2", "torch", "BTrees"} <= set(modules)
    assert {"python3-onnxruntime-pip", "cv_bridge", "adascale_msgs"} <= manifest_keys()
    assert {"torch", "onnx", "BTrees"} <= robot_requirements()
