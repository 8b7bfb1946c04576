"""Exit statuses of the `deepseg` command line (the Spark work itself is tested in tests/jobs)."""

from pathlib import Path

import pytest

from deepseg import cli
from deepseg.config import ConfigError
from deepseg.core.checkpoint import CheckpointMismatchError
from deepseg.pipeline.tables import ConcurrentWriteError
from deepseg.pipeline.validate import InputError

LOCAL = str(Path(__file__).resolve().parents[1] / "conf" / "local.yaml")


@pytest.mark.parametrize("error, status", [
    (InputError("table 'users' (/d/users): missing column 'age'"), 2),
    (ConfigError("unknown key 'trainng'"), 2),
    (FileNotFoundError("no trained model under /d/models"), 2),
    (CheckpointMismatchError("config.seed: 0 in the checkpoint, 1 now"), 2),
    (ConcurrentWriteError("user_segments: another run committed first"), 3),
])
def test_expected_errors_exit_with_one_line_and_their_status(monkeypatch, capsys, error, status):
    def stage(spark, cfg, args):
        raise error

    monkeypatch.setattr(cli, "_spark", lambda cfg: None)
    monkeypatch.setitem(cli.STAGES, "score", stage)
    assert cli.main(["score", "--conf", LOCAL]) == status
    err = capsys.readouterr().err
    assert err.startswith("deepseg score: ") and str(error) in err and "Traceback" not in err


def test_unexpected_errors_propagate_with_their_traceback(monkeypatch):
    def stage(spark, cfg, args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "_spark", lambda cfg: None)
    monkeypatch.setitem(cli.STAGES, "score", stage)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["score", "--conf", LOCAL])
