"""The whole chain (generate -> features -> survey -> train -> score -> audiences -> refresh), each step
in its own Python process (its own Spark session), as between the jobs of a nightly run; and a
snapshot of every output table to compare runs on different storage (same seed, same outputs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
OUTPUTS = ("features", "survey_invitations", "survey_segments", "user_segments", "segment_profiles", "audiences")
#: Columns that differ between two runs of the same data by design (ids, clocks, version names).
VOLATILE = ("run_id", "model_version", "survey_model_version")

TRAINING = {"supervised_epochs": 5, "n_iter": 1, "unlabeled_epochs": 1, "labeled_epochs": 1,
            "tsvm_sample_size": 300, "min_labeled_per_segment": 2}


def write_conf(folder: Path, settings: dict) -> Path:
    """``folder/conf/chain.yaml`` with `settings` over the chain's small training settings."""
    base = {"survey": {"invitations": 50, "n_segments": 3, "n_init": 1}, "training": TRAINING}
    (folder / "conf").mkdir(parents=True, exist_ok=True)
    for name in ("base.yaml", "demo.yaml"):
        (folder / "conf" / name).write_text((REPO / "conf" / name).read_text())
    path = folder / "conf" / "chain.yaml"
    path.write_text(yaml.safe_dump({**base, **settings}))
    return path


def session(conf: Path, body: str, env: dict | None = None, timeout: int = 600) -> dict:
    """Run `body` in a fresh Python process with a Spark session of `conf` (``spark``, ``cfg``);
    it leaves its result in ``out`` (printed as JSON)."""
    script = textwrap.dedent('''
        import json, sys
        from deepseg.config import load_config
        from deepseg.spark.session import get_spark
        cfg = load_config(sys.argv[1])
        spark = get_spark("chain-test", cfg.spark.master, dict(cfg.spark.conf))
        out = {}
    ''') + textwrap.dedent(body) + "\nprint('RESULT ' + json.dumps(out, default=str))\n"
    done = subprocess.run([sys.executable, "-c", script, str(conf)], capture_output=True, text=True,
                          timeout=timeout, cwd=conf.parent, env=env)
    assert done.returncode == 0, done.stderr[-5000:]
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def cli(conf: Path, *args, env: dict | None = None, timeout: int = 600) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "deepseg.cli", *args, "--conf", str(conf)],
                          capture_output=True, text=True, timeout=timeout, cwd=conf.parent, env=env)
    return done.returncode, done.stdout + done.stderr


def generate_features_survey(conf: Path, env: dict | None = None, setup: str = "") -> None:
    session(conf, textwrap.dedent(setup) + textwrap.dedent("""
        from deepseg.demo import generate_tables, load_demo_settings
        from deepseg.pipeline import features_job, survey_job
        generate_tables(spark, cfg, load_demo_settings("demo.yaml", {"generate": {
            "n_users": 600, "chunk_size": 600,
            "synthetic": {"survey_fraction": 0.15, "events_per_user": 5.0, "n_segments": 3}}}))
        features_job(spark, cfg)
        survey_job(spark, cfg)
    """), env)


def score_audiences(conf: Path, env: dict | None = None) -> None:
    session(conf, """
        from deepseg.pipeline import audiences_job, score_job
        score_job(spark, cfg)
        audiences_job(spark, cfg)
    """, env)


SNAPSHOT = f"""
    from pyspark.sql import types as T
    from deepseg.pipeline.tables import read_table

    def rows(name):
        df = read_table(spark, cfg, name)
        keep = [f.name for f in df.schema.fields if f.name not in {VOLATILE!r}
                and not isinstance(f.dataType, (T.TimestampType, T.DateType))]
        def plain(v):
            if hasattr(v, "toArray"):
                v = v.toArray().tolist()
            if isinstance(v, float):
                return round(v, 6)
            if isinstance(v, (list, tuple)):
                return [plain(x) for x in v]
            if hasattr(v, "asDict"):
                return {{k: plain(x) for k, x in v.asDict().items()}}
            if isinstance(v, dict):
                return {{str(k): plain(x) for k, x in v.items()}}
            return v
        out_rows = [json.dumps({{c: plain(r[c]) for c in keep}}, sort_keys=True, default=str)
                    for r in df.select(*keep).collect()]
        return sorted(out_rows)

    out["snapshot"] = {{n: rows(n) for n in {OUTPUTS!r}}}
"""


def run_chain(conf: Path, env: dict | None = None, setup: str = "", inspect: str = "") -> dict:
    """The chain on `conf` (`setup`: code run first, e.g. creating a schema); returns the output
    tables' snapshot (rows without volatile columns, floats to 6 decimals, sorted), what a refresh
    right after it committed (nothing), and whatever `inspect` (code run before the refresh)
    leaves in ``out``."""
    generate_features_survey(conf, env, setup)
    code, out = cli(conf, "train", env=env)
    assert code == 0, out[-3000:]
    score_audiences(conf, env)
    return session(conf, textwrap.dedent(SNAPSHOT) + textwrap.dedent(inspect) + textwrap.dedent(f"""
    from deepseg.pipeline import refresh_job
    from deepseg.pipeline.tables import history
    before = {{n: len(history(spark, cfg.data.table(n))) for n in {OUTPUTS!r}}}
    refresh_job(spark, cfg)  # nothing changed since scoring: commits nothing
    out["again"] = {{n: len(history(spark, cfg.data.table(n))) - before[n] for n in {OUTPUTS!r}}}
    out["ops"] = {{n: [h.operation for h in history(spark, cfg.data.table(n))] for n in {OUTPUTS!r}}}
    """), env)


def assert_same_outputs(got: dict, reference: dict) -> None:
    """Every output table holds the same rows as in the reference run (first difference shown)."""
    for name in OUTPUTS:
        a, b = got[name], reference[name]
        assert len(a) == len(b), (name, len(a), len(b))
        diff = next(((x, y) for x, y in zip(a, b) if x != y), None)
        assert diff is None, f"{name}: {diff[0]} != {diff[1]} (local run)"


def clean_env(**extra) -> dict:
    """This environment without AWS settings of the machine, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**env, **extra}
