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
