"""``rnnkit generate``: write text with a saved language model, one token at a time.

The priming text is read once (one forward pass gives the state after it); then each step
draws the next token from p(w_{t+1} | w_1..w_t) (temperature, top-k; temperature 0 = greedy),
prints it at once, and feeds it back through one step of the network, carrying the state
(torch-rnn's ``LanguageModel:sample``): the context is never re-read, so each token costs the
same however long the text grows.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def generate(task, model, prime: str = "", *, length: int = 200, temperature: float = 1.0,
             top_k: int | None = None, seed: int | None = None,
             emit: Callable[[str], object] | None = None) -> str:
    """Generate ``length`` tokens after ``prime`` with ``model`` (a
    :class:`~rnnkit.heads.language_model.LanguageModel` of ``task``, a
    :class:`~rnnkit.tasks.language.LanguageModelTask`). ``emit(text)`` receives each token's
    text as it comes. Returns the generated text (without the prime)."""
    from rnnkit.heads.search import next_token

    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length: expected an int >= 1, got {length!r}")
    ids = task.encode_text(prime) if prime else [task.start_index()]
    if not ids:
        raise ValueError(f"prime: expected some text the model can read, got {prime!r}")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    model.eval()
    pieces = []
    with torch.no_grad():
        logits, state = model(torch.tensor([ids], device=device))  # (1, T, V)
        log_probs = logits[:, -1].log_softmax(-1)  # (1, V)
        for _ in range(length):
            token = next_token(log_probs, temperature=temperature, top_k=top_k,
                               generator=generator)  # (1,)
            text = task.token_text(int(token))
            pieces.append(text)
            if emit is not None:
                emit(text)
            log_probs, state = model.step(token, state)
    return "".join(pieces)
