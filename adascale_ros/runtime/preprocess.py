"""Camera pixels to the model card's input: the one place pre-processing happens.

1. depth: mono16 is scaled to 8 bits (the model was trained on uint8 pixels);
2. colour: to grey (ITU-R 601 luma, OpenCV's RGB2GRAY) for a 1-channel model,
   to RGB for a 3-channel model; alpha is dropped;
3. size: resized to the card's height x width (or the variant's resolution, for
   a network with elastic resolution) by area averaging when
   shrinking (``shrink_by_area``: each output pixel the mean of the source
   pixels it covers), linear interpolation when enlarging;
4. values: x / 255, then (x - mean) / std per channel, as in training
   (``adascale_ros.model.accuracy.Normalization``).

The result is a float32 (1, C, H, W) array, the batch-1 input of both backends.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

_TO_GREY = {
    "rgb8": cv2.COLOR_RGB2GRAY,
    "bgr8": cv2.COLOR_BGR2GRAY,
    "rgba8": cv2.COLOR_RGBA2GRAY,
    "bgra8": cv2.COLOR_BGRA2GRAY,
}
_TO_RGB = {
    "bgr8": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
}


def to_8bit(image: np.ndarray, encoding: str) -> tuple[np.ndarray, str]:
    """mono16 to mono8 (the high byte); every other supported encoding is 8-bit already."""
    if encoding == "mono16":
        return (image >> 8).astype(np.uint8), "mono8"
    return image, encoding


# Below 8 source pixels per output pixel the slight enlargement shows (up to 65 grey
# levels off INTER_AREA on pixel noise at 2); from 8 up it stays within 2. Such small
# frames are cheap to shrink exactly anyway.
MIN_BLOCK = 8


def shrink_by_area(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-average ``pixels`` down to ``width`` x ``height``: OpenCV's INTER_AREA, faster.

    INTER_AREA is fast only for an integer scale factor; otherwise it takes a
    generic path that costs 1.4-3x as much (``adascale bench inference``
    prints both). So the frame is first enlarged slightly (bilinear, by less than
    one output block) to the next integer multiple of the output, then averaged
    over whole blocks. Enlarging interpolates, it drops no source pixel. Within
    2 grey levels of INTER_AREA, even on pixel noise.
    """
    source_height, source_width = pixels.shape[:2]
    kx, ky = math.ceil(source_width / width), math.ceil(source_height / height)
    if min(kx, ky) >= MIN_BLOCK and (source_width, source_height) != (kx * width, ky * height):
        pixels = cv2.resize(pixels, (kx * width, ky * height), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA)


class Preprocessor:
    def __init__(self, channels: int, height: int, width: int, mean: Sequence[float], std: Sequence[float]) -> None:
        if channels not in (1, 3) or len(mean) != channels or len(std) != channels:
            raise ValueError(f"unsupported model input: {channels} channels, mean {mean}, std {std}")
        self.channels, self.height, self.width = channels, height, width
        # (x / 255 - mean) / std has 256 possible values per channel: a table lookup per pixel,
        # several times faster than converting and scaling the whole array (and the same floats).
        std_array, mean_array = np.asarray(std, np.float32), np.asarray(mean, np.float32)
        levels = np.arange(256, dtype=np.float32)
        self._lut = levels * (1.0 / (255.0 * std_array))[:, None] + (-mean_array / std_array)[:, None]

    @classmethod
    def from_card(cls, card: dict) -> Preprocessor:
        shape, norm = card["input"], card["normalization"]
        return cls(shape["channels"], shape["height"], shape["width"], norm["mean"], norm["std"])

    def to_uint8(self, image: np.ndarray, encoding: str) -> np.ndarray:
        """Steps 1-2: 8-bit pixels in the model's colour space, (H, W) grey or (H, W, 3) RGB."""
        image, encoding = to_8bit(image, encoding)
        if self.channels == 1:
            return image if encoding == "mono8" else cv2.cvtColor(image, _TO_GREY[encoding])
        return image if encoding == "rgb8" else cv2.cvtColor(image, _TO_RGB[encoding])

    def __call__(self, image: np.ndarray, encoding: str, size: int | None = None) -> np.ndarray:
        """The network input; at ``size`` x ``size`` pixels (a variant's resolution) when given, else
        at the card's height x width."""
        pixels = self.to_uint8(image, encoding)
        height, width = pixels.shape[:2]
        out_height, out_width = (self.height, self.width) if size is None else (size, size)
        if (height, width) != (out_height, out_width):
            if height >= out_height and width >= out_width:
                pixels = shrink_by_area(pixels, out_width, out_height)
            else:
                pixels = cv2.resize(pixels, (out_width, out_height), interpolation=cv2.INTER_LINEAR)
        chw = pixels[np.newaxis] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        out = np.empty((1, *chw.shape), np.float32)
        for channel, lut in enumerate(self._lut):
            np.take(lut, chw[channel], out=out[0, channel])
        return out
