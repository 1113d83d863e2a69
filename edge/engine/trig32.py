"""float32 sin, cos and atan2 without libm: the Cephes single-precision polynomials, written out so
that C compiled with ``-ffp-contract=off`` (firmware_sim/c/edge_int.c) computes the same bits on any
IEEE float32 machine. The engine uses libm; the integer reference and its C use these."""
import numpy as np
from numba import njit

F32 = np.float32
_ZERO, _ONE, _HALF = F32(0.0), F32(1.0), F32(0.5)
_FOPI = F32(1.27323954473516)
_DP1, _DP2, _DP3 = F32(0.78515625), F32(2.4187564849853515625e-4), F32(3.77489497744594108e-8)
_S1, _S2, _S3 = F32(-1.9515295891e-4), F32(8.3321608736e-3), F32(-1.6666654611e-1)
_C1, _C2, _C3 = F32(2.443315711809948e-5), F32(-1.388731625493765e-3), F32(4.166664568298827e-2)
_T1, _T2, _T3, _T4 = F32(8.05374449538e-2), F32(-1.38776856032e-1), F32(1.99777106478e-1), F32(-3.33329491539e-1)
_PIO2, _PIO4, _PI = F32(1.5707963267948966), F32(0.7853981633974483), F32(3.141592653589793)
_TAN3PI8, _TANPI8 = F32(2.414213562373095), F32(0.4142135623730950)


@njit(cache=True)
def _reduce(x):
    """Cephes: x ≥ 0 -> octant j (0..7) and z = x − j·π/4 (three-part π/4)."""
    j = np.int32(_FOPI * x)
    y = F32(j)
    if j & 1:
        j += 1
        y += _ONE
    j = j & 7
    z = ((x - y * _DP1) - y * _DP2) - y * _DP3
    return j, z


@njit(cache=True)
def _sin_poly(z):
    zz = z * z
    return ((_S1 * zz + _S2) * zz + _S3) * zz * z + z


@njit(cache=True)
def _cos_poly(z):
    zz = z * z
    return ((_C1 * zz + _C2) * zz + _C3) * zz * zz - _HALF * zz + _ONE


@njit(cache=True)
def sin32(x):
    neg = x < _ZERO
    j, z = _reduce(-x if neg else x)
    if j > 3:
        neg = not neg
        j -= 4
    y = _cos_poly(z) if (j == 1 or j == 2) else _sin_poly(z)
    return -y if neg else y


@njit(cache=True)
def cos32(x):
    j, z = _reduce(-x if x < _ZERO else x)
    neg = False
    if j > 3:
        neg = True
        j -= 4
    if j > 1:
        neg = not neg
    y = _sin_poly(z) if (j == 1 or j == 2) else _cos_poly(z)
    return -y if neg else y


@njit(cache=True)
def atan32(x):
    neg = x < _ZERO
    a = -x if neg else x
    if a > _TAN3PI8:
        y = _PIO2
        a = -(_ONE / a)
    elif a > _TANPI8:
        y = _PIO4
        a = (a - _ONE) / (a + _ONE)
    else:
        y = _ZERO
    z = a * a
    y = y + ((((_T1 * z + _T2) * z + _T3) * z + _T4) * z * a + a)
    return -y if neg else y


@njit(cache=True)
def atan2_32(y, x):
    if x > _ZERO:
        return atan32(y / x)
    if x < _ZERO:
        return atan32(y / x) + (_PI if y >= _ZERO else -_PI)
    return _PIO2 if y > _ZERO else (-_PIO2 if y < _ZERO else _ZERO)
