"""A one-file HTML report of a demo run: summary table and plots as embedded base64 PNGs.

Plain numpy/matplotlib on small driver-side data (see :func:`deepseg.demo._report_data`).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

__all__ = ["write_report"]


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _history_plot(history: list[dict]):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
    if not history:
        for ax in axes:
            ax.text(0.5, 0.5, "n_iter = 0: no iterations", ha="center")
        return fig
    it = [h["iteration"] for h in history]
    for ax, keys, title in ((axes[0], ("agreement",), "g∘f / TSVM agreement"),
                            (axes[1], ("tsvm_objective",), "mean TSVM objective"),
                            (axes[2], ("mse", "kl"), "retraining losses (last epoch)")):
        for k in keys:
            ax.plot(it, [h[k] for h in history], marker="o", label=k)
        ax.set_title(title)
        ax.set_xlabel("iteration")
        if len(keys) > 1:
            ax.legend()
    return fig


def _embedding_plot(Z: np.ndarray, predicted: np.ndarray, true: np.ndarray, mapping: dict):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    if len(Z) < 2:
        return fig
    Zc = Z - Z.mean(axis=0)
    _, _, vt = np.linalg.svd(Zc, full_matrices=False)
    P = Zc @ vt[:2].T
    mapped = np.array([mapping.get(int(s), -1) for s in predicted])
    for ax, labels, title in ((axes[0], mapped, "predicted segment (matched)"),
                              (axes[1], true, "true segment")):
        sc = ax.scatter(P[:, 0], P[:, 1], c=labels, cmap="tab10", s=6, vmin=0, vmax=9)
        ax.set_title(f"embedding f(x), PCA: {title}")
        ax.legend(*sc.legend_elements(), fontsize=7, loc="best")
    return fig


def _sizes_plot(sizes: dict, mapping: dict):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    k = 1 + max(max(v) for v in sizes.values() if v)
    width = 0.27
    for i, (name, counts) in enumerate(sizes.items()):
        share = np.zeros(k)
        for s, n in counts.items():
            s = s if name == "truth" else mapping.get(int(s), None)
            if s is not None:
                share[s] += n
        ax.bar(np.arange(k) + (i - 1) * width, share / max(share.sum(), 1), width, label=name)
    ax.set_xlabel("true segment (clusters matched)")
    ax.set_ylabel("share of users")
    ax.set_title("segment sizes")
    ax.legend()
    return fig


def _calibration_plot(calibration: dict):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot([0, 1], [0, 1], "k:", label="perfectly calibrated")
    for name, rows in calibration.items():
        if rows:
            conf, acc, n = map(np.asarray, zip(*rows))
            ax.plot(conf, acc, marker="o", label=f"vs {name} ({int(n.sum())} users)")
    ax.set_xlabel("max propensity (confidence)")
    ax.set_ylabel("share whose segment is right")
    ax.set_title("reliability")
    ax.legend(fontsize=8)
    return fig


def write_report(path: str | Path, summary: dict, data: dict) -> str:
    """Write ``report.html`` (self-contained) from a demo summary and its plot data."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    figures = [
        ("Per-iteration metrics (model history)", _history_plot(data["history"])),
        ("2-D view (PCA) of the embedding of a sample of users",
         _embedding_plot(data["embedding"], data["embedding_segment"], data["embedding_true"], data["mapping"])),
        ("Segment sizes: predicted, survey respondents, ground truth", _sizes_plot(data["sizes"], data["mapping"])),
        ("Reliability: surveyed users vs their survey segment (training labels, optimistic) "
         "and all users vs the ground truth", _calibration_plot(data["calibration"])),
    ]
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(summary[k]))}</td></tr>"
        for k in ("n_users", "model_version", "survey", "scored", "audiences", "survey_accuracy",
                  "deepseg_accuracy", "deepseg_accuracy_unlabeled", "supervised_accuracy",
                  "supervised_accuracy_unlabeled", "seconds", "root")
        if k in summary)
    plots = "".join(f"<h2>{html.escape(t)}</h2><img src='data:image/png;base64,{_png(f)}'/>" for t, f in figures)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>deepseg demo report</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}"
        "th{text-align:left;padding-right:1em;vertical-align:top}td{font-family:monospace}</style>"
        f"</head><body><h1>deepseg demo report</h1><table>{rows}</table>{plots}</body></html>")
    Path(path).write_text(page)
    return str(path)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return str(value)
