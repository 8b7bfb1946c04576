"""deepseg.notebook: the notebooks' parameters (widget, else --name, else $DEEPSEG_<NAME>, else the
default) without Spark; tests/jobs/test_notebooks.py runs the notebooks themselves."""

from pathlib import Path

from deepseg.notebook import default_conf, notebook_params, repo_root

REPO = Path(__file__).resolve().parents[1]


class FakeDbutils:
    """The part of Databricks' dbutils.widgets the notebooks use."""

    def __init__(self, values):
        self.values, self.created = dict(values), {}
        self.widgets = self

    def text(self, name, default):
        self.created[name] = default
        self.values.setdefault(name, default)

    def get(self, name):
        return self.values[name]


def test_flag_then_environment_then_default():
    params = notebook_params({"users": "20000", "stages": "a,b"}, argv=["--users", "50", "--other", "x"],
                             environ={"DEEPSEG_STAGES": "b", "DEEPSEG_USERS": "7"})
    assert params == {"conf": "conf/local.yaml", "root": "", "users": "50", "stages": "b"}


def test_databricks_widgets_win_and_are_created_with_the_defaults():
    dbutils = FakeDbutils({"users": "123"})
    params = notebook_params({"users": "20000"}, dbutils=dbutils, argv=["--users", "50"],
                             environ={"DATABRICKS_RUNTIME_VERSION": "15.4"})
    assert params == {"conf": "conf/databricks.yaml", "root": "", "users": "123"}
    assert dbutils.created == {"conf": "conf/databricks.yaml", "root": "", "users": "20000"}


def test_default_conf_and_repo_root(tmp_path):
    assert default_conf({}) == "conf/local.yaml"
    assert default_conf({"DATABRICKS_RUNTIME_VERSION": "15.4"}) == "conf/databricks.yaml"
    assert repo_root(REPO / "notebooks") == REPO
    assert repo_root(tmp_path) == tmp_path  # no checkout above: the folder itself
