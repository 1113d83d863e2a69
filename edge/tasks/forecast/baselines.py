"""Cheap, strong forecasting baselines for ETT, numpy only. Each maps the input window of the last
L rows to the next H rows, one channel at a time with weights shared across channels (as NLinear
and AR-Net do), in the normalised space of `edge.tasks.forecast.ett`.

- repeat-last: every future value is the last one seen.
- least squares (NLinear-LS): y − x_t = W (window − x_t), W [L, H] by ridge-regularised least squares.
- AR-Net-style sparse AR (Triebe et al. 2019): y = W window + b with an L1 penalty on W that keeps a
  few lags, fitted by FISTA on the Gram matrix (AR-Net fits the same objective by SGD).

All are fitted once for the longest horizon; the first H columns serve horizon H (each output
column is its own regression, so this only changes which train origins count).
"""
import numpy as np


def windows(z: np.ndarray, origins: np.ndarray, length: int) -> np.ndarray:
    """The input windows of rows t−L+1..t for each origin t: [len(origins), L, C] (a copy)."""
    return z[origins[:, None] - length + 1 + np.arange(length)[None, :]]


def repeat_last(z: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
    """[len(origins), H, C]."""
    return np.repeat(z[origins][:, None, :], horizon, axis=1)


def gram(z, origins, length, horizon):
    """Sufficient statistics over every channel's rows of raw windows X [n, L] and futures Y [n, H]:
    n, Σx [L], Σy [H], XᵀX [L, L], XᵀY [L, H]. One pass serves both fits below."""
    n, sx, sy, xx, xy = 0, 0.0, 0.0, 0.0, 0.0
    for c in range(z.shape[1]):
        x = windows(z[:, c:c + 1], origins, length)[..., 0]
        y = z[origins[:, None] + 1 + np.arange(horizon)[None, :], c]
        n, sx, sy = n + len(x), sx + x.sum(0), sy + y.sum(0)
        xx, xy = xx + x.T @ x, xy + x.T @ y
    return n, sx, sy, xx, xy


def level_free(xx, xy):
    """XᵀX and XᵀY of windows and futures minus each window's last value x_L, from the raw ones:
    (X − x_L1ᵀ)ᵀ(Y − x_L1ᵀ) = XᵀY − Xᵀx_L 1ᵀ − 1 x_LᵀY + (x_Lᵀx_L) 11ᵀ, with Xᵀx_L the last column of XᵀX."""
    last = xx[:, -1]
    cxx = xx - last[:, None] - last[None, :] + xx[-1, -1]
    cxy = xy - last[:, None] - xy[-1][None, :] + xx[-1, -1]
    # the level-free window's last value is identically 0: its row and column are exactly zero, not the
    # rounding left by the subtraction (which a tiny ridge would turn into a large weight)
    cxx[-1, :] = cxx[:, -1] = 0.0
    cxy[-1, :] = 0.0
    return cxx, cxy


class LinearForecaster:
    """y = W·window + b per channel; `level` subtracts the last value from window and target."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, level: bool):
        self.weight, self.bias, self.level = weight, bias, level  # [L, H], [H]

    @property
    def length(self) -> int:
        return self.weight.shape[0]

    def predict(self, z: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
        """[len(origins), H, C]."""
        x = windows(z, origins, self.length)                               # [n, L, C]
        last = x[:, -1:, :] if self.level else 0.0
        y = np.einsum("nlc,lh->nhc", x - last, self.weight[:, :horizon]) + self.bias[:horizon, None]
        return y + last


def fit_least_squares(stats, ridge: float = 1e-3) -> LinearForecaster:
    """NLinear-LS from `gram(...)` statistics: level-subtracted ridge regression (no intercept;
    `ridge` relative to the mean diagonal of XᵀX so that it does not depend on the number of rows)."""
    _, _, sy, xx, xy = stats
    return LinearForecaster(ridge_solve(*level_free(xx, xy), ridge), np.zeros(len(sy)), level=True)


def ridge_solve(xx, xy, ridge: float):
    """W = (XᵀX + λI)⁻¹ XᵀY with λ = ridge · mean diagonal of XᵀX (independent of the row count)."""
    lam = ridge * np.trace(xx) / len(xx)
    return np.linalg.solve(xx + lam * np.eye(len(xx)), xy)


def soft_threshold(w, t):
    return np.sign(w) * np.maximum(np.abs(w) - t, 0.0)


def lasso_gram(xx, xy, n: int, l1: float, iterations: int = 500, w0=None, tol: float = 1e-7):
    """argmin_W (1/2n)‖XW − Y‖² + l1‖W‖₁ for centred X, Y given XᵀX, XᵀY; FISTA with step 1/L,
    L = λ_max(XᵀX)/n, until no weight moves by more than tol·max|W|. Columns of W are independent
    problems solved together."""
    g, b = xx / n, xy / n
    step = 1.0 / np.linalg.eigvalsh(g)[-1]
    w = np.zeros_like(b) if w0 is None else w0.copy()
    v, t = w.copy(), 1.0
    for _ in range(iterations):
        w_next = soft_threshold(v - step * (g @ v - b), step * l1)
        t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
        v = w_next + ((t - 1) / t_next) * (w_next - w)
        moved = np.abs(w_next - w).max()
        w, t = w_next, t_next
        if moved <= tol * max(np.abs(w).max(), 1e-12):
            break
    return w


def fit_sparse_ar(stats, l1: float = 1e-3, iterations: int = 500) -> LinearForecaster:
    """AR-Net-style sparse AR from `gram(...)` statistics: the raw (normalised) lags, an intercept."""
    n, sx, sy, xx, xy = stats
    mx, my = sx / n, sy / n
    cxx, cxy = xx - n * np.outer(mx, mx), xy - n * np.outer(mx, my)   # centred: the intercept is free
    w = lasso_gram(cxx, cxy, n, l1, iterations)
    return LinearForecaster(w, my - mx @ w, level=False)
