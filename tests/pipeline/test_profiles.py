"""Segment profiles on four hand-built users: every figure checked exactly."""

import math

import pytest

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def tables(spark):
    scored = spark.createDataFrame(
        [(1, 0, [0.8, 0.2]), (2, 0, [0.6, 0.4]), (3, 1, [0.3, 0.7]), (4, 1, [0.1, 0.9])],
        "user_id long, segment int, propensities array<float>")
    users = spark.createDataFrame([(1, 20.0, "a"), (2, 30.0, "a"), (3, 40.0, "b"), (4, 50.0, "b")],
                                  "user_id long, age double, plan string")
    survey = spark.createDataFrame([(1, 0), (3, 1), (4, 1)], "user_id long, segment int")
    responses = spark.createDataFrame([(1, 5.0), (3, 1.0), (4, 2.0)], "user_id long, q1 double")
    return scored, users, survey, responses


def test_every_figure_of_a_profile(tables):
    from deepseg.pipeline.profiles import segment_profiles

    scored, users, survey, responses = tables
    zero, one = segment_profiles(scored, users, numeric=["age"], categorical=["plan"], survey_segments=survey,
                                 responses=responses, names={0: "starters", 1: "teams"})
    approx = lambda v: pytest.approx(v, rel=1e-6)  # noqa: E731 - float32 propensities
    sd_age = math.sqrt(125.0)
    assert (zero["segment"], zero["name"], zero["n_users"], zero["share_users"], zero["n_respondents"]) == (
        0, "starters", 2, 0.5, 1)
    assert (one["name"], one["n_users"], one["n_respondents"]) == ("teams", 2, 2)
    assert zero["propensity"] == {"mean": approx(0.7), "p10": approx(0.62), "p50": approx(0.7), "p90": approx(0.78)}
    assert one["propensity"] == {"mean": approx(0.8), "p10": approx(0.72), "p50": approx(0.8), "p90": approx(0.88)}
    by = {(a["attribute"], a["value"]): a for a in zero["attributes"]}
    assert by[("age", None)]["effect"] == approx((51 / 1.8 - 35) / sd_age)
    assert by[("age", None)]["segment_stat"] == approx(51 / 1.8) and by[("age", None)]["overall_stat"] == 35
    assert by[("plan", "a")]["effect"] == approx((1.4 / 1.8) / 0.5)
    assert by[("plan", "b")]["effect"] == approx((0.4 / 1.8) / 0.5)
    # largest effect first: plan=b (|log lift| 0.81), age (|SMD| 0.60), plan=a (|log lift| 0.44)
    assert [(a["attribute"], a["value"]) for a in zero["attributes"]] == [("plan", "b"), ("age", None), ("plan", "a")]
    by_one = {(a["attribute"], a["value"]): a["effect"] for a in one["attributes"]}
    assert by_one[("age", None)] == approx((89 / 2.2 - 35) / sd_age)
    assert by_one[("plan", "b")] == approx((1.6 / 2.2) / 0.5)
    sd_q1 = math.sqrt(((5 - 8 / 3) ** 2 + (1 - 8 / 3) ** 2 + (2 - 8 / 3) ** 2) / 3)
    assert zero["answers"] == [{"attribute": "q1", "value": None, "kind": "smd", "segment_stat": 5.0,
                                "overall_stat": approx(8 / 3), "effect": approx((5 - 8 / 3) / sd_q1)}]
    assert one["answers"][0]["effect"] == approx((1.5 - 8 / 3) / sd_q1)


def test_top_k_and_bad_inputs(tables, spark):
    from deepseg.pipeline.profiles import segment_profiles

    scored, users, survey, responses = tables
    zero = segment_profiles(scored, users, numeric=["age"], categorical=["plan"], top_k=1)[0]
    assert [(a["attribute"], a["value"]) for a in zero["attributes"]] == [("plan", "b")]
    assert zero["answers"] == [] and zero["n_respondents"] == 0
    with pytest.raises(ValueError, match="names must name segments 0..1"):
        segment_profiles(scored, users, numeric=["age"], categorical=[], names={0: "x"})
    with pytest.raises(ValueError, match=r"questions \['q9'\]"):
        segment_profiles(scored, users, numeric=["age"], categorical=[], survey_segments=survey,
                         responses=responses, questions=["q9"])
    with pytest.raises(ValueError, match="no scored users"):
        segment_profiles(scored.limit(0), users, numeric=["age"], categorical=[])


def test_a_segment_without_members_or_respondents(spark, tables):
    """Nobody's top segment is 2 and no respondent is in survey segment 1: their profiles say so
    (no members: no propensity spread; no respondents: no answers) and keep everything else."""
    from deepseg.pipeline.profiles import segment_profiles

    _, users, _, responses = tables
    scored = spark.createDataFrame(
        [(1, 0, [0.7, 0.2, 0.1]), (2, 0, [0.5, 0.3, 0.2]), (3, 1, [0.2, 0.7, 0.1]), (4, 1, [0.1, 0.8, 0.1])],
        "user_id long, segment int, propensities array<float>")
    survey = spark.createDataFrame([(1, 0), (3, 2), (4, 2)], "user_id long, segment int")
    zero, one, two = segment_profiles(scored, users, numeric=["age"], categorical=["plan"],
                                      survey_segments=survey, responses=responses)
    assert (two["segment"], two["n_users"], two["share_users"], two["n_respondents"]) == (2, 0, 0.0, 2)
    assert two["propensity"] == {"mean": None, "p10": None, "p50": None, "p90": None}
    age = {(a["attribute"], a["value"]): a for a in two["attributes"]}[("age", None)]
    assert age["segment_stat"] == pytest.approx((2 + 6 + 4 + 5) / 0.5, rel=1e-6)  # weighted by propensity
    assert two["answers"][0]["segment_stat"] == 1.5
    assert (one["n_users"], one["n_respondents"], one["answers"]) == (2, 0, [])
    assert zero["n_respondents"] == 1 and zero["answers"][0]["segment_stat"] == 5.0
