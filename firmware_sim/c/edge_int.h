/* Kernels of the integer step: the C99 twin of firmware_sim/intarith_kernels.py, operation for
 * operation (number formats: see that module's docstring). No malloc, no libm: build with
 * -ffp-contract=off -fno-math-errno so that float32 code rounds exactly like the reference. */
#ifndef EDGE_INT_H
#define EDGE_INT_H
#include <stdint.h>

#define EDGE_LUT_N 513
#define EDGE_LUT_TANH 0
#define EDGE_LUT_SIGMOID EDGE_LUT_N
#define EDGE_LUT_PHI (2 * EDGE_LUT_N)
#define EDGE_LUT_EXP (3 * EDGE_LUT_N)
enum { EDGE_ACT_IDENTITY, EDGE_ACT_RELU, EDGE_ACT_TANH, EDGE_ACT_SIGMOID, EDGE_ACT_GELU };

void edge_quant(const float *wsf, int32_t *wsi, int src, int dst, int n, int f, int32_t qmax);
void edge_dequant(const int32_t *wsi, float *wsf, int src, int dst, int n, int f);
void edge_dense(int32_t *wsi, const int8_t *W8, const int16_t *W16, const int32_t *W32, int xin, int out, int I,
                int O, int w, int b, int mul, int sh, int act, int f_out, int idx, int32_t qmax);
void edge_affine(int32_t *wsi, const int8_t *W8, const int32_t *W32, int xin, int out, int n, int w, int b, int mul,
                 int sh, int32_t qmax);
void edge_act(int32_t *wsi, const int16_t *W16, int src, int out, int n, int act, int f_in, int f_out, int32_t qmax);
void edge_add(int32_t *wsi, int a, int b, int out, int n, int sa, int sb, int32_t qmax);
void edge_shift(int32_t *wsi, int src, int dst, int n, int s, int32_t qmax);
void edge_lstm(int32_t *wsi, int32_t *si, const int8_t *W8, const int16_t *W16, const int32_t *W32, int xin,
               int out, int I, int H, int w, int b, int mx, int sx, int mh, int shh, int h, int c, int fc,
               int32_t slim, int tmp);
void edge_gru(int32_t *wsi, int32_t *si, const int8_t *W8, const int16_t *W16, const int32_t *W32, int xin,
              int out, int I, int H, int wx, int bx, int mx, int sx, int wh, int bh, int mh, int shh, int h, int tmp);
void edge_lmumem(int32_t *wsi, int32_t *si, const int16_t *W16, int u, int out, int ch, int d, int a, int fa,
                 int bb, int s_in, int m, int32_t slim, int s_out, int tmp, int32_t qmax);
void edge_lif(int32_t *wsi, int32_t *si, const int32_t *W32, int xin, int out, int n, int v, int k, int thr,
              int s_in, int32_t slim);
void edge_window(int32_t *wsi, int32_t *si, int xin, int buf, int cat, int I, int k);
void edge_rmean(int32_t *wsi, int32_t *si, int xin, int out, int n, int sm, int cnt, int s_out, int32_t qmax);
void edge_softmax(int32_t *wsi, const int16_t *W16, int xin, int out, int n, int f_in);
void edge_attitude(float *wsf, float *sf, const float *WF, int xin, int qo, int go, int cst, int st);
void edge_tilt(float *wsf, int qi, int ri, int out);

#endif
