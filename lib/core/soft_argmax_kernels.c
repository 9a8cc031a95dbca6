/* CPU kernels of the windowed soft-argmax (lib/core/soft_argmax.py), float32 maps only.
 *
 * The torch version reads the maps once for the block maxima and then visits every window, the
 * zeroed gradient and the small per-map tensors in separate whole-batch passes, which on a CPU
 * costs several times one read of the maps. Here each map is handled start to finish while it sits
 * in the cache: block maxima, window, bound, and the window's expectation (forward); zeros and the
 * window's gradient (backward). The rules are those of window_plan / _window_forward /
 * _window_backward, which the tests compare these with; maps that fail the bound are left to the
 * torch full-map path.
 *
 * Built on first use by lib/utils/native_build.py for the machine it runs on. Maps are split
 * across OpenMP threads: loaded after torch, this library shares torch's OpenMP runtime (its
 * threads are the ones torch's own operations just used). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define L2D_SA_ABI 2
#define LANES 16        /* columns reduced together: one AVX-512 register, two AVX2 ones */
#define MAX_CHUNKS 64   /* maps up to LANES * MAX_CHUNKS = 1024 px wide take the vector block maxima */

/* GCC / Clang vector types: one register's worth where the CPU has it, split where it has less */
typedef float vfloat __attribute__((vector_size(4 * LANES)));
typedef int32_t vint __attribute__((vector_size(4 * LANES)));

static vfloat vselect(vint mask, vfloat a, vfloat b) { return (vfloat)((mask & (vint)a) | (~mask & (vint)b)); }

static vfloat vsplat(float x) {
    vfloat v;
    for (int k = 0; k < LANES; ++k)
        v[k] = x;
    return v;
}

static float vsum(vfloat v) {
    float s = 0.0f;
    for (int k = 0; k < LANES; ++k)
        s += v[k];
    return s;
}

/* exp(z) for z in [-87, 88] (the callers clamp): 2^n exp(r), n = round(z / ln 2), |r| <= ln 2 / 2,
 * ln 2 split in two so that n ln 2 is exact; exp(r) by its Taylor series to r^7 (truncation
 * below 6e-9 relative). Measured within 1.3 x 2^-24 relative of a float64 exp over [-87, 88]. */
static vfloat vexp(vfloat z) {
    const float round_magic = 12582912.0f;                 /* 1.5 * 2^23: adding it rounds to an integer */
    const vfloat n = (z * 1.44269504088896341f + round_magic) - round_magic;
    vfloat r = z - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    vfloat p = r * (1.0f / 5040.0f) + (1.0f / 720.0f);
    p = p * r + (1.0f / 120.0f);
    p = p * r + (1.0f / 24.0f);
    p = p * r + (1.0f / 6.0f);
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const vint bits = (__builtin_convertvector(n, vint) + 127) << 23;
    return p * (vfloat)bits;
}

int l2d_sa_abi(void) { return L2D_SA_ABI; }

static int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

/* Block maxima of one H x W map into bmax (nby x nbx, row-major); colmax (W) is scratch.
 * Returns 1 if the map holds a NaN or an infinity (v * 0 is then NaN), else 0. */
