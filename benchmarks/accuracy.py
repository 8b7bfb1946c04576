"""Accuracy benchmark: deepseg against semi-supervised baselines, scored on the unlabelled points.

Two suites. The default, `--suite real`, is the real-data benchmark of issue 19
(`benchmarks/accuracy_real.py`: 13 public data sets of `benchmarks/realdata.py`, 10 and 100 labels
per class, `make bench-accuracy`); it writes docs/benchmarks.md and benchmarks/results/realdata.json:

    python -m benchmarks.accuracy --jobs 2         # see python -m benchmarks.accuracy --help

`--suite toy` is the earlier suite on scikit-learn's toy sets and synthetic users (the data the
defaults were first tuned on):

    python -m benchmarks.accuracy --suite toy                  # 10 seeds, every data set and method
    python -m benchmarks.accuracy --suite toy --quick          # 2 seeds
    python -m benchmarks.accuracy --suite toy --datasets wine digits5 --methods deepseg tsvm --seeds 3 --jobs 2

The toy suite writes benchmarks/results/accuracy-toy.md, benchmarks/accuracy_per_iteration.png and
benchmarks/results/accuracy.json. Set OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 for
comparable timings.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script: python benchmarks/accuracy.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
import datetime
import functools
import json
import platform
import shlex
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np

from benchmarks.datasets import DATASETS, labeled_mask
from benchmarks.metrics import expected_calibration_error, score  # noqa: F401  (re-exported)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = ("accuracy", "macro_f1", "log_loss", "ece")


def _methods():
    from sklearn.linear_model import LogisticRegression
    from sklearn.semi_supervised import LabelPropagation, LabelSpreading

    from deepseg import PATENT_PARAMS, DeepSegmentationClassifier, TransductiveSVC
    from deepseg.baselines import DeepLabelPropagation, SelfTrainingNet, SupervisedNet

    return {
        "deepseg": lambda seed: DeepSegmentationClassifier(random_state=seed),
        "deepseg-patent": lambda seed: DeepSegmentationClassifier(**PATENT_PARAMS, random_state=seed),
        "supervised-net": lambda seed: SupervisedNet(random_state=seed),
        "tsvm": lambda seed: TransductiveSVC(),
        "label-spreading": lambda seed: LabelSpreading(kernel="knn"),
        "label-propagation": lambda seed: LabelPropagation(kernel="knn"),
        "logreg": lambda seed: LogisticRegression(max_iter=1000),
        "self-training": lambda seed: SelfTrainingNet(random_state=seed),
        "deep-lp": lambda seed: DeepLabelPropagation(random_state=seed),
        **_experimental_methods(),
    }


def _experimental_methods() -> dict:
    """'x-<name>' for each prototype of benchmarks/experiments/validate.py (VariantClassifier)."""
    from benchmarks.experiments.validate import VARIANTS
    from benchmarks.experiments.variants import VariantClassifier

    return {
        f"x-{name}": (lambda seed, p=params, o=opts: VariantClassifier(opts=o, random_state=seed, **p))
        for name, (params, opts) in VARIANTS.items()
    }


def _experimental_names() -> list[str]:
    from benchmarks.experiments.validate import VARIANTS

    return [f"x-{name}" for name in VARIANTS]


METHOD_NAMES = (
    "deepseg", "deepseg-patent", "supervised-net", "tsvm", "label-spreading",
    "label-propagation", "logreg", "self-training", "deep-lp",
)
DESCRIPTIONS = {
    "deepseg": "`DeepSegmentationClassifier()`: deepseg's defaults (retraining at the full rate on the "
               "certainty- and class-weighted argmax of TSVM × g∘f probabilities for 20 epochs (30 above 10 "
               "labelled points per class), input noise (σ = 0.2 up to 10 labelled points per class, less above) "
               "and mixup α = 2, TSVM C = 10, EMA ρ = 0.5; chosen by the "
               "labelled-only validation of `benchmarks/tune.py`)",
    "deepseg-patent": "`DeepSegmentationClassifier(**PATENT_PARAMS)`: the method as specified (MSE to the "
                      "TSVM probabilities at a tenth of the rate)",
    "supervised-net": "`SupervisedNet()`: the same g∘f on the labelled points only (n_iter=0)",
    "tsvm": "`TransductiveSVC()`: one-vs-rest linear TSVM on the raw features",
    "label-spreading": "`LabelSpreading(kernel='knn')` (scikit-learn defaults, transductive `label_distributions_`)",
    "label-propagation": "`LabelPropagation(kernel='knn')` (scikit-learn defaults, transductive `label_distributions_`)",
    "logreg": "`LogisticRegression(max_iter=1000)` on the labelled points only",
    "self-training": "`SelfTrainingNet()`: g∘f retrained on its own predictions with max-probability ≥ 0.95, 5 rounds",
    "deep-lp": "`DeepLabelPropagation()`: Iscen et al. 2019, kNN graph (k=50, γ=3) on f, CG diffusion, 5 rounds",
}


@functools.cache
def _warm_up() -> None:
    """One tiny fit per process, so torch's first-call set-up is not timed in the first run."""
    from deepseg import DeepSegmentationClassifier

    X = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    y = np.where(np.arange(64) < 8, np.arange(64) % 2, -1)
    DeepSegmentationClassifier(supervised_epochs=2, n_iter=1, unlabeled_epochs=1, labeled_epochs=1).fit(X, y)


