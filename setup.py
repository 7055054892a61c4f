"""adascale_ros: ament_python package (also a plain pip-installable package)."""

import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "adascale_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz")),
        (f"share/{PACKAGE}/config/train", glob("config/train/*.yaml")),
        (f"share/{PACKAGE}/config/energy", glob("config/energy/*.yaml")),
        (f"share/{PACKAGE}/config/load_traces", glob("config/load_traces/*.yaml")),
        (f"share/{PACKAGE}/config/sros2", glob("config/sros2/*.xml")),
        *(
            (f"share/{PACKAGE}/{directory}", [f for f in glob(f"{directory}/*") if os.path.isfile(f)])
            for model in ("default", "lite0-fashion-mnist")
            for directory in (f"models/{model}", f"models/{model}/profiler")
        ),
    ],
    python_requires=">=3.10",
    # Runtime deps come from the distro on a robot (package.xml) and from
    # requirements.txt in the development venv; keep this list unpinned.
    install_requires=["numpy", "psutil", "PyYAML"],
    zip_safe=True,
    maintainer="adascale_ros maintainers",
    maintainer_email="maintainers@adascale-ros.invalid",
    description="AdaScale for ROS 2: resource-aware elastic camera classification.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "resource_monitor = adascale_ros.nodes.entry:resource_monitor",
            "profiler = adascale_ros.nodes.entry:profiler",
            "selector = adascale_ros.nodes.entry:selector",
            "elastic_inference = adascale_ros.nodes.entry:elastic_inference",
            "adascale = adascale_ros.cli.main:main",
        ],
    },
)