static int block_maxima(const float *restrict map, int64_t h, int64_t w, int64_t block, float *restrict colmax,
                        float *restrict bmax) {
    const int64_t nby = (h + block - 1) / block, nbx = (w + block - 1) / block;
    vfloat check = {0};
    for (int64_t by = 0; by < nby; ++by) {
        const int64_t r0 = by * block, r1 = imin(r0 + block, h);
        int64_t x0 = 0;
        if (w >= LANES && w <= LANES * MAX_CHUNKS) {
            /* Row by row, one running maximum per chunk of LANES columns (the last chunk moved
             * left to end at W), then into colmax. Reading each row whole, in order, streams the
             * map at the memory's speed (walking the block's rows chunk by chunk cost 40 % more);
             * the accumulators are an aligned local array whose slots never overlap (one in the
             * malloc'ed scratch, unaligned, or colmax itself, where the last chunk overlaps the
             * one before, cost 30-60 % more). */
            const int64_t chunks = (w + LANES - 1) / LANES;
            vfloat acc[MAX_CHUNKS], ck = {0}, v;
            for (int64_t k = 0; k < chunks; ++k)
                memcpy(&acc[k], map + r0 * w + imin(k * LANES, w - LANES), sizeof v);
            for (int64_t r = r0; r < r1; ++r) {
                const float *row = map + r * w;
                for (int64_t k = 0; k < chunks; ++k) {
                    memcpy(&v, row + imin(k * LANES, w - LANES), sizeof v);
                    acc[k] = vselect(v > acc[k], v, acc[k]);   /* false for NaN: the check catches those */
                    ck += v * 0.0f;                            /* one fused multiply-add; NaN for NaN, inf */
                }
            }
            for (int64_t k = 0; k < chunks; ++k)             /* overlapping columns: the same maxima */
                memcpy(colmax + imin(k * LANES, w - LANES), &acc[k], sizeof v);
            check += ck;
            x0 = w;
        }
        for (; x0 < w; ++x0) {                          /* maps narrower than LANES (or very wide) */
            float mx = map[r0 * w + x0], ck = 0.0f;
            for (int64_t r = r0; r < r1; ++r) {
                const float v = map[r * w + x0];
                mx = v > mx ? v : mx;
                ck += v * 0.0f;
            }
            colmax[x0] = mx;
            check[0] += ck;
        }
        for (int64_t bx = 0; bx < nbx; ++bx) {
            const int64_t c0 = bx * block, c1 = imin(c0 + block, w);
            float best = colmax[c0];
            for (int64_t c = c0 + 1; c < c1; ++c)
                best = colmax[c] > best ? colmax[c] : best;
            bmax[by * nbx + bx] = best;
        }
    }
    float total = 0.0f;
    for (int k = 0; k < LANES; ++k)
        total += check[k];
    return total != 0.0f;
}

/* The maximum as torch.amax gives it: NaN if the map holds one. */
static float nan_max(const float *map, int64_t n) {
    float best = -INFINITY;
    for (int64_t i = 0; i < n; ++i) {
        if (map[i] != map[i])
            return NAN;
        best = map[i] > best ? map[i] : best;
    }
    return best;
}

/* The window's weights e = exp(clamp(shift + beta h, lo, hi)) into wt (sy x sx) and their
 * moments (sum e, sum e c, sum e r) into out, for a window of the map starting at src (row stride w). */
static void window_moments_scalar(const float *src, int64_t w, int64_t sy, int64_t sx, float shift, float beta,
                                  float lo, float hi, float *col, float *wt, float out[3]) {
    const float floor_weight = expf(lo);
    float total = 0.0f, sum_x = 0.0f, sum_y = 0.0f;
    for (int64_t c = 0; c < sx; ++c)
        col[c] = 0.0f;
    for (int64_t r = 0; r < sy; ++r) {
        float row = 0.0f;
        for (int64_t c = 0; c < sx; ++c) {
            const float z = shift + beta * src[r * w + c];
            const float e = z <= lo ? floor_weight : expf(z < hi ? z : hi);
            wt[r * sx + c] = e;
            col[c] += e;
            row += e;
        }
        sum_y += row * (float)r;
    }
    for (int64_t c = 0; c < sx; ++c) {
        total += col[c];
        sum_x += col[c] * (float)c;
    }
    out[0] = total;
    out[1] = sum_x;
    out[2] = sum_y;
}

/* The same for sx == LANES: one register per window row. */
static void window_moments_vector(const float *src, int64_t w, int64_t sy, int64_t sx, float shift, float beta,
                                  float lo, float hi, float *col, float *wt, float out[3]) {
    (void)col;
    vfloat cols, col_sum = {0}, row_moment = {0}, v;
    for (int k = 0; k < LANES; ++k)
        cols[k] = (float)k;
    const vfloat low = vsplat(lo), high = vsplat(hi);
    for (int64_t r = 0; r < sy; ++r) {
        memcpy(&v, src + r * w, sizeof v);
        vfloat z = shift + beta * v;
        z = vselect(z < low, low, z);
        z = vselect(z > high, high, z);
        const vfloat e = vexp(z);
        memcpy(wt + r * sx, &e, sizeof e);
        col_sum += e;
        row_moment += e * (float)r;
    }
    out[0] = vsum(col_sum);
    out[1] = vsum(col_sum * cols);
    out[2] = vsum(row_moment);
}

