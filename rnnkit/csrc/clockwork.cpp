// rnnkit::clockwork_sequence and its backward on the CPU: the Clockwork RNN (Koutnik et al. 2014)
// as one op.
//
// Forward (step t in the order the direction visits them; m_t marks the sequences still running;
// g modules of B = H / g units, module k with period P_k; M the block mask, M[i, j] = [P_j >= P_i]
// for units i, j, so W~ = W_hh * M is block upper-triangular for increasing periods):
//   c_t = t0 + k_t   (k_t the valid steps visited before step t: an exact count, added once)
//   A_t[n, k] = m_t[n] and round(c_t[n]) mod P_k == 0   (per sequence and module, on the host)
//   z_t = u_t + b_hh + W~ h_{t-1},  h_t = A_t phi(z_t) + (1 - A_t) h_{t-1},  y_t = m_t h_t
//   t_T = t0 + sum_t m_t
// (phi tanh, sigmoid, relu or identity). Only the modules active in some sequence at step t are
// computed (the paper's saving: a slow module costs nothing at its inactive steps): for each run
// [lo, hi) of consecutive such modules' units, one GEMM z[:, lo:hi] = h_{t-1}[:, c:]
// W~[lo:hi, c:]^T over the columns c.. the run reads (c = lo for increasing periods: a module
// reads the modules at least as slow as itself) into the after-slot; then one parallel pointwise
// pass adds u_t + b_hh and applies phi where the sequence's module is active, copies h_{t-1}
// elsewhere, and writes y_t. With periods 1, 2, 4, ... the active modules are a prefix: a step is
// one GEMM over the first rows of W~ (on average under half of it) and the pass.
//
// Saved: xs (T + 1, N, H) the slots of the carried state h (h itself for every activation: the
// pure-torch loop keeps sigma = (h + 1) / 2 there with tanh, for its sigmoid trick; at::vec's
// tanh needs none, so the two implementations' xs differ with tanh and each backward reads its
// own forward's); active (T, N, H) bool: A_t per unit where some step is not batch-uniform (t0
// not the same for all sequences, or some padding), all False otherwise, as the pure-torch loop
// keeps it. The backward here does not read it: it makes A_t again from t0 and valid (N g
// numbers a step, on the host), and the runs with it. The inference op keeps neither: its
// outputs ys are its slot buffer (h_0 read in place, padded rows zeroed after the loop).
//
// Backward, going back over the steps from d = dL/dh_T (d the gradient of the carried h_t, e
// with its output's):
//   e = d + m_t dy_t,  dz_t = A_t e phi'(h_t)   (from the output: 1 - h^2, h (1 - h), [h > 0], 1)
//   d_{t-1} = (1 - A_t) e + W~^T dz_t   (one pass, then one GEMM per run of the step:
//                                        d[:, c:] += dz_t[:, lo:hi] W~[lo:hi, c:])
// then over all T N rows: du = dz, dW_hh = M * sum_t dz_t h_{t-1}^T (one GEMM per module's rows,
// over the columns it reads and the steps where it is active in some sequence), db_hh = sum dz,
// dh_0 = d, dt_0 = dt_T (round has zero derivative and t -> t + 1 is the identity).
//
// Recurrent dropout and zoneout (drop m (N, H), zone d (T, N, H); see Regularize in
// recurrence.h). Forward: z_t = u_t + b_hh + W~ (m h_{t-1}) (the runs' GEMMs read m h_{t-1}; a
// resting unit keeps its whole h_{t-1}), then h_t = d h_{t-1} + (1 - d) h^_t with h^_t the step
// above (A_t phi(z_t) + (1 - A_t) h_{t-1}; a resting unit's is h_{t-1} whatever d), only h zoned
// (never the counter); y_t = m_t h_t of the zoned h_t. Backward, with e = d_carried + m_t dy_t
// the gradient of the zoned h_t: e^ = (1 - d) e reaches h^_t and d e passes straight to h_{t-1}
// (Regularize::split scales d and dy_t by 1 - d and returns d e), so
//   dz_t = A_t e^ phi'(h_t),  d_{t-1} = (1 - A_t) e^ + d e + m (W~^T dz_t)
// (phi' read off the slot: where d = 1 it holds h_{t-1}, not phi(z_t), but e^ = 0 there), and
// dW_hh = M * sum_t dz_t (m h_{t-1})^T. A padded step still carries d_{t-1} = d_carried.
//
// Layer normalization of the recurrent product (ln_hh = [gamma ; beta] (2, H); layer_norm.h; the
// input product's LN_ih(W_ih x) + b_ih is in u, from cell.precompute outside the op), over ALL
// H units, as the cell normalizes its whole candidate:
//   r_t = W~ (m h_{t-1}),  r^_t = (r_t - mean(r_t)) rstd_t,  z_t = u_t + b_hh + gamma r^_t + beta
// (beta folds into the constant bias). An active unit's z needs the statistics of the whole
// row, so at a step where some module is active in some sequence the product is the full GEMM
// (every module's rows, into a scratch (N, H)), normalized a row at a time in the pass (every
// row); the paper's saving then is only the skipped steps where no module is active. Saved:
// rn = r^ (T, N, H; zeros at the skipped steps), rstd's row 1 = rstd_t (xn, cn, rows 0 and 2
// unused). Backward: dz_t as above (the gradient of z_t: du_t = dz_t, db_hh = sum dz), then
//   dr_t = rstd_t (e - mean(e) - r^_t mean(e r^_t)),  e = gamma dz_t   (0 where the row has no
//                                                                      active module)
// takes dz_t's place in the products, now full ones at the steps with some run:
//   d_{t-1} = (1 - A_t) e^ (+ d e) + m (W~^T dr_t),  dW_hh = M * sum_t dr_t (m h_{t-1})^T
// (one GEMM over all T N rows); dgamma = sum dz_t r^_t, dbeta = sum dz_t.
#include <torch/library.h>

