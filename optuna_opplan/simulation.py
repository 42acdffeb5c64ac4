"""A seeded stand-in for training, so the planning loop runs in seconds without a GPU.

:class:`SimulatedObjective` plays the part of a training function: for a transition it draws a
validation curve that rises from the inherited checkpoint's score, saturates and then overfits,
with peaks that depend on the target state and on the starting checkpoint, and with noise that
grows with the learning rate (real curves at a high learning rate jump by several points from
one epoch to the next). Curves are a pure function of the seed, the transition and the
starting score, so two runs with the same seed plan the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
import hashlib
import itertools
import math
import time
from typing import Any

import numpy as np
import optuna

from optuna_opplan._graph import TransitionGraph
from optuna_opplan._step import current_transition
from optuna_opplan._transition import Transition

__all__ = ["SimulatedCurve", "SimulatedObjective"]


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


@dataclass(frozen=True)
class SimulatedCurve:
    """One transition's simulated validation curve.

    ``value(t) = a - (a - v0) * exp(-t / tau) - overfit * t**2 + noise(t)``: from the
    inherited score ``v0`` towards the asymptote ``a``, bent down by overfitting.

    Attributes:
        v0: The starting checkpoint's score.
        asymptote: ``a``.
        tau: Time constant of the rise, in epochs.
        overfit: Strength of the quadratic decline.
        noise: Standard deviation of the per-epoch noise.
        seed: Seed of the noise.
    """

    v0: float
    asymptote: float
    tau: float
    overfit: float
    noise: float
    seed: int

    def mean(self, epoch: float) -> float:
        """The noise-free value after ``epoch`` epochs."""
        a = self.asymptote
        return a - (a - self.v0) * math.exp(-epoch / self.tau) - self.overfit * epoch**2

    def values(self, epochs: int) -> np.ndarray:
        """The noisy scores after epochs ``1..epochs``, clipped to ``[0, 1]``."""
        rng = np.random.default_rng(self.seed)
        t = np.arange(1, epochs + 1, dtype=float)
        mean = np.array([self.mean(x) for x in t])
        return np.clip(mean + rng.normal(0.0, self.noise, size=epochs), 0.0, 1.0)

    @property
    def best_epoch(self) -> int:
        """The epoch of the noise-free maximum."""
        horizon = int(10 * self.tau + 200)
        return int(np.argmax([self.mean(t) for t in range(horizon)]))


class SimulatedObjective:
    """An objective for :func:`optuna_opplan.run_worker` that simulates training.

    State effects follow the paper's intuitions: longer clips and lower learning rates reach
    higher plateaus, longer clips learn more slowly, fine-tuning from a better checkpoint ends
    higher, high learning rates are noisy. The sampling strategy (any ``"fixed"`` axis) shifts
    plateaus by a seeded offset, so one strategy wins per seed.

    Args:
        seed: Seed of every curve.
        noise: Noise scale; the per-epoch standard deviation is ``noise`` at the lowest and
            ``5 * noise`` at the highest learning rate.
        epoch_seconds: Real seconds to sleep per epoch (to exercise concurrency).
        max_epochs: Stop after this many epochs even if the pruner does not.

    Example:

        >>> import optuna_opplan as op
        >>> from optuna_opplan.simulation import SimulatedObjective
        >>> graph = op.TransitionGraph.basic()
        >>> objective = SimulatedObjective(seed=1)
        >>> curve = objective.curve(graph, graph.transitions[0], v0=0.0)
        >>> assert 0.0 < curve.mean(20) < 1.0
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        noise: float = 0.004,
        epoch_seconds: float = 0.0,
        max_epochs: int = 1000,
    ) -> None:
        if not isinstance(seed, int):
            raise ValueError(f"`seed` must be an int, but got seed={seed!r}.")
        if not isinstance(noise, (int, float)) or noise < 0:
            raise ValueError(f"`noise` must be a non-negative number, but got noise={noise!r}.")
        if not isinstance(epoch_seconds, (int, float)) or epoch_seconds < 0:
            raise ValueError(
                f"`epoch_seconds` must be a non-negative number, but got {epoch_seconds!r}."
            )
        self.seed = seed
        self.noise = float(noise)
        self.epoch_seconds = float(epoch_seconds)
        self.max_epochs = max_epochs

    def curve(self, graph: TransitionGraph, transition: Transition, v0: float) -> SimulatedCurve:
        """The curve of ``transition`` started from a checkpoint scoring ``v0``."""
        target = transition.target
        progress = 0.0  # how far along the monotone axes, 0 (start) .. 1 (goal)
        lr_level = 0.0
        clip_level = 0.0
        monotone = [a for a in graph.axes if a.direction != "fixed"]
        offset = 0.0
        for axis in graph.axes:
            fraction = axis.level(target[axis.name]) / max(1, len(axis.values) - 1)
            if axis.direction == "fixed":
                rng = np.random.default_rng(
                    [self.seed, _stable_int(f"{axis.name}={target[axis.name]}")]
                )
                offset += float(rng.uniform(-0.03, 0.03))
            elif axis.direction == "decreasing":
                lr_level = max(lr_level, fraction)
            else:
                clip_level = max(clip_level, fraction)
            if axis.direction != "fixed":
                progress += fraction / len(monotone)
        jitter = np.random.default_rng([self.seed, _stable_int(target.key)]).normal(0.0, 0.01)
        plateau = 0.45 + 0.12 * lr_level + 0.10 * clip_level + offset + float(jitter)
        # A better starting checkpoint ends higher: fine-tuning keeps part of what it knew.
        asymptote = min(0.97, plateau + 0.35 * max(0.0, v0 - 0.3) + 0.02 * progress)
        asymptote = max(asymptote, v0 + 0.005)
        tau = 2.0 + 6.0 * clip_level + (4.0 if transition.source is None else 0.0)
        overfit = 2e-5 * (1.0 + 2.0 * lr_level)
        noise = self.noise * (1.0 + 4.0 * (1.0 - lr_level))
        noise_seed = _stable_int(f"{self.seed}|{transition.key}|{v0:.6f}")
        return SimulatedCurve(v0, asymptote, tau, overfit, noise, noise_seed)

    def __call__(self, trial: optuna.Trial) -> Any:
        step = current_transition(trial)
        curve = self.curve(step.graph, step.transition, step.source_score)
        values = curve.values(self.max_epochs)
        for epoch in itertools.count(1):
            if self.epoch_seconds:
                time.sleep(self.epoch_seconds)
            trial.report(float(values[epoch - 1]), epoch)
            if trial.should_prune() or epoch >= self.max_epochs:
                return None
