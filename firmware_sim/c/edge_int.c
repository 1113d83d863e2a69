/* The integer step's kernels in C99: firmware_sim/intarith_kernels.py, operation for operation.
 * Accumulators of int8 x int16 products are int32 (the exporter proves every row's worst case
 * fits); products that scale them are int64, as in the reference. Float constants are written
 * as hex literals of the reference's float32 values. */
#include "edge_int.h"

typedef int64_t i64;

static i64 sat(i64 v, i64 lim) { return v > lim ? lim : (v < -lim - 1 ? -lim - 1 : v); }

/* v * 2^-s rounded half up (s > 0), or v * 2^-s exactly (s <= 0) */
static i64 shr(i64 v, int s) { return s > 0 ? (v + ((i64)1 << (s - 1))) >> s : v * ((i64)1 << -s); }

static i64 requant(i64 acc, i64 m, int s) { return (acc * m + ((i64)1 << (s - 1))) >> s; }

static i64 lut(const int16_t *W16, int table, i64 x) {
    i64 u = sat(x, 32767) + 32768;
    int i = (int)(u >> 7);
    i64 fr = u & 127;
    i64 a = W16[table + i];
    i64 b = W16[table + (i + 1 < EDGE_LUT_N - 1 ? i + 1 : EDGE_LUT_N - 1)];
    return a + (((b - a) * fr + 64) >> 7);
}

static i64 activate(const int16_t *W16, int code, i64 v, int f_in, int f_out, i64 qmax) {
    if (code == EDGE_ACT_TANH || code == EDGE_ACT_SIGMOID) {
        i64 y = lut(W16, code == EDGE_ACT_TANH ? EDGE_LUT_TANH : EDGE_LUT_SIGMOID, shr(v, f_in - 12));
        return sat(shr(y, 15 - f_out), qmax);
    }
    if (code == EDGE_ACT_GELU) {
        i64 x = sat(shr(v, f_in - 12), 32767);
        return sat(shr(shr(x * lut(W16, EDGE_LUT_PHI, x), 15), 12 - f_out), qmax);
    }
    if (code == EDGE_ACT_RELU && v < 0) return 0;
    return sat(shr(v, f_in - f_out), qmax);
}

static float pow2f(int f) { /* 2^f by repeated doubling or halving: exact, no libm */
    float s = 1.0f;
    for (; f > 0; f--) s *= 2.0f;
    for (; f < 0; f++) s *= 0.5f;
    return s;
}

void edge_quant(const float *wsf, int32_t *wsi, int src, int dst, int n, int f, int32_t qmax) {
    float scale = pow2f(f), lim = (float)qmax;
    for (int k = 0; k < n; k++) {
        float v = wsf[src + k] * scale;
        if (v >= lim) { wsi[dst + k] = qmax; continue; }
        if (v <= -lim - 1.0f) { wsi[dst + k] = -qmax - 1; continue; }
        int32_t t = (int32_t)v;
        float r = v - (float)t;
        if (r >= 0.5f) t += 1;
        else if (r <= -0.5f) t -= 1;
        wsi[dst + k] = t;
    }
}

void edge_dequant(const int32_t *wsi, float *wsf, int src, int dst, int n, int f) {
    float scale = pow2f(-f);
    for (int k = 0; k < n; k++) wsf[dst + k] = (float)wsi[src + k] * scale;
}

