// rnnkit::scrn_sequence and its backward on the CPU: the SCRN recurrence (the slow context s
// with a fixed or learned alpha, then the sigmoid Elman recurrence of h) as one op.
//
// Forward (step t in the order the direction visits them; m_t marks the sequences still
// running; us = [u^s ; u^h] = [(1 - alpha) B x ; A x + b], precomputed outside the op):
//   s~_t = u^s_t + alpha s_{t-1},  s_t = m_t s~_t + (1 - m_t) s_{t-1}
//   a_t = u^h_t + P s_t (one GEMM for all steps) + R h_{t-1} (a GEMM a step)
//   h~_t = sigmoid(a_t),  h_t = m_t h~_t + (1 - m_t) h_{t-1},  y_t = m_t [h~_t ; s~_t]
// The context does not depend on h: it runs first, one parallel pass over the rows, each row
// going through all its steps; then P s_t for all steps goes into the h halves of the
// after-slots. A step is the GEMM adding R h_{t-1} there and one parallel pointwise pass (+ u^h_t,
// sigmoid, the carry at a padded step, y^h_t).
// Saved: ss (T+1, N, H+S), the slots of the carried [h ; s] (as the pure-torch loop's).
//
// Backward, going back over the steps from dh = dL/dh_T, ds = dL/ds_T:
//   da_t = m_t (dy^h_t + dh_t) h~_t (1 - h~_t),  dh_{t-1} = (1 - m_t) dh_t + R^T da_t
// then for all steps in one GEMM g_t = dy^s_t + P^T da_t, and per row the context loop
//   ds~_t = m_t (ds_t + g_t),  ds_{t-1} = (1 - m_t) ds_t + alpha ds~_t
// and over all T N rows: dus = [ds~ ; da], dP = sum_t da_t s_t^T, dR = sum_t da_t h_{t-1}^T,
// dalpha = sum_{t,n} ds~_t s_{t-1} (a learned alpha); dh_0, ds_0 the dh, ds left after the loops.
//
// Recurrent dropout and zoneout (drop m (N, H), zone d = [d^h | d^s] (T, N, H + S); see
// Regularize in recurrence.h). Forward: the whole step first, from the unzoned s~,
//   s~_t = u^s_t + alpha s_{t-1},  h~_t = sigmoid(u^h_t + P s~_t + R (m h_{t-1})),
// then the state zoned, h_t = d^h h_{t-1} + (1 - d^h) h~_t, s_t = d^s s_{t-1} + (1 - d^s) s~_t
// (the carry at a padded step after that), y_t = m_t [h_t ; s_t] of the zoned state. The context
// loop keeps s~ apart (P s~_t for all steps), since the slot holds the zoned s_t. Backward (0/1
// weights): with G^h = dh_t + m_t dy^h_t, G^s = ds_t + m_t dy^s_t the gradients of the zoned
// h_t, s_t,
//   da_t = m_t (1 - d^h) G^h h~_t (1 - h~_t),  dh_{t-1} = d^h G^h + m (R^T da_t)  (+ the carry)
//   ds~_t = m_t ((1 - d^s) G^s + P^T da_t),  ds_{t-1} = alpha ds~_t + d^s G^s     (+ the carry)
// (h~ read off the slot: where d^h = 1 it holds h_{t-1}, but then da_t = 0), dR = sum_t da_t
// (m h_{t-1})^T, and dP = sum_t da_t s~_t^T with s~_t = u^s_t + alpha s_{t-1} made again from
// the inputs: where d^s = 1 the slot holds s_{t-1}, but h~ was computed from s~ (as the LSTM's
// c~). dus, dalpha as above (ds~ there is this one).
//
// Layer normalization of the recurrent product (ln_hh = [gamma; beta] (2, H); layer_norm.h; the
// input product's LN_ih(A x) + b is in u^h, from cell.precompute outside the op):
//   r_t = R (m h_{t-1}) (a GEMM a step, into a scratch row block),  r^_t = (r_t - mu) rstd_t,
//   a_t = u^h_t + P s~_t + gamma r^_t + beta
// (the row statistics over the H units, for every row, padded ones too). Saved: rn = r^ (T, N, H),
// rstd's row 1 = rstd_t (T, N) (rows 0 and 2, xn and cn unused). Backward: da_t as above, then
//   dr_t = rstd_t (e - mean(e) - r^_t mean(e r^_t)),  e = gamma da_t   (0 at a padded row)
// goes where da_t went through R: dh_{t-1} gets m (R^T dr_t), dR = sum_t dr_t (m h_{t-1})^T;
// dP, dus and the context loop keep da_t; dgamma = sum da_t r^_t, dbeta = sum da_t.
#include <torch/library.h>

