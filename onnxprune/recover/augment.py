"""Light augmentation of calibration feeds, so a dozen unlabeled inputs give many training views.

Image-like inputs (float, rank 4, 1/3/4 channels on axis 1 or last, at least 8x8 pixels) get a
random shift (a crop that keeps the size, edges repeated), a horizontal flip half of the time, a
small change of contrast and brightness, and a little noise, each scaled by the image's own
statistics so any preprocessing (0..1, -1..1, mean/std normalized) stays in its range. Other float
inputs (audio features, embeddings) get the noise only; integer inputs (token ids, masks) are
left as they are: a changed id is another sentence, not a view of the same one.
"""

from __future__ import annotations

import torch

SHIFT = 0.06  # of the height and width
CONTRAST = 0.1
BRIGHTNESS = 0.05  # of the image's standard deviation
NOISE = 0.02  # of the input's standard deviation
FLIP = 0.0


def image_layout(value: torch.Tensor) -> str | None:
    """"nchw", "nhwc" or None (not an image)."""
    if not value.is_floating_point() or value.dim() != 4:
        return None
    if value.shape[1] in (1, 3, 4) and min(value.shape[2], value.shape[3]) >= 8:
        return "nchw"
    if value.shape[3] in (1, 3, 4) and min(value.shape[1], value.shape[2]) >= 8:
        return "nhwc"
    return None


def _shift(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Move each NCHW image by up to SHIFT of its size, repeating the edge (output size unchanged)."""
    height, width = image.shape[2], image.shape[3]
    out = torch.empty_like(image)
    for index in range(image.shape[0]):
        dy, dx = (int(torch.randint(-int(SHIFT * n), int(SHIFT * n) + 1, (1,), generator=generator))
                  for n in (height, width))
        rows = torch.clamp(torch.arange(height, device=image.device) - dy, 0, height - 1)
        cols = torch.clamp(torch.arange(width, device=image.device) - dx, 0, width - 1)
        out[index] = image[index][:, rows][:, :, cols]
    return out


def _image(value: torch.Tensor, layout: str, generator: torch.Generator) -> torch.Tensor:
    image = value if layout == "nchw" else value.permute(0, 3, 1, 2)
    image = _shift(image, generator)
    flip = torch.rand(image.shape[0], generator=generator) < FLIP
    if flip.any():
        image = torch.where(flip.to(image.device)[:, None, None, None], image.flip(3), image)
    batch = image.shape[0]
    mean = image.mean(dim=(1, 2, 3), keepdim=True)
    std = image.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    contrast = 1 + CONTRAST * (2 * torch.rand(batch, 1, 1, 1, generator=generator) - 1)
    brightness = BRIGHTNESS * (2 * torch.rand(batch, 1, 1, 1, generator=generator) - 1)
    image = (image - mean) * contrast.to(image.device) + mean + brightness.to(image.device) * std
    low, high = value.amin(), value.amax()
    image = image + NOISE * std * torch.randn(image.shape, generator=generator).to(image.device)
    image = torch.clamp(image, low, high)  # stay inside the range the preprocessing produces
    return image if layout == "nchw" else image.permute(0, 2, 3, 1)


def augment(feed: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A randomly transformed copy of one feed (see the module docstring)."""
    out = {}
    for name, value in feed.items():
        layout = image_layout(value)
        if layout is not None:
            out[name] = _image(value, layout, generator)
        elif value.is_floating_point() and value.numel() > 1:
            noise = torch.randn(value.shape, generator=generator).to(value.device)
            out[name] = value + NOISE * value.std().clamp_min(1e-6) * noise
        else:
            out[name] = value
    return out