/* HRNet's post-processing for one map and its soft-argmax (cx, cy): with p = floor(c + 0.5), only
 * when 1 < px < W - 1 and 1 < py < H - 1, 0.25 sign(right - left) and 0.25 sign(below - above)
 * of the map's values around p; else 0 (also for NaN coordinates, which fail the comparisons). */
static void quarter_shift(const float *map, int64_t h, int64_t w, float cx, float cy, float *out) {
    const float px = floorf(cx + 0.5f), py = floorf(cy + 0.5f);
    out[0] = out[1] = 0.0f;
    if (px > 1.0f && px < (float)(w - 1) && py > 1.0f && py < (float)(h - 1)) {
        const float *at = map + (int64_t)py * w + (int64_t)px;
        const float dx = at[1] - at[-1], dy = at[w] - at[-w];
        out[0] = 0.25f * (float)((dx > 0.0f) - (dx < 0.0f));
        out[1] = 0.25f * (float)((dy > 0.0f) - (dy < 0.0f));
    }
}

/* maps: M x H x W float32, contiguous, beta >= 0. Per map: peak, the window corner (y0, x0), and
 * use = 1 when the bound (window_plan's, in float64) is <= tol. For those maps also the window's
 * clamped weights (M x sy x sx), their total, the local mean (lx, ly) and coords = (x0 + lx,
 * y0 + ly) and, when shift_out is not NULL, their quarter-pixel shift; the other maps' coords and
 * shifts are left as they are. lo / hi: the exponent's floor and cap.
 * Returns 0, or -1 when scratch memory cannot be had (nothing usable is written then). */