void edge_dense(int32_t *wsi, const int8_t *W8, const int16_t *W16, const int32_t *W32, int xin, int out, int I,
                int O, int w, int b, int mul, int sh, int act, int f_out, int idx, int32_t qmax) {
    int n = 0;
    if (idx >= 0)   /* a spike vector: list the active inputs once */
        for (int i = 0; i < I; i++)
            if (wsi[xin + i] != 0) wsi[idx + n++] = i;
    for (int o = 0; o < O; o++) {
        const int8_t *row = W8 + w + o * I;
        int32_t acc = W32[b + o];
        if (idx >= 0)
            for (int k = 0; k < n; k++) acc += row[wsi[idx + k]];
        else
            for (int i = 0; i < I; i++) acc += (int32_t)row[i] * wsi[xin + i];
        i64 v = requant(acc, W32[mul + o], W32[sh + o]);
        if (act == EDGE_ACT_TANH || act == EDGE_ACT_SIGMOID || act == EDGE_ACT_GELU) wsi[out + o] = (int32_t)activate(W16, act, v, 12, f_out, qmax);
        else wsi[out + o] = (int32_t)activate(W16, act, v, f_out, f_out, qmax);
    }
}

void edge_affine(int32_t *wsi, const int8_t *W8, const int32_t *W32, int xin, int out, int n, int w, int b, int mul,
                 int sh, int32_t qmax) {
    for (int k = 0; k < n; k++) {
        i64 acc = (i64)W8[w + k] * wsi[xin + k] + W32[b + k];
        wsi[out + k] = (int32_t)sat(requant(acc, W32[mul + k], W32[sh + k]), qmax);
    }
}

void edge_act(int32_t *wsi, const int16_t *W16, int src, int out, int n, int act, int f_in, int f_out, int32_t qmax) {
    for (int k = 0; k < n; k++) wsi[out + k] = (int32_t)activate(W16, act, wsi[src + k], f_in, f_out, qmax);
}

void edge_add(int32_t *wsi, int a, int b, int out, int n, int sa, int sb, int32_t qmax) {
    for (int k = 0; k < n; k++) wsi[out + k] = (int32_t)sat(shr(wsi[a + k], sa) + shr(wsi[b + k], sb), qmax);
}

void edge_shift(int32_t *wsi, int src, int dst, int n, int s, int32_t qmax) {
    for (int k = 0; k < n; k++) wsi[dst + k] = (int32_t)sat(shr(wsi[src + k], s), qmax);
}

void edge_lstm(int32_t *wsi, int32_t *si, const int8_t *W8, const int16_t *W16, const int32_t *W32, int xin,
               int out, int I, int H, int w, int b, int mx, int sx, int mh, int shh, int h, int c, int fc,
               int32_t slim, int tmp) {
    for (int o = 0; o < 4 * H; o++) {
        const int8_t *row = W8 + w + o * (I + H);
        int32_t ax = W32[b + o], ah = 0;
        for (int i = 0; i < I; i++) ax += (int32_t)row[i] * wsi[xin + i];
        for (int j = 0; j < H; j++) ah += (int32_t)row[I + j] * si[h + j];
        wsi[tmp + o] = (int32_t)(requant(ax, W32[mx + o], W32[sx + o]) + requant(ah, W32[mh + o], W32[shh + o]));
    }
    for (int j = 0; j < H; j++) {
        i64 ig = lut(W16, EDGE_LUT_SIGMOID, wsi[tmp + j]);
        i64 fg = lut(W16, EDGE_LUT_SIGMOID, wsi[tmp + H + j]);
        i64 gg = lut(W16, EDGE_LUT_TANH, wsi[tmp + 2 * H + j]);
        i64 og = lut(W16, EDGE_LUT_SIGMOID, wsi[tmp + 3 * H + j]);
        i64 cn = sat(shr(fg * si[c + j], 15) + shr(ig * gg, 30 - fc), slim);
        si[c + j] = (int32_t)cn;
        i64 hn = sat(shr(og * lut(W16, EDGE_LUT_TANH, shr(cn, fc - 12)), 15), 32767);
        si[h + j] = (int32_t)hn;
        wsi[out + j] = (int32_t)hn;
    }
}

