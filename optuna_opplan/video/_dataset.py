"""The video dataset: decord decoding, clip sampling, augmentation, hostile-file handling."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
import copy
import os
from pathlib import Path
from typing import Any
import warnings

import decord
import numpy as np
import torch
from torch.utils.data import Dataset

from optuna_opplan.video._errors import VideoReadError
from optuna_opplan.video._frame_cache import FrameCache
from optuna_opplan.video._listfile import VIDEO_EXTENSIONS
from optuna_opplan.video._listfile import VideoEntry
from optuna_opplan.video._listfile import read_class_file
from optuna_opplan.video._listfile import read_list_file
from optuna_opplan.video._listfile import scan_class_folders
from optuna_opplan.video._sampling import SAMPLINGS
from optuna_opplan.video._sampling import sample_clip_indices
from optuna_opplan.video._sampling import sample_test_clips
from optuna_opplan.video._transforms import ClipTransform

MODES = ("train", "val", "test")
ON_ERROR = ("raise", "skip")
_DECODE_ERRORS = (decord.DECORDError, RuntimeError, OSError, IndexError)


class VideoDataset(Dataset[tuple[torch.Tensor, int]]):
    """Labelled videos decoded with decord into augmented, normalised clips.

    An item is ``(clip, label)``. In ``"train"`` mode the clip is one randomly sampled and
    augmented ``(3, T, H, W)`` float tensor; in ``"val"`` mode the centre clip's centre crop
    (the planning-time evaluation); in ``"test"`` mode ``num_test_clips`` uniformly spread clips
    x 3 crops, shape ``(num_test_clips * 3, 3, T, S, S)``, clip-major. Randomness comes from
    torch's generator, which DataLoader seeds per worker, so ``torch.manual_seed`` makes a run
    repeatable.

    Each item opens its video once and decodes only the frames it needs in one sorted batch,
    so decord seeks keyframe to keyframe; readers are never shared, so the dataset works in
    DataLoader workers.

    Broken videos (missing, truncated, corrupt, zero frames, not a video extension) are found
    by :meth:`validate`, run at construction unless ``validate=False``: with
    ``on_error="raise"`` it fails on the first one, naming it; with ``"skip"`` it drops them
    with one warning and records them in :attr:`skipped`, unless they are more than
    ``max_skipped`` of the list (a wrong root or list file, not a few damaged videos): then it
    fails, naming a few. A video that still fails while
    loading raises :class:`VideoReadError` naming it, or in skip mode is replaced by the next
    readable entry (deterministically) and counted in :attr:`load_failures`.

    Args:
        root: Folder the entries' paths are relative to.
        entries: The labelled videos.
        classes: Class names; labels index them.
        clip_length: Frames per clip.
        sampling: ``"consecutive"``, ``"strided"`` or ``"uniform"``.
        mode: ``"train"``, ``"val"`` or ``"test"``.
        transform: Augmentation and crop sizes; ``ClipTransform()`` when omitted.
        num_test_clips: Clips per video in ``"test"`` mode.
        on_error: ``"raise"`` or ``"skip"``.
        max_skipped: The share of the videos that skip mode may drop (0 to 1).
        validate: Probe every video now.
        extensions: File extensions accepted as videos.
        decoded_cache_mb: Keep up to this many megabytes of whole decoded videos in memory
            (a :class:`FrameCache` shared with every view derived from this dataset), so each
            video is decoded once (videos past the budget as without it); 0 (the default)
            decodes on every access. Clips are the same to the bit either way. It fills in
            the process that decodes, so it pays off with ``num_workers=0``.

    Example:
        >>> import tempfile
        >>> from optuna_opplan.video.synthetic import generate
        >>> data = generate(tempfile.mkdtemp(), flavour="motion", num_classes=2,
        ...                 videos_per_class=2, num_frames=(16, 16), size=32)
        >>> dataset = VideoDataset.from_list_file(
        ...     data.root, data.train_list, data.class_file, clip_length=4,
        ...     transform=ClipTransform(crop_size=24, scale_range=(32, 36), eval_short_side=32))
        >>> clip, label = dataset[0]
        >>> tuple(clip.shape), clip.dtype, label
        ((3, 4, 24, 24), torch.float32, 0)
        >>> tuple(dataset.with_clip(clip_length=8).with_mode("val")[0][0].shape)
        (3, 8, 24, 24)
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        entries: Sequence[VideoEntry],
        classes: Sequence[str],
        *,
        clip_length: int = 16,
        sampling: str = "consecutive",
        mode: str = "train",
        transform: ClipTransform | None = None,
        num_test_clips: int = 10,
        on_error: str = "raise",
        validate: bool = True,
        extensions: tuple[str, ...] = VIDEO_EXTENSIONS,
        max_skipped: float = 0.05,
        decoded_cache_mb: float = 0,
    ) -> None:
        self._root = Path(root)
        if not self._root.is_dir():
            raise FileNotFoundError(
                f"Dataset root {str(self._root)!r} does not exist or is not a folder."
            )
        self._classes = [str(c) for c in classes]
        if not self._classes:
            raise ValueError("`classes` must name at least one class.")
        self._entries = self._check_entries(entries)
        _check_clip(clip_length, sampling)
        self._clip_length = clip_length
        self._sampling = sampling
        self._mode = _check_choice("mode", mode, MODES)
        if transform is None:
            transform = ClipTransform()
        if not isinstance(transform, ClipTransform):
            raise TypeError(
                f"`transform` must be a ClipTransform or None, but got {type(transform).__name__}."
            )
        self._transform = transform
        if (
            isinstance(num_test_clips, bool)
            or not isinstance(num_test_clips, int)
            or num_test_clips <= 0
        ):
            raise ValueError(
                "`num_test_clips` must be a positive int, but got "
                f"num_test_clips={num_test_clips!r}."
            )
        self._num_test_clips = num_test_clips
        self._on_error = _check_choice("on_error", on_error, ON_ERROR)
        if (
            isinstance(max_skipped, bool)
            or not isinstance(max_skipped, (int, float))
            or not 0 <= max_skipped <= 1
        ):
            raise ValueError(
                "`max_skipped` must be a share between 0 and 1, but got "
                f"max_skipped={max_skipped!r}."
            )
        self._max_skipped = float(max_skipped)
        self._extensions = tuple(e.lower() for e in extensions)
        if (
            isinstance(decoded_cache_mb, bool)
            or not isinstance(decoded_cache_mb, (int, float))
            or not decoded_cache_mb >= 0
        ):
            raise ValueError(
                "`decoded_cache_mb` must be a number of megabytes >= 0 (0: no cache), but got "
                f"decoded_cache_mb={decoded_cache_mb!r}."
            )
        self._cache = FrameCache(decoded_cache_mb) if decoded_cache_mb > 0 else None
        self._skipped: list[tuple[str, str]] = []
        self._reset_failures()
        if validate:
            self.validate()

    @classmethod
    def from_list_file(
        cls,
        root: str | os.PathLike[str],
        list_file: str | os.PathLike[str],
        class_file: str | os.PathLike[str],
        **kwargs: Any,
    ) -> VideoDataset:
        """Build from an mmaction2-style list file and a class file (one name per line).

        See :func:`read_list_file` for the rules; ``kwargs`` go to the constructor.
        """
        classes = read_class_file(class_file)
        return cls(root, read_list_file(list_file, root, classes), classes, **kwargs)

    @classmethod
    def from_folders(cls, root: str | os.PathLike[str], **kwargs: Any) -> VideoDataset:
        """Build from a folder-per-class layout; see :func:`scan_class_folders`."""
        entries, classes = scan_class_folders(root, kwargs.get("extensions", VIDEO_EXTENSIONS))
        return cls(root, entries, classes, **kwargs)

    @property
    def root(self) -> Path:
        """The folder entry paths are relative to."""
        return self._root

    @property
    def entries(self) -> list[VideoEntry]:
        """The entries served (after any skipped by :meth:`validate`)."""
        return list(self._entries)

    @property
    def classes(self) -> list[str]:
        """Class names, indexed by label."""
        return list(self._classes)

    @property
    def labels(self) -> list[int]:
        """The label of every entry, in order."""
        return [e.label for e in self._entries]

    @property
    def clip_length(self) -> int:
        """Frames per clip."""
        return self._clip_length

    @property
    def sampling(self) -> str:
        """``"consecutive"``, ``"strided"`` or ``"uniform"``."""
        return self._sampling

    @property
    def mode(self) -> str:
        """``"train"``, ``"val"`` or ``"test"``."""
        return self._mode

    @property
    def transform(self) -> ClipTransform:
        """Augmentation and crop settings."""
        return self._transform

    @property
    def decoded_cache(self) -> FrameCache | None:
        """The cache of decoded videos (its :meth:`FrameCache.stats`), or :obj:`None`."""
        return self._cache

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """``(path, reason)`` of every video :meth:`validate` dropped."""
        return list(self._skipped)

    @property
    def load_failures(self) -> list[str]:
        """Paths that failed while loading in skip mode and were substituted (all workers)."""
        return [self._entries[i].path for i in torch.nonzero(self._failed).flatten().tolist()]

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return (
            f"VideoDataset(root={str(self._root)!r}, videos={len(self)}, "
            f"classes={len(self._classes)}, clip_length={self._clip_length}, "
            f"sampling={self._sampling!r}, mode={self._mode!r})"
        )

    def with_clip(
        self, *, clip_length: int | None = None, sampling: str | None = None
    ) -> VideoDataset:
        """A light copy with another clip length and/or sampling (nothing is re-probed)."""
        clip_length = self._clip_length if clip_length is None else clip_length
        sampling = self._sampling if sampling is None else sampling
        _check_clip(clip_length, sampling)
        return self._copy(_clip_length=clip_length, _sampling=sampling)

    def with_mode(self, mode: str) -> VideoDataset:
        """A light copy in another mode (``"train"``, ``"val"`` or ``"test"``)."""
        return self._copy(_mode=_check_choice("mode", mode, MODES))

    def with_entries(self, entries: Sequence[VideoEntry]) -> VideoDataset:
        """A light copy over other entries of the same root, e.g. one side of a split.

        Example:
            >>> from optuna_opplan.video import split_train_val
            >>> dataset = VideoDataset(".", [VideoEntry("a.mp4", 0), VideoEntry("b.mp4", 0)],
            ...                        ["cat"], validate=False)
            >>> train, val = split_train_val(dataset.entries, 0.5, seed=0)
            >>> len(dataset.with_entries(train)), len(dataset.with_entries(val))
            (1, 1)
        """
        subset = self._copy(_entries=self._check_entries(entries))
        subset._reset_failures()
        return subset

    def validate(self, on_error: str | None = None) -> int:
        """Probe every video; drop or reject the unreadable ones.

        A video passes when its extension is a video extension, the file exists inside the
        root, decord opens it, it has frames and its last frame decodes (which catches most
        truncation).

        Args:
            on_error: ``"raise"`` or ``"skip"``; the dataset's setting when omitted.

        Returns:
            The number of videos dropped by this call.

        Raises:
            VideoReadError: In raise mode, for the first bad video, naming it.
        """
        mode = (
            self._on_error if on_error is None else _check_choice("on_error", on_error, ON_ERROR)
        )
        kept: list[VideoEntry] = []
        dropped: list[tuple[str, str]] = []
        # decord's calls release the GIL, so threads probe a large dataset several times faster.
        pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
        try:
            for entry, reason in zip(
                self._entries, pool.map(self._probe, self._entries), strict=True
            ):
                if reason is None:
                    kept.append(entry)
                    continue
                if mode == "raise":
                    raise VideoReadError(f"{self._root / entry.path}: {reason}.")
                dropped.append((entry.path, reason))
        finally:
            pool.shutdown(cancel_futures=True)
        if len(dropped) > self._max_skipped * len(self._entries):
            raise VideoReadError(
                f"{len(dropped)} of {len(self._entries)} videos under {str(self._root)!r} "
                f"cannot be read ({len(dropped) / len(self._entries):.0%}, more than "
                f"max_skipped={self._max_skipped:g} of them): is the root or the list right? "
                "E.g. " + "; ".join(f"{p}: {r}" for p, r in dropped[:3]) + "."
            )
        if dropped:
            warnings.warn(
                f"Skipped {len(dropped)} of {len(self._entries)} videos under "
                f"{str(self._root)!r} that cannot be read, e.g. "
                + "; ".join(f"{p}: {r}" for p, r in dropped[:3]),
                stacklevel=2,
            )
            if not kept:
                raise VideoReadError(f"No readable video left under {str(self._root)!r}.")
            self._entries = kept
            self._skipped = self._skipped + dropped
            self._reset_failures()
        return len(dropped)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} videos.")
        index %= len(self)
        rng: np.random.Generator | None = None
        generator: torch.Generator | None = None
        if self._mode == "train":
            seed = int(torch.randint(0, 2**62, (1,)))
            rng = np.random.default_rng(seed)
            generator = torch.Generator().manual_seed(seed)
        entry = self._entries[index]
        try:
            frames = self._decode(entry, rng)
        except VideoReadError as error:
            if self._on_error == "raise":
                raise
            self._failed[index] = True
            entry, frames = self._substitute(index, rng)
            warnings.warn(f"{error} Served {entry.path!r} in its place.", stacklevel=2)
        if self._mode == "train":
            assert generator is not None
            return self._transform.train(frames, generator), entry.label
        if self._mode == "val":
            return self._transform.center(frames), entry.label
        views = [self._transform.three_crop(clip) for clip in frames.split(self._clip_length)]
        return torch.cat(views), entry.label

    def _decode(self, entry: VideoEntry, rng: np.random.Generator | None) -> torch.Tensor:
        path = self._root / entry.path
        if not entry.path.lower().endswith(self._extensions):
            raise VideoReadError(f"{path}: {self._extension_reason()}.")
        try:
            cached = self._cache.get(str(path)) if self._cache is not None else None
            reader = None
            if cached is None:
                reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
                num_frames = len(reader)
            else:
                num_frames = len(cached)
            if num_frames <= 0:
                raise VideoReadError(f"{path}: the video has no frames.")
            if self._mode == "test":
                indices = sample_test_clips(
                    num_frames, self._clip_length, self._sampling, self._num_test_clips
                ).reshape(-1)
            else:
                indices = sample_clip_indices(
                    num_frames,
                    self._clip_length,
                    self._sampling,
                    train=self._mode == "train",
                    rng=rng,
                )
            if reader is not None and self._cache is not None:
                cached = self._decode_whole(reader, str(path))
            if cached is not None:
                return torch.from_numpy(cached[indices])
            assert reader is not None
            # One sorted batch without repeats lets decord decode forward from keyframes.
            unique, inverse = np.unique(indices, return_inverse=True)
            batch = reader.get_batch(unique.tolist()).asnumpy()
        except _DECODE_ERRORS as error:
            if not path.is_file():
                raise VideoReadError(f"{path}: the file does not exist.") from None
            raise VideoReadError(f"{path}: cannot decode ({_first_line(error)}).") from error
        return torch.from_numpy(batch)[torch.from_numpy(inverse.astype(np.int64))]

    def _decode_whole(self, reader: Any, key: str) -> np.ndarray | None:
        """All of a video's frames, kept in the cache; :obj:`None` if it would not fit."""
        assert self._cache is not None
        num_frames = len(reader)
        if not self._cache.admits(key, lambda: num_frames * reader[0].asnumpy().nbytes):
            return None
        frames = reader.get_batch(list(range(num_frames))).asnumpy()
        self._cache.put(key, frames)
        return frames

    def _substitute(
        self, index: int, rng: np.random.Generator | None
    ) -> tuple[VideoEntry, torch.Tensor]:
        for step in range(1, len(self._entries)):
            other = (index + step) % len(self._entries)
            if bool(self._failed[other]):
                continue
            try:
                return self._entries[other], self._decode(self._entries[other], rng)
            except VideoReadError:
                self._failed[other] = True
        raise VideoReadError(f"No readable video left under {str(self._root)!r}.")

    def _probe(self, entry: VideoEntry) -> str | None:
        path = self._root / entry.path
        if not entry.path.lower().endswith(self._extensions):
            return self._extension_reason()
        if not path.is_file():
            return "the file does not exist"
        if not path.resolve().is_relative_to(self._root.resolve()):
            return "the file resolves outside the dataset root"
        try:
            reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
            num_frames = len(reader)
            if num_frames <= 0:
                return "the video has no frames"
            reader.get_batch([num_frames - 1])
        except _DECODE_ERRORS as error:
            return f"cannot decode ({_first_line(error)})"
        return None

    def _extension_reason(self) -> str:
        return f"not a video file extension (expected one of {self._extensions})"

    def _check_entries(self, entries: Sequence[VideoEntry]) -> list[VideoEntry]:
        checked = []
        for position, entry in enumerate(entries):
            if not isinstance(entry, tuple) or len(entry) != 2:
                raise TypeError(
                    f"`entries[{position}]` must be a VideoEntry(path, label), but got {entry!r}."
                )
            path, label = entry
            if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
                raise TypeError(f"`entries[{position}]` has a non-int label {label!r}.")
            if not 0 <= label < len(self._classes):
                raise ValueError(
                    f"`entries[{position}]` ({path!r}) has label {label}, out of range for "
                    f"{len(self._classes)} classes."
                )
            if Path(path).is_absolute() or not (self._root / path).resolve().is_relative_to(
                self._root.resolve()
            ):
                raise ValueError(
                    f"`entries[{position}]` path {path!r} is not inside the dataset root "
                    f"{str(self._root)!r}."
                )
            checked.append(VideoEntry(str(path), int(label)))
        if not checked:
            raise ValueError("`entries` must hold at least one video.")
        return checked

    def _reset_failures(self) -> None:
        # Shared memory, so flags set inside DataLoader workers are visible to the parent.
        self._failed = torch.zeros(len(self._entries), dtype=torch.bool).share_memory_()

    def _copy(self, **attributes: Any) -> VideoDataset:
        clone = copy.copy(self)
        clone.__dict__.update(attributes)
        return clone


def _check_clip(clip_length: int, sampling: str) -> None:
    if isinstance(clip_length, bool) or not isinstance(clip_length, int) or clip_length <= 0:
        raise ValueError(
            f"`clip_length` must be a positive int, but got clip_length={clip_length!r}."
        )
    _check_choice("sampling", sampling, SAMPLINGS)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, but got {name}={value!r}.")
    return value


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
