"""Scale benchmark (issues 3 and 5): the whole Spark pipeline on N users × 64 features.

For each N the harness, in a fresh process (so that peak memory is per N):

1. writes N users × 64 float features (one ``array<float>`` column), a labelled (~1%, or ``--survey-size`` users) 5-segment
   ``label`` column and the true segment into a Delta table, chunk by chunk (never the whole
   table in memory): Parquet files written with pyarrow, then converted to Delta in place;
2. measures the machine's floors on that table and those arrays, in the same run: Spark's
   JVM-only Delta read, a no-op ``mapInArrow`` pass, pyarrow's Parquet read, and torch on
   in-memory tensors (forward of f, the pseudo-labeller f + TSVM probabilities, the 6-net EMA
   scorer; training of g∘f at the retrain batch size);
3. trains (``train_on_spark``, 6 iterations, Spark local[2]) and scores
   (``score_dataframe`` → Delta), timing every stage;
4. prints per stage: seconds, rows/s, the floor, the ratio to it; peak memory of the Python
   driver (VmHWM), of the JVM (local mode: the driver and the executor) and of Spark's Python
   workers (sampled); writes ``benchmarks/results/scale.json`` and ``docs/benchmarks-scale.md``.

Once per invocation it also fits the one-vs-rest TSVM and scikit-learn's supervised LinearSVC
on the same 1M × 32 embedding-like rows (``benchmarks.tsvm_scaling.embedded_users``).

    make bench-scale      # = .venv/bin/python -m benchmarks.scale --users 100000 1000000
    .venv/bin/python -m benchmarks.scale --users 100000 1000000 10000000 --epoch-rows 1000000

``--epoch-rows R`` caps the unlabelled users streamed per retrain epoch (a seeded random subset
of buckets each epoch; ``training.unlabeled_rows_per_epoch``); without it every user is streamed
every epoch, as in the method. Runs that use it say so in every output. ``--unlabeled-batch``
(default 1024, as ``conf/cluster.yaml``) is the retrain mini-batch on unlabelled users.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "scale.json"
MARKDOWN = ROOT / "docs" / "benchmarks-scale.md"
DATA = Path("/tmp/deepseg-scale")
N_FEATURES, N_SEGMENTS = 64, 5
TARGETS = {  # issue 5's acceptance, checked on the printed figures
    "pseudo_label_vs_noop_mapinarrow": 0.60,
    "retrain_vs_torch_training": 0.50,
    "tsvm_vs_linearsvc_time": 3.0,
    "train_score_s_1M": 600.0,
    "train_score_s_10M": 3600.0,
    "time_ratio_10M_1M": 11.0,
    "driver_memory_ratio_10M_1M": 1.5,
}

log = logging.getLogger("deepseg.bench")


def say(message: str, *args) -> None:
    """Progress line on stdout with a timestamp and the load average."""
    print(f"{time.strftime('%H:%M:%S')} [load {load_average()}] " + (message % args if args else message),
          flush=True)


# ---------------------------------------------------------------------------------------------
# Machine facts and memory


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict:
    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    import pyspark
    import torch

    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "python": platform.python_version(),
            "numpy": np.__version__, "torch": torch.__version__, "pyspark": pyspark.__version__,
            "os": platform.platform()}


def _status(pid: int | str, key: str) -> int:
    """A VmRSS/VmHWM-style line of /proc/<pid>/status in bytes (0 if the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    """All descendants of `pid` (from /proc/*/stat)."""
    parent = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                parent[int(p.name)] = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, frontier = [], [pid]
    while frontier:
        nxt = [c for c, pp in parent.items() if pp in frontier]
        out += nxt
        frontier = nxt
    return out


def jvm_pid(spark) -> int | None:
    """The local-mode JVM (driver + executor): the gateway's process, or its java child."""
    proc = getattr(spark.sparkContext._gateway, "proc", None)
    if proc is None:
        return None
    for pid in [proc.pid] + _children(proc.pid):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "java":
                return pid
        except OSError:
            continue
    return None


class MemorySampler:
    """Peak RSS of this process, the JVM, and the JVM's Python workers, sampled every `period` s."""

    def __init__(self, jvm: int | None, period: float = 0.5):
        self.jvm, self.period = jvm, period
        self.peak = {"driver_python": 0, "jvm": 0, "python_workers": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        self.peak["driver_python"] = max(self.peak["driver_python"], _status("self", "VmRSS"))
        if self.jvm:
            self.peak["jvm"] = max(self.peak["jvm"], _status(self.jvm, "VmRSS"))
            workers = sum(_status(p, "VmRSS") for p in _children(self.jvm))
            self.peak["python_workers"] = max(self.peak["python_workers"], workers)

    def _run(self):
        while not self._stop.wait(self.period):
            self.sample()

    def __enter__(self):
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()
        # the kernel's own high-water marks catch peaks between samples
        self.peak["driver_python"] = max(self.peak["driver_python"], _status("self", "VmHWM"))
        if self.jvm:
            self.peak["jvm"] = max(self.peak["jvm"], _status(self.jvm, "VmHWM"))


# ---------------------------------------------------------------------------------------------
# Data


def write_users(spark, path: Path, n_users: int, seed: int = 0, labeled_fraction: float = 0.01,
                chunk_size: int = 262_144, row_group_rows: int = 16_384) -> dict:
    """N users into a Delta table at `path`: user_id, features array<float>[64], label (null for
    the unlabelled), segment_true. Chunked Parquet writes (pyarrow), then an in-place conversion
    to Delta (one commit). Returns seconds for generation, Parquet writes and the conversion."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from deepseg.data.synthetic import iter_dense_chunks
    from deepseg.spark.arrow import arrow_list

    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    gen_s = write_s = 0.0
    start = 0
    chunks = iter_dense_chunks(n_users, chunk_size, N_FEATURES, N_SEGMENTS, seed)
    t = time.perf_counter()
    for i, (X, segment) in enumerate(chunks):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7, i)))
        labeled = rng.random(len(X)) < labeled_fraction
        label = pa.array(segment.astype(np.int32), mask=~labeled)
        table = pa.table({"user_id": pa.array(np.arange(start, start + len(X), dtype=np.int64)),
                          "features": arrow_list(X), "label": label,
                          "segment_true": pa.array(segment.astype(np.int32))})
        t1 = time.perf_counter()
        gen_s += t1 - t
        pq.write_table(table, path / f"part-{i:05d}.parquet", row_group_size=row_group_rows)
        t = time.perf_counter()
        write_s += t - t1
        start += len(X)
    t = time.perf_counter()
    spark.sql(f"CONVERT TO DELTA parquet.`{path}` NO STATISTICS")  # metadata only: no data pass
    convert_s = time.perf_counter() - t
    return {"generate_s": gen_s, "parquet_write_s": write_s, "delta_convert_s": convert_s,
            "bytes": sum(f.stat().st_size for f in path.glob("*.parquet"))}


# ---------------------------------------------------------------------------------------------
# Floors


def _count_batches(batches):
    import pyarrow as pa

    n = 0
    for b in batches:
        n += b.num_rows
    yield pa.RecordBatch.from_arrays([pa.array([n], pa.int64())], names=["n"])


def spark_floors(spark, path: Path, n_users: int, repeats: int = 2, max_rows: int = 2_000_000) -> dict:
    """Rows/s of Spark reading the features column: JVM only (noop sink), and through a
    no-op mapInArrow (every Arrow batch reaches Python, nothing comes back). Best of
    `repeats` passes (the first one also warms up the JVM). Tables above `max_rows` are
    measured on their first Parquet files holding >= max_rows users (same files, same layout)."""
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F

    df = spark.read.format("delta").load(str(path)).select("features")
    out = {"partitions": df.rdd.getNumPartitions(), "repeats": repeats}
    if n_users > max_rows:
        files, n_users = [], 0
        for f in sorted(path.glob("*.parquet")):
            if n_users >= max_rows:
                break
            files.append(str(f))
            n_users += pq.ParquetFile(f).metadata.num_rows
        df = spark.read.parquet(*files).select("features")
        out["measured_rows"] = n_users
    best_read = best_noop = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        df.write.format("noop").mode("overwrite").save()
        best_read = min(best_read, time.perf_counter() - t)
        t = time.perf_counter()
        n = df.mapInArrow(_count_batches, "n long").agg(F.sum("n")).collect()[0][0]
        best_noop = min(best_noop, time.perf_counter() - t)
        assert n == n_users, (n, n_users)
    out["delta_read_rows_s"] = n_users / best_read
    out["noop_mapinarrow_rows_s"] = n_users / best_noop
    return out


def pyarrow_read_floor(path: Path, max_files: int = 4) -> float:
    """Rows/s of pyarrow reading the features column of a few of the table's Parquet files."""
    import pyarrow.parquet as pq

    files = sorted(path.glob("*.parquet"))[:max_files]
    t = time.perf_counter()
    rows = sum(pq.read_table(f, columns=["features"]).num_rows for f in files)
    return rows / (time.perf_counter() - t)


def torch_floors(n_rows: int = 262_144, train_rows: int = 65_536, n_iter: int = 6, seed: int = 0,
                 threads: int | None = None, train_batch: int | None = None) -> dict:
    """The same nets on in-memory arrays: forward of f, the pseudo-labeller (f + OvR TSVM
    probabilities), the n_iter-net EMA scorer (torch on all cores), and training of g∘f at the
    retrain batch size (deepseg's optimizer, MSE, torch threads as in retraining)."""
    import torch

    from deepseg.core.embed import SegmentationNet, mse_loss
    from deepseg.core.loop import DeepSegConfig
    from deepseg.core.ovr import OvRTSVM
    from deepseg.core.pseudo import EMAEnsemble, PseudoLabeler, frozen_copy
    from deepseg.core.train import embed, make_optimizer, optimizer_step, torch_threads
    from deepseg.core.tsvm import BinaryTSVM

    cfg = DeepSegConfig()
    threads = threads or os.cpu_count() or 1
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, N_FEATURES)).astype(np.float32)
    torch.manual_seed(seed)
    nets = [frozen_copy(SegmentationNet(N_FEATURES, N_SEGMENTS, cfg.net)) for _ in range(n_iter)]
    tsvm = OvRTSVM(tuple(BinaryTSVM(rng.normal(size=cfg.net.embedding_size), 0.0, 0.0)
                         for _ in range(N_SEGMENTS)), 1.0)
    out = {"threads": threads}

    def rate(fn, rows):
        fn()  # warm-up
        t = time.perf_counter()
        fn()
        return rows / (time.perf_counter() - t)

    with torch_threads(threads):
        out["forward_rows_s"] = rate(lambda: embed(nets[0], X), n_rows)
        out["pseudo_label_rows_s"] = rate(lambda: PseudoLabeler(nets[0], tsvm)(X), n_rows)
        out["score_rows_s"] = rate(lambda: EMAEnsemble(nets, cfg.ema_decay)(X), n_rows)

    bs = train_batch or cfg.train.unlabeled_batch_size
    out["train_batch"] = bs
    Xt = torch.as_tensor(X[:train_rows])
    Pt = torch.softmax(torch.as_tensor(rng.normal(size=(train_rows, N_SEGMENTS)).astype(np.float32)), 1)

    def train():
        net = SegmentationNet(N_FEATURES, N_SEGMENTS, cfg.net)
        opt = make_optimizer(net, cfg.train.learning_rate)
        net.train()
        for s in range(0, train_rows - bs + 1, bs):
            loss = cfg.train.unlabeled_weight * mse_loss(net(Xt[s:s + bs]), Pt[s:s + bs])
            optimizer_step(net, opt, loss)  # as retraining steps

    with torch_threads(cfg.train.num_threads):  # as retraining runs (TrainConfig.num_threads)
        out["train_rows_s"] = rate(train, train_rows - train_rows % bs)
    return out


