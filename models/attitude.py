"""Attitude from a 6-axis IMU: a structured filter with a learned correction.

`AttitudeFilter` is a causal VQF-like filter with constant state: strapdown integration of the
bias-corrected gyro; the accelerometer rotated into the earth frame and low-passed there by a
second-order Butterworth filter (τ_acc), which averages linear acceleration away; every step the
orientation is rotated about a horizontal axis so that the filtered acceleration points up; the gyro
bias is learnt at rest (rest detection) and in motion (from the correction). `LearnedAttitude` adds a
GRU that reads the sensor-frame signals and the filter's gravity direction and outputs a small
sensor-frame rotation that corrects the filter's inclination.

Quaternions are (w, x, y, z), sensor-to-earth (ENU, z up). `attitude_filter_step` and
`tilt_correct` are the only implementations of the math in torch: the zoo layers and the exported
ONNX graph both call them.
"""
import math

import torch
from torch import nn

from edge.io.recordings import STANDARD_GRAVITY
from edge.models.lmu import LMU
from edge.models.recurrent import GRU, LSTM
from edge.models.stack import unroll

def quat_mul(a, b):  # (..., 4) ⊗ (..., 4)
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz,
                        aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx,
                        aw * bz + ax * by - ay * bx + az * bw], -1)


def quat_rotate(q, v):  # R(q) v, (..., 4), (..., 3)
    w, x, y, z = q.unbind(-1)
    v0, v1, v2 = v.unbind(-1)
    return torch.stack([(1 - 2 * (y * y + z * z)) * v0 + 2 * (x * y - w * z) * v1 + 2 * (x * z + w * y) * v2,
                        2 * (x * y + w * z) * v0 + (1 - 2 * (x * x + z * z)) * v1 + 2 * (y * z - w * x) * v2,
                        2 * (x * z - w * y) * v0 + 2 * (y * z + w * x) * v1 + (1 - 2 * (x * x + y * y)) * v2], -1)


def quat_conj(q):
    return q * q.new_tensor([1.0, -1.0, -1.0, -1.0])


def quat_exp(r):
    """The unit quaternion of rotation vector r (..., 3): [cos(|r|/2), sin(|r|/2)·r/|r|].

    Near 0 the Taylor form 1/2 − |r|²/48 keeps the gradient right (it is 1/2 at r = 0, where the
    quotient's would be 0: a zero-initialised correction would never start learning)."""
    angle = r.norm(dim=-1, keepdim=True)
    factor = torch.where(angle < 1e-3, 0.5 - angle * angle / 48, torch.sin(angle / 2) / angle.clamp_min(1e-3))
    return torch.cat([torch.cos(angle / 2), r * factor], -1)


def level_to_up(n):
    """The rotation taking unit vector n (..., 3) to +z about a horizontal axis, without trigonometry:
    [c, n_y/(2c), −n_x/(2c), 0] with c = cos(angle/2) = √((1 + n_z)/2)."""
    c = torch.sqrt(((1 + n[..., 2:3]) / 2).clamp_min(1e-12))
    return torch.cat([c, n[..., 1:2] / (2 * c), -n[..., 0:1] / (2 * c), torch.zeros_like(c)], -1)


def butterworth(tau: float, dt: float):
    """Second-order Butterworth low-pass, cut-off √2/(2πτ) (VQF's choice), bilinear: b0, b1, b2, a1, a2."""
    fc = math.sqrt(2) / (2 * math.pi * tau)
    C = math.tan(math.pi * fc * dt)
    D = C * C + math.sqrt(2) * C + 1
    b0 = C * C / D
    return b0, 2 * b0, b0, 2 * (C * C - 1) / D, (1 - math.sqrt(2) * C + C * C) / D


FILTER_STATE = {"q": 4, "bias": 3, "x1": 3, "x2": 3, "y1": 3, "y2": 3, "gyr_lp": 3, "acc_lp": 3, "rest": 1, "started": 1}


