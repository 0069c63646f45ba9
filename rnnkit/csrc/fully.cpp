// rnnkit::fully_sequence and its backward on the CPU: the fully recurrent network (hidden and
// output layers both fed back) as one op; phi_h tanh/relu/sigmoid, phi_y
// tanh/sigmoid/identity/softmax (activations.h).
//
// Forward (step t in the order the direction visits them; m_t marks the sequences still running;
// u_t = W_ih x_t + b_ih is the op's input, computed outside it; W_m = [W_mh ; W_my] (S, S),
// S = H + O):
//   m_{t-1} = [h_{t-1} ; y_{t-1}],  [p_t ; q_t] = W_m m_{t-1}
//   h~_t = phi_h(u_t + p_t),  z_t = q_t + W_hy h~_t + b_hy,  y~_t = phi_y(z_t)
//   [h_t ; y_t] = m_t [h~_t ; y~_t] + (1 - m_t) [h_{t-1} ; y_{t-1}],  output_t = m_t y~_t
// The carried [h ; y] lives in one (T + 1, N, S) slot buffer, so m_{t-1} is a slot and the step's
// after-slot its work space: a step is the GEMM m_{t-1} W_m^T into the whole after-slot, a pass
// forming h~ in place on its first H columns, the GEMM h~ W_hy^T added to its last O columns, and
// a pass forming y~ in place there and the output row (a padded row takes the before-slot's).
// Saved: ss (T + 1, N, S), the slots [h ; y] (the initial state in the first; the after-slot is
// [h~_t ; y~_t] where sequence n counts at t), the values. (The pure-torch loop stores
// s = sigmoid(2 x) for a tanh layer, the value being 2 s - 1, since torch's CPU tanh is slow;
// here the pass computes tanh as 2 sigmoid(2 x) - 1 itself and stores the value, activations.h.)
// The inference op runs the same loop keeping two slots, reused (Slots, activations.h: bitwise
// the same outputs).
//
// Backward, going back over the steps from dm = [dh ; dy] = [dL/dh_T ; dL/dy_T] (dy_t: the
// output's gradient):
//   e_t = m_t (dy_t + dy),  dz_t = phi_y'(z_t) e_t   (softmax: y~_t (e_t - <y~_t, e_t>))
//   da_t = m_t phi_h'(h~_t) (dh + W_hy^T dz_t),  dm <- (1 - m_t) dm + W_m^T [da_t ; dz_t]
// (phi' from the value: tanh 1 - v^2, sigmoid v (1 - v), relu [v > 0], identity 1); [da_t ; dz_t]
// is a row of one (T, N, S) buffer, so a step is a pass forming dz_t, the GEMM dz_t W_hy into
// the da columns, a pass forming da_t there (and into du), and ONE GEMM with W_m (a padded row
// then carries its dm). Then over all T N rows at once:
//   du_t = da_t,  [dW_mh ; dW_my] = sum_t [da_t ; dz_t] m_{t-1}^T,  dW_hy = sum_t dz_t h~_t^T,
//   db_hy = sum dz,  [dh_0 ; dy_0] = the dm left after the loop.
//
// Recurrent dropout and zoneout (drop r (N, S), zone d = [d^h | d^y] (T, N, S); Regularize in
// recurrence.h): both products read r m_{t-1},
//   [p_t ; q_t] = W_m (r m_{t-1}),  h~_t, z_t, y~_t as above (y~ from the UNZONED h~),
//   [h^z_t ; y^z_t] = d_t m_{t-1} + (1 - d_t) [h~_t ; y~_t]
//   [h_t ; y_t] = m_t [h^z_t ; y^z_t] + (1 - m_t) m_{t-1},  output_t = m_t y^z_t
// (the slot after step t holds the zoned state; the inference loop's other slot still holds
// m_{t-1} when the step merges). Backward: with g^h = m_t dh, g^y = m_t (dy_t + dy) (the
// gradients of h^z_t, y^z_t), the cell sees (1 - d^h) g^h, (1 - d^y) g^y in place of dh and
// m_t (dy_t + dy) above and d g passes straight to m_{t-1} (split):
//   e_t = (1 - d^y) g^y,  dz_t = phi_y'(z_t) e_t,
//   da_t = m_t phi_h'(h~_t) ((1 - d^h) g^h + W_hy^T dz_t),
//   dm <- (1 - m_t) dm + d_t [g^h ; g^y] + r (W_m^T [da_t ; dz_t]),
//   [dW_mh ; dW_my] = sum_t [da_t ; dz_t] (r m_{t-1})^T,  dW_hy = sum_t dz_t h~_t^T.
// The zoned slot no longer holds [h~_t ; y~_t], and where d^h = 1 and d^y = 0 the y branch still
// needs h~ (phi_h', dW_hy; softmax needs the whole row y~ too): the forward copies each step's
// [h~_t ; y~_t] into `pre` (T, N, S) before the merge and the backward reads them there (so it
// holds for any weights d, not only 0/1). (Recomputing them instead, a GEMM with W_m and one with
// W_hy over all T N rows, made zoneout 1.4-1.5x the plain step's time.)
//
// Layer normalization of the hidden layer's recurrent product (ln_hh = [gamma ; beta] (2, H);
// layer_norm.h; the input product's LN_ih(W_ih x) + b_ih is in u, from cell.precompute outside
// the op; the output layer is not normalized):
//   p^_t = (p_t - mean(p_t)) rstd_t over the H units of p_t = W_mh (r m_{t-1}),
//   h~_t = phi_h(u_t + gamma p^_t + beta)    (q_t, z_t, y~_t as above)
// normalized in the h~ pass from the after-slot's first H columns (every row, padded ones too).
// Saved: rn = p^ (T, N, H), rstd's row 1 = rstd_t (T, N) (xn, cn, rows 0 and 2 unused). Backward: da_t as above (the gradient of u_t + LN(p_t),
// so du_t = da_t), then
//   dp_t = rstd_t (e - mean(e) - p^_t mean(e p^_t)),  e = gamma da_t   (0 at a padded row)
// replaces da_t in the products' backward: dm <- ... + r (W_m^T [dp_t ; dz_t]),
// dW_mh = sum_t dp_t (r m_{t-1})^T; dgamma = sum da_t p^_t, dbeta = sum da_t.
#include <torch/library.h>