#include <cmath>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "activations.h"
#include "layer_norm.h"

namespace rnnkit {
namespace {

// What the host knows before the loop: which module of which sequence is active at each step,
// the runs of consecutive modules active in some sequence at each step, and what each module
// reads.
struct Clock {
  int64_t g = 0, B = 0, H = 0;
  std::vector<char> act;              // (T, N, g): A_t[n, k]
  std::vector<int64_t> first;         // runs of step t: runs[first[t]] .. runs[first[t + 1] - 1]
  std::vector<std::pair<int64_t, int64_t>> runs;  // modules [a, b)
  std::vector<int64_t> reads;         // per module: the first module it reads (M's first 1)
  std::vector<int64_t> n_valid;       // per sequence: its valid steps
  bool uniform = false;               // t0 the same for all sequences and nothing padded

  // the first unit column that run [a, b) reads
  int64_t column(int64_t a, int64_t b) const {
    int64_t c = reads[a];
    for (int64_t k = a + 1; k < b; ++k) c = std::min(c, reads[k]);
    return c * B;
  }
};

template <typename scalar_t>
Clock make_clock(const scalar_t* t0, const Mask& mask, const Steps& st, c10::IntArrayRef periods,
                 int64_t N, int64_t H) {
  Clock c;
  const int64_t T = st.T, g = static_cast<int64_t>(periods.size());
  c.g = g;
  c.B = H / g;
  c.H = H;
  std::vector<scalar_t> P(g);  // (in the state's dtype, as the cell's buffers)
  for (int64_t k = 0; k < g; ++k) P[k] = scalar_t(periods[k]);
  c.reads.resize(g);
  for (int64_t k = 0; k < g; ++k) {
    int64_t j = 0;
    while (j < g && !(P[j] >= P[k])) ++j;
    c.reads[k] = std::min(j, k);
  }
  c.act.assign(T * N * g, 0);
  c.n_valid.assign(N, 0);
  bool padded = false;
  for (int64_t i = 0; i < T; ++i) {
    const int64_t t = st.forward_step(i);
    padded = padded || mask.any_padded(t);
    const char* prev = nullptr;  // the last row made, and its rounded counter
    scalar_t prev_count = 0;
    for (int64_t n = 0; n < N; ++n) {
      if (!mask.counts(t, n, N)) continue;
      char* row = c.act.data() + (t * N + n) * g;
      const scalar_t count = std::nearbyint(t0[n] + scalar_t(c.n_valid[n]));
      if (prev && count == prev_count) {
        std::copy(prev, prev + g, row);
      } else {
        for (int64_t k = 0; k < g; ++k) row[k] = std::fmod(count, P[k]) == scalar_t(0);
        prev = row;
        prev_count = count;
      }
      ++c.n_valid[n];
    }
  }
  c.first.assign(T + 1, 0);
  std::vector<char> any(g);
  for (int64_t t = 0; t < T; ++t) {
    std::fill(any.begin(), any.end(), 0);
    for (int64_t n = 0; n < N; ++n) {
      const char* row = c.act.data() + (t * N + n) * g;
      for (int64_t k = 0; k < g; ++k) any[k] |= row[k];
    }
    for (int64_t k = 0; k < g;) {
      if (!any[k]) {
        ++k;
        continue;
      }
      int64_t b = k + 1;
      while (b < g && any[b]) ++b;
      c.runs.emplace_back(k, b);
      k = b;
    }
    c.first[t + 1] = static_cast<int64_t>(c.runs.size());
  }
  c.uniform = N > 0 && !padded;
  for (int64_t n = 1; n < N && c.uniform; ++n) c.uniform = t0[n] == t0[0];
  return c;
}

// Zero the blocks of the (H, H) matrix w (contiguous) where M is 0 (module j's columns in module
// k's rows where P_j < P_k).
template <typename scalar_t>
void zero_unread(at::Tensor& w, c10::IntArrayRef periods) {
  const int64_t H = w.size(0), g = static_cast<int64_t>(periods.size()), B = H / g;
  scalar_t* p = w.data_ptr<scalar_t>();
  for (int64_t k = 0; k < g; ++k)
    for (int64_t j = 0; j < g; ++j) {
      if (scalar_t(periods[j]) >= scalar_t(periods[k])) continue;
      for (int64_t r = k * B; r < (k + 1) * B; ++r)
        std::fill(p + r * H + j * B, p + r * H + (j + 1) * B, scalar_t(0));
    }
}

// The per-step products of the runs: forward z[:, lo:hi] = h[:, c:] W~[lo:hi, c:]^T, backward
// d[:, c:] += dz[:, lo:hi] W~[lo:hi, c:], plain GEMMs on views (no copies). Not recurrence.h's
// Product: a run's packed oneDNN weight measured slower here, not faster (float32, H = 512,
// N = 32, periods 1, 2, 4, 8, 2-core AVX-512: forward 8.2 vs 4.5 ms at T = 50 with 2 threads,
// 10.4 vs 6.2 ms with 1; backward no better). The runs' products are at most H wide (Product's
// gain was measured on the LSTM's 4H) and a run is used at only some of the steps, so a packed
// weight (about two products to make) per run does not pay.
class RunProducts {
 public:
  RunProducts(const at::Tensor& w, const Clock& clock) : w_(w), clock_(clock) {}