def attitude_filter_step(p: dict, s: dict, acc, gyr):
    """One step for a batch. p: the filter's constants (see AttitudeFilter.constants); s: state dict
    (FILTER_STATE names, zeros at the start); acc (B, 3) m/s², gyr (B, 3) rad/s.
    Returns (q (B, 4), gravity direction in the sensor frame (B, 3), next state)."""
    fresh = s["started"] < 0.5  # the first sample levels the filter from the accelerometer
    up = level_to_up(acc / acc.norm(dim=-1, keepdim=True).clamp_min(1e-12))
    q = torch.where(fresh, up, s["q"])
    a_up = quat_rotate(up, acc)
    x1, x2, y1, y2 = (torch.where(fresh, a_up, s[k]) for k in ("x1", "x2", "y1", "y2"))
    acc_lp = torch.where(fresh, acc, s["acc_lp"])
    bias = s["bias"]

    # rest: slow, steady gyro and accelerometer for rest_time seconds -> the gyro reads its bias
    gyr_lp = s["gyr_lp"] + p["k_rest"] * (gyr - s["gyr_lp"])
    acc_lp = acc_lp + p["k_rest"] * (acc - acc_lp)
    still = (((gyr_lp - bias).norm(dim=-1, keepdim=True) < p["rest_gyr"])
             & ((acc - acc_lp).norm(dim=-1, keepdim=True) < p["rest_acc"])
             & ((gyr - gyr_lp).norm(dim=-1, keepdim=True) < 3 * p["rest_gyr"]))
    rest = torch.where(still, s["rest"] + p["dt"], torch.zeros_like(s["rest"]))
    bias = torch.where(rest > p["rest_time"], bias + p["k_bias_rest"] * (gyr_lp - bias), bias)

    q = quat_mul(q, quat_exp((gyr - bias) * p["dt"]))
    q = q / q.norm(dim=-1, keepdim=True)
    a_earth = quat_rotate(q, acc)
    y = p["b0"] * a_earth + p["b1"] * x1 + p["b2"] * x2 - p["a1"] * y1 - p["a2"] * y2
    x2, x1, y2, y1 = x1, a_earth, y1, y

    # tilt the estimate so that the filtered acceleration points up; the filter memory turns with it
    n = y / y.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    d = level_to_up(n)
    q = quat_mul(d, q)
    x1, x2, y1, y2 = (quat_rotate(d, v) for v in (x1, x2, y1, y2))
    # the correction, as a rotation vector in the sensor frame, is what the gyro bias got wrong
    horizontal = torch.sqrt((n[..., 0:1] ** 2 + n[..., 1:2] ** 2).clamp_min(1e-24))
    angle_per_sine = torch.atan2(horizontal, n[..., 2:3]) / horizontal
    correction = torch.cat([n[..., 1:2], -n[..., 0:1], torch.zeros_like(horizontal)], -1) * angle_per_sine
    bias = bias - p["k_bias"] * quat_rotate(quat_conj(q), correction)

    gravity = quat_rotate(quat_conj(q), torch.zeros_like(acc) + acc.new_tensor([0.0, 0.0, 1.0]))
    state = {"q": q, "bias": bias, "x1": x1, "x2": x2, "y1": y1, "y2": y2, "gyr_lp": gyr_lp,
             "acc_lp": acc_lp, "rest": rest, "started": torch.ones_like(s["started"])}
    return q, gravity, state


def tilt_correct(q, r):
    """q ⊗ exp(r): the orientation q turned by the sensor-frame rotation vector r, normalised."""
    q = quat_mul(q, quat_exp(r))
    return q / q.norm(dim=-1, keepdim=True)


