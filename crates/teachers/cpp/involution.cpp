// The involution operator as one autograd node with a hand-written backward,
// behind a C ABI for crates/teachers/src/involution.rs.
//
// Built from libtorch ops alone, involution is K*K strided slices times
// per-pixel kernels, summed. Its autograd graph is then K*K nodes whose
// backward each zero-fills a gradient buffer the size of the padded input,
// scatters one slice into it, and sums the K*K buffers; the kernel gradient
// is K*K products the size of the input, each reduced over the group's
// channels. Here the backward accumulates into one input-gradient buffer and
// one kernel-gradient buffer instead, in a single pass.
//
// Two implementations of forward and backward:
// - direct loops for float and double CPU tensors, parallel over (image,
//   group) with libtorch's intra-op pool (so KD_THREADS applies), the
//   group's channels innermost (see GroupLoops), with AVX2 + FMA kernels
//   for float groups of 16 channels where the CPU has them, chosen at run
//   time; channels-last inputs and pixel-major kernels are read in place;
// - libtorch ops for every other device and dtype (CUDA, bf16), with the same
//   single-buffer backward: each tap adds into a strided view of one padded
//   gradient, in place.
// Both are checked against the im2col reference and the per-pixel
// definition by tests/involution.rs.
//
// The entry point catches (kd_guarded.h), so no C++ exception crosses into
// Rust; errors come back as one line of text.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <torch/csrc/autograd/custom_function.h>

