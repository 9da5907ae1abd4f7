/* 8-lane float vectors (256 bits: AVX2, and AVX-512 CPUs run them too) for the CPU kernels, through GCC's
 * vector extensions so that the same source builds for any -march. Unaligned loads and stores go through
 * memcpy, which compiles to one vector move. */
#ifndef NEUROBUNDLES_VECTORS_H
#define NEUROBUNDLES_VECTORS_H
#include <string.h>

#define VL 8
typedef float vec __attribute__((vector_size(VL * sizeof(float))));
typedef int mask __attribute__((vector_size(VL * sizeof(int))));

static inline vec load(const float *p)
{
    vec v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void store(float *p, vec v) { memcpy(p, &v, sizeof v); }

static inline vec splat(float s) { return (vec){s, s, s, s, s, s, s, s}; }

/* a where m is set, else b */
static inline vec blend(mask m, vec a, vec b) { return (vec)(((mask)a & m) | ((mask)b & ~m)); }

#endif
