"""Plan the training schedule of your own training loop: a numpy MLP, no framework needed.

The loop below is all an objective has to do: start from the checkpoint the engine hands it,
train with the state's hyper-parameters, report the validation loss of every epoch, hand every
epoch's checkpoint to the engine, and stop when the knee pruner says so. The engine keeps the
epochs that may still become the kept one, uploads the kept one (hash-checked) to an Optuna
artifact store shared by all workers, and gives it to the transitions that start from it.

Run it (2 worker processes on one SQLite file; any number of machines works the same way)::

    python examples/own_loop.py --storage sqlite:///own_loop.db --artifacts own_loop_artifacts \\
        --workers 2
    optuna-dashboard sqlite:///own_loop.db    # the graph, every curve and its knee, the plan

Workers on other machines run the same command with the same storage and artifact store
(a shared folder, or e.g. ``optuna.artifacts.Boto3ArtifactStore``); ``--workers 0`` only
prints the plan of a study that other workers completed.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import math
import multiprocessing
import sys
import zlib

import numpy as np
import optuna

import optuna_opplan as op

# The states: any axes you like. Training may only raise the batch size and lower the learning
# rate; the plan says how many epochs to spend in each state, and in which order.
GRAPH = op.TransitionGraph(
    [
        op.Axis("batch_size", (16, 64), "increasing"),
        op.Axis("lr", (0.4, 0.1, 0.025), "decreasing"),
    ]
)
NUM_CLASSES = 3
HIDDEN = 64


def make_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Three noisy interleaved spirals in 2-D: 300 training and 300 validation points."""
    rng = np.random.default_rng(seed)
    n = 200
    xs, ys = [], []
    for label in range(NUM_CLASSES):
        t = rng.uniform(0.2, 1.0, n)
        angle = 4.0 * t + label * 2.0 * math.pi / NUM_CLASSES
        point = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1)
        xs.append(point + rng.normal(0.0, 0.1, point.shape))
        ys.append(np.full(n, label))
    x, y = np.concatenate(xs), np.concatenate(ys)
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    return x[:300], y[:300], x[300:], y[300:]


X_TRAIN, Y_TRAIN, X_VAL, Y_VAL = make_data()


# ------------------------------------------------------------------------- the model, in numpy
def initial_model() -> dict[str, np.ndarray]:
    """The same untrained model in every process (a fixed seed)."""
    rng = np.random.default_rng(0)
    return {
        "w1": rng.normal(0.0, 1.0, (2, HIDDEN)),
        "b1": np.zeros(HIDDEN),
        "w2": rng.normal(0.0, 0.01, (HIDDEN, NUM_CLASSES)),
        "b2": np.zeros(NUM_CLASSES),
    }


def to_bytes(model: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **model)
    return buffer.getvalue()


def from_bytes(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data)) as arrays:
        return {name: arrays[name] for name in arrays.files}


def _forward(model: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hidden = np.tanh(x @ model["w1"] + model["b1"])
    logits = hidden @ model["w2"] + model["b2"]
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    return hidden, probs


def evaluate(model: dict[str, np.ndarray]) -> tuple[float, float]:
    """Validation (cross-entropy loss, accuracy)."""
    _, probs = _forward(model, X_VAL)
    loss = -np.log(probs[np.arange(len(Y_VAL)), Y_VAL] + 1e-12).mean()
    return float(loss), float((probs.argmax(axis=1) == Y_VAL).mean())


def train_one_epoch(
    model: dict[str, np.ndarray], *, lr: float, batch_size: int, rng: np.random.Generator
) -> None:
    """One epoch of plain minibatch SGD, in place."""
    order = rng.permutation(len(X_TRAIN))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        x, y = X_TRAIN[idx], Y_TRAIN[idx]
        hidden, probs = _forward(model, x)
        grad = probs
        grad[np.arange(len(y)), y] -= 1.0
        grad /= len(y)
        grad_hidden = (grad @ model["w2"].T) * (1.0 - hidden**2)
        model["w2"] -= lr * hidden.T @ grad
        model["b2"] -= lr * grad.sum(axis=0)
        model["w1"] -= lr * x.T @ grad_hidden
        model["b1"] -= lr * grad_hidden.sum(axis=0)


# ------------------------------------------------------------------------------ the objective
def objective(trial: optuna.Trial) -> None:
    step = op.current_transition(trial)  # .source (None: initial model), .target, .params
    data = step.load_source_checkpoint()  # bytes you saved, or None for the initial model
    model = initial_model() if data is None else from_bytes(data)
    # Seeded by the transition, not the trial number: a retried transition, or one that
    # another worker happens to run, trains exactly the same way.
    rng = np.random.default_rng(zlib.crc32(step.transition.key.encode()))
    for epoch in itertools.count(1):
        train_one_epoch(model, lr=step.params["lr"], batch_size=step.params["batch_size"], rng=rng)
        loss, _ = evaluate(model)
        trial.report(loss, epoch)  # the validation score of epoch 1, 2, ...
        step.save_checkpoint(epoch, to_bytes(model))  # every epoch: the kept one is known last
        if trial.should_prune():  # past the knee of the validation curve, plus the delay
            break


def create_study(storage: str, study_name: str) -> optuna.Study:
    return op.create_planning_study(
        GRAPH,
        storage=storage,
        study_name=study_name,
        direction="minimize",  # a loss; "maximize" for an accuracy
        # The DP compares the kept checkpoints' measured losses (the default, "fitted", takes
        # the knee fit's peak): the plan's score is then exactly the planned model's loss.
        score="observed",
        pruner=op.KneePointPruner(delay=4, max_epochs=60),
    )


def work(storage: str, study_name: str, artifacts: str) -> int:
    """One worker: train ready transitions until the plan is complete."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = op.load_planning_study(study_name=study_name, storage=storage)
    return op.run_worker(study, objective, artifact_store=artifacts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", default="sqlite:///own_loop.db")
    parser.add_argument("--study-name", default="own-loop")
    parser.add_argument("--artifacts", default="own_loop_artifacts", help="checkpoint folder")
    parser.add_argument("--workers", type=int, default=2, help="worker processes to start")
    parser.add_argument("--json", help="also write the plan and the check as JSON here")
    args = parser.parse_args(argv)

    study = create_study(args.storage, args.study_name)
    # Separate processes, as on separate machines: nothing is shared but the storage and the
    # artifact store. ("spawn": each worker opens its own connections.)
    context = multiprocessing.get_context("spawn")
    with context.Pool(args.workers) if args.workers else _NoPool() as pool:
        trained = pool.starmap(
            work, [(args.storage, args.study_name, args.artifacts)] * args.workers
        )
    plan = op.get_plan(study)
    print(plan)
    # The planned model: the checkpoint of the plan's last transition.
    model = from_bytes(op.load_checkpoint(study, plan.trials[-1], artifact_store=args.artifacts))
    loss, accuracy = evaluate(model)
    print(f"planned model: validation loss {loss:.4f} (plan: {plan.score:.4f}), ", end="")
    print(f"accuracy {accuracy:.3f}; workers trained {trained} transitions")
    print(f"see it all with: optuna-dashboard {args.storage}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "plan": plan.to_dict(),
                    "planned_loss": loss,
                    "planned_accuracy": accuracy,
                    "trained": trained,
                },
                f,
                indent=2,
            )
    return 0


class _NoPool:
    def __enter__(self) -> _NoPool:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def starmap(self, func: object, args: list[object]) -> list[int]:
        return []


if __name__ == "__main__":
    sys.exit(main())
