from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from optuna_opplan.video._frame_cache import FrameCache


def _video(kib: int) -> np.ndarray:
    return np.zeros((kib, 32, 32), np.uint8)  # 1 KiB a frame


@pytest.mark.parametrize(
    ("sizes", "kept"),
    [
        # 400 + 400 KiB fit in 1 MiB; the third does not, and nothing is evicted for it.
        ({"a": 400, "b": 400, "c": 400}, ["a", "b"]),
        # A smaller one still fits in what is left after a refusal.
        ({"a": 400, "b": 700, "c": 600}, ["a", "c"]),
        # Larger than the whole budget.
        ({"a": 1100, "b": 10}, ["b"]),
        # Putting a key again replaces it and counts its bytes once.
        ({"a": 500, "b": 500}, ["a", "b"]),
    ],
)
def test_videos_are_kept_until_the_budget_is_spent(sizes: dict[str, int], kept: list[str]) -> None:
    cache = FrameCache(max_mb=1)
    for key, kib in sizes.items():
        assert cache.put(key, _video(kib)) is (key in kept)
    cache.put(kept[0], _video(sizes[kept[0]]))
    assert [key for key in sizes if cache.get(key) is not None] == kept
    assert cache.stats()["megabytes"] == round(sum(sizes[k] for k in kept) / 1024, 2)
    assert cache.stats()["refused"] == len(sizes) - len(kept)


def test_a_refused_video_is_measured_once() -> None:
    cache = FrameCache(max_mb=1)
    measured: list[str] = []

    def size() -> int:
        measured.append("x")
        return 2 * 2**20

    assert not cache.admits("big", size) and not cache.admits("big", size)
    assert measured == ["x"]  # measured (decoded) once
    assert cache.stats()["refused"] == 1


def test_kept_frames_are_read_only() -> None:
    cache = FrameCache(max_mb=1)
    cache.put("a", _video(1))
    frames = cache.get("a")
    assert frames is not None
    with pytest.raises(ValueError, match="read-only"):
        frames[0, 0, 0] = 1


def test_threads_filling_it_keep_the_budget() -> None:
    cache = FrameCache(max_mb=1)

    def fill(start: int) -> None:
        for key in range(start, start + 50):
            cache.put(str(key), _video(100))
            cache.get(str(key - 3))

    threads = [threading.Thread(target=fill, args=(n * 50,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = cache.stats()
    assert (stats["videos"], stats["refused"]) == (10, 190) and stats["megabytes"] <= 1


@pytest.mark.parametrize("max_mb", [0, -1, "1", True, None, float("nan")])
def test_the_budget_must_be_positive(max_mb: Any) -> None:
    with pytest.raises(ValueError, match=r"`max_mb` must be a positive number, but got max_mb="):
        FrameCache(max_mb)
