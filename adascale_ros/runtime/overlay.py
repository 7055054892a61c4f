"""The annotated image: the frame, enlarged if small, with the answer and how it was reached."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from adascale_ros.runtime.preprocess import to_8bit

_TO_BGR = {
    "rgb8": cv2.COLOR_RGB2BGR,
    "rgba8": cv2.COLOR_RGBA2BGR,
    "bgra8": cv2.COLOR_BGRA2BGR,
    "mono8": cv2.COLOR_GRAY2BGR,
}
MIN_WIDTH = 320


def to_bgr8(image: np.ndarray, encoding: str) -> np.ndarray:
    image, encoding = to_8bit(image, encoding)
    return image.copy() if encoding == "bgr8" else cv2.cvtColor(image, _TO_BGR[encoding])


def draw_overlay(image: np.ndarray, encoding: str, lines: Sequence[str]) -> np.ndarray:
    """A bgr8 copy of ``image``, at least ``MIN_WIDTH`` wide, with ``lines`` written on a dark band."""
    canvas = to_bgr8(image, encoding)
    height, width = canvas.shape[:2]
    if width < MIN_WIDTH:
        scale = MIN_WIDTH / width
        canvas = cv2.resize(canvas, (MIN_WIDTH, max(1, round(height * scale))), interpolation=cv2.INTER_NEAREST)
    line_height = 18
    band = line_height * len(lines) + 6
    canvas[:band] = (canvas[:band] * 0.35).astype(np.uint8)
    for row, text in enumerate(lines):
        origin = (6, line_height * (row + 1))
        cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas
