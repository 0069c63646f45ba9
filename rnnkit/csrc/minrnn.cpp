// rnnkit::minrnn_sequence and its backward on the CPU: minGRU and minLSTM as one op.
//
// The gates read only the input, so the recurrence is linear in the state (rnnkit/ops/minrnn.py
// writes it out): per unit, with u_t = W_ih x_t + b_ih (one GEMM for every step, before the
// sweep) and m_t the padding mask,
//   z_t = sigmoid(k_z) (minGRU) or i_t / (f_t + i_t) (minLSTM, = sigmoid(softplus(-k_f) -
//   softplus(-k_i)), computed as the ratio: no logs),
//   g(v) = v + 1/2 (v >= 0) or sigmoid(v),  a_t = 1 - z_t,  b_t = z_t g(v_t),
//   h_t = m_t (a_t h_{t-1} + b_t) + (1 - m_t) h_{t-1},  y_t = m_t h_t.
// No weight touches h_{t-1}: a step is a pointwise pass, and every unit's recurrence is its own.
// On a GPU the time axis is what is wide, and the op runs the pairwise parallel scan
// (ops/minrnn.py, log2 T levels); on these CPUs the units are already many times the cores'
// lanes, so this sweep splits the units (batch rows x blocks of 64) across the threads and runs
// each block's T steps in one fused pass: gates, candidate and state in registers, the work of a
// sequential loop (the parallel scan's levels do about twice that, in separate passes).
//
// Backward, one fused pass back over the steps per block, from c = dL/dh_T:
//   gamma_t = m_t dy_t + c,  dz_t = m_t gamma_t (g(v_t) - h_{t-1}),  dk_t = dz_t z_t (1 - z_t),
//   dv_t = m_t gamma_t z_t g'(v_t),  c <- a_t gamma_t (m_t = 0: c passes unchanged),
//   minLSTM: dk_f = -sigmoid(-k_f) dk, dk_i = sigmoid(-k_i) dk;
// then over all T N rows at once dX = dU W_ih, dW_ih = dU^T X, db_ih = sum dU. Regularizers:
// recurrent dropout drops the candidate, b_t = z_t (r g(v_t)); zoneout keeps h_{t-1} with weight
// d: a_t -> d + (1 - d) a_t, b_t -> (1 - d) b_t. Layer normalization (ln_ih): u_t =
// LN_ih(W_ih x_t) + b_ih, its backward in dX and dW_ih (layer_norm.h).
#include <torch/library.h>

#include "layer_norm.h"

namespace rnnkit {
namespace {

constexpr int64_t kBlock = 64;  // units a thread sweeps together (a tile of lanes)

// the candidate's g and its derivative
template <typename s>
inline s cand_(s v) { return v >= s(0) ? v + s(0.5) : sigm(v); }
template <typename s>
inline Vec<s> cand_(const Vec<s>& v) {
  return Vec<s>::blendv(sigm(v), v + Vec<s>(s(0.5)), v >= Vec<s>(s(0)));
}
template <typename s>
inline s cand_prime(s v) {
  const s q = sigm(v);
  return v >= s(0) ? s(1) : q * (s(1) - q);
}
template <typename s>
inline Vec<s> cand_prime(const Vec<s>& v) {
  const Vec<s> q = sigm(v), one(s(1));
  return Vec<s>::blendv(q * (one - q), one, v >= Vec<s>(s(0)));
}

// What a step's lanes need: the update gate z (minLSTM: from its forget and input gates f, i),
// the candidate g(v), and the scan's coefficients a, b with the regularizers applied.
template <typename s, typename L>
struct Gates {
  L f, i, z, c, a, b;
};

template <typename s, typename L>
inline Gates<s, L> gates(const s* ur, int64_t H, int64_t j, bool lstm, const s* r, const s* d) {
  Gates<s, L> q;
  const L one(s(1));
  if (lstm) {  // i / (f + i) = sigmoid(softplus(-k_f) - softplus(-k_i)), without the logs
    q.f = sigm(load(ur + j, L()));
    q.i = sigm(load(ur + H + j, L()));
    q.z = q.i / (q.f + q.i);
  } else {
    q.z = sigm(load(ur + j, L()));
  }
  q.c = cand_(load(ur + (lstm ? 2 : 1) * H + j, L()));
  q.a = one - q.z;
  q.b = q.z * (r ? q.c * load(r + j, L()) : q.c);
  if (d) {
    const L dd = load(d + j, L());
    q.a = dd + (one - dd) * q.a;
    q.b = (one - dd) * q.b;
  }
  return q;
}

// f(n, j0, width) for every block of units, the blocks split across the threads
template <typename F>
inline void for_blocks(int64_t N, int64_t H, const F& f) {
  const int64_t per_row = (H + kBlock - 1) / kBlock;
  at::parallel_for(0, N * per_row, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t n = i / per_row, j0 = (i % per_row) * kBlock;
      f(n, j0, std::min(kBlock, H - j0));
    }
  });
}

