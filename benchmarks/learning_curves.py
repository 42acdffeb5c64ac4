"""Constant-learning-rate segments of the shared real learning curves.

Each segment is what one planning transition sees: an epoch-0 point (the score of the
checkpoint it starts from) and the validation score after every epoch trained at one learning
rate. Every segment is oriented so that higher is better: the LSTM perplexities are negated.

Where the learning rate changes is read from the data, not assumed:

- ResNet / CIFAR-10: the drop shows in ``acc_29`` (94% of the runs gain more than 2 points from
  ``acc_28`` to ``acc_29``, none from ``acc_30`` to ``acc_31``): epochs 0-28 from scratch
  (``acc_0`` is the untrained model) and 28-49 after the drop.
- MetaQNN / CIFAR-10 and SVHN: lr x0.2 after epochs 5, 10, 15 (the median gain per epoch jumps
  there: 2.1 -> 3.1 points after epoch 5 on CIFAR-10): four 5-epoch segments per run; the first
  starts from chance (0.1, ten classes), the others from the previous segment's last epoch.
- AlexNet / ImageNet: the drops do not show, so each run is one 500-evaluation segment
  (``acc_0`` is the untrained model). Many runs stay at chance (0.001) for hundreds of
  evaluations, or for good.
- LSTM / Penn Treebank: at most one lr step per run within the 60 epochs, at the epoch (after
  20) with the largest relative fall of the perplexity, if that fall is over 4% and twice the
  next largest (runs differ: epochs 33-59); after it the curve is smooth. Segments: epochs
  0 .. step - 1 (epoch 0 is ``ep_0``), and step - 1 .. 59 if that is 3 epochs or more; a run
  without a visible step is one segment.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_DIR = Path("/work/shared/datasets/learning-curves")

SETS: tuple[str, ...] = (
    "resnet_cifar10",
    "metaqnn_cifar10",
    "metaqnn_svhn",
    "alexnet_imagenet",
    "lstm_ptb",
)
"""The five shared sets, in the order the results file reports them."""

RESNET_DROP = 28
METAQNN_STEP = 5
LSTM_MIN_STEP = 20
LSTM_MIN_FALL = 0.04
LSTM_MIN_SEGMENT = 3


@dataclass(frozen=True)
class Segment:
    """One constant-lr segment; ``values[0]`` is the epoch-0 point, higher is better.

    ``unit`` converts a difference of values into the set's regret unit: 100 for accuracies
    (points), 1 for perplexities (negated, so a regret of 1 is one perplexity point).
    """

    dataset: str
    part: str
    run: int
    values: np.ndarray
    unit: float

    @property
    def epochs(self) -> int:
        return len(self.values) - 1


def _read(name: str, prefix: str) -> np.ndarray:
    with open(DATA_DIR / name, newline="") as f:
        rows = list(csv.DictReader(f))
    keys = [k for k in rows[0] if k.startswith(prefix)]
    return np.array([[float(row[k]) for k in keys] for row in rows])


def resnet() -> list[Segment]:
    acc = _read("deep_resnets_cifar10.csv", "acc_")
    out = []
    for i, a in enumerate(acc):
        out.append(Segment("resnet_cifar10", "scratch", i, a[: RESNET_DROP + 1], 100.0))
        out.append(Segment("resnet_cifar10", "finetune", i, a[RESNET_DROP:], 100.0))
    return out


def metaqnn(name: str) -> list[Segment]:
    acc = _read(f"{name}.csv", "acc_")
    out = []
    for i, a in enumerate(acc):
        series = np.concatenate([[0.1], a])  # epoch 0: chance for ten classes
        for k in range(0, len(a), METAQNN_STEP):
            part = f"epochs {k}-{k + METAQNN_STEP}"
            out.append(Segment(name, part, i, series[k : k + METAQNN_STEP + 1], 100.0))
    return out


def metaqnn_runs(name: str) -> list[Segment]:
    """Whole MetaQNN runs (epochs 0-20, one lr), epoch 0 at chance: the curve-family fits'
    segments (``benchmarks.fit_families``)."""
    acc = _read(f"{name}.csv", "acc_")
    return [
        Segment(name, "whole", i, np.concatenate([[0.1], a]), 100.0) for i, a in enumerate(acc)
    ]


def alexnet() -> list[Segment]:
    acc = _read("alexnet_imagenet.csv", "acc_")
    return [Segment("alexnet_imagenet", "whole run", i, a, 100.0) for i, a in enumerate(acc)]


def lstm_step(perplexity: np.ndarray) -> int | None:
    """The first epoch after the run's lr step, or None if no step shows.

    A step is the largest relative fall after epoch 20 if it is over 4% and at least twice the
    next largest; otherwise the epoch-to-epoch jitter could be taken for a step.
    """
    fall = np.diff(np.log(perplexity))[LSTM_MIN_STEP:]
    order = np.argsort(fall)
    if fall[order[0]] > -LSTM_MIN_FALL or fall[order[0]] > 2 * fall[order[1]]:
        return None
    return LSTM_MIN_STEP + 1 + int(order[0])


def lstm() -> list[Segment]:
    ppl = _read("lstm_ptb.csv", "ep_")
    out = []
    for i, p in enumerate(ppl):
        step = lstm_step(p)
        if step is None:
            out.append(Segment("lstm_ptb", "no lr step seen", i, -p, 1.0))
            continue
        out.append(Segment("lstm_ptb", "before the lr step", i, -p[:step], 1.0))
        if len(p) - step >= LSTM_MIN_SEGMENT:
            out.append(Segment("lstm_ptb", "after the lr step", i, -p[step - 1 :], 1.0))
    return out


def load(name: str) -> list[Segment]:
    """The segments of one of :data:`SETS`."""
    if name == "resnet_cifar10":
        return resnet()
    if name in ("metaqnn_cifar10", "metaqnn_svhn"):
        return metaqnn(name)
    if name == "alexnet_imagenet":
        return alexnet()
    if name == "lstm_ptb":
        return lstm()
    raise ValueError(f"`name` must be one of {SETS}, but got name={name!r}.")
