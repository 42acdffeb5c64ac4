"""A bounded in-memory store of decoded videos, for datasets small enough to keep.

Decoding is most of the cost of an epoch on small videos: on the benchmark's 32 px clips,
decord's seeks took 60-84% of a validation pass. Decoding a short video whole is cheaper than
seeking to a uniform clip's frames in it, and the frames are the same to the bit, so a dataset
that fits in memory is decoded once and sampled from memory after.
"""

from __future__ import annotations

from collections.abc import Callable
import threading
from typing import Any

import numpy as np


class FrameCache:
    """Whole decoded videos (``(T, H, W, 3)`` uint8 arrays) by path, up to a budget.

    Videos are kept until ``max_mb`` megabytes (2**20 bytes) are spent; a video that does not
    fit in what is left is refused for good, and its dataset decodes it on every access as
    without a cache. Nothing is evicted: an epoch visits every video, so dropping one to keep
    another would only change which video is decoded again, and each such miss would decode a
    whole video instead of a clip's frames.

    One cache is shared by a dataset and every view derived from it (another clip length,
    mode or subset of entries), so a validation split reuses what training decoded. A copy sent
    to a DataLoader worker starts empty and fills in that worker, so it pays off where decoding
    runs in one long-lived process: ``num_workers=0``, which is what small videos want anyway.

    Args:
        max_mb: The budget in megabytes; must be positive.

    Example:
        >>> import numpy as np
        >>> cache = FrameCache(max_mb=1)
        >>> cache.put("a.mp4", np.zeros((4, 32, 32, 3), np.uint8))
        True
        >>> cache.get("a.mp4").shape, cache.get("b.mp4")
        ((4, 32, 32, 3), None)
        >>> cache.put("c.mp4", np.zeros((400, 32, 32, 3), np.uint8))  # 1.2 MB
        False
        >>> cache.stats()
        {'videos': 1, 'megabytes': 0.01, 'hits': 1, 'misses': 1, 'refused': 1}
    """

    def __init__(self, max_mb: float) -> None:
        if isinstance(max_mb, bool) or not isinstance(max_mb, (int, float)) or not max_mb > 0:
            raise ValueError(f"`max_mb` must be a positive number, but got max_mb={max_mb!r}.")
        self.max_bytes = int(max_mb * 2**20)
        self._reset()

    def _reset(self) -> None:
        self._videos: dict[str, np.ndarray] = {}
        self._refused: set[str] = set()
        self._bytes = 0
        self._counts = {"hits": 0, "misses": 0, "refused": 0}
        # Decoding releases the GIL, so a thread pool may fill the cache concurrently.
        self._lock = threading.Lock()

    def admits(self, key: str, nbytes: Callable[[], int]) -> bool:
        """Whether the video ``key`` would be kept now. ``nbytes`` is asked at most once a
        key: a refused video stays refused, so it is not measured (decoded) again."""
        with self._lock:
            if key in self._videos:
                return True
            if key in self._refused:
                return False
        size = nbytes()
        with self._lock:
            if self._bytes + size <= self.max_bytes:
                return True
            self._refused.add(key)
            self._counts["refused"] += 1
        return False

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            frames = self._videos.get(key)
            self._counts["hits" if frames is not None else "misses"] += 1
            return frames

    def put(self, key: str, frames: np.ndarray) -> bool:
        """Keep ``frames`` (read-only from now on); :obj:`False` if they do not fit in what
        is left of the budget."""
        if not self.admits(key, lambda: frames.nbytes):
            return False
        # Cached frames are shared by every later item: a write would corrupt them all.
        frames.flags.writeable = False
        with self._lock:
            if self._bytes + frames.nbytes - self._size(key) > self.max_bytes:
                # Another thread spent the room since admits(): this one is refused.
                self._refused.add(key)
                self._counts["refused"] += 1
                return False
            self._bytes += frames.nbytes - self._size(key)
            self._videos[key] = frames
        return True

    def _size(self, key: str) -> int:
        old = self._videos.get(key)
        return 0 if old is None else old.nbytes

    def stats(self) -> dict[str, Any]:
        """Videos and megabytes held, lookups so far and videos refused, in this process."""
        with self._lock:
            return {
                "videos": len(self._videos),
                "megabytes": round(self._bytes / 2**20, 2),
                **self._counts,
            }

    def __getstate__(self) -> dict[str, Any]:
        # A worker process gets the budget, not the frames (or the parent's lock).
        return {"max_bytes": self.max_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.max_bytes = state["max_bytes"]
        self._reset()
