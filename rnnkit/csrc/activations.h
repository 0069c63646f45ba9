// What the loops of the cells with an output layer (Jordan, fully recurrent; see
// rnnkit/cells/jordan.py) share: the activations, a hidden layer's tanh/relu/sigmoid and an
// output layer's tanh/sigmoid/identity/softmax, with their derivatives in terms of the layer's
// value v = phi(x) (tanh' = 1 - v^2, sigmoid' = v (1 - v), relu' = [v > 0], identity' = 1); the
// elementwise ones work on a vector of lanes or a scalar (the tags of for_lanes), softmax a row at
// a time. And `Slots`, the step buffers of a forward that saves them or not.
#pragma once

#include <cmath>
#include <limits>
#include <type_traits>

#include "recurrence.h"

namespace rnnkit {

enum class Act { tanh, relu, sigmoid, identity, softmax };

inline Act hidden_act(c10::string_view a) {
  if (a == "tanh") return Act::tanh;
  if (a == "relu") return Act::relu;
  TORCH_CHECK(a == "sigmoid", "activation: expected tanh, relu or sigmoid, got ", a);
  return Act::sigmoid;
}

inline Act output_act(c10::string_view a) {
  if (a == "tanh") return Act::tanh;
  if (a == "sigmoid") return Act::sigmoid;
  if (a == "identity") return Act::identity;
  TORCH_CHECK(a == "softmax",
              "output_activation: expected tanh, sigmoid, identity or softmax, got ", a);
  return Act::softmax;
}

// tanh, sigmoid, relu or identity: a cell's elementwise activation (Clockwork, CTRNN)
inline Act elementwise_act(c10::string_view a) {
  if (a == "tanh") return Act::tanh;
  if (a == "sigmoid") return Act::sigmoid;
  if (a == "relu") return Act::relu;
  TORCH_CHECK_VALUE(a == "identity", "activation: expected tanh, sigmoid, relu or identity, got ",
                    a);
  return Act::identity;
}

// f(std::integral_constant<Act, a>{}) for an elementwise `a`: a pass compiled once for each.
template <typename F>
void with_act(Act a, const F& f) {
  switch (a) {
    case Act::tanh: return f(std::integral_constant<Act, Act::tanh>{});
    case Act::sigmoid: return f(std::integral_constant<Act, Act::sigmoid>{});
    case Act::relu: return f(std::integral_constant<Act, Act::relu>{});
    default: return f(std::integral_constant<Act, Act::identity>{});
  }
}

template <typename s>
inline s relu_(s v) { return std::isnan(v) ? v : (v > s(0) ? v : s(0)); }  // NaN stays, as torch
template <typename s>
inline Vec<s> relu_(const Vec<s>& v) { return at::vec::maximum(v, Vec<s>(s(0))); }
template <typename s>
inline s positive(s v) { return v > s(0) ? s(1) : s(0); }
template <typename s>
inline Vec<s> positive(const Vec<s>& v) { return v.gt(Vec<s>(s(0))); }  // 1 or 0 a lane

// phi(x) for an elementwise activation (softmax: see output_row).
template <typename V>
inline V activate(const V& x, Act a) {
  switch (a) {
    case Act::tanh: return tanh_(x);
    case Act::sigmoid: return sigm(x);
    case Act::relu: return relu_(x);
    default: return x;
  }
}

// phi' in terms of the value v = phi(x), for an elementwise activation.
template <typename V>
inline V derivative(const V& v, Act a) {
  const V one(1);
  switch (a) {
    case Act::tanh: return one - v * v;
    case Act::sigmoid: return v * (one - v);
    case Act::relu: return positive(v);
    default: return one;
  }
}

// The same with the activation known when compiling (with_act): phi(x), and phi' from the
// value v = phi(x).
template <Act A, typename V>
inline V phi(const V& x) {
  if constexpr (A == Act::tanh) return tanh_(x);
  else if constexpr (A == Act::sigmoid) return sigm(x);
  else if constexpr (A == Act::relu) return relu_(x);
  else return x;
}

template <Act A, typename V>
inline V phi_prime(const V& v) {
  const V one(1);
  if constexpr (A == Act::tanh) return one - v * v;
  else if constexpr (A == Act::sigmoid) return v * (one - v);
  else if constexpr (A == Act::relu) return positive(v);
  else return one;
}

// y = phi_y(z + b) in place on a row of O (b: the bias, or null), copied to `out` too when not
// null; softmax over the row.
template <typename scalar_t>
inline void output_row(scalar_t* z, const scalar_t* b, scalar_t* out, int64_t O, Act a) {
  if (a != Act::softmax) {
    for_lanes<scalar_t>(O, [&](auto tag, int64_t j) {
      auto v = load(z + j, tag);
      if (b) v = v + load(b + j, tag);
      v = activate(v, a);
      store(v, z + j);
      if (out) store(v, out + j);
    });
    return;
  }
  scalar_t top = -std::numeric_limits<scalar_t>::infinity();
  for (int64_t j = 0; j < O; ++j) {
    if (b) z[j] += b[j];
    top = std::max(top, z[j]);
  }
  using V = Vec<scalar_t>;
  V vsum(scalar_t(0));
  scalar_t sum = 0;
  int64_t j = 0;
  for (; j + V::size() <= O; j += V::size()) {
    const V e = (V::loadu(z + j) - V(top)).exp();
    e.store(z + j);
    vsum = vsum + e;
  }
  for (; j < O; ++j) sum += (z[j] = std::exp(z[j] - top));
  alignas(64) scalar_t lanes[V::size()];
  vsum.store(lanes);
  for (int64_t k = 0; k < V::size(); ++k) sum += lanes[k];
  const scalar_t inv = scalar_t(1) / sum;
  for_lanes<scalar_t>(O, [&](auto tag, int64_t j) {
    using W = decltype(tag);
    const auto v = load(z + j, tag) * W(inv);
    store(v, z + j);
    if (out) store(v, out + j);
  });
}

// dz = phi_y'(z) e with e = g + d (the output's and the carried state's gradients), from the
// output's value y; softmax: dz = y (e - <y, e>). A row of O.
template <typename scalar_t>
inline void output_grad_row(const scalar_t* y, const scalar_t* g, const scalar_t* d,
                            scalar_t* dz, int64_t O, Act a) {
  if (a != Act::softmax) {
    for_lanes<scalar_t>(O, [&](auto tag, int64_t j) {
      const auto e = load(g + j, tag) + load(d + j, tag);
      store(a == Act::identity ? e : e * derivative(load(y + j, tag), a), dz + j);
    });
    return;
  }
  scalar_t dot = 0;
  for (int64_t j = 0; j < O; ++j) dot += y[j] * (g[j] + d[j]);
  for_lanes<scalar_t>(O, [&](auto tag, int64_t j) {
    using W = decltype(tag);
    const auto y_j = load(y + j, tag);
    store(y_j * (load(g + j, tag) + load(d + j, tag) - W(dot)), dz + j);
  });
}

// A forward's per-step buffers: slot k a (rows, width) matrix. Saving (for a backward), they are
// one (count, rows, width) tensor; else `reuse` buffers, slot k in buffer k % reuse, so a loop
// keeps only the slots it still reads. A reused slot lies at the address that slot k of the saved
// tensor has, modulo 64 bytes: MKL's GEMM rounds differently with the alignment of its input
// matrix (measured: 16-byte steps), and so the inference loop gives bitwise the saving loop's
// results.
struct Slots {
  Slots(bool save, int64_t count, int64_t reuse, int64_t rows, int64_t width,
        const at::TensorOptions& options)
      : save_(save), reuse_(reuse), rows_(rows), width_(width) {
    pad_ = std::max<int64_t>(1, 64 / static_cast<int64_t>(c10::elementSize(
                                         c10::typeMetaToScalarType(options.dtype()))));
    const int64_t stride = (rows * width + 2 * pad_ - 1) / pad_ * pad_;  // each buffer aligned
    all_ = save ? at::empty({count, rows, width}, options) : at::empty({reuse, stride}, options);
  }
  at::Tensor operator[](int64_t k) const {
    if (save_) return all_.select(0, k);
    const int64_t size = rows_ * width_;
    return all_.select(0, k % reuse_).narrow(0, (k * size) % pad_, size).view({rows_, width_});
  }
  // The saved (count, rows, width) tensor (undefined if not saving).
  at::Tensor saved() const { return save_ ? all_ : at::Tensor(); }

 private:
  bool save_;
  int64_t reuse_, rows_, width_, pad_;
  at::Tensor all_;
};

}  // namespace rnnkit