  // forward: out (N, hi - lo) = h[:, c:] W~[lo:hi, c:]^T
  void forward(const at::Tensor& out_slot, const at::Tensor& h, int64_t a, int64_t b) const {
    const int64_t B = clock_.B, c = clock_.column(a, b), H = clock_.H;
    at::Tensor out = out_slot.narrow(1, a * B, (b - a) * B);
    at::mm_out(out, h.narrow(1, c, H - c), block(a, b, c).t());
  }
  // backward: d[:, c:] += dz[:, lo:hi] W~[lo:hi, c:]
  void backward(const at::Tensor& d, const at::Tensor& dz, int64_t a, int64_t b) const {
    const int64_t B = clock_.B, c = clock_.column(a, b), H = clock_.H;
    d.narrow(1, c, H - c).addmm_(dz.narrow(1, a * B, (b - a) * B), block(a, b, c));
  }

 private:
  at::Tensor block(int64_t a, int64_t b, int64_t c) const {  // W~[lo:hi, c:]
    return w_.narrow(0, a * clock_.B, (b - a) * clock_.B).narrow(1, c, clock_.H - c);
  }

  at::Tensor w_;
  const Clock& clock_;
};

void check_args(const at::Tensor& us, const at::Tensor& h0, const at::Tensor& t0,
                const at::Tensor& w_hh, const std::optional<at::Tensor>& b_hh,
                c10::IntArrayRef periods) {
  TORCH_CHECK(us.dim() == 3, "us: expected (T, N, H), got ", us.sizes());
  const int64_t N = us.size(1), H = us.size(2), g = static_cast<int64_t>(periods.size());
  TORCH_CHECK_VALUE(g > 0 && H % g == 0, "periods: expected as many modules as divide H = ", H,
                    " into equal ones, got ", g, " (", periods, ")");
  TORCH_CHECK(h0.dim() == 2 && h0.size(0) == N && h0.size(1) == H, "h0: expected (", N, ", ", H,
              "), got ", h0.sizes());
  TORCH_CHECK(t0.dim() == 2 && t0.size(0) == N && t0.size(1) == 1, "t0: expected (", N,
              ", 1), got ", t0.sizes());
  TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) == H && w_hh.size(1) == H, "w_hh: expected (", H,
              ", ", H, "), got ", w_hh.sizes());
  TORCH_CHECK(!b_hh || (b_hh->dim() == 1 && b_hh->size(0) == H), "b_hh: expected (", H,
              "), got ", b_hh ? b_hh->sizes() : c10::IntArrayRef{});
  for (const at::Tensor* t : {&h0, &t0, &w_hh}) {
    TORCH_CHECK(t->scalar_type() == us.scalar_type() && t->device() == us.device(),
                "clockwork_sequence: expected every tensor in us's dtype and on its device");
  }
  TORCH_CHECK(!b_hh || (b_hh->scalar_type() == us.scalar_type() && b_hh->device() == us.device()),
              "clockwork_sequence: expected every tensor in us's dtype and on its device");
}

