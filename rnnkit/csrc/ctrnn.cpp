// rnnkit::ctrnn_sequence and its backward on the CPU: the continuous-time RNN's Euler steps
// (constant dt, or a per-step dt in the last column of us; phi tanh, sigmoid, relu or identity)
// as one op.
//
// Forward (step t in the order the direction visits them; m_t marks the sequences still
// running; p = phi(h) is carried beside h; u_t = W_ih x_t + b precomputed outside the op):
//   a = dt / tau, tau = exp(log_tau)  ((H), or per step and row a_t = dt_t / tau with dt_input)
//   z_t = W p_{t-1} + u_t,  h~_t = (1 - a) h_{t-1} + a z_t
//   h_t = m_t h~_t + (1 - m_t) h_{t-1},  p_t = m_t phi(h~_t) + (1 - m_t) p_{t-1},
//   y_t = m_t phi(h~_t)
// A step is one GEMM (into the after-slot of hs) and one parallel pointwise pass that adds the
// rest, applies phi, carries the state at a padded step and writes y_t. With a constant a the
// GEMM is p_{t-1} (diag(a) W)^T and the pass adds a u_t + (1 - a) h_{t-1} (identity: the GEMM
// is h_{t-1} M^T, M = diag(1 - a) + diag(a) W, which holds the leak too); with dt_input the GEMM
// is p_{t-1} W^T, and the pass forms z_t and h~ = h_{t-1} + a_t (z_t - h_{t-1}).
// Saved: hs (T+1, N, H), the slots of h; ps (T+1, N, H), the slots of p = phi(h) ((0,) for the
// identity, where p is h); zs (T, N, H) = z_t - h_{t-1} with dt_input ((0,) without). These hold
// h, tanh(h) and z - h themselves: the pure-torch loop's tanh buffers hold 2 h, sigmoid(2 h)
// and 2 (z - h) instead (its sigmoid trick for torch's slow CPU tanh; here at::vec's tanh).
//
// Backward. E_t = dL/dh_t + m_t dy_t phi'(h_t) (from E = dL/dh_T + ... at the last step),
// D_t = m_t E_t (the gradient at h~_t), going back over the steps:
//   dh_{t-1} = (1 - m_t) E_t + (1 - a) D_t + phi'(h_{t-1}) W^T (a D_t)
// (phi' read off p: tanh 1 - p^2, sigmoid p (1 - p), relu [p > 0]); a step is the GEMM
// (a D_t) W and one pass that forms dh_{t-1}, and from it E_{t-1} and a D_{t-1} (phi'(h_{t-1})
// serves both). dh_0 is the last dh. Then dus_t = a D_t (dt_input: and d(dt_t) =
// sum_i D_t,i (z - h_{t-1})_i / tau_i), and over all T N rows dW = sum_t (a D_t) p_{t-1}^T,
// dlog_tau = -sum_{t,n} a D (z_t - h_{t-1}) (constant a: sum_j W_ij dW_ij +
// sum_{t,n} a D (u_t - h_{t-1}), no z needed; the row sums gathered in the loop's pass).
//
// Recurrent dropout and zoneout (drop m (N, H), zone d (T, N, H); see Regularize in
// recurrence.h). Forward: z_t = W (m p_{t-1}) + u_t (the GEMM reads m p_{t-1}; the leak keeps
// the whole h_{t-1}, so the identity's M, which holds the leak, is not used while dropping),
// h~_t as above, then h_t = d h_{t-1} + (1 - d) h~_t (in the pass, before phi), p_t = phi(h_t)
// and y_t = m_t p_t of the zoned h_t (CTRNNCell.state_output). Backward (0/1 weights): E_t as
// above is then the gradient of the zoned h_t (phi' read off the after-slot's p_t = phi(h_t),
// zoned), and only (1 - d) E_t reaches h~_t:
//   D_t = m_t (1 - d_t) E_t,
//   dh_{t-1} = (1 - m_t) E_t + m_t d_t E_t + (1 - a) D_t + phi'(h_{t-1}) m W^T (a D_t)
// and dus_t = a D_t (d(dt_t) = sum_i D_t,i (z - h_{t-1})_i / tau_i), dW = sum_t (a D_t)
// (m p_{t-1})^T, dlog_tau as above with this D and dW (sum_j W_ij dW_ij is sum a D (W m p)).
//
// Layer normalization (ln_hh, (2, H): gain g and bias beta; layer_norm.h). The input site,
// LN_ih(W_ih x_t) + b, is in u_t already (cell.precompute, outside the op); the recurrent one:
//   r_t = W (m p_{t-1}),  rn_t = (r_t - mean(r_t)) / sigma(r_t),  z_t = g rn_t + beta + u_t
// and h~_t, h_t, p_t, y_t as above. The GEMM is then always p_{t-1} W^T (no diag(a), no M: LN
// is not linear), into the same rows, and the pass first normalizes the row into rn (saved
// (T, N, H) with its 1/sigma in rstd[1]; an inference call keeps one step's rows), then forms
// h~ = (1 - a) h_{t-1} + a z_t (dt_input: h_{t-1} + a_t (z_t - h_{t-1}) as above). Backward:
// a D_t = dL/dz_t as above; the recurrent product takes LN's backward of it,
//   dr_t = (1/sigma) (e - mean(e) - rn_t mean(e rn_t)),  e = g (a D_t)   (zero at padded rows)
// formed in the pass that forms a D_t, in place of a D_t in the GEMM (dh_{t-1} gets
// phi'(h_{t-1}) m W^T dr_t) and in dW = sum_t dr_t (m p_{t-1})^T; dus_t = a D_t as before,
// dln_hh = [sum a D rn; sum a D], and with a constant a dlog_tau = -(sum a D (u_t - h_{t-1})
// + g dln_hh[0] + beta dln_hh[1]) (z_t - h_{t-1} = u_t - h_{t-1} + g rn_t + beta; dt_input: zs
// holds z_t - h_{t-1} itself).
#include <torch/library.h>

