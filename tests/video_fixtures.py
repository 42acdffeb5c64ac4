"""Tiny generated videos and datasets shared by the video tests (imported as a plain module)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from optuna_opplan.video import ClipTransform
from optuna_opplan.video import VideoDataset
from optuna_opplan.video import split_train_val
from optuna_opplan.video.synthetic import SyntheticDataset
from optuna_opplan.video.synthetic import generate
from optuna_opplan.video.synthetic import write_video

SIZE = 32


def tiny_transform(*, flip: bool = True) -> ClipTransform:
    """24-pixel crops of 32-pixel frames: the paper's recipe at test-suite scale."""
    return ClipTransform(
        crop_size=24, scale_range=(28, 36), eval_short_side=28, test_size=28, flip=flip
    )


def tiny_synthetic(root: Path, *, flavour: str = "motion", seed: int = 0) -> SyntheticDataset:
    """Two classes (three for "rhythm"), three videos each (two train, one test), 16 to 24
    frames of 32 x 32."""
    return generate(
        root,
        flavour=flavour,
        num_classes=3 if flavour == "rhythm" else 2,
        videos_per_class=3,
        num_frames=(16, 24),
        size=SIZE,
        seed=seed,
    )


def trainer_splits(root: Path) -> tuple[VideoDataset, VideoDataset, VideoDataset]:
    """Train / validation / test splits for the trainer tests: two classes, 6 / 2 / 4 videos
    (the test split in "test" mode, 2 clips x 3 crops)."""
    data = generate(
        root,
        flavour="motion",
        num_classes=2,
        videos_per_class=6,
        num_frames=(16, 20),
        size=SIZE,
        test_fraction=0.34,
    )
    transform = ClipTransform(crop_size=32, scale_range=(32, 36), eval_short_side=32, test_size=32)
    full = VideoDataset.from_list_file(
        data.root, data.train_list, data.class_file, transform=transform
    )
    train, val = split_train_val(full.entries, 0.25, seed=0)
    test = VideoDataset.from_list_file(
        data.root, data.test_list, data.class_file, transform=transform, num_test_clips=2
    )
    return full.with_entries(train), full.with_entries(val), test.with_mode("test")


def ramp_frames(num_frames: int, height: int = SIZE, width: int = SIZE) -> np.ndarray:
    """Frames whose brightness encodes the frame index (8 grey levels apart), left half red."""
    levels = (np.arange(num_frames) * 8 + 16).clip(0, 255).astype(np.uint8)
    frames = np.broadcast_to(levels[:, None, None, None], (num_frames, height, width, 3)).copy()
    frames[:, :, : width // 2, 0] = 200
    return frames


def write_ramp_video(path: Path, num_frames: int, height: int = SIZE, width: int = SIZE) -> None:
    """A readable video with known content at ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, ramp_frames(num_frames, height, width))


def frame_levels(clip: np.ndarray) -> np.ndarray:
    """Recover the frame indices of ramp frames from their mean right-half brightness."""
    right = clip[..., clip.shape[-2] // 2 :, 1].reshape(clip.shape[0], -1).mean(axis=1)
    return np.round((right - 16) / 8).astype(np.int64)


def write_hostile_video(path: Path, kind: str) -> None:
    """A broken video of the given kind at ``path``; ``"missing"`` writes nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "missing":
        return
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "corrupt":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind in ("truncated", "wrong_extension"):
        good = path.with_name("source.mp4")
        write_ramp_video(good, 16)
        data = good.read_bytes()
        good.unlink()
        # mp4 keeps its index (moov) at the end: half a file has none.
        path.write_bytes(data[: len(data) // 2] if kind == "truncated" else data)
    elif kind == "zero_frames":
        import av

        with av.open(str(path), "w", format="mp4") as container:
            stream = container.add_stream("mpeg4", rate=25)
            stream.width = stream.height = SIZE
            stream.pix_fmt = "yuv420p"
            container.mux(stream.encode())
    else:
        raise ValueError(f"unknown hostile kind {kind!r}")


HOSTILE_KINDS = ("missing", "empty", "corrupt", "truncated", "zero_frames", "wrong_extension")
