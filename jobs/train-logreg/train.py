"""Logistic regression trained with full-batch gradient descent in numpy, on a synthetic data set.

Parameters come from the environment: EPOCHS, LEARNING_RATE, L2, SEED. In an array job (jobs/sweep) the child with
BATCHRUNNER_ARRAY_INDEX=i takes the i-th point of the grid SWEEP_LEARNING_RATES x SWEEP_L2 (comma-separated lists).
Logs one line per epoch; writes /outputs/model.npz (weights, bias) and /outputs/metrics.json. Asked to stop (a cancel,
the timeout: SIGTERM, then SIGKILL after the job's stopGraceSeconds), it saves the model as it is after the current
epoch, with "stopped_at_epoch" in metrics.json, and exits.
"""
import json
import os
import signal
import sys

import numpy as np

OUT = os.environ.get("OUTPUT_DIR", "/outputs")


def params():
    p = {"epochs": int(os.environ.get("EPOCHS", "20")), "learning_rate": float(os.environ.get("LEARNING_RATE", "0.5")),
         "l2": float(os.environ.get("L2", "0.001")), "seed": int(os.environ.get("SEED", "7"))}
    index = os.environ.get("BATCHRUNNER_ARRAY_INDEX")
    if index is not None and os.environ.get("SWEEP_LEARNING_RATES"):
        rates = [float(v) for v in os.environ["SWEEP_LEARNING_RATES"].split(",")]
        l2s = [float(v) for v in os.environ.get("SWEEP_L2", str(p["l2"])).split(",")]
        grid = [(r, l) for r in rates for l in l2s]
        i = int(index)
        if i >= len(grid):
            sys.exit(f"array index {i} is past the grid of {len(grid)} points")
        p["learning_rate"], p["l2"] = grid[i]
        p["array_index"] = i
    return p


def make_data(seed, n=2000, d=8):
    # RandomState, not default_rng: its streams are frozen, so every numpy version draws the same data.
    rng = np.random.RandomState(seed)
    true_w = rng.normal(0, 1.5, size=d)
    x = rng.normal(0, 1, size=(n, d))
    p = 1 / (1 + np.exp(-(x @ true_w - 0.5)))
    y = (rng.uniform(size=n) < p).astype(float)
    split = int(0.8 * n)
    return x[:split], y[:split], x[split:], y[split:]


def loss_and_grad(w, b, x, y, l2):
    z = np.clip(x @ w + b, -30, 30)
    p = 1 / (1 + np.exp(-z))
    loss = -np.mean(y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12)) + 0.5 * l2 * (w @ w)
    err = p - y
    return loss, x.T @ err / len(y) + l2 * w, err.mean()


def accuracy(w, b, x, y):
    return float(np.mean(((x @ w + b) > 0) == (y > 0.5)))


def save(w, b, metrics):
    np.savez(os.path.join(OUT, "model.npz"), weights=w, bias=np.array([b]))
    with open(os.path.join(OUT, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)


def main():
    # The handler only notes the request: the epoch in progress finishes, then the checkpoint is written.
    stop = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))
    p = params()
    x_train, y_train, x_test, y_test = make_data(p["seed"])
    print(f"training logistic regression: {len(y_train)} train / {len(y_test)} test samples, {x_train.shape[1]} features, "
          f"learning rate {p['learning_rate']}, l2 {p['l2']}, {p['epochs']} epochs", flush=True)
    w, b = np.zeros(x_train.shape[1]), 0.0
    for epoch in range(1, p["epochs"] + 1):
        loss, grad_w, grad_b = loss_and_grad(w, b, x_train, y_train, p["l2"])
        w -= p["learning_rate"] * grad_w
        b -= p["learning_rate"] * grad_b
        print(f"epoch {epoch:3d}/{p['epochs']}  loss {loss:.4f}  train accuracy {accuracy(w, b, x_train, y_train):.4f}", flush=True)
        if stop:
            save(w, b, dict(p, stopped_at_epoch=epoch, final_loss=round(float(loss), 6)))
            print(f"asked to stop: saved the model after epoch {epoch} to {OUT}/model.npz", flush=True)
            sys.exit(0)

    final_loss, _, _ = loss_and_grad(w, b, x_train, y_train, p["l2"])
    metrics = dict(p, final_loss=round(float(final_loss), 6), train_accuracy=accuracy(w, b, x_train, y_train),
                   test_accuracy=accuracy(w, b, x_test, y_test))
    save(w, b, metrics)
    print(f"test accuracy {metrics['test_accuracy']:.4f}; wrote {OUT}/model.npz, {OUT}/metrics.json")


if __name__ == "__main__":
    main()
