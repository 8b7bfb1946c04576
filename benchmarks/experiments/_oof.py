"""Shared set-up of the calibration experiments: one real-data split, and a spy that keeps the
safeguard's out-of-fold probabilities of the labelled users."""
import warnings

import numpy as np

#: Imbalanced data sets whose quota surveys (10 or 100 labels per class) the hidden third cannot
#: judge: the third has the survey's shares, not the population's.
SHIFTED = ("telco-churn", "credit-scoring", "fine-foods", "spam-assassin")


def split_with_spy(ds: str, proto: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """(X, y, labelled idx, unlabelled idx, capture): the benchmark's split (sparse sets reduced as
    the benchmark reduces them); `capture` fills with y, oof_start and oof_deep when a fit in this
    process reaches the safeguard's decision."""
    import scipy.sparse as sp

    import deepseg.core.loop as loop
    from benchmarks import realdata
    from benchmarks.accuracy_real import _limit_threads, reduced

    warnings.filterwarnings("ignore")
    _limit_threads()
    cap = {}
    orig = loop.decide

    def spy(y, Ps, Pd):
        cap.update(y=y, oof_start=Ps, oof_deep=Pd)
        return orig(y, Ps, Pd)

    loop.decide = spy
    X, y, lab, unl = realdata.split(ds, proto, seed)
    if sp.issparse(X):
        X = reduced(ds)
    return X, y, lab, unl, cap


def hidden_third(ds: str, proto: int, seed: int):
    """(X, y, seen, hidden, y_semi, capture): the hidden-third protocol of the issue-19 prototypes.
    The benchmark's labelled draw for (`ds`, `proto`, `seed`), a stratified third of it hidden
    (fitted as unlabelled, then scored), `y_semi` the labels a fit may read (-1 elsewhere)."""
    from deepseg.core.safeguard import stratified_folds

    X, y, lab, _, cap = split_with_spy(ds, proto, seed)
    hidden = lab[stratified_folds(y[lab], 3, seed) == 0]
    seen = np.setdiff1d(lab, hidden)
    y_semi = np.full(len(y), -1)
    y_semi[seen] = y[seen]
    return X, y, seen, hidden, y_semi, cap


def unlabelled_sample(X, seen: np.ndarray, seed: int, rows: int = 5000) -> np.ndarray:
    """A seeded sample of at most `rows` users outside `seen` (the hidden third included: unlabelled
    to the fit), as float32."""
    pool = np.setdiff1d(np.arange(X.shape[0]), seen)
    rng = np.random.default_rng(seed)
    return np.asarray(X[np.sort(rng.choice(pool, min(len(pool), rows), replace=False))], dtype=np.float32)


def paired_fit(out: str, job: tuple, context) -> str:
    """One default fit of the hidden-third protocol for `job` = (data set, labels per class, seed,
    variant), run inside `context(variant, seed, X, seen)` (a context manager: the variant's patches),
    its :func:`scored` record written to `out`/<data set>-<labels>-<seed>-<variant>.json (a record
    already there is kept)."""
    import json
    import os

    from deepseg import DeepSegmentationClassifier

    ds, proto, seed, variant = job
    path = f"{out}/{ds}-{proto}-{seed}-{variant}.json"
    if os.path.exists(path):
        return path
    X, y, seen, hidden, ys, _ = hidden_third(ds, proto, seed)
    with context(variant, seed, X, seen):
        clf = DeepSegmentationClassifier(random_state=seed).fit(X, ys)
    rec = {"ds": ds, "proto": proto, "seed": seed, "variant": variant, **scored(clf, X, y, seen, hidden)}
    with open(path, "w") as f:
        json.dump(rec, f)
    print(ds, proto, seed, variant, rec["answer"], flush=True)
    return path


def run_cells(task, out: str, seeds: list[int], datasets: list[str] | None = None, variants: tuple = ()) -> None:
    """`task((data set, labels per class, seed[, variant]))` for every cell of the suite, seed and
    variant, on two worker processes, a fresh one per fit (a patched module dies with it); a failed
    fit is printed and the others go on."""
    import functools
    import os
    from multiprocessing import Pool

    from benchmarks import realdata

    os.makedirs(out, exist_ok=True)
    jobs = [(d, p, s, *v) for s in seeds for p in (10, 100) for d in datasets or list(realdata.DATASETS)
            for v in ([(v,) for v in variants] or [()])]
    with Pool(2, maxtasksperchild=1) as pool:
        list(pool.imap_unordered(functools.partial(_safe, task), jobs))


def _safe(task, job):
    try:
        return task(job)
    except Exception as e:  # noqa: BLE001 - one failed fit must not stop the others
        print("FAILED", job, repr(e), flush=True)


def paired_summary(out: str, base: str, variant: str, shifted: tuple[str, ...] = SHIFTED) -> None:
    """Per cell, the means of a two-variant hidden-third run's records in `out` (`lr`, `maj`,
    `start`, `answer` per variant) over the seeds both variants have, and the paired difference
    of the answers per cell and per fit, also on the `shifted` data sets' cells and the others apart."""
    import collections
    import glob
    import json

    cells = collections.defaultdict(dict)
    for path in sorted(glob.glob(f"{out}/*.json")):
        r = json.load(open(path))
        cells[(r["ds"], r["proto"])].setdefault(r["seed"], {})[r["variant"]] = r
    columns = {"lr": (base, "lr"), "maj": (base, "maj"), f"{base} start": (base, "start"), base: (base, "answer"),
               f"{variant} start": (variant, "start"), variant: (variant, "answer")}
    print(f"{'cell':22}{'n':>3}" + "".join(f"{k[:10]:>11}" for k in columns))
    tot, diffs = collections.defaultdict(list), []
    for cell, seeds in sorted(cells.items()):
        pairs = [s for s in seeds.values() if base in s and variant in s]
        if not pairs:
            continue
        m = {k: 100 * np.mean([p[v][f] for p in pairs]) for k, (v, f) in columns.items()}
        diffs += [100 * (p[variant]["answer"] - p[base]["answer"]) for p in pairs]
        print(f"{cell[0] + ' ' + str(cell[1]):22}{len(pairs):3d}" + "".join(f"{m[k]:11.2f}" for k in columns))
        for k in columns:
            tot[k].append(m[k])
    d = np.round(np.array(tot[variant]) - np.array(tot[base]), 9)  # equal cells: 0, not float noise
    print(f"{'mean':25}" + "".join(f"{np.mean(tot[k]):11.2f}" for k in columns))
    print(f"{variant} - {base} per cell {d.mean():+.2f} ± {d.std(ddof=1) / np.sqrt(len(d)):.2f} ({len(d)} cells); "
          f"per fit {np.mean(diffs):+.2f} ± {np.std(diffs, ddof=1) / np.sqrt(len(diffs)):.2f} ({len(diffs)} pairs); "
          f"cells {variant} > {base} {int((d > 0).sum())}, < {int((d < 0).sum())}"
          + _apart(d, np.array([c[0] in shifted for c in sorted(cells)])))


def variants_summary(out: str, base: str, shifted: tuple[str, ...] = ()) -> None:
    """:func:`variants_table` of a one-fit-many-answers run's records in `out`."""
    import glob
    import json

    variants_table([json.load(open(f)) for f in sorted(glob.glob(f"{out}/*.json"))], base, shifted)


def variants_table(recs: list[dict], base: str, shifted: tuple[str, ...] = ()) -> None:
    """Per cell, the means of the accuracies `acc` of one-fit-many-answers records, then each answer
    against `base`: per cell, per fit, and (`shifted`: data sets whose quota surveys the hidden third
    cannot judge) on those and the other cells apart."""
    import collections

    cells = collections.defaultdict(list)
    for r in recs:
        cells[(r["ds"], r["proto"])].append(r)
    names = list(recs[0]["acc"])
    print(f"{'cell':22}{'n':>3}" + "".join(f"{n[:16]:>18}" for n in names))
    per, fits = collections.defaultdict(list), collections.defaultdict(list)
    for cell, rs in sorted(cells.items()):
        row = {n: 100 * np.mean([r["acc"][n] for r in rs]) for n in names}
        for n in names:
            per[n].append(row[n])
            fits[n] += [100 * r["acc"][n] for r in rs]
        print(f"{cell[0] + ' ' + str(cell[1]):22}{len(rs):3d}" + "".join(f"{row[n]:18.2f}" for n in names))
    print(f"{'mean':25}" + "".join(f"{np.mean(per[n]):18.2f}" for n in names))
    mask = np.array([c[0] in shifted for c in sorted(cells)])
    for n in names:
        if n == base:
            continue
        d, df = np.round(np.array(per[n]) - np.array(per[base]), 9), np.array(fits[n]) - np.array(fits[base])
        line = (f"{n:22} - {base}: {d.mean():+.2f} ± {d.std(ddof=1) / np.sqrt(len(d)):.2f} per cell, "
                f"{df.mean():+.2f} ± {df.std(ddof=1) / np.sqrt(len(df)):.2f} per fit ({len(df)}); "
                f"cells up {int((d > 0).sum())}, down {int((d < 0).sum())}")
        print(line + _apart(d, mask))


def _apart(d: np.ndarray, mask: np.ndarray) -> str:
    """Per-cell differences `d` on the `mask`ed cells (the shifted data sets, whose quota surveys the
    hidden third cannot judge) and on the others, mean ± standard error."""
    return "".join(f"; {label} {d[m].mean():+.2f} ± {d[m].std(ddof=1) / np.sqrt(m.sum()):.2f}"
                   for label, m in (("quota on imbalanced", mask), ("others", ~mask)) if m.sum() > 1)


def scored(clf, X, y, seen: np.ndarray, hidden: np.ndarray) -> dict:
    """The hidden third's accuracy of a fit's answer (`answer`) and of its start (`start`), of a
    logistic regression on the seen labels (`lr`), the seen majority's rate (`maj`), the safeguard."""
    from sklearn.linear_model import LogisticRegression

    from deepseg.core.train import predict_proba

    yh = y[hidden]
    lr = LogisticRegression(max_iter=1000).fit(X[seen], y[seen])
    return {"answer": float(np.mean(clf.predict(X[hidden]) == yh)),
            "start": float(np.mean(predict_proba(clf.model_.supervised, X[hidden]).argmax(1) == yh)),
            "lr": float(np.mean(lr.predict(X[hidden]) == yh)),
            "maj": float(np.mean(yh == np.bincount(y[seen]).argmax())),
            "safeguard": clf.history_[-1].get("safeguard")}
