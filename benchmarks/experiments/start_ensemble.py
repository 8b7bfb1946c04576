"""Issue 19 prototype: the supervised start as an ensemble of networks that differ only in their seed.

    python -m benchmarks.experiments.start_ensemble run 100,101     # then 102,103; fits -> /tmp/exp/startens
    python -m benchmarks.experiments.start_ensemble summary

The safeguard keeps the supervised start in about 40% of fits (116 of 260 in the suite; 41 of 104
on the hidden third, `safeguard_candidates`). A network trained on 20-1,000 labelled users varies
with its initialisation, and averaging a few such networks (a deep ensemble, Lakshminarayanan et al.
2017) is the standard way to lower that variance; the fold ensembles tried before
(`fold_ensemble`) averaged weaker networks, each trained on two thirds of the labelled users.
Here each of M starts is trained on all labelled users, with its linear teacher, from its own
seed; the safeguard's out-of-fold start is the same M-network average per fold (same folds), and
the start's calibration is refitted on it. The iterations are unchanged.

Each fit (defaults) captures what `safeguard_candidates` does, plus the M−1 extra starts'
hidden-third and out-of-fold probabilities and the calibration's inputs; the rules are re-analysed.
Protocol as `linear_start`: tuning seeds 100+, the benchmark's labelled draw, a stratified third of
it hidden (fitted as unlabelled) and scored. No label of an unlabelled point is read.
"""
import json
import os
import sys

import numpy as np

from benchmarks.experiments.safeguard_candidates import _CAP, captured

OUT = "/tmp/exp/startens"
M = 3


def _extra_start(guard, X_hid, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(hidden probabilities, out-of-fold probabilities on the guard's folds) of one more start."""
    import torch

    from deepseg.core.embed import SegmentationNet, smooth_labels
    from deepseg.core.safeguard import CrossFit
    from deepseg.core.teacher import teach, teacher_sample
    from deepseg.core.train import make_optimizer, predict_proba, train_labeled

    c, tc, X_l, y_l = guard.config, guard.config.train, guard.X_l, guard.y_l
    X_u = teacher_sample(guard.sample, guard.seed)

    def teacher(net, optimizer, X, y, H, s):
        teach(net, optimizer, X, y, H, X_u, tc.linear_teacher_epochs, tc.labeled_epochs, tc.batch_size, s)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SegmentationNet(X_l.shape[1], guard.n_classes, c.net)
        optimizer = make_optimizer(net, tc.learning_rate)
        H = smooth_labels(y_l, guard.n_classes, c.label_smoothing)
        train_labeled(net, optimizer, X_l, H, tc.supervised_epochs, tc.batch_size, seed)
        teacher(net, optimizer, X_l, y_l, H, seed)
    cross = CrossFit(X_l, y_l, guard.n_classes, c.safeguard_folds, c.label_smoothing, c.net, tc.learning_rate,
                     tc.supervised_epochs, tc.batch_size, seed, teacher)
    cross.folds = guard._cross.folds
    return predict_proba(net, X_hid), cross.supervised()


def fit(job) -> None:
    run = captured(job)
    if run is None:
        return
    X, hid, guard = run["X"], run["hid"], _CAP["guard"]
    extra = [_extra_start(guard, X[hid], job[2] + 104729 * j) for j in range(1, M)]
    train_prior, prior, few = _CAP["cal_args"]
    os.makedirs(OUT, exist_ok=True)
    np.savez_compressed(f"{OUT}/{'-'.join(map(str, job))}.npz", **run["arrays"],
                        extra_hid=np.stack([e[0] for e in extra]), extra_oof=np.stack([e[1] for e in extra]),
                        train_prior=np.asarray(train_prior), prior=np.asarray(prior), few=few)
    print(*job, flush=True)


def answers(f) -> dict:
    """One capture's hidden accuracy: today's answer, and the answer with the M-start ensemble."""
    from deepseg.core.calibration import OutputCalibration, fit_answer_calibration

    y, truth = f["y"], f["truth"]
    cal_s = OutputCalibration.from_dict(json.loads(str(f["cal_start"])))
    cal_d = OutputCalibration.from_dict(json.loads(str(f["cal_deep"])))
    oof_ens = (f["oof_start"] + f["extra_oof"].sum(0)) / M
    cal_e, _ = fit_answer_calibration(oof_ens, y, f["train_prior"], f["prior"], bool(f["few"]))
    start, ens = cal_s(f["raw_start"]), cal_e((f["raw_start"] + f["extra_hid"].sum(0)) / M)
    deep = cal_d(f["raw_deep"])
    ok = lambda P, t: np.mean(P.argmax(1) == t)
    acc = lambda P: float(ok(P, truth))
    kept, kept_ens = ok(f["oof_start"], y) > ok(f["oof_deep"], y), ok(oof_ens, y) > ok(f["oof_deep"], y)
    assert np.allclose(start if kept else deep, f["answer"], atol=1e-5)  # the re-analysis reproduces the fit
    return {"acc": {"today": acc(start if kept else deep), "start ensemble": acc(ens if kept_ens else deep),
                    "start": acc(start), "ensemble alone": acc(ens), "deep": acc(deep)},
            "kept": bool(kept), "kept_ens": bool(kept_ens)}


if __name__ == "__main__":
    from benchmarks.experiments.tau_posterior import rows

    if sys.argv[1] == "run":
        from benchmarks.experiments._oof import run_cells

        run_cells(fit, OUT, [int(s) for s in sys.argv[2].split(",")])
    elif sys.argv[1] == "dump":  # one JSON line per fit (benchmarks/results/start-ensemble-hidden-third.jsonl)
        import benchmarks.experiments.tau_posterior as tp

        tp.OUT = OUT.rsplit("/", 1)[0]
        for r in rows("startens", answers):
            print(json.dumps(r))
    else:
        from benchmarks.experiments._oof import SHIFTED, variants_table
        import benchmarks.experiments.tau_posterior as tp

        tp.OUT = OUT.rsplit("/", 1)[0]
        recs = [json.loads(line) for line in open(sys.argv[2])] if len(sys.argv) > 2 else rows("startens", answers)
        variants_table(recs, "today", SHIFTED)
        print(f"{len(recs)} fits; start kept today {sum(r['kept'] for r in recs)}, "
              f"with the ensemble {sum(r['kept_ens'] for r in recs)}")
