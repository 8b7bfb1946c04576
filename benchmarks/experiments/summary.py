"""Paired summary of benchmarks/experiments/val.jsonl.

Per variant and dataset: mean hidden-point accuracy ('val'), and 'wval' = Σ_k π̂_k · recall_k, the
hidden recalls weighted by the unlabelled class prior π̂ estimated (EM, no unlabelled labels) from
the *base* run's supervised start on the same seed, so that all variants use the same weights.
Paired differences to 'base' with their standard error over seeds.
"""
import json, sys
from collections import defaultdict
import numpy as np

path = sys.argv[1] if len(sys.argv) > 1 else "benchmarks/experiments/val.jsonl"
rows = [json.loads(l) for l in open(path)]
runs = defaultdict(dict)
for r in rows:
    runs[(r["dataset"], r["variant"])][r["seed"]] = r
def wacc(r, prior):
    return float(np.dot(prior, r["recall"]))
for ds in sorted({d for d, _ in runs}):
    base = runs.get((ds, "base"), {})
    print(f"== {ds}")
    for (d, v), by_seed in sorted(runs.items(), key=lambda kv: kv[0][1] != "base"):
        if d != ds:
            continue
        val = np.mean([r["val_acc"] for r in by_seed.values()])
        common = sorted(set(by_seed) & set(base))
        line = f"  {v:>18}: val {val:.4f} (n={len(by_seed)})"
        if common:
            w = np.mean([wacc(by_seed[s], base[s]["prior0"]) for s in common])
            line += f"  wval {w:.4f}"
        if common and v != "base":
            for name, f in (("val", lambda s: by_seed[s]["val_acc"] - base[s]["val_acc"]),
                            ("wval", lambda s: wacc(by_seed[s], base[s]["prior0"]) - wacc(base[s], base[s]["prior0"]))):
                dlt = np.array([f(s) for s in common])
                se = dlt.std(ddof=1) / np.sqrt(len(dlt)) if len(dlt) > 1 else 0.0
                line += f" | Δ{name} {dlt.mean():+.4f}±{se:.4f}"
        print(line)