void edge_gru(int32_t *wsi, int32_t *si, const int8_t *W8, const int16_t *W16, const int32_t *W32, int xin,
              int out, int I, int H, int wx, int bx, int mx, int sx, int wh, int bh, int mh, int shh, int h, int tmp) {
    for (int o = 0; o < 3 * H; o++) {
        int32_t ax = W32[bx + o], ah = W32[bh + o];
        for (int i = 0; i < I; i++) ax += (int32_t)W8[wx + o * I + i] * wsi[xin + i];
        for (int j = 0; j < H; j++) ah += (int32_t)W8[wh + o * H + j] * si[h + j];
        wsi[tmp + o] = (int32_t)requant(ax, W32[mx + o], W32[sx + o]);
        wsi[tmp + 3 * H + o] = (int32_t)requant(ah, W32[mh + o], W32[shh + o]);
    }
    for (int j = 0; j < H; j++) {
        i64 r = lut(W16, EDGE_LUT_SIGMOID, (i64)wsi[tmp + j] + wsi[tmp + 3 * H + j]);
        i64 z = lut(W16, EDGE_LUT_SIGMOID, (i64)wsi[tmp + H + j] + wsi[tmp + 4 * H + j]);
        i64 n = lut(W16, EDGE_LUT_TANH, wsi[tmp + 2 * H + j] + shr(r * wsi[tmp + 5 * H + j], 15));
        i64 hn = sat(shr((32768 - z) * n + z * si[h + j], 15), 32767);
        si[h + j] = (int32_t)hn;
        wsi[out + j] = (int32_t)hn;
    }
}

void edge_lmumem(int32_t *wsi, int32_t *si, const int16_t *W16, int u, int out, int ch, int d, int a, int fa,
                 int bb, int s_in, int m, int32_t slim, int s_out, int tmp, int32_t qmax) {
    for (int k = 0; k < ch; k++) {
        int mk = m + k * d;
        for (int i = 0; i < d; i++) {
            i64 acc = 0;
            for (int j = 0; j < d; j++) acc += (i64)W16[a + i * d + j] * si[mk + j];
            wsi[tmp + i] = (int32_t)sat(shr(acc, fa) + shr((i64)W16[bb + i] * wsi[u + k], s_in), slim);
        }
        for (int i = 0; i < d; i++) {
            si[mk + i] = wsi[tmp + i];
            wsi[out + k * d + i] = (int32_t)sat(shr(wsi[tmp + i], s_out), qmax);
        }
    }
}

void edge_lif(int32_t *wsi, int32_t *si, const int32_t *W32, int xin, int out, int n, int v, int k, int thr,
              int s_in, int32_t slim) {
    for (int j = 0; j < n; j++) {
        i64 vv = si[v + j];
        i64 hh = sat(vv + shr((shr(wsi[xin + j], s_in) - vv) * W32[k + j], 15), slim);
        int s = hh >= W32[thr + j];
        si[v + j] = s ? 0 : (int32_t)hh;
        wsi[out + j] = s;
    }
}

void edge_window(int32_t *wsi, int32_t *si, int xin, int buf, int cat, int I, int k) {
    for (int i = 0; i < I; i++) {
        for (int j = 0; j < k - 1; j++) wsi[cat + i * k + j] = si[buf + i * (k - 1) + j];
        wsi[cat + i * k + k - 1] = wsi[xin + i];
        for (int j = 0; j < k - 1; j++) si[buf + i * (k - 1) + j] = wsi[cat + i * k + j + 1];
    }
}

static i64 div_round(i64 a, i64 b) {
    i64 q = (2 * (a < 0 ? -a : a) + b) / (2 * b);
    return a < 0 ? -q : q;
}

/* an int64 in two state words: si[hi] the high 32 bits (signed), si[lo] the low 32 */
static i64 get64(const int32_t *si, int lo, int hi) { return (i64)si[hi] * 4294967296LL + (i64)(uint32_t)si[lo]; }

static void put64(int32_t *si, int lo, int hi, i64 v) {
    i64 top = v >> 32;                               /* floor (arithmetic shift) */
    si[hi] = (int32_t)top;
    si[lo] = (int32_t)(uint32_t)(v - top * 4294967296LL);
}