using Out8 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                        at::Tensor, at::Tensor>;

// Returns (ys (T, N, H), h_T (N, H), hs (T + 1, N, H): the slots, u (T, N, G): the input
// product, both saved for backward, and the layer normalization's xn, rn, cn, rstd).
Out8 minrnn_sequence(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_ih,
                     const std::optional<at::Tensor>& b_ih,
                     const std::optional<at::Tensor>& valid, bool lstm, bool reverse,
                     const std::optional<at::Tensor>& drop, const std::optional<at::Tensor>& zone,
                     const std::optional<at::Tensor>& ln_ih) {
  const int64_t T = x.size(0), N = x.size(1), H = h0.size(1), G = w_ih.size(0);
  TORCH_CHECK(G == (lstm ? 3 : 2) * H, "w_ih: expected ", (lstm ? 3 : 2) * H, " rows, got ", G);
  Steps st{T, reverse};
  Mask mask(valid, T, N);
  Norms norms(ln_ih, std::nullopt, std::nullopt);
  norms.allocate(true, T, N, G, 0, x);
  at::Tensor u = sequence_buffer({T, N, G}, x.options());
  at::Tensor u2 = u.view({T * N, G});
  norms.project(u2, x.reshape({T * N, x.size(2)}), w_ih,
                norms.bias(b_ih.has_value() ? *b_ih : at::Tensor()), T, N);
  at::Tensor hs = sequence_buffer({T + 1, N, H}, x.options());
  hs.select(0, st.first()).copy_(h0);
  at::Tensor r = drop.has_value() ? drop->contiguous() : at::Tensor();
  at::Tensor zn = zone.has_value() ? zone->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "minrnn_sequence", [&] {
    using s = scalar_t;
    s* hb = hs.data_ptr<s>();
    const s* ub = u.data_ptr<s>();
    const s* rb = r.defined() ? r.data_ptr<s>() : nullptr;
    const s* zb = zn.defined() ? zn.data_ptr<s>() : nullptr;
    for_blocks(N, H, [&](int64_t n, int64_t j0, int64_t width) {
      const s* rr = rb ? rb + n * H + j0 : nullptr;
      for (int64_t i = 0; i < T; ++i) {
        const int64_t t = st.forward_step(i);
        const s* in = hb + ((t + st.off_in()) * N + n) * H + j0;
        s* out = hb + ((t + st.off_out()) * N + n) * H + j0;
        if (!mask.counts(t, n, N)) {  // padded: the state is carried
          std::copy(in, in + width, out);
          continue;
        }
        const s* ur = ub + (t * N + n) * G + j0;
        const s* dr = zb ? zb + (t * N + n) * H + j0 : nullptr;
        for_lanes<s>(width, [&](auto lane, int64_t j) {
          using L = decltype(lane);
          const auto q = gates<s, L>(ur, H, j, lstm, rr, dr);
          store(q.a * load(in + j, L()) + q.b, out + j);
        });
      }
    });
  });
  at::Tensor ys = sequence_copy(hs.narrow(0, st.off_out(), T));
  if (valid.has_value()) ys.mul_(valid->unsqueeze(2));
  return {ys, hs.select(0, st.last()).clone(), hs, u, norms.xn, norms.rn, norms.cn, norms.rstd};
}

