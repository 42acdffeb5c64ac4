from __future__ import annotations

from collections import Counter
import json
from pathlib import Path
from typing import Any

import decord
import numpy as np
import pytest
from video_fixtures import frame_levels
from video_fixtures import ramp_frames
from video_fixtures import tiny_synthetic
from video_fixtures import write_ramp_video

from optuna_opplan.video import read_class_file
from optuna_opplan.video import read_list_file
from optuna_opplan.video.synthetic import _render
from optuna_opplan.video.synthetic import ensure_dataset
from optuna_opplan.video.synthetic import generate
from optuna_opplan.video.synthetic import write_video

TINY: dict[str, Any] = {
    "num_classes": 2,
    "videos_per_class": 3,
    "num_frames": (16, 24),
    "size": 32,
}


def _read(path: Path) -> decord.VideoReader:
    return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)


@pytest.mark.parametrize(("num_frames", "height", "width"), [(20, 32, 32), (9, 32, 64)])
def test_decord_reads_back_what_write_video_wrote(
    tmp_path: Path, num_frames: int, height: int, width: int
) -> None:
    path = tmp_path / "ramp.mp4"
    write_ramp_video(path, num_frames, height, width)
    reader = _read(path)
    assert len(reader) == num_frames
    frames = reader.get_batch(list(range(num_frames))).asnumpy()
    assert frames.shape == (num_frames, height, width, 3)
    written = ramp_frames(num_frames, height, width)
    assert np.abs(frames.astype(np.int64) - written).mean() < 3
    assert frame_levels(frames).tolist() == list(range(num_frames))


def test_random_access_lands_on_the_right_frame(tmp_path: Path) -> None:
    path = tmp_path / "ramp.mp4"
    write_ramp_video(path, 28)
    indices = [27, 3, 16, 9, 0]
    frames = _read(path).get_batch(indices).asnumpy()
    assert frame_levels(frames).tolist() == indices


