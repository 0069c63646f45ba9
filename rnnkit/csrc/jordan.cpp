// rnnkit::jordan_sequence and its backward on the CPU: the Jordan recurrence (the output layer
// fed back) as one op; phi_h tanh/relu/sigmoid, phi_y tanh/sigmoid/identity/softmax
// (activations.h).
//
// Forward (step t in the order the direction visits them; m_t marks the sequences still running;
// u_t = W_ih x_t + b_ih is the op's input, computed outside it):
//   a_t = u_t + b_yh + W_yh y_{t-1},  h_t = phi_h(a_t)                        (H)
//   z_t = W_hy h_t + b_hy,  y~_t = phi_y(z_t)                                 (O)
//   y_t = m_t y~_t + (1 - m_t) y_{t-1} (the carried state),  output_t = m_t y~_t
// A step is two GEMMs, each followed by one parallel pointwise pass over the rows: y_{t-1} W_yh^T
// into the step's hidden rows, then phi_h(. + u_t + b_yh) in place; h_t W_hy^T into the state's
// after-slot, then phi_y(. + b_hy) in place (a padded row takes y_{t-1}) and the output row.
// Saved: hs = h_t (T, N, H), the values; ss (T + 1, N, O), the slots of the carried state y (the
// initial state in the first; ss[t + off_out] is y~_t where sequence n counts at t), the values.
// (The pure-torch loop stores s = sigmoid(2 x) for a tanh layer, the value being 2 s - 1, since
// torch's CPU tanh is slow; here the pass computes tanh as 2 sigmoid(2 x) - 1 itself and stores
// the value, activations.h.) The inference op runs the same loop keeping one step's hidden rows
// and two state slots, reused (Slots, activations.h: bitwise the same outputs).
//
// Backward, going back over the steps from dy = dL/dy_T (dy_t: the output's gradient):
//   e_t = m_t (dy_t + dy),  dz_t = phi_y'(z_t) e_t   (softmax: y~_t (e_t - <y~_t, e_t>))
//   da_t = phi_h'(a_t) W_hy^T dz_t,  dy <- (1 - m_t) dy + W_yh^T da_t
// (phi' from the value: tanh 1 - v^2, sigmoid v (1 - v), relu [v > 0], identity 1); a step is a
// pass forming dz_t, the GEMM dz_t W_hy, a pass multiplying by phi_h' and the GEMM da_t W_yh (a
// padded row then carries its dy). Then over all T N rows at once:
//   du_t = da_t,  dW_yh = sum_t da_t y_{t-1}^T,  db_yh = sum da,  dW_hy = sum_t dz_t h_t^T,
//   db_hy = sum dz,  dy_0 = the dy left after the loop.
//
// Recurrent dropout and zoneout (drop r (N, O), zone d (T, N, O); Regularize in recurrence.h):
//   a_t = u_t + b_yh + W_yh (r y_{t-1}),  ...,  y^z_t = d_t y_{t-1} + (1 - d_t) y~_t
//   y_t = m_t y^z_t + (1 - m_t) y_{t-1},  output_t = m_t y^z_t
// the slot after step t holds the zoned y^z_t (what the next step reads, and the output). The
// inference loop's two slots still hold y_{t-1} in the other slot when the step merges. Backward:
// with g = m_t (dy_t + dy) (the output's and the carried gradient of y^z_t), the cell sees
// (1 - d_t) g in place of m_t (dy_t + dy) above and d_t g passes straight to dy_{t-1} (split):
//   e_t = (1 - d_t) g,  dz_t = phi_y'(z_t) e_t,  da_t = phi_h'(a_t) W_hy^T dz_t,
//   dy <- (1 - m_t) dy + d_t g + r (W_yh^T da_t),  dW_yh = sum_t da_t (r y_{t-1})^T
// where phi_y' (softmax: the whole row y~_t) needs y~_t, which the zoned slot no longer holds:
// the backward recomputes y~ = phi_y(W_hy h + b_hy) for all T N rows at once from the saved
// hidden values (one GEMM), so it holds for any weights d, not only 0/1.
//
// Layer normalization (ln_hh, (2, H): gain g and bias beta; layer_norm.h). The input site,
// LN_ih(W_ih x_t) + b_ih, is in u_t already (cell.precompute, outside the op); the recurrent one:
//   r_t = W_yh (r y_{t-1}),  rn_t = (r_t - mean(r_t)) / sigma(r_t),
//   a_t = u_t + b_yh + beta + g rn_t
// The step's GEMM still goes into the step's hidden rows, and the pass first normalizes the row
// into rn (saved (T, N, H) with its 1/sigma in rstd[1]; an inference call keeps one step's rows).
// Backward: da_t as above is dL/da_t; the recurrent product takes LN's backward of it,
//   dr_t = (1/sigma) (e - mean(e) - rn_t mean(e rn_t)),  e = g da_t   (zero at padded rows)
// in place of da_t in dy_{t-1} (+= r (W_yh^T dr_t)) and dW_yh = sum_t dr_t (r y_{t-1})^T;
// du_t = da_t and db_yh = sum da as before, and dln_hh = [sum da rn; sum da].
#include <torch/library.h>