// g laid out as torch.empty_like(input) (what the backward's fake says)
at::Tensor like_input(const at::Tensor& g, const at::Tensor& input) {
  if (g.strides() == input.strides()) return g;
  at::Tensor want = at::empty_like(input);
  return g.strides() == want.strides() ? g : want.copy_(g);
}

using Out9 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                        at::Tensor, at::Tensor, at::Tensor>;

// save: the op (xs, active kept, ys written by the pass); else the inference op (ys is the slot
// buffer, its padded rows zeroed after the loop).
Out9 run_forward(bool save, const at::Tensor& us, const at::Tensor& h0, const at::Tensor& t0,
                 const at::Tensor& w_hh, const std::optional<at::Tensor>& b_hh,
                 const std::optional<at::Tensor>& valid, c10::IntArrayRef periods,
                 c10::string_view activation, bool reverse, const std::optional<at::Tensor>& drop,
                 const std::optional<at::Tensor>& zone, const std::optional<at::Tensor>& ln_hh) {
  check_args(us, h0, t0, w_hh, b_hh, periods);
  const int64_t T = us.size(0), N = us.size(1), H = us.size(2);
  const int64_t g = static_cast<int64_t>(periods.size()), B = H / g;
  const Act act = elementwise_act(activation);
  Steps st{T, reverse};
  std::optional<at::Tensor> vc;
  if (valid.has_value()) vc = valid->contiguous();
  Mask mask(vc, T, N);
  Regularize reg(drop, zone);
  const auto opts = us.options();
  at::Tensor u = us.contiguous(), h0c = h0.contiguous(), t0c = t0.contiguous();
  at::Tensor bias = b_hh.has_value() ? b_hh->contiguous() : at::zeros({H}, opts);
  Norms norms(std::nullopt, ln_hh, std::nullopt);
  norms.allocate(save, T, N, H, 0, us);
  if (norms.hh) bias = (bias + norms.hh->select(0, 1)).contiguous();  // b_hh + beta
  const at::Tensor g_hh = ln_gain(norms.hh);
  at::Tensor rbuf = norms.hh ? at::empty({N, H}, opts) : at::Tensor();  // r_t = W~ (m h_{t-1})
  at::Tensor w = w_hh.clone(at::MemoryFormat::Contiguous);  // W~ below
  at::Tensor ys = sequence_buffer({T, N, H}, opts);
  at::Tensor xs = save ? sequence_buffer({T + 1, N, H}, opts) : absent(us);
  at::Tensor active = save ? at::zeros({T, N, H}, opts.dtype(at::kBool)) : absent(us);
  at::Tensor t_T = at::empty({N, 1}, opts);
  at::Tensor h_T;
  if (save) xs.select(0, st.first()).copy_(h0c);
  AT_DISPATCH_FLOATING_TYPES(us.scalar_type(), "clockwork_sequence", [&] {
    zero_unread<scalar_t>(w, periods);
    const scalar_t* t0p = t0c.data_ptr<scalar_t>();
    const Clock clock = make_clock<scalar_t>(t0p, mask, st, periods, N, H);
    scalar_t* tTp = t_T.data_ptr<scalar_t>();
    for (int64_t n = 0; n < N; ++n) tTp[n] = t0p[n] + scalar_t(clock.n_valid[n]);
    const RunProducts products(w, clock);
    const scalar_t* up = u.data_ptr<scalar_t>();
    const scalar_t* bp = bias.data_ptr<scalar_t>();
    scalar_t* ysp = ys.data_ptr<scalar_t>();
    const scalar_t* ghh = norms.hh ? g_hh.data_ptr<scalar_t>() : nullptr;
    const scalar_t* rbb = norms.hh ? rbuf.data_ptr<scalar_t>() : nullptr;
    scalar_t* rnb = norms.hh ? norms.rn.data_ptr<scalar_t>() : nullptr;
    scalar_t* sdb = norms.hh ? norms.rstd.data_ptr<scalar_t>() : nullptr;  // (3, T, N)
    at::Tensor before = save ? xs.select(0, st.first()) : h0c;
    with_act(act, [&](auto kind) {
      constexpr Act a = decltype(kind)::value;
      for (int64_t i = 0; i < T; ++i) {
        const int64_t t = st.forward_step(i);
        const int64_t tk = save ? t : 0;  // the step's rows of rn
        at::Tensor after = save ? xs.select(0, t + st.off_out()) : ys.select(0, t);
        const bool runs = clock.first[t] < clock.first[t + 1];
        if (runs && rbb) {  // LN_hh: the whole product r_t
          products.forward(rbuf, reg.input(before), 0, g);
        } else if (runs) {
          const at::Tensor& h_prod = reg.input(before);  // h_{t-1}, or m h_{t-1}
          for (int64_t r = clock.first[t]; r < clock.first[t + 1]; ++r)
            products.forward(after, h_prod, clock.runs[r].first, clock.runs[r].second);
        } else if (rnb && save) {  // (no module active: rn's rows of the step zero, not read)
          std::fill(rnb + t * N * H, rnb + (t + 1) * N * H, scalar_t(0));
        }
        const scalar_t* in = before.data_ptr<scalar_t>();
        scalar_t* out = after.data_ptr<scalar_t>();
        scalar_t* y_t = save ? ysp + t * N * H : nullptr;
        const scalar_t* u_t = up + t * N * H;
        const char* act_t = clock.act.data() + t * N * g;
        const bool padded = mask.any_padded(t);
        for_rows(N, H, [&](int64_t n) {
          const scalar_t* hi = in + n * H;
          scalar_t* ho = out + n * H;
          const scalar_t* ur = u_t + n * H;
          scalar_t* yr = y_t ? y_t + n * H : nullptr;
          const char* on = act_t + n * g;
          const bool counts = !padded || mask.counts(t, n, N);
          scalar_t* rn_row = nullptr;  // LN_hh: r^_t (every row of a step with runs)
          if (rbb && runs) {
            rn_row = rnb + (tk * N + n) * H;
            sdb[(T + t) * N + n] = ln_row(rbb + n * H, H, rn_row);
          }
          for (int64_t k = 0; k < g;) {  // spans of modules alike
            int64_t k2 = k + 1;
            while (k2 < g && on[k2] == on[k]) ++k2;
            const int64_t lo = k * B, len = (k2 - k) * B;
            if (on[k] && rn_row) {  // z = u + (b_hh + beta) + gamma r^
              for_lanes<scalar_t>(len, [&](auto tag, int64_t j) {
                j += lo;
                const auto h = phi<a>(load(ghh + j, tag) * load(rn_row + j, tag) +
                                      load(ur + j, tag) + load(bp + j, tag));
                store(h, ho + j);
                if (yr) store(h, yr + j);
              });
            } else if (on[k]) {  // ho holds h_{t-1} W~^T here
              for_lanes<scalar_t>(len, [&](auto tag, int64_t j) {
                j += lo;
                const auto h = phi<a>(load(ho + j, tag) + load(ur + j, tag) + load(bp + j, tag));
                store(h, ho + j);
                if (yr) store(h, yr + j);
              });
            } else {
              std::copy(hi + lo, hi + lo + len, ho + lo);
              if (yr && counts) std::copy(hi + lo, hi + lo + len, yr + lo);
              else if (yr) std::fill(yr + lo, yr + lo + len, scalar_t(0));
            }
            k = k2;
          }
        });
        reg.merge(t, after, before, 0);  // (a resting unit: lerp(h_{t-1}, h_{t-1}, d) = h_{t-1})
        before = after;
      }
    });
    h_T = before.clone();
    if (save && !clock.uniform) {  // A_t per unit, as the pure-torch loop keeps it
      bool* ap = active.data_ptr<bool>();
      for (int64_t r = 0; r < T * N; ++r)
        for (int64_t k = 0; k < g; ++k)
          if (clock.act[r * g + k]) std::fill(ap + r * H + k * B, ap + r * H + (k + 1) * B, true);
    }
  });
  if (save && reg.zoning()) ys.copy_(xs.narrow(0, st.off_out(), T));  // the zoned h_t
  if ((!save || reg.zoning()) && vc.has_value()) ys.mul_(vc->unsqueeze(2));
  return {ys, h_T, t_T, xs, active, norms.xn, norms.rn, norms.cn, norms.rstd};
}