#include "activations.h"
#include "layer_norm.h"

namespace rnnkit {
namespace {

using Out8 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                        at::Tensor, at::Tensor>;
using Out9 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                        at::Tensor, at::Tensor, at::Tensor>;

// The forward. `save`: keep the slots ss (T + 1, N, S) for the backward; else two slots, reused
// (ss is then undefined).
Out9 run_forward(bool save, const at::Tensor& us_in, const at::Tensor& h0, const at::Tensor& y0,
                 const at::Tensor& w_mh, const at::Tensor& w_hy, const at::Tensor& w_my,
                 const std::optional<at::Tensor>& b_hy, const std::optional<at::Tensor>& valid,
                 c10::string_view activation, c10::string_view output_activation,
                 bool reverse, const std::optional<at::Tensor>& drop,
                 const std::optional<at::Tensor>& zone, const std::optional<at::Tensor>& ln_hh) {
  const Act act_h = hidden_act(activation), act_y = output_act(output_activation);
  const at::Tensor us = us_in.contiguous();
  const int64_t T = us.size(0), N = us.size(1), H = us.size(2), O = w_hy.size(0), S = H + O;
  Steps st{T, reverse};
  Mask mask(valid, T, N);
  Regularize reg(drop, zone);
  const bool zoning = reg.zoning();
  const Slots ss(save, T + 1, 2, N, S, us.options());
  // [h~ ; y~]_t before zoneout's merge, for the backward (zoneout's slots hold the zoned state)
  at::Tensor pre = save && zoning ? sequence_buffer({T, N, S}, us.options()) : absent(us);
  at::Tensor ys = sequence_buffer({T, N, O}, us.options());
  at::Tensor first = ss[st.first()];
  first.narrow(1, 0, H).copy_(h0);
  first.narrow(1, H, O).copy_(y0);
  const at::Tensor by = b_hy ? b_hy->contiguous() : at::Tensor();
  Norms norms(std::nullopt, ln_hh, std::nullopt);
  norms.allocate(save, T, N, H, 0, us);
  const at::Tensor g_hh = ln_gain(norms.hh);
  const at::Tensor b_hh = norms.hh ? norms.hh->select(0, 1).contiguous() : at::Tensor();
  const Product rec_m(at::cat({w_mh, w_my}), N);  // m_{t-1} W_m^T
  const Product rec_y(w_hy, N);                   // h~_t W_hy^T
  AT_DISPATCH_FLOATING_TYPES(us.scalar_type(), "fully_sequence", [&] {
    const scalar_t* byp = by.defined() ? by.data_ptr<scalar_t>() : nullptr;
    scalar_t* rnb = norms.hh ? norms.rn.data_ptr<scalar_t>() : nullptr;
    scalar_t* sdb = norms.hh ? norms.rstd.data_ptr<scalar_t>() : nullptr;  // (3, T, N)
    const scalar_t* ghh = norms.hh ? g_hh.data_ptr<scalar_t>() : nullptr;
    const scalar_t* bhh = norms.hh ? b_hh.data_ptr<scalar_t>() : nullptr;
    for (int64_t i = 0; i < T; ++i) {
      const int64_t t = st.forward_step(i);
      const int64_t tk = save ? t : 0;  // the step's rows of rn
      at::Tensor m_in = ss[t + st.off_in()], m_out = ss[t + st.off_out()];
      rec_m.mm_(m_out, reg.input(m_in));  // [p ; q]
      const scalar_t* mi = m_in.data_ptr<scalar_t>();
      scalar_t* mo = m_out.data_ptr<scalar_t>();
      const scalar_t* ub = us.data_ptr<scalar_t>() + t * N * H;
      for_rows(N, H, [&](int64_t n) {
        scalar_t* h = mo + n * S;
        const scalar_t* u = ub + n * H;
        if (rnb) {  // h~ = phi_h(u + gamma LN(p) + beta)
          scalar_t* rn_row = rnb + (tk * N + n) * H;
          sdb[(T + t) * N + n] = ln_row(h, H, rn_row);
          for_lanes<scalar_t>(H, [&](auto tag, int64_t j) {
            const auto a = load(u + j, tag) +
                           (load(ghh + j, tag) * load(rn_row + j, tag) + load(bhh + j, tag));
            store(activate(a, act_h), h + j);
          });
          return;
        }
        for_lanes<scalar_t>(H, [&](auto tag, int64_t j) {
          store(activate(load(h + j, tag) + load(u + j, tag), act_h), h + j);
        });
      });
      at::Tensor z_out = m_out.narrow(1, H, O);
      rec_y.add_(z_out, m_out.narrow(1, 0, H));  // q + h~ W_hy^T
      const bool padded = mask.any_padded(t);
      scalar_t* ob = ys.data_ptr<scalar_t>() + t * N * O;
      for_rows(N, O, [&](int64_t n) {
        scalar_t* m = mo + n * S;
        scalar_t* out = ob + n * O;
        if (padded && !mask.counts(t, n, N)) {  // the state is carried, the output zero
          std::copy(mi + n * S, mi + (n + 1) * S, m);
          std::fill(out, out + O, scalar_t(0));
          return;
        }
        output_row(m + H, byp, zoning ? nullptr : out, O, act_y);  // (zoned: after merge)
      });
      if (zoning) {  // [h ; y]^z_t = lerp([h~ ; y~]_t, m_{t-1}, d_t) (padded: lerp(m, m, d) = m)
        if (pre.numel()) std::copy(mo, mo + N * S, pre.data_ptr<scalar_t>() + t * N * S);
        reg.merge(t, m_out, m_in, 0);
        for_rows(N, O, [&](int64_t n) {
          if (!padded || mask.counts(t, n, N)) {
            std::copy(mo + n * S + H, mo + (n + 1) * S, ob + n * O);
          }
        });
      }
    }
  });
  const at::Tensor last = ss[st.last()];
  return {ys, last.narrow(1, 0, H).clone(at::MemoryFormat::Contiguous),
          last.narrow(1, H, O).clone(at::MemoryFormat::Contiguous), ss.saved(), pre,
          norms.xn, norms.rn, norms.cn, norms.rstd};
}

Out9 fully_sequence(const at::Tensor& us, const at::Tensor& h0, const at::Tensor& y0,
                    const at::Tensor& w_mh, const at::Tensor& w_hy, const at::Tensor& w_my,
                    const std::optional<at::Tensor>& b_hy, const std::optional<at::Tensor>& valid,
                    c10::string_view activation, c10::string_view output_activation,
                    bool reverse, const std::optional<at::Tensor>& drop,
                    const std::optional<at::Tensor>& zone, const std::optional<at::Tensor>& ln_hh) {
  return run_forward(true, us, h0, y0, w_mh, w_hy, w_my, b_hy, valid, activation,
                     output_activation, reverse, drop, zone, ln_hh);
}

// Without a backward to feed: nothing saved (two slots, reused).
std::tuple<at::Tensor, at::Tensor, at::Tensor> fully_sequence_inference(
    const at::Tensor& us, const at::Tensor& h0, const at::Tensor& y0, const at::Tensor& w_mh,
    const at::Tensor& w_hy, const at::Tensor& w_my, const std::optional<at::Tensor>& b_hy,
    const std::optional<at::Tensor>& valid, c10::string_view activation,
    c10::string_view output_activation, bool reverse, const std::optional<at::Tensor>& drop,
    const std::optional<at::Tensor>& zone, const std::optional<at::Tensor>& ln_hh) {
  auto out = run_forward(false, us, h0, y0, w_mh, w_hy, w_my, b_hy, valid, activation,
                         output_activation, reverse, drop, zone, ln_hh);
  return {std::get<0>(out), std::get<1>(out), std::get<2>(out)};
}

// Returns (dus, dh0, dy0, dw_mh, dw_hy, dw_my, db_hy, dln_hh) (a (0,) tensor for an absent bias
// or ln_hh).
Out8 fully_sequence_backward(
    const at::Tensor& grad_ys, const at::Tensor& grad_h_T, const at::Tensor& grad_y_T,
    const at::Tensor& us, const at::Tensor& /*h0*/, const at::Tensor& /*y0*/,
    const at::Tensor& w_mh, const at::Tensor& w_hy, const at::Tensor& w_my,
    const std::optional<at::Tensor>& b_hy, const at::Tensor& ss, const at::Tensor& pre,
    const at::Tensor& /*xn*/,
    const at::Tensor& rn, const at::Tensor& /*cn*/, const at::Tensor& rstd,
    const std::optional<at::Tensor>& valid, c10::string_view activation,
    c10::string_view output_activation, bool reverse, const std::optional<at::Tensor>& drop,
    const std::optional<at::Tensor>& zone, const std::optional<at::Tensor>& ln_hh) {
  const Act act_h = hidden_act(activation), act_y = output_act(output_activation);
  const int64_t T = ss.size(0) - 1, N = ss.size(1), S = ss.size(2), H = w_mh.size(0),
                O = S - H;
  Steps st{T, reverse};
  Mask mask(valid, T, N);
  Regularize reg(drop, zone);
  // (split scales the output's gradient in place: a copy of it where zoning)
  const at::Tensor gy = reg.zoning() ? grad_ys.contiguous().clone() : grad_ys.contiguous();
  const at::Tensor ss_c = ss.contiguous();
  const at::Tensor w_m = at::cat({w_mh, w_my});
  // r m_{t-1} for every step (T N, S): what the products read
  const at::Tensor before = reg.before(ss_c.narrow(0, st.off_in(), T)).reshape({T * N, S});
  // [h~ ; y~] (T, N, S) as the forward had them before zoneout's merge (the slots hold the
  // zoned state there)
  const at::Tensor mt = reg.zoning() ? pre.contiguous() : at::Tensor();
  TORCH_CHECK(!mt.defined() || (mt.dim() == 3 && mt.size(0) == T && mt.size(2) == S),
              "fully_sequence_backward: zoneout needs the forward's pre (T, N, S)");
  const bool lnh = ln_hh.has_value();
  const at::Tensor rn_c = lnh ? rn.contiguous() : at::Tensor();
  const at::Tensor sd = lnh ? rstd.contiguous() : at::Tensor();
  const at::Tensor g_hh = ln_gain(ln_hh);
  at::Tensor dd = sequence_buffer({T, N, S}, ss.options());  // [da ; dz] ([dp ; dz] with LN_hh)
  at::Tensor du = sequence_buffer({T, N, H}, ss.options());  // da again, laid out as us
  at::Tensor dm = at::cat({grad_h_T, grad_y_T}, 1);     // [dh ; dy], (N, S)
  at::Tensor dm_next = at::empty_like(dm);
  const Product back_y(w_hy.t(), N);                   // dz_t W_hy
  const Product back_m(w_m.t(), N);                    // [da_t ; dz_t] W_m
  AT_DISPATCH_FLOATING_TYPES(ss.scalar_type(), "fully_sequence_backward", [&] {
    const scalar_t* sb = ss_c.data_ptr<scalar_t>();
    const scalar_t* gb = gy.data_ptr<scalar_t>();
    scalar_t* ddb = dd.data_ptr<scalar_t>();
    scalar_t* dub = du.data_ptr<scalar_t>();
    const scalar_t* rnb = lnh ? rn_c.data_ptr<scalar_t>() : nullptr;
    const scalar_t* sdb = lnh ? sd.data_ptr<scalar_t>() : nullptr;
    const scalar_t* ghh = lnh ? g_hh.data_ptr<scalar_t>() : nullptr;
    // [h~_t ; y~_t]'s rows (T N, S): the forward's (zoning), else the after-slots (where counting)
    const scalar_t* mtb = mt.defined() ? mt.data_ptr<scalar_t>() : sb + st.off_out() * N * S;
    for (int64_t i = 0; i < T; ++i) {
      const int64_t t = st.backward_step(i);
      const bool padded = mask.any_padded(t);
      at::Tensor carry_h, carry_y;  // d g, straight to m_{t-1}; dm and dy_t scaled by (1 - d)
      if (reg.zoning()) {
        at::Tensor dh_t = dm.narrow(1, 0, H), dy_t = dm.narrow(1, H, O);
        carry_h = reg.split(t, dh_t, at::Tensor(), valid, 0);
        carry_y = reg.split(t, dy_t, gy.select(0, t), valid, H);
      }
      const scalar_t* d = dm.data_ptr<scalar_t>();
      const scalar_t* m = mtb + t * N * S;  // [h~_t ; y~_t] where counting
      for_rows(N, O, [&](int64_t n) {
        scalar_t* dzr = ddb + (t * N + n) * S + H;
        if (padded && !mask.counts(t, n, N)) {  // carried: no gradient through the cell
          std::fill(dzr, dzr + O, scalar_t(0));
          return;
        }
        output_grad_row(m + n * S + H, gb + (t * N + n) * O, d + n * S + H, dzr, O, act_y);
      });
      at::Tensor dd_t = dd.select(0, t);
      at::Tensor da_t = dd_t.narrow(1, 0, H);
      back_y.mm_(da_t, dd_t.narrow(1, H, O));  // dz_t W_hy
      for_rows(N, H, [&](int64_t n) {
        scalar_t* a = ddb + (t * N + n) * S;
        scalar_t* ua = dub + (t * N + n) * H;
        if (padded && !mask.counts(t, n, N)) {
          std::fill(a, a + H, scalar_t(0));
          std::fill(ua, ua + H, scalar_t(0));
          return;
        }
        const scalar_t* h = m + n * S;
        const scalar_t* dh = d + n * S;
        for_lanes<scalar_t>(H, [&](auto tag, int64_t j) {
          const auto v = (load(a + j, tag) + load(dh + j, tag)) *
                         derivative(load(h + j, tag), act_h);
          store(v, a + j);
          store(v, ua + j);
        });
        if (rnb)  // dp_t = LN_hh's backward of da_t, in da_t's place for the products
          ln_row_backward(ua, ghh, rnb + (t * N + n) * H, sdb[(T + t) * N + n], H, a, false);
      });
      if (reg.dropping()) {  // r (W_m^T [da_t ; dz_t])
        dm_next.zero_();
        reg.add_back(back_m, dm_next, dd_t);
      } else {
        back_m.mm_(dm_next, dd_t);
      }
      if (padded) {  // a padded sequence carries its dm past the step (its [da ; dz] is zero)
        scalar_t* nx = dm_next.data_ptr<scalar_t>();
        for (int64_t n = 0; n < N; ++n) {
          if (!mask.counts(t, n, N)) std::copy(d + n * S, d + (n + 1) * S, nx + n * S);
        }
      }
      if (carry_h.defined()) {
        dm_next.narrow(1, 0, H).add_(carry_h);
        dm_next.narrow(1, H, O).add_(carry_y);
      }
      std::swap(dm, dm_next);
    }
  });
  const at::Tensor dd2 = dd.view({T * N, S});
  const at::Tensor dz2 = dd2.narrow(1, H, O);
  const at::Tensor h_new = (mt.defined() ? mt : ss_c.narrow(0, st.off_out(), T))
                               .reshape({T * N, S})
                               .narrow(1, 0, H);
  // dW_mh from [da ; dz]'s first columns: da, or dp with LN_hh
  const at::Tensor dp2 = lnh ? dd2.narrow(1, 0, H) : du.view({T * N, H});
  return {du,
          dm.narrow(1, 0, H).clone(at::MemoryFormat::Contiguous),
          dm.narrow(1, H, O).clone(at::MemoryFormat::Contiguous),
          at::mm(dp2.t(), before),
          at::mm(dz2.t(), h_new),
          at::mm(dz2.t(), before),
          b_hy ? dz2.sum(0) : absent(ss),
          lnh ? ln_param_grad(du, rn_c) : absent(ss)};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkit, CPU, m) {
  m.impl("fully_sequence", &fully_sequence);
  m.impl("fully_sequence_inference", &fully_sequence_inference);
  m.impl("fully_sequence_backward", &fully_sequence_backward);
}

}  // namespace rnnkit
