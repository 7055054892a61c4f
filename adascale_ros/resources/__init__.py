"""Resource-availability awareness: sensors, load index and its forecast (no ROS here)."""

from adascale_ros.resources.forecaster import ARForecaster
from adascale_ros.resources.load_index import LoadIndexWeights, load_index
from adascale_ros.resources.sampler import ResourceSample, ResourceSampler, SensorRoots

__all__ = [
    "ARForecaster",
    "LoadIndexWeights",
    "ResourceSample",
    "ResourceSampler",
    "SensorRoots",
    "load_index",
]