Out9 clockwork_sequence(const at::Tensor& us, const at::Tensor& h0, const at::Tensor& t0,
                        const at::Tensor& w_hh, const std::optional<at::Tensor>& b_hh,
                        const std::optional<at::Tensor>& valid, c10::IntArrayRef periods,
                        c10::string_view activation, bool reverse,
                        const std::optional<at::Tensor>& drop,
                        const std::optional<at::Tensor>& zone,
                        const std::optional<at::Tensor>& ln_hh) {
  return run_forward(true, us, h0, t0, w_hh, b_hh, valid, periods, activation, reverse, drop,
                     zone, ln_hh);
}

// Without a backward to feed: no slot buffer (the outputs are the slots) and no activity mask.
std::tuple<at::Tensor, at::Tensor, at::Tensor> clockwork_sequence_inference(
    const at::Tensor& us, const at::Tensor& h0, const at::Tensor& t0, const at::Tensor& w_hh,
    const std::optional<at::Tensor>& b_hh, const std::optional<at::Tensor>& valid,
    c10::IntArrayRef periods, c10::string_view activation, bool reverse,
    const std::optional<at::Tensor>& drop, const std::optional<at::Tensor>& zone,
    const std::optional<at::Tensor>& ln_hh) {
  auto out = run_forward(false, us, h0, t0, w_hh, b_hh, valid, periods, activation, reverse,
                         drop, zone, ln_hh);
  return {std::get<0>(out), std::get<1>(out), std::get<2>(out)};
}