def tsvm_vs_linearsvc(n_rows: int = 1_000_000, labeled_per_class: int = 50) -> dict:
    """OvR TSVM (our fit, in-process, as one driver would) vs sklearn's supervised LinearSVC
    (OvR, all labels) on the same n_rows × 32 embedding-like rows, 5 classes."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    from benchmarks.tsvm_scaling import embedded_users
    from deepseg.core.ovr import fit_ovr_tsvm

    Z, y = embedded_users(n_rows)
    lab = np.zeros(n_rows, bool)
    for k in range(N_SEGMENTS):
        lab[np.flatnonzero(y == k)[:labeled_per_class]] = True
    load = load_average()
    t = time.perf_counter()
    model = fit_ovr_tsvm(Z[lab], y[lab], Z[~lab], N_SEGMENTS)
    tsvm_s = time.perf_counter() - t
    acc = float(np.mean(model.decision_function(Z[~lab]).argmax(1) == y[~lab]))
    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        svc = LinearSVC().fit(Z, y)
    svc_s = time.perf_counter() - t
    return {"rows": n_rows, "dims": Z.shape[1], "classes": N_SEGMENTS,
            "labelled": int(lab.sum()), "tsvm_s": tsvm_s, "tsvm_accuracy_unlabelled": acc,
            "tsvm_cccp_rounds": [s.n_iter for s in model.separators],
            "linearsvc_s": svc_s, "linearsvc_accuracy": float(np.mean(svc.predict(Z) == y)),
            "linearsvc_converged": not any(issubclass(w.category, ConvergenceWarning) for w in caught),
            "ratio": tsvm_s / svc_s, "load_average": load + load_average()}


# ---------------------------------------------------------------------------------------------
# One N


def run_one(n_users: int, args) -> dict:
    """Generate, measure floors, train, score; everything for one N (call in a fresh process)."""
    from pyspark.sql import functions as F

    from deepseg.core.loop import DeepSegConfig
    from deepseg.core.train import TrainConfig
    from deepseg.spark.backend import train_on_spark
    from deepseg.spark.scoring import embed_dataframe, score_dataframe
    from deepseg.spark.session import get_spark

    res: dict = {"users": n_users, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                 "load_average_start": load_average(), "epoch_rows": args.epoch_rows,
                 "tsvm_sample_size": args.tsvm_sample, "iterations": args.iterations,
                 "arrow_batch_rows": args.arrow_batch, "batch_rows": args.batch_rows,
                 "unlabeled_batch": args.unlabeled_batch}
    conf = {"spark.driver.memory": args.driver_memory,
            "spark.sql.execution.arrow.maxRecordsPerBatch": str(args.arrow_batch),
            "spark.sql.shuffle.partitions": "4"}
    if not args.plain_daemon:  # workers forked with torch/scipy/sklearn loaded (deepseg/spark/daemon.py)
        conf["spark.python.daemon.module"] = "deepseg.spark.daemon"
    spark = get_spark("deepseg-scale", master=args.master, conf=conf)
    res["spark"] = {"master": spark.sparkContext.master, **conf}
    jvm = jvm_pid(spark)
    table = DATA / f"users_{n_users}"
    scores = DATA / f"scores_{n_users}"
    with MemorySampler(jvm) as mem:
        t = time.perf_counter()
        fraction = args.survey_size / n_users if args.survey_size else args.labelled
        gen = write_users(spark, table, n_users, seed=args.seed, labeled_fraction=fraction)
        res["features"] = {"seconds": time.perf_counter() - t, **gen}
        say("N=%d: features table written in %.1fs", n_users, res["features"]["seconds"])

        def floors() -> dict:
            out = spark_floors(spark, table, n_users)
            out["pyarrow_read_rows_s"] = pyarrow_read_floor(table)
            out.update(torch_floors(n_iter=args.iterations, train_batch=args.unlabeled_batch))
            out["load_average"] = load_average()
            say("N=%d: floors %s", n_users, {k: round(v) for k, v in out.items() if isinstance(v, float)})
            return out

        res["floors_before"] = floors()

        df = spark.read.format("delta").load(str(table))
        config = DeepSegConfig(n_iter=args.iterations, train=TrainConfig(
            unlabeled_batch_size=args.unlabeled_batch, unlabeled_epochs=args.unlabeled_epochs))
        res["load_average_train"] = load_average()
        t = time.perf_counter()
        extra = {"batch_rows": args.batch_rows} if args.batch_rows else {}
        if args.epoch_rows:
            extra["unlabeled_rows_per_epoch"] = args.epoch_rows
        result = train_on_spark(df.select("features", "label"), features_col="features",
                                label_col="label", n_classes=N_SEGMENTS, config=config, seed=args.seed,
                                tsvm_sample_size=args.tsvm_sample, **extra)
        res["train_s"] = time.perf_counter() - t
        res["history"] = result.history
        say("N=%d: trained in %.1fs", n_users, res["train_s"])

        res["load_average_score"] = load_average()
        t = time.perf_counter()
        scored = score_dataframe(df, result, keep_columns=["user_id", "segment_true", "label"])
        scored.write.format("delta").mode("overwrite").save(str(scores))
        res["score_s"] = time.perf_counter() - t
        say("N=%d: scored in %.1fs", n_users, res["score_s"])
        # the Spark embedding pass alone (f of the last iteration over every user, no sink cost):
        # what the no-op mapInArrow floor is the floor of
        t = time.perf_counter()
        embed_dataframe(df, result, keep_columns=[]).write.format("noop").mode("overwrite").save()
        res["embed_pass_s"] = time.perf_counter() - t
        say("N=%d: Spark embedding pass in %.1fs", n_users, res["embed_pass_s"])
        # the floors again after the run: the best of the two is the machine's floor (load varies)
        res["floors_after"] = floors()
        res["floors"] = {k: max(v, res["floors_after"][k]) if k.endswith("_rows_s") else v
                         for k, v in res["floors_before"].items()}
        res["floors"]["load_average"] = res["floors_before"]["load_average"] + res["floors_after"]["load_average"]

    res["memory_peak_bytes"] = mem.peak
    res["load_average_end"] = load_average()
    out = spark.read.format("delta").load(str(scores))
    row = out.agg(F.count("*").alias("n"),
                  F.avg((F.col("segment") == F.col("segment_true")).cast("double")).alias("acc"),
                  F.avg(F.when(F.col("label").isNull(), (F.col("segment") == F.col("segment_true"))
                               .cast("double"))).alias("acc_u"),
                  F.sum(F.col("label").isNotNull().cast("int")).alias("n_l")).collect()[0]
    res["scored_rows"], res["accuracy"], res["accuracy_unlabelled"] = row["n"], row["acc"], row["acc_u"]
    res["labelled"] = row["n_l"]
    spark.stop()
    if not args.keep_data:
        shutil.rmtree(table, ignore_errors=True)
        shutil.rmtree(scores, ignore_errors=True)
    return res


# ---------------------------------------------------------------------------------------------
# Stages and report


def stages(r: dict) -> list[dict]:
    """Per-stage seconds, rows, rows/s, floor and ratio for one N."""
    f, h, n = r["floors"], r["history"], r["users"]
    n_l = r["labelled"]
    n_u = n - n_l
    cfg_epochs = 10  # DeepSegConfig().train.labeled_epochs
    bs = f.get("train_batch", 256)
    it = len(h)
    sample = min(r["tsvm_sample_size"] or n_u, n_u)
    pl_s = sum(x["pseudo_label_s"] for x in h)
    streamed = sum(x["streamed_rows"] for x in h)
    unl_s = sum(x["unlabeled_epochs_s"] for x in h)
    wait_s = sum(x["stream_wait_s"] for x in h)
    lab_s = sum(x["retrain_s"] for x in h) - pl_s - unl_s  # labelled epochs (and bookkeeping)
    embed_s, tsvm_s = sum(x["embed_s"] for x in h), sum(x["tsvm_s"] for x in h)
    setup_s = r["train_s"] - embed_s - tsvm_s - pl_s - unl_s - lab_s
    rows = [
        {"stage": "features: generate {generate_s:.1f}s + Parquet {parquet_write_s:.1f}s + Delta commit "
                  "{delta_convert_s:.1f}s (first Spark SQL of the session)".format(**r["features"]),
         "seconds": r["features"]["seconds"], "rows": n,
         "floor": "pyarrow Parquet write", "floor_rows_s": n / r["features"]["parquet_write_s"]},
        {"stage": "setup (collect labelled, supervised start, TSVM sample)", "seconds": setup_s,
         "rows": n, "floor": "Spark Delta read (JVM)", "floor_rows_s": f["delta_read_rows_s"]},
        {"stage": "embed (TSVM sample, driver)", "seconds": embed_s, "rows": it * (sample + n_l),
         "floor": "torch forward of f", "floor_rows_s": f["forward_rows_s"]},
        {"stage": "TSVM (OvR, Spark tasks)", "seconds": tsvm_s, "rows": it * sample,
         "floor": "", "floor_rows_s": None},
        {"stage": "Spark embedding pass (f, every user, mapInArrow → no-op sink; after training)",
         "seconds": r.get("embed_pass_s", 0.0), "rows": n,
         "floor": "no-op mapInArrow", "floor_rows_s": f["noop_mapinarrow_rows_s"],
         "floor2": "torch forward of f", "floor2_rows_s": f["forward_rows_s"]},
        {"stage": "pseudo-label (Spark: embed + TSVM probs, bucket)", "seconds": pl_s, "rows": it * n_u,
         "floor": "no-op mapInArrow", "floor_rows_s": f["noop_mapinarrow_rows_s"],
         "floor2": "torch f + TSVM probs", "floor2_rows_s": f["pseudo_label_rows_s"]},
        {"stage": f"retrain, unlabelled (stream + torch; {wait_s:.1f}s waiting on fetches)",
         "seconds": unl_s, "rows": streamed,
         "floor": f"torch training, in-memory, batch {bs}", "floor_rows_s": f["train_rows_s"]},
        {"stage": "retrain, labelled epochs (driver, batch 32)", "seconds": lab_s,
         "rows": it * cfg_epochs * n_l, "floor": "", "floor_rows_s": None},
        {"stage": "score (Spark: 6-net EMA, write Delta)", "seconds": r["score_s"], "rows": n,
         "floor": "no-op mapInArrow", "floor_rows_s": f["noop_mapinarrow_rows_s"],
         "floor2": "torch EMA scorer", "floor2_rows_s": f["score_rows_s"]},
        {"stage": "train + score", "seconds": r["train_s"] + r["score_s"], "rows": n,
         "floor": "", "floor_rows_s": None},
    ]
    for s in rows:
        s["rows_s"] = s["rows"] / s["seconds"] if s["seconds"] > 0 else None
        for k in ("", "2"):
            fl = s.get(f"floor{k}_rows_s")
            s[f"ratio{k}"] = s["rows_s"] / fl if fl and s["rows_s"] else None
    return rows


def _fmt(v, spec=",.0f"):
    return "" if v is None else format(v, spec)


def table_lines(r: dict) -> list[str]:
    lines = ["| stage | seconds | rows | rows/s | floor (same run) | floor rows/s | ratio |",
             "|---|---:|---:|---:|---|---:|---:|"]
    for s in stages(r):
        floor = s["floor"] + (f"; {s['floor2']}" if s.get("floor2") else "")
        frs = _fmt(s["floor_rows_s"]) + (f"; {_fmt(s['floor2_rows_s'])}" if s.get("floor2") else "")
        ratio = _fmt(s["ratio"], ".2f") + (f"; {_fmt(s['ratio2'], '.2f')}" if s.get("floor2") else "")
        lines.append(f"| {s['stage']} | {s['seconds']:.1f} | {s['rows']:,} | {_fmt(s['rows_s'])} "
                     f"| {floor} | {frs} | {ratio} |")
    return lines


def summary_lines(r: dict) -> list[str]:
    m, f = r["memory_peak_bytes"], r["floors"]
    n_u = r["users"] - r["labelled"]
    if not r.get("epoch_rows"):
        cap = "every unlabelled user streamed every epoch (no cap)"
    elif r["epoch_rows"] >= n_u:
        cap = (f"cap `--epoch-rows {r['epoch_rows']:,}` ≥ the unlabelled users: no effect, every user "
               "streamed every epoch")
    else:
        streamed = sum(h.get("streamed_rows", 0) for h in r["history"])
        cap = (f"**capped at {r['epoch_rows']:,} unlabelled rows per retrain epoch** (`--epoch-rows`; "
               f"{streamed / (10 * len(r['history'])):,.0f} rows per epoch streamed on average, of {n_u:,})")
    return [
        f"N = {r['users']:,} users ({r['labelled']:,} labelled), {r['iterations']} iterations, "
        f"TSVM sample {r['tsvm_sample_size']:,}, retrain: {cap}; {r['date']}; "
        f"load average start {r['load_average_start']}, train {r['load_average_train']}, "
        f"score {r['load_average_score']}, end {r['load_average_end']}.",
        f"Floors: Spark Delta read (JVM) {f['delta_read_rows_s']:,.0f} rows/s, no-op mapInArrow "
        f"{f['noop_mapinarrow_rows_s']:,.0f}, pyarrow Parquet read {f['pyarrow_read_rows_s']:,.0f}, "
        f"torch forward of f {f['forward_rows_s']:,.0f} ({f['threads']} threads), torch training "
        f"{f['train_rows_s']:,.0f} (batch {f.get('train_batch', 256)}); best of before and after the run (load "
        f"{f['load_average'][0]} and {f['load_average'][3]}); table in {f['partitions']} partitions"
        + (f" (Spark floors on its first {f['measured_rows']:,} rows)." if f.get("measured_rows") else "."),
        "Spark: " + ", ".join(f"{k}={v}" for k, v in r["spark"].items()
                              if k not in ("spark.sql.shuffle.partitions",)) + ".",
        f"Peak memory: driver (Python) {m['driver_python'] / 2**20:,.0f} MiB, JVM (local mode: "
        f"driver + executor) {m['jvm'] / 2**20:,.0f} MiB, Spark Python workers "
        f"{m['python_workers'] / 2**20:,.0f} MiB. Accuracy vs the true segments: "
        f"{r['accuracy_unlabelled']:.3f} (unlabelled users).",
    ]


def print_report(results: list[dict], tsvm: dict | None) -> None:
    for r in results:
        print()
        for line in summary_lines(r) + table_lines(r):
            print(line)
    if tsvm:
        print()
        print(tsvm_line(tsvm))
    for line in acceptance_lines(results, tsvm):
        print(line)


def tsvm_line(t: dict) -> str:
    return (f"TSVM vs LinearSVC on {t['rows']:,} × {t['dims']}, {t['classes']} classes: OvR TSVM "
            f"({t['labelled']} labelled + the rest unlabelled) {t['tsvm_s']:.1f}s, scikit-learn "
            f"LinearSVC (supervised, all labels{'' if t['linearsvc_converged'] else ', hit max_iter'}) "
            f"{t['linearsvc_s']:.1f}s: ratio {t['ratio']:.2f} (target ≤ 3); load {t['load_average']}.")


def _effective_cap(r: dict) -> int | None:
    """--epoch-rows where it bound (fewer unlabelled users streamed per epoch than there are)."""
    cap = r.get("epoch_rows")
    return cap if cap and cap < r["users"] - r["labelled"] else None


def acceptance_lines(results: list[dict], tsvm: dict | None) -> list[str]:
    out = ["", "Acceptance (issue 5):"]
    by_n = {r["users"]: r for r in results}
    for r in results:
        st = stages(r)
        em = next(s for s in st if s["stage"].startswith("Spark embedding"))
        pl = next(s for s in st if s["stage"].startswith("pseudo-label"))
        rt = next(s for s in st if s["stage"].startswith("retrain, unlabelled"))
        if em["ratio"] is not None:
            out.append(f"  N={r['users']:,}: Spark embedding pass / no-op mapInArrow = {em['ratio']:.2f} "
                       f"(target ≥ 0.60; vs torch forward {em['ratio2']:.2f})")
        out.append(f"  N={r['users']:,}: pseudo-label pass (embedding + TSVM + shuffle) / no-op mapInArrow "
                   f"= {pl['ratio']:.2f} (vs torch {pl['ratio2']:.2f}); retrain / torch training = "
                   f"{rt['ratio']:.2f} (target ≥ 0.50); train+score {r['train_s'] + r['score_s']:.0f}s")
    if 1_000_000 in by_n:
        r = by_n[1_000_000]
        out.append(f"  1M train+score {r['train_s'] + r['score_s']:.0f}s (target ≤ 600)")
    if 10_000_000 in by_n:
        r = by_n[10_000_000]
        out.append(f"  10M train+score {r['train_s'] + r['score_s']:.0f}s (target ≤ 3600)")
    if 1_000_000 in by_n and 10_000_000 in by_n:
        a, b = by_n[1_000_000], by_n[10_000_000]
        ta, tb = a["train_s"] + a["score_s"], b["train_s"] + b["score_s"]
        ma, mb = a["memory_peak_bytes"]["driver_python"], b["memory_peak_bytes"]["driver_python"]
        same = _effective_cap(a) == _effective_cap(b)
        note = "" if same else (f" [10M streamed {_effective_cap(b):,} unlabelled users per epoch "
                                f"(--epoch-rows), 1M all {a['users'] - a['labelled']:,}]")
        out.append(f"  time(10M)/time(1M) = {tb / ta:.2f} (target ≤ 11){note}")
        out.append(f"  driver memory 10M/1M = {mb / ma:.2f} (target ≤ 1.5)")
    if tsvm:
        out.append(f"  OvR TSVM / LinearSVC = {tsvm['ratio']:.2f} (target ≤ 3)")
    return out


def write_markdown(results: list[dict], tsvm: dict | None, commands: list[str], path: Path = MARKDOWN,
                   final: bool = True) -> None:
    """The "Scale benchmark" section (its own file: docs/benchmarks.md is benchmarks/accuracy.py's)."""
    m = machine()
    lines = ["# Scale benchmark", "",
             "Produced by `benchmarks/scale.py` (issues 3 and 5); every figure below was measured by it.", "",
             "Commands (from the repository root; `make bench-scale` runs the first kind): "
             + "; ".join(f"`{c}`" for c in commands), ""]
    if not final:
        lines += ["**Partial: the run was still going when this was written.**", ""]
    lines += [
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']}; {m['os']}; Python {m['python']}, "
             f"numpy {m['numpy']}, torch {m['torch']}, pyspark {m['pyspark']}; Spark local[2].", "",
             "Stages inside training come from `DeepSegResult.history` (`embed_s`, `tsvm_s`, "
             "`retrain_s`, and the Spark backend's `pseudo_label_s`, `stream_wait_s`, `streamed_rows`). "
             "*setup* is the rest of `train_on_spark`: collecting the labelled users, the supervised "
             "start (200 epochs on them), the TSVM sample. Floors are measured in the same run on the "
             "same table (Spark) or the same nets on in-memory arrays (torch). Ratios are rows/s over "
             "the floor's rows/s (1.0 = at the floor).", ""]
    for r in results:
        lines += [f"## {r['users']:,} users", ""] + summary_lines(r) + [""] + table_lines(r) + [""]
    if tsvm:
        lines += ["## TSVM vs LinearSVC", "", tsvm_line(tsvm), ""]
    lines += ["## Acceptance", "", "```"] + acceptance_lines(results, tsvm)[2:] + ["```", ""]
    lines += COST_MODEL
    path.write_text("\n".join(lines))


COST_MODEL = """## Cost model (what the stages above grow with)

N users, d features, c classes, T iterations (6), E epochs (10), S TSVM sample, L labelled users,
R = `unlabeled_rows_per_epoch` (default N), B = `unlabeled_batch_size` (retrain batch), 2 cores.

* **pseudo-label** (Spark, parallel over cores): T passes of N·d floats through Arrow plus
  f and c separators on each user; the shuffle moves N·(d + c + 2)·4 bytes as packed blobs,
  cached on the executors' disks for the epochs. Linear in N·d; more cores / executors help.
* **retrain, unlabelled** (driver, one torch thread): T·E·min(N, R) rows at the torch training
  floor of the table above (batch B). Independent of the cores: without R it grows linearly in
  N (600M rows at 10M users); R stops that.
* **TSVM**: c·(1 + folds) independent fits on S × 32 rows (one Spark task each); grows with S and
  c, not with N.
* **labelled**: 200·L rows for the supervised start plus T·E·L per run, at batch 32 on the driver:
  grows with the survey size L.
* **score**: N users × T stacked nets, parallel; one Delta write.
* **driver memory**: the labelled users and the TSVM sample (S·d floats), two buckets of
  `batch_rows` users, the nets: bounded by S, L and `batch_rows`, not by N. The executors cache
  the input and the pseudo-labels on local disk (~N·(2d + c)·4 bytes).

When a table outgrows one machine: cap R (a seeded random subset of buckets each epoch), keep S
at 50k-100k, survey a fixed few thousand users, raise `batch_rows` only if the driver has memory
to spare, add executors (the passes and the score scale with cores), and keep one `array<float>`
features column.
""".splitlines()


# ---------------------------------------------------------------------------------------------
# Entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--labelled", type=float, default=0.01, help="labelled fraction of the users")
    parser.add_argument("--survey-size", type=int, default=None,
                        help="about this many labelled users at every N (overrides --labelled): a "
                             "survey of fixed size, as in production")
    parser.add_argument("--tsvm-sample", type=int, default=100_000,
                        help="TSVM sample of unlabelled users (fixed over N: bounds driver memory)")
    parser.add_argument("--epoch-rows", type=int, default=None,
                        help="cap on unlabelled users streamed per retrain epoch (default: all)")
    parser.add_argument("--batch-rows", type=int, default=None, help="SparkBackend bucket size")
    parser.add_argument("--unlabeled-batch", type=int, default=1024,
                        help="retrain mini-batch on unlabelled users (training.unlabeled_batch_size; "
                             "conf/cluster.yaml's value)")
    parser.add_argument("--unlabeled-epochs", type=int, default=10,
                        help="retrain epochs on unlabelled users per iteration (training.unlabeled_epochs; "
                             "conf/cluster.yaml's value)")
    parser.add_argument("--arrow-batch", type=int, default=10_000,
                        help="spark.sql.execution.arrow.maxRecordsPerBatch")
    parser.add_argument("--driver-memory", default="4g")
    parser.add_argument("--plain-daemon", action="store_true",
                        help="Spark's own Python daemon (workers import torch etc. themselves)")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tsvm-rows", type=int, default=1_000_000,
                        help="rows of the TSVM vs LinearSVC comparison (0: skip)")
    parser.add_argument("--keep-data", action="store_true", help=f"keep the tables under {DATA}")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--markdown", type=Path, default=MARKDOWN)
    parser.add_argument("--baseline", type=Path, default=RESULTS,
                        help="results whose train + score seconds this run is compared with, per N "
                             "(default: the figures docs/benchmarks-scale.md reports; issue 19: within 1.5x)")
    parser.add_argument("--append", action="store_true",
                        help="add to the results already in --out (same N replaced) instead of starting over")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: one N, JSON to --out
    return parser


