from __future__ import annotations

from pathlib import Path
from typing import Any
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from video_fixtures import HOSTILE_KINDS
from video_fixtures import frame_levels
from video_fixtures import tiny_synthetic
from video_fixtures import tiny_transform
from video_fixtures import write_hostile_video
from video_fixtures import write_ramp_video

from optuna_opplan.video import ClipTransform
from optuna_opplan.video import VideoDataset
from optuna_opplan.video import VideoEntry
from optuna_opplan.video import VideoReadError
from optuna_opplan.video import read_class_file
from optuna_opplan.video import read_list_file
from optuna_opplan.video import sample_clip_indices
from optuna_opplan.video import scan_class_folders
from optuna_opplan.video import split_train_val
from optuna_opplan.video._transforms import IMAGENET_MEAN
from optuna_opplan.video._transforms import IMAGENET_STD
from optuna_opplan.video.synthetic import SyntheticDataset


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> SyntheticDataset:
    return tiny_synthetic(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="module")
def ramps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ramps")
    for name, length in (("a", 20), ("b", 9), ("c", 28)):
        write_ramp_video(root / "ramp" / f"{name}.mp4", length)
    return root


def _dataset(root: Path, entries: list[VideoEntry], **kwargs: Any) -> VideoDataset:
    return VideoDataset(root, entries, ["ramp", "other"], transform=tiny_transform(), **kwargs)


