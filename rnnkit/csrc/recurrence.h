// The time loop every compiled rnnkit op shares: step order and slots, padding masks, the per-row
// parallel pointwise pass. A cell supplies only its pointwise step (see elman.h).
//
// Slots. A direction keeps its carried state in one (T + 1, N, S) buffer `ss`: a forward pass
// reads slot t and writes slot t + 1 at step t; a reverse pass reads slot t + 1 and writes slot
// t. So ss[t + off_in] is the state before step t and ss[t + off_out] the state after it, for
// either direction (the same layout as rnnkit/kernels/_common.py).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/Context.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/cpu/vec/vec.h>  // Vectorized<T>: AVX2/AVX-512 with the flags rnnkit.ops.build sets

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <optional>
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace rnnkit {

// A buffer as long as the sequence (saved gates and states, their gradients): on Linux, from
// 32 MB upward, in 2 MB-aligned memory advised to transparent huge pages (MADV_HUGEPAGE), as
// torch's own allocator does only under THP_MEM_ALLOC_ENABLE=1. Such buffers are freed after
// every backward, and above glibc's largest mmap threshold (32 MB) malloc maps them afresh each
// time: with 4 KB pages a step at H = 512, T = 200 page-faults tens of thousands of times (a
// peephole LSTM: ~27,000), with huge pages a few thousand. Below 32 MB malloc reuses its heap,
// and forcing those through fresh huge pages made an H = 128 step 2x slower (each step zeroing
// whole 2 MB pages). RNNKIT_HUGE_PAGES=0 turns it off (plain at::empty).
inline bool huge_pages() {
  static const bool on = [] {
    const char* v = std::getenv("RNNKIT_HUGE_PAGES");
    return v == nullptr || std::string(v) != "0";
  }();
  return on;
}

inline at::Tensor sequence_buffer(at::IntArrayRef sizes, const at::TensorOptions& options) {
#if defined(__linux__)
  constexpr size_t kHuge = size_t(2) << 20, kFrom = size_t(32) << 20;
  const size_t bytes = size_t(c10::multiply_integers(sizes)) * options.dtype().itemsize();
  if (huge_pages() && options.device().is_cpu() && bytes >= kFrom) {
    const size_t rounded = (bytes + kHuge - 1) / kHuge * kHuge;
    if (void* p = std::aligned_alloc(kHuge, rounded)) {
      madvise(p, rounded, MADV_HUGEPAGE);  // (advice: where THP is off it changes nothing)
      return at::from_blob(p, sizes, [](void* q) { std::free(q); }, options);
    }
  }
#endif
  return at::empty(sizes, options);
}

// out[j] = sum over the M rows r of a[r, j] b[r, j], j < G (rows at strides a_row, b_row, unit
// column stride), and where sum_a is given, sum_a[j] = sum of a[r, j], in the same pass: one
// pass down the rows, threads over vector-wide column blocks, no (M, G) product temporary (a
// whole-sequence gradient: the diagonal peepholes', a layer norm's gain and bias).
template <typename s>
inline void column_dot(const s* a, int64_t a_row, const s* b, int64_t b_row, int64_t M,
                       int64_t G, s* out, s* sum_a = nullptr) {
  using V = at::vec::Vectorized<s>;
  std::fill(out, out + G, s(0));
  if (sum_a) std::fill(sum_a, sum_a + G, s(0));
  const int64_t blocks = (G + V::size() - 1) / V::size();
  at::parallel_for(0, blocks, std::max<int64_t>(1, 8192 / std::max<int64_t>(1, M)),
                   [&](int64_t b0, int64_t b1) {
    const int64_t c0 = b0 * V::size(), c1 = std::min(G, b1 * V::size());
    for (int64_t r = 0; r < M; ++r) {
      const s* ar = a + r * a_row;
      const s* br = b + r * b_row;
      int64_t j = c0;
      for (; j + V::size() <= c1; j += V::size()) {
        const V av = V::loadu(ar + j);
        (V::loadu(out + j) + av * V::loadu(br + j)).store(out + j);
        if (sum_a) (V::loadu(sum_a + j) + av).store(sum_a + j);
      }
      for (; j < c1; ++j) {
        out[j] += ar[j] * br[j];
        if (sum_a) sum_a[j] += ar[j];
      }
    }
  });
}

// A contiguous copy of `t` in a sequence_buffer (an op's output ys).
inline at::Tensor sequence_copy(const at::Tensor& t) {
  return sequence_buffer(t.sizes(), t.options()).copy_(t);
}

struct Steps {
  int64_t T;
  bool reverse;
  int64_t off_in() const { return reverse ? 1 : 0; }
  int64_t off_out() const { return reverse ? 0 : 1; }
  int64_t first() const { return reverse ? T : 0; }  // the slot of the initial state
  int64_t last() const { return reverse ? 0 : T; }   // the slot of the final state
  int64_t forward_step(int64_t i) const { return reverse ? T - 1 - i : i; }
  int64_t backward_step(int64_t i) const { return reverse ? i : T - 1 - i; }
};

// The padding mask, read as bytes: valid[t * N + n] != 0 where step t of sequence n counts;
// `partial[t]` says whether any sequence is padded at t (only then does a step look at it).
struct Mask {
  const bool* valid = nullptr;
  std::vector<char> partial;

  Mask(const std::optional<at::Tensor>& v, int64_t T, int64_t N) : partial(T, 0) {
    if (!v.has_value()) return;
    TORCH_CHECK(v->scalar_type() == at::kBool && v->dim() == 2 && v->size(0) == T &&
                    v->size(1) == N && v->is_contiguous(),
                "valid: expected a contiguous (T, N) bool tensor");
    valid = v->data_ptr<bool>();
    for (int64_t t = 0; t < T; ++t)
      for (int64_t n = 0; n < N; ++n)
        if (!valid[t * N + n]) partial[t] = 1;
  }
  bool any_padded(int64_t t) const { return valid != nullptr && partial[t]; }
  bool counts(int64_t t, int64_t n, int64_t N) const {
    return valid == nullptr || valid[t * N + n];
  }
};

// f(n) for every row n of a batch, in parallel chunks of at least 2048 elements (a step's pass at
// B = 32, H = 128 splits in two: its tanh/sigmoid work, ~6 us on one core, outweighs a fork/join
// of the already spinning OpenMP threads). Parallel only when built with -fopenmp (rnnkit.ops.build
// adds it): without it ATen's headers make at::parallel_for a serial call.
template <typename F>
inline void for_rows(int64_t N, int64_t width, const F& f) {
  const int64_t grain = std::max<int64_t>(1, 2048 / std::max<int64_t>(1, width));
  at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) f(n);
  });
}

