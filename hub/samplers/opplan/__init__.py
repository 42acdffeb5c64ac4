"""OptunaHub entry of optuna-opplan: optimization planning of a network's training schedule.

``optunahub.load_module("samplers/opplan")`` returns this module; everything in it comes
from the ``optuna-opplan`` package named in ``requirements.txt``.
"""

from __future__ import annotations

from optuna_opplan import Axis
from optuna_opplan import KneePointPruner
from optuna_opplan import Plan
from optuna_opplan import PlanningSampler
from optuna_opplan import TransitionFailed
from optuna_opplan import TransitionGraph
from optuna_opplan import create_planning_study
from optuna_opplan import current_transition
from optuna_opplan import get_plan
from optuna_opplan import get_progress
from optuna_opplan import run_worker

__all__ = [
    "Axis",
    "KneePointPruner",
    "Plan",
    "PlanningSampler",
    "TransitionFailed",
    "TransitionGraph",
    "create_planning_study",
    "current_transition",
    "get_plan",
    "get_progress",
    "run_worker",
]
