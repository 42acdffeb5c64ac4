from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from optuna_opplan.video._frame_cache import FrameCache


def _video(kib: int) -> np.ndarray:
    return np.zeros((kib, 32, 32), np.uint8)  # 1 KiB a frame


@pytest.mark.parametrize(
    ("puts", "reads", "kept"),
    [
        # 3 x 400 KiB in 1 MiB: the third put drops the least recently used one.
        (["a", "b", "c"], [], ["b", "c"]),
        # Reading "a" makes "b" the least recently used.
        (["a", "b", "c"], ["a"], ["a", "c"]),
        # Putting a key again replaces it and counts its bytes once.
        (["a", "a", "b"], [], ["a", "b"]),
    ],
)
def test_least_recently_used_videos_leave_first(
    puts: list[str], reads: list[str], kept: list[str]
) -> None:
    cache = FrameCache(max_mb=1)
    for index, key in enumerate(puts):
        for read in reads if index == len(puts) - 1 else []:
            cache.get(read)
        assert cache.put(key, _video(400))
    assert [key for key in "abc" if cache.get(key) is not None] == kept
    assert cache.stats()["megabytes"] == round(len(kept) * 400 / 1024, 2)


def test_a_video_over_the_budget_is_refused_once_and_remembered() -> None:
    cache = FrameCache(max_mb=1)
    cache.put("small", _video(10))
    measured: list[str] = []

    def size() -> int:
        measured.append("x")
        return 2 * 2**20

    assert not cache.admits("big", size) and not cache.admits("big", size)
    assert measured == ["x"]  # measured (decoded) once
    assert not cache.put("huge", _video(1100))
    assert cache.get("small") is not None  # a refused video evicts nothing
    assert cache.stats()["too_large"] == 2


def test_kept_frames_are_read_only() -> None:
    cache = FrameCache(max_mb=1)
    frames = _video(1)
    cache.put("a", frames)
    with pytest.raises(ValueError, match="read-only"):
        cache.get("a")[0, 0, 0] = 1  # type: ignore[index]


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
    assert cache.stats()["videos"] == 10 and cache.stats()["megabytes"] <= 1


@pytest.mark.parametrize("max_mb", [0, -1, "1", True, None, float("nan")])
def test_the_budget_must_be_positive(max_mb: Any) -> None:
    with pytest.raises(ValueError, match=r"`max_mb` must be a positive number, but got max_mb="):
        FrameCache(max_mb)
