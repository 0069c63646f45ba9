// Layer normalization inside the compiled loops (Ba, Kiros and Hinton 2016), with
// torch.nn.LayerNorm's conventions (biased variance, eps = 1e-5; rnnkit.cells.base.LN_EPS).
//
// For a row x of width G with gain a and bias b:
//   mu = mean(x),  rstd = 1 / sqrt(mean((x - mu)^2) + eps),  xn = (x - mu) rstd,  y = a xn + b
// Backward, from dy: with e = a dy,
//   dx = rstd (e - mean(e) - xn mean(e xn)),  da = sum over rows of dy xn,  db = sum of dy.
//
// A cell normalizes its input product W_ih x_t for all steps at once (`InputNorm`: the op's
// `xn` and first `rstd` row), its recurrent product W_hh h_{t-1} per step into `rn` (the bias b_hh
// of the site folds into the cell's constant bias), and the LSTM its cell c~ before phi (`cn`).
// Each site's gain and bias come in as one (2, G) tensor `ln_<site>`; its gradient goes out the
// same way: [sum dy xn; sum dy].
#pragma once

#include "recurrence.h"

namespace rnnkit {

constexpr double kLayerNormEps = 1e-5;

// sum over j < G of f(tag, j), f returning a Vec<s> for a vector tag and an s for a scalar one.
template <typename s, typename F>
inline s row_sum(int64_t G, const F& f) {
  using V = Vec<s>;
  V acc(s(0));
  s total(0);
  int64_t j = 0;
  for (; j + V::size() <= G; j += V::size()) acc = acc + f(V(), j);
  for (; j < G; ++j) total += f(s(), j);
  alignas(64) s lanes[V::size()];
  acc.store(lanes);
  for (int64_t k = 0; k < V::size(); ++k) total += lanes[k];
  return total;
}

// xn = (x - mu) rstd for one row (x and xn may be the same); returns rstd.
template <typename s>
inline s ln_row(const s* x, int64_t G, s* xn) {
  const s mu = row_sum<s>(G, [&](auto tag, int64_t j) { return load(x + j, tag); }) / s(G);
  const s var = row_sum<s>(G, [&](auto tag, int64_t j) {
                  using V = decltype(tag);
                  const V d = load(x + j, tag) - V(mu);
                  return d * d;
                }) / s(G);
  const s rstd = s(1) / std::sqrt(var + s(kLayerNormEps));
  for_lanes<s>(G, [&](auto tag, int64_t j) {
    using V = decltype(tag);
    store((load(x + j, tag) - V(mu)) * V(rstd), xn + j);
  });
  return rstd;
}

// dx (+)= rstd (e - mean(e) - xn mean(e xn)), e = a dy, for one row.
template <typename s>
inline void ln_row_backward(const s* dy, const s* a, const s* xn, s rstd, int64_t G, s* dx,
                            bool accumulate) {
  const s m1 = row_sum<s>(G, [&](auto tag, int64_t j) {
                 return load(a + j, tag) * load(dy + j, tag);
               }) / s(G);
  const s m2 = row_sum<s>(G, [&](auto tag, int64_t j) {
                 return load(a + j, tag) * load(dy + j, tag) * load(xn + j, tag);
               }) / s(G);
  for_lanes<s>(G, [&](auto tag, int64_t j) {
    using V = decltype(tag);
    const V v = V(rstd) * (load(a + j, tag) * load(dy + j, tag) - V(m1) - load(xn + j, tag) * V(m2));
    store(accumulate ? load(dx + j, tag) + v : v, dx + j);
  });
}

// A site's gain (its ln's row 0, contiguous), undefined where the site is off.
inline at::Tensor ln_gain(const std::optional<at::Tensor>& ln) {
  return ln ? ln->select(0, 0).contiguous() : at::Tensor();
}

// b plus a site's bias (its ln's row 1); undefined where neither is there.
inline at::Tensor plus_beta(const at::Tensor& b, const std::optional<at::Tensor>& ln) {
  if (!ln) return b;
  return b.defined() ? b + ln->select(0, 1) : ln->select(0, 1);
}

// A site's parameter gradient (2, G): [sum of dy xn; sum of dy] over all rows of dy, xn (M, G).
// One pass down the rows (column_dot), no (M, G) temporary: dy * xn then a sum allocated one
// as large as the sequence's gates, a page-faulting fresh allocation each step.
inline at::Tensor ln_param_grad(const at::Tensor& dy, const at::Tensor& xn) {
  const int64_t G = dy.size(-1);
  const at::Tensor dy2 = dy.reshape({-1, G}).contiguous(), xn2 = xn.reshape({-1, G}).contiguous();
  at::Tensor out = at::empty({2, G}, dy.options());
  AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "ln_param_grad", [&] {
    scalar_t* o = out.data_ptr<scalar_t>();
    column_dot(dy2.data_ptr<scalar_t>(), G, xn2.data_ptr<scalar_t>(), G, dy2.size(0), G, o, o + G);
  });
  return out;
}

