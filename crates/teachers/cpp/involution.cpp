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
//   group's channels innermost (see GroupLoops);
// - libtorch ops for every other device and dtype (CUDA, bf16), with the same
//   single-buffer backward: each tap adds into a strided view of one padded
//   gradient, in place.
// Both are checked against the im2col reference and the per-pixel
// definition by tests/involution.rs.
//
// Every entry point catches, so no C++ exception crosses into Rust; errors
// come back as one line of text.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <tuple>
#include <vector>

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

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

// Grain of the parallel loops, in (image, group) pairs: each is tens of
// thousands of multiply-adds at the smallest sizes, so one pair per task is
// already worth a task.
constexpr int64_t kGrain = 1;

// The loops work on one (image, group) at a time with the group's channels
// innermost ("channels last" within the group), in scratch buffers: every
// tap of every output pixel is then one kernel value times a contiguous run
// of Cg input values, which vectorises at any stride, where the planar
// layout gives rows of 7-28 pixels (strided at stride 2) and a tap's
// bookkeeping per row. The input copy is zero-padded, so no tap needs a
// bounds check; the copies in and out are a small share of the arithmetic
// (one pass over the group's planes against K*K).
//
// CG is the group width when known at compile time (16, RedNet's and the
// stems'), 0 for any other width.
template <typename T, int64_t CG>
struct GroupLoops {
  const Dims& d;
  int64_t cg() const { return CG > 0 ? CG : d.cg; }
  int64_t hp() const { return d.h + 2 * d.p; }
  int64_t wp() const { return d.w + 2 * d.p; }

  // [Cg, H, W] planes -> zero-padded [Hp, Wp, Cg].
  void pack_padded(const T* planes, T* cl) const {
    const int64_t n = cg(), W = wp();
    std::fill(cl, cl + hp() * W * n, T(0));
    for (int64_t c = 0; c < n; ++c) {
      const T* src = planes + c * d.h * d.w;
      for (int64_t y = 0; y < d.h; ++y)
        for (int64_t x = 0; x < d.w; ++x) cl[((y + d.p) * W + x + d.p) * n + c] = src[y * d.w + x];
    }
  }

  // [Cg, H', W'] planes -> [H', W', Cg].
  void pack(const T* planes, T* cl) const {
    const int64_t n = cg(), plane = d.ho * d.wo;
    for (int64_t c = 0; c < n; ++c)
      for (int64_t q = 0; q < plane; ++q) cl[q * n + c] = planes[c * plane + q];
  }

  // [Rows, Cols, Cg] (starting at row r0, col c0 of a [.., stride Cols0, Cg]
  // buffer) -> [Cg, Rows, Cols] planes.
  void unpack(const T* cl, int64_t cols0, int64_t r0, int64_t c0, int64_t rows, int64_t cols,
              T* planes) const {
    const int64_t n = cg();
    for (int64_t c = 0; c < n; ++c)
      for (int64_t y = 0; y < rows; ++y)
        for (int64_t x = 0; x < cols; ++x)
          planes[(c * rows + y) * cols + x] = cl[((y + r0) * cols0 + x + c0) * n + c];
  }

  // out[y, x, :] = sum_t w[t, y, x] * xcl[y*s + i, x*s + j, :]
  // The accumulator is a local array: with CG known it lives in registers,
  // and the compiler need not fear that it aliases the input.
  void forward(const T* __restrict xcl, const T* __restrict wbg, T* __restrict ocl) const {
    const int64_t n = cg(), W = wp(), plane = d.ho * d.wo;
    T acc[CG > 0 ? CG : 1];
    for (int64_t y = 0; y < d.ho; ++y) {
      for (int64_t x = 0; x < d.wo; ++x) {
        T* out = ocl + (y * d.wo + x) * n;
        T* a = CG > 0 ? acc : out;
        for (int64_t c = 0; c < n; ++c) a[c] = T(0);
        const T* wq = wbg + y * d.wo + x;
        for (int64_t i = 0; i < d.k; ++i) {
          const T* row = xcl + ((y * d.s + i) * W + x * d.s) * n;
          for (int64_t j = 0; j < d.k; ++j) {
            const T wt = wq[(i * d.k + j) * plane];
            const T* src = row + j * n;
            for (int64_t c = 0; c < n; ++c) a[c] += wt * src[c];
          }
        }
        if (CG > 0)
          for (int64_t c = 0; c < n; ++c) out[c] = acc[c];
      }
    }
  }

