// Per-step loops of the diagonal-peephole LSTM (tanh candidate and cell), in C++ with ATen ops.
// Mirrors rnnkit/kernels/lstm.py (_forward / LSTMSequence.backward) for peephole="diagonal",
// no projection, no lengths, forward direction. Everything outside the two loops stays in Python.
#include <torch/extension.h>

using at::Tensor;

// gates (T, N, 4H): u_t = W_ih x_t + b with the candidate rows scaled by 2 (tanh = 2 sigmoid(2z) - 1);
// on return, the gate activations i, f, g, o. w_hh_t (R, 4H): the scaled W_hh, transposed.
// p (3H): [p_i; p_f; p_o]. hs, cs (T+1, N, H) with slot 0 = h0, c0; ks (T, N, H) = tanh(c_t).
void forward_loop(Tensor gates, Tensor w_hh_t, Tensor p, Tensor hs, Tensor cs, Tensor ks) {
  at::NoGradGuard no_grad;
  const int64_t T = gates.size(0), N = gates.size(1), H = gates.size(2) / 4;
  const Tensor p_if = p.narrow(0, 0, 2 * H).view({2, H});
  const Tensor p_o = p.narrow(0, 2 * H, H);
  for (int64_t t = 0; t < T; ++t) {
    Tensor z = gates.select(0, t);
    Tensor h_in = hs.select(0, t), c_in = cs.select(0, t);
    Tensor h_out = hs.select(0, t + 1), c_out = cs.select(0, t + 1);
    z.addmm_(h_in, w_hh_t);
    z.narrow(1, 0, 2 * H).view({N, 2, H}).addcmul_(c_in.unsqueeze(1), p_if);
    z.narrow(1, 0, 3 * H).sigmoid_();
    Tensor i = z.narrow(1, 0, H), f = z.narrow(1, H, H);
    Tensor g = z.narrow(1, 2 * H, H), o = z.narrow(1, 3 * H, H);
    g.mul_(2).sub_(1);
    at::mul_out(c_out, f, c_in);
    c_out.addcmul_(i, g);
    o.addcmul_(c_out, p_o);
    o.sigmoid_();
    Tensor k = ks.select(0, t);
    at::add_out(k, c_out, c_out).sigmoid_().mul_(2).sub_(1);  // 2 sigmoid(2c) - 1
    at::mul_out(h_out, o, k);
  }
}

// The BPTT recurrence for the gate gradients. gates (T, N, 4H) activations; a (T, N, 3H) =
// [g s'(i), c_{t-1} s'(f), i (1 - g^2)]; b_o = k s'(o), b_c = o (1 - k^2) (T, N, H); w_hh (4H, R)
// unscaled; gy (T, N, H); dh, dc (N, H) gradients of h_T, c_T. Writes dz (T, N, 4H);
// returns (dh_0, dc_0).
std::vector<Tensor> backward_loop(Tensor gates, Tensor a, Tensor b_o, Tensor b_c, Tensor w_hh,
                                  Tensor p, Tensor gy, Tensor dh, Tensor dc, Tensor dz) {
  at::NoGradGuard no_grad;
  const int64_t T = gates.size(0), N = gates.size(1), H = gates.size(2) / 4;
  const Tensor p_i = p.narrow(0, 0, H), p_f = p.narrow(0, H, H), p_o = p.narrow(0, 2 * H, H);
  for (int64_t t = T - 1; t >= 0; --t) {
    Tensor dzt = dz.select(0, t);
    Tensor dzo = dzt.narrow(1, 3 * H, H);
    Tensor dr = at::add(gy.select(0, t), dh);
    at::mul_out(dzo, dr, b_o.select(0, t));
    Tensor dct = at::addcmul(dc, dr, b_c.select(0, t));
    dct.addcmul_(dzo, p_o);
    Tensor dz_ifg = dzt.narrow(1, 0, 3 * H).view({N, 3, H});
    at::mul_out(dz_ifg, dct.unsqueeze(1), a.select(0, t).view({N, 3, H}));
    Tensor dc_next = at::mul(dct, gates.select(0, t).narrow(1, H, H));
    dc_next.addcmul_(dzt.narrow(1, 0, H), p_i).addcmul_(dzt.narrow(1, H, H), p_f);
    dh = at::mm(dzt, w_hh);
    dc = dc_next;
  }
  return {dh, dc};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward_loop", &forward_loop, "diagonal-peephole LSTM forward loop");
  m.def("backward_loop", &backward_loop, "diagonal-peephole LSTM BPTT loop");
}