#include "activations.h"
#include "layer_norm.h"

namespace rnnkit {
namespace {

using Out8 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                        at::Tensor, at::Tensor>;
using Out7 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                        at::Tensor>;

// The forward. `save`: keep hs (T, N, H) and the slots ss (T + 1, N, O) for the backward; else
// one step's hidden rows and two state slots, reused (hs and ss are then undefined). Returns
// (ys, y_T, hs, ss, xn, rn, cn, rstd), the last four layer normalization's (Norms).
Out8 run_forward(bool save, const at::Tensor& us_in, const at::Tensor& y0, const at::Tensor& w_yh,
                 const std::optional<at::Tensor>& b_yh, const at::Tensor& w_hy,
                 const std::optional<at::Tensor>& b_hy, const std::optional<at::Tensor>& valid,
                 c10::string_view activation, c10::string_view output_activation,
                 bool reverse, const std::optional<at::Tensor>& drop,
                 const std::optional<at::Tensor>& zone, const std::optional<at::Tensor>& ln_hh) {
  const Act act_h = hidden_act(activation), act_y = output_act(output_activation);
  const at::Tensor us = us_in.contiguous();
  const int64_t T = us.size(0), N = us.size(1), H = us.size(2), O = w_hy.size(0);
  Steps st{T, reverse};
  Mask mask(valid, T, N);
  Regularize reg(drop, zone);
  const bool zoning = reg.zoning();
  const Slots hs(save, T, 1, N, H, us.options());
  const Slots ss(save, T + 1, 2, N, O, us.options());
  Norms norms(std::nullopt, ln_hh, std::nullopt);  // (the input site is in us)
  norms.allocate(save, T, N, H, 0, us);
  at::Tensor ys = sequence_buffer({T, N, O}, us.options());
  ss[st.first()].copy_(y0);
  // b_yh (+ beta of LN_hh)
  at::Tensor bh = norms.bias(b_yh ? *b_yh : at::Tensor());
  if (bh.defined()) bh = bh.contiguous();
  const at::Tensor by = b_hy ? b_hy->contiguous() : at::Tensor();
  const at::Tensor a_hh = ln_gain(norms.hh);
  const Product rec_h(w_yh, N);  // y_{t-1} W_yh^T
  const Product rec_y(w_hy, N);  // h_t W_hy^T
  AT_DISPATCH_FLOATING_TYPES(us.scalar_type(), "jordan_sequence", [&] {
    const scalar_t* bhp = bh.defined() ? bh.data_ptr<scalar_t>() : nullptr;
    const scalar_t* byp = by.defined() ? by.data_ptr<scalar_t>() : nullptr;
    const scalar_t* ahh = norms.hh ? a_hh.data_ptr<scalar_t>() : nullptr;
    scalar_t* rnb = norms.hh ? norms.rn.data_ptr<scalar_t>() : nullptr;
    scalar_t* sdb = norms.on() ? norms.rstd.data_ptr<scalar_t>() : nullptr;  // (3, T, N)
    for (int64_t i = 0; i < T; ++i) {
      const int64_t t = st.forward_step(i);
      const int64_t tk = save ? t : 0;  // the step's rows of rn
      at::Tensor h_t = hs[t], y_in = ss[t + st.off_in()], y_out = ss[t + st.off_out()];
      rec_h.mm_(h_t, reg.input(y_in));
      scalar_t* hb = h_t.data_ptr<scalar_t>();
      const scalar_t* ub = us.data_ptr<scalar_t>() + t * N * H;
      for_rows(N, H, [&](int64_t n) {
        scalar_t* h = hb + n * H;
        const scalar_t* u = ub + n * H;
        if (rnb) {  // a = u + b + g LN(W_yh y_{t-1}) (beta in b)
          scalar_t* rn = rnb + (tk * N + n) * H;
          sdb[(T + t) * N + n] = ln_row(h, H, rn);
          for_lanes<scalar_t>(H, [&](auto tag, int64_t j) {
            auto a = load(ahh + j, tag) * load(rn + j, tag) + load(u + j, tag);
            if (bhp) a = a + load(bhp + j, tag);
            store(activate(a, act_h), h + j);
          });
          return;
        }
        for_lanes<scalar_t>(H, [&](auto tag, int64_t j) {
          auto a = load(h + j, tag) + load(u + j, tag);
          if (bhp) a = a + load(bhp + j, tag);
          store(activate(a, act_h), h + j);
        });
      });
      rec_y.mm_(y_out, h_t);
      const bool padded = mask.any_padded(t);
      const scalar_t* yi = y_in.data_ptr<scalar_t>();
      scalar_t* yo = y_out.data_ptr<scalar_t>();
      scalar_t* ob = ys.data_ptr<scalar_t>() + t * N * O;
      for_rows(N, O, [&](int64_t n) {
        scalar_t* y = yo + n * O;
        scalar_t* out = ob + n * O;
        if (padded && !mask.counts(t, n, N)) {  // the state is carried, the output zero
          std::copy(yi + n * O, yi + (n + 1) * O, y);
          std::fill(out, out + O, scalar_t(0));
          return;
        }
        output_row(y, byp, zoning ? nullptr : out, O, act_y);  // (zoned: output after merge)
      });
      if (zoning) {  // y^z_t = lerp(y~_t, y_{t-1}, d_t) (a padded row: lerp(y, y, d) = y), output
        reg.merge(t, y_out, y_in, 0);
        for_rows(N, O, [&](int64_t n) {
          if (!padded || mask.counts(t, n, N)) std::copy(yo + n * O, yo + (n + 1) * O, ob + n * O);
        });
      }
    }
  });
  return {ys, ss[st.last()].clone(), hs.saved(), ss.saved(), norms.xn, norms.rn, norms.cn,
          norms.rstd};
}

Out8 jordan_sequence(const at::Tensor& us, const at::Tensor& y0, const at::Tensor& w_yh,
                     const std::optional<at::Tensor>& b_yh, const at::Tensor& w_hy,
                     const std::optional<at::Tensor>& b_hy,
                     const std::optional<at::Tensor>& valid, c10::string_view activation,
                     c10::string_view output_activation, bool reverse,
                     const std::optional<at::Tensor>& drop, const std::optional<at::Tensor>& zone,
                     const std::optional<at::Tensor>& ln_hh) {
  return run_forward(true, us, y0, w_yh, b_yh, w_hy, b_hy, valid, activation, output_activation,
                     reverse, drop, zone, ln_hh);
}

// Without a backward to feed: nothing saved (one step's hidden rows, two state slots).
std::tuple<at::Tensor, at::Tensor> jordan_sequence_inference(
    const at::Tensor& us, const at::Tensor& y0, const at::Tensor& w_yh,
    const std::optional<at::Tensor>& b_yh, const at::Tensor& w_hy,
    const std::optional<at::Tensor>& b_hy, const std::optional<at::Tensor>& valid,
    c10::string_view activation, c10::string_view output_activation, bool reverse,
    const std::optional<at::Tensor>& drop, const std::optional<at::Tensor>& zone,
    const std::optional<at::Tensor>& ln_hh) {
  auto out = run_forward(false, us, y0, w_yh, b_yh, w_hy, b_hy, valid, activation,
                         output_activation, reverse, drop, zone, ln_hh);
  return {std::get<0>(out), std::get<1>(out)};
}

// Returns (dus, dy0, dw_yh, db_yh, dw_hy, db_hy, dln_hh) ((0,) tensors for the absent biases
// and without layer normalization).
Out7 jordan_sequence_backward(
    const at::Tensor& grad_ys, const at::Tensor& grad_y_T, const at::Tensor& us,
    const at::Tensor& /*y0*/, const at::Tensor& w_yh, const std::optional<at::Tensor>& b_yh,
    const at::Tensor& w_hy, const std::optional<at::Tensor>& b_hy, const at::Tensor& hs,
    const at::Tensor& ss, const at::Tensor& /*xn*/, const at::Tensor& rn,
    const at::Tensor& /*cn*/, const at::Tensor& rstd, const std::optional<at::Tensor>& valid,
    c10::string_view activation, c10::string_view output_activation, bool reverse,
    const std::optional<at::Tensor>& drop, const std::optional<at::Tensor>& zone,
    const std::optional<at::Tensor>& ln_hh) {
  const Act act_h = hidden_act(activation), act_y = output_act(output_activation);
  const int64_t T = hs.size(0), N = hs.size(1), H = hs.size(2), O = ss.size(2);
  Steps st{T, reverse};
  Mask mask(valid, T, N);
  Regularize reg(drop, zone);
  // (split scales the output's gradient in place: a copy of it where zoning)
  const at::Tensor gy = reg.zoning() ? grad_ys.contiguous().clone() : grad_ys.contiguous();
  const at::Tensor hs_c = hs.contiguous(), ss_c = ss.contiguous();
  at::Tensor yt;  // y~ (T, N, O), recomputed where zoneout left y^z in the slots
  if (reg.zoning()) {
    yt = at::mm(hs_c.view({T * N, H}), w_hy.t()).view({T, N, O});
  }
  at::Tensor da = sequence_buffer({T, N, H}, hs.options());
  at::Tensor dz = sequence_buffer({T, N, O}, hs.options());
  const bool lnh = ln_hh.has_value();
  at::Tensor drn = lnh ? sequence_buffer({T, N, H}, hs.options()) : absent(hs);  // d(W_yh r y_{t-1})
  const at::Tensor rn_c = rn.contiguous(), sd = rstd.contiguous();
  const at::Tensor a_hh = ln_gain(ln_hh);
  at::Tensor dy = grad_y_T.contiguous().clone();
  at::Tensor dy_next = at::empty_like(dy);
  const Product back_y(w_hy.t(), N);  // dz_t W_hy
  const Product back_h(w_yh.t(), N);  // da_t W_yh
  AT_DISPATCH_FLOATING_TYPES(hs.scalar_type(), "jordan_sequence_backward", [&] {
    const scalar_t* hb = hs_c.data_ptr<scalar_t>();
    const scalar_t* sb = ss_c.data_ptr<scalar_t>();
    const scalar_t* gb = gy.data_ptr<scalar_t>();
    scalar_t* dab = da.data_ptr<scalar_t>();
    scalar_t* dzb = dz.data_ptr<scalar_t>();
    scalar_t* drnb = lnh ? drn.data_ptr<scalar_t>() : nullptr;
    const scalar_t* rnb = lnh ? rn_c.data_ptr<scalar_t>() : nullptr;
    const scalar_t* sdb = lnh ? sd.data_ptr<scalar_t>() : nullptr;
    const scalar_t* ahh = lnh ? a_hh.data_ptr<scalar_t>() : nullptr;
    const scalar_t* ytb = nullptr;  // y~_t's rows where recomputed, else the slots hold them
    if (yt.defined()) {  // y~ = phi_y(h W_hy^T + b_hy), row by row as the forward's pass
      const at::Tensor bh = b_hy ? b_hy->contiguous() : at::Tensor();
      const scalar_t* byp = bh.defined() ? bh.data_ptr<scalar_t>() : nullptr;
      scalar_t* yb = yt.data_ptr<scalar_t>();
      for_rows(T * N, O, [&](int64_t r) {
        output_row(yb + r * O, byp, static_cast<scalar_t*>(nullptr), O, act_y);
      });
      ytb = yb;
    }
    for (int64_t i = 0; i < T; ++i) {
      const int64_t t = st.backward_step(i);
      const bool padded = mask.any_padded(t);
      at::Tensor carry;  // d_t g, straight to dy_{t-1}; dy and dy_t scaled by (1 - d_t)
      if (reg.zoning()) carry = reg.split(t, dy, gy.select(0, t), valid, 0);
      const scalar_t* d = dy.data_ptr<scalar_t>();
      for_rows(N, O, [&](int64_t n) {
        scalar_t* dzr = dzb + (t * N + n) * O;
        if (padded && !mask.counts(t, n, N)) {  // carried: no gradient through the cell
          std::fill(dzr, dzr + O, scalar_t(0));
          return;
        }
        const scalar_t* y = ytb ? ytb + (t * N + n) * O : sb + ((t + st.off_out()) * N + n) * O;
        output_grad_row(y, gb + (t * N + n) * O, d + n * O, dzr, O, act_y);
      });
      at::Tensor da_t = da.select(0, t);
      back_y.mm_(da_t, dz.select(0, t));
      for_rows(N, H, [&](int64_t n) {
        scalar_t* a = dab + (t * N + n) * H;
        const scalar_t* h = hb + (t * N + n) * H;
        for_lanes<scalar_t>(H, [&](auto tag, int64_t j) {
          store(load(a + j, tag) * derivative(load(h + j, tag), act_h), a + j);
        });
        if (!drnb) return;
        const int64_t row = t * N + n;
        if (padded && !mask.counts(t, n, N)) {  // (its da row is zero)
          std::fill(drnb + row * H, drnb + (row + 1) * H, scalar_t(0));
          return;
        }
        // d(W_yh r y_{t-1}) = LN_hh's backward of da_t
        ln_row_backward(a, ahh, rnb + row * H, sdb[(T + t) * N + n], H, drnb + row * H, false);
      });
      const at::Tensor back_t = lnh ? drn.select(0, t) : da_t;
      if (reg.dropping()) {  // r (W_yh^T dr_t)
        dy_next.zero_();
        reg.add_back(back_h, dy_next, back_t);
      } else {
        back_h.mm_(dy_next, back_t);
      }
      if (padded) {  // a padded sequence carries its dy past the step (its da row is zero)
        scalar_t* nx = dy_next.data_ptr<scalar_t>();
        for (int64_t n = 0; n < N; ++n) {
          if (!mask.counts(t, n, N)) std::copy(d + n * O, d + (n + 1) * O, nx + n * O);
        }
      }
      if (carry.defined()) dy_next.add_(carry);
      std::swap(dy, dy_next);
    }
  });
  const at::Tensor da2 = da.view({T * N, H}), dz2 = dz.view({T * N, O});
  const at::Tensor before = reg.before(ss_c.narrow(0, st.off_in(), T)).reshape({T * N, O});
  const at::Tensor dr2 = lnh ? drn.view({T * N, H}) : da2;
  return {da,
          dy,
          at::mm(dr2.t(), before),
          b_yh ? da2.sum(0) : absent(hs),
          at::mm(dz2.t(), hs_c.view({T * N, H})),
          b_hy ? dz2.sum(0) : absent(hs),
          lnh ? ln_param_grad(da2, rn_c) : absent(hs)};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkit, CPU, m) {
  m.impl("jordan_sequence", &jordan_sequence);
  m.impl("jordan_sequence_inference", &jordan_sequence_inference);
  m.impl("jordan_sequence_backward", &jordan_sequence_backward);
}

}  // namespace rnnkit
