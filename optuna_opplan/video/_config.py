from __future__ import annotations

from collections.abc import Mapping
import copy
from dataclasses import dataclass
import hashlib
import json
import os
from pathlib import Path
import sys
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from optuna_opplan._improvement import DEFAULT_NOISE_FACTOR
from optuna_opplan._improvement import DEFAULT_THRESHOLD
from optuna_opplan._knee import KNEE_KEEP_RULES
from optuna_opplan._knee_fit import KNEE_CURVES
from optuna_opplan._knee_fit import KNEE_LOSSES
from optuna_opplan._plan import SCORES
from optuna_opplan._pruner import DEFAULT_RULE
from optuna_opplan._stopping import STOPPING_RULES
from optuna_opplan.video._sampling import SAMPLINGS

# Every key a plan config may hold, with its default and type. Defaults are the embedded demo:
# the bundled synthetic videos, a tiny network, CPU-sized clips.
SCHEMA: dict[str, dict[str, Any]] = {
    "graph": {
        "preset": "extended",
        "clip_lengths": [8, 16, 32],
        "learning_rates": [0.1, 0.01, 0.001],
        "samplings": ["consecutive", "uniform"],
    },
    "knee": {
        "delay": 5,
        "max_epochs": 40,
        "curve": "exponential",
        "keep": "best",
        "loss": "linear",
        "rule": DEFAULT_RULE,
        "threshold": DEFAULT_THRESHOLD,
        "min_delta": 0.0,
        "noise_factor": DEFAULT_NOISE_FACTOR,
    },
    "planner": {
        "score": "fitted",
        "max_retries": 3,
        "max_deaths": 20,
        "death_backoff": 30.0,
    },
    "dataset": {
        "synthetic": "motion",
        "root": "",
        "train_list": "",
        "test_list": "",
        "class_file": "",
        "layout": "list",
        "val_fraction": 0.2,
        "split_seed": 0,
        "crop_size": 48,
        "scale_min": 52,
        "scale_max": 60,
        "eval_short_side": 52,
        "flip": True,
        "num_test_clips": 4,
        "on_error": "skip",
        "max_skipped": 0.05,
        "cache_dir": "",
        # Megabytes of decoded videos each dataset keeps in memory (0: none); see FrameCache.
        "decoded_cache_mb": 0,
        "videos_per_class": 40,
        "num_classes": 6,
        "frame_size": 64,
        "min_frames": 64,
        "max_frames": 128,
    },
    "model": {
        "name": "dg_p3d_resnet18",
        "width_multiplier": 0.25,
        "stem_temporal_stride": 1,
    },
    "trainer": {
        "batch_size": 16,
        "max_frames_per_step": 0,
        "momentum": 0.9,
        "weight_decay": 0.0001,
        "nesterov": True,
        "freeze_bn_from_clip": 64,
        "num_workers": 2,
        "device": "auto",
        "metric": "top1",
        "seed": 0,
    },
    "artifacts": {
        "path": "artifacts",
    },
    "grid": {
        "total_epochs": [12, 24],
        "decays": ["step", "cosine"],
        "samplings": ["consecutive", "uniform"],
        "base_lr": 0.1,
    },
}

CHOICES: dict[tuple[str, str], tuple[Any, ...]] = {
    ("graph", "preset"): ("basic", "extended"),
    ("knee", "curve"): KNEE_CURVES,
    ("knee", "keep"): KNEE_KEEP_RULES,
    ("knee", "loss"): KNEE_LOSSES,
    ("knee", "rule"): STOPPING_RULES,
    ("planner", "score"): SCORES,
    ("dataset", "synthetic"): ("", "motion", "temporal", "rhythm"),
    ("dataset", "layout"): ("list", "folders"),
    ("dataset", "on_error"): ("skip", "raise"),
    ("trainer", "device"): ("auto", "cpu", "cuda"),
    ("trainer", "metric"): ("top1", "mean_top135"),
}

# Keys that describe where things are on one machine: workers on other machines may differ.
LOCAL_KEYS = {("dataset", "cache_dir"), ("artifacts", "path"), ("trainer", "num_workers")}
LOCAL_KEYS |= {("trainer", "device"), ("dataset", "decoded_cache_mb")}


class ConfigError(ValueError):
    """A plan config key is unknown, of the wrong type or out of range."""


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _check_value(section: str, key: str, value: Any, default: Any) -> Any:
    where = f"{section}.{key}"
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok = isinstance(value, str)
    else:
        ok = isinstance(value, list) and len(value) > 0
        if ok:
            item = default[0]
            kinds = (int, float) if isinstance(item, float) else (type(item),)
            ok = all(isinstance(v, kinds) and not isinstance(v, bool) for v in value)
    if not ok:
        raise ConfigError(
            f"`{where}` must be {_type_name(default)}"
            + (f" of {_type_name(default[0])}s" if isinstance(default, list) else "")
            + f", but got {value!r} ({_type_name(value)})."
        )
    allowed = CHOICES.get((section, key))
    if allowed is not None and value not in allowed:
        raise ConfigError(f"`{where}` must be one of {list(allowed)}, but got {value!r}.")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        raise ConfigError(f"`{where}` must not be negative, but got {value!r}.")
    return value