#include "kd_guarded.h"

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <cstdint>
#include <cstdio>
#include <string>
#include <tuple>
#include <vector>

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Which kernels run (the Rust side's `Kernels`): loops on float / double
// CPU tensors with the widest SIMD this CPU has, libtorch ops on every
// device, or the loops in portable SIMD only.
enum class Kernels : int32_t { Auto = 0, Ops = 1, Portable = 2 };

struct Dims {
  int64_t b, c, h, w, ho, wo, k, s, g, cg, p;
};

Dims dims_of(const at::Tensor& x, int64_t k, int64_t s, int64_t g) {
  TORCH_CHECK(x.dim() == 4, "involution input must be [B,C,H,W]");
  TORCH_CHECK(k % 2 == 1 && k > 0, "involution kernel size must be odd");
  TORCH_CHECK(s > 0, "involution stride must be positive");
  Dims d{};
  d.b = x.size(0);
  d.c = x.size(1);
  d.h = x.size(2);
  d.w = x.size(3);
  d.k = k;
  d.s = s;
  d.g = g;
  TORCH_CHECK(g > 0 && d.c % g == 0, "involution channels do not split into groups");
  d.cg = d.c / g;
  d.p = (k - 1) / 2;
  d.ho = (d.h + 2 * d.p - k) / s + 1;
  d.wo = (d.w + 2 * d.p - k) / s + 1;
  return d;
}

// Element strides of a [B, G, K*K, H', W'] kernel (or kernel-gradient)
// tensor. The kernel generator's convolution hands the op planar kernels
// after a planar input and pixel-major ones ([B, H', W', G, K*K] in memory)
// after a channels-last input; the loops read either in place rather than
// paying a relayout, and write the gradient in the kernel's own layout.
struct KernelStrides {
  int64_t b, g, t, y, x;
  explicit KernelStrides(const at::Tensor& w)
      : b(w.stride(0)), g(w.stride(1)), t(w.stride(2)), y(w.stride(3)), x(w.stride(4)) {}
  int64_t block(int64_t bg, int64_t groups) const { return (bg / groups) * b + (bg % groups) * g; }
  int64_t pixel(int64_t yy, int64_t xx) const { return yy * y + xx * x; }
};

// Grain of the parallel loops, in (image, group) pairs: each is tens of
// thousands of multiply-adds at the smallest sizes, so one pair per task is
// already worth a task.
constexpr int64_t kGrain = 1;

// Four floats in one SIMD register (GCC / Clang vector extensions: SSE on
// x86-64, NEON on ARM, whatever the target has). The float, 16-channel
// kernels below are written in them by hand: left to itself the compiler
// vectorised across taps with shuffles and spills instead of across the
// channels.
typedef float f4 __attribute__((vector_size(16)));
inline f4 load4(const float* p) {
  f4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store4(float* p, f4 v) { std::memcpy(p, &v, sizeof v); }
inline f4 splat4(float x) { return f4{x, x, x, x}; }

// The 16-channel float kernels again for x86-64 CPUs with AVX2 and FMA
// (nearly every one since 2013): eight lanes and a fused multiply-add where
// the portable ones have four lanes and a multiply then an add. They are
// compiled for that target alone and chosen at run time, so the binary
// still runs on any x86-64. Results differ from the portable kernels only
// in float rounding (the fused multiply-add rounds once).
#if defined(__x86_64__) && defined(__GNUC__)
#define KD_HAVE_AVX2_KERNELS 1
#define KD_AVX2 __attribute__((target("avx2,fma")))

bool cpu_has_avx2_fma() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}

// out[y, x, :] = sum_t w[t, y, x] * xcl[y*s + i, x*s + j, :], 16 channels.
KD_AVX2 void forward16_avx2(const Dims& d, const KernelStrides& ws, int64_t W,
                            const float* __restrict xcl, const float* __restrict wbg,
                            float* __restrict ocl) {
  for (int64_t y = 0; y < d.ho; ++y) {
    for (int64_t x = 0; x < d.wo; ++x) {
      const float* wq = wbg + ws.pixel(y, x);
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
      for (int64_t i = 0; i < d.k; ++i) {
        const float* row = xcl + ((y * d.s + i) * W + x * d.s) * 16;
        for (int64_t j = 0; j < d.k; ++j) {
          const __m256 wt = _mm256_set1_ps(wq[(i * d.k + j) * ws.t]);
          a0 = _mm256_fmadd_ps(wt, _mm256_loadu_ps(row + j * 16), a0);
          a1 = _mm256_fmadd_ps(wt, _mm256_loadu_ps(row + j * 16 + 8), a1);
        }
      }
      float* out = ocl + (y * d.wo + x) * 16;
      _mm256_storeu_ps(out, a0);
      _mm256_storeu_ps(out + 8, a1);
    }
  }
}

// gw[t, y, x] = <go[y, x, :], xcl[y*s + i, x*s + j, :]>;
// gxcl[y*s + i, x*s + j, :] += w[t, y, x] * go[y, x, :], 16 channels.
KD_AVX2 void backward16_avx2(const Dims& d, const KernelStrides& ws, const KernelStrides& gs,
                             int64_t W, const float* __restrict gocl,
                             const float* __restrict xcl, const float* __restrict wbg,
                             float* __restrict gxcl, float* __restrict gwbg) {
  for (int64_t y = 0; y < d.ho; ++y) {
    for (int64_t x = 0; x < d.wo; ++x) {
      const float* gq = gocl + (y * d.wo + x) * 16;
      const float* wq = wbg + ws.pixel(y, x);
      float* gwq = gwbg + gs.pixel(y, x);
      const __m256 g0 = _mm256_loadu_ps(gq), g1 = _mm256_loadu_ps(gq + 8);
      for (int64_t i = 0; i < d.k; ++i) {
        const int64_t base = ((y * d.s + i) * W + x * d.s) * 16;
        for (int64_t j = 0; j < d.k; ++j) {
          const int64_t t = i * d.k + j;
          const float* src = xcl + base + j * 16;
          float* dst = gxcl + base + j * 16;
          const __m256 wt = _mm256_set1_ps(wq[t * ws.t]);
          _mm256_storeu_ps(dst, _mm256_fmadd_ps(wt, g0, _mm256_loadu_ps(dst)));
          _mm256_storeu_ps(dst + 8, _mm256_fmadd_ps(wt, g1, _mm256_loadu_ps(dst + 8)));
          const __m256 p =
              _mm256_fmadd_ps(g1, _mm256_loadu_ps(src + 8), _mm256_mul_ps(g0, _mm256_loadu_ps(src)));
          __m128 h = _mm_add_ps(_mm256_castps256_ps128(p), _mm256_extractf128_ps(p, 1));
          h = _mm_add_ps(h, _mm_movehl_ps(h, h));
          h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
          gwq[t * gs.t] = _mm_cvtss_f32(h);
        }
      }
    }
  }
}
#endif

// The loops work on one (image, group) at a time with the group's channels
// innermost ("channels last" within the group): every tap of every output
// pixel is then one kernel value times a contiguous run of Cg input values,
// which vectorises at any stride, where the planar layout gives rows of
// 7-28 pixels (strided at stride 2) and a tap's bookkeeping per row. The
// relayouts in and out ([B,G,Cg,H,W] <-> [B,G,H,W,Cg], the input zero-padded
// so no tap needs a bounds check) are libtorch copies, vectorised and
// threaded; they are a small share of the arithmetic (one pass against K*K).
//
// CG is the group width when known at compile time (16, RedNet's and the
// stems'), 0 for any other width.
template <typename T, int64_t CG>
struct GroupLoops {
  const Dims& d;
  // The kernel's and the kernel gradient's strides (the same layout unless
  // libtorch chose otherwise for the gradient).
  KernelStrides ws, gs;
  // The AVX2 + FMA kernels for float groups of 16 (when compiled in and
  // this CPU has them, unless the caller asked for the portable ones).
  bool wide = false;
  int64_t cg() const { return CG > 0 ? CG : d.cg; }
  int64_t hp() const { return d.h + 2 * d.p; }
  int64_t wp() const { return d.w + 2 * d.p; }

  // out[y, x, :] = sum_t w[t, y, x] * xcl[y*s + i, x*s + j, :]
  // With CG known, the accumulator is a local array whose address never
  // escapes, so it lives in registers for all K*K taps; through a pointer it
  // would be a load and a store per tap, a chain through memory.
  void forward(const T* __restrict xcl, const T* __restrict wbg, T* __restrict ocl) const {
#ifdef KD_HAVE_AVX2_KERNELS
    if constexpr (std::is_same_v<T, float> && CG == 16) {
      if (wide) return forward16_avx2(d, ws, wp(), xcl, wbg, ocl);
    }
#endif
    const int64_t n = cg(), W = wp(), tap = ws.t;
    for (int64_t y = 0; y < d.ho; ++y) {
      for (int64_t x = 0; x < d.wo; ++x) {
        T* out = ocl + (y * d.wo + x) * n;
        const T* wq = wbg + ws.pixel(y, x);
        if constexpr (std::is_same_v<T, float> && CG == 16) {
          f4 a0 = splat4(0.f), a1 = a0, a2 = a0, a3 = a0;
          for (int64_t i = 0; i < d.k; ++i) {
            const float* row = xcl + ((y * d.s + i) * W + x * d.s) * 16;
            for (int64_t j = 0; j < d.k; ++j) {
              const f4 wt = splat4(wq[(i * d.k + j) * tap]);
              const float* src = row + j * 16;
              a0 += wt * load4(src);
              a1 += wt * load4(src + 4);
              a2 += wt * load4(src + 8);
              a3 += wt * load4(src + 12);
            }
          }
          store4(out, a0);
          store4(out + 4, a1);
          store4(out + 8, a2);
          store4(out + 12, a3);
        } else if constexpr (CG > 0) {
          T acc[CG];
          for (int64_t c = 0; c < CG; ++c) acc[c] = T(0);
          for (int64_t i = 0; i < d.k; ++i) {
            const T* row = xcl + ((y * d.s + i) * W + x * d.s) * CG;
            for (int64_t j = 0; j < d.k; ++j) {
              const T wt = wq[(i * d.k + j) * tap];
              const T* src = row + j * CG;
              for (int64_t c = 0; c < CG; ++c) acc[c] += wt * src[c];
            }
          }
          for (int64_t c = 0; c < CG; ++c) out[c] = acc[c];
        } else {
          for (int64_t c = 0; c < n; ++c) out[c] = T(0);
          for (int64_t i = 0; i < d.k; ++i) {
            const T* row = xcl + ((y * d.s + i) * W + x * d.s) * n;
            for (int64_t j = 0; j < d.k; ++j) {
              const T wt = wq[(i * d.k + j) * tap];
              const T* src = row + j * n;
              for (int64_t c = 0; c < n; ++c) out[c] += wt * src[c];
            }
          }
        }
      }
    }
  }

  // gw[t, y, x] = <go[y, x, :], xcl[y*s + i, x*s + j, :]>;
  // gxcl[y*s + i, x*s + j, :] += w[t, y, x] * go[y, x, :] (gxcl comes zeroed).
  // The dot product is summed as a tree over elementwise products: a
  // sequential sum would pin the order of float additions and keep the
  // compiler from vectorising it.
  void backward(const T* __restrict gocl, const T* __restrict xcl, const T* __restrict wbg,
                T* __restrict gxcl, T* __restrict gwbg) const {
#ifdef KD_HAVE_AVX2_KERNELS
    if constexpr (std::is_same_v<T, float> && CG == 16) {
      if (wide) return backward16_avx2(d, ws, gs, wp(), gocl, xcl, wbg, gxcl, gwbg);
    }
#endif
    const int64_t n = cg(), W = wp();
    std::vector<T> buf(CG > 0 ? 0 : 2 * n);
    for (int64_t y = 0; y < d.ho; ++y) {
      for (int64_t x = 0; x < d.wo; ++x) {
        const int64_t q = y * d.wo + x;
        const T* wq = wbg + ws.pixel(y, x);
        T* gwq = gwbg + gs.pixel(y, x);
        if constexpr (std::is_same_v<T, float> && CG == 16) {
          const float* gq = gocl + q * 16;
          const f4 g0 = load4(gq), g1 = load4(gq + 4), g2 = load4(gq + 8), g3 = load4(gq + 12);
          for (int64_t i = 0; i < d.k; ++i) {
            const int64_t base = ((y * d.s + i) * W + x * d.s) * 16;
            for (int64_t j = 0; j < d.k; ++j) {
              const int64_t t = i * d.k + j;
              const float* src = xcl + base + j * 16;
              float* dst = gxcl + base + j * 16;
              const f4 wt = splat4(wq[t * ws.t]);
              store4(dst, load4(dst) + wt * g0);
              store4(dst + 4, load4(dst + 4) + wt * g1);
              store4(dst + 8, load4(dst + 8) + wt * g2);
              store4(dst + 12, load4(dst + 12) + wt * g3);
              const f4 p = (g0 * load4(src) + g1 * load4(src + 4)) +
                           (g2 * load4(src + 8) + g3 * load4(src + 12));
              gwq[t * gs.t] = (p[0] + p[1]) + (p[2] + p[3]);
            }
          }
        } else if constexpr (CG > 0) {
          T g[CG];
          for (int64_t c = 0; c < CG; ++c) g[c] = gocl[q * CG + c];
          for (int64_t i = 0; i < d.k; ++i) {
            const int64_t base = ((y * d.s + i) * W + x * d.s) * CG;
            for (int64_t j = 0; j < d.k; ++j) {
              const int64_t t = i * d.k + j;
              const T* src = xcl + base + j * CG;
              T* dst = gxcl + base + j * CG;
              const T wt = wq[t * ws.t];
              T prod[CG];
              for (int64_t c = 0; c < CG; ++c) {
                prod[c] = g[c] * src[c];
                dst[c] += wt * g[c];
              }
              for (int64_t h = CG / 2; h > 0; h /= 2)
                for (int64_t c = 0; c < h; ++c) prod[c] += prod[c + h];
              gwq[t * gs.t] = prod[0];
            }
          }
        } else {
          const T* g = gocl + q * n;
          T* prod = buf.data();
          for (int64_t i = 0; i < d.k; ++i) {
            const int64_t base = ((y * d.s + i) * W + x * d.s) * n;
            for (int64_t j = 0; j < d.k; ++j) {
              const int64_t t = i * d.k + j;
              const T* src = xcl + base + j * n;
              T* dst = gxcl + base + j * n;
              const T wt = wq[t * ws.t];
              for (int64_t c = 0; c < n; ++c) {
                prod[c] = g[c] * src[c];
                dst[c] += wt * g[c];
              }
              gwq[t * gs.t] = tree_sum(prod, n);
            }
          }
        }
      }
    }
  }

  // Pairwise sum of v[0..n) (v is overwritten); CG's loop above is the same
  // for a power of two.
  static T tree_sum(T* v, int64_t n) {
    while (n > 1) {
      const int64_t h = n / 2;
      for (int64_t c = 0; c < h; ++c) v[c] += v[c + h];
      if (n % 2) v[0] += v[n - 1];
      n = h;
    }
    return n == 1 ? v[0] : T(0);
  }
};

// A channels-last input ([B,H,W,C] in memory, what libtorch's convolutions
// run fastest on at CPU) gets a channels-last output and input gradient, so
// the op does not force the layers around it back to the planar layout.
bool is_channels_last(const at::Tensor& x) {
  return !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

// [B,C,H,W] (either layout) -> zero-padded [B,G,Hp,Wp,Cg].
at::Tensor padded_channels_last(const at::Tensor& x, const Dims& d) {
  return at::constant_pad_nd(x, {d.p, d.p, d.p, d.p})
      .reshape({d.b, d.g, d.cg, d.h + 2 * d.p, d.w + 2 * d.p})
      .permute({0, 1, 3, 4, 2})
      .contiguous();
}

// [B,G,H,W,Cg] -> [B,C,H,W] in the layout `like` has: for a channels-last
// one a copy to [B,H,W,G,Cg] (none at all when G is 1 and `t` is dense).
at::Tensor from_group_major(const at::Tensor& t, const Dims& d, int64_t h, int64_t w,
                            bool channels_last) {
  if (channels_last)
    return t.permute({0, 2, 3, 1, 4}).reshape({d.b, h, w, d.c}).contiguous().permute({0, 3, 1, 2});
  return t.permute({0, 1, 4, 2, 3}).reshape({d.b, d.c, h, w});
}

template <typename T, int64_t CG>
at::Tensor forward_loops(const at::Tensor& x, const at::Tensor& w, const Dims& d, bool wide) {
  const int64_t plane = d.ho * d.wo;
  const KernelStrides ws(w);
  const GroupLoops<T, CG> L{d, ws, ws, wide};
  const auto xcl = padded_channels_last(x, d);
  auto ocl = at::empty({d.b, d.g, d.ho, d.wo, d.cg}, x.options());
  const T* xp = xcl.const_data_ptr<T>();
  const T* wp = w.const_data_ptr<T>();
  T* op = ocl.mutable_data_ptr<T>();
  const int64_t in_block = L.hp() * L.wp() * d.cg, out_block = plane * d.cg;
  at::parallel_for(0, d.b * d.g, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t bg = begin; bg < end; ++bg)
      L.forward(xp + bg * in_block, wp + ws.block(bg, d.g), op + bg * out_block);
  });
  return from_group_major(ocl, d, d.ho, d.wo, is_channels_last(x));
}

