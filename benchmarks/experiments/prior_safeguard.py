"""Issue 19, items 1-2: the estimated class prior and the safeguard, cell by cell on the real suite.

    python -m benchmarks.experiments.prior_safeguard run --seeds 0,1 --out benchmarks/results/prior-safeguard.jsonl
    python -m benchmarks.experiments.prior_safeguard run --variant labeled-cv --params '{"class_prior": "labeled"}'
    python -m benchmarks.experiments.prior_safeguard summary --out benchmarks/results/prior-safeguard.jsonl

One fit per (data set, protocol, seed, variant) on the split of `benchmarks.realdata` (sparse sets:
the same SVD-256 reduction as `benchmarks.accuracy_real`) gives three figures: the supervised start
(iteration 0), the iterations' EMA ("unguarded": what the fit returns without the safeguard, which
does not change the main fit) and the answer with the safeguard. The test labels are read only to
score. `summary` sets them next to the peers and the previous defaults' deepseg, read from
`benchmarks/results/realdata.json` (the same splits and scoring; records of the code before issue 19).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def _task(dataset: str, per_class: int, seed: int, params: dict) -> dict:
    import scipy.sparse as sp

    from benchmarks import realdata
    from benchmarks.accuracy_real import _limit_threads, reduced
    from deepseg import DeepSegmentationClassifier
    from deepseg.core.train import predict_proba

    _limit_threads()
    X, y, lab, unl = realdata.split(dataset, per_class, seed)
    if sp.issparse(X):
        X = reduced(dataset)
    c = int(y.max()) + 1
    y_semi = np.full(len(y), -1, dtype=np.int64)
    y_semi[lab] = y[lab]
    t = time.perf_counter()
    clf = DeepSegmentationClassifier(random_state=seed, **params).fit(X, y_semi)
    seconds = time.perf_counter() - t
    X_u, y_u = X[unl], y[unl]
    res = clf.model_
    last = clf.history_[-1] if clf.history_ else {}

    def acc(P):
        return float(np.mean(clf.classes_[P.argmax(axis=1)] == y_u))

    guarded = res.ensemble(X_u)
    unguarded = res.iterated(X_u) if res.iterated is not None else guarded
    pred = clf.classes_[guarded.argmax(axis=1)]
    return {
        "dataset": dataset, "protocol": per_class, "seed": seed, "seconds": seconds,
        "start": acc(predict_proba(res.supervised, X_u)), "unguarded": acc(unguarded), "guarded": acc(guarded),
        "majority": float(np.bincount(y_u, minlength=c).max() / len(y_u)),
        "true_prior": (np.bincount(y_u, minlength=c) / len(y_u)).tolist(),
        "labeled_share": (np.bincount(y[lab], minlength=c) / len(lab)).tolist(),
        "predicted_share": (np.bincount(pred, minlength=c) / len(pred)).tolist(),
        **{k: last.get(k) for k in ("class_prior", "prior_temperature", "safeguard", "cv_accuracy_start",
                                     "cv_accuracy_deepseg", "safeguard_s")},
    }


def run(args) -> None:
    from benchmarks import realdata

    params = json.loads(args.params)
    done = set()
    if os.path.exists(args.out):
        for line in open(args.out):
            r = json.loads(line)
            done.add((r["variant"], r["dataset"], r["protocol"], r["seed"]))
    for seed in args.seeds:
        for ds in args.datasets or list(realdata.DATASETS):
            for proto in args.protocols:
                if (args.variant, ds, proto, seed) in done:
                    continue
                r = {"variant": args.variant, "params": params, **_task(ds, proto, seed, params)}
                with open(args.out, "a") as fh:
                    fh.write(json.dumps(r) + "\n")
                print(f"{args.variant} {ds} {proto} seed {seed}: start {100 * r['start']:.1f} unguarded "
                      f"{100 * r['unguarded']:.1f} guarded {100 * r['guarded']:.1f} ({r['safeguard']}, cv "
                      f"{r['cv_accuracy_start']} vs {r['cv_accuracy_deepseg']}) {r['seconds']:.1f}s", flush=True)


def _old(path: str) -> dict:
    """{(dataset, protocol, seed): {method: accuracy}} from the harness's results file."""
    out: dict = {}
    for r in json.load(open(path))["results"]:
        if "error" not in r:
            out.setdefault((r["dataset"], int(r["protocol"]), int(r["seed"])), {})[r["method"]] = r["accuracy"]
    return out


