"""Checkpoint/resume of Algorithm 1 in memory: a run killed part-way and resumed returns what an
uninterrupted run with the same seed returns."""

import contextlib
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from deepseg.core._local import LocalBackend
from deepseg.core.checkpoint import Checkpoint, CheckpointMismatchError
from deepseg.core.loop import DeepSegConfig, fit_deep_segmentation
from deepseg.core.train import TrainConfig, predict_proba

CONFIG = DeepSegConfig(n_iter=3, train=TrainConfig(supervised_epochs=20, unlabeled_epochs=2, labeled_epochs=2))
# history entries without timings (which differ run to run)
DETERMINISTIC = ("iteration", "tsvm_objective", "tsvm_cccp_rounds", "agreement", "class_shares", "mse", "kl")


class Crash(RuntimeError):
    pass


class CountingBackend(LocalBackend):
    """Counts the iterations run; raises `Crash` in iteration `crash_at` (after its TSVMs)."""

    def __init__(self, X, crash_at=None):
        super().__init__(X)
        self.crash_at, self.iterations = crash_at, 0

    @contextlib.contextmanager
    def pseudo_label(self, labeler):
        self.iterations += 1
        if self.iterations == self.crash_at:
            raise Crash(f"killed in iteration {self.crash_at}")
        with super().pseudo_label(labeler) as data:
            yield data


@pytest.fixture(scope="module")
def data(moons):
    X, y, _ = moons
    lab = y != -1
    return X, X[lab], y[lab], X[~lab]


@pytest.fixture(scope="module")
def uninterrupted(data):
    X, X_l, y_l, X_u = data
    return fit_deep_segmentation(X_l, y_l, LocalBackend(X_u), 2, CONFIG, seed=0)


def saved_iteration(directory) -> int:
    state = torch.load(Checkpoint(directory).path, weights_only=True)
    return json.loads(state["meta"])["iteration"]


def assert_same_result(a, b, X):
    np.testing.assert_array_equal(a.ensemble(X), b.ensemble(X))
    np.testing.assert_array_equal(predict_proba(a.supervised, X), predict_proba(b.supervised, X))
    assert len(a.ensemble.nets) == len(b.ensemble.nets)
    for net_a, net_b in zip(a.ensemble.nets, b.ensemble.nets):
        for (name, wa), wb in zip(net_a.state_dict().items(), net_b.state_dict().values()):
            assert torch.equal(wa, wb), name
    np.testing.assert_array_equal(a.tsvm.coef, b.tsvm.coef)
    assert a.tsvm.temperature == b.tsvm.temperature
    assert len(a.history) == len(b.history)
    for ha, hb in zip(a.history, b.history):
        assert [ha[k] for k in DETERMINISTIC] == [hb[k] for k in DETERMINISTIC]


def crash_then_resume(data, directory, crash_at):
    X, X_l, y_l, X_u = data
    with pytest.raises(Crash):
        fit_deep_segmentation(X_l, y_l, CountingBackend(X_u, crash_at=crash_at), 2, CONFIG, seed=0,
                              checkpoint=Checkpoint(directory))
    torch.manual_seed(12345)  # whatever the process did meanwhile, the checkpoint sets the RNG
    torch.rand(100)
    backend = CountingBackend(X_u)
    resumed = fit_deep_segmentation(X_l, y_l, backend, 2, CONFIG, seed=0,
                                    checkpoint=Checkpoint(directory, resume=True))
    return resumed, backend


@pytest.mark.parametrize("crash_at", [1, 2, 3])
def test_killed_run_resumed_equals_uninterrupted_run(data, uninterrupted, tmp_path, crash_at):
    """Killed in iteration `crash_at`: the checkpoint is after iteration crash_at - 1 (0: the
    supervised start), and the resumed run only runs the iterations left."""
    X = data[0]
    resumed, backend = crash_then_resume(data, tmp_path, crash_at)
    assert backend.iterations == CONFIG.n_iter - (crash_at - 1)
    assert_same_result(uninterrupted, resumed, X)
    assert saved_iteration(tmp_path) == CONFIG.n_iter


