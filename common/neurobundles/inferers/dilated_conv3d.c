/* Direct dilated 3x3x3 convolution for few channels (MeshNet's layers), fp32, NCDHW, batch 1.
 *
 * oneDNN blocks 3D convolutions over channels, which wastes most of each SIMD register when a
 * layer has 5 to 30 channels. This kernel vectorises over the contiguous x axis instead and keeps
 * a block of COB output channels in registers, so every loaded input vector feeds COB fused
 * multiply-adds. CI, CO and COB are compile-time constants (-DCI=.. -DCO=.. -DCOB=..): the Python
 * side builds one shared library per layer shape and caches it.
 *
 * in:     CI x D x H x W           weight: CO x CI x 27 (kd, kh, kw)      bias: CO
 * out:    CO x D x H x W           rows z in [z_begin, z_end) are written (callers split z across threads)
 * relu:   1 applies max(0, .) after the bias.
 * Zero padding of `dil` voxels on every side keeps the grid (padding = dilation, as in MeshNet).
 */
#include <stddef.h>
#include <string.h>

#ifndef VL
#define VL 16 /* lanes per vector: 16 (AVX-512); the Python side passes 8 on CPUs without AVX-512 */
#endif
typedef float vec __attribute__((vector_size(VL * sizeof(float))));
typedef int mask __attribute__((vector_size(VL * sizeof(int))));

static inline vec load_row(const float *row, int x, int width)
{
    vec v;
    if (x >= 0 && x + VL <= width) {
        memcpy(&v, row + x, sizeof v);
        return v;
    }
    if (x + VL <= 0 || x >= width)
        return (vec){0};
    float lanes[VL];
    for (int i = 0; i < VL; ++i)
        lanes[i] = (x + i >= 0 && x + i < width) ? row[x + i] : 0.0f;
    memcpy(&v, lanes, sizeof v);
    return v;
}

static inline void store_row(float *row, int x, int width, vec v)
{
    if (x + VL <= width) {
        memcpy(row + x, &v, sizeof v);
        return;
    }
    float lanes[VL];
    memcpy(lanes, &v, sizeof v);
    for (int i = 0; x + i < width; ++i)
        row[x + i] = lanes[i];
}

void dilated_conv3d(const float *in, const float *weight, const float *bias, float *out,
                    int depth, int height, int width, int dil, int relu, int z_begin, int z_end)
{
    const size_t plane = (size_t)height * width;
    const size_t volume = plane * depth;
    for (int z = z_begin; z < z_end; ++z) {
        for (int y = 0; y < height; ++y) {
            for (int x = 0; x < width; x += VL) {
                for (int cob = 0; cob < CO; cob += COB) {
                    vec acc[COB];
                    for (int c = 0; c < COB; ++c)
                        acc[c] = (vec){0} + bias[cob + c];
                    for (int ci = 0; ci < CI; ++ci) {
                        for (int kd = 0; kd < 3; ++kd) {
                            const int zz = z + (kd - 1) * dil;
                            if (zz < 0 || zz >= depth)
                                continue;
                            for (int kh = 0; kh < 3; ++kh) {
                                const int yy = y + (kh - 1) * dil;
                                if (yy < 0 || yy >= height)
                                    continue;
                                const float *row = in + ci * volume + zz * plane + (size_t)yy * width;
                                const float *w = weight + ((size_t)cob * CI + ci) * 27 + kd * 9 + kh * 3;
                                for (int kw = 0; kw < 3; ++kw) {
                                    const vec v = load_row(row, x + (kw - 1) * dil, width);
                                    for (int c = 0; c < COB; ++c)
                                        acc[c] += v * w[(size_t)c * CI * 27 + kw];
                                }
                            }
                        }
                    }
                    for (int c = 0; c < COB; ++c) {
                        vec r = acc[c];
                        if (relu)
                            r = (vec)((mask)r & (r > 0));
                        store_row(out + (size_t)(cob + c) * volume + z * plane + (size_t)y * width, x, width, r);
                    }
                }
            }
        }
    }
}