// The input site, over all T N rows at once: `u` (M, G) holds W_ih x and becomes a xn + (its
// constant bias is added by the cell); xn (M, G) and rstd (M) are written.
inline void ln_input(at::Tensor& u, const at::Tensor& ln, at::Tensor& xn, at::Tensor rstd) {
  const int64_t M = u.size(0), G = u.size(1);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "ln_input", [&] {
    scalar_t* ub = u.data_ptr<scalar_t>();
    scalar_t* xb = xn.data_ptr<scalar_t>();
    scalar_t* rb = rstd.data_ptr<scalar_t>();
    const at::Tensor a_t = ln_gain(ln);
    const scalar_t* a = a_t.data_ptr<scalar_t>();
    for_rows(M, G, [&](int64_t n) {
      scalar_t* x = xb + n * G;
      rb[n] = ln_row(ub + n * G, G, x);
      for_lanes<scalar_t>(G, [&](auto tag, int64_t j) {
        store(load(a + j, tag) * load(x + j, tag), ub + n * G + j);
      });
    });
  });
}

// The input site's backward: d(W_ih x) (M, G) from dy = dz (M, G).
inline at::Tensor ln_input_backward(const at::Tensor& dy, const at::Tensor& ln,
                                    const at::Tensor& xn, const at::Tensor& rstd) {
  const int64_t G = dy.size(-1);
  at::Tensor dy2 = dy.reshape({-1, G}).contiguous(), xn2 = xn.reshape({-1, G}).contiguous();
  const int64_t M = dy2.size(0);
  at::Tensor dx = at::empty_like(dy2);
  at::Tensor r = rstd.contiguous();
  AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "ln_input_backward", [&] {
    const at::Tensor a_t = ln_gain(ln);
    const scalar_t* a = a_t.data_ptr<scalar_t>();
    const scalar_t* db = dy2.data_ptr<scalar_t>();
    const scalar_t* xb = xn2.data_ptr<scalar_t>();
    const scalar_t* rb = r.data_ptr<scalar_t>();
    scalar_t* ob = dx.data_ptr<scalar_t>();
    for_rows(M, G, [&](int64_t n) {
      ln_row_backward(db + n * G, a, xb + n * G, rb[n], G, ob + n * G, false);
    });
  });
  return dx;
}

// The sites of one call: which are on, their gains, and the saved buffers. `sites` = 2 (ih, hh)
// or 3 (with the LSTM's c, `width_c` wide). `keep`: a training call (xn, rn, cn for all T
// steps); an inference call keeps one step's rn and cn as scratch.
struct Norms {
  std::optional<at::Tensor> ih, hh, c;
  at::Tensor xn, rn, cn, rstd;  // (T, N, G) / (T or 1, N, G) / (T or 1, N, Hc) / (3, T, N)

  Norms(const std::optional<at::Tensor>& ln_ih, const std::optional<at::Tensor>& ln_hh,
        const std::optional<at::Tensor>& ln_c)
      : ih(ln_ih), hh(ln_hh), c(ln_c) {}
  bool on() const { return ih.has_value() || hh.has_value() || c.has_value(); }

  void allocate(bool keep, int64_t T, int64_t N, int64_t G, int64_t Hc, const at::Tensor& like) {
    if (!on()) {
      xn = absent(like);  // (four tensors: an op's outputs may not alias)
      rn = absent(like);
      cn = absent(like);
      rstd = absent(like);
      return;
    }
    const int64_t steps = keep ? T : 1;
    xn = ih && keep ? sequence_buffer({T, N, G}, like.options()) : absent(like);
    rn = hh ? at::empty({steps, N, G}, like.options()) : absent(like);
    cn = c ? at::empty({steps, N, Hc}, like.options()) : absent(like);
    rstd = at::zeros({3, T, N}, like.options());
  }
  // The input product u (T N, G) normalized in place (before the cell adds its bias).
  void input(at::Tensor& u, int64_t T, int64_t N) {
    if (!ih) return;
    at::Tensor x = xn.defined() && xn.numel() ? xn.view({T * N, -1}) : at::empty_like(u);
    ln_input(u, *ih, x, rstd.select(0, 0).view({T * N}));
  }
  // out (T N, G) = x2 W^T + bias, with the ih site LN_ih(x2 W^T) + bias: every step's input
  // product as one GEMM, before the loop (bias undefined: none).
  void project(at::Tensor& out, const at::Tensor& x2, const at::Tensor& w, const at::Tensor& bias,
               int64_t T, int64_t N) {
    if (ih) {
      at::mm_out(out, x2, w.t());
      input(out, T, N);
      if (bias.defined()) out.add_(bias);
    } else if (bias.defined()) {
      at::addmm_out(out, bias, x2, w.t());
    } else {
      at::mm_out(out, x2, w.t());
    }
  }
  // The constant bias the sites add to z: b_ih + b_hh + the ih and hh sites' biases.
  at::Tensor bias(const at::Tensor& b) const { return plus_beta(plus_beta(b, ih), hh); }
};

}  // namespace rnnkit
