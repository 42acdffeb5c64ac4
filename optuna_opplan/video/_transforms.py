"""Clip augmentation and evaluation crops, vectorised over all frames of a clip."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ClipTransform:
    """Turn decoded frames into normalised network input, as the paper does.

    Training: resize the short side to a random size in ``scale_range``, take a random
    ``crop_size`` square, flip horizontally with probability 0.5 when ``flip`` is on (turn it
    off for direction-sensitive classes). Evaluation while planning: resize the short side to
    ``eval_short_side`` and take the centre ``crop_size`` square. Final test: resize the short
    side to ``test_size`` and take three ``test_size`` squares along the long side (start,
    centre, end). The paper's numbers are 224 crops of a 256..340 short side, a 256 evaluation
    short side and 256 test crops; the defaults scale them down to 56-pixel crops.

    Every output is float32 ``(3, T, H, W)``, ImageNet-normalised, from uint8 ``(T, H, W, 3)``.

    Example:
        >>> t = ClipTransform(crop_size=8, scale_range=(8, 10), eval_short_side=9, test_size=9)
        >>> clip = torch.zeros(4, 12, 16, 3, dtype=torch.uint8)
        >>> tuple(t.train(clip, torch.Generator().manual_seed(0)).shape)
        (3, 4, 8, 8)
        >>> tuple(t.three_crop(clip).shape)
        (3, 3, 4, 9, 9)
    """

    crop_size: int = 56
    scale_range: tuple[int, int] = (64, 80)
    eval_short_side: int = 64
    test_size: int = 64
    flip: bool = True

    def __post_init__(self) -> None:
        for name in ("crop_size", "eval_short_side", "test_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"`{name}` must be a positive int, but got {name}={value!r}.")
        low_high = self.scale_range
        if (
            not isinstance(low_high, tuple)
            or len(low_high) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in low_high)
            or not self.crop_size <= low_high[0] <= low_high[1]
        ):
            raise ValueError(
                "`scale_range` must be a (low, high) tuple of ints with crop_size <= low <= "
                f"high, but got scale_range={low_high!r} with crop_size={self.crop_size}."
            )
        if self.eval_short_side < self.crop_size:
            raise ValueError(
                f"`eval_short_side` must be at least crop_size={self.crop_size}, but got "
                f"eval_short_side={self.eval_short_side}."
            )
        if not isinstance(self.flip, bool):
            raise ValueError(f"`flip` must be a bool, but got flip={self.flip!r}.")

    def train(self, clip: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random scale, random crop and optional flip of one training clip."""
        low, high = self.scale_range
        short = int(torch.randint(low, high + 1, (1,), generator=generator))
        frames = _resize_short_side(_check_clip(clip), short)
        height, width = frames.shape[-2:]
        top = int(torch.randint(0, height - self.crop_size + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - self.crop_size + 1, (1,), generator=generator))
        frames = frames[..., top : top + self.crop_size, left : left + self.crop_size]
        if self.flip and bool(torch.rand(1, generator=generator) < 0.5):
            frames = frames.flip(-1)
        return _normalise(frames)

    def center(self, clip: torch.Tensor) -> torch.Tensor:
        """The planning-time evaluation view: one centre crop."""
        frames = _resize_short_side(_check_clip(clip), self.eval_short_side)
        height, width = frames.shape[-2:]
        top = (height - self.crop_size) // 2
        left = (width - self.crop_size) // 2
        return _normalise(frames[..., top : top + self.crop_size, left : left + self.crop_size])

    def three_crop(self, clip: torch.Tensor) -> torch.Tensor:
        """The final-test views: three squares along the long side, shape ``(3, 3, T, S, S)``."""
        frames = _resize_short_side(_check_clip(clip), self.test_size)
        height, width = frames.shape[-2:]
        size = self.test_size
        crops = []
        for fraction in (0, 1, 2):
            top = (height - size) * fraction // 2
            left = (width - size) * fraction // 2
            crops.append(frames[..., top : top + size, left : left + size])
        return torch.stack([_normalise(c) for c in crops])


def _check_clip(clip: torch.Tensor) -> torch.Tensor:
    if clip.dtype != torch.uint8 or clip.dim() != 4 or clip.shape[-1] != 3:
        raise ValueError(
            "`clip` must be a uint8 tensor of shape (T, H, W, 3), but got "
            f"dtype={clip.dtype} shape={tuple(clip.shape)}."
        )
    return clip


def _resize_short_side(clip: torch.Tensor, short: int) -> torch.Tensor:
    # (T, H, W, 3) uint8 -> (3, T, h, w) float in [0, 255]. Channels and frames together form
    # the batch dimension, so the whole clip is resized in one call and ends up in the
    # network's layout without another copy.
    length, height, width, _ = clip.shape
    frames = clip.permute(3, 0, 1, 2).reshape(3 * length, 1, height, width).float()
    scale = short / min(height, width)
    size = (max(short, round(height * scale)), max(short, round(width * scale)))
    if size != (height, width):
        frames = F.interpolate(
            frames, size=size, mode="bilinear", align_corners=False, antialias=scale < 1
        )
    return frames.view(3, length, *size)


def _normalise(frames: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1) * 255
    # ``sub`` allocates a fresh contiguous tensor even from a cropped view.
    return frames.sub(mean).div_(std)