  // gw[t, y, x] = <go[y, x, :], xcl[y*s + i, x*s + j, :]>;
  // gxcl[y*s + i, x*s + j, :] += w[t, y, x] * go[y, x, :].
  // The dot product is summed as a tree over elementwise products: a
  // sequential sum would pin the order of float additions and keep the
  // compiler from vectorising it.
  void backward(const T* __restrict gocl, const T* __restrict xcl, const T* __restrict wbg,
                T* __restrict gxcl, T* __restrict gwbg) const {
    const int64_t n = cg(), W = wp(), plane = d.ho * d.wo;
    std::fill(gxcl, gxcl + hp() * W * n, T(0));
    std::vector<T> prod_buf(CG > 0 ? 0 : n);
    T prod_local[CG > 0 ? CG : 1];
    T* prod = CG > 0 ? prod_local : prod_buf.data();
    for (int64_t y = 0; y < d.ho; ++y) {
      for (int64_t x = 0; x < d.wo; ++x) {
        const T* g = gocl + (y * d.wo + x) * n;
        const int64_t q = y * d.wo + x;
        for (int64_t i = 0; i < d.k; ++i) {
          const int64_t base = ((y * d.s + i) * W + x * d.s) * n;
          for (int64_t j = 0; j < d.k; ++j) {
            const int64_t t = i * d.k + j;
            const T* src = xcl + base + j * n;
            T* dst = gxcl + base + j * n;
            const T wt = wbg[t * plane + q];
            for (int64_t c = 0; c < n; ++c) {
              prod[c] = g[c] * src[c];
              dst[c] += wt * g[c];
            }
            gwbg[t * plane + q] = tree_sum(prod, n);
          }
        }
      }
    }
  }

