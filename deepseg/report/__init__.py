"""The report of a run: one self-contained HTML page per model version (issue 21).

Pure Python + matplotlib on small, JSON-like data; nothing here touches Spark.
:func:`deepseg.pipeline.report.report_data` gathers the data of a model version from its
tables, and the demo adds its ground truth. `data`'s keys:

- ``model_version`` (required), ``trained_at``, ``generated_at``, ``title``;
- ``summary``: a mapping shown as a table at the top;
- ``segments`` (required): the profiles of segments 0..n-1, as
  :func:`deepseg.pipeline.profiles.segment_profiles` returns them (``segment``, ``name``,
  ``n_users``, ``share_users``, ``n_respondents``, ``propensity`` {mean, p10, p50, p90},
  ``answers``, ``attributes``);
- ``names``: segment names overriding the profiles' (a list, one per segment, or a mapping);
- ``sizes_by_version``: {model version: {segment: scored users}};
- ``drift``: the refresh's figures (``max_feature_psi``, ``max_propensity_psi``,
  ``retrain_reasons``, and optionally ``threshold``, ``feature_psi`` {feature: PSI},
  ``propensity_psi`` {segment label: PSI}: :func:`deepseg.pipeline.drift.drift_figures`);
- ``history``: the model's per-iteration history;
- ``ground_truth`` (the demo): ``metrics``, ``embedding``, ``embedding_segment``,
  ``embedding_true``, ``sizes``, ``calibration``, ``mapping``.
"""

from deepseg.report.page import render_report, write_report

__all__ = ["render_report", "write_report"]
