"""The benchmark harnesses' command lines: what a run passes on is what its parts accept."""

from pathlib import Path

import numpy as np

from benchmarks import scale, sparse_fit


def test_scale_passes_every_setting_to_the_process_of_one_n():
    parser = scale.build_parser()
    args = parser.parse_args(["--users", "1000000", "--epoch-rows", "500000", "--survey-size", "10000",
                              "--unlabeled-epochs", "7", "--labelled", "0.02", "--keep-data"])
    cmd = scale.child_command(1_000_000, args, Path("/tmp/x.json"))
    assert cmd[1:3] == ["-m", "benchmarks.scale"]
    child = parser.parse_args(cmd[3:])
    assert child.one == 1_000_000 and child.out == Path("/tmp/x.json")
    for name in ("iterations", "tsvm_sample", "labelled", "unlabeled_batch", "unlabeled_epochs", "survey_size",
                 "arrow_batch", "driver_memory", "master", "seed", "epoch_rows", "keep_data"):
        assert getattr(child, name) == getattr(args, name), name


def test_scale_baseline_reads_train_plus_score_per_n(tmp_path):
    path = tmp_path / "scale.json"
    path.write_text('{"results": [{"users": 1000, "train_s": 10.0, "score_s": 2.5}]}')
    assert scale.baseline_seconds(path) == {1000: 12.5}
    assert scale.baseline_seconds(tmp_path / "missing.json") == {}


def test_sparse_fit_problem_has_the_stated_shape_and_labels():
    X, y = sparse_fit.make_sparse(500, 300, 0.02, 3, 0.3)
    assert X.shape == (500, 300) and 0.01 < X.nnz / (500 * 300) < 0.03
    y_semi = sparse_fit.stratified_labels(y, 30)
    assert (y_semi >= 0).sum() == 30 and set(np.bincount(y_semi[y_semi >= 0])) == {10}


def test_the_code_fingerprint_ignores_docstrings_comments_and_layout_only():
    """Stored accuracy results stay current when only documentation changes; any change of code
    makes them stale."""
    from benchmarks.accuracy_real import _code_without_docstrings as code

    base = b'"""Module."""\ndef f(x):\n    """Doc."""\n    return x + 1  # one\n\nclass A:\n    """A."""\n'
    same = b'"""Module, reworded."""\n\ndef f(x):\n    """Other doc."""\n    # a comment\n    return x+1\n\nclass A:\n    pass\n'
    assert code(base) == code(same)
    assert code(base) != code(base.replace(b"x + 1", b"x + 2"))
    assert code(base) != code(base.replace(b'"""Doc."""', b'"""Doc."""\n    x = -x'))
