"""sensor_msgs images to numpy arrays, through cv_bridge, with every check a robot needs.

cv_bridge (the pure-Python build from PyPI, see ../README) converts packed
little-endian images and decodes compressed ones. Before it sees a message,
``image_to_array`` checks what cv_bridge trusts blindly: a supported
encoding, a non-empty size under the pixel limit, ``step`` at least one packed
row, and exactly ``step * height`` bytes of data. Rows padded beyond the
packed width, and big-endian 16-bit data, are unpacked here with numpy
(cv_bridge would misread the former and its byte swap fails on numpy 2).

Every failure is a ``FrameError`` whose ``kind`` names the problem, so the
node can count them by kind.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import cv2
import numpy as np
from cv_bridge import CvBridge, CvBridgeError

# Packed YUV 4:2:2 (two bytes a pixel, chroma shared by each pair), as camera drivers publish it:
# camera_ros's default YUYV as "yuv422_yuy2" or "yuyv", UYVY as "yuv422" or "uyvy". Decoded to rgb8.
YUV422_TO_RGB = {
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2,
    "yuyv": cv2.COLOR_YUV2RGB_YUY2,
    "yuv422": cv2.COLOR_YUV2RGB_UYVY,
    "uyvy": cv2.COLOR_YUV2RGB_UYVY,
}
SUPPORTED_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", *YUV422_TO_RGB)
COMPRESSED_FORMATS = ("jpeg", "png")
_BRIDGE = CvBridge()


MAX_IMAGE_PIXELS = 16_777_216  # default limits on one frame (the inference node's parameters)
MAX_COMPRESSED_BYTES = 20_000_000


def stamp_ns(stamp: Any) -> int:
    """A ``builtin_interfaces/Time`` (an rclpy message or its rosbags twin) in nanoseconds."""
    return stamp.sec * 1_000_000_000 + stamp.nanosec


class FrameError(ValueError):
    """A frame that cannot be used; ``kind`` is a short category for counting."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def image_to_array(msg: Any, max_pixels: int) -> tuple[np.ndarray, str]:
    """A ``sensor_msgs/Image`` as an (H, W) or (H, W, C) array in native byte order, and its encoding
    (packed YUV 4:2:2 comes back as rgb8)."""
    encoding = msg.encoding
    if encoding not in SUPPORTED_ENCODINGS:
        raise FrameError("encoding", f"unsupported encoding {encoding!r} (supported: {', '.join(SUPPORTED_ENCODINGS)})")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    _check_size(height, width, max_pixels)
    if encoding in YUV422_TO_RGB:
        if width % 2:
            raise FrameError("size", f"a {encoding} image has an even width (pixels come in pairs), got {width}")
        packed = _unpack(msg, height, width, step, np.dtype(np.uint8), 2)
        return cv2.cvtColor(packed, YUV422_TO_RGB[encoding]), "rgb8"
    dtype_name, channels = _BRIDGE.encoding_to_dtype_with_channels(encoding)
    return _unpack(msg, height, width, step, np.dtype(dtype_name), channels), encoding


def _unpack(msg: Any, height: int, width: int, step: int, dtype: np.dtype, channels: int) -> np.ndarray:
    """The message's pixels as an array, rows unpadded and in native byte order, after the size checks."""
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise FrameError("step", f"step {step} is less than one packed row ({width} x {channels} x {dtype.itemsize} B)")
    if len(msg.data) != step * height:
        raise FrameError("size", f"{len(msg.data)} data bytes, expected step x height = {step * height}")
    shape = (height, width) if channels == 1 else (height, width, channels)
    # Not cv_bridge's imgmsg_to_cv2: it calls ndarray.newbyteorder (gone in NumPy 2) whenever
    # is_bigendian differs from the host, even for 8-bit data where byte order means nothing.
    swapped = dtype.itemsize > 1 and bool(msg.is_bigendian) != (sys.byteorder == "big")
    if step == row_bytes and not swapped:
        return np.frombuffer(msg.data, dtype).reshape(shape)
    rows = np.frombuffer(msg.data, np.uint8).reshape(height, step)[:, :row_bytes]
    wire = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    array = np.ascontiguousarray(rows).view(wire).astype(dtype)
    return array.reshape(shape)


def compressed_to_array(msg: Any, max_pixels: int, max_bytes: int) -> tuple[np.ndarray, str]:
    """A ``sensor_msgs/CompressedImage`` (jpeg or png) decoded, and the encoding of the result."""
    fmt = msg.format.lower()
    # image_transport writes e.g. "jpeg", "png" or "rgb8; jpeg compressed bgr8".
    if not any(re.search(rf"\b{name}\b", fmt) for name in (*COMPRESSED_FORMATS, "jpg")):
        raise FrameError("format", f"unsupported compressed format {msg.format!r} (supported: jpeg, png)")
    if len(msg.data) == 0:
        raise FrameError("size", "empty compressed frame")
    if len(msg.data) > max_bytes:
        raise FrameError("too_large", f"compressed frame of {len(msg.data)} B exceeds the {max_bytes} B limit")
    try:
        array = _BRIDGE.compressed_imgmsg_to_cv2(msg, "passthrough")
    except (CvBridgeError, cv2.error) as exc:
        raise FrameError("decode", f"cannot decode the {msg.format!r} frame: {exc}") from exc
    if array is None:
        raise FrameError("decode", f"cannot decode the {msg.format!r} frame ({len(msg.data)} B)")
    _check_size(array.shape[0], array.shape[1], max_pixels)
    channels = 1 if array.ndim == 2 else array.shape[2]
    if channels == 1:
        return array, "mono16" if array.dtype == np.uint16 else "mono8"
    if array.dtype != np.uint8:
        array = (array >> 8).astype(np.uint8)
    return array, "bgr8" if channels == 3 else "bgra8"


def _check_size(height: int, width: int, max_pixels: int) -> None:
    if height <= 0 or width <= 0:
        raise FrameError("size", f"empty image ({width} x {height})")
    if height * width > max_pixels:
        raise FrameError("too_large", f"{width} x {height} image exceeds the {max_pixels}-pixel limit")


def frame_to_array(msg: Any, max_pixels: int, max_compressed_bytes: int) -> tuple[np.ndarray, str]:
    """A camera frame, raw (``sensor_msgs/Image``) or compressed (it has a ``format``), as (array, encoding);
    ``FrameError`` when it is malformed or over the limits."""
    if hasattr(msg, "format"):
        return compressed_to_array(msg, max_pixels, max_compressed_bytes)
    return image_to_array(msg, max_pixels)
