"""Issue 19 prototype: f pre-trained on the unlabelled users (a denoising autoencoder) before the start.

    python -m benchmarks.experiments.pretrain_f run 100,101        # then 102,103,104,105; fits -> /tmp/exp/pretrain/*.json
    python -m benchmarks.experiments.pretrain_f summary

The issue asks to "use the unlabelled users' structure when f is learnt". Today f first meets the
unlabelled users through the linear teacher (a logistic regression's view of them) and the
iterations; its first layers are shaped by 20-1,000 labelled users. The variant "dae" first trains
f as the encoder of a denoising autoencoder (Vincent et al. 2008) on up to 5,000 unlabelled users
and the labelled ones: swap noise (each entry replaced, with probability `SWAP`, by the same
column's value in a random row: scale-free, as tabular features need), a decoder 32 → 128 → d
(discarded afterwards), squared error of the standardised features, Adam, `EPOCHS` epochs; then
the start as today. The safeguard's fold starts get the same pre-training (the same users).

Protocol as `linear_start`: tuning seeds 100+, the benchmark's labelled draw, a stratified third of
it hidden (fitted as unlabelled) and scored. Both variants run on the same split and seed. No label
of an unlabelled point is read.
"""
import contextlib
import sys

import numpy as np

OUT = "/tmp/exp/pretrain"
SWAP, EPOCHS, BATCH, ROWS = 0.15, 20, 256, 5000
_STATE: dict = {}


def pretrain(net, X: np.ndarray, seed: int) -> None:
    """Train `net.f` as a denoising autoencoder's encoder on the rows of `X` (module doc)."""
    import torch
    from torch import nn

    rng = np.random.default_rng(seed + 313)
    mu, sd = X.mean(0), X.std(0)
    weight = torch.from_numpy((sd > 1e-6).astype(np.float32))
    Z = (X - mu) / np.where(sd > 1e-6, sd, 1.0)
    d, k = X.shape[1], net.f.dense2.out_features
    decoder = nn.Sequential(nn.Linear(k, net.f.dense1.out_features), nn.Tanh(), nn.Linear(net.f.dense1.out_features, d))
    optimizer = torch.optim.Adam(list(net.f.parameters()) + list(decoder.parameters()), lr=1e-3)
    net.train()
    for _ in range(EPOCHS):
        order = rng.permutation(len(X))
        for start in range(0, len(X), BATCH):
            idx = order[start:start + BATCH]
            if len(idx) < 2:
                continue
            x = X[idx].copy()
            swap = rng.random(x.shape) < SWAP
            x[swap] = X[rng.integers(0, len(X), size=x.shape), np.arange(d)[None, :].repeat(len(idx), 0)][swap]
            recon = decoder(net.f(torch.from_numpy(x)))
            loss = (((recon - torch.from_numpy(Z[idx])) ** 2) * weight).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def _patch() -> None:
    """Pre-train f where the start and the fold starts begin (their first, 200-epoch `train_labeled`)."""
    import deepseg.core.loop as loop
    import deepseg.core.safeguard as safeguard
    from deepseg.core.train import train_labeled

    def wrapped(net, optimizer, X, H, epochs, batch_size, seed):
        if _STATE.get("variant") == "dae" and epochs == _STATE["start_epochs"]:
            pretrain(net, np.vstack([_STATE["U"], np.asarray(X, dtype=np.float32)]), seed)
        return train_labeled(net, optimizer, X, H, epochs, batch_size, seed)

    loop.train_labeled = wrapped
    safeguard.train_labeled = wrapped


@contextlib.contextmanager
def _variant(variant, seed, X, seen):
    from benchmarks.experiments._oof import unlabelled_sample

    _patch()
    _STATE.update(variant=variant, start_epochs=200, U=unlabelled_sample(X, seen, seed, ROWS))
    yield


def task(job):
    """One hidden-third fit of one variant (`_oof.paired_fit`)."""
    from benchmarks.experiments._oof import paired_fit

    return paired_fit(OUT, job, _variant)


if __name__ == "__main__":
    from benchmarks.experiments._oof import paired_summary, run_cells

    if sys.argv[1] == "run":
        run_cells(task, OUT, [int(s) for s in sys.argv[2].split(",")], variants=("base", "dae"))
    else:
        paired_summary(OUT, "base", "dae")
