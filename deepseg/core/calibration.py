"""Calibrated answers: the network's probabilities scaled by a temperature and moved by a per-class
bias, both fitted out of fold, then shifted to the class prior of the unlabelled users.

A network trained on a few labelled users fits them exactly; its probabilities on everyone else are
over-confident, and its boundary sits halfway between the few users of each segment whatever the
segment's share (17 and 3 labelled users: the small segment takes a third of the users). Out-of-fold
probabilities of the labelled users measure both: τ ≤ 1 and a bias b per segment minimise their
log-loss (bias-corrected temperature scaling, Alexandari, Kundaje & Shrikumar, ICML 2020; b under a
N(0, 1) prior, which keeps it finite where the folds separate the labelled users). b moves users
between segments only as far as the held-out labelled users ask: a boundary that calls the small
segment too often out of fold is moved back; one the folds confirm stays. The answer is then shifted
from the labelled shares π_l to the class prior π of the unlabelled users (the Bayes adjustment of
Saerens, Latinne & Decaestecker, Neural Computation 2002: a fixed number per segment of an
imbalanced population):

    p̃(k | x) ∝ exp(τ · log p(k | x) + b_k + log π_k - log π_l,k)

With few labelled users (`few_labels`: some segment has at most AUTO_LABELS_PER_CLASS, the boundary
of the other "auto" rules) the answer is instead *anchored* at the labelled shares, so that the prior
weighs in as the evidence weakens, without a test: the boundary's bias is expected there, and no test
on so few users could show it. There the shift to the estimated prior π, too, needs no test after a
fixed-number survey (as many labelled users in every segment,
:func:`deepseg.core.prior.answer_prior`):

    anchored:  p̃(k | x) ∝ exp(τ · (log p(k | x) - log π_l,k) + log π_k)

Otherwise each move needs evidence at EVIDENCE_ALPHA: the bias, above few labels, where a
likelihood-ratio test of τ and b against τ alone rejects (`bias_lr_pvalue`; otherwise τ alone, which
changes no segment, Guo et al. 2017), the shift where a χ² test rejects the labelled shares against
the estimated prior (:func:`deepseg.core.prior.label_shift_pvalue`; otherwise π = π_l). τ is at
most 1: a few labelled users that the folds happen to separate perfectly would otherwise push it to
its bound and every propensity to 0 or 1.

The answer does not rest on the best τ alone: it is averaged over τ's posterior (Bayesian model
averaging), each τ on a grid of log τ over those bounds weighted by the out-of-fold likelihood of the
labelled users under it (a uniform prior on log τ). Many labelled users pin τ down and the answer
is the best fit's; two or three of a segment cannot, and the answer leans towards the prior instead
of resting on a τ they chose by chance (the proportional 10×c fits below the majority rate had
moderate τ, docs/tuning-log.md). Only labelled users are read.

Nor does it extrapolate beyond them: outside the span of log-probabilities that the labelled users'
out-of-fold probabilities cover (per segment), the network's log-probability is compressed by
e^-5, the smallest temperature of LOG_TAU_BOUNDS. The answer's network, trained on every labelled
user and scored on millions, reaches more extreme outputs than the fold networks did on 200 held-out
users; a linear map of the log-odds fitted inside the span would carry a few of them across the
boundary on no evidence (an isotonic calibration would hold them at the end of the span; compressing
instead of clipping keeps every user's order, so a ranking by propensity is unchanged).

Models saved before format version 6 extrapolate, before version 5 have τ alone, before version 4 no
bias; those of version 2 are anchored. Format 3's rule anchored above 10 labelled users too, where a
χ² test of the out-of-fold segment counts rejected the labelled counts (docs/tuning-log.md).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import log_softmax, softmax
from scipy.stats import chi2

from deepseg.core.train import AUTO_LABELS_PER_CLASS

#: Bounds of log τ: τ from e^-5 (nearly the prior alone) to e^3 (sharper than the network).
LOG_TAU_BOUNDS = (-5.0, 3.0)

#: The answer's τ is at most 1 (see the module doc).
MAX_ANSWER_LOG_TAU = 0.0

#: σ of the Gaussian prior on the per-class bias of :func:`fit_temperature_and_bias` (log-odds).
BIAS_PRIOR_STD = 1.0

#: log τ at which the answer's posterior over τ is evaluated: the answer's bounds, in steps of 0.1.
POSTERIOR_LOG_TAU = np.linspace(LOG_TAU_BOUNDS[0], MAX_ANSWER_LOG_TAU, 51)

#: Posterior weights below this share of the largest are dropped: their answers add nothing.
POSTERIOR_WEIGHT_FLOOR = 1e-4

#: Slope of the log-probabilities beyond the out-of-fold span (module doc): e^LOG_TAU_BOUNDS[0].
BEYOND_SPAN_SLOPE = float(np.exp(LOG_TAU_BOUNDS[0]))

#: Level of the χ² tests that let the calibration move users between segments (module doc).
EVIDENCE_ALPHA = 0.05


def _log(p) -> np.ndarray:
    return np.log(np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1.0))


def fit_temperature(P_oof: np.ndarray, y: np.ndarray, train_prior: np.ndarray,
                    max_log_tau: float = LOG_TAU_BOUNDS[1]) -> float:
    """τ ≤ e^max_log_tau minimising the log-loss of softmax(τ·(log P_oof - log π_l) + log π_l) on the
    labels `y` (a uniform `train_prior`: plain temperature scaling, softmax(τ·log P_oof))."""
    log_pi = _log(train_prior)
    E, y = _log(P_oof) - log_pi, np.asarray(y)

    def loss(log_tau):
        return -log_softmax(np.exp(log_tau) * E + log_pi, axis=1)[np.arange(len(y)), y].mean()

    return float(np.exp(minimize_scalar(loss, bounds=(LOG_TAU_BOUNDS[0], max_log_tau), method="bounded").x))


def fit_temperature_and_bias(P_oof: np.ndarray, y: np.ndarray, max_log_tau: float = MAX_ANSWER_LOG_TAU,
                             bias_std: float = BIAS_PRIOR_STD) -> tuple[float, np.ndarray]:
    """(τ ≤ e^max_log_tau, b) minimising the log-loss of softmax(τ·log P_oof + b) on the labels `y`
    plus Σ_k b_k² / (2·n·σ²): bias-corrected temperature scaling (Alexandari, Kundaje & Shrikumar,
    ICML 2020), its per-class bias b the MAP estimate under b_k ~ N(0, σ²), which keeps it finite
    when the folds separate the labelled users. b sums to 0."""
    L, y = _log(P_oof), np.asarray(y, dtype=np.int64)
    n, c = L.shape
    onehot = np.eye(c)[y]
    penalty = 1.0 / (n * bias_std ** 2)

    def loss(theta):
        tau, b = np.exp(theta[0]), theta[1:]
        Z = tau * L + b
        G = (softmax(Z, axis=1) - onehot) / n
        value = -log_softmax(Z, axis=1)[np.arange(n), y].mean() + 0.5 * penalty * (b @ b)
        return value, np.r_[tau * np.sum(G * L), G.sum(axis=0) + penalty * b]

    bounds = [(LOG_TAU_BOUNDS[0], max_log_tau)] + [(None, None)] * c
    theta = minimize(loss, np.zeros(c + 1), jac=True, method="L-BFGS-B", bounds=bounds).x
    return float(np.exp(theta[0])), theta[1:] - theta[1:].mean()


def few_labels(y: np.ndarray, n_classes: int) -> bool:
    """Whether some segment has at most AUTO_LABELS_PER_CLASS labelled users (see the module doc)."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes)[:n_classes]
    return bool(counts.min() <= AUTO_LABELS_PER_CLASS)