// Every task owns its (image, group)'s input-gradient block and its
// kernel-gradient block, so there is no write race.
template <typename T, int64_t CG>
std::tuple<at::Tensor, at::Tensor> backward_loops(const at::Tensor& go, const at::Tensor& x,
                                                  const at::Tensor& w, const Dims& d, bool wide) {
  const int64_t plane = d.ho * d.wo;
  const auto xcl = padded_channels_last(x, d);
  const auto gocl =
      go.reshape({d.b, d.g, d.cg, d.ho, d.wo}).permute({0, 1, 3, 4, 2}).contiguous();
  auto gxcl = at::zeros_like(xcl);
  // The kernel's layout when it is dense (preserve_format), planar otherwise.
  auto gw = at::empty_like(w);
  const KernelStrides ws(w), gs(gw);
  const GroupLoops<T, CG> L{d, ws, gs, wide};
  const T* xp = xcl.const_data_ptr<T>();
  const T* gp = gocl.const_data_ptr<T>();
  const T* wp = w.const_data_ptr<T>();
  T* gxp = gxcl.mutable_data_ptr<T>();
  T* gwp = gw.mutable_data_ptr<T>();
  const int64_t in_block = L.hp() * L.wp() * d.cg, out_block = plane * d.cg;
  at::parallel_for(0, d.b * d.g, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t bg = begin; bg < end; ++bg)
      L.backward(gp + bg * out_block, xp + bg * in_block, wp + ws.block(bg, d.g),
                 gxp + bg * in_block, gwp + gs.block(bg, d.g));
  });
  auto gx = from_group_major(
      gxcl.slice(2, d.p, d.p + d.h).slice(3, d.p, d.p + d.w), d, d.h, d.w, is_channels_last(x));
  return {gx, gw};
}

