// rnnkit::gru_sequence and its backward on the CPU (torch.nn.GRU's cell: gate order r, z, n,
// the reset gate applied after W_hn h + b_hn).
//
// Forward (m_t marks the sequences still running):
//   u_t = W_ih x_t + b_ih (one GEMM for all steps),  g_t = W_hh h_{t-1} + b_hh (a GEMM a step)
//   r = s(u^r + g^r),  z = s(u^z + g^z),  n = tanh(u^n + r g^n),  h~ = n + z (h_{t-1} - n)
//   h_t = m_t h~ + (1 - m_t) h_{t-1},  y_t = m_t h~
// Saved for backward: gs = [r, z, g^n] (T, N, 3H), ns = n (T, N, H), the slots hs (T+1, N, H).
//
// Backward, going back over the steps with e = m_t (dy_t + dh_t):
//   da^n = e (1 - z)(1 - n^2),  da^z = e (h_{t-1} - n) z (1 - z),
//   da^r = da^n g^n r (1 - r),  dg^n = da^n r
//   dh_{t-1} = (1 - m_t) dh_t + e z + W_hh^T [da^r ; da^z ; dg^n]
// then over all T N rows: dU = [da^r, da^z, da^n], dX = dU W_ih, dW_ih = dU^T X,
// db_ih = sum dU, dW_hh = sum_t [da^r; da^z; dg^n] h_{t-1}^T, db_hh = sum [da^r; da^z; dg^n].
// Recurrent dropout and zoneout (drop, zone): see Regularize in recurrence.h (g_t = W_hh (m h_{t-1})
// + b_hh, the interpolation keeps the whole h_{t-1}; h_t = d h_{t-1} + (1 - d) h~_t).
// Layer normalization (ln_ih, ln_hh; layer_norm.h): u_t = LN_ih(W_ih x_t) + b_ih and
// g_t = LN_hh(W_hh h_{t-1}) + b_hh, each over all 3H (the LN biases fold into b_ih and b_hh).
// Backward: d(W_hh h_{t-1}) = LN_hh's backward of [da^r; da^z; dg^n] takes their place in
// dh_{t-1} and dW_hh, d(W_ih x_t) = LN_ih's backward of dU in dX and dW_ih.
#include <torch/library.h>

#include <cmath>

#include "layer_norm.h"