@dataclass(frozen=True)
class OutputCalibration:
    """p ↦ softmax(τ·log p + b + log π - log π_l), or anchored, softmax(τ·(log p - log π_l) + log π)
    (see the module doc); b is 0 in models saved before format version 4."""

    temperature: float
    train_prior: tuple[float, ...]  # π_l: the labelled shares
    prior: tuple[float, ...]  # π: the class prior of the unlabelled users
    anchored: bool = False  # see the module doc; models saved in format version 2 are anchored
    bias: tuple[float, ...] = ()  # b, one per class (format version 4); () is 0
    # τ averaged over its posterior (format version 5): the answer is Σ_i w_i · softmax(at τ_i); () is τ alone
    temperatures: tuple[float, ...] = ()
    weights: tuple[float, ...] = ()
    # the out-of-fold span of log p per class (format version 6): ((lower, ...), (upper, ...)); () is none
    log_span: tuple[tuple[float, ...], ...] = ()

    @classmethod
    def fit(cls, P_oof: np.ndarray, y: np.ndarray, train_prior, prior, anchored: bool) -> "OutputCalibration":
        """τ fitted on the out-of-fold `P_oof` of the labelled users `y` in the chosen form (no bias)."""
        anchor = train_prior if anchored else np.full(np.shape(P_oof)[1], 1.0 / np.shape(P_oof)[1])
        return cls(fit_temperature(P_oof, y, anchor, MAX_ANSWER_LOG_TAU), tuple(map(float, train_prior)),
                   tuple(map(float, prior)), bool(anchored))

    @classmethod
    def fit_bias(cls, P_oof: np.ndarray, y: np.ndarray, train_prior, prior) -> "OutputCalibration":
        """τ ≤ 1 and the bias b fitted on the out-of-fold `P_oof` of the labelled users `y`
        (:func:`fit_temperature_and_bias`); the answer is then shifted from `train_prior` to `prior`."""
        tau, bias = fit_temperature_and_bias(P_oof, y)
        return cls(tau, tuple(map(float, train_prior)), tuple(map(float, prior)), False, tuple(map(float, bias)))

    def __call__(self, P: np.ndarray) -> np.ndarray:
        if not self.temperatures:
            return softmax(self.logits(P), axis=1).astype(np.asarray(P).dtype, copy=False)
        A, B = self._terms(P)
        Q = sum(w * softmax(t * A + B, axis=1) for t, w in zip(self.temperatures, self.weights))
        return Q.astype(np.asarray(P).dtype, copy=False)

    def _terms(self, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(A, B) with the calibrated logits τ·A + B of `P`, up to a constant per row."""
        log_train, log_p = _log(self.train_prior), self._within_span(_log(P))
        if self.anchored:
            A, B = log_p - log_train, _log(self.prior)
        else:
            A, B = log_p, _log(self.prior) - log_train
        return A, (B + np.asarray(self.bias) if self.bias else B)

    def _within_span(self, L: np.ndarray) -> np.ndarray:
        """Log-probabilities `L` compressed by BEYOND_SPAN_SLOPE outside `log_span` (module doc)."""
        if not self.log_span:
            return L
        inside = np.clip(L, self.log_span[0], self.log_span[1])
        return inside + BEYOND_SPAN_SLOPE * (L - inside)

    def with_span(self, P_oof: np.ndarray) -> "OutputCalibration":
        """This calibration compressing log-probabilities beyond those of `P_oof` (module doc)."""
        L = _log(P_oof)
        return replace(self, log_span=(tuple(map(float, L.min(axis=0))), tuple(map(float, L.max(axis=0)))))

    def log_likelihood(self, P_oof: np.ndarray, y: np.ndarray) -> float:
        """The log-likelihood of the labels `y` under this calibration of `P_oof`, before any prior shift."""
        logits = replace(self, prior=self.train_prior).logits(P_oof)
        return float(log_softmax(logits, axis=1)[np.arange(len(y)), np.asarray(y, dtype=np.int64)].sum())

    def logits(self, P: np.ndarray) -> np.ndarray:
        """The calibrated log-probabilities of `P` at τ = `temperature`, up to a constant per row."""
        A, B = self._terms(P)
        return self.temperature * A + B

    def averaged(self, P_oof: np.ndarray, y: np.ndarray) -> "OutputCalibration":
        """This calibration with τ averaged over its posterior (module doc): each τ of
        POSTERIOR_LOG_TAU weighted by the out-of-fold likelihood of the labelled users `y` under it,
        before any prior shift; `temperature` becomes the posterior mean of log τ, exponentiated."""
        ll = np.array([replace(self, temperature=float(np.exp(t))).log_likelihood(P_oof, y) for t in POSTERIOR_LOG_TAU])
        w = np.exp(ll - ll.max())
        keep = w >= POSTERIOR_WEIGHT_FLOOR
        w, log_tau = w[keep] / w[keep].sum(), POSTERIOR_LOG_TAU[keep]
        return replace(self, temperature=float(np.exp(w @ log_tau)), temperatures=tuple(map(float, np.exp(log_tau))),
                       weights=tuple(map(float, w)))

    def to_dict(self) -> dict:
        return {"temperature": self.temperature, "train_prior": list(self.train_prior), "prior": list(self.prior),
                "anchored": self.anchored, "bias": list(self.bias), "temperatures": list(self.temperatures),
                "weights": list(self.weights), "log_span": [list(b) for b in self.log_span]}

    @classmethod
    def from_dict(cls, data: dict | None) -> "OutputCalibration | None":
        """From :meth:`to_dict`; a dict without "anchored" (format version 2) has the anchored form,
        one without "bias" (versions 2 and 3) no bias, one without "temperatures" (versions 2-4) τ alone,
        one without "log_span" (versions 2-5) no span."""
        if data is None:
            return None
        floats = lambda key: tuple(map(float, data.get(key, ())))
        return cls(float(data["temperature"]), tuple(map(float, data["train_prior"])),
                   tuple(map(float, data["prior"])), bool(data.get("anchored", True)), floats("bias"),
                   floats("temperatures"), floats("weights"),
                   tuple(tuple(map(float, b)) for b in data.get("log_span", ())))


def bias_lr_pvalue(P_oof: np.ndarray, y: np.ndarray, plain: OutputCalibration, biased: OutputCalibration) -> float:
    """p-value of the likelihood-ratio test of the bias: the out-of-fold log-likelihood of the labelled
    users `y` under `biased` (τ and b) against `plain` (τ alone), both before any prior shift;
    χ² with c - 1 degrees of freedom (b sums to 0)."""
    stat = 2.0 * (biased.log_likelihood(P_oof, y) - plain.log_likelihood(P_oof, y))
    return float(chi2.sf(max(stat, 0.0), np.shape(P_oof)[1] - 1))


def fit_answer_calibration(P_oof: np.ndarray, y: np.ndarray, train_prior, prior, few: bool
                           ) -> tuple[OutputCalibration, dict]:
    """The answer's calibration from the out-of-fold `P_oof` of the labelled users `y` (module doc)
    and its history record: with `few` labelled users anchored at `train_prior`; otherwise τ alone,
    or τ and the bias b where the likelihood-ratio test rejects τ alone at EVIDENCE_ALPHA; then τ
    averaged over its posterior (the record keeps the best fit's τ too), and compressed beyond the
    out-of-fold span. The answer is shifted from `train_prior` to `prior` either way."""
    if few:
        cal = OutputCalibration.fit(P_oof, y, train_prior, prior, anchored=True)
        return (cal.averaged(P_oof, y).with_span(P_oof),
                {"calibration_rule": "few labels", "calibration_temperature_fit": cal.temperature})
    plain = OutputCalibration.fit(P_oof, y, train_prior, prior, anchored=False)
    biased = OutputCalibration.fit_bias(P_oof, y, train_prior, prior)
    p = bias_lr_pvalue(P_oof, y, plain, biased)
    cal = biased if p < EVIDENCE_ALPHA else plain
    return (cal.averaged(P_oof, y).with_span(P_oof),
            {"calibration_rule": "evidence", "calibration_bias_p": p, "calibration_temperature_fit": cal.temperature})