void edge_rmean(int32_t *wsi, int32_t *si, int xin, int out, int n, int sm, int cnt, int s_out, int32_t qmax) {
    i64 c = get64(si, cnt, cnt + 1) + 1;             /* int64 count and sums: exact */
    put64(si, cnt, cnt + 1, c);
    for (int j = 0; j < n; j++) {
        i64 v = get64(si, sm + j, sm + n + j) + wsi[xin + j];
        put64(si, sm + j, sm + n + j, v);
        wsi[out + j] = (int32_t)sat(shr(div_round(v, c), s_out), qmax);
    }
}

void edge_softmax(int32_t *wsi, const int16_t *W16, int xin, int out, int n, int f_in) {
    int32_t mx = wsi[xin];
    for (int j = 1; j < n; j++) if (wsi[xin + j] > mx) mx = wsi[xin + j];
    i64 total = 0;
    for (int j = 0; j < n; j++) {
        i64 e = lut(W16, EDGE_LUT_EXP, shr((i64)wsi[xin + j] - mx, f_in - 12));
        wsi[out + j] = (int32_t)e;
        total += e;
    }
    for (int j = 0; j < n; j++) wsi[out + j] = (int32_t)(((i64)wsi[out + j] << 15) / total);
}

/* ---- float32 geometry (attitude filter, tilt correction) without libm ----------------------- */
#define ONE 1.0f
#define TWO 2.0f
#define HALF 0.5f
#define EPS12 0x1.197998p-40f
#define EPS24 0x1.357c2ap-80f

typedef struct { float w, x, y, z; } quat;
typedef struct { float x, y, z; } vec3;

static float clamp_min(float v, float m) { return v < m ? m : v; }
static float norm3(float a, float b, float c) { return __builtin_sqrtf(__builtin_fmaf(c, c, __builtin_fmaf(b, b, a * a))); }
static float norm4(float a, float b, float c, float d) { return __builtin_sqrtf(a * a + b * b + c * c + d * d); }

static quat quat_mul(quat a, quat b) {
    quat r = {a.w * b.w - a.x * b.x - a.y * b.y - a.z * b.z,
              a.w * b.x + a.x * b.w + a.y * b.z - a.z * b.y,
              a.w * b.y - a.x * b.z + a.y * b.w + a.z * b.x,
              a.w * b.z + a.x * b.y - a.y * b.x + a.z * b.w};
    return r;
}

static vec3 quat_rotate(quat q, vec3 v) {
    float w = q.w, x = q.x, y = q.y, z = q.z;
    vec3 r = {(ONE - TWO * (y * y + z * z)) * v.x + TWO * (x * y - w * z) * v.y + TWO * (x * z + w * y) * v.z,
              TWO * (x * y + w * z) * v.x + (ONE - TWO * (x * x + z * z)) * v.y + TWO * (y * z - w * x) * v.z,
              TWO * (x * z - w * y) * v.x + TWO * (y * z + w * x) * v.y + (ONE - TWO * (x * x + y * y)) * v.z};
    return r;
}

static quat quat_conj(quat q) { quat r = {q.w, -q.x, -q.y, -q.z}; return r; }