def test_resume_needs_the_saved_rng_state(data, uninterrupted, tmp_path, monkeypatch):
    """Dropout draws from torch's RNG: without restoring it the resumed run differs, so the
    equality above is not luck."""
    monkeypatch.setattr(torch, "set_rng_state", lambda state: None)
    resumed, _ = crash_then_resume(data, tmp_path, crash_at=2)
    assert not np.array_equal(uninterrupted.ensemble(data[0]), resumed.ensemble(data[0]))


def test_resume_of_a_finished_run_runs_nothing(data, uninterrupted, tmp_path):
    X, X_l, y_l, X_u = data
    fit_deep_segmentation(X_l, y_l, LocalBackend(X_u), 2, CONFIG, seed=0, checkpoint=tmp_path)
    backend = CountingBackend(X_u)
    again = fit_deep_segmentation(X_l, y_l, backend, 2, CONFIG, seed=0,
                                  checkpoint=Checkpoint(tmp_path, resume=True))
    assert backend.iterations == 0
    assert_same_result(uninterrupted, again, X)


def test_resume_with_more_iterations_continues_the_run(data, uninterrupted, tmp_path):
    X, X_l, y_l, X_u = data
    fit_deep_segmentation(X_l, y_l, LocalBackend(X_u), 2, dataclasses.replace(CONFIG, n_iter=1), seed=0,
                          checkpoint=tmp_path)
    longer = fit_deep_segmentation(X_l, y_l, LocalBackend(X_u), 2, CONFIG, seed=0,
                                   checkpoint=Checkpoint(tmp_path, resume=True))
    assert_same_result(uninterrupted, longer, X)


def test_resume_without_a_checkpoint_starts_over(data, uninterrupted, tmp_path):
    X, X_l, y_l, X_u = data
    backend = CountingBackend(X_u)
    result = fit_deep_segmentation(X_l, y_l, backend, 2, CONFIG, seed=0,
                                   checkpoint=Checkpoint(tmp_path / "none-yet", resume=True))
    assert backend.iterations == CONFIG.n_iter
    assert_same_result(uninterrupted, result, X)


def test_run_without_resume_discards_an_old_checkpoint(data, tmp_path):
    X, X_l, y_l, X_u = data
    fit_deep_segmentation(X_l, y_l, LocalBackend(X_u), 2, CONFIG, seed=0, checkpoint=tmp_path)
    assert saved_iteration(tmp_path) == 3
    with pytest.raises(Crash):
        fit_deep_segmentation(X_l, y_l, CountingBackend(X_u, crash_at=1), 2, CONFIG, seed=0,
                              checkpoint=Checkpoint(tmp_path, resume=False))
    assert saved_iteration(tmp_path) == 0


def test_kill_while_writing_keeps_the_previous_checkpoint(data, uninterrupted, tmp_path, monkeypatch):
    """The write of iteration 2's checkpoint dies half-way: iteration 1's stays loadable."""
    X, X_l, y_l, X_u = data
    real_save = torch.save

    def dying_save(state, f):
        if json.loads(state["meta"])["iteration"] == 2:
            f.write(b"PK\x03\x04 half a checkpoint")
            raise Crash("killed while writing")
        real_save(state, f)

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(Crash):
        fit_deep_segmentation(X_l, y_l, LocalBackend(X_u), 2, CONFIG, seed=0, checkpoint=tmp_path)
    monkeypatch.undo()
    assert saved_iteration(tmp_path) == 1
    backend = CountingBackend(X_u)
    resumed = fit_deep_segmentation(X_l, y_l, backend, 2, CONFIG, seed=0,
                                    checkpoint=Checkpoint(tmp_path, resume=True))
    assert backend.iterations == 2
    assert_same_result(uninterrupted, resumed, X)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # the torn file was removed


def _other_run(data, change):
    X, X_l, y_l, X_u = data
    n_classes, config, seed = 2, CONFIG, 0
    if change == "learning_rate":
        config = dataclasses.replace(CONFIG, train=dataclasses.replace(CONFIG.train, learning_rate=0.01))
    elif change == "seed":
        seed = 1
    elif change == "n_classes":
        n_classes = 3
    elif change == "n_features":
        X_l, X_u = np.hstack([X_l, X_l[:, :1]]), np.hstack([X_u, X_u[:, :1]])
    elif change == "labels":
        y_l = y_l.copy()
        y_l[0] = 1 - y_l[0]
    elif change == "unlabelled":
        X_u = X_u[1:]
    return X_l, y_l, X_u, n_classes, config, seed