// Strided view of the padded [B,G,Cg,Hp,Wp] tensor that tap (i, j) reads.
at::Tensor tap_view(const at::Tensor& padded, const Dims& d, int64_t i, int64_t j) {
  return padded.slice(3, i, i + d.s * (d.ho - 1) + 1, d.s)
      .slice(4, j, j + d.s * (d.wo - 1) + 1, d.s);
}

at::Tensor forward_ops(const at::Tensor& x, const at::Tensor& w, const Dims& d) {
  const auto xp = at::constant_pad_nd(x, {d.p, d.p, d.p, d.p})
                      .view({d.b, d.g, d.cg, d.h + 2 * d.p, d.w + 2 * d.p});
  const auto wv = w.unsqueeze(2);  // [B,G,1,KK,H',W'], broadcast over Cg
  auto out = at::zeros({d.b, d.g, d.cg, d.ho, d.wo}, x.options());
  for (int64_t i = 0; i < d.k; ++i)
    for (int64_t j = 0; j < d.k; ++j) out.addcmul_(tap_view(xp, d, i, j), wv.select(3, i * d.k + j));
  return out.view({d.b, d.c, d.ho, d.wo});
}

std::tuple<at::Tensor, at::Tensor> backward_ops(const at::Tensor& go, const at::Tensor& x,
                                                const at::Tensor& w, const Dims& d) {
  const int64_t hp = d.h + 2 * d.p, wp = d.w + 2 * d.p;
  const auto xp = at::constant_pad_nd(x, {d.p, d.p, d.p, d.p}).view({d.b, d.g, d.cg, hp, wp});
  const auto g5 = go.reshape({d.b, d.g, d.cg, d.ho, d.wo});
  const auto wv = w.unsqueeze(2);
  auto gxp = at::zeros({d.b, d.g, d.cg, hp, wp}, x.options());
  auto gw = at::empty_like(w, at::MemoryFormat::Contiguous);
  for (int64_t i = 0; i < d.k; ++i) {
    for (int64_t j = 0; j < d.k; ++j) {
      const int64_t t = i * d.k + j;
      tap_view(gxp, d, i, j).addcmul_(g5, wv.select(3, t));
      auto slot = gw.select(2, t);
      at::sum_out(slot, g5 * tap_view(xp, d, i, j), {2}, false);
    }
  }
  auto gx = gxp.view({d.b, d.c, hp, wp}).slice(2, d.p, d.p + d.h).slice(3, d.p, d.p + d.w);
  return {gx.contiguous(), gw};
}

