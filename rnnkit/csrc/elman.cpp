// rnnkit::elman_sequence and its backward on the CPU: the Elman recurrence as one op.
//
// Forward (step t in the order the direction visits them; m_t marks the sequences still running):
//   a_t = W_ih x_t + b_ih + b_hh + W_hh h_{t-1},  h~_t = phi(a_t)  (tanh or relu)
//   h_t = m_t h~_t + (1 - m_t) h_{t-1},  y_t = m_t h~_t
// The input projection of all steps is one GEMM before the loop; a step is one GEMM (addmm into
// the next slot) and one parallel pointwise pass (phi, and the carry at a padded step).
//
// Backward, going back over the steps from dh = dL/dh_T:
//   da_t = m_t (dy_t + dh_t) phi'(h~_t)     (tanh: 1 - h~^2, relu: [h~ > 0])
//   dh_{t-1} = (1 - m_t) dh_t + W_hh^T da_t
// then over all T N rows at once: dX = dA W_ih, dW_ih = dA^T X, dW_hh = sum_t da_t h_{t-1}^T,
// db_ih = db_hh = sum da_t. Recurrent dropout and zoneout (drop, zone): see Regularize in
// recurrence.h (h_{t-1} -> m h_{t-1} in the product; h_t = d h_{t-1} + (1 - d) h~_t, y_t = m_t h_t).
// Layer normalization (ln_ih, ln_hh; layer_norm.h): a_t = LN_ih(W_ih x_t) + LN_hh(W_hh h_{t-1}) + b
// (the LN biases fold into b). Backward: LN_hh's backward of da_t takes its place in dh_{t-1} and
// dW_hh, LN_ih's in dX and dW_ih.
#include <torch/library.h>

#include "layer_norm.h"