@pytest.mark.parametrize(
    ("frames", "kwargs", "message"),
    [
        (np.zeros((4, 16, 16, 3), np.float32), {}, "uint8"),
        (np.zeros((0, 16, 16, 3), np.uint8), {}, "at least one"),
        (np.zeros((4, 15, 16, 3), np.uint8), {}, "even"),
        (np.zeros((4, 16, 16, 4), np.uint8), {}, "RGB"),
        (np.zeros((4, 16, 16, 3), np.uint8), {"fps": 0}, "fps"),
    ],
)
def test_write_video_rejects_bad_input(
    tmp_path: Path, frames: np.ndarray, kwargs: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        write_video(tmp_path / "x.mp4", frames, **kwargs)


@pytest.mark.parametrize("flavour", ["temporal", "motion", "rhythm"])
def test_generate_writes_real_videos_and_list_files(tmp_path: Path, flavour: str) -> None:
    data = tiny_synthetic(tmp_path / "data", flavour=flavour)
    classes = read_class_file(data.class_file)
    count = 3 if flavour == "rhythm" else 2
    assert tuple(classes) == data.classes and len(classes) == count
    train = read_list_file(data.train_list, data.root, classes)
    test = read_list_file(data.test_list, data.root, classes)
    assert len(train) == 2 * count and len(test) == count
    assert not {e.path for e in train} & {e.path for e in test}
    assert sorted(e.label for e in train) == sorted(list(range(count)) * 2)
    for entry in train + test:
        reader = _read(data.root / entry.path)
        assert 16 <= len(reader) <= 24
        assert reader[0].shape == (32, 32, 3)
        assert entry.path.split("/")[1] == classes[entry.label]


def _decoded(root: Path) -> dict[str, np.ndarray]:
    videos = {p.relative_to(root).as_posix(): _read(p) for p in sorted(root.rglob("*.mp4"))}
    return {name: r.get_batch(list(range(len(r)))).asnumpy() for name, r in videos.items()}


def test_generate_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    first = tiny_synthetic(tmp_path / "a", seed=5)
    again = tiny_synthetic(tmp_path / "b", seed=5)
    other = tiny_synthetic(tmp_path / "c", seed=6)
    for name in ("classes.txt", "train.txt", "test.txt"):
        assert (first.root / name).read_text() == (again.root / name).read_text()
    # Decoded frames, to the level: lossless H.264 decodes to the written frames whatever
    # x264 decides (its lossy files differed now and then from run to run).
    frames, frames_again, frames_other = (_decoded(d.root) for d in (first, again, other))
    assert frames.keys() == frames_again.keys() == frames_other.keys()
    for name, video in frames.items():
        assert video.shape == frames_again[name].shape
        assert np.array_equal(video, frames_again[name]), name
    assert any(
        video.shape != frames_other[name].shape
        or np.abs(video.astype(np.int64) - frames_other[name]).mean() > 5.0
        for name, video in frames.items()
    )


def test_temporal_class_is_the_first_and_last_colour() -> None:
    # Class 1 is green_to_red: the square starts green and ends red.
    frames = _render("temporal", 1, 60, 32, np.random.default_rng(0))
    green, red = (40, 200, 60), (230, 40, 40)
    assert np.all(frames[0] == green, axis=-1).sum() > 20
    assert np.all(frames[-1] == red, axis=-1).sum() > 20
    assert not np.all(frames[0] == red, axis=-1).any()


@pytest.mark.parametrize(("label", "direction"), [(0, 1), (1, -1), (2, 1), (3, -1)])
def test_motion_class_is_the_stripe_direction_between_adjacent_frames(
    label: int, direction: int
) -> None:
    frames = _render("motion", label, 80, 64, np.random.default_rng(label)).astype(np.float64)
    votes = 0
    for before, after in zip(frames[:-1], frames[1:], strict=True):
        down = np.abs(np.roll(before, 2, axis=0) - after).sum()
        up = np.abs(np.roll(before, -2, axis=0) - after).sum()
        votes += int(np.sign(up - down))
    # Stripes move 2 pixels a frame in the class direction during bursts.
    assert votes * direction > 10


def _steps(frames: np.ndarray, stride: int) -> str:
    """The stripes' movement between frames ``stride`` apart: u(p), d(own) or . (still)."""
    return "".join(
        {-stride: "u", 0: ".", stride: "d"}[
            min((-stride, 0, stride), key=lambda s: np.abs(np.roll(a, s, axis=0) - b).sum())
        ]
        for a, b in zip(frames[:-stride], frames[stride:], strict=True)
    )


def _smoothed(seen: str) -> str:
    # The patch drifts too, and its rounded position now and then adds a pixel to a step:
    # the majority of 5 steps reads the stripes' own movement.
    return "".join(
        Counter(seen[max(0, i - 2) : i + 3]).most_common(1)[0][0] for i in range(len(seen))
    )


@pytest.mark.parametrize(("label", "movements"), [(0, "ud"), (1, "u."), (2, "d."), (3, "ud")])
def test_rhythm_class_is_the_pair_of_alternating_movements(label: int, movements: str) -> None:
    frames = _render("rhythm", label, 96, 64, np.random.default_rng(label)).astype(np.float64)
    seen = _smoothed(_steps(frames, 1))
    # Each of the class's two movements fills about half the steps, the third none...
    for movement in "ud.":
        share = seen.count(movement) / len(seen)
        assert share > 0.3 if movement in movements else share < 0.05, (movement, seen)
    # ...in runs of 24 frames: a strided 16-frame clip (31 frames, 30 steps) always sees both,
    # a consecutive one (15 steps) often only one.
    strided = [seen[i : i + 30] for i in range(len(seen) - 29)]
    assert all(all(m in w for m in movements) for w in strided), seen
    short = [seen[i : i + 15] for i in range(len(seen) - 14)]
    assert sum(not all(m in w for m in movements) for w in short) / len(short) > 0.25, seen
    # Frames 2 apart (strided sampling) still show the class's movements and seldom the third
    # (where the patch drifts against the stripes, a step of 2 pixels can read as 1: still).
    apart = _smoothed(_steps(frames, 2))
    for movement in "ud.":
        share = apart.count(movement) / len(apart)
        assert share > 0.15 if movement in movements else share < 0.1, (movement, apart)


def test_motion_direction_aliases_at_stride_four() -> None:
    # Every 4th frame the stripes have moved a whole period: the direction is invisible.
    frames = _render("motion", 0, 80, 64, np.random.default_rng(0)).astype(np.float64)
    sub = frames[::4]
    still = sum(np.abs(b - a).sum() for a, b in zip(sub[:-1], sub[1:], strict=True))
    moved = sum(
        np.abs(np.roll(a, s, axis=0) - b).sum()
        for a, b in zip(sub[:-1], sub[1:], strict=True)
        for s in (2, -2)
    )
    assert still < moved / 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"flavour": "spatial"}, "flavour"),
        ({"flavour": "motion", "num_classes": 3}, "even"),
        ({"flavour": "rhythm", "num_classes": 4}, "a multiple of 3"),
        ({"flavour": "temporal", "num_classes": 1}, "num_classes"),
        ({"flavour": "motion", "size": 33}, "even"),
        ({"flavour": "motion", "num_frames": (20, 10)}, "num_frames"),
        ({"flavour": "motion", "test_fraction": 1.0}, "test_fraction"),
        ({"flavour": "motion", "videos_per_class": 1}, "videos_per_class"),
    ],
)
def test_generate_rejects_bad_settings(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate(tmp_path / "x", **kwargs)


def test_generate_rejects_a_size_decord_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="decord cannot read back 48 x 48"):
        generate(tmp_path, flavour="motion", **{**TINY, "size": 48})


def test_generate_refuses_a_non_empty_root(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="empty"):
        generate(tmp_path, flavour="motion", **TINY)


def test_ensure_dataset_generates_once_and_regenerates_on_new_settings(tmp_path: Path) -> None:
    first = ensure_dataset(tmp_path, flavour="motion", **TINY)
    assert first.root == tmp_path / "motion"
    marker = json.loads((first.root / "synthetic.json").read_text())
    assert marker["settings"]["num_classes"] == 2
    stamp = first.train_list.stat().st_mtime_ns
    again = ensure_dataset(tmp_path, flavour="motion", **TINY)
    assert again == first
    assert again.train_list.stat().st_mtime_ns == stamp
    changed = ensure_dataset(tmp_path, flavour="motion", **{**TINY, "seed": 1})
    assert changed.settings["seed"] == 1
    assert json.loads((changed.root / "synthetic.json").read_text())["settings"]["seed"] == 1
    # No staging or stale folders are left behind; only the dataset and its lock.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".motion.lock", "motion"]


def test_ensure_dataset_replaces_a_half_written_cache(tmp_path: Path) -> None:
    (tmp_path / "temporal").mkdir()
    (tmp_path / "temporal" / "train.txt").write_text("half")
    data = ensure_dataset(tmp_path, flavour="temporal", **TINY)
    assert len(read_list_file(data.train_list, data.root, list(data.classes))) == 4


def test_ensure_dataset_requires_a_flavour(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="flavour"):
        ensure_dataset(tmp_path, **TINY)
