"""deepseg command line: each subcommand is one call into :mod:`deepseg.pipeline`.

    deepseg generate  [--users N]        synthetic users, events, survey answers, truth -> Delta
    deepseg features                     users + events -> features (+ fitted feature pipeline)
    deepseg survey                       invitations; survey answers -> survey_segments
    deepseg train     [--resume]         features + survey_segments -> models/<version>/
    deepseg score     [--all]            -> user_segments (MERGE on user_id)
    deepseg profiles                     user_segments, users, survey -> segment_profiles
    deepseg audiences                    user_segments -> audiences (+ CSV)
    deepseg refresh                      nightly: score new/changed users, retrain on drift/schedule
    deepseg demo      [--users 100000] [--out DIR]   all of the above on local Spark + report.html
    deepseg params                       the method's parameters (training.* keys): defaults, rules

Exit status: 0 done; 2 bad configuration, missing or invalid input table, incompatible model,
a --resume checkpoint from other data or settings, or no pyspark/delta-spark installed (one line on stderr naming the key, table,
column and value; no table or model was written);
3 lost a table commit to a concurrent run, after retries (nothing written; rerun); 1 anything
else (with its traceback).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys

from deepseg import pipeline

log = logging.getLogger("deepseg")


class MissingSpark(RuntimeError):
    """pyspark or delta-spark is not installed (the ``spark`` extra)."""


def _require_spark() -> None:
    missing = [dist for dist, module in (("pyspark", "pyspark"), ("delta-spark", "delta"))
               if importlib.util.find_spec(module) is None]
    if missing:
        raise MissingSpark(f"needs {' and '.join(missing)}, not installed here: pip install 'deepseg[spark]' "
                           f"(Databricks, EMR and Dataproc runtimes bring their own)")


def _spark(cfg):
    from deepseg.spark.session import get_spark

    return get_spark(cfg.spark.app_name, cfg.spark.master, dict(cfg.spark.conf))


def _generate(spark, cfg, args):
    from deepseg.demo import demo_settings_path, generate_tables, load_demo_settings

    return generate_tables(spark, cfg, load_demo_settings(demo_settings_path(args.conf)), args.users)


def _score(spark, cfg, args):
    return pipeline.score_job(spark, cfg, only_changed=False if args.all else None)


def _survey(spark, cfg, args):
    return vars(pipeline.survey_job(spark, cfg))


def _train(spark, cfg, args):
    trained = pipeline.train_job(spark, cfg, resume=args.resume)
    return {"model_version": trained.version, "path": trained.path}


STAGES = {
    "generate": _generate,
    "features": lambda spark, cfg, args: pipeline.features_job(spark, cfg),
    "survey": _survey,
    "train": _train,
    "score": _score,
    "profiles": lambda spark, cfg, args: pipeline.profiles_job(spark, cfg),
    "audiences": lambda spark, cfg, args: pipeline.audiences_job(spark, cfg),
    "refresh": lambda spark, cfg, args: pipeline.refresh_job(spark, cfg),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepseg", description="deepseg: semi-supervised user segmentation on Spark + Delta Lake",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("params", help="list the method's parameters (YAML training.*, scikit-learn, pyspark.ml)")
    for name in [*STAGES, "demo"]:
        p = sub.add_parser(name)
        p.add_argument("--conf", default="conf/local.yaml",
                       help="environment overlay next to base.yaml (default: %(default)s)")
        if name in ("generate", "demo"):
            p.add_argument("--users", type=int, default=None,
                           help="number of synthetic users (default: generate.n_users of the demo's "
                                "settings, demo.yaml in the folder of --conf)")
        if name == "score":
            p.add_argument("--all", action="store_true", help="rescore every user")
        if name == "train":
            p.add_argument("--resume", action="store_true",
                           help="continue a killed run from its last checkpoint (same result as an "
                                "uninterrupted run); starts over if there is none")
        if name == "demo":
            p.add_argument("--out", default=None, help="data folder (default: data.root of --conf)")
            p.add_argument("--no-report", action="store_true", help="skip report.html")
    return parser


def describe_params() -> str:
    """One entry per parameter: YAML/scikit-learn name, pyspark.ml name, default, type, doc."""
    import textwrap

    from deepseg.core.params import PARAMS

    return "\n".join(f"{p.name} ({p.spark_name}): {p.type_doc}, default {p.default!r}\n"
                     + textwrap.fill(p.doc, 96, initial_indent="    ", subsequent_indent="    ")
                     for p in PARAMS)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "params":
        print(describe_params())
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("py4j").setLevel(logging.WARNING)

    from deepseg.config import ConfigError, load_config
    from deepseg.core.checkpoint import CheckpointMismatchError
    from deepseg.pipeline.tables import ConcurrentWriteError
    from deepseg.pipeline.validate import InputError, check_storage

    try:
        _require_spark()
        if args.command == "demo":
            from deepseg.demo import format_summary, run_demo

            print(format_summary(run_demo(args.users, args.out, args.conf, report=not args.no_report)))
            return 0
        cfg = load_config(args.conf)
        spark = _spark(cfg)
        check_storage(cfg)
        with pipeline.timed(args.command):
            result = STAGES[args.command](spark, cfg, args)
    except (ConfigError, InputError, FileNotFoundError, CheckpointMismatchError, MissingSpark) as e:
        # Expected errors (bad configuration, bad or missing input, incompatible model): one line
        # naming the key/table/column/value, exit status 2, nothing written. Anything else is a
        # bug or an infrastructure failure: its traceback propagates (exit status 1).
        print(f"deepseg {args.command}: {e}", file=sys.stderr)
        return 2
    except ConcurrentWriteError as e:  # another run committed first; this one wrote nothing
        print(f"deepseg {args.command}: {e}; rerun", file=sys.stderr)
        return 3
    print(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