/* Cephes single precision: octant and the three-part pi/4 reduction */
static int reduce(float x, float *z) {
    int j = (int32_t)(0x1.45f306p+0f * x);
    float y = (float)j;
    if (j & 1) { j += 1; y += ONE; }
    j &= 7;
    *z = ((x - y * 0x1.92p-1f) - y * 0x1.fb4p-13f) - y * 0x1.4442d2p-25f;
    return j;
}
static float sin_poly(float z) {
    float zz = z * z;
    return ((-0x1.9943f2p-13f * zz + 0x1.11073cp-7f) * zz + -0x1.555546p-3f) * zz * z + z;
}
static float cos_poly(float z) {
    float zz = z * z;
    return ((0x1.99eb9cp-16f * zz + -0x1.6c0c34p-10f) * zz + 0x1.55554ap-5f) * zz * zz - HALF * zz + ONE;
}
static float sin32(float x) {
    int neg = x < 0.0f;
    float z;
    int j = reduce(neg ? -x : x, &z);
    if (j > 3) { neg = !neg; j -= 4; }
    float y = (j == 1 || j == 2) ? cos_poly(z) : sin_poly(z);
    return neg ? -y : y;
}
static float cos32(float x) {
    float z;
    int j = reduce(x < 0.0f ? -x : x, &z);
    int neg = 0;
    if (j > 3) { neg = 1; j -= 4; }
    if (j > 1) neg = !neg;
    float y = (j == 1 || j == 2) ? sin_poly(z) : cos_poly(z);
    return neg ? -y : y;
}
static float atan32(float x) {
    int neg = x < 0.0f;
    float a = neg ? -x : x, y;
    if (a > 0x1.3504f4p+1f) { y = 0x1.921fb6p+0f; a = -(ONE / a); }
    else if (a > 0x1.a8279ap-2f) { y = 0x1.921fb6p-1f; a = (a - ONE) / (a + ONE); }
    else y = 0.0f;
    float z = a * a;
    y = y + ((((0x1.49e1a2p-4f * z + -0x1.1c370ap-3f) * z + 0x1.9924bep-3f) * z + -0x1.555454p-2f) * z * a + a);
    return neg ? -y : y;
}
static float atan2_32(float y, float x) {
    if (x > 0.0f) return atan32(y / x);
    if (x < 0.0f) return atan32(y / x) + (y >= 0.0f ? 0x1.921fb6p+1f : -0x1.921fb6p+1f);
    return y > 0.0f ? 0x1.921fb6p+0f : (y < 0.0f ? -0x1.921fb6p+0f : 0.0f);
}

static quat quat_exp32(vec3 r) {
    float angle = norm3(r.x, r.y, r.z);
    float half = angle / TWO;
    float f = sin32(half) / clamp_min(angle, EPS12);
    quat q = {cos32(half), r.x * f, r.y * f, r.z * f};
    return q;
}

static quat level_to_up(vec3 n) {
    float c = __builtin_sqrtf(clamp_min((ONE + n.z) / TWO, EPS12));
    float c2 = TWO * c;
    quat q = {c, n.y / c2, -n.x / c2, 0.0f};
    return q;
}

static vec3 unit3(vec3 v) {
    float m = clamp_min(norm3(v.x, v.y, v.z), EPS12);
    vec3 r = {v.x / m, v.y / m, v.z / m};
    return r;
}

static vec3 lerp3(vec3 s, float k, vec3 v) {
    vec3 r = {s.x + k * (v.x - s.x), s.y + k * (v.y - s.y), s.z + k * (v.z - s.z)};
    return r;
}

static vec3 get3(const float *p) { vec3 v = {p[0], p[1], p[2]}; return v; }
static void put3(float *p, vec3 v) { p[0] = v.x; p[1] = v.y; p[2] = v.z; }

