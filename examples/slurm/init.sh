#!/bin/bash
# Create the planning study once, from a login node (or any node that reaches the storage).
set -euo pipefail
source "${OPPLAN_VENV:-$HOME/opplan/.venv}/bin/activate"
export OPTUNA_STORAGE="${OPTUNA_STORAGE:-postgresql+psycopg2://opplan@db.cluster:5432/opplan}"
opplan init --study-name ucf101 --config plan.toml
opplan status --study-name ucf101