int l2d_sa_forward(const float *maps, int64_t m, int64_t h, int64_t w, int64_t block, float beta, double tol,
                   float lo, float hi, int nthreads, float *coords, float *peak_out, int64_t *y0_out,
                   int64_t *x0_out, uint8_t *use_out, float *weights, float *total_out, float *lx_out,
                   float *ly_out, float *shift_out) {
    const int64_t nby = (h + block - 1) / block, nbx = (w + block - 1) / block, nb = nby * nbx;
    const int64_t sy = imin(2 * block, h), sx = imin(2 * block, w);
    /* the same float64 factor as window_plan: (H W - sy sx) max(W - 1, H - 1) */
    const double factor = (double)((h * w - sy * sx) * ((w > h ? w : h) - 1));
    int failed = 0;
    if (nthreads < 1)
        nthreads = 1;
#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        float *scratch = malloc(sizeof(float) * (size_t)(w + nb + sx));
        if (!scratch)
            failed = 1;
#pragma omp for schedule(static)
        for (int64_t i = 0; i < m; ++i) {
            if (!scratch)
                continue;
            float *colmax = scratch, *bmax = scratch + w, *col = scratch + w + nb;
            const float *map = maps + i * h * w;
            if (block_maxima(map, h, w, block, colmax, bmax)) {
                peak_out[i] = nan_max(map, h * w);          /* NaN or +-inf: the full map decides */
                y0_out[i] = x0_out[i] = 0;
                use_out[i] = 0;
                continue;
            }
            int64_t where = 0;                              /* first maximum, row-major blocks */
            for (int64_t k = 1; k < nb; ++k)
                if (bmax[k] > bmax[where])
                    where = k;
            const int64_t by = where / nbx, bx = where % nbx;
            const float left = bx > 0 ? bmax[where - 1] : -INFINITY;
            const float right = bx < nbx - 1 ? bmax[where + 1] : -INFINITY;
            const float up = by > 0 ? bmax[where - nbx] : -INFINITY;
            const float down = by < nby - 1 ? bmax[where + nbx] : -INFINITY;
            const int64_t y0 = imin((by - (up > down)) * block, h - sy);
            const int64_t x0 = imin((bx - (left > right)) * block, w - sx);
            float max_out = -INFINITY;                      /* blocks not wholly inside the window */
            for (int64_t ky = 0; ky < nby; ++ky) {
                const int in_y = ky * block >= y0 && imin((ky + 1) * block, h) <= y0 + sy;
                for (int64_t kx = 0; kx < nbx; ++kx) {
                    const int inside = in_y && kx * block >= x0 && imin((kx + 1) * block, w) <= x0 + sx;
                    const float v = bmax[ky * nbx + kx];
                    if (!inside && v > max_out)
                        max_out = v;
                }
            }
            const float peak = bmax[where];
            const double gap = (double)max_out - (double)peak;
            const double rel = gap == -INFINITY ? 0.0 : exp(gap * (double)beta);
            const int use = rel * factor <= tol;
            peak_out[i] = peak;
            y0_out[i] = y0;
            x0_out[i] = x0;
            use_out[i] = (uint8_t)use;
            if (!use)
                continue;
            /* the window: weights exp(clamp(beta h - beta peak, lo, hi)) and their moments */
            float moments[3];
            (sx == LANES ? window_moments_vector : window_moments_scalar)(
                map + y0 * w + x0, w, sy, sx, peak * -beta, beta, lo, hi, col, weights + i * sy * sx, moments);
            const float total = moments[0], sum_x = moments[1], sum_y = moments[2];
            const float lx = sum_x / total, ly = sum_y / total;
            total_out[i] = total;
            lx_out[i] = lx;
            ly_out[i] = ly;
            coords[2 * i] = lx + (float)x0;
            coords[2 * i + 1] = ly + (float)y0;
            if (shift_out)                                  /* the neighbours are still in the cache */
                quarter_shift(map, h, w, coords[2 * i], coords[2 * i + 1], shift_out + 2 * i);
        }
        free(scratch);
    }
    return failed ? -1 : 0;
}

/* grad: M x H x W. For every map with use = 1, writes zeros and, over its window, d loss / d h =
 * beta / total * w (g_x (c - lx) + g_y (r - ly)); the other maps are left as they are.
 * grad_coords (M x 2) holds (g_x, g_y). */
void l2d_sa_backward(float *grad, int64_t m, int64_t h, int64_t w, int64_t block, float beta, int nthreads,
                     const float *grad_coords, const int64_t *y0, const int64_t *x0, const uint8_t *use,
                     const float *weights, const float *total, const float *lx, const float *ly) {
    const int64_t sy = imin(2 * block, h), sx = imin(2 * block, w);
    if (nthreads < 1)
        nthreads = 1;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t i = 0; i < m; ++i) {
        if (!use[i])
            continue;
        float *map = grad + i * h * w;
        const float *wt = weights + i * sy * sx;
        const float scale = beta / total[i];
        const float gx = grad_coords[2 * i] * scale, gy = grad_coords[2 * i + 1] * scale;
        memset(map, 0, sizeof(float) * (size_t)(h * w));
        for (int64_t r = 0; r < sy; ++r) {
            const float term_y = ((float)r - ly[i]) * gy;
            float *dst = map + (y0[i] + r) * w + x0[i];
            const float *src = wt + r * sx;
            for (int64_t c = 0; c < sx; ++c)
                dst[c] = src[c] * (term_y + ((float)c - lx[i]) * gx);
        }
    }
}

/* The quarter-pixel shift of the maps ids[0:n] (the ones the full-map path decoded), from their
 * coords (M x 2) into shift_out (M x 2). */
void l2d_sa_shift(const float *maps, int64_t h, int64_t w, int64_t n, const int64_t *ids, const float *coords,
                  float *shift_out) {
    for (int64_t k = 0; k < n; ++k) {
        const int64_t i = ids[k];
        quarter_shift(maps + i * h * w, h, w, coords[2 * i], coords[2 * i + 1], shift_out + 2 * i);
    }
}
