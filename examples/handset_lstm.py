"""A one-cell LSTM with hand-set weights that adds, forgets and outputs on command.

The input at each step is x = (x1, x2, x3): a value and two control signals.

- x2 = 1 adds x1 to the memory (input and forget gates open),
- x2 = -1 resets the memory (both gates shut),
- x2 = 0 keeps the memory unchanged,
- x3 = 1 outputs the memory (output gate open); otherwise the output is ~0.

Both activations are the identity (``candidate_activation`` and ``cell_activation``), so the
memory holds raw sums; the gates see only the input (``weight_hh = 0``):

    g = x1,   i = sigmoid(100 x2 - 10),   f = sigmoid(100 x2 + 10),   o = sigmoid(100 x3 - 10)
    c_t = f c_{t-1} + i g,   y_t = h_t = o c_t

A saturated gate is sigmoid(+-90) (1, or 0, to within 1e-39); a "closed" gate at x = 0 is
sigmoid(-10) ~ 4.5e-5, a small leak that keeps every output within 0.01 of the rule.

Run it: ``python examples/handset_lstm.py`` prints the step-by-step table.
"""

from __future__ import annotations

import torch

from rnnkit import LSTMCell, scan

X1 = [1, 3, 2, 4, 2, 1, 3, 6, 1]
X2 = [0, 1, 0, 1, 0, 0, -1, 1, 0]
X3 = [0, 0, 0, 0, 0, 1, 0, 0, 1]


def handset_lstm() -> LSTMCell:
    """The hand-set cell: 3 inputs, 1 unit, identity activations, weights as in the docstring."""
    cell = LSTMCell(3, 1, candidate_activation="identity", cell_activation="identity",
                    dtype=torch.float64)
    with torch.no_grad():
        # rows in torch's gate order i, f, g, o; columns x1, x2, x3
        cell.weight_ih.copy_(torch.tensor([[0.0, 100.0, 0.0],     # i: 100 x2 - 10
                                           [0.0, 100.0, 0.0],     # f: 100 x2 + 10
                                           [1.0, 0.0, 0.0],       # g: x1
                                           [0.0, 0.0, 100.0]]))   # o: 100 x3 - 10
        cell.bias_ih.copy_(torch.tensor([-10.0, 10.0, 0.0, -10.0]))
        cell.weight_hh.zero_()
        cell.bias_hh.zero_()
    return cell


def trace(x1, x2, x3) -> tuple[list[float], list[float]]:
    """Memory ``c_t`` and output ``y_t`` at every step, from a zero state."""
    cell = handset_lstm()
    xs = torch.tensor([list(x1), list(x2), list(x3)], dtype=torch.float64).T  # (T, 3)
    cs, ys = [], []
    state = None
    with torch.no_grad():
        for x in xs:  # the streaming step API, to read the memory after each step
            y, state = cell(x.view(1, 3), state)
            cs.append(state.c.item())
            ys.append(y.item())
    return cs, ys


def run(x1, x2, x3) -> list[float]:
    """The outputs ``y_t`` of the hand-set cell over the sequence ``(x1, x2, x3)_t``."""
    cell = handset_lstm()
    xs = torch.tensor([list(x1), list(x2), list(x3)], dtype=torch.float64).T  # (T, 3)
    with torch.no_grad():
        ys, _ = scan(cell, xs.unsqueeze(1))  # (T, 1, 1)
    return ys.flatten().tolist()


def main() -> None:
    cs, ys = trace(X1, X2, X3)
    print(f"{'t':>2} {'x1':>4} {'x2':>4} {'x3':>4} {'c_t':>8} {'y_t':>8}")
    for t, row in enumerate(zip(X1, X2, X3, cs, ys, strict=True), start=1):
        x1, x2, x3, c, y = row
        print(f"{t:>2} {x1:>4} {x2:>4} {x3:>4} {c:>8.3f} {y:>8.3f}")


if __name__ == "__main__":
    main()