// Returns (dus, dh0, dt0, dw_hh, db_hh, dln_hh) (a (0,) tensor for an absent bias or ln_hh).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
clockwork_sequence_backward(
    const at::Tensor& grad_ys, const at::Tensor& grad_h_T, const at::Tensor& grad_t_T,
    const at::Tensor& us, const at::Tensor& h0, const at::Tensor& t0, const at::Tensor& w_hh,
    const std::optional<at::Tensor>& b_hh, const at::Tensor& xs, const at::Tensor& /*active*/,
    const at::Tensor& /*xn*/, const at::Tensor& rn, const at::Tensor& /*cn*/,
    const at::Tensor& rstd, const std::optional<at::Tensor>& valid, c10::IntArrayRef periods,
    c10::string_view activation, bool reverse, const std::optional<at::Tensor>& drop,
    const std::optional<at::Tensor>& zone, const std::optional<at::Tensor>& ln_hh) {
  check_args(us, h0, t0, w_hh, b_hh, periods);
  const int64_t T = us.size(0), N = us.size(1), H = us.size(2);
  const int64_t g = static_cast<int64_t>(periods.size()), B = H / g;
  TORCH_CHECK(xs.dim() == 3 && xs.size(0) == T + 1 && xs.size(1) == N && xs.size(2) == H,
              "xs: expected (", T + 1, ", ", N, ", ", H, "), got ", xs.sizes());
  TORCH_CHECK(grad_ys.sizes() == us.sizes() && grad_h_T.sizes() == h0.sizes() &&
                  grad_t_T.sizes() == t0.sizes(),
              "clockwork_sequence_backward: expected gradients shaped as the outputs");
  const Act act = elementwise_act(activation);
  Steps st{T, reverse};
  std::optional<at::Tensor> vc;
  if (valid.has_value()) vc = valid->contiguous();
  Mask mask(vc, T, N);
  Regularize reg(drop, zone);
  const auto opts = us.options();
  // (zoneout scales the step's output gradient in place: a copy)
  at::Tensor gy = reg.zoning() ? grad_ys.contiguous().clone() : grad_ys.contiguous();
  at::Tensor xs_c = xs.contiguous(), t0c = t0.contiguous();
  at::Tensor w = w_hh.clone(at::MemoryFormat::Contiguous);  // W~ below
  at::Tensor dz = sequence_buffer({T, N, H}, opts);
  at::Tensor d = grad_h_T.contiguous().clone(), d_next = at::empty_like(d);
  at::Tensor mdrop = drop.has_value() ? drop->contiguous() : at::Tensor();
  at::Tensor prod = mdrop.defined() ? at::empty_like(d) : at::Tensor();  // W~^T dz_t, dropping
  at::Tensor g_w = at::zeros({H, H}, opts);
  const bool lnh = ln_hh.has_value();
  const at::Tensor rn_c = lnh ? rn.contiguous() : at::Tensor();
  const at::Tensor sd = lnh ? rstd.contiguous() : at::Tensor();
  const at::Tensor g_hh = ln_gain(ln_hh);
  at::Tensor drn = lnh ? sequence_buffer({T, N, H}, opts) : at::Tensor();  // dr_t
  AT_DISPATCH_FLOATING_TYPES(us.scalar_type(), "clockwork_sequence_backward", [&] {
    zero_unread<scalar_t>(w, periods);
    const Clock clock = make_clock<scalar_t>(t0c.data_ptr<scalar_t>(), mask, st, periods, N, H);
    const RunProducts products(w, clock);
    const scalar_t* hp = xs_c.data_ptr<scalar_t>();
    const scalar_t* gyp = gy.data_ptr<scalar_t>();
    scalar_t* dzp = dz.data_ptr<scalar_t>();
    const scalar_t* rnb = lnh ? rn_c.data_ptr<scalar_t>() : nullptr;
    const scalar_t* sdb = lnh ? sd.data_ptr<scalar_t>() : nullptr;
    const scalar_t* ghh = lnh ? g_hh.data_ptr<scalar_t>() : nullptr;
    scalar_t* drnb = lnh ? drn.data_ptr<scalar_t>() : nullptr;
    with_act(act, [&](auto kind) {
      constexpr Act a = decltype(kind)::value;
      for (int64_t i = 0; i < T; ++i) {
        const int64_t t = st.backward_step(i);
        at::Tensor carry;  // d e, straight to h_{t-1} (zoneout); d and gy_t scaled by 1 - d
        if (reg.zoning()) carry = reg.split(t, d, gy.select(0, t), vc, 0);
        const scalar_t* h_t = hp + (t + st.off_out()) * N * H;
        const scalar_t* gy_t = gyp + t * N * H;
        scalar_t* dz_t = dzp + t * N * H;
        const scalar_t* dp = d.data_ptr<scalar_t>();
        scalar_t* dnp = d_next.data_ptr<scalar_t>();
        const char* act_t = clock.act.data() + t * N * g;
        const bool padded = mask.any_padded(t);
        const bool runs = clock.first[t] < clock.first[t + 1];
        for_rows(N, H, [&](int64_t n) {
          const scalar_t* hr = h_t + n * H;
          const scalar_t* gr = gy_t + n * H;
          const scalar_t* dr = dp + n * H;
          scalar_t* dzr = dz_t + n * H;
          scalar_t* dnr = dnp + n * H;
          const char* on = act_t + n * g;
          const bool counts = !padded || mask.counts(t, n, N);
          for (int64_t k = 0; k < g;) {  // spans of modules alike
            int64_t k2 = k + 1;
            while (k2 < g && on[k2] == on[k]) ++k2;
            const int64_t lo = k * B, len = (k2 - k) * B;
            if (on[k]) {  // (a sequence's active module counts at t)
              for_lanes<scalar_t>(len, [&](auto tag, int64_t j) {
                using V = decltype(tag);
                j += lo;
                const V e = load(dr + j, tag) + load(gr + j, tag);
                store(e * phi_prime<a>(load(hr + j, tag)), dzr + j);
                store(V(scalar_t(0)), dnr + j);
              });
            } else {
              std::fill(dzr + lo, dzr + lo + len, scalar_t(0));
              if (counts) {
                for_lanes<scalar_t>(len, [&](auto tag, int64_t j) {
                  j += lo;
                  store(load(dr + j, tag) + load(gr + j, tag), dnr + j);
                });
              } else {
                std::copy(dr + lo, dr + lo + len, dnr + lo);
              }
            }
            k = k2;
          }
          if (drnb) {  // dr_t: LN_hh's backward of dz_t (0 where no module of the row is active)
            scalar_t* drr = drnb + (t * N + n) * H;
            if (runs && std::any_of(on, on + g, [](char c) { return c != 0; })) {
              ln_row_backward(dzr, ghh, rnb + (t * N + n) * H, sdb[(T + t) * N + n], H, drr,
                              false);
            } else {
              std::fill(drr, drr + H, scalar_t(0));
            }
          }
        });
        at::Tensor dz_step = dz.select(0, t);
        if (lnh) {  // d_{t-1} += (m) (W~^T dr_t), the whole product
          if (runs && !mdrop.defined()) {
            products.backward(d_next, drn.select(0, t), 0, g);
          } else if (runs) {
            prod.zero_();
            products.backward(prod, drn.select(0, t), 0, g);
            d_next.addcmul_(prod, mdrop);
          }
        } else if (!mdrop.defined()) {
          for (int64_t r = clock.first[t]; r < clock.first[t + 1]; ++r)
            products.backward(d_next, dz_step, clock.runs[r].first, clock.runs[r].second);
        } else if (clock.first[t] < clock.first[t + 1]) {  // d_{t-1} += m (W~^T dz_t)
          prod.zero_();
          for (int64_t r = clock.first[t]; r < clock.first[t + 1]; ++r)
            products.backward(prod, dz_step, clock.runs[r].first, clock.runs[r].second);
          d_next.addcmul_(prod, mdrop);
        }
        if (carry.defined()) d_next.add_(carry);
        std::swap(d, d_next);
      }
    });
    // dW_hh: each module's rows over the columns it reads, summed over only the steps where the
    // module is active in some sequence (its dz is 0 at the others: a slow module costs nothing
    // there either; those steps' rows gathered first), then M's zeros
    std::vector<std::vector<int64_t>> steps_of(g);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t r = clock.first[t]; r < clock.first[t + 1]; ++r)
        for (int64_t k = clock.runs[r].first; k < clock.runs[r].second; ++k)
          steps_of[k].push_back(t);
    at::Tensor h_prev = reg.before(xs_c.narrow(0, st.off_in(), T));  // (T, N, H): (m) h_{t-1}
    if (lnh) {  // dW_hh = M * sum_t dr_t (m h_{t-1})^T, one GEMM
      at::mm_out(g_w, drn.view({T * N, H}).t(), h_prev.reshape({T * N, H}));
      zero_unread<scalar_t>(g_w, periods);
      return;
    }
    for (int64_t k = 0; k < g; ++k) {
      const std::vector<int64_t>& on = steps_of[k];
      if (on.empty()) continue;
      const int64_t c = clock.reads[k] * B;
      at::Tensor dz_k = dz.narrow(2, k * B, B), h_k = h_prev.narrow(2, c, H - c);
      if (static_cast<int64_t>(on.size()) < T) {
        at::Tensor idx = at::tensor(c10::ArrayRef<int64_t>(on), at::kLong);
        dz_k = dz_k.index_select(0, idx);
        h_k = h_k.index_select(0, idx);
      }
      at::Tensor rows = g_w.narrow(0, k * B, B).narrow(1, c, H - c);
      at::mm_out(rows, dz_k.reshape({-1, B}).t(), h_k.reshape({-1, H - c}));
    }
    zero_unread<scalar_t>(g_w, periods);
  });
  at::Tensor g_b = b_hh.has_value() ? dz.view({T * N, H}).sum(0) : absent(us);
  return {like_input(dz, us), like_input(d, h0), like_input(grad_t_T.clone(), t0),
          like_input(g_w, w_hh), b_hh.has_value() ? like_input(g_b, *b_hh) : g_b,
          lnh ? ln_param_grad(dz, rn_c) : absent(us)};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkit, CPU, m) {
  m.impl("clockwork_sequence", &clockwork_sequence);
  m.impl("clockwork_sequence_inference", &clockwork_sequence_inference);
  m.impl("clockwork_sequence_backward", &clockwork_sequence_backward);
}

}  // namespace rnnkit
