"""Load charlstm parameters into torch.nn.LSTM + torch.nn.Linear and run autograd."""

from __future__ import annotations

import torch


def torch_lm(params: dict, num_layers: int, dtype):
    """Build nn.LSTM(V, H, L) + nn.Linear(H, V) holding exactly `params`."""
    V, H = params["decoder.weight"].shape
    lstm = torch.nn.LSTM(V, H, num_layers).to(dtype)
    decoder = torch.nn.Linear(H, V).to(dtype)
    lstm.load_state_dict({k.removeprefix("lstm."): torch.from_numpy(v.copy())
                          for k, v in params.items() if k.startswith("lstm.")})
    decoder.load_state_dict({k.removeprefix("decoder."): torch.from_numpy(v.copy())
                             for k, v in params.items() if k.startswith("decoder.")})
    return lstm, decoder


def torch_loss_and_grads(params, num_layers, x, y, state):
    """Loss, logits, final state, parameter grads and initial-state grads via autograd."""
    dtype = torch.from_numpy(params["decoder.weight"]).dtype
    lstm, decoder = torch_lm(params, num_layers, dtype)
    V = params["decoder.weight"].shape[0]
    onehot = torch.nn.functional.one_hot(torch.from_numpy(x), V).to(dtype)
    h0 = torch.from_numpy(state[0].copy()).requires_grad_()
    c0 = torch.from_numpy(state[1].copy()).requires_grad_()
    out, (hT, cT) = lstm(onehot, (h0, c0))
    logits = decoder(out)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V),
                                             torch.from_numpy(y).reshape(-1))
    loss.backward()
    grads = {f"lstm.{n}": p.grad.numpy() for n, p in lstm.named_parameters()}
    grads.update({f"decoder.{n}": p.grad.numpy() for n, p in decoder.named_parameters()})
    return (loss.item(), logits.detach().numpy(), (hT.detach().numpy(), cT.detach().numpy()),
            grads, (h0.grad.numpy(), c0.grad.numpy()))
