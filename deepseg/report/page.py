"""The run report as one self-contained HTML page (no scripts, no external files).

:func:`render_report` checks its input first and raises :class:`ValueError` naming the key and
value of anything it cannot render; missing data (a segment without scored users or without
survey answers, no drift figures, no iterations) gives a clearly marked empty part instead.
:func:`write_report` writes the page atomically: a failed render or write leaves nothing new
behind and an existing report as it was.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping, Sequence
from numbers import Integral, Real

import deepseg.storage as storage
from deepseg.report import charts

__all__ = ["render_report", "write_report"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222;
line-height:1.4}
h1{margin-bottom:0}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
section.segment{border:1px solid #ddd;border-radius:6px;padding:.5em 1em 1em;margin:1.2em 0}
section.segment h3{margin:.3em 0}.sub{color:#666}
table{border-collapse:collapse;margin:.5em 0 1em}th,td{padding:.2em .7em;text-align:left;vertical-align:top}
table.grid th,table.grid td{border-bottom:1px solid #eee}table.grid td.num{text-align:right;font-variant-numeric:tabular-nums}
table.kv th{padding-right:1.5em;color:#444}tr.current{font-weight:bold}
.empty{background:#fff4e5;border-left:4px solid #f0a030;padding:.4em .8em;color:#6a4a00}
img{max-width:100%;display:block;margin:.5em 0}nav a{margin-right:1em}
.cols{display:flex;flex-wrap:wrap;gap:0 2em;align-items:flex-start}.cols>div{min-width:0}.cols>.chart{flex:1 1 500px}
"""


# ------------------------------------------------------------------ checks
def _segments(data: Mapping) -> list[dict]:
    """The profiles of ``data['segments']`` sorted by number, checked to be segments 0..n-1."""
    segments = data.get("segments")
    if not isinstance(segments, Sequence) or isinstance(segments, (str, bytes)) or not segments:
        raise ValueError(f"data['segments'] must be a non-empty list of segment profiles; got {segments!r:.200}")
    for i, p in enumerate(segments):
        if not isinstance(p, Mapping) or "segment" not in p or "n_users" not in p:
            raise ValueError(f"data['segments'][{i}] must be a profile with 'segment' and 'n_users'; got {p!r:.200}")
        n = p["n_users"]
        if n is not None and (isinstance(n, bool) or not isinstance(n, Integral) or n < 0):
            raise ValueError(f"data['segments'][{i}]['n_users'] must be a count >= 0; got {n!r}")
    numbers = sorted(p["segment"] for p in segments)
    if numbers != list(range(len(segments))):
        raise ValueError(f"data['segments'] must hold segments 0..{len(segments) - 1} once each; got {numbers}")
    return sorted((dict(p) for p in segments), key=lambda p: p["segment"])


def _names(data: Mapping, segments: list[dict]) -> dict[int, str | None]:
    """Segment number -> name: ``data['names']`` (a list, one per segment, or a mapping) when
    given, else each profile's own name."""
    names, n = data.get("names"), len(segments)
    if names is None:
        return {p["segment"]: p.get("name") for p in segments}
    if isinstance(names, Mapping):
        try:
            names = {int(k): v for k, v in names.items()}
        except (TypeError, ValueError):
            raise ValueError(f"data['names'] must map segment numbers to names; got {dict(names)!r:.200}") from None
        if sorted(names) != list(range(n)):
            raise ValueError(f"data['names'] must name segments 0..{n - 1} (one name each); "
                             f"got names for {sorted(names)}")
        return names
    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
        raise ValueError(f"data['names'] must be a list or a mapping of segment names; got {names!r:.200}")
    if len(names) != n:
        raise ValueError(f"data['names'] has {len(names)} names for {n} segments (0..{n - 1}): "
                         f"give one name per segment; got {list(names)!r:.200}")
    return dict(enumerate(names))