@pytest.mark.parametrize("change, named", [
    ("learning_rate", "config.train.learning_rate: 0.001 in the checkpoint, 0.01 now"),
    ("seed", "seed: 0 in the checkpoint, 1 now"),
    ("n_classes", "n_classes: 2 in the checkpoint, 3 now"),
    ("n_features", "n_features: 2 in the checkpoint, 3 now"),
    ("labels", "labeled_users.sha256"),
    ("unlabelled", "unlabeled_sample.rows: 392 in the checkpoint, 391 now"),
])
def test_resume_of_another_run_is_refused(data, tmp_path, change, named):
    X, X_l, y_l, X_u = data
    fit_deep_segmentation(X_l, y_l, LocalBackend(X_u), 2, dataclasses.replace(CONFIG, n_iter=1), seed=0,
                          checkpoint=tmp_path)
    before = Path(Checkpoint(tmp_path).path).read_bytes()
    X_l, y_l, X_u, n_classes, config, seed = _other_run(data, change)
    with pytest.raises(CheckpointMismatchError, match="different run") as error:
        fit_deep_segmentation(X_l, y_l, CountingBackend(X_u), n_classes, config, seed=seed,
                              checkpoint=Checkpoint(tmp_path, resume=True))
    assert named in str(error.value) and str(Checkpoint(tmp_path).path) in str(error.value)
    assert Path(Checkpoint(tmp_path).path).read_bytes() == before  # a refused resume changes nothing


def test_resume_beyond_n_iter_is_refused(data, tmp_path):
    X, X_l, y_l, X_u = data
    fit_deep_segmentation(X_l, y_l, LocalBackend(X_u), 2, CONFIG, seed=0, checkpoint=tmp_path)
    with pytest.raises(CheckpointMismatchError, match="after iteration 3, beyond n_iter=2"):
        fit_deep_segmentation(X_l, y_l, LocalBackend(X_u), 2, dataclasses.replace(CONFIG, n_iter=2), seed=0,
                              checkpoint=Checkpoint(tmp_path, resume=True))


def test_clear_removes_the_checkpoint_and_its_emptied_directory(data, tmp_path):
    X, X_l, y_l, X_u = data
    checkpoint = Checkpoint(tmp_path / "run")
    fit_deep_segmentation(X_l, y_l, LocalBackend(X_u), 2, dataclasses.replace(CONFIG, n_iter=1), seed=0,
                          checkpoint=checkpoint)
    assert checkpoint.exists()
    checkpoint.clear()
    assert not Path(checkpoint.directory).exists()
    checkpoint.clear()  # nothing left: no error


def test_unreadable_checkpoint_is_named(data, tmp_path):
    X, X_l, y_l, X_u = data
    Path(Checkpoint(tmp_path).path).write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read the training checkpoint .*checkpoint.pt"):
        fit_deep_segmentation(X_l, y_l, LocalBackend(X_u), 2, CONFIG, seed=0,
                              checkpoint=Checkpoint(tmp_path, resume=True))


def test_checkpoint_loads_without_unpickling_objects(data, tmp_path):
    """Only tensors and plain values: torch.load(weights_only=True) accepts it."""
    X, X_l, y_l, X_u = data
    fit_deep_segmentation(X_l, y_l, LocalBackend(X_u), 2, dataclasses.replace(CONFIG, n_iter=1), seed=0,
                          checkpoint=tmp_path)
    state = torch.load(Checkpoint(tmp_path).path, weights_only=True)
    assert state["format"] == "deepseg-checkpoint" and len(state["snapshots"]) == 1
    assert set(state) == {"format", "format_version", "meta", "net", "optimizer", "supervised", "snapshots",
                          "torch_rng"}
    assert "exp_avg_sq" in state["optimizer"]["state"][0]  # the Adam moments
