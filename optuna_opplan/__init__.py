"""Optimization planning for Optuna: plan a network's training schedule on a transition graph."""

from __future__ import annotations
