"""The run report (deepseg.report): rendered in headless Chromium (see tests/browser.py), bad
inputs refused before any file is written, and written atomically."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import tests.browser
from deepseg.report import render_report, write_report
from tests.browser import view


def _effect(attribute, effect, kind="smd", value=None, segment_stat=1.0, overall_stat=0.5):
    return {"attribute": attribute, "value": value, "kind": kind, "segment_stat": segment_stat,
            "overall_stat": overall_stat, "effect": effect}


def report_data() -> dict:
    """Three segments: a full one, one without survey answers, one without scored users (whose
    name needs escaping); drift figures, two iterations of history and a ground-truth section."""
    rng = np.random.default_rng(0)
    segments = [
        {"segment": 0, "name": "power users", "n_users": 700, "share_users": 0.7, "n_respondents": 40,
         "propensity": {"mean": 0.81, "p10": 0.55, "p50": 0.84, "p90": 0.97},
         "answers": [_effect("q3", 1.2, segment_stat=4.1, overall_stat=2.9), _effect("q7", -0.6)],
         "attributes": [_effect("plan", 2.5, "lift", "pro", 0.5, 0.2),
                        _effect("logins_per_week", 0.9, segment_stat=12.0, overall_stat=7.5)]},
        {"segment": 1, "name": "casual", "n_users": 300, "share_users": 0.3, "n_respondents": 0,
         "propensity": {"mean": 0.66, "p10": 0.4, "p50": 0.65, "p90": 0.9},
         "answers": [], "attributes": [_effect("plan", 0.4, "lift", "free", 0.3, 0.75)]},
        {"segment": 2, "name": "<script>alert('x')</script> & co", "n_users": 0, "share_users": 0.0, "n_respondents": 3,
         "propensity": {"mean": None, "p10": None, "p50": None, "p90": None},
         "answers": [_effect("q1", 0.3)], "attributes": []},
    ]
    history = [{"iteration": i, "agreement": 0.8 + 0.05 * i, "tsvm_objective": 0.5 / i, "mse": 0.1 / i, "kl": 0.2 / i,
                "class_shares": [600, 300, 100]} for i in (1, 2)]
    n = 200
    true = rng.integers(0, 3, n)
    return {
        "model_version": "20250102T000000-abc123", "trained_at": "2025-01-02T00:00:00+00:00",
        "summary": {"scored users": 1000, "survey": {"method": "kmeans", "n_segments": 3}},
        "segments": segments,
        "sizes_by_version": {"20250101T000000-aaaaaa": {"0": 650, "1": 350, "2": 5},
                             "20250102T000000-abc123": {0: 700, 1: 300, 2: 0}},
        "drift": {"max_feature_psi": 0.31, "max_propensity_psi": None, "threshold": 0.2,
                  "retrain_reasons": ["feature drift: PSI 0.310 > 0.2 (age)"],
                  "feature_psi": {"age": 0.31, "plan=pro": 0.05, "seats": float("nan")},
                  "propensity_psi": [0.01, 0.25, 0.0]},
        "history": history,
        "ground_truth": {
            "metrics": {"deepseg_accuracy": 0.91, "survey_accuracy": 0.88},
            "embedding": rng.normal(size=(n, 4)) + true[:, None], "embedding_segment": true,
            "embedding_true": true, "mapping": {0: 0, 1: 1, 2: 2},
            "sizes": {"predicted": {0: 700, 1: 300}, "survey": {0: 40, 2: 3}, "truth": {0: 650, 1: 320, 2: 30}},
            "calibration": {"ground truth": [(0.55, 0.5, 100), (0.85, 0.8, 900)], "survey labels": []},
        },
    }


def test_report_renders_in_headless_chromium(tmp_path):
    path = write_report(tmp_path / "report.html", report_data())
    shot = tmp_path / "report.png"
    seen = view(path, shot, [f"segment-{s}" for s in range(3)])
    sections = seen["sections"]
    assert seen["errors"] == []
    # effects + propensity of segments 0 and 1, effects of 2; sizes, drift, history; 3 of the ground truth
    assert len(seen["images"]) == 11 and all(i["ok"] for i in seen["images"]), seen["images"]
    assert {s: sections[f"segment-{s}"]["images"] for s in range(3)} == {0: 2, 1: 2, 2: 1}
    assert {s: sections[f"segment-{s}"]["heading"] for s in range(3)} == {
        0: "Segment 0: power users", 1: "Segment 1: casual", 2: "Segment 2: <script>alert('x')</script> & co"}
    assert seen["scripts"] == 0  # the name is text, not markup
    texts = {s: sections[f"segment-{s}"]["text"] for s in range(3)}
    assert "No survey answers for this segment" in texts[1] and "No scored users" not in texts[1]
    assert "No scored users in this segment" in texts[2] and "q1" in texts[2]
    assert "No survey answers" not in texts[0] and "No scored users" not in texts[0]
    assert shot.stat().st_size > 0


def test_missing_chromium_fails_unless_skipped(monkeypatch, tmp_path):
    monkeypatch.setattr(tests.browser, "CHROMIUM", tmp_path / "chromium")
    monkeypatch.delenv("DEEPSEG_SKIP_BROWSER", raising=False)
    with pytest.raises(pytest.fail.Exception, match="`make browser` installs Debian's chromium"):
        tests.browser.browser()
    monkeypatch.setenv("DEEPSEG_SKIP_BROWSER", "1")
    with pytest.raises(pytest.skip.Exception):
        tests.browser.browser()


def test_page_sections_and_empty_parts():
    data = report_data()
    data.pop("ground_truth")
    data.update(drift=None, history=[], sizes_by_version={})
    page = render_report(data)
    for part in ("summary", "segments", "segment-0", "segment-1", "segment-2", "sizes", "drift", "training"):
        assert f"id='{part}'" in page
    assert "id='ground-truth'" not in page
    assert "class='segment no-answers'" in page and "class='segment no-users'" in page
    for notice in ("No drift figures", "No iterations (n_iter = 0)", "No segment sizes recorded"):
        assert notice in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co" in page and "<script>" not in page


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(names=["a", "b"]), r"data\['names'\] has 2 names for 3 segments \(0..2\)"),
    (lambda d: d.update(names={0: "a", 1: "b", 3: "c"}), r"data\['names'\] must name segments 0..2"),
    (lambda d: d["segments"].pop(1), r"data\['segments'\] must hold segments 0..1 once each; got \[0, 2\]"),
    (lambda d: d.update(segments=[]), r"data\['segments'\] must be a non-empty list"),
    (lambda d: d["segments"][0].update(n_users=-1), r"data\['segments'\]\[0\]\['n_users'\] must be a count"),
    (lambda d: d.update(model_version=None), r"data\['model_version'\] must name the model version"),
    (lambda d: d["ground_truth"].pop("calibration"), r"data\['ground_truth'\] lacks \['calibration'\]"),
    (lambda d: d.update(sizes_by_version={"v": [1, 2]}), r"data\['sizes_by_version'\] must map versions"),
])
def test_bad_inputs_are_refused_before_writing(tmp_path, change, message):
    data = report_data()
    change(data)
    with pytest.raises(ValueError, match=message):
        write_report(tmp_path / "report.html", data)
    assert list(tmp_path.iterdir()) == []


def test_names_override_the_profiles_names():
    data = report_data()
    page = render_report({**data, "names": ["fans", "browsers", "dormant"]})
    assert "Segment 2: dormant" in page and "power users" not in page
    assert "Segment 1: browsers" in render_report({**data, "names": {"0": "a", "1": "browsers", "2": "c"}})


def test_a_failure_leaves_no_partial_file_and_the_old_report(tmp_path, monkeypatch):
    import deepseg.report.charts as charts
    import deepseg.report.page as page

    path = tmp_path / "report.html"
    path.write_text("old report")
    data = report_data()

    def broken(*args, **kwargs):
        raise RuntimeError("chart failed")

    with monkeypatch.context() as m:  # rendering fails half-way through the segments
        m.setattr(charts, "effects_chart", broken)
        with pytest.raises(RuntimeError, match="chart failed"):
            write_report(path, copy.deepcopy(data))
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"] and path.read_text() == "old report"

    with monkeypatch.context() as m:  # the rename fails after the page was written out
        m.setattr(page.os, "replace", broken)
        with pytest.raises(RuntimeError, match="chart failed"):
            write_report(path, data)
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"] and path.read_text() == "old report"

    assert write_report(path, data) == str(path)
    assert path.read_text().startswith("<!doctype html>") and oct(path.stat().st_mode & 0o777) == "0o644"
