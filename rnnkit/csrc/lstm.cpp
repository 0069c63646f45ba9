// rnnkit::lstm_sequence and its backward on the CPU: the LSTM family (peephole none, diagonal or
// full; a projection W_hr; tanh or identity candidate and cell activations) as one op.
//
// Forward (step t in the order the direction visits them; m_t marks the sequences still running;
// gate order i, f, g, o; P c is p * c for a diagonal peephole, P c for a full one, absent without):
//   z_t = W_ih x_t + b_ih + b_hh (one GEMM for all steps) + W_hh h_{t-1} (a GEMM a step)
//   i = s(z^i + P_i c_{t-1}),  f = s(z^f + P_f c_{t-1}),  g = gamma(z^g)
//   c~ = f c_{t-1} + i g,  o = s(z^o + P_o c~),  k = phi(c~),  r = o k,  h~ = W_hr r (or r)
//   c_t = m_t c~ + (1 - m_t) c_{t-1},  h_t = m_t h~ + (1 - m_t) h_{t-1},  y_t = m_t h~
// A step is the recurrent GEMM and one parallel pointwise pass over the rows; a full peephole
// splits the pass around the GEMM z^o += c~ P_o^T, a projection adds the GEMM r W_hr^T.
// Saved: gates = [i, f, g, o] (T, N, 4H), the slots hs (T+1, N, R) and cs (T+1, N, H), ks = k
// (T, N, H) when phi is tanh, rs = r (T, N, H) with a projection ((0,) tensors otherwise).
//
// Backward, going back over the steps from dh = dL/dh_T, dc = dL/dc_T (rnnkit/kernels/lstm.py
// writes it out): e = m_t (dy_t + dh),  dr = W_hr^T e (or e),
//   dz^o = dr k o (1 - o),  dc~ = m_t dc + dr o phi'(c~) + P_o^T dz^o
//   dz^i = dc~ g i (1 - i),  dz^f = dc~ c_{t-1} f (1 - f),  dz^g = dc~ i gamma'(z^g)
//   dc_{t-1} = (1 - m_t) dc + dc~ f + P_i^T dz^i + P_f^T dz^f,  dh_{t-1} = (1 - m_t) dh + W_hh^T dz
// then over all T N rows: dX = dZ W_ih, dW_ih = dZ^T X, dW_hh = dZ^T H_prev, db = sum dZ,
// dW_hr = E^T R, dp_{i|f} = sum dz^{i|f} c_{t-1}, dp_o = sum dz^o c~ (full: dZ^T C products). At a
// padded step dz = 0, so the carried c_t stands in for c~ there.
// Recurrent dropout and zoneout (drop, zone): see Regularize in recurrence.h. W_hh (m h_{t-1});
// h_t = d^h h_{t-1} + (1 - d^h) h~_t, c_t = d^c c_{t-1} + (1 - d^c) c~_t (zone's columns [h | c]),
// h~ from the unzoned c~ (Krueger et al. 2017). Backward then recomputes c~ = f c_{t-1} + i g
// from the saved gates: where d^c = 1 the slot holds c_{t-1}, but h~ still needs c~.
// Layer normalization (ln_ih, ln_hh, ln_c; layer_norm.h): z_t = LN_ih(W_ih x_t) + LN_hh(W_hh h_{t-1})
// + b, and k = phi(LN_c(c~)) (the carried c~ unnormalized; the peephole sees it too). Backward:
// with a = dr o phi'(.), dc~ gets LN_c's backward of a (in place of dr o phi'), dW_hh and
// dh_{t-1} take LN_hh's backward of dz, dW_ih and dX LN_ih's.
#include <torch/library.h>

#include <string_view>

#include "layer_norm.h"

