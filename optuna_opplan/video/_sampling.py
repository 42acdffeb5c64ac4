"""Frame index sampling: the paper's consecutive and uniform strategies, and strided sampling
(every second frame, the frame interval Kinetics models are commonly trained with)."""

from __future__ import annotations

import numpy as np

SAMPLINGS = ("consecutive", "strided", "uniform")
_STRIDE = 2  # "strided": every second frame


def sample_clip_indices(
    num_frames: int,
    clip_length: int,
    sampling: str,
    *,
    train: bool,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Return the frame indices of one clip.

    ``"consecutive"`` takes ``clip_length`` frames in a row: from a random start in training,
    the centred window in evaluation. ``"strided"`` does the same with every second frame, so a
    clip spans ``2 * clip_length - 1`` frames and sees twice the motion per step. ``"uniform"``
    splits the video into ``clip_length`` equal
    segments and takes one frame from each: a random frame of the segment in training, the
    segment centre in evaluation.

    Videos shorter than the clip never fail. Consecutive sampling loops the video from its first
    frame (``0, 1, ..., n - 1, 0, 1, ...``), so the clip keeps the frame-to-frame motion it
    exists to show; strided sampling loops the same way at its stride. Uniform sampling
    repeats every frame to the nearest slot (``0, 0, 1, 1, ...``), keeping the order and
    coverage it exists to show; there is nothing to jitter then, so training and evaluation
    agree.

    Args:
        num_frames: Number of frames in the video.
        clip_length: Number of frames in the clip.
        sampling: ``"consecutive"``, ``"strided"`` or ``"uniform"``.
        train: Random (training) or deterministic (evaluation) sampling.
        rng: Random source for training; a fresh unseeded generator when omitted.

    Returns:
        An int64 array of ``clip_length`` frame indices in ``[0, num_frames)``, non-decreasing
        except where a short video loops.

    Example:
        >>> sample_clip_indices(10, 4, "consecutive", train=False).tolist()
        [3, 4, 5, 6]
        >>> sample_clip_indices(10, 4, "strided", train=False).tolist()
        [1, 3, 5, 7]
        >>> sample_clip_indices(16, 4, "uniform", train=False).tolist()
        [2, 6, 10, 14]
    """
    _check_common(num_frames, clip_length, sampling)
    if not isinstance(train, bool):
        raise TypeError(f"`train` must be a bool, but got train={train!r}.")
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(f"`rng` must be a numpy Generator or None, but got rng={rng!r}.")
    if train and rng is None:
        rng = np.random.default_rng()
    if sampling != "uniform":
        stride, span = _window(sampling, clip_length)
        if num_frames < span:
            return stride * np.arange(clip_length, dtype=np.int64) % num_frames
        if train:
            assert rng is not None
            start = int(rng.integers(0, num_frames - span + 1))
        else:
            start = (num_frames - span) // 2
        return start + stride * np.arange(clip_length, dtype=np.int64)
    if train and num_frames >= clip_length:
        assert rng is not None
        offsets = rng.random(clip_length)
    else:
        offsets = np.full(clip_length, 0.5)
    return _segment_positions(num_frames, clip_length, offsets)


def sample_test_clips(
    num_frames: int, clip_length: int, sampling: str, num_clips: int
) -> np.ndarray:
    """Return ``num_clips`` evaluation clips spread uniformly over the video (multi-view test).

    Consecutive and strided clips start at the centres of ``num_clips`` equal shares of the
    possible start positions. Uniform clips take, in every segment, the frame at fraction
    ``(k + 0.5) / num_clips`` of the segment for clip ``k``, so the clips interleave. With
    ``num_clips=1`` both give exactly the evaluation clip of :func:`sample_clip_indices`.
    Short videos follow the same rules as :func:`sample_clip_indices` (clips may coincide).

    Args:
        num_frames: Number of frames in the video.
        clip_length: Number of frames in each clip.
        sampling: ``"consecutive"``, ``"strided"`` or ``"uniform"``.
        num_clips: Number of clips (views along time).

    Returns:
        An int64 array of shape ``(num_clips, clip_length)``.

    Example:
        >>> sample_test_clips(20, 4, "consecutive", 2).tolist()
        [[4, 5, 6, 7], [12, 13, 14, 15]]
        >>> sample_test_clips(8, 2, "uniform", 2).tolist()
        [[1, 5], [3, 7]]
    """
    _check_common(num_frames, clip_length, sampling)
    if isinstance(num_clips, bool) or not isinstance(num_clips, int) or num_clips <= 0:
        raise ValueError(f"`num_clips` must be a positive int, but got num_clips={num_clips!r}.")
    fractions = (np.arange(num_clips) + 0.5) / num_clips
    if sampling != "uniform":
        stride, span = _window(sampling, clip_length)
        steps = stride * np.arange(clip_length, dtype=np.int64)
        if num_frames < span:
            return np.tile(steps % num_frames, (num_clips, 1))
        starts = np.floor((num_frames - span) * fractions).astype(np.int64)
        return starts[:, None] + steps[None, :]
    if num_frames < clip_length:
        fractions = np.full(num_clips, 0.5)
    return np.stack(
        [_segment_positions(num_frames, clip_length, np.full(clip_length, f)) for f in fractions]
    )


def _window(sampling: str, clip_length: int) -> tuple[int, int]:
    """A consecutive or strided clip's stride and the frames it spans."""
    stride = _STRIDE if sampling == "strided" else 1
    return stride, stride * (clip_length - 1) + 1


def _segment_positions(num_frames: int, clip_length: int, offsets: np.ndarray) -> np.ndarray:
    segment = num_frames / clip_length
    positions = np.floor((np.arange(clip_length) + offsets) * segment).astype(np.int64)
    # Floating point can land exactly on the segment end for offsets near 1.
    return np.minimum(positions, num_frames - 1)


def _check_common(num_frames: int, clip_length: int, sampling: str) -> None:
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)):
        raise TypeError(f"`num_frames` must be an int, but got num_frames={num_frames!r}.")
    if num_frames <= 0:
        raise ValueError(
            f"`num_frames` must be positive (a video with no frames cannot be sampled), "
            f"but got num_frames={num_frames}."
        )
    if isinstance(clip_length, bool) or not isinstance(clip_length, (int, np.integer)):
        raise ValueError(
            f"`clip_length` must be a positive int, but got clip_length={clip_length!r}."
        )
    if clip_length <= 0:
        raise ValueError(
            f"`clip_length` must be a positive int, but got clip_length={clip_length}."
        )
    if sampling not in SAMPLINGS:
        raise ValueError(f"`sampling` must be one of {SAMPLINGS}, but got sampling={sampling!r}.")