// x @ w^T for a fixed w (out, in) applied at every step to (N, in) rows: through a packed oneDNN
// weight where that measured faster (large float32 weights: 30-35% faster than addmm at
// H = 512 on the 2-core AVX-512 CPU, see rnnkit/kernels/_common.py), else a plain GEMM.
class Product {
 public:
  Product(const at::Tensor& w, int64_t rows) : w_t_(w.t()) {
    if (w.scalar_type() == at::kFloat && w.dim() == 2 && w.numel() >= (int64_t(1) << 17) &&
        at::hasMKLDNN()) {
      static const auto reorder = c10::Dispatcher::singleton().findSchemaOrThrow(
          "mkldnn::_reorder_linear_weight", "");
      std::vector<c10::IValue> stack{w.contiguous(), c10::IValue(rows)};
      reorder.callBoxed(&stack);
      packed_ = stack[0].toTensor();
    }
  }
  // out = x @ w^T
  void mm_(at::Tensor& out, const at::Tensor& x) const {
    if (!packed_.defined()) {
      at::mm_out(out, x, w_t_);
      return;
    }
    out.copy_(packed(x));
  }
  // out += x @ w^T
  void add_(at::Tensor& out, const at::Tensor& x) const {
    if (!packed_.defined()) {
      out.addmm_(x, w_t_);
      return;
    }
    out.add_(packed(x));
  }

 private:
  at::Tensor packed(const at::Tensor& x) const {
    static const auto linear =
        c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "");
    std::vector<c10::IValue> stack{x, packed_, c10::IValue(), c10::IValue("none"),
                                   c10::IValue(c10::List<std::optional<at::Scalar>>()),
                                   c10::IValue(std::string(""))};
    linear.callBoxed(&stack);
    return stack[0].toTensor();
  }

  at::Tensor w_t_, packed_;
};

// What an op returns for an unused buffer or the gradient of an absent optional input.
inline at::Tensor absent(const at::Tensor& like) { return at::empty({0}, like.options()); }

template <typename scalar_t>
using Vec = at::vec::Vectorized<scalar_t>;

template <typename scalar_t>
inline Vec<scalar_t> vsigmoid(const Vec<scalar_t>& v) {
  const Vec<scalar_t> one(scalar_t(1));
  return one / (one + v.neg().exp());
}

