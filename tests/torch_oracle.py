"""Any charlstm cell (lstm, gru, rnn) loaded into its torch.nn twin + nn.Linear, run by autograd.

The torch module is chosen by the cell name and the state is a tuple of (L, B, H)
arrays in the cell's STATE_NAMES order ((h, c) for the LSTM, (h,) otherwise).
"""

from __future__ import annotations

import torch

from charlstm.interop.torch import RECURRENT as TORCH_MODULES


def _load(module, params: dict, prefix: str, layer: int | None = None) -> None:
    """Load the params named prefix* into module; with layer k, only layer k's, as _l0."""
    tensors = {}
    for name, value in params.items():
        key = name.removeprefix(prefix)
        if key == name or (layer is not None and not key.endswith(f"_l{layer}")):
            continue
        if layer is not None:
            key = key.removesuffix(f"_l{layer}") + "_l0"
        tensors[key] = torch.from_numpy(value.copy())
    module.load_state_dict(tensors)


def torch_lm(params: dict, cell: str, num_layers: int, dtype):
    """nn.LSTM/GRU/RNN(V, H, L) + nn.Linear(H, V) holding exactly `params`."""
    V, H = params["decoder.weight"].shape
    rnn = TORCH_MODULES[cell](V, H, num_layers).to(dtype)  # nn.RNN defaults to tanh
    decoder = torch.nn.Linear(H, V).to(dtype)
    _load(rnn, params, cell + ".")
    _load(decoder, params, "decoder.")
    return rnn, decoder


def _layers(params: dict, cell: str, num_layers: int, dtype) -> list:
    """One single-layer torch module per layer (so masks can go between them)."""
    V, H = params["decoder.weight"].shape
    mods = []
    for k in range(num_layers):
        mod = TORCH_MODULES[cell](V if k == 0 else H, H, 1).to(dtype)
        _load(mod, params, cell + ".", layer=k)
        mods.append(mod)
    return mods


def torch_loss_and_grads(params, cell, num_layers, x, y, state, masks=None, ar=0.0, tar=0.0,
                         weight_masks=None):
    """Loss, logits, final state, parameter grads and initial-state grads via autograd.
    masks: charlstm's output dropout masks (L-1 or L, (T, B, H) or (1, B, H) broadcast),
    applied after torch's layers.
    ar, tar: AWD-LSTM's penalties on the top layer's output before its mask, added to
    the loss, with TAR's h[-1] the initial state's top-layer h (written here as
    AWD-LSTM does).
    weight_masks: name -> mask; the layer runs on weight * mask
    (torch.func.functional_call), so autograd chain-rules through the mask."""
    dtype = torch.from_numpy(params["decoder.weight"]).dtype
    V = params["decoder.weight"].shape[0]
    _, decoder = torch_lm(params, cell, num_layers, dtype)
    onehot = torch.nn.functional.one_hot(torch.from_numpy(x), V).to(dtype)
    state0 = [torch.from_numpy(s.copy()).requires_grad_() for s in state]
    weight_masks = weight_masks or {}

    def as_torch(s):
        return tuple(s) if cell == "lstm" else s[0]

    if masks is None and not weight_masks:
        rnn, _ = torch_lm(params, cell, num_layers, dtype)
        out, final = rnn(onehot, as_torch(state0))
        top = out
        final = final if cell == "lstm" else (final,)
        named = {f"{cell}.{n}": p for n, p in rnn.named_parameters()}
    else:
        out, finals, named = onehot, [], {}
        for k, mod in enumerate(_layers(params, cell, num_layers, dtype)):
            ours = {n: f"{cell}.{n.replace('_l0', f'_l{k}')}" for n, _ in mod.named_parameters()}
            used = {n: p * torch.from_numpy(weight_masks[ours[n]]) if ours[n] in weight_masks
                    else p for n, p in mod.named_parameters()}
            out, f = torch.func.functional_call(mod, used,
                                                (out, as_torch([s[k:k + 1] for s in state0])))
            finals.append(f if cell == "lstm" else (f,))
            top = out  # the last layer's output before its mask: what AR and TAR read
            if masks is not None and k < len(masks):
                out = out * torch.from_numpy(masks[k])
            named.update({ours[n]: p for n, p in mod.named_parameters()})
        final = tuple(torch.cat(parts) for parts in zip(*finals))
    logits = decoder(out)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V),
                                             torch.from_numpy(y).reshape(-1))
    if ar or tar:
        prev = torch.cat([state0[0][num_layers - 1:], top[:-1]])
        loss = loss + ar * top.pow(2).mean() + tar * (top - prev).pow(2).mean()
    loss.backward()
    grads = {name: p.grad.numpy() for name, p in named.items()}
    grads.update({f"decoder.{n}": p.grad.numpy() for n, p in decoder.named_parameters()})
    return (loss.item(), logits.detach().numpy(), tuple(f.detach().numpy() for f in final),
            grads, tuple(s.grad.numpy() for s in state0))