def _levels(clip: torch.Tensor) -> list[int]:
    """Frame indices of a (3, T, H, W) normalised ramp clip."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1) * 255
    frames = (clip * std + mean).permute(1, 2, 3, 0).round().clamp(0, 255).to(torch.uint8)
    return frame_levels(frames.numpy()).tolist()


# List files and class files.


def _write_list(root: Path, text: str) -> Path:
    path = root / "list.txt"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ok.mp4 0\n../escape.mp4 1\n", r"list.txt:2: .*outside the dataset root"),
        ("ok.mp4 0\nsub/../../escape.mp4 1\n", r"list.txt:2: .*outside"),
        ("/etc/passwd.mp4 0\n", r"list.txt:1: .*absolute"),
        ("ok.mp4 0\n\nb.mp4 2\n", r"list.txt:3: label 2 is out of range"),
        ("ok.mp4 -1\n", r"list.txt:1: label -1 is out of range"),
        ("ok.mp4 zebra\n", r"list.txt:1: label 'zebra' is neither"),
        ("ok.mp4\n", r"list.txt:1: expected `relative/path label`"),
        ("a.mp4 0\nb.mp4 1\na.mp4 1\n", r"list.txt:3: 'a.mp4' has label 1 here but 0 on line 1"),
        ("# only a comment\n\n", r"holds no entries"),
    ],
)
def test_list_file_rejects_hostile_lines(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_list_file(_write_list(tmp_path, text), tmp_path, ["cat", "dog"])


def test_list_file_rejects_a_symlink_out_of_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.mp4").write_bytes(b"x")
    (root / "link.mp4").symlink_to(tmp_path / "secret.mp4")
    with pytest.raises(ValueError, match=r"list.txt:1: path 'link.mp4' resolves to .*outside"):
        read_list_file(_write_list(root, "link.mp4 0\n"), root, ["cat"])


def test_list_file_reads_names_spaces_comments_and_drops_exact_duplicates(
    tmp_path: Path,
) -> None:
    text = "# header\ncat/a b.mp4 0\n\n./dog/c.mp4 dog\ncat/a b.mp4 0\n"
    with pytest.warns(UserWarning, match="dropped 1 duplicate entry"):
        entries = read_list_file(_write_list(tmp_path, text), tmp_path, ["cat", "dog"])
    assert entries == [VideoEntry("cat/a b.mp4", 0), VideoEntry("dog/c.mp4", 1)]


@pytest.mark.parametrize(
    ("text", "message"), [("cat\ndog\ncat\n", "line 1"), ("\n\n", "names no class")]
)
def test_class_file_rejects_duplicates_and_empty(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "classes.txt").write_text(text)
    with pytest.raises(ValueError, match=message):
        read_class_file(tmp_path / "classes.txt")


@pytest.mark.parametrize("missing", ["list", "class", "root"])
def test_missing_layout_files_are_named(tmp_path: Path, missing: str) -> None:
    (tmp_path / "classes.txt").write_text("cat\n")
    (tmp_path / "list.txt").write_text("a.mp4 0\n")
    paths = {"list": tmp_path / "list.txt", "class": tmp_path / "classes.txt", "root": tmp_path}
    paths[missing] = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        VideoDataset.from_list_file(paths["root"], paths["list"], paths["class"])


def test_class_folders_list_videos_and_warn_about_other_files(tmp_path: Path) -> None:
    for path in ("b/2.MP4", "a/1.mp4", "a/notes.txt", "a/.hidden.mp4", ".cache/x.mp4"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"")
    with pytest.warns(UserWarning, match=r"Ignored 1 file.*a/notes.txt"):
        entries, classes = scan_class_folders(tmp_path)
    assert classes == ["a", "b"]
    assert entries == [VideoEntry("a/1.mp4", 0), VideoEntry("b/2.MP4", 1)]


def test_class_folders_reject_a_symlink_out(tmp_path: Path) -> None:
    (tmp_path / "outside.mp4").write_bytes(b"")
    (tmp_path / "root" / "a").mkdir(parents=True)
    (tmp_path / "root" / "a" / "x.mp4").symlink_to(tmp_path / "outside.mp4")
    with pytest.raises(ValueError, match="outside the dataset root"):
        scan_class_folders(tmp_path / "root")


# The internal validation split.


def _entries(counts: list[int]) -> list[VideoEntry]:
    return [VideoEntry(f"c{c}/{i}.mp4", c) for c, n in enumerate(counts) for i in range(n)]


@pytest.mark.parametrize(
    ("counts", "fraction", "expected_val"),
    [
        ([10, 10], 0.2, [2, 2]),
        ([10, 4, 2, 1], 0.25, [2, 1, 1, 0]),
        ([3, 3], 0.9, [2, 2]),
        ([5, 5, 5], 0.01, [1, 1, 1]),
    ],
)
def test_split_is_stratified(counts: list[int], fraction: float, expected_val: list[int]) -> None:
    entries = _entries(counts)
    train, val = split_train_val(entries, fraction, seed=0)
    per_class = [sum(e.label == c for e in val) for c in range(len(counts))]
    assert per_class == expected_val
    assert sorted(train + val) == sorted(entries)
    assert not set(train) & set(val)


def test_split_is_deterministic_and_order_independent() -> None:
    entries = _entries([12, 9, 7])
    first = split_train_val(entries, 0.3, seed=4)
    assert split_train_val(entries, 0.3, seed=4) == first
    shuffled = [entries[i] for i in np.random.default_rng(0).permutation(len(entries))]
    _, val = split_train_val(shuffled, 0.3, seed=4)
    assert sorted(val) == sorted(first[1])
    assert sorted(split_train_val(entries, 0.3, seed=5)[1]) != sorted(first[1])
    # Both sides keep the input order.
    assert first[0] == [e for e in entries if e in first[0]]


@pytest.mark.parametrize(
    ("fraction", "seed", "message"),
    [(0.0, 0, "fraction"), (1.0, 0, "fraction"), ("0.2", 0, "fraction"), (0.2, 1.5, "seed")],
)
def test_split_rejects_bad_arguments(fraction: Any, seed: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_train_val(_entries([4]), fraction, seed)


def test_split_rejects_repeated_paths() -> None:
    with pytest.raises(ValueError, match="repeat a path"):
        split_train_val([VideoEntry("a.mp4", 0)] * 2, 0.5, 0)


# Transforms.


def _halves(width: int = 40) -> torch.Tensor:
    clip = torch.zeros(4, 32, width, 3, dtype=torch.uint8)
    clip[:, :, : width // 2, 0] = 255
    return clip


def test_train_transform_shapes_and_normalisation() -> None:
    clip = torch.full((5, 32, 40, 3), 128, dtype=torch.uint8)
    out = tiny_transform().train(clip, torch.Generator().manual_seed(0))
    assert out.shape == (3, 5, 24, 24) and out.dtype == torch.float32
    expected = [(128 / 255 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    assert torch.allclose(out.mean(dim=(1, 2, 3)), torch.tensor(expected), atol=1e-4)


@pytest.mark.parametrize(("flip", "can_flip"), [(False, False), (True, True)])
def test_flip_can_be_turned_off(flip: bool, can_flip: bool) -> None:
    transform = tiny_transform(flip=flip)
    generator = torch.Generator().manual_seed(0)
    flipped = 0
    for _ in range(40):
        out = transform.train(_halves(), generator)
        # Red on the left unless flipped.
        flipped += int(out[0, :, :, 0].mean() < out[0, :, :, -1].mean())
    assert (flipped > 5) is can_flip
    if not can_flip:
        assert flipped == 0


def test_center_and_three_crop_views() -> None:
    transform = tiny_transform()
    clip = _halves(width=64)
    centre = transform.center(clip)
    assert centre.shape == (3, 4, 24, 24)
    assert torch.equal(centre, transform.center(clip))
    crops = transform.three_crop(clip)
    assert crops.shape == (3, 3, 4, 28, 28)
    red = crops[:, 0].mean(dim=(1, 2, 3))
    # Left crop all red, right crop none, the centre crop half of each.
    assert red[0] > red[1] > red[2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"crop_size": 0}, "crop_size"),
        ({"scale_range": (20, 30)}, "scale_range"),
        ({"scale_range": (40, 30)}, "scale_range"),
        ({"eval_short_side": 10}, "eval_short_side"),
        ({"flip": "no"}, "flip"),
    ],
)
def test_transform_rejects_bad_settings(kwargs: dict[str, Any], message: str) -> None:
    settings: dict[str, Any] = {"crop_size": 24, "scale_range": (28, 36), "eval_short_side": 28}
    with pytest.raises(ValueError, match=message):
        ClipTransform(**{**settings, **kwargs})


def test_transform_rejects_a_bad_clip() -> None:
    with pytest.raises(ValueError, match="uint8"):
        tiny_transform().center(torch.zeros(4, 32, 32, 3))


# The dataset.


@pytest.mark.parametrize("layout", ["list", "folders"])
@pytest.mark.parametrize("sampling", ["consecutive", "uniform"])
def test_items_have_the_network_layout(data: SyntheticDataset, layout: str, sampling: str) -> None:
    kwargs: dict[str, Any] = {"clip_length": 8, "sampling": sampling}
    kwargs["transform"] = tiny_transform()
    if layout == "list":
        dataset = VideoDataset.from_list_file(
            data.root, data.train_list, data.class_file, **kwargs
        )
    else:
        dataset = VideoDataset.from_folders(data.root / "train", **kwargs)
    assert len(dataset) == 4
    assert dataset.classes == list(data.classes)
    labels = []
    for index in range(len(dataset)):
        clip, label = dataset[index]
        assert clip.shape == (3, 8, 24, 24) and clip.dtype == torch.float32
        assert isinstance(label, int)
        labels.append(label)
    assert labels == dataset.labels == [0, 0, 1, 1]


@pytest.mark.parametrize(
    ("sampling", "clip_length"), [("consecutive", 4), ("uniform", 4), ("consecutive", 12)]
)
def test_val_items_are_the_centre_clip(ramps: Path, sampling: str, clip_length: int) -> None:
    entries = [VideoEntry("ramp/a.mp4", 0), VideoEntry("ramp/b.mp4", 0)]
    dataset = _dataset(ramps, entries, clip_length=clip_length, sampling=sampling, mode="val")
    for (clip, _), frames in zip((dataset[0], dataset[1]), (20, 9), strict=True):
        expected = sample_clip_indices(frames, clip_length, sampling, train=False)
        assert _levels(clip) == expected.tolist()


def test_test_items_are_clips_times_three_crops(ramps: Path) -> None:
    entries = [VideoEntry("ramp/c.mp4", 0)]
    dataset = _dataset(ramps, entries, clip_length=4, sampling="uniform", mode="test")
    dataset = dataset.with_mode("test")
    views, label = dataset[0]
    assert views.shape == (3 * 10, 3, 4, 28, 28) and label == 0
    few = _dataset(ramps, entries, clip_length=4, mode="test", num_test_clips=2)
    views, _ = few[0]
    assert views.shape == (6, 3, 4, 28, 28)
    # Clip-major: the three crops of a clip show the same frames.
    assert _levels(views[0]) == _levels(views[2]) == [6, 7, 8, 9]
    assert _levels(views[3]) == [18, 19, 20, 21]


def test_train_items_repeat_under_a_seed(data: SyntheticDataset) -> None:
    dataset = VideoDataset.from_list_file(
        data.root, data.train_list, data.class_file, clip_length=4, transform=tiny_transform()
    )
    torch.manual_seed(3)
    first = dataset[1][0]
    torch.manual_seed(3)
    assert torch.equal(dataset[1][0], first)
    assert not torch.equal(dataset[1][0], first)


def test_with_clip_is_a_light_copy(data: SyntheticDataset, monkeypatch: Any) -> None:
    dataset = VideoDataset.from_list_file(
        data.root, data.train_list, data.class_file, clip_length=4, transform=tiny_transform()
    )
    monkeypatch.setattr(VideoDataset, "validate", lambda *_: pytest.fail("re-probed"))
    longer = dataset.with_clip(clip_length=16, sampling="uniform")
    assert (longer.clip_length, longer.sampling) == (16, "uniform")
    assert (dataset.clip_length, dataset.sampling) == (4, "consecutive")
    assert longer[0][0].shape == (3, 16, 24, 24)
    assert longer.with_mode("val").mode == "val" and longer.mode == "train"
    with pytest.raises(ValueError, match="clip_length=0"):
        dataset.with_clip(clip_length=0)
    with pytest.raises(ValueError, match="sampling"):
        dataset.with_clip(sampling="dense")


def test_split_subsets_share_the_root(data: SyntheticDataset) -> None:
    dataset = VideoDataset.from_list_file(
        data.root, data.train_list, data.class_file, transform=tiny_transform(), clip_length=4
    )
    train, val = split_train_val(dataset.entries, 0.5, seed=0)
    val_set = dataset.with_entries(val).with_mode("val")
    assert sorted(val_set.labels) == [0, 1]
    assert len(dataset.with_entries(train)) == 2
    assert val_set[0][0].shape == (3, 4, 24, 24)


def test_dataloader_workers_decode_in_parallel(data: SyntheticDataset) -> None:
    dataset = VideoDataset.from_list_file(
        data.root, data.train_list, data.class_file, clip_length=4, transform=tiny_transform()
    )
    loader = DataLoader(dataset, batch_size=2, num_workers=2, shuffle=True)
    batches = list(loader)
    assert [tuple(clips.shape) for clips, _ in batches] == [(2, 3, 4, 24, 24)] * 2
    assert sorted(torch.cat([labels for _, labels in batches]).tolist()) == [0, 0, 1, 1]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"clip_length": 0}, ValueError, "clip_length=0"),
        ({"sampling": "dense"}, ValueError, "sampling"),
        ({"mode": "eval"}, ValueError, "mode"),
        ({"on_error": "ignore"}, ValueError, "on_error"),
        ({"num_test_clips": 0}, ValueError, "num_test_clips"),
        ({"transform": "flip"}, TypeError, "transform"),
        ({"entries": [VideoEntry("ramp/a.mp4", 2)]}, ValueError, "label 2"),
        ({"entries": [VideoEntry("../a.mp4", 0)]}, ValueError, "not inside"),
        ({"entries": []}, ValueError, "at least one"),
        ({"classes": []}, ValueError, "classes"),
    ],
)
def test_dataset_rejects_bad_arguments(
    ramps: Path, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    arguments: dict[str, Any] = {"entries": [VideoEntry("ramp/a.mp4", 0)], "classes": ["ramp"]}
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        VideoDataset(ramps, arguments.pop("entries"), arguments.pop("classes"), **arguments)


# Hostile videos.


def _hostile(tmp_path: Path, kind: str) -> tuple[Path, list[VideoEntry]]:
    write_ramp_video(tmp_path / "good" / "a.mp4", 12)
    write_ramp_video(tmp_path / "good" / "b.mp4", 16)
    bad = "bad/x.gif" if kind == "wrong_extension" else "bad/x.mp4"
    write_hostile_video(tmp_path / bad, kind)
    entries = [VideoEntry("good/a.mp4", 0), VideoEntry(bad, 1), VideoEntry("good/b.mp4", 0)]
    return tmp_path, entries


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_probe_fails_fast_naming_the_file(tmp_path: Path, kind: str) -> None:
    root, entries = _hostile(tmp_path, kind)
    with pytest.raises(VideoReadError, match=r"bad/x\.(mp4|gif)"):
        _dataset(root, entries)


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_probe_skips_with_a_count_and_a_warning(tmp_path: Path, kind: str) -> None:
    root, entries = _hostile(tmp_path, kind)
    with pytest.warns(UserWarning, match=r"Skipped 1 of 3 videos .*bad/x"):
        dataset = _dataset(root, entries, on_error="skip", max_skipped=0.5)
    assert [e.path for e in dataset.entries] == ["good/a.mp4", "good/b.mp4"]
    assert [path for path, _ in dataset.skipped] == [entries[1].path]
    assert dataset[1][0].shape == (3, 16, 24, 24)


def test_validate_can_run_later_and_reports_the_reason(tmp_path: Path) -> None:
    root, entries = _hostile(tmp_path, "missing")
    dataset = _dataset(root, entries, validate=False, max_skipped=0.5)
    assert len(dataset) == 3
    with pytest.raises(VideoReadError, match="does not exist"):
        dataset.validate()
    with pytest.warns(UserWarning):
        assert dataset.validate(on_error="skip") == 1
    assert dataset.skipped == [("bad/x.mp4", "the file does not exist")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dataset.validate() == 0


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "zero_frames", "wrong_extension"])
def test_a_bad_file_found_while_loading_raises_naming_it(tmp_path: Path, kind: str) -> None:
    root, entries = _hostile(tmp_path, kind)
    dataset = _dataset(root, entries, validate=False, clip_length=4)
    assert dataset[0][0].shape == (3, 4, 24, 24)
    with pytest.raises(VideoReadError, match=r"bad/x\.(mp4|gif)"):
        dataset[1]


def test_skip_mode_substitutes_the_next_readable_video_and_counts(tmp_path: Path) -> None:
    root, entries = _hostile(tmp_path, "corrupt")
    dataset = _dataset(root, entries, validate=False, on_error="skip", mode="val")
    with pytest.warns(UserWarning, match=r"bad/x\.mp4.*Served 'good/b.mp4'"):
        clip, label = dataset[1]
    assert torch.equal(clip, dataset[2][0]) and label == 0
    assert dataset.load_failures == ["bad/x.mp4"]


def test_skip_mode_counts_failures_inside_dataloader_workers(tmp_path: Path) -> None:
    root, entries = _hostile(tmp_path, "truncated")
    dataset = _dataset(root, entries, validate=False, on_error="skip", clip_length=4)
    loader = DataLoader(dataset, batch_size=1, num_workers=2)
    labels = [int(label) for _, label in loader]
    assert labels == [0, 0, 0]
    assert dataset.load_failures == ["bad/x.mp4"]


def test_no_readable_video_left_is_an_error(tmp_path: Path) -> None:
    write_hostile_video(tmp_path / "x.mp4", "corrupt")
    with pytest.raises(VideoReadError, match="No readable video"), pytest.warns(UserWarning):
        _dataset(tmp_path, [VideoEntry("x.mp4", 0)], on_error="skip", max_skipped=1.0)


@pytest.mark.parametrize("max_skipped", [0.05, 0.5])
def test_a_list_missing_more_than_max_skipped_of_its_videos_fails_naming_a_few(
    tmp_path: Path, max_skipped: float
) -> None:
    write_ramp_video(tmp_path / "good" / "a.mp4", 12)
    write_ramp_video(tmp_path / "good" / "b.mp4", 12)
    entries = [VideoEntry(f"gone/v{i}.mp4", i % 2) for i in range(8)]
    entries += [VideoEntry("good/a.mp4", 0), VideoEntry("good/b.mp4", 1)]
    with pytest.raises(VideoReadError) as info:
        _dataset(tmp_path, entries, on_error="skip", max_skipped=max_skipped)
    message = str(info.value)
    assert f"8 of 10 videos under {str(tmp_path)!r} cannot be read (80%" in message
    assert f"more than max_skipped={max_skipped:g}" in message
    assert "gone/v0.mp4: the file does not exist; gone/v1.mp4" in message


def test_max_skipped_is_a_share(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="`max_skipped` must be a share between 0 and 1"):
        _dataset(tmp_path, [VideoEntry("a.mp4", 0)], max_skipped=5)


# The decoded-video cache.


@pytest.mark.parametrize(
    ("mode", "sampling", "clip_length"),
    [
        ("train", "consecutive", 4),
        ("train", "uniform", 8),
        ("val", "strided", 4),
        ("val", "uniform", 12),
        ("test", "uniform", 4),
        ("test", "consecutive", 8),
    ],
)
def test_cached_clips_are_the_decoded_ones_to_the_bit(
    ramps: Path, mode: str, sampling: str, clip_length: int
) -> None:
    entries = [VideoEntry(f"ramp/{name}.mp4", 0) for name in ("a", "b", "c")]
    kwargs: dict[str, Any] = {"mode": mode, "sampling": sampling, "clip_length": clip_length}
    plain = _dataset(ramps, entries, **kwargs)
    cached = _dataset(ramps, entries, decoded_cache_mb=1, **kwargs)
    for read in range(2):  # the first read fills the cache, the second is served from it
        for index in range(len(entries)):
            torch.manual_seed(index)
            expected = plain[index][0]
            torch.manual_seed(index)
            assert torch.equal(cached[index][0], expected), (read, index)
    assert cached.decoded_cache is not None and plain.decoded_cache is None
    stats = cached.decoded_cache.stats()
    assert (stats["videos"], stats["misses"], stats["hits"]) == (3, 3, 3)


def test_views_and_subsets_share_one_cache(ramps: Path) -> None:
    entries = [VideoEntry("ramp/a.mp4", 0), VideoEntry("ramp/c.mp4", 0)]
    full = _dataset(ramps, entries, decoded_cache_mb=1, clip_length=4)
    full[0], full[1]  # training decodes both videos
    val = full.with_entries(entries[1:]).with_clip(clip_length=8, sampling="uniform")
    clip, _ = val.with_mode("val")[0]
    assert _levels(clip) == sample_clip_indices(28, 8, "uniform", train=False).tolist()
    assert val.decoded_cache is full.decoded_cache
    assert full.decoded_cache is not None
    assert full.decoded_cache.stats()["misses"] == 2 and full.decoded_cache.stats()["hits"] == 1


def test_a_video_over_the_budget_is_decoded_as_usual_and_counted(ramps: Path) -> None:
    # A 28-frame ramp at 32 x 32 is 84 KiB; 0.05 MiB (51 KiB) holds a 9-frame one only.
    entries = [VideoEntry("ramp/b.mp4", 0), VideoEntry("ramp/c.mp4", 0)]
    dataset = _dataset(ramps, entries, decoded_cache_mb=0.05, mode="val", clip_length=4)
    expected = sample_clip_indices(28, 4, "consecutive", train=False).tolist()
    for _ in range(3):
        assert _levels(dataset[1][0]) == expected
    assert dataset[0][0].shape == (3, 4, 24, 24)
    assert dataset.decoded_cache is not None
    stats = dataset.decoded_cache.stats()
    assert (stats["videos"], stats["refused"]) == (1, 1)


def test_a_dataset_sent_to_a_worker_takes_the_budget_not_the_frames(ramps: Path) -> None:
    import pickle

    dataset = _dataset(ramps, [VideoEntry("ramp/a.mp4", 0)], decoded_cache_mb=1, mode="val")
    dataset[0]
    copy = pickle.loads(pickle.dumps(dataset))
    assert copy.decoded_cache is not None
    assert copy.decoded_cache.max_bytes == 2**20
    assert copy.decoded_cache.stats()["videos"] == 0
    assert torch.equal(copy[0][0], dataset[0][0])


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "zero_frames"])
def test_a_bad_file_is_named_with_the_cache_on(tmp_path: Path, kind: str) -> None:
    root, entries = _hostile(tmp_path, kind)
    dataset = _dataset(root, entries, validate=False, clip_length=4, decoded_cache_mb=1)
    with pytest.raises(VideoReadError, match=r"bad/x\.mp4"):
        dataset[1]
    assert dataset.decoded_cache is not None
    assert dataset.decoded_cache.stats()["videos"] == 0


@pytest.mark.parametrize("value", [-1, "64", True, float("nan")])
def test_the_cache_budget_must_be_megabytes(ramps: Path, value: Any) -> None:
    with pytest.raises(ValueError, match=r"`decoded_cache_mb` must be .* but got"):
        _dataset(ramps, [VideoEntry("ramp/a.mp4", 0)], decoded_cache_mb=value)
