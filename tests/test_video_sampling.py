from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from optuna_opplan.video import sample_clip_indices
from optuna_opplan.video import sample_test_clips


@pytest.mark.parametrize(
    ("num_frames", "clip_length", "sampling", "expected"),
    [
        (10, 4, "consecutive", [3, 4, 5, 6]),
        (11, 4, "consecutive", [3, 4, 5, 6]),
        (4, 4, "consecutive", [0, 1, 2, 3]),
        (100, 1, "consecutive", [49]),
        (16, 4, "uniform", [2, 6, 10, 14]),
        (10, 4, "uniform", [1, 3, 6, 8]),
        (4, 4, "uniform", [0, 1, 2, 3]),
        (100, 1, "uniform", [50]),
        # Strided: every second frame of the centred window of 2 * clip_length - 1 frames.
        (10, 4, "strided", [1, 3, 5, 7]),
        (11, 4, "strided", [2, 4, 6, 8]),
        (7, 4, "strided", [0, 2, 4, 6]),
        (100, 1, "strided", [49]),
        # Short videos: consecutive loops from frame 0, uniform repeats to the nearest frame,
        # strided loops at its stride.
        (3, 7, "consecutive", [0, 1, 2, 0, 1, 2, 0]),
        (5, 4, "strided", [0, 2, 4, 1]),
        (1, 3, "strided", [0, 0, 0]),
        (3, 6, "uniform", [0, 0, 1, 1, 2, 2]),
        (1, 3, "consecutive", [0, 0, 0]),
        (1, 3, "uniform", [0, 0, 0]),
    ],
)
def test_eval_indices_are_exact(
    num_frames: int, clip_length: int, sampling: str, expected: list[int]
) -> None:
    indices = sample_clip_indices(num_frames, clip_length, sampling, train=False)
    assert indices.dtype == np.int64
    assert indices.tolist() == expected


@pytest.mark.parametrize("sampling", ["consecutive", "strided", "uniform"])
@pytest.mark.parametrize(("num_frames", "clip_length"), [(64, 8), (65, 16), (17, 16), (5, 9)])
def test_train_indices_stay_in_bounds(num_frames: int, clip_length: int, sampling: str) -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        indices = sample_clip_indices(num_frames, clip_length, sampling, train=True, rng=rng)
        assert indices.shape == (clip_length,)
        assert indices.dtype == np.int64
        assert indices.min() >= 0
        assert indices.max() < num_frames


@pytest.mark.parametrize(
    ("sampling", "step", "starts"),
    [
        ("consecutive", 1, range(16)),
        # A clip of 5 every second frame spans 9 frames: it starts anywhere in 0..11.
        ("strided", 2, range(12)),
    ],
)
def test_train_window_is_a_run_from_a_random_start(
    sampling: str, step: int, starts: range
) -> None:
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(300):
        indices = sample_clip_indices(20, 5, sampling, train=True, rng=rng)
        assert np.all(np.diff(indices) == step)
        seen.add(int(indices[0]))
    assert seen == set(starts)


def test_train_uniform_takes_one_frame_per_segment() -> None:
    rng = np.random.default_rng(2)
    seen = set()
    for _ in range(300):
        indices = sample_clip_indices(20, 4, "uniform", train=True, rng=rng)
        # Segments of 5 frames: [0, 5), [5, 10), ...
        assert (indices // 5).tolist() == [0, 1, 2, 3]
        seen.update(indices.tolist())
    assert seen == set(range(20))


@pytest.mark.parametrize("sampling", ["consecutive", "strided", "uniform"])
def test_train_sampling_is_deterministic_for_a_seed(sampling: str) -> None:
    def draw(seed: int) -> list[list[int]]:
        rng = np.random.default_rng(seed)
        return [
            sample_clip_indices(97, 8, sampling, train=True, rng=rng).tolist() for _ in range(5)
        ]

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)


@pytest.mark.parametrize(
    ("num_frames", "clip_length", "sampling", "num_clips", "expected"),
    [
        (20, 4, "consecutive", 2, [[4, 5, 6, 7], [12, 13, 14, 15]]),
        (8, 2, "uniform", 2, [[1, 5], [3, 7]]),
        (21, 4, "strided", 2, [[3, 5, 7, 9], [10, 12, 14, 16]]),
        (5, 4, "strided", 2, [[0, 2, 4, 1]] * 2),
        (4, 4, "consecutive", 3, [[0, 1, 2, 3]] * 3),
        (2, 3, "consecutive", 2, [[0, 1, 0]] * 2),
        (2, 4, "uniform", 2, [[0, 0, 1, 1]] * 2),
    ],
)
def test_test_clips_are_exact(
    num_frames: int, clip_length: int, sampling: str, num_clips: int, expected: list[list[int]]
) -> None:
    clips = sample_test_clips(num_frames, clip_length, sampling, num_clips)
    assert clips.dtype == np.int64
    assert clips.tolist() == expected


@pytest.mark.parametrize("sampling", ["consecutive", "strided", "uniform"])
@pytest.mark.parametrize(("num_frames", "clip_length"), [(128, 8), (37, 16), (100, 32)])
def test_one_test_clip_is_the_eval_clip(num_frames: int, clip_length: int, sampling: str) -> None:
    single = sample_test_clips(num_frames, clip_length, sampling, 1)
    centre = sample_clip_indices(num_frames, clip_length, sampling, train=False)
    assert single.tolist() == [centre.tolist()]


@pytest.mark.parametrize("sampling", ["consecutive", "strided", "uniform"])
def test_test_clips_spread_over_the_video(sampling: str) -> None:
    clips = sample_test_clips(300, 16, sampling, 10)
    assert clips.shape == (10, 16)
    assert clips.min() >= 0 and clips.max() < 300
    firsts = clips[:, 0]
    assert np.all(np.diff(firsts) > 0)
    if sampling != "uniform":
        assert firsts[0] < 30 and clips[-1, -1] > 270


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"num_frames": 0}, ValueError, "num_frames"),
        ({"num_frames": -3}, ValueError, "num_frames"),
        ({"num_frames": 2.5}, TypeError, "num_frames"),
        ({"clip_length": 0}, ValueError, "clip_length=0"),
        ({"clip_length": True}, ValueError, "clip_length"),
        ({"sampling": "dense"}, ValueError, "sampling"),
        ({"train": 1}, TypeError, "train"),
        ({"rng": 7}, TypeError, "rng"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, error: type[Exception], message: str) -> None:
    arguments: dict[str, Any] = {
        "num_frames": 10,
        "clip_length": 4,
        "sampling": "uniform",
        "train": True,
    }
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        sample_clip_indices(
            arguments.pop("num_frames"),
            arguments.pop("clip_length"),
            arguments.pop("sampling"),
            **arguments,
        )


@pytest.mark.parametrize("num_clips", [0, -1, 1.5, True])
def test_bad_num_clips_is_named(num_clips: object) -> None:
    with pytest.raises(ValueError, match="num_clips"):
        sample_test_clips(10, 4, "uniform", num_clips)  # type: ignore[arg-type]