bool use_loops(const at::Tensor& x, Kernels kernels) {
  return kernels != Kernels::Ops && x.device().is_cpu() &&
         (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble);
}

bool use_wide(Kernels kernels) {
#ifdef KD_HAVE_AVX2_KERNELS
  return kernels == Kernels::Auto && cpu_has_avx2_fma();
#else
  return false;
#endif
}

at::Tensor involution_forward(const at::Tensor& x, const at::Tensor& w, const Dims& d,
                              Kernels kernels) {
  if (!use_loops(x, kernels)) return forward_ops(x, w, d);
  const bool wide = use_wide(kernels);
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "kd_involution_forward", [&] {
    out = d.cg == 16 ? forward_loops<scalar_t, 16>(x, w, d, wide)
                     : forward_loops<scalar_t, 0>(x, w, d, wide);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> involution_backward(const at::Tensor& go, const at::Tensor& x,
                                                       const at::Tensor& w, const Dims& d,
                                                       Kernels kernels) {
  if (!use_loops(x, kernels)) return backward_ops(go, x, w, d);
  const bool wide = use_wide(kernels);
  std::tuple<at::Tensor, at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "kd_involution_backward", [&] {
    out = d.cg == 16 ? backward_loops<scalar_t, 16>(go, x, w, d, wide)
                     : backward_loops<scalar_t, 0>(go, x, w, d, wide);
  });
  return out;
}

struct Involution : public torch::autograd::Function<Involution> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            int64_t k, int64_t s, int64_t g, int64_t kernels) {
    const auto d = dims_of(x, k, s, g);
    TORCH_CHECK(w.dim() == 5 && w.size(0) == d.b && w.size(1) == g && w.size(2) == k * k &&
                    w.size(3) == d.ho && w.size(4) == d.wo,
                "involution kernel must be [B, G, K*K, H', W']");
    ctx->save_for_backward({x, w});
    ctx->saved_data["k"] = k;
    ctx->saved_data["s"] = s;
    ctx->saved_data["g"] = g;
    ctx->saved_data["kernels"] = kernels;
    return involution_forward(x, w, d, static_cast<Kernels>(kernels));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto d = dims_of(saved[0], ctx->saved_data["k"].toInt(), ctx->saved_data["s"].toInt(),
                           ctx->saved_data["g"].toInt());
    auto [gx, gw] =
        involution_backward(grads[0], saved[0], saved[1], d,
                            static_cast<Kernels>(ctx->saved_data["kernels"].toInt()));
    return {gx, gw, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

extern "C" {

// `out` receives a new at::Tensor the caller owns (tch frees it), or null
// with `err` filled. Inputs of two dtypes are promoted to their common one,
// as the elementwise ops this replaces would.
int32_t kd_involution(const at::Tensor* x, const at::Tensor* w, int64_t k, int64_t s, int64_t g,
                      int32_t kernels, at::Tensor** out, char* err, size_t err_len) {
  *out = nullptr;
  return kd_shim::guarded(err, err_len, [&] {
    const auto t = at::result_type(*x, *w);
    auto xc = x->to(t);
    auto wc = w->to(t);
    // The loops read any strides (see KernelStrides and
    // padded_channels_last); the ops path wants dense planar tensors.
    TORCH_CHECK(kernels >= 0 && kernels <= 2, "unknown involution kernels ", kernels);
    if (!use_loops(xc, static_cast<Kernels>(kernels))) {
      xc = xc.contiguous();
      wc = wc.contiguous();
    }
    *out = new at::Tensor(Involution::apply(xc, wc, k, s, g, int64_t{kernels}));
  });
}

}  // extern "C"