def run_one(dataset: str, method: str, seed: int) -> dict:
    """Fit one method on one seeded split; score its probabilities on the unlabelled points."""
    from deepseg import DeepSegmentationClassifier
    from deepseg.core.train import predict_proba

    X, y, per_class = DATASETS[dataset]()
    lab = labeled_mask(y, per_class, seed)
    est = _methods()[method](seed)
    _warm_up()
    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if method == "logreg":
            est.fit(X[lab], y[lab])
        else:
            est.fit(X, np.where(lab, y, -1))
        if hasattr(est, "label_distributions_"):  # graph methods: their transductive answer
            P = est.label_distributions_[~lab]
        else:
            P = est.predict_proba(X[~lab])
    seconds = time.perf_counter() - t
    result = {
        "dataset": dataset, "method": method, "seed": seed,
        "n_labelled": int(lab.sum()), "n_unlabelled": int((~lab).sum()),
        **score(y[~lab], P, est.classes_), "seconds": seconds,
        "warnings": sorted({f"{w.category.__name__}: {str(w.message)[:120]}" for w in caught}),
    }
    if isinstance(est, DeepSegmentationClassifier) and est.n_iter_ > 0:
        X_start = X[~lab] if est.reduction_ is None else est.reduction_.transform(X[~lab])  # f's input
        staged = [predict_proba(est.model_.supervised, X_start), *est.staged_predict_proba(X[~lab])]
        result["accuracy_per_iteration"] = [
            float(np.mean(est.classes_[p.argmax(axis=1)] == y[~lab])) for p in staged
        ]
    print(f"{dataset:>10} {method:>17} seed {seed}: accuracy {result['accuracy']:.4f}  "
          f"{seconds:7.1f}s", flush=True)
    return result


def run_seed(dataset: str, methods: list[str], seed: int) -> list[dict]:
    return [run_one(dataset, m, seed) for m in methods]


