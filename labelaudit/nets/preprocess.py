"""The preprocessing a pretrained backbone's weights expect: resize, centre crop, normalise."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError

_INTERPOLATIONS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@dataclass(frozen=True)
class Preprocess:
    """Turn an RGB PIL image into the normalised input tensor a backbone's weights expect.

    The shorter side is resized to ``resize_size`` (with ``interpolation``, antialiased), the
    centre ``crop_size`` square is cut out, pixels are scaled to 0..1 and normalised per channel
    as ``(x - mean) / std``: torchvision's ``ImageClassification`` evaluation transform.

    Attributes
    ----------
    resize_size : int
    crop_size : int
    mean, std : tuple of 3 floats
        Per channel (R, G, B), for pixels scaled to 0..1.
    interpolation : {"bilinear", "bicubic"}
    """

    resize_size: int
    crop_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str

    def __post_init__(self) -> None:
        if self.interpolation not in _INTERPOLATIONS:
            raise ConfigError(
                f"interpolation must be one of {list(_INTERPOLATIONS)}; got {self.interpolation!r}"
            )
        if not 1 <= self.crop_size <= self.resize_size:
            raise ConfigError(
                f"crop_size must be in [1, resize_size={self.resize_size}]; got {self.crop_size!r}"
            )

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """Return the ``(3, crop_size, crop_size)`` float32 normalised tensor of ``image``."""
        pixels = torch.from_numpy(self.pixels(image))  # (crop, crop, 3) uint8
        return self.normalize(pixels[None].permute(0, 3, 1, 2))[0]

    def pixels(self, image: Image.Image) -> np.ndarray:
        """Resize and centre-crop ``image``; return ``(crop_size, crop_size, 3)`` uint8 RGB pixels.

        A non-RGB image is converted the way the image cache converts it (transparency over
        white, 16-bit scaled to 8 bits).
        """
        if image.mode != "RGB":
            from ..data._decode import to_channels

            image = to_channels(image, 3)
        width, height = image.size
        # torchvision's rule: the shorter side becomes resize_size, the longer one is truncated.
        if width <= height:
            size = (self.resize_size, int(self.resize_size * height / width))
        else:
            size = (int(self.resize_size * width / height), self.resize_size)
        if size != image.size:
            image = image.resize(size, _INTERPOLATIONS[self.interpolation])
        left = int(round((size[0] - self.crop_size) / 2.0))
        top = int(round((size[1] - self.crop_size) / 2.0))
        image = image.crop((left, top, left + self.crop_size, top + self.crop_size))
        return np.array(image, dtype=np.uint8)  # a writable copy: torch refuses read-only arrays

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` uint8 pixels -> float32 ``(x / 255 - mean) / std``, same memory layout."""
        mean = torch.tensor(self.mean, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
        return (batch.float() / 255.0 - mean) / std

    def to_dict(self) -> dict:
        """Plain JSON-ready dict of the settings (lists for the tuples)."""
        values = asdict(self)
        values["mean"], values["std"] = list(self.mean), list(self.std)
        return values