namespace rnnkit {
namespace {

template <typename scalar_t>
inline scalar_t phi(scalar_t a, bool relu) {
  return relu ? (a > 0 ? a : scalar_t(0)) : tanh_(a);
}

template <typename scalar_t>
inline scalar_t phi_prime(scalar_t h, bool relu) {  // from the output h~ = phi(a)
  return relu ? (h > 0 ? scalar_t(1) : scalar_t(0)) : scalar_t(1) - h * h;
}

using Out7 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                        at::Tensor>;

// Returns (ys (T, N, H), h_T (N, H), hs (T + 1, N, H): the slots, saved for backward, and the
// layer normalization's xn, rn, cn, rstd).
Out7 elman_sequence(
    const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
    const std::optional<at::Tensor>& valid, bool relu, bool reverse,
    const std::optional<at::Tensor>& drop, const std::optional<at::Tensor>& zone,
    const std::optional<at::Tensor>& ln_ih, const std::optional<at::Tensor>& ln_hh) {
  const int64_t T = x.size(0), N = x.size(1), H = w_hh.size(0);
  Steps st{T, reverse};
  Mask mask(valid, T, N);
  Regularize reg(drop, zone);
  Norms norms(ln_ih, ln_hh, std::nullopt);
  norms.allocate(true, T, N, H, 0, x);
  // u_t + b_ih + b_hh for every step: one GEMM, written straight into the after-slots
  at::Tensor hs = sequence_buffer({T + 1, N, H}, x.options());
  at::Tensor bias;
  if (b_ih.has_value()) bias = b_hh.has_value() ? *b_ih + *b_hh : *b_ih;
  bias = norms.bias(bias);
  at::Tensor after = hs.narrow(0, st.off_out(), T);  // (T, N, H), contiguous
  at::Tensor after2 = after.view({T * N, H});
  at::Tensor x2 = x.reshape({T * N, x.size(2)});
  norms.project(after2, x2, w_ih, bias, T, N);
  hs.select(0, st.first()).copy_(h0);
  const Product rec(w_hh, N);  // h_{t-1} W_hh^T
  // W_hh h_{t-1} before LN_hh, and its gain
  at::Tensor rbuf = ln_hh ? at::empty({N, H}, x.options()) : at::Tensor();
  at::Tensor a_hh = ln_gain(ln_hh);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "elman_sequence", [&] {
    scalar_t* base = hs.data_ptr<scalar_t>();
    scalar_t* rbb = ln_hh ? rbuf.data_ptr<scalar_t>() : nullptr;
    scalar_t* rnb = ln_hh ? norms.rn.data_ptr<scalar_t>() : nullptr;
    scalar_t* sdb = norms.on() ? norms.rstd.data_ptr<scalar_t>() : nullptr;
    const scalar_t* ahh = ln_hh ? a_hh.data_ptr<scalar_t>() : nullptr;
    for (int64_t i = 0; i < T; ++i) {
      const int64_t t = st.forward_step(i);
      at::Tensor h_in = hs.select(0, t + st.off_in());
      at::Tensor h_out = hs.select(0, t + st.off_out());
      if (rbb) {
        rec.mm_(rbuf, reg.input(h_in));
      } else {
        rec.add_(h_out, reg.input(h_in));  // a_t = (u_t + b) + h_{t-1} W_hh^T
      }
      scalar_t* out = base + (t + st.off_out()) * N * H;
      const scalar_t* in = base + (t + st.off_in()) * N * H;
      const bool padded = mask.any_padded(t);
      for_rows(N, H, [&](int64_t n) {
        scalar_t* o = out + n * H;
        if (rbb) {  // a_t += a_hh LN(W_hh h_{t-1}) (every row: rn is read by the backward)
          scalar_t* rn_row = rnb + (t * N + n) * H;
          sdb[(T + t) * N + n] = ln_row(rbb + n * H, H, rn_row);
          for_lanes<scalar_t>(H, [&](auto tag, int64_t j) {
            store(load(o + j, tag) + load(ahh + j, tag) * load(rn_row + j, tag), o + j);
          });
        }
        if (padded && !mask.counts(t, n, N)) {  // the state is carried
          std::copy(in + n * H, in + (n + 1) * H, o);
          return;
        }
        using V = Vec<scalar_t>;
        int64_t j = 0;
        for (; j + V::size() <= H; j += V::size()) {
          const V a = V::loadu(o + j);
          (relu ? at::vec::maximum(a, V(scalar_t(0))) : tanh_(a)).store(o + j);
        }
        for (; j < H; ++j) o[j] = phi(o[j], relu);
      });
      reg.merge(t, h_out, h_in, 0);
    }
  });
  at::Tensor ys = sequence_copy(after);
  if (valid.has_value()) ys.mul_(valid->unsqueeze(2));
  return {ys, hs.select(0, st.last()).clone(), hs, norms.xn, norms.rn, norms.cn, norms.rstd};
}

// Returns (dx, dh0, dw_ih, dw_hh, db_ih, db_hh, d ln_ih, d ln_hh): the two bias gradients are
// equal (a (0,) tensor for an absent bias or site).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
elman_sequence_backward(
    const at::Tensor& grad_ys, const at::Tensor& grad_h_T, const at::Tensor& x,
    const at::Tensor& /*h0*/, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
    const at::Tensor& hs, const at::Tensor& xn, const at::Tensor& rn, const at::Tensor& /*cn*/,
    const at::Tensor& rstd, const std::optional<at::Tensor>& valid, bool relu, bool reverse,
    const std::optional<at::Tensor>& drop, const std::optional<at::Tensor>& zone,
    const std::optional<at::Tensor>& ln_ih, const std::optional<at::Tensor>& ln_hh) {
  const int64_t T = x.size(0), N = x.size(1), H = w_hh.size(0);
  Steps st{T, reverse};
  Mask mask(valid, T, N);
  Regularize reg(drop, zone);
  at::Tensor gy = reg.zoning() ? grad_ys.contiguous().clone() : grad_ys.contiguous();
  at::Tensor hs_c = hs.contiguous();
  at::Tensor da = sequence_buffer({T, N, H}, x.options());
  // d(W_hh h_{t-1}) through LN_hh
  at::Tensor dR = ln_hh ? sequence_buffer({T, N, H}, x.options()) : at::Tensor();
  at::Tensor rn_c = rn.contiguous(), sd = rstd.contiguous();
  at::Tensor a_hh = ln_gain(ln_hh);
  at::Tensor dh = grad_h_T.contiguous().clone();
  at::Tensor dh_next = at::empty_like(dh);
  const Product rec(w_hh.t(), N);  // da_t W_hh
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "elman_sequence_backward", [&] {
    const scalar_t* hbase = hs_c.data_ptr<scalar_t>();
    const scalar_t* gbase = gy.data_ptr<scalar_t>();
    scalar_t* dabase = da.data_ptr<scalar_t>();
    scalar_t* drb = ln_hh ? dR.data_ptr<scalar_t>() : nullptr;
    const scalar_t* rnb = ln_hh ? rn_c.data_ptr<scalar_t>() : nullptr;
    const scalar_t* sdb = ln_hh ? sd.data_ptr<scalar_t>() : nullptr;
    const scalar_t* ahh = ln_hh ? a_hh.data_ptr<scalar_t>() : nullptr;
    for (int64_t i = 0; i < T; ++i) {
      const int64_t t = st.backward_step(i);
      at::Tensor carry;
      if (reg.zoning()) carry = reg.split(t, dh, gy.select(0, t), valid, 0);
      const scalar_t* h_new = hbase + (t + st.off_out()) * N * H;
      const scalar_t* g = gbase + t * N * H;
      const scalar_t* d = dh.data_ptr<scalar_t>();
      scalar_t* a = dabase + t * N * H;
      const bool padded = mask.any_padded(t);
      for_rows(N, H, [&](int64_t n) {
        scalar_t* ar = a + n * H;
        const int64_t row = t * N + n;
        if (padded && !mask.counts(t, n, N)) {
          std::fill(ar, ar + H, scalar_t(0));
          if (drb) std::fill(drb + row * H, drb + (row + 1) * H, scalar_t(0));
          return;
        }
        const scalar_t *hr = h_new + n * H, *gr = g + n * H, *dr = d + n * H;
        for (int64_t j = 0; j < H; ++j) ar[j] = (gr[j] + dr[j]) * phi_prime(hr[j], relu);
        if (drb) ln_row_backward(ar, ahh, rnb + row * H, sdb[(T + t) * N + n], H, drb + row * H,
                                 false);
      });
      dh_next.zero_();
      // W_hh^T da_t (through LN_hh), as rows
      reg.add_back(rec, dh_next, ln_hh ? dR.select(0, t) : da.select(0, t));
      if (padded) {  // a padded sequence carries its dh past the step
        scalar_t* nx = dh_next.data_ptr<scalar_t>();
        for (int64_t n = 0; n < N; ++n) {
          if (mask.counts(t, n, N)) continue;
          for (int64_t j = 0; j < H; ++j) nx[n * H + j] += d[n * H + j];
        }
      }
      if (carry.defined()) dh_next.add_(carry);
      std::swap(dh, dh_next);
    }
  });
  at::Tensor da2 = da.view({T * N, H});
  at::Tensor before = reg.before(hs_c.narrow(0, st.off_in(), T)).reshape({T * N, H});
  at::Tensor dIn = ln_ih ? ln_input_backward(da2, *ln_ih, xn, sd.select(0, 0)) : da2;
  at::Tensor dx = at::mm(dIn, w_ih).view({T, N, x.size(2)});
  at::Tensor dw_ih = at::mm(dIn.t(), x.reshape({T * N, x.size(2)}));
  at::Tensor dw_hh = at::mm((ln_hh ? dR.view({T * N, H}) : da2).t(), before);
  at::Tensor db = (b_ih || b_hh) ? da2.sum(0) : absent(x);
  return {dx, dh, dw_ih, dw_hh, b_ih ? db : absent(x), b_hh ? (b_ih ? db.clone() : db) : absent(x),
          ln_ih ? ln_param_grad(da2, xn) : absent(x), ln_hh ? ln_param_grad(da2, rn_c) : absent(x)};
}

}  // namespace

// Without a backward to feed: the same loop, the slots dropped.
std::tuple<at::Tensor, at::Tensor> elman_sequence_inference(
    const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
    const std::optional<at::Tensor>& valid, bool relu, bool reverse,
    const std::optional<at::Tensor>& drop, const std::optional<at::Tensor>& zone,
    const std::optional<at::Tensor>& ln_ih, const std::optional<at::Tensor>& ln_hh) {
  auto out = elman_sequence(x, h0, w_ih, w_hh, b_ih, b_hh, valid, relu, reverse, drop, zone,
                            ln_ih, ln_hh);
  return {std::get<0>(out), std::get<1>(out)};
}

TORCH_LIBRARY_IMPL(rnnkit, CPU, m) {
  m.impl("elman_sequence_inference", &elman_sequence_inference);
  m.impl("elman_sequence", &elman_sequence);
  m.impl("elman_sequence_backward", &elman_sequence_backward);
}

}  // namespace rnnkit