class AttitudeFilter(nn.Module):
    """x (B, 6) = [acc m/s², gyr rad/s] -> y (B, 7) = [q (4), gravity direction in the sensor frame (3)].

    Fixed hyper-parameters (no gradients): they are tuned on recordings, not trained."""

    def __init__(self, rate_hz: float, tau_acc: float = 3.0, k_bias: float = 0.01, tau_rest: float = 0.5,
                 rest_gyr: float = 0.035, rest_acc: float = 0.5, rest_time: float = 1.5, tau_bias_rest: float = 3.0):
        super().__init__()
        self.rate_hz = float(rate_hz)
        self.config = dict(tau_acc=tau_acc, k_bias=k_bias, tau_rest=tau_rest, rest_gyr=rest_gyr,
                           rest_acc=rest_acc, rest_time=rest_time, tau_bias_rest=tau_bias_rest)

    def constants(self) -> dict:
        """The step's scalar constants, as the exported op carries them."""
        c, dt = self.config, 1.0 / self.rate_hz
        b0, b1, b2, a1, a2 = butterworth(c["tau_acc"], dt)
        return {"dt": dt, "b0": b0, "b1": b1, "b2": b2, "a1": a1, "a2": a2,
                "k_rest": 1 - math.exp(-dt / c["tau_rest"]), "k_bias_rest": 1 - math.exp(-dt / c["tau_bias_rest"]),
                "rest_gyr": c["rest_gyr"], "rest_acc": c["rest_acc"], "rest_time": c["rest_time"], "k_bias": c["k_bias"]}

    def init_state(self, batch: int) -> dict:
        return {k: torch.zeros(batch, n) for k, n in FILTER_STATE.items()}

    def step(self, x, state):  # x: (B, 6) -> (B, 7)
        q, gravity, state = attitude_filter_step(self.constants(), state, x[:, :3], x[:, 3:6])
        return torch.cat([q, gravity], -1), state

    def forward(self, x, state=None):  # sequential: the filter is nonlinear in its state
        return unroll(self, x, state)


CORRECTORS = {
    "gru": lambda hidden, rate_hz: GRU(9, hidden),
    "lstm": lambda hidden, rate_hz: LSTM(9, hidden),
    "lmu": lambda hidden, rate_hz: LMU(9, hidden, order=16, theta=rate_hz, activation="tanh"),  # a 1 s window
}


class LearnedAttitude(nn.Module):
    """AttitudeFilter, then a sequence layer of the zoo (`corrector`: GRU, LSTM or LMU) over
    [acc/g, gyr, filter gravity] emitting a sensor-frame rotation vector that corrects the filter's
    orientation: y (B, 4) = tilt_correct(q_filter, r)."""

    def __init__(self, rate_hz: float, hidden: int = 32, corrector: str = "gru", max_correction_deg: float = 5.0,
                 **filter_config):
        super().__init__()
        self.filter = AttitudeFilter(rate_hz, **filter_config)
        self.register_buffer("feature_scale", torch.tensor([1 / STANDARD_GRAVITY] * 3 + [1.0] * 6))
        self.net = CORRECTORS[corrector](hidden, rate_hz)
        self.correction = nn.Linear(hidden, 3)
        nn.init.zeros_(self.correction.weight)  # training starts from the filter alone
        nn.init.zeros_(self.correction.bias)
        self.max_correction = math.radians(max_correction_deg)

    def init_state(self, batch: int) -> dict:
        return {**{f"filter.{k}": v for k, v in self.filter.init_state(batch).items()},
                **{f"net.{k}": v for k, v in self.net.init_state(batch).items()}}

    @staticmethod
    def _part(state, prefix):
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

    def _correct(self, x, filtered, net_face, net_state):
        q, gravity = filtered[..., :4], filtered[..., 4:]
        features = torch.cat([x, gravity], -1) * self.feature_scale
        h, net_state = net_face(features, net_state)
        r = self.max_correction * torch.tanh(self.correction(h) / self.max_correction)
        return tilt_correct(q, r), net_state

    def forward(self, x, state=None, filtered=None):  # x: (B, T, 6) -> (B, T, 4)
        """`filtered`: the filter's outputs when already computed (training runs the filter once)."""
        state = state or self.init_state(x.shape[0])
        f_state = self._part(state, "filter.")
        if filtered is None:
            filtered, f_state = self.filter(x, f_state)
        y, n_state = self._correct(x, filtered, self.net.forward, self._part(state, "net."))
        return y, {**{f"filter.{k}": v for k, v in f_state.items()}, **{f"net.{k}": v for k, v in n_state.items()}}

    def step(self, x, state):  # x: (B, 6) -> (B, 4)
        filtered, f_state = self.filter.step(x, self._part(state, "filter."))
        y, n_state = self._correct(x, filtered, self.net.step, self._part(state, "net."))
        return y, {**{f"filter.{k}": v for k, v in f_state.items()}, **{f"net.{k}": v for k, v in n_state.items()}}