def _sizes(data: Mapping) -> dict[str, dict[int, int]]:
    """``data['sizes_by_version']`` with int segment keys (JSON turns them into strings)."""
    sizes = data.get("sizes_by_version") or {}
    try:
        return {str(v): {int(s): int(n or 0) for s, n in counts.items()} for v, counts in sizes.items()}
    except (AttributeError, TypeError, ValueError):
        raise ValueError(f"data['sizes_by_version'] must map versions to {{segment: n_users}}; "
                         f"got {sizes!r:.200}") from None


_TRUTH_KEYS = ("embedding", "embedding_segment", "embedding_true", "sizes", "calibration", "mapping")


def _check(data: Mapping) -> None:
    if not isinstance(data, Mapping):
        raise ValueError(f"report data must be a mapping; got {type(data).__name__}")
    if not data.get("model_version"):
        raise ValueError(f"data['model_version'] must name the model version; got {data.get('model_version')!r}")
    truth = data.get("ground_truth")
    if truth is not None:
        missing = [k for k in _TRUTH_KEYS if k not in truth]
        if missing:
            raise ValueError(f"data['ground_truth'] lacks {missing} (needs {list(_TRUTH_KEYS)})")


# ------------------------------------------------------------------ formatting
def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _num(value, spec: str = ".3g") -> str:
    """A number for reading: counts with thousands separators, others to `spec`; None, NaN: –."""
    if value is None or (isinstance(value, Real) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, Real):
        return str(value)
    return format(int(value), ",d") if isinstance(value, Integral) else format(float(value), spec)


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _fmt(value) -> str:
    if isinstance(value, Real) and not isinstance(value, (bool, Integral)):
        return _num(value, ".4g")
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, Integral) and not isinstance(value, bool):
        return _num(value)
    return "–" if value is None else str(value)


def _kv(rows: Mapping) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_fmt(v))}</td></tr>" for k, v in rows.items())
    return f"<table class='kv'>{body}</table>"


def _grid(head: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool], classes=None) -> str:
    """A table of already escaped cells; `numeric` right-aligns a column."""
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    trs = []
    for i, row in enumerate(rows):
        cls = f" class='{classes[i]}'" if classes and classes[i] else ""
        cells = "".join(f"<td class='num'>{c}</td>" if num else f"<td>{c}</td>" for c, num in zip(row, numeric))
        trs.append(f"<tr{cls}>{cells}</tr>")
    trs = "".join(trs)
    return f"<table class='grid'><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def _img(b64: str | None, alt: str, missing: str) -> str:
    if b64 is None:
        return f"<p class='empty'>{_e(missing)}</p>"
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{b64}'>"


def _empty(text: str) -> str:
    return f"<p class='empty'>{_e(text)}</p>"


def _title(s: int, name: str | None) -> str:
    return f"Segment {s}: {name}" if name else f"Segment {s}"


# ------------------------------------------------------------------ sections
def _effect_rows(effects: Sequence[Mapping]) -> list[list[str]]:
    rows = []
    for e in effects:
        lift = e.get("kind") == "lift"
        stat = _pct if lift else _num
        effect = e.get("effect")
        if not isinstance(effect, Real) or not math.isfinite(effect):
            shown = "–"
        else:
            shown = f"×{effect:.2f}" if lift else f"{effect:+.2f} sd"
        rows.append([_e(charts.effect_label(e)), _e(stat(e.get("segment_stat"))), _e(stat(e.get("overall_stat"))),
                     _e(shown)])
    return rows


