// rnnkit::indrnn_sequence and its backward on the CPU: the IndRNN recurrence as one op.
//
// Forward (step t in the order the direction visits them; m_t marks the sequences still running):
//   a_t = W_ih x_t + b_ih,  h~_t = phi(a_t + u (.) h_{t-1})  (relu or tanh; u a vector)
//   h_t = m_t h~_t + (1 - m_t) h_{t-1},  y_t = m_t h~_t
// The input projection of all steps is one GEMM before the loop; there is no product inside the
// loop: a step is one parallel pointwise pass over the batch.
//
// Backward, going back over the steps from dh = dL/dh_T:
//   delta_t = m_t (dy_t + dh_t) phi'(h~_t)      (relu: [h~ > 0], tanh: 1 - h~^2)
//   dh_{t-1} = u (.) delta_t + (1 - m_t) dh_t
// then over all T N rows at once: dX = Delta W_ih, dW_ih = Delta^T X, du = sum_{t,n} delta_t (.)
// h_{t-1}, db_ih = sum delta_t. Recurrent dropout and zoneout (drop, zone): see Regularize in
// recurrence.h (h_{t-1} -> r h_{t-1} in the recurrent term, so dh_{t-1} gets r u delta_t and
// du sums delta_t (.) r h_{t-1}; h_t = d h_{t-1} + (1 - d) h~_t). Layer normalization (ln_ih;
// layer_norm.h): a_t = LN_ih(W_ih x_t) + b_ih, its backward in dX and dW_ih.
#include <torch/library.h>

#include "layer_norm.h"