#include <cmath>
#include <string_view>
#include <type_traits>

#include "activations.h"
#include "layer_norm.h"

namespace rnnkit {
namespace {

using Out9 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                        at::Tensor, at::Tensor, at::Tensor>;
using Out5 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// save: keep hs, ps (and zs) for a backward; else h and p live in two slots each, and the
// pre-activations in ys itself. Returns (ys, h_T, hs, ps, zs, xn, rn, cn, rstd), the last four
// layer normalization's (Norms).
Out9 run_forward(bool save, const at::Tensor& us_in, const at::Tensor& h0, const at::Tensor& w_hh,
                 const at::Tensor& log_tau, const std::optional<at::Tensor>& valid, double dt,
                 bool dt_input, c10::string_view activation, bool reverse,
                 const std::optional<at::Tensor>& drop, const std::optional<at::Tensor>& zone,
                 const std::optional<at::Tensor>& ln_hh) {
  const int64_t T = us_in.size(0), N = us_in.size(1), H = w_hh.size(0), U = us_in.size(2);
  TORCH_CHECK(U == H + (dt_input ? 1 : 0), "us: expected ", H + (dt_input ? 1 : 0),
              " columns, got ", U);
  const Act act = elementwise_act(activation);
  const bool identity = act == Act::identity;
  Steps st{T, reverse};
  Mask mask(valid, T, N);
  Regularize reg(drop, zone);
  Norms norms(std::nullopt, ln_hh, std::nullopt);  // (the input site is in us)
  const bool lnh = norms.hh.has_value();
  // the identity's GEMM holds the leak (M), unless dropping (m p_{t-1} there, the leak whole h)
  // or normalizing (the GEMM is W p_{t-1} itself)
  const bool fold = identity && !reg.dropping() && !lnh;
  at::Tensor zc = reg.zoning() ? zone->contiguous() : at::Tensor();
  at::Tensor us = us_in.contiguous();
  const auto opts = us.options();
  at::Tensor tau = at::exp(log_tau).contiguous();
  at::Tensor ys = sequence_buffer({T, N, H}, opts);
  // the slots of h and p: (T + 1, N, H) kept for a backward, else two (slot k in k % 2)
  const int64_t K = save ? T + 1 : 2;
  at::Tensor hs = at::empty({K, N, H}, opts);
  at::Tensor ps = identity ? hs : at::empty({K, N, H}, opts);
  at::Tensor zs = save && dt_input ? sequence_buffer({T, N, H}, opts) : absent(us);
  norms.allocate(save, T, N, H, 0, us);
  const at::Tensor a_hh = ln_gain(norms.hh);
  const at::Tensor b_hh = lnh ? norms.hh->select(0, 1).contiguous() : at::Tensor();
  auto slot = [&](int64_t k) { return save ? k : k % 2; };
  // the GEMM's output, read back by the step's pass: the after-slots of hs, or ys
  at::Tensor pre = save ? hs.narrow(0, st.off_out(), T) : ys;
  at::Tensor a, oma, w;  // a and 1 - a (constant dt), the recurrent weight of the GEMM
  if (dt_input) {
    w = w_hh;
  } else {
    a = (at::reciprocal(tau) * dt).contiguous();  // exactly as the cell: dt / exp(log_tau)
    oma = (1 - a).contiguous();
    w = lnh ? w_hh : w_hh * a.unsqueeze(1);  // diag(a) W (LN: W)
    if (fold) w.diagonal().add_(oma);  // M
  }
  hs.select(0, slot(st.first())).copy_(h0);
  const Product rec(w, N);
  AT_DISPATCH_FLOATING_TYPES(us.scalar_type(), "ctrnn_sequence", [&] {
    with_act(act, [&](auto A_) {
      constexpr Act A = decltype(A_)::value;
      scalar_t* hb = hs.data_ptr<scalar_t>();
      scalar_t* pb = ps.data_ptr<scalar_t>();
      scalar_t* yb = ys.data_ptr<scalar_t>();
      scalar_t* prb = pre.data_ptr<scalar_t>();
      scalar_t* zb = save && dt_input ? zs.data_ptr<scalar_t>() : nullptr;
      const scalar_t* ub = us.data_ptr<scalar_t>();
      const scalar_t* taub = tau.data_ptr<scalar_t>();
      const scalar_t* ab = dt_input ? nullptr : a.data_ptr<scalar_t>();
      const scalar_t* omab = dt_input ? nullptr : oma.data_ptr<scalar_t>();
      const scalar_t* zdb = zc.defined() ? zc.data_ptr<scalar_t>() : nullptr;
      scalar_t* rnb = lnh ? norms.rn.data_ptr<scalar_t>() : nullptr;
      scalar_t* sdb = lnh ? norms.rstd.data_ptr<scalar_t>() : nullptr;  // (3, T, N)
      const scalar_t* ahh = lnh ? a_hh.data_ptr<scalar_t>() : nullptr;
      const scalar_t* bhh = lnh ? b_hh.data_ptr<scalar_t>() : nullptr;
      if constexpr (A != Act::identity) {  // p_0 = phi(h_0)
        const int64_t k = slot(st.first());
        for_rows(N, H, [&](int64_t n) {
          for_lanes<scalar_t>(H, [&](auto tag, int64_t j) {
            store(phi<A>(load(hb + (k * N + n) * H + j, tag)), pb + (k * N + n) * H + j);
          });
        });
      }
      for (int64_t i = 0; i < T; ++i) {
        const int64_t t = st.forward_step(i);
        const int64_t k_in = slot(t + st.off_in()), k_out = slot(t + st.off_out());
        const int64_t tk = save ? t : 0;  // the step's rows of rn
        at::Tensor pre_t = pre.select(0, t);
        rec.mm_(pre_t, reg.input(ps.select(0, k_in)));  // ps is hs for the identity
        const bool padded = mask.any_padded(t);
        for_rows(N, H, [&](int64_t n) {
          const int64_t row = t * N + n;
          const scalar_t* hi = hb + (k_in * N + n) * H;
          const scalar_t* pi = pb + (k_in * N + n) * H;
          scalar_t* ho = hb + (k_out * N + n) * H;
          scalar_t* po = pb + (k_out * N + n) * H;
          scalar_t* y = yb + row * H;
          const scalar_t* pr = prb + row * H;
          const scalar_t* u = ub + row * U;
          scalar_t* z = zb ? zb + row * H : nullptr;
          const scalar_t dt_row = dt_input ? ub[row * U + H] : scalar_t(0);
          const scalar_t* zone_r = zdb ? zdb + row * H : nullptr;
          const bool counts = !padded || mask.counts(t, n, N);
          const scalar_t* rn = nullptr;  // LN_hh: the row normalized (pr may be ho: read first)
          if (rnb) {
            scalar_t* rn_row = rnb + (tk * N + n) * H;
            sdb[(T + t) * N + n] = ln_row(pr, H, rn_row);
            rn = rn_row;
          }
          for_lanes<scalar_t>(H, [&](auto tag, int64_t j) {
            using V = decltype(tag);
            const V h_in = load(hi + j, tag), uv = load(u + j, tag);
            // W (m) p_{t-1}, normalized: g rn + beta
            const V q = rn ? load(ahh + j, tag) * load(rn + j, tag) + load(bhh + j, tag)
                           : load(pr + j, tag);
            V h;
            if (dt_input) {  // q = W p_{t-1}
              const V zd = q + uv - h_in;
              if (z) store(zd, z + j);
              h = h_in + V(dt_row) / load(taub + j, tag) * zd;
            } else if (fold) {  // q = h_{t-1} M^T
              h = q + load(ab + j, tag) * uv;
            } else if (rn) {  // q = LN_hh(W (m) p_{t-1})
              h = load(ab + j, tag) * (q + uv) + load(omab + j, tag) * h_in;
            } else {  // q = a W (m) p_{t-1}
              h = q + load(ab + j, tag) * uv + load(omab + j, tag) * h_in;
            }
            if (!counts) {
              store(h_in, ho + j);
              if (!identity) store(load(pi + j, tag), po + j);
              store(V(scalar_t(0)), y + j);
              return;
            }
            if (zone_r) h = lerp_w(h, h_in, load(zone_r + j, tag));  // the zoned h_t
            const V p = phi<A>(h);
            store(h, ho + j);
            if (!identity) store(p, po + j);
            store(p, y + j);
          });
        });
      }
    });
  });
  at::Tensor h_T = hs.select(0, slot(st.last())).clone();
  if (!save) {
    return {ys, h_T, absent(us), absent(us), absent(us), absent(us), absent(us), absent(us),
            absent(us)};
  }
  return {ys, h_T, hs, identity ? absent(us) : ps, zs, norms.xn, norms.rn, norms.cn, norms.rstd};
}

Out9 ctrnn_sequence(const at::Tensor& us, const at::Tensor& h0, const at::Tensor& w_hh,
                    const at::Tensor& log_tau, const std::optional<at::Tensor>& valid, double dt,
                    bool dt_input, c10::string_view activation, bool reverse,
                    const std::optional<at::Tensor>& drop, const std::optional<at::Tensor>& zone,
                    const std::optional<at::Tensor>& ln_hh) {
  return run_forward(true, us, h0, w_hh, log_tau, valid, dt, dt_input, activation, reverse, drop,
                     zone, ln_hh);
}

// Without a backward to feed: h and p in two slots each, the pre-activations formed in ys.
std::tuple<at::Tensor, at::Tensor> ctrnn_sequence_inference(
    const at::Tensor& us, const at::Tensor& h0, const at::Tensor& w_hh, const at::Tensor& log_tau,
    const std::optional<at::Tensor>& valid, double dt, bool dt_input,
    c10::string_view activation, bool reverse, const std::optional<at::Tensor>& drop,
    const std::optional<at::Tensor>& zone, const std::optional<at::Tensor>& ln_hh) {
  auto out = run_forward(false, us, h0, w_hh, log_tau, valid, dt, dt_input, activation, reverse,
                         drop, zone, ln_hh);
  return {std::get<0>(out), std::get<1>(out)};
}

// Returns (dus, dh0, dW, dlog_tau, dln_hh) (the last (0,) without layer normalization).
Out5 ctrnn_sequence_backward(
    const at::Tensor& grad_ys, const at::Tensor& grad_h_T, const at::Tensor& us_in,
    const at::Tensor& /*h0*/, const at::Tensor& w_hh, const at::Tensor& log_tau,
    const at::Tensor& hs, const at::Tensor& ps, const at::Tensor& zs, const at::Tensor& /*xn*/,
    const at::Tensor& rn, const at::Tensor& /*cn*/, const at::Tensor& rstd,
    const std::optional<at::Tensor>& valid, double dt, bool dt_input,
    c10::string_view activation, bool reverse, const std::optional<at::Tensor>& drop,
    const std::optional<at::Tensor>& zone, const std::optional<at::Tensor>& ln_hh) {
  const int64_t T = us_in.size(0), N = us_in.size(1), H = w_hh.size(0), U = us_in.size(2);
  const Act act = elementwise_act(activation);
  const bool identity = act == Act::identity;
  Steps st{T, reverse};
  Mask mask(valid, T, N);
  Regularize reg(drop, zone);
  at::Tensor zc = reg.zoning() ? zone->contiguous() : at::Tensor();
  at::Tensor mdrop = reg.dropping() ? drop->contiguous() : at::Tensor();
  at::Tensor us = us_in.contiguous(), gy = grad_ys.contiguous(), hs_c = hs.contiguous();
  at::Tensor ps_c = identity ? hs_c : ps.contiguous();
  at::Tensor zs_c = dt_input ? zs.contiguous() : at::Tensor();
  const auto opts = us.options();
  at::Tensor tau = at::exp(log_tau).contiguous();
  at::Tensor inv_tau = at::reciprocal(tau);
  at::Tensor a = dt_input ? at::Tensor() : (inv_tau * dt).contiguous();
  at::Tensor dus = sequence_buffer({T, N, U}, opts);  // [a D_t (; d dt_t)]
  at::Tensor ad = dus.narrow(2, 0, H);
  at::Tensor dh0 = at::empty({N, H}, opts);
  const bool lnh = ln_hh.has_value();
  if (T == 0) {
    dh0.copy_(grad_h_T);
    return {dus, dh0, at::zeros({H, H}, opts), at::zeros({H}, opts),
            lnh ? at::zeros({2, H}, opts) : absent(us)};
  }
  at::Tensor drn = lnh ? sequence_buffer({T, N, H}, opts) : absent(us);  // d(W m p_{t-1})
  const at::Tensor rn_c = rn.contiguous(), sd = rstd.contiguous();
  const at::Tensor a_hh = ln_gain(ln_hh);
  at::Tensor es = at::empty({2, N, H}, opts);  // E_t, E_{t-1}
  at::Tensor q = at::empty({N, H}, opts);      // (a D_t) W
  at::Tensor acc = at::zeros({N, H}, opts);    // sum_t a D_t (u_t - h_{t-1}) (or (z_t - h_{t-1}))
  const Product rec(w_hh.t(), N);  // (a D_t) W
  at::Tensor gh = grad_h_T.contiguous();
  AT_DISPATCH_FLOATING_TYPES(us.scalar_type(), "ctrnn_sequence_backward", [&] {
    with_act(act, [&](auto A_) {
      constexpr Act A = decltype(A_)::value;
      const scalar_t* hb = hs_c.data_ptr<scalar_t>();
      const scalar_t* pb = ps_c.data_ptr<scalar_t>();
      const scalar_t* zb = dt_input ? zs_c.data_ptr<scalar_t>() : nullptr;
      const scalar_t* ub = us.data_ptr<scalar_t>();
      const scalar_t* yb = gy.data_ptr<scalar_t>();
      const scalar_t* taub = tau.data_ptr<scalar_t>();
      const scalar_t* itb = inv_tau.data_ptr<scalar_t>();
      const scalar_t* ab = dt_input ? nullptr : a.data_ptr<scalar_t>();
      scalar_t* db = dus.data_ptr<scalar_t>();
      scalar_t* eb = es.data_ptr<scalar_t>();
      scalar_t* qb = q.data_ptr<scalar_t>();
      scalar_t* accb = acc.data_ptr<scalar_t>();
      scalar_t* h0b = dh0.data_ptr<scalar_t>();
      const scalar_t* ghb = gh.data_ptr<scalar_t>();
      const scalar_t* zdb = zc.defined() ? zc.data_ptr<scalar_t>() : nullptr;
      const scalar_t* mb = mdrop.defined() ? mdrop.data_ptr<scalar_t>() : nullptr;
      scalar_t* drnb = lnh ? drn.data_ptr<scalar_t>() : nullptr;
      const scalar_t* rnb = lnh ? rn_c.data_ptr<scalar_t>() : nullptr;
      const scalar_t* sdb = lnh ? sd.data_ptr<scalar_t>() : nullptr;
      const scalar_t* ahh = lnh ? a_hh.data_ptr<scalar_t>() : nullptr;
      // d(W m p_{t-1}) at step t, row n: LN_hh's backward of the row's a D_t (zero if padded)
      auto ln_back = [&](int64_t t, int64_t n, bool counts) {
        const int64_t row = t * N + n;
        if (!counts) {
          std::fill(drnb + row * H, drnb + (row + 1) * H, scalar_t(0));
          return;
        }
        ln_row_backward(db + row * U, ahh, rnb + row * H, sdb[(T + t) * N + n], H,
                        drnb + row * H, false);
      };
      // a at step t, row n, lane j
      auto a_at = [&](auto tag, int64_t t, int64_t n, int64_t j) {
        using V = decltype(tag);
        if (dt_input) return V(ub[(t * N + n) * U + H]) / load(taub + j, tag);
        return load(ab + j, tag);
      };
      // 1 - d at step t, row n, lane j: the part of E_t that reaches h~_t (zoneout)
      auto keep_at = [&](auto tag, int64_t t, int64_t n, int64_t j) {
        using V = decltype(tag);
        return V(scalar_t(1)) - load(zdb + (t * N + n) * H + j, tag);
      };
      // E_t0 = dL/dh_T + m dy phi'(h_T), and a D_t0, for the first step going back
      {
        const int64_t t = st.backward_step(0);
        const int64_t k = t + st.off_out();
        for_rows(N, H, [&](int64_t n) {
          const bool counts = mask.counts(t, n, N);
          const scalar_t* p = pb + (k * N + n) * H;
          const scalar_t* y = yb + (t * N + n) * H;
          scalar_t* e = eb + n * H;
          scalar_t* d = db + (t * N + n) * U;
          for_lanes<scalar_t>(H, [&](auto tag, int64_t j) {
            using V = decltype(tag);
            V ev = load(ghb + n * H + j, tag);
            if (counts) ev = ev + load(y + j, tag) * phi_prime<A>(load(p + j, tag));
            store(ev, e + j);
            V dv = ev;  // D_t
            if (zdb) dv = keep_at(tag, t, n, j) * ev;
            store(counts ? a_at(tag, t, n, j) * dv : V(scalar_t(0)), d + j);
          });
          if (drnb) ln_back(t, n, counts);
        });
      }
      int cur = 0;
      for (int64_t i = 0; i < T; ++i) {
        const int64_t t = st.backward_step(i);
        const bool more = i + 1 < T;
        const int64_t t2 = more ? st.backward_step(i + 1) : -1;  // the step before t
        const int64_t k_in = t + st.off_in();
        rec.mm_(q, lnh ? drn.select(0, t) : ad.select(0, t));  // (LN: dr_t W)
        const scalar_t* ec = eb + cur * N * H;
        scalar_t* en = eb + (1 - cur) * N * H;
        for_rows(N, H, [&](int64_t n) {
          const bool counts = mask.counts(t, n, N);
          const bool counts2 = more && mask.counts(t2, n, N);
          const int64_t row = t * N + n;
          const scalar_t* e = ec + n * H;
          const scalar_t* qr = qb + n * H;
          const scalar_t* hp = hb + (k_in * N + n) * H;
          const scalar_t* pp = pb + (k_in * N + n) * H;
          const scalar_t* ur = ub + row * U;
          const scalar_t* zr = zb ? zb + row * H : nullptr;
          const scalar_t* y2 = more ? yb + (t2 * N + n) * H : nullptr;
          scalar_t* d2 = more ? db + (t2 * N + n) * U : nullptr;
          scalar_t* out = more ? en + n * H : h0b + n * H;
          scalar_t* ac = accb + n * H;
          Vec<scalar_t> gdt_v(scalar_t(0));
          scalar_t gdt_s(0);
          for_lanes<scalar_t>(H, [&](auto tag, int64_t j) {
            using V = decltype(tag);
            const V one(scalar_t(1));
            const V ev = load(e + j, tag), pd = phi_prime<A>(load(pp + j, tag));
            V dh = ev;
            if (counts) {
              const V av = a_at(tag, t, n, j);
              V dv = ev;  // D_t
              V qv = load(qr + j, tag);
              if (mb) qv = qv * load(mb + n * H + j, tag);  // m W^T (a D_t)
              if (zdb) {
                const V kv = keep_at(tag, t, n, j);
                dv = kv * ev;
                dh = (one - av) * dv + (one - kv) * ev + pd * qv;  // + d E_t
              } else {
                dh = (one - av) * ev + pd * qv;
              }
              const V ad_v = av * dv;
              if (zr) {
                const V r = dv * load(zr + j, tag);  // D (z - h_{t-1}) = dL/da
                store(load(ac + j, tag) + av * r, ac + j);
                const V g = r * load(itb + j, tag);
                if constexpr (std::is_same_v<V, scalar_t>) gdt_s += g;
                else gdt_v = gdt_v + g;
              } else {
                store(load(ac + j, tag) + ad_v * (load(ur + j, tag) - load(hp + j, tag)), ac + j);
              }
            }
            if (!more) {
              store(dh, out + j);
              return;
            }
            if (counts2) dh = dh + load(y2 + j, tag) * pd;  // E_{t-1}
            store(dh, out + j);
            V dv2 = dh;  // D_{t-1}
            if (zdb && counts2) dv2 = keep_at(tag, t2, n, j) * dh;
            store(counts2 ? a_at(tag, t2, n, j) * dv2 : V(scalar_t(0)), d2 + j);
          });
          if (more && drnb) ln_back(t2, n, counts2);
          if (dt_input) {
            scalar_t lanes[Vec<scalar_t>::size()];
            gdt_v.store(lanes);
            for (int64_t l = 0; l < Vec<scalar_t>::size(); ++l) gdt_s += lanes[l];
            db[row * U + H] = counts ? gdt_s : scalar_t(0);
          }
        });
        cur = 1 - cur;
      }
    });
  });
  at::Tensor ad2 = ad.reshape({T * N, H});
  at::Tensor p_prev = reg.before(ps_c.narrow(0, st.off_in(), T)).reshape({T * N, H});
  // sum_t (a D_t) p_{t-1}^T (LN: sum_t dr_t p_{t-1}^T)
  at::Tensor dw = at::mm((lnh ? drn.view({T * N, H}) : ad2).t(), p_prev);
  at::Tensor dln = lnh ? ln_param_grad(ad2, rn_c) : absent(us);  // [sum a D rn; sum a D]
  at::Tensor dlog_tau = acc.sum(0);
  if (!dt_input && lnh) {  // + sum_t a D_t (g rn_t + beta)
    dlog_tau.add_(ln_hh->select(0, 0) * dln.select(0, 0) + ln_hh->select(0, 1) * dln.select(0, 1));
  } else if (!dt_input) {
    dlog_tau.add_((w_hh * dw).sum(1));  // + sum_t a D_t (W p_{t-1})
  }
  dlog_tau.neg_();
  return {dus, dh0, dw, dlog_tau, dln};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkit, CPU, m) {
  m.impl("ctrnn_sequence", &ctrnn_sequence);
  m.impl("ctrnn_sequence_inference", &ctrnn_sequence_inference);
  m.impl("ctrnn_sequence_backward", &ctrnn_sequence_backward);
}

}  // namespace rnnkit
