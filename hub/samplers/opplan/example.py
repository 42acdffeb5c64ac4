"""Plan a training schedule with optuna-opplan, loaded from OptunaHub.

The objective stands in for a real training loop: each transition fine-tunes its source
state's checkpoint with the target state's learning rate and clip length, reports one
validation score per epoch, and stops when the knee pruner says so. Runs in seconds.
"""

from __future__ import annotations

import math

import optuna
import optunahub

opplan = optunahub.load_module("samplers/opplan")

graph = opplan.TransitionGraph.basic(
    clip_lengths=(8, 16), learning_rates=(0.1, 0.01), samplings=("uniform",)
)
study = optuna.create_study(
    direction="maximize",
    sampler=opplan.PlanningSampler(graph),
    pruner=opplan.KneePointPruner(delay=3, max_epochs=30),
)
scores: dict[int, float] = {}  # stands in for the kept checkpoints


def objective(trial: optuna.Trial) -> None:
    step = opplan.current_transition(trial)
    start = 0.0 if step.source_trial is None else scores[step.source_trial]
    # Longer clips and smaller learning rates reach higher plateaus, more slowly.
    ceiling = 0.5 + 0.01 * step.params["clip_length"] + 0.1 * (step.params["lr"] < 0.05)
    for epoch in range(1, 31):
        trial.report(ceiling - (ceiling - start) * math.exp(-0.3 * epoch), epoch)
        if trial.should_prune():
            break
    kept = step.keep_epoch
    scores[trial.number] = ceiling - (ceiling - start) * math.exp(-0.3 * kept) if kept else start


opplan.run_worker(study, objective)  # start it in as many processes as you like
plan = opplan.get_plan(study)
print(plan)