@dataclass(frozen=True)
class PlanConfig:
    """A validated plan config: graph, knee, planner, dataset, model, trainer, grid.

    Unknown sections or keys, wrong types and values outside the allowed ones are rejected
    with an error naming the key. Missing keys take the embedded demo's defaults.

    Example:
        >>> config = PlanConfig.from_dict({"knee": {"delay": 3}, "model": {"name": "r3d_18"}})
        >>> config.section("knee")["delay"], config.section("knee")["max_epochs"]
        (3, 40)
        >>> try:
        ...     PlanConfig.from_dict({"knee": {"dealy": 3}})
        ... except ConfigError as error:
        ...     print(error)  # doctest: +ELLIPSIS
        Unknown key `knee.dealy`; allowed: curve, delay, keep, loss, max_epochs, min_delta, ...
    """

    data: Mapping[str, Mapping[str, Any]]
    base_dir: str = "."

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, base_dir: str = ".") -> PlanConfig:
        """Validate a config mapping (e.g. parsed TOML)."""
        if not isinstance(raw, Mapping):
            raise ConfigError(f"A plan config must be a table, but got {_type_name(raw)}.")
        data = copy.deepcopy(SCHEMA)
        for section, values in raw.items():
            if section not in SCHEMA:
                raise ConfigError(
                    f"Unknown section `[{section}]`; allowed: {', '.join(sorted(SCHEMA))}."
                )
            if not isinstance(values, Mapping):
                raise ConfigError(f"`[{section}]` must be a table, but got {values!r}.")
            for key, value in values.items():
                if key not in SCHEMA[section]:
                    allowed = ", ".join(sorted(SCHEMA[section]))
                    raise ConfigError(f"Unknown key `{section}.{key}`; allowed: {allowed}.")
                data[section][key] = _check_value(section, key, value, SCHEMA[section][key])
        config = cls(data, base_dir)
        config._check_consistency()
        return config

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> PlanConfig:
        """Read and validate a TOML plan config; relative paths in it are relative to it."""
        path = Path(path)
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"Config file {str(path)!r} does not exist.") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"Config file {str(path)!r} is not valid TOML: {exc}.") from None
        return cls.from_dict(raw, base_dir=str(path.resolve().parent))

    def _check_consistency(self) -> None:
        knee = self.data["knee"]
        if knee["delay"] < 1 or knee["max_epochs"] < knee["delay"]:
            raise ConfigError(
                "`knee.delay` must be at least 1 and `knee.max_epochs` at least the delay, but "
                f"got delay={knee['delay']}, max_epochs={knee['max_epochs']}."
            )
        if not 0 < knee["threshold"] < 1:
            raise ConfigError(f"`knee.threshold` must be in (0, 1), but got {knee['threshold']}.")
        dataset = self.data["dataset"]
        if not dataset["synthetic"] and not dataset["root"]:
            raise ConfigError("Set `dataset.synthetic` or `dataset.root` (a real dataset).")
        if dataset["root"] and dataset["layout"] == "list":
            for key in ("train_list", "class_file"):
                if not dataset[key]:
                    raise ConfigError(f"`dataset.{key}` is required with layout = 'list'.")
        if not 0 < dataset["val_fraction"] < 1:
            raise ConfigError(
                f"`dataset.val_fraction` must be in (0, 1), but got {dataset['val_fraction']}."
            )
        for key in ("samplings",):
            for value in self.data["graph"][key] + self.data["grid"][key]:
                if value not in SAMPLINGS:
                    raise ConfigError(
                        f"`graph.{key}`/`grid.{key}` values must be one of {SAMPLINGS}, "
                        f"but got {value!r}."
                    )
        for value in self.data["grid"]["decays"]:
            if value not in ("step", "cosine"):
                raise ConfigError(
                    f"`grid.decays` values must be 'step' or 'cosine', not {value!r}."
                )
        if not 1 <= dataset["min_frames"] <= dataset["max_frames"]:
            raise ConfigError(
                "`dataset.min_frames` must be at least 1 and at most `dataset.max_frames`, but "
                f"got min_frames={dataset['min_frames']}, max_frames={dataset['max_frames']}."
            )
        if len(self.data["graph"]["clip_lengths"]) < 2:
            raise ConfigError("`graph.clip_lengths` needs at least two clip lengths.")

    def section(self, name: str) -> dict[str, Any]:
        """A copy of one section."""
        return dict(self.data[name])

    def path(self, value: str) -> str:
        """A path from the config, relative to the config file's folder."""
        return value if os.path.isabs(value) else os.path.join(self.base_dir, value)

    def to_dict(self) -> dict[str, Any]:
        """The full config, defaults included."""
        return json.loads(json.dumps(self.data))

    def shared(self) -> dict[str, Any]:
        """The part every worker must agree on (machine-local paths left out)."""
        return {
            section: {k: v for k, v in values.items() if (section, k) not in LOCAL_KEYS}
            for section, values in self.to_dict().items()
        }

    def fingerprint(self) -> str:
        """A short hash of :meth:`shared`."""
        blob = json.dumps(self.shared(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def differences(self, other: PlanConfig) -> list[str]:
        """The shared keys whose values differ, as ``section.key: a != b`` strings."""
        mine, theirs = self.shared(), other.shared()
        return [
            f"{section}.{key}: {mine[section].get(key)!r} != {theirs[section].get(key)!r}"
            for section in sorted(mine)
            for key in sorted(set(mine[section]) | set(theirs[section]))
            if mine[section].get(key) != theirs[section].get(key)
        ]
