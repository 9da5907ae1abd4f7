/* Winograd F(MxMxM, 3x3x3) dilated 3D convolution for MeshNet's wide layers, fp32, channels-last, batch 1.
 *
 * A direct 3x3x3 convolution spends 27 multiply-adds per output voxel and channel pair. Winograd's
 * F(M,3) algorithm, applied along each axis, computes an M^3 block of outputs from an N^3 = (M+2)^3 block
 * of inputs with N^3 multiply-adds per channel pair: 8 per output for M = 2 (3.4x fewer than direct),
 * 3.4 for M = 4 (8x fewer), at the cost of additions that transform the inputs and outputs (and, for
 * M = 4, a larger rounding error). A dilated convolution is an ordinary one on each of the dil^3
 * interleaved sub-grids, so a "tile" here is the outputs base + dil * {0..M-1}^3 and reads the inputs
 * base + dil * {-1..M}^3 (zero outside the volume: 'same' padding of dil voxels).
 *
 * Per chunk of T tiles along x: gather and transform the inputs (U: P x T x CIP, P = N^3 positions),
 * multiply by the transformed weights for each position (a T x CI by CI x COP product kept in registers,
 * products: P x T x COP), transform back, add the bias, apply the activation (if any), store, and add the stored
 * values and their squares to per-channel sums when asked (GroupNorm's statistics, without another pass).
 * `affine_act` then applies a per-channel scale and shift and an activation in one pass (a norm's output).
 *
 * Compile-time constants: M (outputs per tile and axis: 2 or 4), CI (input channels), CIP (input channels
 * stored per voxel), COP (output channels stored per voxel: a multiple of VL, extra channels get zero
 * weights), T (tiles per chunk), R (tiles per register block; divides T).
 *
 * in:      D x H x W x CIP          wt: P x CI x COP (G w G^T along each axis)        bias: COP
 * out:     D x H x W x COP          tiles whose z-base index is in [zb_begin, zb_end) are written
 * act:     0 none, 1 ReLU, 2 ELU (alpha), 3 GELU (erf form)      sums: NULL or 2 x COP doubles (sum, squares)
 * exp and erf are polynomial approximations (relative error ~1e-7, absolute error of erf 1.5e-7).
 */
#include <stdlib.h>
#include <string.h>

#include "vectors.h"

#define NVO (COP / VL)
#ifndef M
#define M 2
#endif
#define N (M + 2)
#define P (N * N * N)