  // Pairwise sum of v[0..n) (v is overwritten).
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

template <typename T, int64_t CG>
void forward_loops(const T* x, const T* w, T* out, const Dims& d) {
  const int64_t kk = d.k * d.k, plane = d.ho * d.wo, in_plane = d.h * d.w;
  const GroupLoops<T, CG> L{d};
  at::parallel_for(0, d.b * d.g, kGrain, [&](int64_t begin, int64_t end) {
    std::vector<T> xcl(L.hp() * L.wp() * d.cg), ocl(plane * d.cg);
    for (int64_t bg = begin; bg < end; ++bg) {
      const int64_t first = bg * d.cg;  // (b*C + g*Cg) = bg*Cg: groups are contiguous
      L.pack_padded(x + first * in_plane, xcl.data());
      L.forward(xcl.data(), w + bg * kk * plane, ocl.data());
      L.unpack(ocl.data(), d.wo, 0, 0, d.ho, d.wo, out + first * plane);
    }
  });
}

// Every task owns its (image, group)'s input-gradient planes and its
// kernel-gradient block, so there is no write race.
template <typename T, int64_t CG>
void backward_loops(const T* go, const T* x, const T* w, T* gx, T* gw, const Dims& d) {
  const int64_t kk = d.k * d.k, plane = d.ho * d.wo, in_plane = d.h * d.w;
  const GroupLoops<T, CG> L{d};
  at::parallel_for(0, d.b * d.g, kGrain, [&](int64_t begin, int64_t end) {
    const int64_t padded = L.hp() * L.wp() * d.cg;
    std::vector<T> xcl(padded), gxcl(padded), gocl(plane * d.cg);
    for (int64_t bg = begin; bg < end; ++bg) {
      const int64_t first = bg * d.cg;
      L.pack_padded(x + first * in_plane, xcl.data());
      L.pack(go + first * plane, gocl.data());
      L.backward(gocl.data(), xcl.data(), w + bg * kk * plane, gxcl.data(), gw + bg * kk * plane);
      L.unpack(gxcl.data(), L.wp(), d.p, d.p, d.h, d.w, gx + first * in_plane);
    }
  });
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

bool use_loops(const at::Tensor& x, bool force_ops) {
  return !force_ops && x.device().is_cpu() &&
         (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble);
}

at::Tensor involution_forward(const at::Tensor& x, const at::Tensor& w, const Dims& d,
                              bool force_ops) {
  if (!use_loops(x, force_ops)) return forward_ops(x, w, d);
  auto out = at::empty({d.b, d.c, d.ho, d.wo}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "kd_involution_forward", [&] {
    const auto fn = d.cg == 16 ? forward_loops<scalar_t, 16> : forward_loops<scalar_t, 0>;
    fn(x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
       d);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> involution_backward(const at::Tensor& go, const at::Tensor& x,
                                                       const at::Tensor& w, const Dims& d,
                                                       bool force_ops) {
  if (!use_loops(x, force_ops)) return backward_ops(go, x, w, d);
  const auto g = go.contiguous();
  auto gx = at::empty_like(x, at::MemoryFormat::Contiguous);
  auto gw = at::empty_like(w, at::MemoryFormat::Contiguous);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "kd_involution_backward", [&] {
    const auto fn = d.cg == 16 ? backward_loops<scalar_t, 16> : backward_loops<scalar_t, 0>;
    fn(g.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
       gx.mutable_data_ptr<scalar_t>(), gw.mutable_data_ptr<scalar_t>(), d);
  });
  return {gx, gw};
}

struct Involution : public torch::autograd::Function<Involution> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            int64_t k, int64_t s, int64_t g, bool force_ops) {
    const auto d = dims_of(x, k, s, g);
    TORCH_CHECK(w.dim() == 5 && w.size(0) == d.b && w.size(1) == g && w.size(2) == k * k &&
                    w.size(3) == d.ho && w.size(4) == d.wo,
                "involution kernel must be [B, G, K*K, H', W']");
    ctx->save_for_backward({x, w});
    ctx->saved_data["k"] = k;
    ctx->saved_data["s"] = s;
    ctx->saved_data["g"] = g;
    ctx->saved_data["force_ops"] = force_ops;
    return involution_forward(x, w, d, force_ops);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto d = dims_of(saved[0], ctx->saved_data["k"].toInt(), ctx->saved_data["s"].toInt(),
                           ctx->saved_data["g"].toInt());
    auto [gx, gw] =
        involution_backward(grads[0], saved[0], saved[1], d, ctx->saved_data["force_ops"].toBool());
    return {gx, gw, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

void put_error(char* buf, size_t len, const std::exception& e) {
  const char* msg = e.what();
  if (auto* c10e = dynamic_cast<const c10::Error*>(&e)) msg = c10e->what_without_backtrace();
  std::string one(msg);
  for (auto& ch : one)
    if (ch == '\n') ch = ' ';
  std::snprintf(buf, len, "%s", one.c_str());
}

}  // namespace

extern "C" {

// `out` receives a new at::Tensor the caller owns (tch frees it), or null
// with `err` filled. Inputs of two dtypes are promoted to their common one,
// as the elementwise ops this replaces would.
int32_t kd_involution(const at::Tensor* x, const at::Tensor* w, int64_t k, int64_t s, int64_t g,
                      bool force_ops, at::Tensor** out, char* err, size_t err_len) {
  *out = nullptr;
  try {
    const auto t = at::result_type(*x, *w);
    auto xc = x->to(t).contiguous();
    auto wc = w->to(t).contiguous();
    *out = new at::Tensor(Involution::apply(xc, wc, k, s, g, force_ops));
    return 0;
  } catch (const std::exception& e) {
    put_error(err, err_len, e);
  } catch (...) {
    std::snprintf(err, err_len, "unknown C++ exception");
  }
  return -1;
}

}  // extern "C"
