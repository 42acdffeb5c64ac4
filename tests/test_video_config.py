"""The plan config: the ``[knee]`` section reaches the pruner, samplings are the runtime's; bad
values name their key."""

from __future__ import annotations

from typing import Any
import warnings

import pytest

from optuna_opplan._pruner import DEFAULT_RULE
from optuna_opplan.video._config import ConfigError
from optuna_opplan.video._config import PlanConfig
from optuna_opplan.video._setup import build_planning


@pytest.mark.parametrize(
    ("knee", "expected"),
    [
        ({}, {"rule": DEFAULT_RULE, "delay": 5}),
        ({"rule": "paper", "keep": "knee"}, {"rule": "paper", "keep": "knee"}),
        (
            {"rule": "improve", "threshold": 0.1, "noise_factor": 0.5, "min_delta": 0.01},
            {"rule": "improve", "threshold": 0.1, "noise_factor": 0.5, "min_delta": 0.01},
        ),
    ],
)
def test_knee_section_configures_the_pruner(
    knee: dict[str, Any], expected: dict[str, Any]
) -> None:
    _, pruner = build_planning(PlanConfig.from_dict({"knee": knee}))
    assert {key: getattr(pruner, key) for key in expected} == expected


@pytest.mark.parametrize(
    ("knee", "message"),
    [
        ({"rule": "patience"}, "`knee.rule` must be one of"),
        ({"threshold": 1.0}, "`knee.threshold` must be in (0, 1)"),
        ({"threshold": 0}, "`knee.threshold` must be in (0, 1)"),
        ({"noise_factor": -1.0}, "`knee.noise_factor` must not be negative"),
        ({"min_delta": "a lot"}, "`knee.min_delta` must be a number"),
    ],
)
def test_bad_knee_values_name_their_key(knee: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        PlanConfig.from_dict({"knee": knee})
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("section", "samplings", "message"),
    [
        ("graph", ["consecutive", "strided", "uniform"], None),
        ("grid", ["strided"], None),
        (
            "graph",
            ["consecutive", "dense"],
            "`graph.samplings`/`grid.samplings` values must be one of "
            "('consecutive', 'strided', 'uniform'), but got 'dense'.",
        ),
        ("grid", ["Uniform"], "but got 'Uniform'."),
    ],
)
def test_samplings_are_the_runtime_ones(
    section: str, samplings: list[str], message: str | None
) -> None:
    if message is None:
        config = PlanConfig.from_dict({section: {"samplings": samplings}})
        assert config.data[section]["samplings"] == samplings
        return
    with pytest.raises(ConfigError) as info:
        PlanConfig.from_dict({section: {"samplings": samplings}})
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "`dataset.decoded_cache_mb` must not be negative, but got -1"),
        (1.5, r"`dataset.decoded_cache_mb` must be an integer, but got 1\.5"),
    ],
)
def test_a_bad_cache_budget_names_its_key(value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PlanConfig.from_dict({"dataset": {"decoded_cache_mb": value}})


def test_the_cache_reaches_the_splits_and_is_local_to_a_machine(tmp_path: Any) -> None:
    from video_fixtures import tiny_synthetic

    from optuna_opplan.video._setup import build_splits

    data = tiny_synthetic(tmp_path)
    dataset = {
        "root": str(data.root),
        "train_list": str(data.train_list),
        "test_list": str(data.test_list),
        "class_file": str(data.class_file),
        "crop_size": 24,
        "scale_min": 26,
        "scale_max": 28,
        "eval_short_side": 26,
        "val_fraction": 0.5,
    }
    cached = PlanConfig.from_dict(
        {"dataset": {**dataset, "decoded_cache_mb": 64}, "trainer": {"num_workers": 0}}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        splits = build_splits(cached)
    assert splits.train.decoded_cache is splits.val.decoded_cache
    assert splits.test.decoded_cache is not None
    assert splits.test.decoded_cache.max_bytes == 64 * 2**20
    assert build_splits(PlanConfig.from_dict({"dataset": dataset})).train.decoded_cache is None
    # Workers on machines with less memory may keep less: not a difference between workers.
    assert cached.differences(PlanConfig.from_dict({"dataset": dataset, "trainer": {}})) == []
    # Worker processes would each fill a copy and exit after their pass: said, not silent.
    with pytest.warns(UserWarning, match="`trainer.num_workers` = 2 .* every epoch decodes"):
        build_splits(
            PlanConfig.from_dict(
                {"dataset": {**dataset, "decoded_cache_mb": 64}, "trainer": {"num_workers": 2}}
            )
        )