/* B^T (inputs) and A^T (outputs) of F(M,3) for correlation, interpolation points 0, 1, -1 (and 2, -2). */
#if M == 2
static const float BT[N][N] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
static const float AT[M][N] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
#elif M == 4
static const float BT[N][N] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                               {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
static const float AT[M][N] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
#else
#error "M must be 2 or 4"
#endif

typedef int ivec __attribute__((vector_size(VL * sizeof(int))));

/* exp(x): x = n ln2 + r with |r| <= ln2 / 2, exp(r) by its degree-6 Taylor polynomial, 2^n by the exponent bits. */
static inline vec vexp(vec x)
{
    x = blend(x < -87.0f, splat(-87.0f), x);
    x = blend(x > 88.0f, splat(88.0f), x);
    const vec t = x * 1.44269504088896341f;
    const ivec n = __builtin_convertvector(t + blend(t >= 0, splat(0.5f), splat(-0.5f)), ivec);
    const vec nf = __builtin_convertvector(n, vec);
    const vec r = x - nf * 0.693145751953125f - nf * 1.428606765330187e-06f;
    vec p = splat(1.0f / 720);
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    return p * (vec)((n + 127) << 23);
}

/* erf(x), Abramowitz and Stegun 7.1.26. */
static inline vec verf(vec x)
{
    const vec a = blend(x < 0, -x, x);
    const vec t = 1.0f / (1.0f + 0.3275911f * a);
    vec p = splat(1.061405429f);
    p = p * t - 1.453152027f;
    p = p * t + 1.421413741f;
    p = p * t - 0.284496736f;
    p = p * t + 0.254829592f;
    const vec y = 1.0f - p * t * vexp(-a * a);
    return blend(x < 0, -y, y);
}

static inline vec activate(vec r, int act, float alpha)
{
    switch (act) {
    case 1:
        return (vec)((mask)r & (r > 0));
    case 2:
        return blend(r > 0, r, alpha * (vexp(r) - 1.0f));
    case 3:
        return 0.5f * r * (1.0f + verf(r * 0.70710678118654752f));
    default:
        return r;
    }
}

/* The i-th z (or y, x) base: bases are the coordinates b with b mod (M * dil) < dil. */
static inline int base_of(int index, int dil) { return index / dil * M * dil + index % dil; }

static int bases(int size, int dil)
{
    const int period = M * dil, rest = size % period;
    return size / period * dil + (rest < dil ? rest : dil);
}

static inline int inside(int z, int y, int x, int depth, int height, int width)
{
    return z >= 0 && z < depth && y >= 0 && y < height && x >= 0 && x < width;
}

/* Gather one tile's N^3 inputs (CIP floats each) and transform them along x, y and z into U. The transforms
 * run on K floats at a time (a vector when CIP is a multiple of VL, else one channel), unrolled so that the
 * constant zeros and ones of B^T cost nothing. */
#if CIP % VL == 0
#define K VL
#define NK (CIP / VL)
typedef vec lane;
static inline lane lane_load(const float *p) { return load(p); }
static inline void lane_store(float *p, lane v) { store(p, v); }
#else
#define K 1
#define NK CIP
typedef float lane;
static inline lane lane_load(const float *p) { return *p; }
static inline void lane_store(float *p, lane v) { *p = v; }
#endif

static void gather_tile(const float *in, float *u, int z0, int y0, int x0, int depth, int height, int width, int dil)
{
    lane xt[N][N][N][NK]; /* [z][y][x'] after the x transform */
    for (int i = 0; i < N; ++i) {
        const int z = z0 + (i - 1) * dil;
        for (int j = 0; j < N; ++j) {
            const int y = y0 + (j - 1) * dil;
            lane d[N][NK];
#pragma GCC unroll 8
            for (int k = 0; k < N; ++k) {
                const int x = x0 + (k - 1) * dil;
                const float *src = in + (((size_t)z * height + y) * width + x) * CIP;
                const int ok = inside(z, y, x, depth, height, width);
                for (int v = 0; v < NK; ++v)
                    d[k][v] = ok ? lane_load(src + v * K) : (lane){0};
            }
            for (int v = 0; v < NK; ++v)
#pragma GCC unroll 8
                for (int a = 0; a < N; ++a) {
                    lane s = (lane){0};
#pragma GCC unroll 8
                    for (int k = 0; k < N; ++k)
                        if (BT[a][k] != 0)
                            s += BT[a][k] * d[k][v];
                    xt[i][j][a][v] = s;
                }
        }
    }
    lane yt[N][N][N][NK]; /* [z][y'][x'] */
    for (int i = 0; i < N; ++i)
        for (int a = 0; a < N; ++a)
            for (int v = 0; v < NK; ++v)
#pragma GCC unroll 8
                for (int b = 0; b < N; ++b) {
                    lane s = (lane){0};
#pragma GCC unroll 8
                    for (int j = 0; j < N; ++j)
                        if (BT[b][j] != 0)
                            s += BT[b][j] * xt[i][j][a][v];
                    yt[i][b][a][v] = s;
                }
    for (int b = 0; b < N; ++b)
        for (int a = 0; a < N; ++a)
            for (int v = 0; v < NK; ++v)
#pragma GCC unroll 8
                for (int c = 0; c < N; ++c) {
                    lane s = (lane){0};
#pragma GCC unroll 8
                    for (int i = 0; i < N; ++i)
                        if (BT[c][i] != 0)
                            s += BT[c][i] * yt[i][b][a][v];
                    lane_store(u + (size_t)((c * N + b) * N + a) * T * CIP + v * K, s);
                }
}

/* products[p] = U[p] (T x CI) @ W[p] (CI x COP) for the P positions, R tiles x COP channels in registers. */
static void multiply(const float *u, const float *wt, float *m)
{
    for (int p = 0; p < P; ++p) {
        const float *up = u + (size_t)p * T * CIP, *wp = wt + (size_t)p * CI * COP;
        float *mp = m + (size_t)p * T * COP;
        for (int t = 0; t < T; t += R) {
            vec acc[R][NVO];
            for (int r = 0; r < R; ++r)
                for (int v = 0; v < NVO; ++v)
                    acc[r][v] = (vec){0};
            for (int k = 0; k < CI; ++k) {
                vec w[NVO];
                for (int v = 0; v < NVO; ++v)
                    w[v] = load(wp + k * COP + v * VL);
                for (int r = 0; r < R; ++r) {
                    const vec a = splat(up[(t + r) * CIP + k]);
                    for (int v = 0; v < NVO; ++v)
                        acc[r][v] += a * w[v];
                }
            }
            for (int r = 0; r < R; ++r)
                for (int v = 0; v < NVO; ++v)
                    store(mp + (t + r) * COP + v * VL, acc[r][v]);
        }
    }
}

/* Transform one tile's products back to M^3 outputs, add the bias, activate, store, and add to the sums. */
static void scatter_tile(const float *m, const float *bias, float *out, int z0, int y0, int x0, int depth,
                         int height, int width, int dil, int act, float alpha, vec *sum, vec *squares)
{
    vec xt[N][N][M][NVO]; /* [z][y][x'] */
    for (int i = 0; i < N; ++i)
        for (int j = 0; j < N; ++j) {
            const float *row = m + (size_t)((i * N + j) * N) * T * COP;
            for (int v = 0; v < NVO; ++v)
#pragma GCC unroll 4
                for (int a = 0; a < M; ++a) {
                    vec s = (vec){0};
#pragma GCC unroll 8
                    for (int k = 0; k < N; ++k)
                        if (AT[a][k] != 0)
                            s += AT[a][k] * load(row + (size_t)k * T * COP + v * VL);
                    xt[i][j][a][v] = s;
                }
        }
    vec yt[N][M][M][NVO]; /* [z][y'][x'] */
    for (int i = 0; i < N; ++i)
        for (int a = 0; a < M; ++a)
            for (int v = 0; v < NVO; ++v)
#pragma GCC unroll 4
                for (int b = 0; b < M; ++b) {
                    vec s = (vec){0};
#pragma GCC unroll 8
                    for (int j = 0; j < N; ++j)
                        if (AT[b][j] != 0)
                            s += AT[b][j] * xt[i][j][a][v];
                    yt[i][b][a][v] = s;
                }
    for (int c = 0; c < M; ++c) {
        const int z = z0 + c * dil;
        for (int b = 0; b < M; ++b) {
            const int y = y0 + b * dil;
            for (int a = 0; a < M; ++a) {
                const int x = x0 + a * dil;
                if (z >= depth || y >= height || x >= width)
                    continue;
                float *dst = out + (((size_t)z * height + y) * width + x) * COP;
                for (int v = 0; v < NVO; ++v) {
                    vec s = load(bias + v * VL);
#pragma GCC unroll 8
                    for (int i = 0; i < N; ++i)
                        if (AT[c][i] != 0)
                            s += AT[c][i] * yt[i][b][a][v];
                    const vec r = activate(s, act, alpha);
                    store(dst + v * VL, r);
                    sum[v] += r;
                    squares[v] += r * r;
                }
            }
        }
    }
}

void winograd_conv3d(const float *in, const float *wt, const float *bias, float *out, int depth, int height,
                     int width, int dil, int act, float alpha, double *sums, int zb_begin, int zb_end)
{
    float *u = aligned_alloc(64, (size_t)P * T * CIP * sizeof(float) + 64);
    float *m = aligned_alloc(64, (size_t)P * T * COP * sizeof(float) + 64);
    const int ny = bases(height, dil), nx = bases(width, dil);
    int xs[T];
    for (int zb = zb_begin; zb < zb_end; ++zb) {
        const int z0 = base_of(zb, dil);
        for (int yb = 0; yb < ny; ++yb) {
            const int y0 = base_of(yb, dil);
            vec sum[NVO], squares[NVO]; /* one row of tiles at a time in float, then added in double */
            for (int v = 0; v < NVO; ++v)
                sum[v] = squares[v] = (vec){0};
            for (int xb = 0; xb < nx; xb += T) {
                const int count = nx - xb < T ? nx - xb : T;
                for (int t = 0; t < T; ++t) {
                    /* a short last chunk repeats its last tile: the extra results are never stored */
                    xs[t] = base_of(xb + (t < count ? t : count - 1), dil);
                    gather_tile(in, u + (size_t)t * CIP, z0, y0, xs[t], depth, height, width, dil);
                }
                multiply(u, wt, m);
                for (int t = 0; t < count; ++t)
                    scatter_tile(m + (size_t)t * COP, bias, out, z0, y0, xs[t], depth, height, width, dil, act, alpha,
                                 sum, squares);
            }
            if (sums)
                for (int v = 0; v < NVO; ++v)
                    for (int i = 0; i < VL; ++i) {
                        sums[v * VL + i] += sum[v][i];
                        sums[COP + v * VL + i] += squares[v][i];
                    }
        }
    }
    free(u);
    free(m);
}

int winograd_z_bases(int depth, int dil) { return bases(depth, dil); }

/* values[n] = act(values[n] * scale + shift) for voxels n in [begin, end) of a channels-last COP buffer. */
void affine_act(float *values, const float *scale, const float *shift, int act, float alpha, long begin, long end)
{
    for (long n = begin; n < end; ++n)
        for (int v = 0; v < NVO; ++v) {
            float *p = values + n * COP + v * VL;
            store(p, activate(load(p) * load(scale + v * VL) + load(shift + v * VL), act, alpha));
        }
}