/* state words from st: q 4, bias x1 x2 y1 y2 gyr_lp acc_lp (3 each), rest, started */
void edge_attitude(float *wsf, float *sf, const float *WF, int xin, int qo, int go, int cst, int st) {
    const float *X = wsf + xin, *C = WF + cst;
    float *S = sf + st, *B = S + 4;
    float dt = C[0], b0 = C[1], b1 = C[2], b2 = C[3], a1 = C[4], a2 = C[5];
    float k_rest = C[6], k_bias_rest = C[7], rest_gyr = C[8], rest_acc = C[9], rest_time = C[10], k_bias = C[11];
    float rest_gyr3 = C[12];
    vec3 acc = {X[0], X[1], X[2]}, gyr = {X[3], X[4], X[5]};
    quat q;
    vec3 x1, x2, y1, y2, acc_lp;
    if (S[26] < HALF) {
        q = level_to_up(unit3(acc));
        vec3 a_up = quat_rotate(q, acc);
        x1 = x2 = y1 = y2 = a_up;
        acc_lp = acc;
    } else {
        q.w = S[0]; q.x = S[1]; q.y = S[2]; q.z = S[3];
        x1 = get3(B + 3); x2 = get3(B + 6); y1 = get3(B + 9); y2 = get3(B + 12); acc_lp = get3(B + 18);
    }
    vec3 bias = get3(B);
    vec3 gyr_lp = lerp3(get3(B + 15), k_rest, gyr);
    acc_lp = lerp3(acc_lp, k_rest, acc);
    int still = (norm3(gyr_lp.x - bias.x, gyr_lp.y - bias.y, gyr_lp.z - bias.z) < rest_gyr)
              & (norm3(acc.x - acc_lp.x, acc.y - acc_lp.y, acc.z - acc_lp.z) < rest_acc)
              & (norm3(gyr.x - gyr_lp.x, gyr.y - gyr_lp.y, gyr.z - gyr_lp.z) < rest_gyr3);
    float rest = still ? S[25] + dt : 0.0f;
    if (rest > rest_time) bias = lerp3(bias, k_bias_rest, gyr_lp);
    vec3 rot = {(gyr.x - bias.x) * dt, (gyr.y - bias.y) * dt, (gyr.z - bias.z) * dt};
    q = quat_mul(q, quat_exp32(rot));
    float m = norm4(q.w, q.x, q.y, q.z);
    q.w = q.w / m; q.x = q.x / m; q.y = q.y / m; q.z = q.z / m;
    vec3 ae = quat_rotate(q, acc);
    vec3 y = {b0 * ae.x + b1 * x1.x + b2 * x2.x - a1 * y1.x - a2 * y2.x,
              b0 * ae.y + b1 * x1.y + b2 * x2.y - a1 * y1.y - a2 * y2.y,
              b0 * ae.z + b1 * x1.z + b2 * x2.z - a1 * y1.z - a2 * y2.z};
    x2 = x1; x1 = ae; y2 = y1; y1 = y;
    vec3 n = unit3(y);
    quat d = level_to_up(n);
    q = quat_mul(d, q);
    x1 = quat_rotate(d, x1); x2 = quat_rotate(d, x2); y1 = quat_rotate(d, y1); y2 = quat_rotate(d, y2);
    float horizontal = __builtin_sqrtf(clamp_min(n.x * n.x + n.y * n.y, EPS24));
    float aps = atan2_32(horizontal, n.z) / horizontal;
    quat qc = quat_conj(q);
    vec3 tilt = {n.y * aps, -n.x * aps, 0.0f * aps};
    vec3 corr = quat_rotate(qc, tilt);
    bias.x = bias.x - k_bias * corr.x; bias.y = bias.y - k_bias * corr.y; bias.z = bias.z - k_bias * corr.z;
    vec3 up = {0.0f, 0.0f, ONE};
    vec3 grav = quat_rotate(qc, up);
    wsf[qo] = S[0] = q.w; wsf[qo + 1] = S[1] = q.x; wsf[qo + 2] = S[2] = q.y; wsf[qo + 3] = S[3] = q.z;
    put3(wsf + go, grav);
    put3(B, bias); put3(B + 3, x1); put3(B + 6, x2); put3(B + 9, y1); put3(B + 12, y2);
    put3(B + 15, gyr_lp); put3(B + 18, acc_lp);
    S[25] = rest;
    S[26] = ONE;
}

void edge_tilt(float *wsf, int qi, int ri, int out) {
    quat q = {wsf[qi], wsf[qi + 1], wsf[qi + 2], wsf[qi + 3]};
    vec3 r = {wsf[ri], wsf[ri + 1], wsf[ri + 2]};
    q = quat_mul(q, quat_exp32(r));
    float m = norm4(q.w, q.x, q.y, q.z);
    wsf[out] = q.w / m; wsf[out + 1] = q.x / m; wsf[out + 2] = q.y / m; wsf[out + 3] = q.z / m;
}
