/* MeshNet's 1x1x1 classifier and the argmax over its classes, fused, for channels-last fp32 features.
 *
 * Computing all K logits of a voxel in vector registers and keeping only the index of the largest never
 * writes the K x D x H x W logits (7 GB for 104 classes at 256^3) or reads them back.
 *
 * Compile-time constants: C (feature channels used), CS (channels stored per voxel), KP (classes padded
 * to a multiple of VL; padding classes have zero weights and a bias of -infinity, so they never win).
 *
 * in:     N x CS            weight: C x KP          bias: KP          out: N (class index as float)
 * voxels [begin, end) are written (callers split the range across threads).
 */
#include "vectors.h"

#define NK (KP / VL)

void head_argmax(const float *in, const float *weight, const float *bias, float *out, long begin, long end)
{
    for (long n = begin; n < end; ++n) {
        const float *voxel = in + n * CS;
        vec acc[NK];
        for (int k = 0; k < NK; ++k)
            acc[k] = load(bias + k * VL);
        for (int c = 0; c < C; ++c) {
            const vec v = splat(voxel[c]);
            for (int k = 0; k < NK; ++k)
                acc[k] += v * load(weight + c * KP + k * VL);
        }
        vec top = acc[0];
        for (int k = 1; k < NK; ++k) {
            top = blend(top > acc[k], top, acc[k]);
        }
        float best = top[0];
        for (int i = 1; i < VL; ++i)
            best = top[i] > best ? top[i] : best;
        int index = 0;
        for (int k = 0; k < NK * VL; ++k)
            if (acc[k / VL][k % VL] == best) {
                index = k;
                break;
            }
        out[n] = (float)index;
    }
}