def child_command(n: int, args: argparse.Namespace, out: Path) -> list[str]:
    """The command that measures one N in a fresh process (its settings are this run's)."""
    cmd = [sys.executable, "-m", "benchmarks.scale", "--one", str(n), "--out", str(out),
           "--iterations", str(args.iterations), "--tsvm-sample", str(args.tsvm_sample),
           "--labelled", str(args.labelled), "--unlabeled-batch", str(args.unlabeled_batch),
           "--unlabeled-epochs", str(args.unlabeled_epochs),
           *(["--survey-size", str(args.survey_size)] if args.survey_size else []),
           "--arrow-batch", str(args.arrow_batch), "--driver-memory", args.driver_memory,
           "--master", args.master, "--seed", str(args.seed)]
    cmd += ["--epoch-rows", str(args.epoch_rows)] if args.epoch_rows else []
    cmd += ["--batch-rows", str(args.batch_rows)] if args.batch_rows else []
    cmd += ["--keep-data"] if args.keep_data else []
    cmd += ["--plain-daemon"] if args.plain_daemon else []
    return cmd


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    if args.one:
        res = run_one(args.one, args)
        args.out.write_text(json.dumps(res, indent=1, default=float))
        return

    DATA.mkdir(parents=True, exist_ok=True)
    baseline = baseline_seconds(args.baseline)  # read before --out (often the same file) is rewritten
    shown = list(argv if argv is not None else sys.argv[1:])
    for opt in ("--out", "--markdown"):  # where results go is not part of what was measured
        while opt in shown:
            i = shown.index(opt)
            del shown[i:i + 2]
    command = "python -m benchmarks.scale " + " ".join(shown)
    results, tsvm, commands = [], None, [command]
    if args.append and args.out.exists():
        old = json.loads(args.out.read_text())
        results = [r for r in old["results"] if r["users"] not in args.users]
        tsvm = old.get("tsvm_vs_linearsvc") if not args.tsvm_rows else None
        commands = old.get("commands", [old.get("command")]) + [command]
    if args.epoch_rows:
        print(f"NOTE: retrain capped at {args.epoch_rows:,} unlabelled rows per epoch (--epoch-rows)")

    def save(final: bool = False) -> None:  # after every step: a long run can be read while it goes
        results.sort(key=lambda r: r["users"])
        payload = {"commands": commands, "machine": machine(), "targets": TARGETS, "results": results,
                   "tsvm_vs_linearsvc": tsvm, "complete": final}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=1, default=float))
        write_markdown(results, tsvm, commands, args.markdown, final)

    def compare_tsvm() -> None:
        nonlocal tsvm
        if args.tsvm_rows and tsvm is None:
            say("TSVM vs LinearSVC on %s rows", f"{args.tsvm_rows:,}")
            tsvm = tsvm_vs_linearsvc(args.tsvm_rows)
            print(tsvm_line(tsvm), flush=True)
            save()

    for n in sorted(args.users):
        if n > 1_000_000:
            compare_tsvm()  # before the long runs
        part = DATA / f"result_{n}.json"
        part.unlink(missing_ok=True)
        cmd = child_command(n, args, part)
        say("== N=%s: %s", f"{n:,}", " ".join(cmd[1:]))
        subprocess.run(cmd, check=True, cwd=ROOT)
        results.append(json.loads(part.read_text()))
        print_report(results[-1:], None)
        save()
    compare_tsvm()
    save(final=True)
    print("\n==== Scale benchmark ====")
    print_report(results, tsvm)
    for r in results:
        if r["users"] in baseline:
            now, then = r["train_s"] + r["score_s"], baseline[r["users"]]
            print(f"train + score, {r['users']:,} users: {now:.1f}s; baseline ({args.baseline.name}) "
                  f"{then:.1f}s; ratio {now / then:.2f} (issue 19: at most {BASELINE_RATIO})")
    print(f"\nwrote {args.out} and {args.markdown}")


BASELINE_RATIO = 1.5


def baseline_seconds(path: Path) -> dict[int, float]:
    """Train + score seconds per N in a results file (empty if there is none)."""
    try:
        return {r["users"]: r["train_s"] + r["score_s"] for r in json.loads(path.read_text())["results"]}
    except (OSError, ValueError, KeyError):
        return {}


if __name__ == "__main__":
    main()
