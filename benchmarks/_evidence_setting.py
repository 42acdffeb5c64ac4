"""What an evidence run depends on (the ``Setting``), its two sizes, and the check that a
resumed storage was made with the same one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import replace
import math
from typing import TYPE_CHECKING
from typing import Any

import optuna

from benchmarks._evidence_report import jsonable
from optuna_opplan.video.synthetic import FLAVOURS
from optuna_opplan.video.synthetic import GENERATOR_VERSION

if TYPE_CHECKING:
    from benchmarks._evidence_data import ListSet


@dataclass(frozen=True)
class Setting:
    """Everything a run depends on; stored in the storage and checked on resume."""

    flavours: tuple[str, ...]
    seeds: tuple[int, ...]
    num_classes: int
    train_per_class: int  # the training list's videos; validation is carved from it
    test_per_class: int
    num_frames: tuple[int, int]
    size: int
    crop: int
    val_fraction: float
    clip_lengths: tuple[int, ...]
    learning_rates: tuple[float, ...]
    knee_rule: str
    knee_delay: int
    knee_max_epochs: int
    grid_epochs: tuple[int, ...]
    decays: tuple[str, ...]
    samplings: tuple[str, ...]
    base_lr: float
    model: str
    width: float
    batch_size: int
    num_test_clips: int
    hyperband_reduction: int
    # Hyperband's first rung, in epochs. The knee pruner never stops a transition before its
    # delay; Hyperband gets the same grace (with 1 it stopped motion's slow starters at 30-50%
    # validation before they rose).
    hyperband_min_resource: int
    # The synthetic generator's version the flavours' videos come from: another version
    # writes other videos, so a run is resumed only with the one it started with.
    generator_version: int
    # Megabytes of decoded videos a split keeps in memory (``VideoDataset``'s cache): the
    # clips are the same to the bit, only the seconds change, so a run may be resumed with
    # another value (0: decode on every access).
    decoded_cache_mb: int

    def cells(self) -> list[tuple[str, int]]:
        """Flavour-major: a flavour's interval needs all its seeds, so a partial run reports
        whole flavours."""
        return [(f, s) for f in self.flavours for s in self.seeds]


FULL = Setting(
    flavours=FLAVOURS,
    seeds=(0, 1, 2),
    num_classes=6,  # valid for every flavour: "motion" wants an even count, "rhythm" 3k
    # A third of 90 held out: 60 training and 30 validation videos a class. With 10 validation
    # videos (40 at 25%), validation noise (about +-5 points) ended transitions on plateaus and
    # the plan had its weak seeds (evidence_val10.md: the plan's seeds 91.2-100%); with 30 of
    # 60 every method still had one (evidence_val30.md: planned 95.7-100%, grid 94.5-100%) and
    # temporal's and motion's intervals stayed 1.6-2.0 points wide; with 60 training videos
    # each method's seeds lie within 0.9 points (evidence.md).
    train_per_class=90,
    test_per_class=340,
    # "rhythm" needs videos of at least 48 frames to show both movements (generator 3).
    num_frames=(64, 96),
    size=32,
    crop=24,
    val_fraction=1 / 3,
    clip_lengths=(4, 8, 16),
    # 0.1 and its decades, for both sides. With 0.03, 0.003, 0.0003 motion's best grid
    # schedule ended higher on validation (98-99% over 6 seeds, 93-97% at 0.1), but on
    # temporal every method lost accuracy and the plan had a weak seed (evidence_lr003.md).
    learning_rates=(0.1, 0.01, 0.001),
    knee_rule="improve",
    knee_delay=3,
    knee_max_epochs=8,
    # No 4-epoch schedule tied for best in any of the first run's 15 cells (generator 1; its
    # best one 6.7-48 points below the best), and a third sampling makes the grid 1.5x:
    # 3 clip schedules x 2 decays x 3 samplings x 3 budgets = 54.
    grid_epochs=(8, 12, 16),
    decays=("step", "cosine"),
    samplings=("consecutive", "strided", "uniform"),
    base_lr=0.1,
    model="c3d_small",
    width=0.5,
    batch_size=8,
    num_test_clips=2,
    hyperband_reduction=3,
    hyperband_min_resource=3,
    generator_version=GENERATOR_VERSION,
    decoded_cache_mb=1024,
)
SMOKE = replace(
    FULL,
    seeds=(0,),
    train_per_class=2,
    test_per_class=1,
    num_frames=(16, 16),
    val_fraction=0.5,
    clip_lengths=(2, 4),
    learning_rates=(0.05,),
    knee_delay=1,
    knee_max_epochs=2,
    hyperband_min_resource=1,
    grid_epochs=(2, 3),
    decays=("cosine",),
    width=0.25,
    batch_size=4,
    num_test_clips=1,
)


def study_attrs(study: optuna.Study) -> dict[str, Any]:
    return study._storage.get_study_system_attrs(study._study_id)


def _same(stored: Any, value: Any) -> bool:
    # A fraction typed on the command line (0.3333333333) is the setting's 1/3: floats agree to
    # nine significant digits, as anyone would type them.
    if isinstance(stored, float) and isinstance(value, float):
        return math.isclose(stored, value, rel_tol=1e-9)
    return bool(stored == value)


def _as_stored(setting: Setting, stored: dict[str, Any]) -> Setting:
    # The run goes on with the stored float, to the bit: its cells' studies hold configs made
    # from it, and a worker's config must equal its study's.
    close = {
        k: stored[k]
        for k, v in asdict(setting).items()
        if isinstance(v, float) and isinstance(stored.get(k), float) and _same(stored[k], v)
    }
    return replace(setting, **close)


def check_setting(
    storage: Any,
    setting: Setting,
    listset: ListSet | None,
    seeds: Sequence[int] | None,
    *,
    report_only: bool = False,
) -> Setting:
    """Store the setting once; refuse to resume a storage made with another one; the setting
    to run. Flavours and seeds may grow (cells are independent): a new flavour or seed adds
    cells, and seeds added once stay in the run (without ``seeds``, the stored ones). A user's
    video set must be the same files. A run on videos of another generator version is
    refused, except to rewrite its report (``report_only``), which then states the stored
    version."""
    meta = optuna.create_study(storage=storage, study_name="evidence-setting", load_if_exists=True)
    attrs = study_attrs(meta)
    videos = None if listset is None else jsonable(asdict(listset))
    if "setting" in attrs and attrs.get("list_set") != videos:
        bundled = "the bundled flavours"
        raise SystemExit(
            f"The storage holds a run on other videos ({attrs.get('list_set') or bundled}), "
            f"not {videos or bundled}: use another --workdir."
        )
    meta._storage.set_study_system_attr(meta._study_id, "list_set", videos)
    stored = attrs.get("setting")
    setting = replace(setting, seeds=tuple(seeds or (stored or {}).get("seeds") or setting.seeds))
    mine = jsonable(asdict(setting))
    if stored is not None:
        grows = ("flavours", "seeds")
        # Hyperband's first rung names the TPE studies (Cell.study_names): another one, or
        # none stored (a run from before it was a setting, which used 1), adds studies beside
        # the stored ones; it mixes nothing.
        renamed = ("hyperband_min_resource",)
        # A run from before the version was a setting made its videos with version 1.
        version = stored.get("generator_version", 1)
        if listset is None and version != setting.generator_version:
            if not report_only:
                raise SystemExit(
                    f"The storage holds a run on videos of synthetic generator version "
                    f"{version}; this code writes version {setting.generator_version}, other "
                    "videos: use another --workdir (or rewrite its report with --report-only)."
                )
            setting = replace(setting, generator_version=version)
            mine = jsonable(asdict(setting))
        checked = ("generator_version",)
        local = ("decoded_cache_mb",)
        diffs = sorted(
            k
            for k in mine
            if k not in grows + renamed + checked + local and not _same(stored.get(k), mine[k])
        )
        if diffs:
            raise SystemExit(
                f"The storage holds a run with another setting (differs in {', '.join(diffs)}): "
                "use another --workdir, or the setting it was started with."
            )
        setting = _as_stored(setting, stored)
        mine = jsonable(asdict(setting))
    meta._storage.set_study_system_attr(meta._study_id, "setting", mine)
    return setting