namespace rnnkit {
namespace {

using Out7 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                        at::Tensor>;

// Returns (ys (T, N, H), h_T (N, H), hs (T + 1, N, H): the slots, saved for backward, and the
// layer normalization's xn, rn, cn, rstd).
Out7 indrnn_sequence(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_ih,
                     const at::Tensor& u, const std::optional<at::Tensor>& b_ih,
                     const std::optional<at::Tensor>& valid, bool relu, bool reverse,
                     const std::optional<at::Tensor>& drop, const std::optional<at::Tensor>& zone,
                     const std::optional<at::Tensor>& ln_ih) {
  const int64_t T = x.size(0), N = x.size(1), H = u.size(0);
  Steps st{T, reverse};
  Mask mask(valid, T, N);
  Regularize reg(drop, zone);
  Norms norms(ln_ih, std::nullopt, std::nullopt);
  norms.allocate(true, T, N, H, 0, x);
  // a_t for every step: one GEMM, written straight into the after-slots
  at::Tensor hs = sequence_buffer({T + 1, N, H}, x.options());
  at::Tensor bias = norms.bias(b_ih.has_value() ? *b_ih : at::Tensor());
  at::Tensor after = hs.narrow(0, st.off_out(), T);  // (T, N, H), contiguous
  at::Tensor after2 = after.view({T * N, H});
  at::Tensor x2 = x.reshape({T * N, x.size(2)});
  norms.project(after2, x2, w_ih, bias, T, N);
  hs.select(0, st.first()).copy_(h0);
  at::Tensor u_c = u.contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "indrnn_sequence", [&] {
    using V = Vec<scalar_t>;
    scalar_t* base = hs.data_ptr<scalar_t>();
    const scalar_t* ub = u_c.data_ptr<scalar_t>();
    for (int64_t i = 0; i < T; ++i) {
      const int64_t t = st.forward_step(i);
      at::Tensor h_in = hs.select(0, t + st.off_in());
      const scalar_t* in = reg.input(h_in).data_ptr<scalar_t>();  // h_{t-1}, or r h_{t-1}
      const scalar_t* kept = base + (t + st.off_in()) * N * H;   // h_{t-1}, what is carried
      scalar_t* out = base + (t + st.off_out()) * N * H;
      const bool padded = mask.any_padded(t);
      for_rows(N, H, [&](int64_t n) {
        scalar_t* o = out + n * H;
        if (padded && !mask.counts(t, n, N)) {  // the state is carried
          std::copy(kept + n * H, kept + (n + 1) * H, o);
          return;
        }
        const scalar_t* hr = in + n * H;
        int64_t j = 0;
        for (; j + V::size() <= H; j += V::size()) {
          const V a = V::loadu(o + j) + V::loadu(ub + j) * V::loadu(hr + j);
          (relu ? at::vec::maximum(a, V(scalar_t(0))) : tanh_(a)).store(o + j);
        }
        for (; j < H; ++j) {
          const scalar_t a = o[j] + ub[j] * hr[j];
          o[j] = relu ? (a > 0 ? a : scalar_t(0)) : tanh_(a);
        }
      });
      reg.merge(t, hs.select(0, t + st.off_out()), h_in, 0);
    }
  });
  at::Tensor ys = sequence_copy(after);
  if (valid.has_value()) ys.mul_(valid->unsqueeze(2));
  return {ys, hs.select(0, st.last()).clone(), hs, norms.xn, norms.rn, norms.cn, norms.rstd};
}

// Returns (dx, dh0, dw_ih, du, db_ih, d ln_ih) (a (0,) tensor for an absent bias or site).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
indrnn_sequence_backward(
    const at::Tensor& grad_ys, const at::Tensor& grad_h_T, const at::Tensor& x,
    const at::Tensor& /*h0*/, const at::Tensor& w_ih, const at::Tensor& u,
    const std::optional<at::Tensor>& b_ih, const at::Tensor& hs, const at::Tensor& xn,
    const at::Tensor& /*rn*/, const at::Tensor& /*cn*/, const at::Tensor& rstd,
    const std::optional<at::Tensor>& valid, bool relu, bool reverse,
    const std::optional<at::Tensor>& drop, const std::optional<at::Tensor>& zone,
    const std::optional<at::Tensor>& ln_ih) {
  const int64_t T = x.size(0), N = x.size(1), H = u.size(0);
  Steps st{T, reverse};
  Mask mask(valid, T, N);
  Regularize reg(drop, zone);
  at::Tensor gy = reg.zoning() ? grad_ys.contiguous().clone() : grad_ys.contiguous();
  at::Tensor hs_c = hs.contiguous();
  at::Tensor delta = sequence_buffer({T, N, H}, x.options());
  at::Tensor dh = grad_h_T.contiguous().clone();
  at::Tensor dh_next = at::empty_like(dh);
  at::Tensor u_c = u.contiguous();
  at::Tensor r = drop.has_value() ? drop->contiguous() : at::Tensor();  // (N, H)
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "indrnn_sequence_backward", [&] {
    using V = Vec<scalar_t>;
    const scalar_t* hbase = hs_c.data_ptr<scalar_t>();
    const scalar_t* gbase = gy.data_ptr<scalar_t>();
    const scalar_t* ub = u_c.data_ptr<scalar_t>();
    const scalar_t* rb = r.defined() ? r.data_ptr<scalar_t>() : nullptr;
    scalar_t* dbase = delta.data_ptr<scalar_t>();
    for (int64_t i = 0; i < T; ++i) {
      const int64_t t = st.backward_step(i);
      at::Tensor carry;
      if (reg.zoning()) carry = reg.split(t, dh, gy.select(0, t), valid, 0);
      const scalar_t* h_new = hbase + (t + st.off_out()) * N * H;
      const scalar_t* g = gbase + t * N * H;
      const scalar_t* d = dh.data_ptr<scalar_t>();
      scalar_t* nx = dh_next.data_ptr<scalar_t>();
      scalar_t* dl = dbase + t * N * H;
      const bool padded = mask.any_padded(t);
      for_rows(N, H, [&](int64_t n) {
        scalar_t* dr = dl + n * H;
        scalar_t* nr = nx + n * H;
        const scalar_t* dhr = d + n * H;
        if (padded && !mask.counts(t, n, N)) {  // no step: dh passes to h_{t-1} unchanged
          std::fill(dr, dr + H, scalar_t(0));
          std::copy(dhr, dhr + H, nr);
          return;
        }
        const scalar_t *hr = h_new + n * H, *gr = g + n * H;
        const scalar_t* rr = rb ? rb + n * H : nullptr;
        int64_t j = 0;
        for (; j + V::size() <= H; j += V::size()) {
          const V h = V::loadu(hr + j);
          const V prime = relu ? V::blendv(V(scalar_t(0)), V(scalar_t(1)), h > V(scalar_t(0)))
                               : V(scalar_t(1)) - h * h;
          const V dl_j = (V::loadu(gr + j) + V::loadu(dhr + j)) * prime;
          dl_j.store(dr + j);
          V back = V::loadu(ub + j) * dl_j;
          if (rr) back = back * V::loadu(rr + j);
          back.store(nr + j);
        }
        for (; j < H; ++j) {
          const scalar_t h = hr[j];
          const scalar_t prime = relu ? (h > 0 ? scalar_t(1) : scalar_t(0)) : scalar_t(1) - h * h;
          dr[j] = (gr[j] + dhr[j]) * prime;
          nr[j] = ub[j] * dr[j] * (rr ? rr[j] : scalar_t(1));
        }
      });
      if (carry.defined()) dh_next.add_(carry);
      std::swap(dh, dh_next);
    }
  });
  at::Tensor d2 = delta.view({T * N, H});
  at::Tensor before = reg.before(hs_c.narrow(0, st.off_in(), T)).reshape({T * N, H});
  at::Tensor dIn = ln_ih ? ln_input_backward(d2, *ln_ih, xn, rstd.contiguous().select(0, 0)) : d2;
  at::Tensor dx = at::mm(dIn, w_ih).view({T, N, x.size(2)});
  at::Tensor dw_ih = at::mm(dIn.t(), x.reshape({T * N, x.size(2)}));
  at::Tensor du = at::empty({H}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "indrnn_du", [&] {
    at::Tensor b_c = before.contiguous();
    column_dot(d2.data_ptr<scalar_t>(), H, b_c.data_ptr<scalar_t>(), H, T * N, H,
               du.data_ptr<scalar_t>());
  });
  return {dx, dh, dw_ih, du, b_ih ? d2.sum(0) : absent(x),
          ln_ih ? ln_param_grad(d2, xn) : absent(x)};
}

}  // namespace

// Without a backward to feed: the same loop, the slots dropped.
std::tuple<at::Tensor, at::Tensor> indrnn_sequence_inference(
    const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_ih, const at::Tensor& u,
    const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& valid, bool relu,
    bool reverse, const std::optional<at::Tensor>& drop, const std::optional<at::Tensor>& zone,
    const std::optional<at::Tensor>& ln_ih) {
  auto out = indrnn_sequence(x, h0, w_ih, u, b_ih, valid, relu, reverse, drop, zone, ln_ih);
  return {std::get<0>(out), std::get<1>(out)};
}

TORCH_LIBRARY_IMPL(rnnkit, CPU, m) {
  m.impl("indrnn_sequence_inference", &indrnn_sequence_inference);
  m.impl("indrnn_sequence", &indrnn_sequence);
  m.impl("indrnn_sequence_backward", &indrnn_sequence_backward);
}

}  // namespace rnnkit