// Returns (dx, dh0, dw_ih, db_ih, d ln_ih) (a (0,) tensor for an absent bias or site).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> minrnn_sequence_backward(
    const at::Tensor& grad_ys, const at::Tensor& grad_h_T, const at::Tensor& x,
    const at::Tensor& h0, const at::Tensor& w_ih, const std::optional<at::Tensor>& b_ih,
    const at::Tensor& hs, const at::Tensor& u, const at::Tensor& xn, const at::Tensor& /*rn*/,
    const at::Tensor& /*cn*/, const at::Tensor& rstd, const std::optional<at::Tensor>& valid,
    bool lstm, bool reverse, const std::optional<at::Tensor>& drop,
    const std::optional<at::Tensor>& zone, const std::optional<at::Tensor>& ln_ih) {
  const int64_t T = x.size(0), N = x.size(1), H = h0.size(1), G = w_ih.size(0);
  Steps st{T, reverse};
  Mask mask(valid, T, N);
  at::Tensor gy = grad_ys.contiguous(), hs_c = hs.contiguous(), u_c = u.contiguous();
  at::Tensor dh = grad_h_T.contiguous().clone();  // the carry c, per unit
  at::Tensor du = sequence_buffer({T, N, G}, x.options());
  at::Tensor r = drop.has_value() ? drop->contiguous() : at::Tensor();
  at::Tensor zn = zone.has_value() ? zone->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "minrnn_sequence_backward", [&] {
    using s = scalar_t;
    const s* hb = hs_c.data_ptr<s>();
    const s* ub = u_c.data_ptr<s>();
    const s* gb = gy.data_ptr<s>();
    const s* rb = r.defined() ? r.data_ptr<s>() : nullptr;
    const s* zb = zn.defined() ? zn.data_ptr<s>() : nullptr;
    s* cb = dh.data_ptr<s>();
    s* db = du.data_ptr<s>();
    for_blocks(N, H, [&](int64_t n, int64_t j0, int64_t width) {
      const s* rr = rb ? rb + n * H + j0 : nullptr;
      s* c = cb + n * H + j0;
      for (int64_t i = 0; i < T; ++i) {
        const int64_t t = st.backward_step(i);
        s* dur = db + (t * N + n) * G + j0;
        if (!mask.counts(t, n, N)) {  // no step: c passes to h_{t-1} unchanged
          for (int64_t k = 0; k < (lstm ? 3 : 2); ++k)
            std::fill(dur + k * H, dur + k * H + width, s(0));
          continue;
        }
        const s* ur = ub + (t * N + n) * G + j0;
        const s* dr = zb ? zb + (t * N + n) * H + j0 : nullptr;
        const s* before = hb + ((t + st.off_in()) * N + n) * H + j0;
        const s* g_t = gb + (t * N + n) * H + j0;
        for_lanes<s>(width, [&](auto lane, int64_t j) {
          using L = decltype(lane);
          const L one(s(1));
          const auto q = gates<s, L>(ur, H, j, lstm, rr, dr);
          const L gamma = load(g_t + j, L()) + load(c + j, L());
          const L keep = dr ? one - load(dr + j, L()) : one;  // (1 - d): what reaches z, g
          const L cr = rr ? q.c * load(rr + j, L()) : q.c;
          const L dk = keep * gamma * (cr - load(before + j, L())) * q.z * (one - q.z);
          L dcand = keep * gamma * q.z;
          if (rr) dcand = dcand * load(rr + j, L());
          const L dv = dcand * cand_prime(load(ur + (lstm ? 2 : 1) * H + j, L()));
          if (lstm) {
            store((q.f - one) * dk, dur + j);  // -sigmoid(-k_f) dk
            store((one - q.i) * dk, dur + H + j);  // sigmoid(-k_i) dk
            store(dv, dur + 2 * H + j);
          } else {
            store(dk, dur + j);
            store(dv, dur + H + j);
          }
          store(q.a * gamma, c + j);
        });
      }
    });
  });
  at::Tensor d2 = du.view({T * N, G});
  at::Tensor dIn = ln_ih ? ln_input_backward(d2, *ln_ih, xn, rstd.contiguous().select(0, 0)) : d2;
  at::Tensor x2 = x.reshape({T * N, x.size(2)});
  return {at::mm(dIn, w_ih).view({T, N, x.size(2)}), dh, at::mm(dIn.t(), x2),
          b_ih ? d2.sum(0) : absent(x), ln_ih ? ln_param_grad(d2, xn) : absent(x)};
}

}  // namespace

// Without a backward to feed: the same sweep, the slots and u dropped.
std::tuple<at::Tensor, at::Tensor> minrnn_sequence_inference(
    const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_ih,
    const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& valid, bool lstm,
    bool reverse, const std::optional<at::Tensor>& drop, const std::optional<at::Tensor>& zone,
    const std::optional<at::Tensor>& ln_ih) {
  auto out = minrnn_sequence(x, h0, w_ih, b_ih, valid, lstm, reverse, drop, zone, ln_ih);
  return {std::get<0>(out), std::get<1>(out)};
}

TORCH_LIBRARY_IMPL(rnnkit, CPU, m) {
  m.impl("minrnn_sequence_inference", &minrnn_sequence_inference);
  m.impl("minrnn_sequence", &minrnn_sequence);
  m.impl("minrnn_sequence_backward", &minrnn_sequence_backward);
}

}  // namespace rnnkit
