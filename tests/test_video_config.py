"""The plan config: the ``[knee]`` section reaches the pruner, samplings are the runtime's; bad
values name their key."""

from __future__ import annotations

from typing import Any

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
