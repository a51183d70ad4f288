"""Any charlstm cell (lstm, gru, rnn) loaded into its torch.nn twin + nn.Linear, run by autograd.

The torch module is chosen by the cell name and the state is a tuple of (L, B, H)
arrays in the cell's STATE_NAMES order ((h, c) for the LSTM, (h,) otherwise).
"""

from __future__ import annotations

import torch

TORCH_MODULES = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}


def torch_lm(params: dict, cell: str, num_layers: int, dtype):
    """nn.LSTM/GRU/RNN(V, H, L) + nn.Linear(H, V) holding exactly `params`."""
    V, H = params["decoder.weight"].shape
    rnn = TORCH_MODULES[cell](V, H, num_layers).to(dtype)  # nn.RNN defaults to tanh
    decoder = torch.nn.Linear(H, V).to(dtype)
    prefix = cell + "."
    rnn.load_state_dict({k.removeprefix(prefix): torch.from_numpy(v.copy())
                         for k, v in params.items() if k.startswith(prefix)})
    decoder.load_state_dict({k.removeprefix("decoder."): torch.from_numpy(v.copy())
                             for k, v in params.items() if k.startswith("decoder.")})
    return rnn, decoder


def torch_loss_and_grads(params, cell, num_layers, x, y, state):
    """Loss, logits, final state, parameter grads and initial-state grads via autograd."""
    dtype = torch.from_numpy(params["decoder.weight"]).dtype
    rnn, decoder = torch_lm(params, cell, num_layers, dtype)
    V = params["decoder.weight"].shape[0]
    onehot = torch.nn.functional.one_hot(torch.from_numpy(x), V).to(dtype)
    state0 = [torch.from_numpy(s.copy()).requires_grad_() for s in state]
    out, final = rnn(onehot, tuple(state0) if cell == "lstm" else state0[0])
    final = final if cell == "lstm" else (final,)
    logits = decoder(out)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V),
                                             torch.from_numpy(y).reshape(-1))
    loss.backward()
    grads = {f"{cell}.{n}": p.grad.numpy() for n, p in rnn.named_parameters()}
    grads.update({f"decoder.{n}": p.grad.numpy() for n, p in decoder.named_parameters()})
    return (loss.item(), logits.detach().numpy(), tuple(f.detach().numpy() for f in final),
            grads, tuple(s.grad.numpy() for s in state0))
