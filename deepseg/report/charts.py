"""The report's charts: small matplotlib figures, each returned as a base64 PNG.

Figures are built with :class:`matplotlib.figure.Figure`, never pyplot: no global figure state
and no GUI backend, so reports can be rendered from any thread or job. A chart with nothing to
draw is ``None`` (the page then says why instead of showing an empty image).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["calibration_chart", "drift_chart", "effect_size", "embedding_chart", "effects_chart",
           "history_chart", "propensity_chart", "sizes_chart", "truth_sizes_chart"]

_DPI = 90
_ANSWER, _ATTRIBUTE = "#1f77b4", "#ff7f0e"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _finite(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value)


def effect_size(effect: Mapping) -> float | None:
    """An effect on one scale: an SMD as is, a lift as ln(lift) (as profiles rank them)."""
    e = effect.get("effect")
    if not _finite(e):
        return None
    if effect.get("kind") == "lift":
        return math.log(e) if e > 0 else None
    return float(e)


def effect_label(effect: Mapping) -> str:
    """``plan = pro`` for a categorical value, ``age`` for a numeric attribute or a question."""
    value = effect.get("value")
    return f"{effect.get('attribute')} = {value}" if value is not None else str(effect.get("attribute"))


def effects_chart(answers: Sequence[Mapping], attributes: Sequence[Mapping], max_answers: int = 8) -> str | None:
    """The `max_answers` largest answer effects and the attribute effects as bars on one scale
    (SMD, or ln(lift) for a categorical value); None when there is none."""
    bars = [(effect_label(e), size, color) for effects, color in ((answers, _ANSWER), (attributes, _ATTRIBUTE))
            for e in effects if (size := effect_size(e)) is not None]
    bars = [b for b in bars if b[2] == _ANSWER][:max_answers] + [b for b in bars if b[2] == _ATTRIBUTE]
    if not bars:
        return None
    from matplotlib.patches import Patch

    slots = max(len(bars), 3)  # a lone bar stays bar-sized, at the top
    fig = _figure(5.6, 1.2 + 0.28 * slots)
    ax = fig.subplots()
    y = slots - 1 - np.arange(len(bars))
    ax.barh(y, [b[1] for b in bars], height=0.7, color=[b[2] for b in bars])
    ax.set_ylim(-0.6, slots - 0.4)
    ax.set_yticks(y, [b[0] for b in bars], fontsize=8)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("SMD (answers, numbers) or ln(lift) (categories)", fontsize=8)
    kinds = [(color, label) for color, label in ((_ANSWER, "survey answer"), (_ATTRIBUTE, "attribute"))
             if any(b[2] == color for b in bars)]
    ax.legend(handles=[Patch(color=c, label=label) for c, label in kinds], fontsize=7, ncols=2,
              loc="lower left", bbox_to_anchor=(0, 1), frameon=False, borderaxespad=0.2)
    return _png(fig)


def propensity_chart(propensity: Mapping | None) -> str | None:
    """The members' propensity for their segment: p10–p90 range, median and mean on [0, 1];
    None without members."""
    p = propensity or {}
    if not all(_finite(p.get(k)) for k in ("p10", "p50", "p90", "mean")):
        return None
    fig = _figure(5.6, 1.25)
    ax = fig.subplots()
    ax.hlines(0, p["p10"], p["p90"], linewidth=12, color="#2ca02c", alpha=0.35, label="p10–p90")
    ax.plot([p["p50"]], [0], marker="|", markersize=20, markeredgewidth=2, color="#2ca02c", linestyle="none",
            label="median")
    ax.plot([p["mean"]], [0], marker="o", color="black", linestyle="none", label="mean")
    ax.set_xlim(0, 1)
    ax.set_ylim(-1, 1)
    ax.set_yticks([])
    ax.set_xlabel("members' propensity for this segment", fontsize=8)
    ax.legend(fontsize=7, ncols=3, loc="lower left", bbox_to_anchor=(0, 1), frameon=False, borderaxespad=0.2)
    return _png(fig)


def _nothing(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, color="gray")
    ax.set_axis_off()


def sizes_chart(sizes_by_version: Mapping[str, Mapping[int, int]], labels: Mapping[int, str]) -> str | None:
    """Scored users per segment (one line each) over model versions, oldest first."""
    versions = sorted(sizes_by_version)
    if not versions:
        return None
    fig = _figure(9.5, 3.4)
    ax = fig.subplots()
    x = np.arange(len(versions))
    for s, label in labels.items():
        ax.plot(x, [sizes_by_version[v].get(s, 0) for v in versions], marker="o", label=label)
    ax.set_xticks(x, versions, rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("scored users")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _png(fig)


def drift_chart(feature_psi: Mapping[str, float] | None, propensity_psi: Mapping[str, float] | None,
                threshold: float | None, top: int = 15) -> str | None:
    """PSI of the `top` most drifted features and of each segment's propensity, against the
    retraining threshold; None when the refresh gave neither."""
    panels = [(title, sorted(((k, float(v)) for k, v in psi.items() if _finite(v)), key=lambda kv: -kv[1])[:top])
              for title, psi in (("features (largest PSI)", feature_psi), ("propensity per segment", propensity_psi))
              if psi]
    if not panels:
        return None
    height = 1.0 + 0.28 * max(len(rows) for _, rows in panels)
    fig = _figure(9.5, max(height, 2.4))
    for ax, (title, rows) in zip(np.atleast_1d(fig.subplots(1, len(panels))), panels):
        y = np.arange(len(rows))[::-1]
        ax.barh(y, [v for _, v in rows], color=["#d62728" if threshold is not None and v > threshold else "#7f7f7f"
                                                for _, v in rows])
        ax.set_yticks(y, [k for k, _ in rows], fontsize=7)
        if threshold is not None:
            ax.axvline(threshold, color="black", linestyle=":", label=f"retrain threshold {threshold:g}")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("population stability index", fontsize=8)
    return _png(fig)


def history_chart(history: Sequence[Mapping]) -> str | None:
    """Per iteration: g∘f / TSVM agreement, TSVM objective, retraining losses, pseudo-label
    shares per segment; None without iterations."""
    if not history:
        return None
    from matplotlib.ticker import MaxNLocator

    it = [h.get("iteration") for h in history]
    fig = _figure(13, 3.2)
    axes = fig.subplots(1, 4)
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))

    def line(ax, key, **kw):
        values = [h.get(key) for h in history]
        ax.plot(it, [v if _finite(v) else np.nan for v in values], marker="o", **kw)

    for ax, keys, title in ((axes[0], ("agreement",), "g∘f / TSVM agreement"),
                            (axes[1], ("tsvm_objective",), "mean TSVM objective"),
                            (axes[2], ("mse", "kl"), "retraining losses (last epoch)")):
        for key in keys:
            line(ax, key, label=key)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("iteration")
        if len(keys) > 1:
            ax.legend(fontsize=7)
    shares = [h.get("class_shares") for h in history]
    if all(isinstance(s, Sequence) and len(s) and sum(s) > 0 for s in shares) and len({len(s) for s in shares}) == 1:
        counts = np.asarray(shares, dtype=float)
        axes[3].stackplot(it, (counts / counts.sum(axis=1, keepdims=True)).T,
                          labels=[str(k) for k in range(counts.shape[1])])
        axes[3].set_ylim(0, 1)
        axes[3].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5), title="segment",
                       title_fontsize=7)
        axes[3].set_xlabel("iteration")
    else:
        _nothing(axes[3], "no pseudo-label shares")
    axes[3].set_title("pseudo-label shares", fontsize=9)
    return _png(fig)


# ------------------------------------------------------------------ ground truth (the demo's)
def embedding_chart(Z, predicted, true, mapping: Mapping[int, int]) -> str | None:
    """A 2-D PCA view of a sample's embedding f(x), coloured by predicted and by true segment."""
    Z = np.asarray(Z, dtype=float)
    if Z.ndim != 2 or len(Z) < 2:
        return None
    Zc = Z - Z.mean(axis=0)
    _, _, vt = np.linalg.svd(Zc, full_matrices=False)
    P = Zc @ vt[:2].T
    if P.shape[1] < 2:
        P = np.column_stack([P, np.zeros(len(P))])
    mapped = np.array([mapping.get(int(s), -1) for s in np.asarray(predicted)])
    fig = _figure(11, 4.5)
    for ax, labels, title in zip(fig.subplots(1, 2), (mapped, np.asarray(true)),
                                 ("predicted segment (matched)", "true segment")):
        sc = ax.scatter(P[:, 0], P[:, 1], c=labels, cmap="tab10", s=6, vmin=0, vmax=9)
        ax.set_title(f"embedding f(x), PCA: {title}", fontsize=9)
        ax.legend(*sc.legend_elements(), fontsize=7, loc="best")
    return _png(fig)


