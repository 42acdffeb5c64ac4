"""The videos an evidence cell runs on: a bundled synthetic flavour, or a user's list-file set.

A list-file set replaces the flavours: it is read the way ``opplan plan`` reads a config's
``dataset`` section (same list-file rules, same bad-video handling), so the benchmark measures
what a user of the product would get on that set.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
import os
from typing import Any

from optuna_opplan.video._config import PlanConfig
from optuna_opplan.video._dataset import VideoDataset
from optuna_opplan.video._listfile import read_class_file
from optuna_opplan.video._listfile import read_list_file
from optuna_opplan.video._setup import Splits
from optuna_opplan.video._setup import build_splits as build_config_splits
from optuna_opplan.video._split import split_train_val
from optuna_opplan.video._transforms import ClipTransform
from optuna_opplan.video.synthetic import ensure_dataset


@dataclass(frozen=True)
class ListSet:
    """A video set made outside the repo: mmaction2-style list files and a class file.

    Paths are stored absolute, so a resumed run from another directory reads the same files.
    ``flip`` is off by default: a horizontal flip swaps the classes of a set told apart by
    motion direction.
    """

    name: str
    root: str
    train_list: str
    test_list: str
    class_file: str
    flip: bool = False

    @classmethod
    def from_args(
        cls,
        name: str | None,
        root: str | None,
        train_list: str,
        test_list: str | None,
        class_file: str | None,
        flip: bool = False,
    ) -> ListSet:
        """Check the files exist and parse (a bad line is named here, before any training)."""
        for flag, value in (("--test-list", test_list), ("--class-file", class_file)):
            if not value:
                raise SystemExit(f"{flag} is required with --train-list.")
        assert test_list is not None and class_file is not None
        root = os.path.abspath(root or os.path.dirname(os.path.abspath(train_list)))
        listset = cls(
            name=name or os.path.basename(root.rstrip(os.sep)) or "videos",
            root=root,
            train_list=os.path.abspath(train_list),
            test_list=os.path.abspath(test_list),
            class_file=os.path.abspath(class_file),
            flip=flip,
        )
        for path in (listset.train_list, listset.test_list, listset.class_file):
            if not os.path.isfile(path):
                raise SystemExit(f"No such file: {path!r}.")
        try:
            listset.num_classes()  # parses the three files: a bad line is named here
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
        return listset

    @cached_property
    def _sizes(self) -> tuple[int, int, int]:
        # Parsed once, for the check at start and for the report after every cell.
        classes = read_class_file(self.class_file)
        train, test = (
            len(read_list_file(path, self.root, classes))
            for path in (self.train_list, self.test_list)
        )
        return len(classes), train, test

    def num_classes(self) -> int:
        return self._sizes[0]

    def counts(self) -> tuple[int, int]:
        """Training-list and test-list videos."""
        return self._sizes[1], self._sizes[2]

    def describe(self, setting: Any, splits: Splits) -> str:
        """The set as the report states it, with the videos its loader skipped."""
        train, test = self.counts()
        skipped = splits.train.skipped + splits.test.skipped
        unreadable = (
            f"{len(skipped)} unreadable videos skipped (e.g. "
            + "; ".join(f"`{path}`: {reason}" for path, reason in skipped[:3])
            + ")"
            if skipped
            else "no video skipped as unreadable"
        )
        return (
            f"The list-file set `{self.name}` (root `{self.root}`, lists "
            f"`{os.path.basename(self.train_list)}` / `{os.path.basename(self.test_list)}`): "
            f"{self.num_classes()} classes, {train} training videos "
            f"({setting.val_fraction:.0%} of them held out for validation) and {test} test "
            f"videos; short side scaled to {setting.crop + 2}-{setting.crop + 6} px, crops "
            f"{setting.crop} px, flip {'on' if self.flip else 'off'}, test "
            f"{setting.num_test_clips} clips x 3 crops; {unreadable}."
        )


def dataset_section(
    setting: Any, flavour: str, seed: int, listset: ListSet | None
) -> dict[str, Any]:
    """The plan config's ``dataset`` section for a cell."""
    common = {
        "val_fraction": setting.val_fraction,
        "split_seed": seed,
        "crop_size": setting.crop,
        "num_test_clips": setting.num_test_clips,
        "decoded_cache_mb": setting.decoded_cache_mb,
    }
    if listset is None:
        return {"synthetic": flavour, "num_classes": setting.num_classes, **common}
    return {
        "synthetic": "",
        "layout": "list",
        "root": listset.root,
        "train_list": listset.train_list,
        "test_list": listset.test_list,
        "class_file": listset.class_file,
        # The bundled flavours' scale jitter: short side crop + 2 to crop + 6.
        "scale_min": setting.crop + 2,
        "scale_max": setting.crop + 6,
        "eval_short_side": setting.crop + 2,
        "flip": listset.flip,
        **common,
    }


def build_splits(
    setting: Any, flavour: str, seed: int, cache: str, config: PlanConfig, listset: ListSet | None
) -> Splits:
    """A cell's train / validation / test splits; the seed picks the validation split.

    A flavour's videos are generated once into ``cache``; a list-file set is read through the
    product's own loader (``config``'s dataset section), skipped videos reported as there.
    """
    if listset is not None:
        return build_config_splits(config)
    per_class = setting.train_per_class + setting.test_per_class
    data = ensure_dataset(
        os.path.join(cache, f"{setting.size}px"),
        flavour=flavour,
        num_classes=setting.num_classes,
        videos_per_class=per_class,
        num_frames=setting.num_frames,
        size=setting.size,
        test_fraction=setting.test_per_class / per_class,
    )
    transform = ClipTransform(
        crop_size=setting.crop,
        scale_range=(setting.crop + 2, setting.crop + 6),
        eval_short_side=setting.crop + 2,
        test_size=setting.crop + 2,
    )
    kwargs: dict[str, Any] = {
        "transform": transform,
        "num_test_clips": setting.num_test_clips,
        "decoded_cache_mb": setting.decoded_cache_mb,
    }
    full = VideoDataset.from_list_file(data.root, data.train_list, data.class_file, **kwargs)
    test = VideoDataset.from_list_file(data.root, data.test_list, data.class_file, **kwargs)
    train, val = split_train_val(full.entries, setting.val_fraction, seed=seed)
    return Splits(full.with_entries(train), full.with_entries(val), test.with_mode("test"))