def summary(args) -> None:
    from benchmarks import realdata
    from benchmarks.accuracy_real import PEERS, SUPERVISED_PEERS

    rows = [json.loads(line) for line in open(args.out)]
    old = _old(args.old)
    variants = sorted({r["variant"] for r in rows})
    for variant in variants:
        cells: dict = {}
        for r in rows:
            if r["variant"] == variant:
                cells.setdefault((r["dataset"], r["protocol"]), []).append(r)
        print(f"\n### {variant}: {rows[[r['variant'] for r in rows].index(variant)]['params']}\n")
        print("| data set | labels | seeds | maj. | start | old deepseg | unguarded | **new** | new−start | "
              "new−old | best sup. | new−best sup. | best peer | new−best peer | picked start | prior est. "
              "(true) | s |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---:|---:|---|---:|")
        tot = {"d_start": [], "d_old": [], "ge_sup": 0, "ge_peer": 0, "below_start": 0, "below_maj_prop": 0,
               "n_prop": 0, "n": 0, "old_d_start": [], "old_below_start": 0, "old_ge_sup": 0, "old_ge_peer": 0,
               "old_below_maj_prop": 0, "ung_d_start": []}
        order = list(realdata.DATASETS)
        for (ds, proto), rs in sorted(cells.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1])):
            rs = [r for r in rs if (ds, proto, r["seed"]) in old and all(
                m in old[(ds, proto, r["seed"])] for m in (*SUPERVISED_PEERS, "deepseg", "supervised-start"))]
            if not rs:
                continue
            seeds = [r["seed"] for r in rs]
            mean = lambda k: float(np.mean([r[k] for r in rs]))  # noqa: E731
            om = lambda m: float(np.mean([old[(ds, proto, s)][m] for s in seeds]))  # noqa: E731
            new, start, ung, maj = mean("guarded"), mean("start"), mean("unguarded"), mean("majority")
            sup = {m: om(m) for m in SUPERVISED_PEERS}
            peers = {m: om(m) for m in PEERS if m != "supervised-start" and m != "deepseg-patent"
                     and all(m in old[(ds, proto, s)] for s in seeds)}
            bs, bp = max(sup, key=sup.get), max(peers, key=peers.get)
            prop = realdata.DATASETS[ds].proportional
            od, ostart = om("deepseg"), om("supervised-start")
            tot["n"] += 1
            tot["d_start"].append(new - start)
            tot["ung_d_start"].append(ung - start)
            tot["d_old"].append(new - od)
            tot["old_d_start"].append(od - ostart)
            tot["ge_sup"] += new >= sup[bs]
            tot["ge_peer"] += new >= peers[bp]
            tot["old_ge_sup"] += od >= sup[bs]
            tot["old_ge_peer"] += od >= peers[bp]
            tot["below_start"] += new - start < -0.005
            tot["old_below_start"] += od - ostart < -0.005
            tot["n_prop"] += prop
            tot["below_maj_prop"] += prop and new < maj
            tot["old_below_maj_prop"] += prop and od < maj
            picked = sum(r["safeguard"] == "supervised start" for r in rs)
            est = np.mean([r["class_prior"] for r in rs], axis=0)
            true = np.mean([r["true_prior"] for r in rs], axis=0)
            k = int(np.argmax(true))
            p = lambda x: f"{100 * x:.1f}"  # noqa: E731
            d = lambda x: f"{100 * x:+.1f}"  # noqa: E731
            print(f"| {ds} | {proto}{' tot' if prop else '/c'} | {len(rs)} | {p(maj)}{'*' if prop else ''} | {p(start)} | "
                  f"{p(od)} | {p(ung)} | **{p(new)}** | {d(new - start)} | {d(new - od)} | {bs} {p(sup[bs])} | "
                  f"{d(new - sup[bs])} | {bp} {p(peers[bp])} | {d(new - peers[bp])} | {picked}/{len(rs)} | "
                  f"{p(est[k])} ({p(true[k])}) | {mean('seconds'):.0f} |")
        n = tot["n"]
        print(f"\n{variant}, {n} cells: new−start mean {100 * np.mean(tot['d_start']):+.2f} pts "
              f"(unguarded {100 * np.mean(tot['ung_d_start']):+.2f}; old default {100 * np.mean(tot['old_d_start']):+.2f}); "
              f"new−old {100 * np.mean(tot['d_old']):+.2f}; cells < start−0.5: {tot['below_start']} "
              f"(old {tot['old_below_start']}); >= best supervised {tot['ge_sup']}/{n} (old {tot['old_ge_sup']}); "
              f">= best peer (without patent) {tot['ge_peer']}/{n} (old {tot['old_ge_peer']}); proportional cells "
              f"below majority {tot['below_maj_prop']}/{tot['n_prop']} (old {tot['old_below_maj_prop']})")


def main(argv=None) -> None:
    from benchmarks.accuracy_real import parse_seeds

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("run", "summary"))
    parser.add_argument("--out", default="benchmarks/results/prior-safeguard.jsonl")
    parser.add_argument("--old", default="benchmarks/results/realdata.json")
    parser.add_argument("--variant", default="default")
    parser.add_argument("--params", default="{}", help="JSON of DeepSegmentationClassifier parameters")
    parser.add_argument("--seeds", type=parse_seeds, default=[0, 1])
    parser.add_argument("--datasets", type=lambda s: s.split(","), default=None)
    parser.add_argument("--protocols", type=lambda s: [int(v) for v in s.split(",")], default=[10, 100])
    args = parser.parse_args(argv)
    run(args) if args.command == "run" else summary(args)


if __name__ == "__main__":
    main()
