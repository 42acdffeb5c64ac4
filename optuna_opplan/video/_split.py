"""The internal validation split that planning evaluates on."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from optuna_opplan.video._listfile import VideoEntry


def split_train_val(
    entries: Sequence[VideoEntry], fraction: float, seed: int
) -> tuple[list[VideoEntry], list[VideoEntry]]:
    """Carve a stratified internal validation split out of the training entries.

    Each class gives ``round(fraction * n)`` of its ``n`` videos, but at least one and at most
    ``n - 1`` when it has two or more, so every such class is both trained and validated on; a
    class with a single video stays in training. Which videos go is a seeded shuffle of the
    class's videos sorted by path, so the split depends only on the set of entries, the fraction
    and the seed, not on their order. Both parts keep the input order.

    Args:
        entries: The training entries (the test split is never passed here).
        fraction: Share of each class to hold out, in ``(0, 1)``.
        seed: Seed of the shuffle.

    Returns:
        ``(train, val)``.

    Example:
        >>> entries = [VideoEntry(f"{c}/{i}.mp4", c) for c in range(2) for i in range(4)]
        >>> train, val = split_train_val(entries, 0.25, seed=0)
        >>> len(train), sorted(e.label for e in val)
        (6, [0, 1])
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise ValueError(f"`fraction` must be a float in (0, 1), but got fraction={fraction!r}.")
    if not 0 < fraction < 1:
        raise ValueError(f"`fraction` must be a float in (0, 1), but got fraction={fraction}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"`seed` must be an int, but got seed={seed!r}.")
    if len({e.path for e in entries}) != len(entries):
        raise ValueError("`entries` must not repeat a path: a video would land in both splits.")
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[VideoEntry]] = {}
    for entry in entries:
        by_class.setdefault(entry.label, []).append(entry)
    held_out: set[str] = set()
    # Classes in label order so the shared generator is consumed the same way every time.
    for label in sorted(by_class):
        videos = sorted(by_class[label], key=lambda e: e.path)
        count = len(videos)
        take = min(max(round(fraction * count), 1), count - 1) if count >= 2 else 0
        for index in rng.permutation(count)[:take]:
            held_out.add(videos[int(index)].path)
    train = [e for e in entries if e.path not in held_out]
    val = [e for e in entries if e.path in held_out]
    return train, val
