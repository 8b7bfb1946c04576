"""Survey waves that learn: a second wave chosen by the model (``active``) vs stratified random.

    python -m benchmarks.survey                    # 10 seeds (0-9), 10 000 users, two processes
    python -m benchmarks.survey --seeds 100,101 --variants entropy-div-20 margin-top-20 --no-docs

Per seed, in memory (no Spark): the synthetic generator's users (features scaled as the Spark
feature pipeline scales them) with their ground-truth segments. Wave 1 invites 500 users
uniformly at random; the survey is assumed to reveal each respondent's true segment (clustering
the answers into segments is a separate step, measured elsewhere). deepseg
(``DeepSegmentationClassifier()`` with its defaults) is fitted on them; wave 2 invites 500 more,
either chosen by :func:`deepseg.core.active.select_active` on that model's propensities and
embedding, or at random stratified by the users' plan (as ``survey.strata: plan`` does). deepseg
is refitted on the 1000 respondents and scored on ALL users against the truth. Random waves with
larger totals (1500, 2000, 2500 respondents) say how many random respondents reach the active
wave's accuracy (linear interpolation of the mean accuracy curve).

Writes benchmarks/results/survey.json and its section of docs/benchmarks.md (between the
``bench-survey`` markers, in the hand-written part that ``benchmarks/accuracy.py`` keeps).
Set OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 for comparable timings.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script: python benchmarks/survey.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
import datetime
import json
import shlex
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs", "benchmarks.md")
BEGIN, END = "<!-- bench-survey: begin (benchmarks/survey.py writes this part) -->", "<!-- bench-survey: end -->"
TARGET_POINTS, TARGET_SHARE = 1.0, 0.70


def parse_variant(name: str) -> dict:
    """``<margin|entropy>-<div|top>-<pre-filter factor|all>``, e.g. ``margin-div-20``: uncertainty,
    diversity-weighted draw or the most uncertain users, candidates pre-filtered to the factor ×
    wave size most uncertain (as the survey stage does in Spark) or all of them."""
    try:
        kind, how, pre = name.split("-")
        assert kind in ("margin", "entropy") and how in ("div", "top")
        prefilter = None if pre == "all" else int(pre)
        assert prefilter is None or prefilter >= 1
    except (ValueError, AssertionError):
        raise argparse.ArgumentTypeError(
            f"variant {name!r}: expected <margin|entropy>-<div|top>-<factor|all>, e.g. margin-div-20") from None
    return {"uncertainty": kind, "diversity": how == "div", "prefilter": prefilter}


def stratified_order(strata: np.ndarray, pool: np.ndarray, rng) -> np.ndarray:
    """`pool` in invitation order of stratified sampling: within each stratum at random, strata
    interleaved by ``(rank - 1/2) / stratum size`` (the survey stage's proportional allocation),
    so any prefix is a proportional stratified sample."""
    u = rng.random(len(pool))
    s = strata[pool]
    pos = np.empty(len(pool))
    for level in np.unique(s):
        members = np.flatnonzero(s == level)
        ranks = np.empty(len(members))
        ranks[np.argsort(u[members], kind="stable")] = np.arange(1, len(members) + 1)
        pos[members] = (ranks - 0.5) / len(members)
    return pool[np.lexsort((u, pos))]


def active_wave(P: np.ndarray, Z: np.ndarray, pool: np.ndarray, size: int, seed: int, variant: dict) -> np.ndarray:
    """`size` users of `pool` chosen by the wave-1 model, as the survey stage chooses them."""
    from deepseg.core.active import select_active, uncertainty_scores

    candidates = pool
    if variant["prefilter"] is not None:
        u = uncertainty_scores(P[pool], variant["uncertainty"])
        keep = np.argsort(-u, kind="stable")[:variant["prefilter"] * size]
        candidates = pool[np.sort(keep)]
    picked, _ = select_active(P[candidates], Z[candidates], size, seed=seed,
                              uncertainty=variant["uncertainty"], diversity=variant["diversity"])
    return candidates[picked]


def run_seed(seed: int, n_users: int, wave: int, totals: list[int], variants: list[str]) -> dict:
    """One seed: wave 1, the wave-2 variants and the random totals; accuracies on all users."""
    from deepseg import DeepSegmentationClassifier
    from deepseg.data import make_user_matrix

    t0 = time.perf_counter()
    X, truth, _, frame = make_user_matrix(n_users=n_users, n_segments=5, seed=seed, onehot_zscore=True,
                                          return_frame=True)
    plans = [c for c in frame.columns if c.startswith("plan=")]
    plan = frame[plans].to_numpy().argmax(axis=1)
    rng = np.random.default_rng(seed)
    wave1 = rng.choice(n_users, wave, replace=False)
    pool = np.setdiff1d(np.arange(n_users), wave1)

    def fit(respondents: np.ndarray, what: str):
        y = np.full(n_users, -1)
        y[respondents] = truth[respondents]
        t = time.perf_counter()
        clf = DeepSegmentationClassifier(random_state=seed).fit(X, y)
        pred = clf.predict(X)
        unsurveyed = np.ones(n_users, bool)
        unsurveyed[respondents] = False
        out = {"n_respondents": len(respondents), "accuracy": float(np.mean(pred == truth)),
               "accuracy_unsurveyed": float(np.mean(pred[unsurveyed] == truth[unsurveyed])),
               "seconds": time.perf_counter() - t}
        print(f"seed {seed:>3} {what:>22}: {len(respondents):>5} respondents, accuracy "
              f"{out['accuracy']:.4f} (unsurveyed {out['accuracy_unsurveyed']:.4f})  {out['seconds']:5.1f}s",
              flush=True)
        return clf, out

    first, result = fit(wave1, "wave 1 (uniform)")
    out = {"seed": seed, "wave1": result, "active": {}, "random": {}}
    P, Z = first.predict_proba(X), first.transform(X)
    for name in variants:
        chosen = active_wave(P, Z, pool, wave, seed, parse_variant(name))
        assert len(np.intersect1d(chosen, wave1)) == 0 and len(np.unique(chosen)) == wave
        _, out["active"][name] = fit(np.concatenate([wave1, chosen]), f"+ active {name}")
    order = stratified_order(plan, pool, np.random.default_rng([seed, 1]))
    for total in totals:
        _, out["random"][str(total)] = fit(np.concatenate([wave1, order[:total - wave]]), "+ stratified random")
    out["seconds"] = time.perf_counter() - t0
    return out


def _mean_se(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def matching_total(curve: list[tuple[int, float]], accuracy: float) -> float | None:
    """Respondents at which the (respondents, mean accuracy) `curve` first reaches `accuracy`,
    linearly interpolated; None if it never does."""
    for (n0, a0), (n1, a1) in zip(curve, curve[1:]):
        if a0 >= accuracy:
            return float(n0)
        if a1 >= accuracy:
            return float(n0 + (n1 - n0) * (accuracy - a0) / (a1 - a0))
    return float(curve[-1][0]) if curve[-1][1] >= accuracy else None


def summarise(results: list[dict], wave: int, key: str = "accuracy") -> dict:
    """Means ± standard errors over seeds, paired differences and the matching random totals."""
    second = str(2 * wave)
    random = {n: _mean_se([r["random"][n][key] for r in results]) for n in results[0]["random"]}
    curve = [(wave, _mean_se([r["wave1"][key] for r in results])[0])]
    curve += sorted((int(n), m) for n, (m, _) in random.items())
    out = {"wave1": _mean_se([r["wave1"][key] for r in results]), "random": random, "active": {}}
    for name in results[0]["active"]:
        acc = [r["active"][name][key] for r in results]
        diff = [r["active"][name][key] - r["random"][second][key] for r in results]
        total = matching_total(curve, float(np.mean(acc)))
        out["active"][name] = {
            "accuracy": _mean_se(acc), "difference": _mean_se(diff), "wins": int(sum(d > 0 for d in diff)),
            "random_total_matching": total,
            "share_of_respondents": (2 * wave / total) if total else None,
        }
    return out


def verdict(active: dict) -> str:
    d, se = active["difference"]
    share = active["share_of_respondents"]
    points_met = d * 100 >= TARGET_POINTS
    share_met = share is not None and share <= TARGET_SHARE
    return ("met" if points_met or share_met else "not met") + (
        f": active − random = {100 * d:+.2f} ± {100 * se:.2f} points (target ≥ +{TARGET_POINTS:g}); "
        + (f"random needs {active['random_total_matching']:.0f} respondents for active's accuracy, "
           f"active uses {share:.0%} of that (target ≤ {TARGET_SHARE:.0%})" if share is not None
           else "random does not reach active's accuracy within the totals measured"))


def table(summary: dict, meta: dict) -> list[str]:
    wave = meta["wave"]
    lines = ["| second wave | respondents | accuracy, all users (mean ± s.e.) | vs stratified random, paired "
             "(± s.e.) | seeds active better | random respondents for the same accuracy |",
             "|---|---|---|---|---|---|",
             f"| none (wave 1: {wave} uniform) | {wave} | {summary['wave1'][0]:.4f} ± {summary['wave1'][1]:.4f} "
             "| | | |"]
    for name, s in summary["active"].items():
        total = s["random_total_matching"]
        lines.append(
            f"| active `{name}` | {2 * wave} | {s['accuracy'][0]:.4f} ± {s['accuracy'][1]:.4f} | "
            f"{100 * s['difference'][0]:+.2f} ± {100 * s['difference'][1]:.2f} points | "
            f"{s['wins']}/{meta['n_seeds']} | "
            + (f"{total:.0f} ({2 * wave / total:.0%} used by active)" if total else
               f"> {max(int(n) for n in summary['random'])}") + " |")
    for n, (m, se) in summary["random"].items():
        lines.append(f"| stratified random | {n} | {m:.4f} ± {se:.4f} | | | |")
    return lines


def report(summary: dict, unsurveyed: dict, meta: dict) -> str:
    main = meta["variants"][0]
    lines = [
        BEGIN,
        "",
        "## Survey waves that learn (`make bench-survey`)",
        "",
        "*Generated by `benchmarks/survey.py` (between the bench-survey markers); do not edit by hand.*",
        "",
        f"- Command: `{meta['command']}`; {meta['date']}; {meta['machine']}; wall time "
        f"{meta['wall_s'] / 60:.1f} min",
        f"- Seeds {', '.join(map(str, meta['seeds']))}: per seed the generator's population of "
        f"{meta['n_users']:,} users (5 segments; features scaled as the Spark pipeline scales them) and "
        "its ground-truth segments. **The survey is assumed to reveal each respondent's true segment** "
        "(clustering the answers into segments is a separate step).",
        f"- Wave 1: {meta['wave']} users uniformly at random; deepseg (`DeepSegmentationClassifier()`, "
        f"defaults) fitted on them. Wave 2: {meta['wave']} more users, either chosen `active` "
        "(`deepseg.core.active.select_active` on the wave-1 model's propensities and embedding f, "
        "candidates first cut to the pre-filter factor × wave size most uncertain, as the survey stage "
        "does in Spark) or at random stratified by the users' `plan` (proportional allocation, the "
        "survey stage's `stratified` sampling). Never a user twice. deepseg refitted on all "
        "respondents; accuracy of its prediction for ALL users against the truth.",
        f"- Variant names: `<uncertainty>-<div|top>-<pre-filter factor>`; `div` draws each next user "
        "∝ uncertainty × squared distance in f's space to the nearest one drawn (k-means++ weighting), "
        "`top` takes the most uncertain. The random totals above "
        f"{2 * meta['wave']} (same wave 1, a longer stratified random wave 2) give the respondents random "
        "sampling needs for active's accuracy (linear interpolation of the mean curve).",
        "",
        *table(summary, meta),
        "",
        f"Accuracy on the unsurveyed users only: wave 1 {unsurveyed['wave1'][0]:.4f}; "
        + "; ".join(f"active `{n}` {s['accuracy'][0]:.4f} ({100 * s['difference'][0]:+.2f} ± "
                    f"{100 * s['difference'][1]:.2f} points vs random)" for n, s in unsurveyed["active"].items())
        + "; stratified random " + ", ".join(f"{n}: {m:.4f}" for n, (m, _) in unsurveyed["random"].items()) + ".",
        "",
        f"Target (issue 21: active ≥ random + 1 point, or the same accuracy with ≤ 70% of the "
        f"respondents), `{main}`: **{verdict(summary['active'][main])}**.",
        "",
        END,
    ]
    return "\n".join(lines)


def write_docs(section: str, path: str = DOCS) -> None:
    """Put `section` between the bench-survey markers of `path` (appended at its end the first time)."""
    with open(path) as fh:
        text = fh.read()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(path, "w") as fh:
        fh.write(text)


def parse_seeds(text: str) -> list[int]:
    """'10' → seeds 0..9; '0,3,7' → those seeds."""
    return [int(s) for s in text.split(",")] if "," in text else list(range(int(text)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=parse_seeds, default=list(range(10)), help="a count N (0..N-1) or a list")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--wave", type=int, default=500, help="respondents per wave")
    parser.add_argument("--totals", type=int, nargs="+", default=[1000, 1500, 2000, 2500],
                        help="respondent totals of the stratified random runs (the first: 2 waves)")
    parser.add_argument("--variants", nargs="+", default=["margin-div-20"], type=str,
                        help="active selections; the first is the one the target is judged on")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (seeds in parallel)")
    parser.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results", "survey.json"))
    parser.add_argument("--no-docs", action="store_true", help="leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    for v in args.variants:
        parse_variant(v)
    if args.totals[0] != 2 * args.wave:
        parser.error(f"--totals must start with two waves, {2 * args.wave}; got {args.totals}")

    print(f"survey benchmark: {len(args.seeds)} seeds, {args.users} users, waves of {args.wave}, "
          f"active {args.variants}, random totals {args.totals}; the survey reveals true segments", flush=True)
    start = time.perf_counter()
    jobs = [(s, args.users, args.wave, args.totals, args.variants) for s in args.seeds]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            results = list(pool.map(run_seed, *zip(*jobs)))
    else:
        results = [run_seed(*job) for job in jobs]

    from benchmarks.accuracy import machine

    m = machine()
    meta = {
        "command": "python -m benchmarks.survey" + "".join(
            " " + shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": f"{m['cpu']}, {m['cpu_count']} logical CPUs, {args.jobs} worker process(es)",
        "seeds": args.seeds, "n_seeds": len(args.seeds), "n_users": args.users, "wave": args.wave,
        "totals": args.totals, "variants": args.variants, "wall_s": time.perf_counter() - start,
    }
    summary, unsurveyed = summarise(results, args.wave), summarise(results, args.wave, "accuracy_unsurveyed")
    print("\n".join(["", *table(summary, meta), ""]))
    for name, s in summary["active"].items():
        print(f"{name}: target {verdict(s)}")
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump({"meta": meta, "summary": summary, "summary_unsurveyed": unsurveyed, "results": results},
                  fh, indent=1)
    if not args.no_docs:
        write_docs(report(summary, unsurveyed, meta))
    print(f"wrote {args.json}" + ("" if args.no_docs else f", {DOCS}") + f" in {meta['wall_s'] / 60:.1f} min")


if __name__ == "__main__":
    main()