#include <cmath>

#include "layer_norm.h"

namespace rnnkit {
namespace {

using Out8 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                        at::Tensor, at::Tensor>;

// save: keep ss for a backward (else the loop still runs in a slot buffer, and ys is a view of it)
Out8 run_forward(bool save, const at::Tensor& us_in, const at::Tensor& h0, const at::Tensor& s0,
                 const std::optional<at::Tensor>& alpha, const at::Tensor& w_P,
                 const at::Tensor& w_R, const std::optional<at::Tensor>& valid,
                 double fixed_alpha, bool reverse, const std::optional<at::Tensor>& drop,
                 const std::optional<at::Tensor>& zone, const std::optional<at::Tensor>& ln_hh) {
  const int64_t T = us_in.size(0), N = us_in.size(1), H = w_P.size(0), S = w_P.size(1);
  const int64_t W = H + S;
  Steps st{T, reverse};
  Mask mask(valid, T, N);
  Regularize reg(drop, zone);
  at::Tensor us = us_in.contiguous();
  Norms norms(std::nullopt, ln_hh, std::nullopt);
  norms.allocate(save, T, N, H, 0, us);
  // LN_hh: R (m h_{t-1}) before it (N, H), and its gain and bias
  at::Tensor rbuf = norms.hh ? at::empty({N, H}, us.options()) : at::Tensor();
  at::Tensor g_hh = ln_gain(norms.hh);
  at::Tensor b_hh = norms.hh ? norms.hh->select(0, 1).contiguous() : at::Tensor();
  at::Tensor al = alpha.has_value() ? alpha->contiguous() : at::Tensor();
  at::Tensor ss = sequence_buffer({T + 1, N, W}, us.options());
  at::Tensor ys = save ? sequence_buffer({T, N, W}, us.options()) : at::Tensor();
  // zoning: the zone weights read by the context loop, and s~ (T, N, S) kept apart for P s~
  at::Tensor zc = reg.zoning() ? zone->contiguous() : at::Tensor();
  at::Tensor s_new = reg.zoning() ? sequence_buffer({T, N, S}, us.options()) : at::Tensor();
  ss.select(0, st.first()).narrow(1, 0, H).copy_(h0);
  ss.select(0, st.first()).narrow(1, H, S).copy_(s0);
  at::Tensor after = ss.narrow(0, st.off_out(), T);  // (T, N, H + S), contiguous
  AT_DISPATCH_FLOATING_TYPES(us.scalar_type(), "scrn_sequence", [&] {
    scalar_t* sb = ss.data_ptr<scalar_t>();
    const scalar_t* ub = us.data_ptr<scalar_t>();
    scalar_t* yb = save ? ys.data_ptr<scalar_t>() : nullptr;
    const scalar_t* ab = al.defined() ? al.data_ptr<scalar_t>() : nullptr;
    const scalar_t fa = static_cast<scalar_t>(fixed_alpha);
    const scalar_t* zb = zc.defined() ? zc.data_ptr<scalar_t>() : nullptr;
    scalar_t* nb = s_new.defined() ? s_new.data_ptr<scalar_t>() : nullptr;
    // The context, a row at a time through all its steps (s kept in registers).
    for_rows(N, T * S, [&](int64_t n) {
      for_lanes<scalar_t>(S, [&](auto tag, int64_t j) {
        using V = decltype(tag);
        const V a = ab ? load(ab + j, tag) : V(fa);
        V s = load(sb + (st.first() * N + n) * W + H + j, tag);
        for (int64_t i = 0; i < T; ++i) {
          const int64_t t = st.forward_step(i);
          const bool counts = mask.counts(t, n, N);
          if (nb) {  // zoneout: s~ kept for P s~, the slot gets the zoned s_t
            const V s_t = counts ? load(ub + (t * N + n) * W + j, tag) + a * s : s;
            store(s_t, nb + (t * N + n) * S + j);
            if (counts) s = lerp_w(s_t, s, load(zb + (t * N + n) * W + H + j, tag));
          } else if (counts) {
            s = load(ub + (t * N + n) * W + j, tag) + a * s;
          }
          store(s, sb + ((t + st.off_out()) * N + n) * W + H + j);
          if (yb) store(counts ? s : V(scalar_t(0)), yb + (t * N + n) * W + H + j);
        }
      });
    });
    // s~_t P^T for all steps, into the h half of the after-slots (the pass adds u^h_t)
    at::Tensor a2 = after.narrow(2, 0, H).reshape({T * N, H});
    at::Tensor s_tilde = s_new.defined() ? s_new.view({T * N, S})
                                         : after.narrow(2, H, S).reshape({T * N, S});
    at::mm_out(a2, s_tilde, w_P.t());
    const Product rec(w_R, N);  // h_{t-1} R^T
    scalar_t* rbb = norms.hh ? rbuf.data_ptr<scalar_t>() : nullptr;
    scalar_t* rnb = norms.hh ? norms.rn.data_ptr<scalar_t>() : nullptr;
    scalar_t* sdb = norms.hh ? norms.rstd.data_ptr<scalar_t>() : nullptr;  // (3, T, N)
    const scalar_t* ghh = norms.hh ? g_hh.data_ptr<scalar_t>() : nullptr;
    const scalar_t* bhh = norms.hh ? b_hh.data_ptr<scalar_t>() : nullptr;
    for (int64_t i = 0; i < T; ++i) {
      const int64_t t = st.forward_step(i);
      const int64_t s_in = t + st.off_in(), s_out = t + st.off_out();
      const int64_t tk = save ? t : 0;  // the step's rows of rn
      at::Tensor a_t = ss.select(0, s_out).narrow(1, 0, H);
      if (rbb) {
        rec.mm_(rbuf, reg.input(ss.select(0, s_in).narrow(1, 0, H)));  // r_t = (m) h_{t-1} R^T
      } else {
        rec.add_(a_t, reg.input(ss.select(0, s_in).narrow(1, 0, H)));  // (m) h_{t-1} R^T
      }
      const bool padded = mask.any_padded(t);
      for_rows(N, H, [&](int64_t n) {
        const scalar_t* hi = sb + (s_in * N + n) * W;
        scalar_t* ho = sb + (s_out * N + n) * W;
        scalar_t* y = yb ? yb + (t * N + n) * W : nullptr;
        const scalar_t* u = ub + (t * N + n) * W + S;
        const bool counts = !padded || mask.counts(t, n, N);
        scalar_t* rn_row = nullptr;  // LN_hh: r^_t (every row: the saved rn stays finite)
        if (rbb) {
          rn_row = rnb + (tk * N + n) * H;
          sdb[(T + t) * N + n] = ln_row(rbb + n * H, H, rn_row);
        }
        for_lanes<scalar_t>(H, [&](auto tag, int64_t j) {
          using V = decltype(tag);
          if (!counts) {
            store(load(hi + j, tag), ho + j);
            if (y) store(V(scalar_t(0)), y + j);
            return;
          }
          V a = load(ho + j, tag) + load(u + j, tag);
          if (rn_row) a = a + (load(ghh + j, tag) * load(rn_row + j, tag) + load(bhh + j, tag));
          const V h = sigm(a);
          store(h, ho + j);
          if (y) store(h, y + j);
        });
      });
      reg.merge(t, ss.select(0, s_out).narrow(1, 0, H), ss.select(0, s_in).narrow(1, 0, H), 0);
    }
  });
  if (save && reg.zoning()) {  // y^h_t of the zoned h_t (the context loop wrote the zoned s_t)
    at::Tensor y_h = ys.narrow(2, 0, H);
    y_h.copy_(after.narrow(2, 0, H));
    if (valid.has_value()) y_h.mul_(valid->unsqueeze(2));
  }
  at::Tensor last = ss.select(0, st.last());
  at::Tensor h_T = last.narrow(1, 0, H).clone(at::MemoryFormat::Contiguous);
  at::Tensor s_T = last.narrow(1, H, S).clone(at::MemoryFormat::Contiguous);
  if (!save) {  // the after-slots are the outputs (a contiguous block of ss), masked in place
    ys = after;
    if (valid.has_value()) ys.mul_(valid->unsqueeze(2));
    return {ys, h_T, s_T, absent(us), norms.xn, norms.rn, norms.cn, norms.rstd};
  }
  return {ys, h_T, s_T, ss, norms.xn, norms.rn, norms.cn, norms.rstd};
}

Out8 scrn_sequence(const at::Tensor& us, const at::Tensor& h0, const at::Tensor& s0,
                   const std::optional<at::Tensor>& alpha, const at::Tensor& w_P,
                   const at::Tensor& w_R, const std::optional<at::Tensor>& valid,
                   double fixed_alpha, bool reverse, const std::optional<at::Tensor>& drop,
                   const std::optional<at::Tensor>& zone, const std::optional<at::Tensor>& ln_hh) {
  return run_forward(true, us, h0, s0, alpha, w_P, w_R, valid, fixed_alpha, reverse, drop, zone,
                     ln_hh);
}

// Without a backward to feed: ys is the slot buffer's after-slots (no copy), ss is not returned.
std::tuple<at::Tensor, at::Tensor, at::Tensor> scrn_sequence_inference(
    const at::Tensor& us, const at::Tensor& h0, const at::Tensor& s0,
    const std::optional<at::Tensor>& alpha, const at::Tensor& w_P, const at::Tensor& w_R,
    const std::optional<at::Tensor>& valid, double fixed_alpha, bool reverse,
    const std::optional<at::Tensor>& drop, const std::optional<at::Tensor>& zone,
    const std::optional<at::Tensor>& ln_hh) {
  auto out = run_forward(false, us, h0, s0, alpha, w_P, w_R, valid, fixed_alpha, reverse, drop,
                         zone, ln_hh);
  return {std::get<0>(out), std::get<1>(out), std::get<2>(out)};
}

// Returns (dus, dh0, ds0, dalpha ((0,) for a fixed alpha), dP, dR, dln_hh ((0,) without it)).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
scrn_sequence_backward(const at::Tensor& grad_ys, const at::Tensor& grad_h_T,
                       const at::Tensor& grad_s_T, const at::Tensor& us, const at::Tensor& /*h0*/,
                       const at::Tensor& /*s0*/, const std::optional<at::Tensor>& alpha,
                       const at::Tensor& w_P, const at::Tensor& w_R, const at::Tensor& ss,
                       const at::Tensor& /*xn*/, const at::Tensor& rn, const at::Tensor& /*cn*/,
                       const at::Tensor& rstd, const std::optional<at::Tensor>& valid,
                       double fixed_alpha, bool reverse, const std::optional<at::Tensor>& drop,
                       const std::optional<at::Tensor>& zone,
                       const std::optional<at::Tensor>& ln_hh) {
  const int64_t T = us.size(0), N = us.size(1), H = w_P.size(0), S = w_P.size(1);
  const int64_t W = H + S;
  Steps st{T, reverse};
  Mask mask(valid, T, N);
  Regularize reg(drop, zone);
  // (zoneout scales dy^h in place: a copy)
  at::Tensor gy = reg.zoning() ? grad_ys.contiguous().clone() : grad_ys.contiguous();
  at::Tensor ss_c = ss.contiguous();
  at::Tensor zc = reg.zoning() ? zone->contiguous() : at::Tensor();
  at::Tensor al = alpha.has_value() ? alpha->contiguous() : at::Tensor();
  at::Tensor du = sequence_buffer({T, N, W}, us.options());  // [ds~_t ; da_t]
  at::Tensor da = du.narrow(2, S, H);
  at::Tensor dh = grad_h_T.contiguous().clone();
  at::Tensor dh_next = at::empty_like(dh);
  at::Tensor ds = grad_s_T.contiguous().clone();  // the context loop's ds_t, per row
  at::Tensor acc = al.defined() ? at::zeros({N, S}, us.options()) : at::Tensor();
  // s~_t for dP: the after-slots, or (zoning: a slot may hold s_{t-1}) u^s_t + alpha s_{t-1}
  at::Tensor s_after;
  if (reg.zoning()) {
    at::Tensor s_prev = ss_c.narrow(0, st.off_in(), T).narrow(2, H, S);
    at::Tensor u_s = us.narrow(2, 0, S);
    s_after = (al.defined() ? u_s + s_prev * al : u_s + s_prev * fixed_alpha).reshape({T * N, S});
  } else {
    s_after = ss_c.narrow(0, st.off_out(), T).narrow(2, H, S).reshape({T * N, S});
  }
  at::Tensor da2 = da.reshape({T * N, H});  // (a view: du's rows)
  const bool lnh = ln_hh.has_value();
  at::Tensor drn = lnh ? sequence_buffer({T, N, H}, us.options()) : at::Tensor();  // dr_t
  at::Tensor rn_c = lnh ? rn.contiguous() : at::Tensor();
  at::Tensor sd = lnh ? rstd.contiguous() : at::Tensor();
  at::Tensor g_hh = ln_gain(ln_hh);
  const Product rec(w_R.t(), N);  // da_t R
  AT_DISPATCH_FLOATING_TYPES(us.scalar_type(), "scrn_sequence_backward", [&] {
    const scalar_t* sb = ss_c.data_ptr<scalar_t>();
    const scalar_t* yb = gy.data_ptr<scalar_t>();
    scalar_t* db = du.data_ptr<scalar_t>();
    scalar_t* drnb = lnh ? drn.data_ptr<scalar_t>() : nullptr;
    const scalar_t* rnb = lnh ? rn_c.data_ptr<scalar_t>() : nullptr;
    const scalar_t* sdb = lnh ? sd.data_ptr<scalar_t>() : nullptr;
    const scalar_t* ghh = lnh ? g_hh.data_ptr<scalar_t>() : nullptr;
    // The h loop.
    for (int64_t i = 0; i < T; ++i) {
      const int64_t t = st.backward_step(i);
      const bool padded = mask.any_padded(t);
      at::Tensor carry;  // d^h G^h, straight to h_{t-1}; dh and dy^h_t scaled by 1 - d^h
      if (reg.zoning()) carry = reg.split(t, dh, gy.select(0, t).narrow(1, 0, H), valid, 0);
      const scalar_t* dhp = dh.data_ptr<scalar_t>();
      scalar_t* dhn = dh_next.data_ptr<scalar_t>();
      for_rows(N, H, [&](int64_t n) {
        scalar_t* d = db + (t * N + n) * W + S;
        if (padded && !mask.counts(t, n, N)) {  // carried: no gradient through the cell
          std::fill(d, d + H, scalar_t(0));
          if (drnb) std::fill(drnb + (t * N + n) * H, drnb + (t * N + n + 1) * H, scalar_t(0));
          std::copy(dhp + n * H, dhp + (n + 1) * H, dhn + n * H);
          return;
        }
        const scalar_t* h = sb + ((t + st.off_out()) * N + n) * W;
        const scalar_t* y = yb + (t * N + n) * W;
        for_lanes<scalar_t>(H, [&](auto tag, int64_t j) {
          using V = decltype(tag);
          const V hv = load(h + j, tag);
          store((load(y + j, tag) + load(dhp + n * H + j, tag)) * hv * (V(scalar_t(1)) - hv),
                d + j);
        });
        if (drnb)  // dr_t: LN_hh's backward of da_t
          ln_row_backward(d, ghh, rnb + (t * N + n) * H, sdb[(T + t) * N + n], H,
                          drnb + (t * N + n) * H, false);
        if (padded) std::fill(dhn + n * H, dhn + (n + 1) * H, scalar_t(0));
      });
      // what goes back through R: da_t, or dr_t
      at::Tensor da_t = lnh ? drn.select(0, t) : da.select(0, t);
      if (padded) {
        reg.add_back(rec, dh_next, da_t);  // dh_{t-1} = (1 - m_t) dh_t + (da_t R) m
      } else if (reg.dropping()) {
        dh_next.zero_();
        reg.add_back(rec, dh_next, da_t);
      } else {
        rec.mm_(dh_next, da_t);
      }
      if (carry.defined()) dh_next.add_(carry);
      std::swap(dh, dh_next);
    }
    // da_t P for all steps, into the s half of dus (the context loop adds dy^s_t)
    at::Tensor g2 = du.narrow(2, 0, S).reshape({T * N, S});
    at::mm_out(g2, da2, w_P);
    // The context loop, a row at a time through all its steps (ds kept in registers).
    const scalar_t* ab = al.defined() ? al.data_ptr<scalar_t>() : nullptr;
    const scalar_t fa = static_cast<scalar_t>(fixed_alpha);
    const scalar_t* zb = zc.defined() ? zc.data_ptr<scalar_t>() : nullptr;
    scalar_t* dsb = ds.data_ptr<scalar_t>();
    scalar_t* accb = acc.defined() ? acc.data_ptr<scalar_t>() : nullptr;
    for_rows(N, T * S, [&](int64_t n) {
      for_lanes<scalar_t>(S, [&](auto tag, int64_t j) {
        using V = decltype(tag);
        const V a = ab ? load(ab + j, tag) : V(fa);
        V d = load(dsb + n * S + j, tag), ga(scalar_t(0));
        for (int64_t i = 0; i < T; ++i) {
          const int64_t t = st.backward_step(i);
          scalar_t* g = db + (t * N + n) * W + j;
          if (!mask.counts(t, n, N)) {
            store(V(scalar_t(0)), g);
            continue;
          }
          if (zb) {  // G^s = ds_t + dy^s_t: (1 - d^s) G^s to s~_t, d^s G^s to s_{t-1}
            const V G = load(yb + (t * N + n) * W + H + j, tag) + d;
            const V w = load(zb + (t * N + n) * W + H + j, tag);
            const V e = load(g, tag) + (V(scalar_t(1)) - w) * G;  // ds~_t
            store(e, g);
            if (accb) ga = ga + e * load(sb + ((t + st.off_in()) * N + n) * W + H + j, tag);
            d = a * e + w * G;
            continue;
          }
          const V e = load(g, tag) + load(yb + (t * N + n) * W + H + j, tag) + d;  // ds~_t
          store(e, g);
          if (accb) ga = ga + e * load(sb + ((t + st.off_in()) * N + n) * W + H + j, tag);
          d = a * e;
        }
        store(d, dsb + n * S + j);
        if (accb) store(ga, accb + n * S + j);
      });
    });
  });
  at::Tensor h_before =
      reg.before(ss_c.narrow(0, st.off_in(), T).narrow(2, 0, H)).reshape({T * N, H});
  return {du,
          dh,
          ds,
          acc.defined() ? acc.sum(0) : absent(us),
          at::mm(da2.t(), s_after),
          at::mm((lnh ? drn.view({T * N, H}) : da2).t(), h_before),
          lnh ? ln_param_grad(da2, rn_c) : absent(us)};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkit, CPU, m) {
  m.impl("scrn_sequence", &scrn_sequence);
  m.impl("scrn_sequence_inference", &scrn_sequence_inference);
  m.impl("scrn_sequence_backward", &scrn_sequence_backward);
}

}  // namespace rnnkit