// Lane helpers: the same pointwise code serves a vector of lanes (Vec<scalar_t>) and the scalar
// tail of a row. `for_lanes<scalar_t>(H, f)` calls f(V{}, j) with V = Vec<scalar_t> for
// j = 0, V::size(), ... and then f(scalar_t{}, j) for the remaining j < H; inside, load(p, tag)
// reads V at p, store(v, p) writes it, and sigm/tanh_ work on either.
template <typename s>
inline s load(const s* p, s) { return *p; }
template <typename s>
inline Vec<s> load(const s* p, Vec<s>) { return Vec<s>::loadu(p); }
template <typename s>
inline void store(s v, s* p) { *p = v; }
template <typename s>
inline void store(const Vec<s>& v, s* p) { v.store(p); }
template <typename s>
inline s sigm(s v) { return s(1) / (s(1) + std::exp(-v)); }
template <typename s>
inline Vec<s> sigm(const Vec<s>& v) { return vsigmoid(v); }
// tanh: at::vec's (Sleef's, accurate to ~1 ulp). 2 sigmoid(2x) - 1 is 3.5x cheaper (float32
// AVX-512: 0.42 against 1.5 ns an element) but loses relative accuracy near 0 (1e-3 at x = 1e-4
// in float32), and that was enough to change a training run's outcome (tests/test_diagnostics:
// an Elman net that should lose its gradient kept it); the step is GEMM-bound anyway.
template <typename s>
inline s tanh_(s v) { return std::tanh(v); }
template <typename s>
inline Vec<s> tanh_(const Vec<s>& v) { return v.tanh(); }

// torch.lerp's a + w (b - a), a lane or a vector: exact at w = 0 and w = 1 (the 0/1 zoneout
// weights), as torch's (which switches to b - (b - a)(1 - w) from w = 0.5 on).
template <typename s>
inline s lerp_w(s a, s b, s w) {
  return std::abs(w) < s(0.5) ? a + w * (b - a) : b - (b - a) * (s(1) - w);
}
template <typename s>
inline Vec<s> lerp_w(const Vec<s>& a, const Vec<s>& b, const Vec<s>& w) {
  const Vec<s> small = a + w * (b - a), large = b - (b - a) * (Vec<s>(s(1)) - w);
  return Vec<s>::blendv(large, small, w.abs() < Vec<s>(s(0.5)));
}

template <typename scalar_t, typename F>
inline void for_lanes(int64_t H, const F& f) {
  using V = Vec<scalar_t>;
  int64_t j = 0;
  for (; j + V::size() <= H; j += V::size()) f(V(), j);
  for (; j < H; ++j) f(scalar_t(), j);
}

// A call's regularizer masks (rnnkit/regularize.py), both optional:
// - drop (N, R): recurrent dropout, one scaled 0/(1/(1-p)) mask per sequence, multiplying the
//   state where it enters the recurrent product: W_hh (m h_{t-1}). Backward: dh_{t-1} gets
//   m (W_hh^T dz_t) from the product, and dW_hh = sum_t dz_t (m h_{t-1})^T.
// - zone (T, N, S): zoneout weights d (0/1 while training, p at evaluation), the zoned state
//   tensors' columns side by side: after step t, s_t = d s_{t-1} + (1 - d) s~_t (merge). The
//   zoned s_t is what is carried and output. Backward (0/1 weights only: where d = 1, the slot
//   holds s_{t-1} and no gradient reaches s~, so a cell's backward may read the slot as s~):
//   with g = dL/ds_t (output gradient, zero at padded steps, plus the carried one),
//   dL/ds~_t = (1 - d) g goes through the cell and d g passes straight to s_{t-1} (split).
class Regularize {
 public:
  Regularize(const std::optional<at::Tensor>& drop, const std::optional<at::Tensor>& zone) {
    if (drop.has_value()) drop_ = drop->contiguous();
    // rows read through the strides (evaluation's expanded (T, N, S) expectation included),
    // columns with unit stride
    if (zone.has_value()) zone_ = zone->stride(2) == 1 ? *zone : zone->contiguous();
  }
  bool dropping() const { return drop_.defined(); }
  bool zoning() const { return zone_.defined(); }