def truth_sizes_chart(sizes: Mapping[str, Mapping[int, int]], mapping: Mapping[int, int]) -> str | None:
    """Shares of users per true segment: predicted and survey segments mapped to the truth's."""
    keys = [int(s) for counts in sizes.values() for s in counts]
    if not keys:
        return None
    k = 1 + max(keys + list(mapping.values()))
    fig = _figure(7, 3.5)
    ax = fig.subplots()
    width = 0.8 / max(len(sizes), 1)
    for i, (name, counts) in enumerate(sizes.items()):
        share = np.zeros(k)
        for s, n in counts.items():
            t = int(s) if name == "truth" else mapping.get(int(s))
            if t is not None:
                share[t] += n
        ax.bar(np.arange(k) + (i - (len(sizes) - 1) / 2) * width, share / max(share.sum(), 1), width, label=name)
    ax.set_xlabel("true segment (clusters matched)")
    ax.set_ylabel("share of users")
    ax.legend(fontsize=8)
    return _png(fig)


def calibration_chart(calibration: Mapping[str, Sequence]) -> str | None:
    """Reliability: per confidence bin, the share of users whose segment is right."""
    if not any(calibration.values()):
        return None
    fig = _figure(5, 4.5)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "k:", label="perfectly calibrated")
    for name, rows in calibration.items():
        if rows:
            conf, acc, n = map(np.asarray, zip(*rows))
            ax.plot(conf, acc, marker="o", label=f"vs {name} ({int(n.sum())} users)")
    ax.set_xlabel("max propensity (confidence)")
    ax.set_ylabel("share whose segment is right")
    ax.legend(fontsize=8)
    return _png(fig)