def _segment_section(p: Mapping, name: str | None) -> str:
    s, n_users = p["segment"], p.get("n_users") or 0
    answers, attributes = list(p.get("answers") or []), list(p.get("attributes") or [])
    prop = p.get("propensity") or {}
    classes = ["segment"] + (["no-users"] if not n_users else []) + (["no-answers"] if not answers else [])
    notice = _empty("No scored users in this segment: no user's largest propensity is for it.") if not n_users else ""
    facts = _kv({
        "scored users": f"{_num(n_users)} ({_pct(p.get('share_users'))} of all scored users)",
        "survey respondents": _num(p.get("n_respondents")),
        "members' propensity": ("no members" if not n_users else
                                f"mean {_num(prop.get('mean'), '.2f')}; p10 {_num(prop.get('p10'), '.2f')}, "
                                f"median {_num(prop.get('p50'), '.2f')}, p90 {_num(prop.get('p90'), '.2f')}"),
    })
    if answers:
        answer_part = _grid(("question", "segment's mean", "all respondents'", "difference"),
                            _effect_rows(answers), (False, True, True, True))
    else:
        why = "it has no survey respondents" if not p.get("n_respondents") else "the profile holds no answers"
        answer_part = _empty(f"No survey answers for this segment ({why}).")
    if attributes:
        attr_part = _grid(("attribute", "in segment", "all users", "effect"),
                          _effect_rows(attributes), (False, True, True, True))
    else:
        attr_part = _empty("No distinguishing attributes for this segment.")
    figures = [_img(b64, alt, "") for b64, alt in (
        (charts.effects_chart(answers, attributes), f"answer and attribute effects of segment {s}"),
        (charts.propensity_chart(prop) if n_users else None, f"members' propensity of segment {s}")) if b64]
    return (f"<section id='segment-{s}' class='{' '.join(classes)}' data-segment='{s}'>"
            f"<h3>{_e(_title(s, name))}</h3>{notice}<div class='cols'><div>{facts}"
            f"<h4>Defining survey answers</h4>{answer_part}"
            f"<h4>Distinguishing attributes</h4>{attr_part}</div><div class='chart'>"
            + ("".join(figures) or _empty("Nothing to chart for this segment."))
            + "</div></div></section>")


def _overview(segments: list[dict], names: Mapping[int, str | None]) -> str:
    rows = [[f"<a href='#segment-{p['segment']}'>{p['segment']}</a>", _e(names.get(p["segment"]) or "–"),
             _e(_num(p.get("n_users") or 0)), _e(_pct(p.get("share_users"))), _e(_num(p.get("n_respondents"))),
             _e(_num((p.get("propensity") or {}).get("mean"), ".2f"))] for p in segments]
    return _grid(("segment", "name", "scored users", "share", "respondents", "mean propensity of members"),
                 rows, (False, False, True, True, True, True))


def _sizes_section(sizes: dict[str, dict[int, int]], labels: dict[int, str], current: str) -> str:
    if not sizes:
        return _empty("No segment sizes recorded for any model version.")
    versions = sorted(sizes)
    rows = [[_e(v)] + [_e(_num(sizes[v].get(s, 0))) for s in labels] for v in versions]
    table = _grid(("model version", *labels.values()), rows, (False, *[True] * len(labels)),
                  classes=["current" if v == current else "" for v in versions])
    return _img(charts.sizes_chart(sizes, labels), "segment sizes over model versions", "No sizes to chart.") + table


def _drift_section(drift: Mapping | None, labels: Mapping[int, str]) -> str:
    if not drift:
        return _empty("No drift figures: the nightly refresh adds them (this report comes from a training run).")
    reasons = list(drift.get("retrain_reasons") or [])
    facts = {
        "largest feature PSI": _num(drift.get("max_feature_psi")),
        "largest propensity PSI": (_num(drift.get("max_propensity_psi")) if drift.get("max_propensity_psi") is not None
                                   else "not computed (the refresh retrained before scoring)"),
        **({"retraining threshold": _num(drift["threshold"])} if drift.get("threshold") is not None else {}),
        "retrained because": "; ".join(reasons) if reasons else "no retraining: no drift, model not due",
    }
    per_segment = drift.get("propensity_psi")
    if per_segment is not None and not isinstance(per_segment, Mapping):  # one per segment, in order
        per_segment = {labels.get(s, f"segment {s}"): v for s, v in enumerate(per_segment)}
    chart = charts.drift_chart(drift.get("feature_psi"), per_segment, drift.get("threshold"))
    return _kv(facts) + _img(chart, "population stability index per feature and segment",
                             "No per-feature or per-segment PSI in these drift figures.")