  // The recurrent product's input at a step: h, or m h (into a buffer reused every step).
  const at::Tensor& input(const at::Tensor& h) {
    if (!drop_.defined()) return h;
    if (!buf_.defined()) buf_ = at::empty_like(h);
    at::mul_out(buf_, h, drop_);
    return buf_;
  }
  // out += (x W^T) m: the recurrent product's backward into dh_{t-1}.
  void add_back(const Product& p, at::Tensor& out, const at::Tensor& x) {
    if (!drop_.defined()) {
      p.add_(out, x);
      return;
    }
    if (!back_.defined()) back_ = at::empty_like(out);
    p.mm_(back_, x);
    out.addcmul_(back_, drop_);
  }
  // The states the recurrent weight's gradient multiplies: h_prev (T, N, R), or m h_prev.
  at::Tensor before(const at::Tensor& h_prev) const {
    return drop_.defined() ? h_prev * drop_ : h_prev;
  }
  // Forward, after step t wrote s~ to `s_out` (N, width), the zoned columns [off, off + width):
  // s_out = lerp(s~, s_in, d) = s~ + d (s_in - s~), one vectorized pass over the rows (a
  // TensorIterator lerp on the strided slice of d cost ~10 us a step at N = 32, H = 128).
  void merge(int64_t t, at::Tensor s_out, const at::Tensor& s_in, int64_t off) const {
    if (!zone_.defined()) return;
    const int64_t N = s_out.size(0), W = s_out.size(1);
    TORCH_CHECK(s_out.stride(1) == 1 && s_in.stride(1) == 1, "zoneout: expected unit column strides");
    const int64_t out_row = s_out.stride(0), in_row = s_in.stride(0);
    AT_DISPATCH_FLOATING_TYPES(s_out.scalar_type(), "zoneout_merge", [&] {
      scalar_t* ob = s_out.data_ptr<scalar_t>();
      const scalar_t* ib = s_in.data_ptr<scalar_t>();
      for_rows(N, W, [&](int64_t n) {
        const scalar_t* d = weights<scalar_t>(t, n, off);
        scalar_t* o = ob + n * out_row;
        const scalar_t* in = ib + n * in_row;
        for_lanes<scalar_t>(W, [&](auto tag, int64_t j) {
          store(lerp_w(load(o + j, tag), load(in + j, tag), load(d + j, tag)), o + j);
        });
      });
    });
  }
  // Backward, before step t's cell backward: `ds` (N, width) the carried gradient of s_t and
  // `gy` its output gradient at t (undefined where the state is not output): both scaled by
  // (1 - d) in place, what passes straight to s_{t-1} (d (m gy + ds)) returned, to add to
  // dL/ds_{t-1} after the cell's backward. The returned buffer is this site's (one per `off`),
  // reused at the next step.
  // One pass over the rows (ds and gy (N, width) with unit column strides, possibly column
  // windows of wider rows; zone 0/1).
  at::Tensor split(int64_t t, at::Tensor& ds, at::Tensor gy, const std::optional<at::Tensor>& valid,
                   int64_t off) {
    const int64_t N = ds.size(0), W = ds.size(1);
    TORCH_CHECK(ds.stride(1) == 1 && (!gy.defined() || gy.stride(1) == 1),
                "zoneout: expected unit column strides");
    at::Tensor carry = carry_buffer(off, N, W, ds);
    const bool* v = valid.has_value() ? valid->data_ptr<bool>() + t * N : nullptr;
    const int64_t ds_row = ds.stride(0), gy_row = gy.defined() ? gy.stride(0) : 0;
    AT_DISPATCH_FLOATING_TYPES(ds.scalar_type(), "zoneout_split", [&] {
      scalar_t* db = ds.data_ptr<scalar_t>();
      scalar_t* gb = gy.defined() ? gy.data_ptr<scalar_t>() : nullptr;
      scalar_t* cb = carry.data_ptr<scalar_t>();
      for_rows(N, W, [&](int64_t n) {
        const scalar_t* d = weights<scalar_t>(t, n, off);
        scalar_t* dr = db + n * ds_row;
        scalar_t* cr = cb + n * W;
        scalar_t* gr = gb && (v == nullptr || v[n]) ? gb + n * gy_row : nullptr;  // 0 if padded
        for_lanes<scalar_t>(W, [&](auto tag, int64_t j) {
          using L = decltype(tag);
          const L dj = load(d + j, tag), keep = L(scalar_t(1)) - dj;
          const L s = load(dr + j, tag);
          if (gr) {
            const L g = load(gr + j, tag);
            store(dj * (s + g), cr + j);
            store(g * keep, gr + j);
          } else {
            store(dj * s, cr + j);
          }
          store(s * keep, dr + j);
        });
      });
    });
    return carry;
  }

 private:
  // d's row (t, n) from column `off` on
  template <typename scalar_t>
  const scalar_t* weights(int64_t t, int64_t n, int64_t off) const {
    return zone_.data_ptr<scalar_t>() + t * zone_.stride(0) + n * zone_.stride(1) + off;
  }
  at::Tensor carry_buffer(int64_t off, int64_t N, int64_t W, const at::Tensor& like) {
    for (auto& [o, buf] : carries_)
      if (o == off) return buf;
    carries_.emplace_back(off, at::empty({N, W}, like.options()));
    return carries_.back().second;
  }

  at::Tensor drop_, zone_, buf_, back_;
  std::vector<std::pair<int64_t, at::Tensor>> carries_;  // split's result, one per site
};

}  // namespace rnnkit
