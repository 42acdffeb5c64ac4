"""Optimization planning for Optuna: plan a network's training schedule on a transition graph.

The core (everything importable from here) needs neither torch nor decord; the video runtime
lives in :mod:`optuna_opplan.video` and the networks in :mod:`optuna_opplan.models`.
"""

from __future__ import annotations

from optuna_opplan._axis import Axis
from optuna_opplan._bootstrap import Difference
from optuna_opplan._bootstrap import paired_difference
from optuna_opplan._checkpoint import CheckpointError
from optuna_opplan._checkpoint import load_checkpoint
from optuna_opplan._decision import KneeDecision
from optuna_opplan._graph import TransitionGraph
from optuna_opplan._knee import knee_decision
from optuna_opplan._knee_fit import KneeFit
from optuna_opplan._knee_fit import fit_knee
from optuna_opplan._plan import GoalUnreachableError
from optuna_opplan._plan import Plan
from optuna_opplan._plan import compute_plan
from optuna_opplan._progress import Progress
from optuna_opplan._pruner import KneePointPruner
from optuna_opplan._result import TransitionResult
from optuna_opplan._sampler import PlanningSampler
from optuna_opplan._state import State
from optuna_opplan._step import TransitionStep
from optuna_opplan._step import current_transition
from optuna_opplan._storage import StorageUnavailableError
from optuna_opplan._storage import create_storage
from optuna_opplan._storage import harden_storage
from optuna_opplan._study import ConfigMismatchError
from optuna_opplan._study import PlanIncompleteError
from optuna_opplan._study import create_planning_study
from optuna_opplan._study import get_plan
from optuna_opplan._study import get_progress
from optuna_opplan._study import load_planning_study
from optuna_opplan._transition import Transition
from optuna_opplan._worker import TransitionFailed
from optuna_opplan._worker import run_worker

__version__ = "0.1.0"

__all__ = [
    "Axis",
    "CheckpointError",
    "ConfigMismatchError",
    "Difference",
    "GoalUnreachableError",
    "KneeDecision",
    "KneeFit",
    "KneePointPruner",
    "Plan",
    "PlanIncompleteError",
    "PlanningSampler",
    "Progress",
    "State",
    "StorageUnavailableError",
    "Transition",
    "TransitionFailed",
    "TransitionGraph",
    "TransitionResult",
    "TransitionStep",
    "compute_plan",
    "create_planning_study",
    "create_storage",
    "current_transition",
    "fit_knee",
    "get_plan",
    "get_progress",
    "harden_storage",
    "knee_decision",
    "load_checkpoint",
    "load_planning_study",
    "paired_difference",
    "run_worker",
]
