"""A bounded in-memory cache of decoded videos, for datasets small enough to keep.

Decoding is most of the cost of an epoch on small videos: on the benchmark's 32 px clips,
decord's seeks took 60-84% of a validation pass. Decoding a short video whole is cheaper than
seeking to a uniform clip's frames in it, and the frames are the same to the bit, so a dataset
that fits in memory is decoded once and sampled from memory after.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
import threading
from typing import Any

import numpy as np


class FrameCache:
    """Whole decoded videos (``(T, H, W, 3)`` uint8 arrays) by path, least recently used out.

    It holds at most ``max_mb`` megabytes (2**20 bytes); a video larger than that is not kept.
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
        >>> cache.stats()
        {'videos': 1, 'megabytes': 0.01, 'hits': 1, 'misses': 1, 'too_large': 0}
    """

    def __init__(self, max_mb: float) -> None:
        if isinstance(max_mb, bool) or not isinstance(max_mb, (int, float)) or not max_mb > 0:
            raise ValueError(f"`max_mb` must be a positive number, but got max_mb={max_mb!r}.")
        self.max_bytes = int(max_mb * 2**20)
        self._videos: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._counts = {"hits": 0, "misses": 0, "too_large": 0}
        self._too_large: set[str] = set()
        # Decoding releases the GIL, so a thread pool may fill the cache concurrently.
        self._lock = threading.Lock()

    def admits(self, key: str, nbytes: Callable[[], int]) -> bool:
        """Whether the video ``key`` would be kept, judged by the budget, not by what is free
        now. ``nbytes`` is asked once: a video found too large is remembered as such, so it is
        not measured (decoded) again."""
        with self._lock:
            if key in self._too_large:
                return False
        if nbytes() <= self.max_bytes:
            return True
        with self._lock:
            self._too_large.add(key)
            self._counts["too_large"] += 1
        return False

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            frames = self._videos.get(key)
            if frames is None:
                self._counts["misses"] += 1
                return None
            self._videos.move_to_end(key)
            self._counts["hits"] += 1
            return frames

    def put(self, key: str, frames: np.ndarray) -> bool:
        """Keep ``frames`` (read-only from now on), dropping the least recently used videos to
        make room; :obj:`False` if it is larger than the whole budget."""
        if not self.admits(key, lambda: frames.nbytes):
            return False
        # Cached frames are shared by every later item: a write would corrupt them all.
        frames.flags.writeable = False
        with self._lock:
            old = self._videos.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            while self._videos and self._bytes + frames.nbytes > self.max_bytes:
                _, dropped = self._videos.popitem(last=False)
                self._bytes -= dropped.nbytes
            self._videos[key] = frames
            self._bytes += frames.nbytes
        return True

    def stats(self) -> dict[str, Any]:
        """Videos and megabytes held, and lookups so far in this process."""
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
        self._videos = OrderedDict()
        self._bytes = 0
        self._counts = {"hits": 0, "misses": 0, "too_large": 0}
        self._too_large = set()
        self._lock = threading.Lock()
