"""Issue 19 prototype: a supervised start that also learns a linear teacher on the unlabelled users,
validated on labelled points only.

    python -m benchmarks.experiments.linear_start run 100,101        # fits -> /tmp/exp/linear/*.json
    python -m benchmarks.experiments.linear_start summary

With 10-20 labelled users the network's start is 2-20 points behind a logistic regression on the
same users (attrition 10×c: 63.6 against 82.6), and the TSVMs in f's space cannot repair it. The
variant "linear" trains the start as today (200 labelled epochs), then `DISTILL_EPOCHS` epochs on
up to 5,000 unlabelled users towards a logistic regression's probabilities (fitted on the same
labelled users: KL, as the labelled loss), then the iterations' 10 labelled epochs. The fold fits of
the safeguard and the calibration get the same start (the teacher fitted on the fold's labelled part).

Protocol as `calibration_bias`: tuning seeds 100+, the benchmark's labelled draw, a stratified third
of it hidden (fitted as unlabelled) and scored. Both variants run on the same split and seed. No
label of an unlabelled point is read.
"""
import json
import os
import sys

import numpy as np

OUT = "/tmp/exp/linear"
DISTILL_EPOCHS = 10
_STATE: dict = {}


def _patch() -> None:
    """Wrap `train_labeled` where the start and the fold starts call it (200 epochs)."""
    import deepseg.core.loop as loop
    import deepseg.core.safeguard as safeguard
    from deepseg.core.embed import kl_loss
    from deepseg.core.train import shuffled_batches, train_epochs, train_labeled

    def wrapped(net, optimizer, X, H, epochs, batch_size, seed):
        losses = train_labeled(net, optimizer, X, H, epochs, batch_size, seed)
        if _STATE.get("variant") != "linear" or epochs != _STATE["start_epochs"]:
            return losses
        from sklearn.linear_model import LogisticRegression

        y = H.argmax(axis=1)
        if len(np.unique(y)) < 2:
            return losses
        U = _STATE["U"]
        T = np.full((len(U), H.shape[1]), 1e-3, dtype=np.float32)
        lr = LogisticRegression(max_iter=1000).fit(X, y)
        T[:, lr.classes_] = lr.predict_proba(U)
        T /= T.sum(axis=1, keepdims=True)
        train_epochs(net, optimizer, lambda e: shuffled_batches(U, T, 256, seed + 50 + e), kl_loss, DISTILL_EPOCHS)
        return train_labeled(net, optimizer, X, H, 10, batch_size, seed + 99)

    loop.train_labeled = wrapped
    safeguard.train_labeled = wrapped


def task(a):
    ds, proto, seed, variant = a
    path = f"{OUT}/{ds}-{proto}-{seed}-{variant}.json"
    if os.path.exists(path):
        return path
    from benchmarks.experiments._oof import hidden_third, scored
    from deepseg import DeepSegmentationClassifier

    _patch()
    X, y, seen, hidden, ys, _ = hidden_third(ds, proto, seed)
    pool = np.setdiff1d(np.arange(len(y)), seen)
    rng = np.random.default_rng(seed)
    _STATE.update(variant=variant, start_epochs=200,
                  U=np.asarray(X[np.sort(rng.choice(pool, min(len(pool), 5000), replace=False))], dtype=np.float32))
    clf = DeepSegmentationClassifier(random_state=seed).fit(X, ys)
    rec = {"ds": ds, "proto": proto, "seed": seed, "variant": variant, **scored(clf, X, y, seen, hidden)}
    with open(path, "w") as f:
        json.dump(rec, f)
    print(ds, proto, seed, variant, rec["answer"], flush=True)
    return path


def run(seeds: list[int], datasets: list[str] | None = None) -> None:
    from benchmarks.experiments._oof import run_cells

    run_cells(task, OUT, seeds, datasets, variants=("base", "linear"))


def summary() -> None:
    from benchmarks.experiments._oof import paired_summary

    paired_summary(OUT, "base", "linear")


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run([int(s) for s in sys.argv[2].split(",")], sys.argv[3].split(",") if len(sys.argv) > 3 else None)
    else:
        summary()
