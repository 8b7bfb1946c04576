"""④ Binary linear transductive SVM solved in the primal by the concave-convex procedure.

Objective (4) of the patent, with each sum divided by its size so that the solution does not
depend on how many unlabelled points are used (a sample of 100k and the full 10M give the same
separator in expectation)::

    J(w, b) = ½‖w‖² + C/L Σ_labeled H(y_i f(x_i)) + C*/U Σ_unlabeled H(|f(x_i)|)

with f(x) = w·x + b and H(t) = max(0, 1 - t). This is (4) with C₍₄₎ = C/L and C*₍₄₎ = C*/U.

Following Collobert, Sinz, Weston & Bottou, "Large Scale Transductive SVMs" (JMLR 2006):

* every unlabelled point is used twice, once as +1 and once as -1, with the ramp loss
  R_s(t) = H(t) - H_s(t), H_s(t) = max(0, s - t). For s = 0, R_0(t) + R_0(-t) = 1 + H(|t|), so
  the ramp objective *is* (4); s < 0 (Collobert's -0.3) flattens the loss near the boundary;
* the class-balance constraint (1/U) Σ_u f(x_i) = r fixes the bias: b = r - w·mean(x_u), so
  f(x) = w·(x - μ_u) + r and only w is optimised;
* CCCP: the concave part -H_s is linearised at the current w and the convex rest is minimised;
  the ramp objective never increases from one round to the next.

The hinge is replaced by a Huber-smoothed hinge of width `smoothing` (quadratic on
[1 - h, 1], linear below), which makes each convex step a small Newton problem in d dimensions:
one pass over the points per Newton step, cost linear in the number of points, all points used.
The exact (unsmoothed) objective (4) is reported alongside.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

try:  # scikit-learn's warning class, so users can filter TSVM and sklearn warnings together
    from sklearn.exceptions import ConvergenceWarning
except ImportError:  # pragma: no cover
    class ConvergenceWarning(UserWarning):
        pass


@dataclass(frozen=True)
class TSVMConfig:
    """Hyper-parameters of one binary TSVM."""

    C: float = 1.0  # weight of the mean hinge loss on labelled points
    C_unlabeled: float = 1.0  # weight of the mean symmetric hinge on unlabelled points (C*)
    ramp_s: float = 0.0  # ramp point s; 0 reproduces objective (4) exactly
    smoothing: float = 0.1  # Huber width h of the smoothed hinge
    max_iter: int = 30  # CCCP rounds
    tol: float = 1e-5  # stop when the relative decrease of the ramp objective falls below this
    newton_max_iter: int = 50


@dataclass(frozen=True)
class BinaryTSVM:
    """A fitted separator f(x) = coef·x + intercept, with its CCCP trace."""

    coef: np.ndarray
    intercept: float
    objective: float  # exact objective (4), normalised, at the solution
    # smoothed ramp objective after each convex problem: the supervised start, then each CCCP round
    history: tuple[float, ...] = field(default=())
    n_iter: int = 1  # convex problems solved, the supervised start included
    converged: bool = True

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return X @ self.coef + self.intercept


def _huber(z: np.ndarray, h: float) -> np.ndarray:
    """Smoothed max(0, z): 0 below 0, z²/2h on [0, h], z - h/2 above."""
    return np.where(z <= 0.0, 0.0, np.where(z < h, z * z / (2.0 * h), z - 0.5 * h))


def _huber_grad(z: np.ndarray, h: float) -> np.ndarray:
    return np.clip(z / h, 0.0, 1.0)


class _Problem:
    """Data of one binary problem, centred on the unlabelled mean (the balance constraint)."""

    def __init__(self, Xl, y, Xu, r, config: TSVMConfig):
        self.Xl, self.y, self.Xu, self.r = Xl, y, Xu, r
        self.cl = config.C / max(len(Xl), 1)
        self.cu = config.C_unlabeled / max(len(Xu), 1)
        self.h = config.smoothing
        self.s = config.ramp_s

    def margins(self, w):
        return self.Xl @ w + self.r, self.Xu @ w + self.r

    def convex_value(self, w, fl, fu, v):
        """The convex part (hinge terms) plus the linearised concave part v·w."""
        h = self.h
        return (
            0.5 * w @ w
            + self.cl * _huber(1.0 - self.y * fl, h).sum()
            + self.cu * (_huber(1.0 - fu, h).sum() + _huber(1.0 + fu, h).sum())
            + v @ w
        )

    def ramp_value(self, w, fl, fu):
        """Smoothed ramp objective J_s that CCCP decreases monotonically."""
        concave = _huber(self.s - fu, self.h).sum() + _huber(self.s + fu, self.h).sum()
        return self.convex_value(w, fl, fu, np.zeros_like(w)) - self.cu * concave

    def concave_slope(self, fu):
        """Gradient of the concave part -C*/U Σ H_s(±f) with respect to w, at the current f."""
        g = self.cu * (_huber_grad(self.s - fu, self.h) - _huber_grad(self.s + fu, self.h))
        return self.Xu.T @ g

    def minimise_convex(self, w, v, max_iter):
        """Damped Newton on the convex sub-problem; returns the new w."""
        h, d = self.h, len(w)
        fl, fu = self.margins(w)
        value = self.convex_value(w, fl, fu, v)
        for _ in range(max_iter):
            zl, zp, zm = 1.0 - self.y * fl, 1.0 - fu, 1.0 + fu
            grad = (
                w
                - self.Xl.T @ (self.cl * _huber_grad(zl, h) * self.y)
                + self.Xu.T @ (self.cu * (_huber_grad(zm, h) - _huber_grad(zp, h)))
                + v
            )
            bl = (zl > 0) & (zl < h)
            bu = ((zp > 0) & (zp < h)).astype(self.Xu.dtype) + ((zm > 0) & (zm < h))
            hess = np.eye(d) + (self.cl / h) * (self.Xl[bl].T @ self.Xl[bl])
            nz = bu > 0
            if nz.any():
                Xb = self.Xu[nz]
                hess += (self.cu / h) * (Xb.T @ (Xb * bu[nz, None]))
            step = -np.linalg.solve(hess, grad)
            slope = grad @ step
            if -slope <= 1e-12 * max(1.0, abs(value)):
                break
            dl, du = self.Xl @ step, self.Xu @ step
            alpha = 1.0
            while True:
                cand = w + alpha * step
                cfl, cfu = fl + alpha * dl, fu + alpha * du
                cval = self.convex_value(cand, cfl, cfu, v)
                if cval <= value + 1e-4 * alpha * slope or alpha < 1e-8:
                    break
                alpha *= 0.5
            if cval > value:
                break
            w, fl, fu, value = cand, cfl, cfu, cval
        return w


def objective4(coef, intercept, X_l, y_l, X_u, C, C_unlabeled) -> float:
    """Exact objective (4), with the sums divided by their sizes."""
    hinge_l = np.maximum(0.0, 1.0 - y_l * (X_l @ coef + intercept)).mean() if len(X_l) else 0.0
    hinge_u = np.maximum(0.0, 1.0 - np.abs(X_u @ coef + intercept)).mean() if len(X_u) else 0.0
    return float(0.5 * coef @ coef + C * hinge_l + C_unlabeled * hinge_u)


def fit_binary_tsvm(
    X_l: np.ndarray,
    y_l: np.ndarray,
    X_u: np.ndarray,
    config: TSVMConfig = TSVMConfig(),
    balance: float | None = None,
) -> BinaryTSVM:
    """Fit one linear TSVM; `y_l` in {-1, +1}.

    `balance` is the required mean decision value r on the unlabelled points; by default the
    labelled mean 2·P(y = +1) - 1, as in Collobert et al.
    """
    X_l = np.asarray(X_l, dtype=np.float64)
    X_u = np.asarray(X_u, dtype=np.float64)
    y_l = np.asarray(y_l, dtype=np.float64)
    r = float(np.mean(y_l)) if balance is None else float(balance)
    mu = X_u.mean(axis=0) if len(X_u) else X_l.mean(axis=0)
    prob = _Problem(X_l - mu, y_l, X_u - mu, r, config)
    d = X_l.shape[1]

    # Start from the supervised SVM (labelled points only), then run CCCP.
    supervised = _Problem(prob.Xl, y_l, prob.Xu[:0], r, config)
    w = supervised.minimise_convex(np.zeros(d), np.zeros(d), config.newton_max_iter)

    fl, fu = prob.margins(w)
    history = [prob.ramp_value(w, fl, fu)]
    converged = True
    if len(X_u):
        converged = False
        for _ in range(config.max_iter):
            v = prob.concave_slope(fu)
            w = prob.minimise_convex(w, v, config.newton_max_iter)
            fl, fu = prob.margins(w)
            history.append(prob.ramp_value(w, fl, fu))
            if history[-2] - history[-1] <= config.tol * max(1.0, abs(history[-1])):
                converged = True
                break
    if not converged:
        warnings.warn(
            f"TSVM CCCP did not converge in max_iter={config.max_iter} rounds; "
            "increase tsvm_max_iter or tol.",
            ConvergenceWarning,
            stacklevel=2,
        )
    intercept = r - float(w @ mu)
    return BinaryTSVM(
        coef=w,
        intercept=intercept,
        objective=objective4(w, intercept, X_l, y_l, X_u, config.C, config.C_unlabeled),
        history=tuple(float(h) for h in history),
        n_iter=len(history),
        converged=converged,
    )