def _training_section(history: Sequence[Mapping]) -> str:
    if not history:
        return _empty("No iterations (n_iter = 0): the model is its supervised start.")
    keys = ("iteration", "agreement", "tsvm_objective", "mse", "kl")
    rows = [[_e(_num(h.get(k), ".4g")) for k in keys] for h in history]
    return (_img(charts.history_chart(history), "per-iteration training metrics", "No iterations to chart.")
            + _grid(("iteration", "g∘f / TSVM agreement", "TSVM objective", "MSE", "KL"), rows, [True] * 5))


def _truth_section(truth: Mapping) -> str:
    mapping = {int(k): int(v) for k, v in (truth.get("mapping") or {}).items()}
    parts = [_kv(truth["metrics"]) if truth.get("metrics") else ""]
    for title, chart in (
            ("2-D view (PCA) of the embedding of a sample of users",
             charts.embedding_chart(truth["embedding"], truth["embedding_segment"], truth["embedding_true"], mapping)),
            ("Segment sizes: predicted, survey respondents, ground truth",
             charts.truth_sizes_chart(truth["sizes"], mapping)),
            ("Reliability: surveyed users vs their survey segment (training labels, optimistic) and all users "
             "vs the ground truth", charts.calibration_chart(truth["calibration"]))):
        parts.append(f"<h3>{_e(title)}</h3>" + _img(chart, title, "No data for this chart."))
    return "".join(parts)


# ------------------------------------------------------------------ page
def render_report(data: Mapping) -> str:
    """The report page of one model version (see :mod:`deepseg.report` for `data`'s keys).

    Raises :class:`ValueError` naming the key and value it cannot render; nothing is written.
    """
    _check(data)
    segments = _segments(data)
    names = _names(data, segments)
    sizes = _sizes(data)
    version = str(data["model_version"])
    labels = {p["segment"]: _title(p["segment"], names.get(p["segment"])) for p in segments}
    truth = data.get("ground_truth")
    parts = [
        ("summary", "Summary", _kv({"model version": version, "trained at": data.get("trained_at"),
                                    **(data.get("summary") or {})})),
        ("segments", "Segments", _overview(segments, names)
         + "".join(_segment_section(p, names.get(p["segment"])) for p in segments)),
        ("sizes", "Segment sizes over model versions", _sizes_section(sizes, labels, version)),
        ("drift", "Drift (nightly refresh)", _drift_section(data.get("drift"), labels)),
        ("training", "Training diagnostics", _training_section(list(data.get("history") or []))),
    ]
    if truth is not None:
        parts.append(("ground-truth", "Ground truth (synthetic data)", _truth_section(truth)))
    title = data.get("title") or "deepseg report"
    nav = "".join(f"<a href='#{key}'>{_e(heading)}</a>" for key, heading, _ in parts)
    body = "".join(f"<section id='{key}'><h2>{_e(heading)}</h2>{content}</section>" for key, heading, content in parts)
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{_e(title)}: model {_e(version)}</title><link rel='icon' href='data:,'>"
            f"<style>{_CSS}</style></head><body><header><h1>{_e(title)}</h1>"
            f"<p class='sub'>model {_e(version)}"
            + (f", trained {_e(data['trained_at'])}" if data.get("trained_at") else "")
            + (f"; report written {_e(data['generated_at'])}" if data.get("generated_at") else "")
            + f"</p><nav>{nav}</nav></header>{body}</body></html>")


def write_report(path: str | os.PathLike, data: Mapping) -> str:
    """Render `data` and write it to `path` (a local path or a URI) whole or not at all; returns
    `path` as a string.

    The page is rendered in memory first, then written by :func:`deepseg.storage.write_text`: on
    any error nothing new is left and an existing report is untouched.
    """
    page = render_report(data)
    return storage.write_text(os.fspath(path), page)
