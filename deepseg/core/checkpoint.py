"""Checkpoints of Algorithm 1: what a killed run needs to continue exactly where it stopped.

:func:`~deepseg.core.loop.fit_deep_segmentation` rewrites one file, ``checkpoint.pt``, after the
supervised start and after every iteration. It holds the network being trained, the Adam moments,
the supervised net and every iteration's snapshot (the EMA ensemble), the last TSVMs, the history,
the iteration number and the torch RNG state (dropout; numpy generators are seeded per call), so a
resumed run computes the same numbers as an uninterrupted one with the same seed.

Safety: the file is written whole or not at all (:func:`deepseg.storage.write_bytes`: a synced
temporary file renamed over the previous one, or one PUT on an object store), so a kill while
writing leaves the previous checkpoint intact; `directory` may be a local path or a URI. It holds tensors and plain values only
and is read with ``torch.load(weights_only=True)``, which unpickles nothing else; the history and
the TSVMs are a JSON string inside it. A checkpoint also records a fingerprint of its run (sizes,
seed, configuration, digests of the labelled users and of the unlabelled TSVM sample); resuming a
run whose fingerprint differs is refused with an error naming each difference.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import deepseg.storage as storage
from deepseg.core.embed import SegmentationNet
from deepseg.core.ovr import OvRTSVM
from deepseg.core.pseudo import frozen_copy
from deepseg.core.serialize import jsonable, tsvm_from_dict, tsvm_to_dict
from deepseg.locations import join

log = logging.getLogger("deepseg")

FORMAT = "deepseg-checkpoint"
FORMAT_VERSION = 1
FILE_NAME = "checkpoint.pt"


class CheckpointMismatchError(ValueError):
    """The checkpoint belongs to a run with other data, sizes, seed or settings."""


@dataclass
class RunState:
    """The state of a run after `iteration` iterations (0: after the supervised start): what the
    loop carries from one iteration to the next and a checkpoint holds, besides the network
    being trained and its optimizer."""

    iteration: int
    supervised: SegmentationNet
    snapshots: list[SegmentationNet]
    history: list[dict]
    tsvm: OvRTSVM | None


def digest(*arrays: np.ndarray) -> str:
    """sha256 of the dtypes, shapes and bytes of `arrays`."""
    h = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        h.update(f"{array.dtype.str}{array.shape}".encode())
        h.update(array)
    return h.hexdigest()


def run_fingerprint(X_l: np.ndarray, y_l: np.ndarray, sample: np.ndarray, n_classes: int,
                    config, seed: int) -> dict:
    """What must match for a checkpoint to continue this run.

    `config.n_iter` is left out: iterations do not depend on how many follow, so a run may be
    resumed with more iterations than it started with.
    """
    settings = dataclasses.asdict(config)
    settings.pop("n_iter", None)
    return jsonable({
        "n_features": int(X_l.shape[1]),
        "n_classes": int(n_classes),
        "seed": int(seed),
        "config": settings,
        "labeled_users": {"rows": len(X_l), "sha256": digest(X_l, np.asarray(y_l, np.int64))},
        "unlabeled_sample": {"rows": len(sample), "sha256": digest(sample)},
    })


class Checkpoint:
    """The checkpoint file of one training run, in `directory`.

    With ``resume=False`` a run starts over (an existing checkpoint is discarded); with
    ``resume=True`` it continues from the checkpoint if there is one, and starts over otherwise.
    """

    def __init__(self, directory: str | os.PathLike, resume: bool = False):
        self.directory = os.fspath(directory)
        self.resume = bool(resume)

    def __repr__(self) -> str:
        return f"Checkpoint({self.directory!r}, resume={self.resume})"

    @property
    def path(self) -> str:
        return join(self.directory, FILE_NAME)

    def exists(self) -> bool:
        return storage.exists(self.path)

    def clear(self) -> None:
        """Delete the checkpoint, temporary files of interrupted writes and, if then empty, the directory."""
        storage.remove_tree(self.path)
        if not storage.is_remote(self.directory):  # an object store has no empty folders
            for tmp in Path(self.directory).glob(f".{FILE_NAME}.*.tmp"):
                tmp.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # absent, or holding other files
                Path(self.directory).rmdir()

    def save(self, *, fingerprint: dict, iteration: int, net: SegmentationNet, optimizer: torch.optim.Optimizer,
             supervised: SegmentationNet, snapshots: list[SegmentationNet], history: list[dict],
             tsvm: OvRTSVM | None) -> None:
        """Atomically replace the checkpoint with the state after `iteration` iterations."""
        meta = {"iteration": int(iteration), "fingerprint": fingerprint, "history": jsonable(history),
                "tsvm": tsvm_to_dict(tsvm)}
        state = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "meta": json.dumps(meta, allow_nan=True),
            "net": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "supervised": supervised.state_dict(),
            "snapshots": [s.state_dict() for s in snapshots],
            "torch_rng": torch.get_rng_state(),
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        storage.write_bytes(self.path, buffer.getvalue())

    def restore(self, fingerprint: dict, net: SegmentationNet, optimizer: torch.optim.Optimizer,
                n_iter: int) -> RunState | None:
        """Load the checkpoint into `net` and `optimizer` and set the torch RNG state.

        Returns None (changing nothing) when there is no checkpoint; raises
        :class:`CheckpointMismatchError` when it belongs to another run.
        """
        if not self.exists():
            return None
        try:
            state = torch.load(io.BytesIO(storage.read_bytes(self.path)), map_location="cpu",
                               weights_only=True)
            meta = json.loads(state["meta"])
        except Exception as e:
            raise ValueError(f"cannot read the training checkpoint {self.path}: {e}; "
                             "delete it or train without resume") from e
        if state.get("format") != FORMAT or state.get("format_version") != FORMAT_VERSION:
            raise CheckpointMismatchError(
                f"{self.path} is not a {FORMAT} file of format version {FORMAT_VERSION} "
                f"(found {state.get('format')!r} version {state.get('format_version')!r}); "
                "delete it or train without resume")
        differences = _differences(meta["fingerprint"], fingerprint)
        if differences:
            raise CheckpointMismatchError(
                f"cannot resume from the training checkpoint {self.path}: it belongs to a different run ("
                + "; ".join(differences) + "). Train without resume to start over")
        iteration = int(meta["iteration"])
        if iteration > n_iter:
            raise CheckpointMismatchError(
                f"cannot resume from the training checkpoint {self.path}: it is after iteration "
                f"{iteration}, beyond n_iter={n_iter}")

        n_features, n_classes = fingerprint["n_features"], fingerprint["n_classes"]

        def frozen(weights) -> SegmentationNet:
            with torch.random.fork_rng(devices=[]):  # initialisation must not move the global RNG
                copy = SegmentationNet(n_features, n_classes, net.config)
            copy.load_state_dict(weights, strict=True)
            return frozen_copy(copy)

        net.load_state_dict(state["net"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
        restored = RunState(iteration, frozen(state["supervised"]), [frozen(s) for s in state["snapshots"]],
                            list(meta["history"]), tsvm_from_dict(meta["tsvm"]))
        torch.set_rng_state(state["torch_rng"])
        return restored


class CheckpointHook:
    """Saves a run after the supervised start and after every iteration; restores it on resume."""

    def __init__(self, checkpoint: Checkpoint, fingerprint: dict, net: SegmentationNet,
                 optimizer: torch.optim.Optimizer):
        self.checkpoint, self.fingerprint, self.net, self.optimizer = checkpoint, fingerprint, net, optimizer

    def restore(self, n_iter: int) -> RunState | None:
        """The saved state if resuming from a checkpoint of this run; None to start over."""
        checkpoint = self.checkpoint
        if not checkpoint.resume:
            if checkpoint.exists():
                log.info("discarding the training checkpoint at %s (not resuming)", checkpoint.path)
                checkpoint.clear()
            return None
        state = checkpoint.restore(self.fingerprint, self.net, self.optimizer, n_iter)
        if state is None:
            log.info("no training checkpoint at %s: starting from the beginning", checkpoint.path)
        else:
            log.info("resumed from the training checkpoint at %s after iteration %d/%d",
                     checkpoint.path, state.iteration, n_iter)
        return state

    def on_supervised_end(self, state: RunState, seconds: float) -> None:
        self._save(state)

    def on_iteration_end(self, state: RunState) -> None:
        self._save(state)

    def _save(self, state: RunState) -> None:
        self.checkpoint.save(fingerprint=self.fingerprint, iteration=state.iteration, net=self.net,
                             optimizer=self.optimizer, supervised=state.supervised,
                             snapshots=state.snapshots, history=state.history, tsvm=state.tsvm)
        log.info("checkpoint: iteration %d saved to %s", state.iteration, self.checkpoint.path)


def _flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _differences(saved: dict, current: dict) -> list[str]:
    """'key: A in the checkpoint, B now' for every setting that differs."""
    saved, current = _flatten(saved), _flatten(json.loads(json.dumps(current)))
    missing = object()
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, missing), current.get(key, missing)
        if a != b:
            show = lambda v: "absent" if v is missing else repr(v)  # noqa: E731
            out.append(f"{key}: {show(a)} in the checkpoint, {show(b)} now")
    return out