namespace rnnkit {
namespace {

enum class Peep { none, diagonal, full };

Peep peep_kind(c10::string_view p) {
  if (p == "none") return Peep::none;
  if (p == "diagonal") return Peep::diagonal;
  TORCH_CHECK(p == "full", "peephole: expected none, diagonal or full, got ", p);
  return Peep::full;
}

using Out12 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                         at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Out12 run_forward(bool save, const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
              const at::Tensor& w_ih, const at::Tensor& w_hh,
              const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
              const std::optional<at::Tensor>& w_hr, const std::optional<at::Tensor>& w_peep,
              const std::optional<at::Tensor>& valid, c10::string_view peephole, bool tanh_g,
              bool tanh_phi, bool reverse, const std::optional<at::Tensor>& drop,
              const std::optional<at::Tensor>& zone, const std::optional<at::Tensor>& ln_ih,
              const std::optional<at::Tensor>& ln_hh, const std::optional<at::Tensor>& ln_c) {
  const int64_t T = x.size(0), N = x.size(1), H4 = w_hh.size(0), H = H4 / 4, R = w_hh.size(1);
  const Peep peep = peep_kind(peephole);
  TORCH_CHECK(peep == Peep::none || w_peep.has_value(), "w_peep: required by peephole ",
              peephole);
  const bool proj = w_hr.has_value();
  Steps st{T, reverse};
  Mask mask(valid, T, N);
  Regularize reg(drop, zone);
  Norms norms(ln_ih, ln_hh, ln_c);
  norms.allocate(save, T, N, H4, H, x);
  at::Tensor x2 = x.reshape({T * N, x.size(2)});
  at::Tensor bias;
  if (b_ih.has_value()) bias = b_hh.has_value() ? *b_ih + *b_hh : *b_ih;
  else if (b_hh.has_value()) bias = *b_hh;
  bias = norms.bias(bias);
  at::Tensor gates = sequence_buffer({T * N, H4}, x.options());
  norms.project(gates, x2, w_ih, bias, T, N);
  gates = gates.view({T, N, H4});
  // W_hh h_{t-1} before LN_hh (N, 4H), and the gains of LN_hh and LN_c and LN_c's bias
  at::Tensor rbuf = norms.hh ? at::empty({N, H4}, x.options()) : at::Tensor();
  at::Tensor a_hh = ln_gain(norms.hh);
  at::Tensor a_c = ln_gain(norms.c);
  at::Tensor b_c = norms.c ? norms.c->select(0, 1).contiguous() : at::Tensor();
  at::Tensor hs = sequence_buffer({T + 1, N, R}, x.options());
  at::Tensor cs = sequence_buffer({T + 1, N, H}, x.options());
  at::Tensor ks = tanh_phi && save ? sequence_buffer({T, N, H}, x.options()) : absent(x);
  at::Tensor rs = proj ? sequence_buffer({T, N, H}, x.options()) : absent(x);
  hs.select(0, st.first()).copy_(h0);
  cs.select(0, st.first()).copy_(c0);
  at::Tensor wp = w_peep.has_value() ? w_peep->contiguous() : at::Tensor();
  const Product rec(w_hh, N);  // h_{t-1} W_hh^T
  std::optional<Product> out_proj, peep_if, peep_o;
  if (proj) out_proj.emplace(*w_hr, N);  // r W_hr^T
  if (peep == Peep::full) {
    peep_if.emplace(wp.narrow(0, 0, 2 * H), N);  // c_{t-1} P_if^T
    peep_o.emplace(wp.narrow(0, 2 * H, H), N);    // c~ P_o^T
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_sequence", [&] {
    scalar_t* zb = gates.data_ptr<scalar_t>();
    scalar_t* hb = hs.data_ptr<scalar_t>();
    scalar_t* cb = cs.data_ptr<scalar_t>();
    scalar_t* kb = tanh_phi && save ? ks.data_ptr<scalar_t>() : nullptr;
    scalar_t* rb = proj ? rs.data_ptr<scalar_t>() : nullptr;
    const scalar_t* pd = peep == Peep::diagonal ? wp.data_ptr<scalar_t>() : nullptr;
    scalar_t* rbb = norms.hh ? rbuf.data_ptr<scalar_t>() : nullptr;
    scalar_t* rnb = norms.hh ? norms.rn.data_ptr<scalar_t>() : nullptr;
    scalar_t* cnb = norms.c ? norms.cn.data_ptr<scalar_t>() : nullptr;
    scalar_t* sdb = norms.on() ? norms.rstd.data_ptr<scalar_t>() : nullptr;  // (3, T, N)
    const scalar_t* ahh = norms.hh ? a_hh.data_ptr<scalar_t>() : nullptr;
    const scalar_t* ac = norms.c ? a_c.data_ptr<scalar_t>() : nullptr;
    const scalar_t* bc = norms.c ? b_c.data_ptr<scalar_t>() : nullptr;
    for (int64_t i = 0; i < T; ++i) {
      const int64_t t = st.forward_step(i);
      const int64_t s_in = t + st.off_in(), s_out = t + st.off_out();
      const int64_t tk = save ? t : 0;  // the step's rows of rn and cn
      at::Tensor z_t = gates.select(0, t);
      if (rbb) {
        rec.mm_(rbuf, reg.input(hs.select(0, s_in)));
      } else {
        rec.add_(z_t, reg.input(hs.select(0, s_in)));
      }
      if (peep == Peep::full) {
        at::Tensor z_if = z_t.narrow(1, 0, 2 * H);
        peep_if->add_(z_if, cs.select(0, s_in));
      }
      const bool padded = mask.any_padded(t);
      // One pass over the rows; `gate` computes i, f, g and c~ (c~ into the c slot), `out`
      // computes o, k, r and the carried c and h from it. A full peephole runs them apart, LN_c
      // within a row (its statistics need the whole c~ row).
      auto row = [&](int64_t n, bool gate, bool out) {
          scalar_t* z = zb + (t * N + n) * H4;
          const scalar_t* ci = cb + (s_in * N + n) * H;
          scalar_t* co = cb + (s_out * N + n) * H;
          const scalar_t* hi = hb + (s_in * N + n) * R;
          scalar_t* ho = hb + (s_out * N + n) * R;
          scalar_t* k_row = kb ? kb + (t * N + n) * H : nullptr;
          scalar_t* r_row = rb ? rb + (t * N + n) * H : nullptr;
          const bool counts = !padded || mask.counts(t, n, N);
          scalar_t* cn_row = nullptr;  // LN_c: c~ normalized
          if (out && cnb) {
            cn_row = cnb + (tk * N + n) * H;
            sdb[(2 * T + t) * N + n] = ln_row(co, H, cn_row);
          }
          for_lanes<scalar_t>(H, [&](auto tag, int64_t j) {
            using V = decltype(tag);
            const V cp = load(ci + j, tag);
            V c;
            if (gate) {
              V zi = load(z + j, tag), zf = load(z + H + j, tag), g = load(z + 2 * H + j, tag);
              if (pd) {
                zi = zi + load(pd + j, tag) * cp;
                zf = zf + load(pd + H + j, tag) * cp;
              }
              const V ig = sigm(zi), fg = sigm(zf);
              if (tanh_g) g = tanh_(g);
              c = fg * cp + ig * g;
              store(ig, z + j);
              store(fg, z + H + j);
              store(g, z + 2 * H + j);
            } else {
              c = load(co + j, tag);
            }
            if (!out) {
              store(c, co + j);
              return;
            }
            V zo = load(z + 3 * H + j, tag);
            if (pd) zo = zo + load(pd + 2 * H + j, tag) * c;
            const V o = sigm(zo);
            V kin = c;
            if (cn_row) kin = load(ac + j, tag) * load(cn_row + j, tag) + load(bc + j, tag);
            const V k = tanh_phi ? tanh_(kin) : kin;
            store(o, z + 3 * H + j);
            if (k_row) store(k, k_row + j);
            store(counts ? c : cp, co + j);
            if (r_row) {
              store(o * k, r_row + j);
            } else {
              store(counts ? o * k : load(hi + j, tag), ho + j);
            }
          });
      };
      auto pass = [&](bool gate, bool out) {
        for_rows(N, H4, [&](int64_t n) {
          if (gate && rbb) {  // z += a_hh LN(W_hh h_{t-1}) (its bias is in z already)
            scalar_t* rn_row = rnb + (tk * N + n) * H4;
            scalar_t* z = zb + (t * N + n) * H4;
            sdb[(T + t) * N + n] = ln_row(rbb + n * H4, H4, rn_row);
            for_lanes<scalar_t>(H4, [&](auto tag, int64_t j) {
              store(load(z + j, tag) + load(ahh + j, tag) * load(rn_row + j, tag), z + j);
            });
          }
          if (cnb && gate && out) {
            row(n, true, false);
            row(n, false, true);
          } else {
            row(n, gate, out);
          }
        });
      };
      if (peep == Peep::full) {
        pass(true, false);
        at::Tensor z_o = z_t.narrow(1, 3 * H, H);
        peep_o->add_(z_o, cs.select(0, s_out));
        pass(false, true);
      } else {
        pass(true, true);
      }
      if (proj) {
        at::Tensor h_out = hs.select(0, s_out);
        out_proj->mm_(h_out, rs.select(0, t));
        if (padded) {
          for (int64_t n = 0; n < N; ++n) {
            if (mask.counts(t, n, N)) continue;
            const scalar_t* hi = hb + (s_in * N + n) * R;
            std::copy(hi, hi + R, hb + (s_out * N + n) * R);
          }
        }
      }
      reg.merge(t, hs.select(0, s_out), hs.select(0, s_in), 0);
      reg.merge(t, cs.select(0, s_out), cs.select(0, s_in), R);
    }
  });
  at::Tensor ys = sequence_copy(hs.narrow(0, st.off_out(), T));
  if (valid.has_value()) ys.mul_(valid->unsqueeze(2));
  return {ys, hs.select(0, st.last()).clone(), cs.select(0, st.last()).clone(),
          gates, hs, cs, ks, rs, norms.xn, norms.rn, norms.cn, norms.rstd};
}

Out12 lstm_sequence(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                   const at::Tensor& w_ih, const at::Tensor& w_hh,
                   const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
                   const std::optional<at::Tensor>& w_hr, const std::optional<at::Tensor>& w_peep,
                   const std::optional<at::Tensor>& valid, c10::string_view peephole,
                   bool tanh_g, bool tanh_phi, bool reverse,
                   const std::optional<at::Tensor>& drop, const std::optional<at::Tensor>& zone,
                   const std::optional<at::Tensor>& ln_ih, const std::optional<at::Tensor>& ln_hh,
                   const std::optional<at::Tensor>& ln_c) {
  return run_forward(true, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, valid, peephole,
                     tanh_g, tanh_phi, reverse, drop, zone, ln_ih, ln_hh, ln_c);
}

// Without a backward to feed: k = phi(c~) is not kept.
std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_sequence_inference(
    const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
    const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
    const std::optional<at::Tensor>& b_hh, const std::optional<at::Tensor>& w_hr,
    const std::optional<at::Tensor>& w_peep, const std::optional<at::Tensor>& valid,
    c10::string_view peephole, bool tanh_g, bool tanh_phi, bool reverse,
    const std::optional<at::Tensor>& drop, const std::optional<at::Tensor>& zone,
    const std::optional<at::Tensor>& ln_ih, const std::optional<at::Tensor>& ln_hh,
    const std::optional<at::Tensor>& ln_c) {
  auto out = run_forward(false, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, valid,
                         peephole, tanh_g, tanh_phi, reverse, drop, zone, ln_ih, ln_hh, ln_c);
  return {std::get<0>(out), std::get<1>(out), std::get<2>(out)};
}

Out12 lstm_sequence_backward(
    const at::Tensor& grad_ys, const at::Tensor& grad_h_T, const at::Tensor& grad_c_T,
    const at::Tensor& x, const at::Tensor& /*h0*/, const at::Tensor& /*c0*/,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
    const std::optional<at::Tensor>& b_hh, const std::optional<at::Tensor>& w_hr,
    const std::optional<at::Tensor>& w_peep, const at::Tensor& gates, const at::Tensor& hs,
    const at::Tensor& cs, const at::Tensor& ks, const at::Tensor& rs, const at::Tensor& xn,
    const at::Tensor& rn, const at::Tensor& cn, const at::Tensor& rstd,
    const std::optional<at::Tensor>& valid, c10::string_view peephole, bool tanh_g,
    bool tanh_phi, bool reverse, const std::optional<at::Tensor>& drop,
    const std::optional<at::Tensor>& zone, const std::optional<at::Tensor>& ln_ih,
    const std::optional<at::Tensor>& ln_hh, const std::optional<at::Tensor>& ln_c) {
  const int64_t T = x.size(0), N = x.size(1), H4 = w_hh.size(0), H = H4 / 4, R = w_hh.size(1);
  const Peep peep = peep_kind(peephole);
  const bool proj = w_hr.has_value();
  Steps st{T, reverse};
  Mask mask(valid, T, N);
  Regularize reg(drop, zone);
  at::Tensor gy = reg.zoning() ? grad_ys.contiguous().clone() : grad_ys.contiguous(), gz = gates.contiguous(), hs_c = hs.contiguous(),
             cs_c = cs.contiguous(), ks_c = ks.contiguous();
  at::Tensor wp = w_peep.has_value() ? w_peep->contiguous() : at::Tensor();
  at::Tensor ct;  // c~ = f c_{t-1} + i g (T, N, H), where zoneout may have left c_{t-1} in a slot
  if (reg.zoning()) {
    at::Tensor g4 = gz.view({T, N, 4, H});
    ct = g4.select(2, 1) * cs_c.narrow(0, st.off_in(), T) + g4.select(2, 0) * g4.select(2, 2);
  }
  at::Tensor dz = sequence_buffer({T, N, H4}, x.options());
  at::Tensor es = proj ? sequence_buffer({T, N, R}, x.options()) : absent(x);  // e_t (projection)
  at::Tensor dr = proj ? at::empty({N, H}, x.options()) : absent(x);
  const bool lnc = ln_c.has_value(), lnh = ln_hh.has_value();
  // dc~ apart from the gates' pass: for a full peephole, and for LN_c (a row reduction first)
  at::Tensor dct = peep == Peep::full || lnc ? at::empty({N, H}, x.options()) : absent(x);
  at::Tensor as = lnc ? sequence_buffer({T, N, H}, x.options()) : absent(x);  // a = dr o phi'
  at::Tensor drn = lnh ? sequence_buffer({T, N, H4}, x.options()) : absent(x);  // d(W_hh h_{t-1})
  at::Tensor rn_c = rn.contiguous(), cn_c = cn.contiguous(), sd = rstd.contiguous();
  at::Tensor a_hh = ln_gain(ln_hh);
  at::Tensor a_c = ln_gain(ln_c);
  at::Tensor b_c = lnc ? ln_c->select(0, 1).contiguous() : at::Tensor();
  at::Tensor dh = grad_h_T.contiguous().clone(), dc = grad_c_T.contiguous().clone();
  at::Tensor dh_next = at::empty_like(dh), dc_next = at::empty_like(dc);
  const Product rec(w_hh.t(), N);  // dz_t W_hh
  std::optional<Product> in_proj, peep_if, peep_o;
  if (proj) in_proj.emplace(w_hr->t(), N);  // e W_hr
  if (peep == Peep::full) {
    peep_if.emplace(wp.narrow(0, 0, 2 * H).t(), N);  // dz^{if} P_if
    peep_o.emplace(wp.narrow(0, 2 * H, H).t(), N);   // dz^o P_o
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_sequence_backward", [&] {
    const scalar_t* zb = gz.data_ptr<scalar_t>();
    const scalar_t* hb = hs_c.data_ptr<scalar_t>();
    const scalar_t* cb = cs_c.data_ptr<scalar_t>();
    const scalar_t* kb = tanh_phi ? ks_c.data_ptr<scalar_t>() : nullptr;
    const scalar_t* yb = gy.data_ptr<scalar_t>();
    const scalar_t* pd = peep == Peep::diagonal ? wp.data_ptr<scalar_t>() : nullptr;
    scalar_t* db = dz.data_ptr<scalar_t>();
    scalar_t* eb = proj ? es.data_ptr<scalar_t>() : nullptr;
    const scalar_t* ctb = ct.defined() ? ct.data_ptr<scalar_t>() : nullptr;
    scalar_t* asb = lnc ? as.data_ptr<scalar_t>() : nullptr;
    scalar_t* drnb = lnh ? drn.data_ptr<scalar_t>() : nullptr;
    const scalar_t* rnb = lnh ? rn_c.data_ptr<scalar_t>() : nullptr;
    const scalar_t* cnb = lnc ? cn_c.data_ptr<scalar_t>() : nullptr;
    const scalar_t* sdb = lnh || lnc ? sd.data_ptr<scalar_t>() : nullptr;
    const scalar_t* ahh = lnh ? a_hh.data_ptr<scalar_t>() : nullptr;
    const scalar_t* ac = lnc ? a_c.data_ptr<scalar_t>() : nullptr;
    const scalar_t* bc = lnc ? b_c.data_ptr<scalar_t>() : nullptr;
    for (int64_t i = 0; i < T; ++i) {
      const int64_t t = st.backward_step(i);
      const int64_t s_in = t + st.off_in(), s_out = t + st.off_out();
      const bool padded = mask.any_padded(t);
      at::Tensor carry_h, carry_c;
      if (reg.zoning()) {
        carry_h = reg.split(t, dh, gy.select(0, t), valid, 0);
        carry_c = reg.split(t, dc, at::Tensor(), valid, R);
      }
      scalar_t* dhp = dh.data_ptr<scalar_t>();
      scalar_t* dcp = dc.data_ptr<scalar_t>();
      scalar_t* dhn = dh_next.data_ptr<scalar_t>();
      scalar_t* dcn = dc_next.data_ptr<scalar_t>();
      if (proj) {  // e = m (dy + dh), then dr = e W_hr
        for_rows(N, R, [&](int64_t n) {
          const bool counts = !padded || mask.counts(t, n, N);
          scalar_t* e = eb + (t * N + n) * R;
          const scalar_t* y = yb + (t * N + n) * R;
          for (int64_t j = 0; j < R; ++j) e[j] = counts ? y[j] + dhp[n * R + j] : scalar_t(0);
        });
        in_proj->mm_(dr, es.select(0, t));
      }
      const scalar_t* drb = proj ? dr.data_ptr<scalar_t>() : nullptr;
      scalar_t* dctb = dct.numel() ? dct.data_ptr<scalar_t>() : nullptr;
      // `out` forms dz^o and dc~ (into dctb for a full peephole or LN_c); `gate` the rest from
      // dc~, then LN_hh's backward of the row's dz.
      auto one_row = [&](int64_t n, bool out, bool gate) {
          const int64_t row = t * N + n;
          scalar_t* d = db + row * H4;
          if (padded && !mask.counts(t, n, N)) {  // carried: no gradient through the cell
            std::fill(d, d + H4, scalar_t(0));
            if (dctb) std::fill(dctb + n * H, dctb + (n + 1) * H, scalar_t(0));
            if (asb) std::fill(asb + row * H, asb + (row + 1) * H, scalar_t(0));
            if (drnb) std::fill(drnb + row * H4, drnb + (row + 1) * H4, scalar_t(0));
            if (gate) {
              std::copy(dcp + n * H, dcp + (n + 1) * H, dcn + n * H);
              std::copy(dhp + n * R, dhp + (n + 1) * R, dhn + n * R);
            }
            return;
          }
          const scalar_t* z = zb + row * H4;
          const scalar_t* cp = cb + (s_in * N + n) * H;
          const scalar_t* cn = ctb ? ctb + row * H : cb + (s_out * N + n) * H;
          const scalar_t* k_row = kb ? kb + row * H : cn;
          const scalar_t* y = yb + row * R;
          scalar_t* a_row = asb ? asb + row * H : nullptr;
          const scalar_t* cn_row = cnb ? cnb + row * H : nullptr;
          for_lanes<scalar_t>(H, [&](auto tag, int64_t j) {
            using V = decltype(tag);
            const V one(scalar_t(1));
            V dc_t;
            if (out) {
              const V drv = drb ? load(drb + n * H + j, tag)
                                : load(y + j, tag) + load(dhp + n * R + j, tag);
              const V o = load(z + 3 * H + j, tag);
              // k = phi(c~), saved where phi is tanh; else c~ itself, or LN_c(c~)
              const V k = kb || !cn_row ? load(k_row + j, tag)
                                        : load(ac + j, tag) * load(cn_row + j, tag) +
                                              load(bc + j, tag);
              const V dzo = drv * k * o * (one - o);
              const V a = drv * o * (tanh_phi ? one - k * k : one);
              dc_t = load(dcp + n * H + j, tag);
              if (a_row) {
                store(a, a_row + j);
              } else {
                dc_t = dc_t + a;
              }
              if (pd) dc_t = dc_t + load(pd + 2 * H + j, tag) * dzo;
              store(dzo, d + 3 * H + j);
              if (!gate || a_row) {
                store(dc_t, dctb + n * H + j);
                return;
              }
            } else {
              dc_t = load(dctb + n * H + j, tag);
            }
            const V ig = load(z + j, tag), fg = load(z + H + j, tag), g = load(z + 2 * H + j, tag);
            const V dzi = dc_t * g * ig * (one - ig);
            const V dzf = dc_t * load(cp + j, tag) * fg * (one - fg);
            const V dzg = dc_t * ig * (tanh_g ? one - g * g : one);
            V dcn_v = dc_t * fg;
            if (pd) dcn_v = dcn_v + load(pd + j, tag) * dzi + load(pd + H + j, tag) * dzf;
            store(dzi, d + j);
            store(dzf, d + H + j);
            store(dzg, d + 2 * H + j);
            store(dcn_v, dcn + n * H + j);
          });
          if (out && a_row)  // dc~ += LN_c's backward of a
            ln_row_backward(a_row, ac, cn_row, sdb[(2 * T + t) * N + n], H, dctb + n * H, true);
          if (!gate) return;
          std::fill(dhn + n * R, dhn + (n + 1) * R, scalar_t(0));
          if (drnb)  // d(W_hh h_{t-1}) = LN_hh's backward of dz
            ln_row_backward(d, ahh, rnb + row * H4, sdb[(T + t) * N + n], H4, drnb + row * H4,
                            false);
      };
      auto pass = [&](bool out, bool gate) {
        for_rows(N, H4, [&](int64_t n) {
          if (lnc && out && gate) {
            one_row(n, true, false);
            one_row(n, false, true);
          } else {
            one_row(n, out, gate);
          }
        });
      };
      at::Tensor dz_t = dz.select(0, t);
      if (peep == Peep::full) {
        pass(true, false);
        peep_o->add_(dct, dz_t.narrow(1, 3 * H, H));  // dc~ += dz^o P_o
        pass(false, true);
        peep_if->add_(dc_next, dz_t.narrow(1, 0, 2 * H));  // dc_{t-1} += dz^{if} P_if
      } else {
        pass(true, true);
      }
      reg.add_back(rec, dh_next, lnh ? drn.select(0, t) : dz_t);  // dh_{t-1} += dz_t W_hh
      if (carry_h.defined()) {
        dh_next.add_(carry_h);
        dc_next.add_(carry_c);
      }
      std::swap(dh, dh_next);
      std::swap(dc, dc_next);
    }
  });
  at::Tensor dz2 = dz.view({T * N, H4});
  at::Tensor x2 = x.reshape({T * N, x.size(2)});
  at::Tensor h_prev = reg.before(hs_c.narrow(0, st.off_in(), T)).reshape({T * N, R});
  at::Tensor c_prev = cs_c.narrow(0, st.off_in(), T);
  at::Tensor c_new = ct.defined() ? ct : cs_c.narrow(0, st.off_out(), T);
  at::Tensor db = (b_ih || b_hh) ? dz2.sum(0) : absent(x);
  at::Tensor d_peep = absent(x);
  if (peep == Peep::diagonal) {  // [sum dz^i c_{t-1} ; sum dz^f c_{t-1} ; sum dz^o c~_t]
    const at::Tensor cp = c_prev.contiguous(), cn = c_new.contiguous();
    d_peep = at::empty({3 * H}, x.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_peephole_grad", [&] {
      const scalar_t* d = dz.data_ptr<scalar_t>();
      scalar_t* out = d_peep.data_ptr<scalar_t>();
      const scalar_t* p = cp.data_ptr<scalar_t>();
      column_dot(d, H4, p, H, T * N, H, out);               // i
      column_dot(d + H, H4, p, H, T * N, H, out + H);       // f
      column_dot(d + 3 * H, H4, cn.data_ptr<scalar_t>(), H, T * N, H, out + 2 * H);  // o
    });
  } else if (peep == Peep::full) {
    d_peep = at::cat({at::mm(dz2.narrow(1, 0, 2 * H).t(), c_prev.reshape({T * N, H})),
                      at::mm(dz2.narrow(1, 3 * H, H).t(), c_new.reshape({T * N, H}))});
  }
  // d(W_ih x): LN_ih's backward of dz
  at::Tensor du = ln_ih ? ln_input_backward(dz2, *ln_ih, xn, sd.select(0, 0)) : dz2;
  at::Tensor dw_hh = at::mm((lnh ? drn.view({T * N, H4}) : dz2).t(), h_prev);
  return {at::mm(du, w_ih).view(x.sizes()),
          dh,
          dc,
          at::mm(du.t(), x2),
          dw_hh,
          b_ih ? db : absent(x),
          b_hh ? (b_ih ? db.clone() : db) : absent(x),
          proj ? at::mm(es.view({T * N, R}).t(), rs.reshape({T * N, H})) : absent(x),
          d_peep,
          ln_ih ? ln_param_grad(dz2, xn) : absent(x),
          lnh ? ln_param_grad(dz2, rn_c) : absent(x),
          lnc ? ln_param_grad(as, cn_c) : absent(x)};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkit, CPU, m) {
  m.impl("lstm_sequence", &lstm_sequence);
  m.impl("lstm_sequence_inference", &lstm_sequence_inference);
  m.impl("lstm_sequence_backward", &lstm_sequence_backward);
}

}  // namespace rnnkit