namespace rnnkit {
namespace {

template <typename scalar_t>
inline scalar_t sigmoid(scalar_t v) {
  return scalar_t(1) / (scalar_t(1) + std::exp(-v));
}

using Out9 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                        at::Tensor, at::Tensor, at::Tensor>;

Out9 gru_sequence(
    const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
    const std::optional<at::Tensor>& valid, bool reverse, const std::optional<at::Tensor>& drop,
    const std::optional<at::Tensor>& zone, const std::optional<at::Tensor>& ln_ih,
    const std::optional<at::Tensor>& ln_hh) {
  const int64_t T = x.size(0), N = x.size(1), H = w_hh.size(1), H3 = 3 * H;
  Steps st{T, reverse};
  Mask mask(valid, T, N);
  Regularize reg(drop, zone);
  Norms norms(ln_ih, ln_hh, std::nullopt);
  norms.allocate(true, T, N, H3, 0, x);
  at::Tensor x2 = x.reshape({T * N, x.size(2)});
  at::Tensor us = sequence_buffer({T * N, H3}, x.options());
  // (b_hh stays out: the reset gate multiplies its share)
  norms.project(us, x2, w_ih, plus_beta(b_ih ? *b_ih : at::Tensor(), ln_ih), T, N);
  us = us.view({T, N, H3});
  // gs[t] = [b_hr, b_hz, b_hn] before the step's addmm_ adds h_{t-1} W_hh^T
  at::Tensor gs = sequence_buffer({T, N, H3}, x.options());
  at::Tensor b_g = plus_beta(b_hh ? *b_hh : at::Tensor(), ln_hh);
  if (b_g.defined()) {
    gs.copy_(b_g.view({1, 1, H3}).expand({T, N, H3}));
  } else {
    gs.zero_();
  }
  // W_hh h_{t-1} before LN_hh, and its gain
  at::Tensor rbuf = ln_hh ? at::empty({N, H3}, x.options()) : at::Tensor();
  at::Tensor a_hh = ln_gain(ln_hh);
  at::Tensor ns = sequence_buffer({T, N, H}, x.options());
  at::Tensor hs = sequence_buffer({T + 1, N, H}, x.options());
  hs.select(0, st.first()).copy_(h0);
  const Product rec(w_hh, N);  // h_{t-1} W_hh^T
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gru_sequence", [&] {
    scalar_t* hb = hs.data_ptr<scalar_t>();
    scalar_t* gb = gs.data_ptr<scalar_t>();
    scalar_t* nb = ns.data_ptr<scalar_t>();
    const scalar_t* ub = us.data_ptr<scalar_t>();
    scalar_t* rbb = ln_hh ? rbuf.data_ptr<scalar_t>() : nullptr;
    scalar_t* rnb = ln_hh ? norms.rn.data_ptr<scalar_t>() : nullptr;
    scalar_t* sdb = norms.on() ? norms.rstd.data_ptr<scalar_t>() : nullptr;
    const scalar_t* ahh = ln_hh ? a_hh.data_ptr<scalar_t>() : nullptr;
    for (int64_t i = 0; i < T; ++i) {
      const int64_t t = st.forward_step(i);
      at::Tensor g_t = gs.select(0, t);
      if (rbb) {
        rec.mm_(rbuf, reg.input(hs.select(0, t + st.off_in())));
      } else {
        rec.add_(g_t, reg.input(hs.select(0, t + st.off_in())));
      }
      const scalar_t* h_in = hb + (t + st.off_in()) * N * H;
      scalar_t* h_out = hb + (t + st.off_out()) * N * H;
      const bool padded = mask.any_padded(t);
      for_rows(N, H3, [&](int64_t n) {
        scalar_t* g = gb + (t * N + n) * H3;
        const scalar_t* u = ub + (t * N + n) * H3;
        scalar_t* nr = nb + (t * N + n) * H;
        const scalar_t* hi = h_in + n * H;
        scalar_t* ho = h_out + n * H;
        const bool counts = !padded || mask.counts(t, n, N);
        if (rbb) {  // g += a_hh LN(W_hh h_{t-1})
          scalar_t* rn_row = rnb + (t * N + n) * H3;
          sdb[(T + t) * N + n] = ln_row(rbb + n * H3, H3, rn_row);
          for_lanes<scalar_t>(H3, [&](auto tag, int64_t j) {
            store(load(g + j, tag) + load(ahh + j, tag) * load(rn_row + j, tag), g + j);
          });
        }
        using V = Vec<scalar_t>;
        int64_t j = 0;
        for (; j + V::size() <= H; j += V::size()) {  // the same math, a vector at a time
          const V r = vsigmoid(V::loadu(u + j) + V::loadu(g + j));
          const V z = vsigmoid(V::loadu(u + H + j) + V::loadu(g + H + j));
          const V nn = tanh_(V(V::loadu(u + 2 * H + j) + r * V::loadu(g + 2 * H + j)));
          r.store(g + j);
          z.store(g + H + j);
          nn.store(nr + j);
          const V h = V::loadu(hi + j);
          (counts ? nn + z * (h - nn) : h).store(ho + j);
        }
        for (; j < H; ++j) {
          const scalar_t r = sigmoid(u[j] + g[j]);
          const scalar_t z = sigmoid(u[H + j] + g[H + j]);
          const scalar_t nn = tanh_(scalar_t(u[2 * H + j] + r * g[2 * H + j]));
          g[j] = r;
          g[H + j] = z;
          nr[j] = nn;
          ho[j] = counts ? nn + z * (hi[j] - nn) : hi[j];
        }
      });
      reg.merge(t, hs.select(0, t + st.off_out()), hs.select(0, t + st.off_in()), 0);
    }
  });
  at::Tensor ys = sequence_copy(hs.narrow(0, st.off_out(), T));
  if (valid.has_value()) ys.mul_(valid->unsqueeze(2));
  return {ys, hs.select(0, st.last()).clone(), hs, gs, ns,
          norms.xn, norms.rn, norms.cn, norms.rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
gru_sequence_backward(const at::Tensor& grad_ys, const at::Tensor& grad_h_T, const at::Tensor& x,
                      const at::Tensor& /*h0*/, const at::Tensor& w_ih, const at::Tensor& w_hh,
                      const std::optional<at::Tensor>& b_ih,
                      const std::optional<at::Tensor>& b_hh, const at::Tensor& hs,
                      const at::Tensor& gs, const at::Tensor& ns, const at::Tensor& xn,
                      const at::Tensor& rn, const at::Tensor& /*cn*/, const at::Tensor& rstd,
                      const std::optional<at::Tensor>& valid, bool reverse,
                      const std::optional<at::Tensor>& drop,
                      const std::optional<at::Tensor>& zone,
                      const std::optional<at::Tensor>& ln_ih,
                      const std::optional<at::Tensor>& ln_hh) {
  const int64_t T = x.size(0), N = x.size(1), H = w_hh.size(1), H3 = 3 * H;
  Steps st{T, reverse};
  Mask mask(valid, T, N);
  Regularize reg(drop, zone);
  at::Tensor gy = reg.zoning() ? grad_ys.contiguous().clone() : grad_ys.contiguous(), hs_c = hs.contiguous(), gs_c = gs.contiguous(),
             ns_c = ns.contiguous();
  at::Tensor dG = sequence_buffer({T, N, H3}, x.options());  // [da^r, da^z, dg^n]
  at::Tensor dU = sequence_buffer({T, N, H3}, x.options());  // [da^r, da^z, da^n]
  // d(W_hh h_{t-1}) through LN_hh
  at::Tensor dR = ln_hh ? sequence_buffer({T, N, H3}, x.options()) : at::Tensor();
  at::Tensor rn_c = rn.contiguous(), sd = rstd.contiguous();
  at::Tensor a_hh = ln_gain(ln_hh);
  at::Tensor dh = grad_h_T.contiguous().clone();
  at::Tensor dh_next = at::empty_like(dh);
  const Product rec(w_hh.t(), N);  // [da^r ; da^z ; dg^n] W_hh
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gru_sequence_backward", [&] {
    const scalar_t* hb = hs_c.data_ptr<scalar_t>();
    const scalar_t* gb = gs_c.data_ptr<scalar_t>();
    const scalar_t* nb = ns_c.data_ptr<scalar_t>();
    const scalar_t* yb = gy.data_ptr<scalar_t>();
    scalar_t* dgb = dG.data_ptr<scalar_t>();
    scalar_t* dub = dU.data_ptr<scalar_t>();
    scalar_t* drb = ln_hh ? dR.data_ptr<scalar_t>() : nullptr;
    const scalar_t* rnb = ln_hh ? rn_c.data_ptr<scalar_t>() : nullptr;
    const scalar_t* sdb = ln_hh ? sd.data_ptr<scalar_t>() : nullptr;
    const scalar_t* ahh = ln_hh ? a_hh.data_ptr<scalar_t>() : nullptr;
    for (int64_t i = 0; i < T; ++i) {
      const int64_t t = st.backward_step(i);
      at::Tensor carry;
      if (reg.zoning()) carry = reg.split(t, dh, gy.select(0, t), valid, 0);
      const scalar_t* h_prev = hb + (t + st.off_in()) * N * H;
      const scalar_t* d = dh.data_ptr<scalar_t>();
      scalar_t* dn = dh_next.data_ptr<scalar_t>();
      const bool padded = mask.any_padded(t);
      for_rows(N, H3, [&](int64_t n) {
        const int64_t row = t * N + n;
        scalar_t* dg = dgb + row * H3;
        scalar_t* du = dub + row * H3;
        const scalar_t* dr = d + n * H;
        scalar_t* dnr = dn + n * H;
        if (padded && !mask.counts(t, n, N)) {  // carried: no gradient through the cell
          std::fill(dg, dg + H3, scalar_t(0));
          std::fill(du, du + H3, scalar_t(0));
          if (drb) std::fill(drb + row * H3, drb + (row + 1) * H3, scalar_t(0));
          std::copy(dr, dr + H, dnr);
          return;
        }
        const scalar_t* g = gb + row * H3;
        const scalar_t* nr = nb + row * H;
        const scalar_t* hp = h_prev + n * H;
        const scalar_t* y = yb + row * H;
        using V = Vec<scalar_t>;
        const V one(scalar_t(1));
        int64_t j = 0;
        for (; j + V::size() <= H; j += V::size()) {  // the same math, a vector at a time
          const V r = V::loadu(g + j), z = V::loadu(g + H + j), gn = V::loadu(g + 2 * H + j);
          const V nn = V::loadu(nr + j);
          const V e = V::loadu(y + j) + V::loadu(dr + j);
          const V da_n = e * (one - z) * (one - nn * nn);
          const V da_z = e * (V::loadu(hp + j) - nn) * z * (one - z);
          const V da_r = da_n * gn * r * (one - r);
          da_r.store(dg + j);
          da_z.store(dg + H + j);
          (da_n * r).store(dg + 2 * H + j);
          da_r.store(du + j);
          da_z.store(du + H + j);
          da_n.store(du + 2 * H + j);
          (e * z).store(dnr + j);
        }
        for (; j < H; ++j) {
          const scalar_t r = g[j], z = g[H + j], gn = g[2 * H + j], nn = nr[j];
          const scalar_t e = y[j] + dr[j];
          const scalar_t da_n = e * (1 - z) * (1 - nn * nn);
          const scalar_t da_z = e * (hp[j] - nn) * z * (1 - z);
          const scalar_t da_r = da_n * gn * r * (1 - r);
          dg[j] = da_r;
          dg[H + j] = da_z;
          dg[2 * H + j] = da_n * r;
          du[j] = da_r;
          du[H + j] = da_z;
          du[2 * H + j] = da_n;
          dnr[j] = e * z;
        }
        if (drb) ln_row_backward(dg, ahh, rnb + row * H3, sdb[(T + t) * N + n], H3, drb + row * H3,
                                 false);
      });
      // + W_hh^T [da^r ; da^z ; dg^n] (through LN_hh), as rows
      reg.add_back(rec, dh_next, ln_hh ? dR.select(0, t) : dG.select(0, t));
      if (carry.defined()) dh_next.add_(carry);
      std::swap(dh, dh_next);
    }
  });
  at::Tensor dU2 = dU.view({T * N, H3}), dG2 = dG.view({T * N, H3});
  at::Tensor before = reg.before(hs_c.narrow(0, st.off_in(), T)).reshape({T * N, H});
  at::Tensor x2 = x.reshape({T * N, x.size(2)});
  at::Tensor dIn = ln_ih ? ln_input_backward(dU2, *ln_ih, xn, sd.select(0, 0)) : dU2;
  at::Tensor dRec = ln_hh ? dR.view({T * N, H3}) : dG2;
  return {at::mm(dIn, w_ih).view(x.sizes()), dh, at::mm(dIn.t(), x2), at::mm(dRec.t(), before),
          b_ih ? dU2.sum(0) : absent(x), b_hh ? dG2.sum(0) : absent(x),
          ln_ih ? ln_param_grad(dU2, xn) : absent(x), ln_hh ? ln_param_grad(dG2, rn_c) : absent(x)};
}

}  // namespace

// Without a backward to feed: the same loop, its saved buffers dropped.
std::tuple<at::Tensor, at::Tensor> gru_sequence_inference(
    const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
    const std::optional<at::Tensor>& valid, bool reverse, const std::optional<at::Tensor>& drop,
    const std::optional<at::Tensor>& zone, const std::optional<at::Tensor>& ln_ih,
    const std::optional<at::Tensor>& ln_hh) {
  auto out = gru_sequence(x, h0, w_ih, w_hh, b_ih, b_hh, valid, reverse, drop, zone, ln_ih, ln_hh);
  return {std::get<0>(out), std::get<1>(out)};
}

TORCH_LIBRARY_IMPL(rnnkit, CPU, m) {
  m.impl("gru_sequence_inference", &gru_sequence_inference);
  m.impl("gru_sequence", &gru_sequence);
  m.impl("gru_sequence_backward", &gru_sequence_backward);
}

}  // namespace rnnkit