def summarise(results: list[dict]) -> dict:
    """{dataset: {method: {metric: (mean, std)}}} with std the sample standard deviation."""
    out: dict = {}
    for r in results:
        out.setdefault(r["dataset"], {}).setdefault(r["method"], []).append(r)
    for ds, by_method in out.items():
        for m, runs in by_method.items():
            stats = {}
            for key in (*METRICS, "seconds"):
                v = np.array([r[key] for r in runs])
                stats[key] = (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0)
            curves = [r["accuracy_per_iteration"] for r in runs if "accuracy_per_iteration" in r]
            if curves:
                c = np.array(curves)
                stats["accuracy_per_iteration"] = (c.mean(axis=0).tolist(), c.std(axis=0).tolist())
            stats["n_seeds"] = len(runs)
            by_method[m] = stats
    return out


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import sklearn
    import torch

    return {
        "cpu": cpu, "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
        "scikit-learn": sklearn.__version__,
        "threads": {k: os.environ.get(k, "unset") for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
    }


def plot(summary: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    colours = dict(zip(METHOD_NAMES, plt.get_cmap("tab10").colors))
    for i, m in enumerate(sorted({m for d in summary.values() for m in d} - set(colours))):
        colours[m] = plt.get_cmap("Dark2").colors[i % 8]
    for ax, ds in zip(axes.flat, names):
        for m, s in summary[ds].items():
            if "accuracy_per_iteration" in s:
                mean, std = map(np.array, s["accuracy_per_iteration"])
                it = np.arange(len(mean))
                style = "o-" if m == "deepseg" else "s:"
                ax.plot(it, mean, style, color=colours[m], label=m, lw=2, ms=5 if m == "deepseg" else 4)
                ax.fill_between(it, mean - std, mean + std, color=colours[m], alpha=0.15)
            else:
                ax.axhline(s["accuracy"][0], color=colours[m], ls="--", lw=1.2, label=m)
        ax.set(title=ds, xlabel="iteration (0 = supervised start)", ylabel="accuracy (unlabelled)")
        ax.grid(alpha=0.3)
    handles = {}
    for ax in axes.flat[:len(names)]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    spare = axes.flat[len(names):]
    for ax in spare:
        ax.axis("off")
    if len(spare):
        spare[0].legend(list(handles.values()), list(handles), loc="center", fontsize=9)
    else:
        axes.flat[0].legend(list(handles.values()), list(handles), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(summary: dict, meta: dict, path: str, plot_path: str | None) -> None:
    fmt = {"accuracy": "{:.4f}", "macro_f1": "{:.4f}", "log_loss": "{:.3f}", "ece": "{:.3f}", "seconds": "{:.1f}"}
    lines = [
        "# Accuracy benchmark: deepseg and semi-supervised baselines",
        "",
        "Generated by `benchmarks/accuracy.py --suite toy`; do not edit by hand.",
        "",
        f"- Command: `{meta['command']}`",
        f"- Date: {meta['date']}",
        f"- Machine: {meta['machine']['cpu']}, {meta['machine']['cpu_count']} logical CPUs (os.cpu_count), "
        f"{meta['machine']['platform']}",
        f"- Software: Python {meta['machine']['python']}, numpy {meta['machine']['numpy']}, "
        f"torch {meta['machine']['torch']}, scikit-learn {meta['machine']['scikit-learn']}; "
        + ", ".join(f"{k}={v}" for k, v in meta["machine"]["threads"].items())
        + f"; {meta['jobs']} worker process(es)",
        f"- Seeds: {', '.join(map(str, meta['seeds']))}" + (" (quick run)" if meta["quick"] else ""),
        f"- Total wall time: {meta['wall_s'] / 60:.1f} min",
        "",
        "## Protocol",
        "",
        "Each seed draws the labelled points per class (stratified, `benchmarks.datasets.labeled_mask`); all "
        "other points are unlabelled (`y == -1`) and every metric is computed on them. Features are "
        "standardised with a `StandardScaler` fitted on all points (legitimate transductively). Accuracy, "
        "macro-F1, log-loss and the expected calibration error (ECE: 15 equal-width bins of the largest "
        "probability) are given as mean ± sample standard deviation over seeds; seconds are fit + predict "
        "per run. Data sets: scikit-learn digits (10 and 5 labels per class), wine (3), breast cancer (5), "
        "synthetic users (`make_user_matrix`: 20 000 users, 5 segments, 40 labelled per segment = 1%), and "
        "`users`: the same generator's users with features scaled as the Spark feature pipeline scales them "
        "(one-hot columns z-scored too) and 5% of each segment labelled, i.e. in proportion to the segments "
        "as a uniform survey draws them (1000 respondents, as in `make demo`).",
        "",
        "Methods:",
        "",
        *[f"- **{m}**: {DESCRIPTIONS.get(m, 'prototype variant, see benchmarks/experiments/validate.py')}"
          for m in meta["methods"]],
        "",
    ]
    for ds, by_method in summary.items():
        info = meta["datasets"][ds]
        lines += [
            f"## {ds}",
            "",
            f"{info['n']} points, {info['d']} features, {info['c']} classes, " + (
                f"{info['per_class']:.0%} of each class labelled." if isinstance(info["per_class"], float)
                else f"{info['per_class']} labelled per class."),
            "",
            "| method | accuracy | macro-F1 | log-loss | ECE | seconds |",
            "|---|---|---|---|---|---|",
        ]
        for m in meta["methods"]:
            if m in by_method:
                s = by_method[m]
                cells = [f"{fmt[k].format(s[k][0])} ± {fmt[k].format(s[k][1])}" for k in (*METRICS, "seconds")]
                lines.append(f"| {m} | " + " | ".join(cells) + " |")
        for m in meta["methods"]:
            if "accuracy_per_iteration" in by_method.get(m, {}):
                curve = by_method[m]["accuracy_per_iteration"][0]
                lines += ["", f"{m} accuracy per iteration (0 = supervised start): "
                          + ", ".join(f"{a:.4f}" for a in curve)]
        lines.append("")
    if plot_path:
        lines += [f"![deepseg accuracy per iteration vs baselines]({os.path.relpath(plot_path, os.path.dirname(os.path.abspath(path)))})", ""]
    lines += [
        "## How to reproduce",
        "",
        "`OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python -m benchmarks.accuracy --suite toy` "
        "(add `--jobs 2` to run two seeds at a time; raw results in `benchmarks/results/accuracy.json`).",
        "",
    ]
    commentary = _commentary(path)
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + commentary)


#: The generated report ends here; what follows this line in the file is kept on regeneration.
COMMENTARY_MARKER = "<!-- hand-written below: kept when the report above is regenerated -->"


def _commentary(path: str) -> str:
    """The hand-written part of an existing report (from COMMENTARY_MARKER on), or ''."""
    try:
        with open(path) as fh:
            text = fh.read()
    except FileNotFoundError:
        return ""
    at = text.find(COMMENTARY_MARKER)
    return "" if at < 0 else "\n" + text[at:]


def parse_seeds(text: str) -> list[int]:
    """'10' → seeds 0..9; '0,3,7' → those seeds."""
    return [int(s) for s in text.split(",")] if "," in text else list(range(int(text)))


def main(argv=None):
    """`--suite real` (default): benchmarks.accuracy_real; `--suite toy`: the toy suite below."""
    argv = sys.argv[1:] if argv is None else list(argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--suite", choices=("real", "toy"), default="real")
    known, rest = pre.parse_known_args(argv)
    if known.suite == "real":
        from benchmarks.accuracy_real import main as real_main

        return real_main(rest)
    return main_toy(rest)


def main_toy(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] + " (toy suite)")
    parser.add_argument("--quick", action="store_true", help="2 seeds (unless --seeds is given)")
    parser.add_argument("--seeds", type=parse_seeds, default=None, help="a count N (seeds 0..N-1) or a list 0,3,7")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--methods", nargs="+", default=list(METHOD_NAMES),
                        choices=list(METHOD_NAMES) + _experimental_names(),
                        help="x-<name>: a prototype variant of benchmarks/experiments/validate.py")
    parser.add_argument("--jobs", type=int, default=1, choices=(1, 2), help="worker processes (seeds in parallel)")
    parser.add_argument("--report", default=os.path.join(ROOT, "benchmarks", "results", "accuracy-toy.md"))
    parser.add_argument("--plot", default=os.path.join(ROOT, "benchmarks", "accuracy_per_iteration.png"))
    parser.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results", "accuracy.json"))
    parser.add_argument("--from-json", metavar="PATH", help="rewrite the report and plot from saved results")
    args = parser.parse_args(argv)
    if args.from_json:
        with open(args.from_json) as fh:
            saved = json.load(fh)
        summary = summarise(saved["results"])
        plot(summary, args.plot)
        report(summary, saved["meta"], args.report, args.plot)
        return
    seeds = args.seeds if args.seeds is not None else list(range(2 if args.quick else 10))

    start, results = time.perf_counter(), []
    pool = ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) if args.jobs > 1 else None
    try:
        for ds in args.datasets:
            if pool:
                for part in pool.map(run_seed, [ds] * len(seeds), [args.methods] * len(seeds), seeds):
                    results += part
            else:
                for seed in seeds:
                    results += run_seed(ds, args.methods, seed)
    finally:
        if pool:
            pool.shutdown()

    datasets = {}
    for ds in args.datasets:
        X, y, per_class = DATASETS[ds]()
        datasets[ds] = {"n": len(X), "d": X.shape[1], "c": len(np.unique(y)), "per_class": per_class}
    meta = {
        "command": "python -m benchmarks.accuracy --suite toy" + "".join(" " + shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(), "jobs": args.jobs, "seeds": seeds, "quick": args.quick,
        "methods": args.methods, "datasets": datasets, "wall_s": time.perf_counter() - start,
    }
    summary = summarise(results)
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump({"meta": meta, "summary": summary, "results": results}, fh, indent=1)
    plot_path = args.plot if any("accuracy_per_iteration" in s for d in summary.values() for s in d.values()) else None
    if plot_path:
        plot(summary, plot_path)
    report(summary, meta, args.report, plot_path)
    print(f"wrote {args.report}, {args.json}" + (f", {plot_path}" if plot_path else ""))


if __name__ == "__main__":
    main()
