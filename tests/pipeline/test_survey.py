"""The survey stage: whom to invite, and a few answers -> segments numbered by size."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def users(spark):
    """Users 1-9: 6 on plan 'a', 3 on plan 'b'."""
    return spark.createDataFrame([(i, "a" if i <= 6 else "b") for i in range(1, 10)], "user_id long, plan string")


@pytest.fixture(scope="module")
def answers(spark):
    """Two tight groups of answers, 3 near (0, 0) and 2 near (5, 5); respondent 6 skipped a question."""
    return spark.createDataFrame([(1, 0.0, 0.0), (2, 0.1, 0.0), (3, 0.0, 0.1), (4, 5.0, 5.0), (5, 5.1, 5.0),
                                  (6, None, 1.0)], "user_id long, q1 double, q2 double")


def test_uniform_invitations_exclude_respondents(users, answers):
    from deepseg.pipeline.survey import select_invitations

    invited = select_invitations(users, 2, "uniform", seed=0, exclude=answers)
    rows = invited.collect()
    assert invited.columns == ["user_id", "stratum"]
    assert len(rows) == 2 and {r.user_id for r in rows} <= {7, 8, 9} and {r.stratum for r in rows} == {None}
    everyone = select_invitations(users, 100, "uniform", seed=0, exclude=answers)
    assert sorted(r.user_id for r in everyone.collect()) == [7, 8, 9]  # all there are, never a respondent


def test_stratified_invitations_are_proportional(users):
    from deepseg.pipeline.survey import select_invitations

    rows = select_invitations(users, 3, "stratified", strata="plan", seed=1).collect()
    assert sorted(r.stratum for r in rows) == ["a", "a", "b"]  # 6:3 users -> 2:1 invitations
    assert all((r.user_id <= 6) == (r.stratum == "a") for r in rows)
    with pytest.raises(ValueError, match="needs a strata column"):
        select_invitations(users, 3, "stratified")
    with pytest.raises(ValueError, match="'country' not in users columns"):
        select_invitations(users, 3, "stratified", strata="country")


def test_segment_answers_numbers_segments_by_size(answers):
    from deepseg.pipeline.survey import segment_answers

    segments, info = segment_answers(answers, "kmeans", n_segments=2, seed=0)
    assert sorted((r.user_id, r.segment) for r in segments.collect()) == [(1, 0), (2, 0), (3, 0), (4, 1), (5, 1)]
    assert (info.method, info.n_segments, info.criterion, info.scores, info.sizes) == ("kmeans", 2, "fixed", {}, [3, 2])


def test_segment_answers_chooses_the_count_by_silhouette(answers):
    from deepseg.pipeline.survey import segment_answers

    segments, info = segment_answers(answers, "kmeans", k_range=(2, 3), seed=0, questions=["q1", "q2"])
    assert (info.n_segments, info.criterion, sorted(info.scores), info.sizes) == (2, "silhouette", [2, 3], [3, 2])
    assert info.scores[2] > info.scores[3]
    assert segments.filter("segment = 1").count() == 2
    with pytest.raises(ValueError, match="too few for 5 segments"):
        segment_answers(answers, n_segments=5)
    with pytest.raises(ValueError, match=r"\['q3'\] not in survey_responses"):
        segment_answers(answers, n_segments=2, questions=["q1", "q3"])


def test_respondents_must_be_known_users(spark, users):
    from deepseg.pipeline.validate import InputError, check_respondents

    check_respondents(spark.createDataFrame([(1,), (9,)], "user_id long"), users)
    strangers = spark.createDataFrame([(1,), (42,), (12,)], "user_id long")
    with pytest.raises(InputError, match=r"has 2 value\(s\) not in users \(e.g. \[12, 42\]\)"):
        check_respondents(strangers, users)


# ------------------------------------------------------------------ active waves, saved segments
def test_uncertainty_column_matches_the_core(spark):
    import numpy as np

    from deepseg.core.active import uncertainty_scores
    from deepseg.pipeline.survey_waves import uncertainty_column

    P = [[0.7, 0.2, 0.1], [0.4, 0.4, 0.2], [1.0, 0.0, 0.0], [0.5, 0.3, 0.2]]
    df = spark.createDataFrame([(i, p) for i, p in enumerate(P)], "user_id long, propensities array<float>")
    for kind in ("margin", "entropy"):
        got = [r.u for r in df.select(uncertainty_column("propensities", kind).alias("u")).collect()]
        np.testing.assert_allclose(got, uncertainty_scores(np.array(P, np.float32), kind), atol=1e-6)
    with pytest.raises(ValueError, match="'margin' or 'entropy', got 'gap'"):
        uncertainty_column("propensities", "gap")


@pytest.fixture(scope="module")
def tiny_model():
    import torch

    from deepseg.core.embed import SegmentationNet
    from deepseg.core.pseudo import EMAEnsemble, frozen_copy

    torch.manual_seed(0)
    return EMAEnsemble([frozen_copy(SegmentationNet(3, 2)) for _ in range(2)], 0.8)


def test_active_invitations_draw_from_the_most_uncertain_candidates(spark, tiny_model):
    """Users 1-8: propensities from sure (1) to unsure (8); the 2 x 2 most uncertain (5-8) are the
    candidates, the wave of 2 is select_active's draw among them, embedded by the model's f."""
    import numpy as np

    from deepseg.core.active import select_active
    from deepseg.core.train import embed
    from deepseg.pipeline.survey_waves import active_invitations

    rng = np.random.default_rng(0)
    X = rng.normal(size=(8, 3)).astype(np.float32)
    P = [[1 - i / 20, i / 20] for i in range(1, 9)]  # margin uncertainty grows with the user id
    pool = spark.createDataFrame([(i + 1, "ab"[i % 2], P[i], X[i].tolist()) for i in range(8)],
                                 "user_id long, stratum string, propensities array<float>, features array<float>")
    chosen = active_invitations(pool, tiny_model, 2, seed=3, candidates_per_invitation=2)
    assert chosen.columns == ["user_id", "stratum"]
    rows = chosen.collect()
    candidates = [8, 7, 6, 5]  # most uncertain first, as the driver orders them
    picked, _ = select_active(np.array([P[u - 1] for u in candidates]),
                              embed(tiny_model.nets[-1], X[[u - 1 for u in candidates]]), 2, seed=3)
    assert [r.user_id for r in rows] == [candidates[i] for i in picked]
    assert all(r.stratum == "ab"[(r.user_id - 1) % 2] for r in rows)
    assert [r.user_id for r in active_invitations(pool, tiny_model, 2, seed=3, candidates_per_invitation=2)
            .collect()] == [r.user_id for r in rows]  # deterministic
    assert active_invitations(pool.limit(0), tiny_model, 2) is None


def test_saved_segments_number_new_respondents_as_before(spark, answers, tmp_path):
    """A survey model saved after the first answers assigns later respondents to the same
    segments; other questions are refused, naming them."""
    from deepseg.config import load_config
    from deepseg.pipeline.survey_segments import (
        assign_segments,
        check_reusable,
        fit_segments,
        load_survey_model,
        save_survey_model,
        survey_model_versions,
    )
    from deepseg.pipeline.validate import InputError

    cfg = load_config("conf/local.yaml", {"data": {"root": str(tmp_path)}, "survey": {"n_segments": 2}})
    assert load_survey_model(cfg) is None
    segments, fitted = fit_segments(answers, "kmeans", n_segments=2, seed=0)
    saved = save_survey_model(cfg, fitted, "run123456", survey_responses_version=0)
    assert survey_model_versions(cfg) == [saved.version] and saved.info.survey_model_version == saved.version
    loaded = load_survey_model(cfg)
    assert (loaded.version, loaded.relabel, loaded.questions) == (saved.version, fitted.relabel, ["q1", "q2"])
    assert loaded.info.reused and loaded.info.sizes == [3, 2]
    later = spark.createDataFrame([(1, 0.0, 0.0), (4, 5.0, 5.0), (7, 4.9, 5.2), (8, 5.1, 4.8), (9, 5.0, 5.1),
                                   (10, 0.2, 0.1)], "user_id long, q1 double, q2 double")
    assigned, sizes = assign_segments(later, loaded)
    # segment 1 (the smaller group then) is the larger one now: its number stays
    assert sorted((r.user_id, r.segment) for r in assigned.collect()) == [
        (1, 0), (4, 1), (7, 1), (8, 1), (9, 1), (10, 0)]
    assert sizes == [2, 4]
    check_reusable(loaded, cfg, ["q1", "q2"])
    with pytest.raises(InputError, match=r"survey questions \['q1', 'q3'\] .* without \['q2'\], with \['q3'\]; "
                                         r"set survey.redefine: true"):
        check_reusable(loaded, cfg, ["q1", "q3"])
    gmm = load_config("conf/local.yaml", {"data": {"root": str(tmp_path)}, "survey": {"method": "gmm"}})
    with pytest.raises(InputError, match="survey.method is 'gmm' but the saved survey model .* 'kmeans'"):
        check_reusable(loaded, gmm, ["q1", "q2"])
