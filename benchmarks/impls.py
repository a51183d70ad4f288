"""The two implementations under test, with identical weights and hyperparameters.

charlstm: charlstm.engine (model.loss_and_grads, the streams split across --threads
          workers) + charlstm.optim (clip, Adam), float32.
PyTorch:  torch.nn.LSTM(V, H, L) on one-hot float input + nn.Linear(H, V),
          torch.optim.Adam, torch.nn.utils.clip_grad_norm_, float32.

Both carry the hidden state from window to window (truncated BPTT), as training does.
Shape legend: T window, B streams, V vocabulary, H hidden, L layers.
"""

from __future__ import annotations

from common import THREADS, torch_module

import charlstm
from charlstm import CharLSTM, ModelConfig, engine
from charlstm import model as cm
from charlstm.data import eval_windows
from charlstm.optim import Adam, clip_grad_norm

CLIP = 5.0
charlstm.set_num_threads(int(THREADS))  # stream-parallel workers, as torch's intra-op threads


class OursTrainer:
    """One training step = forward, loss, backward, global-norm clip, Adam."""

    def __init__(self, V, H, L, B, lr=2e-3, seed=0):
        self.model = CharLSTM(ModelConfig(vocab_size=V, hidden_size=H, num_layers=L), seed=seed)
        self.params, self.config = self.model.params, self.model.config
        self.opt = Adam(self.params, lr)
        self.state = cm.zero_state(self.config, B)

    def step(self, x, y) -> float:
        loss, grads, self.state, _, _ = engine.loss_and_grads(self.params, self.config,
                                                              x, y, self.state)
        clip_grad_norm(grads, CLIP)
        self.opt.step(self.params, grads)
        return loss

    def reset_state(self, B):
        self.state = cm.zero_state(self.config, B)


class TorchTrainer:
    """The same model in PyTorch, built from the same weights."""

    def __init__(self, params: dict, L, B, lr=2e-3):
        torch = self.torch = torch_module()
        V, H = params["decoder.weight"].shape
        self.V, self.L, self.H = V, L, H
        self.lstm = torch.nn.LSTM(V, H, L)
        self.decoder = torch.nn.Linear(H, V)
        self.lstm.load_state_dict({k.removeprefix("lstm."): torch.from_numpy(v.copy())
                                   for k, v in params.items() if k.startswith("lstm.")})
        self.decoder.load_state_dict({k.removeprefix("decoder."): torch.from_numpy(v.copy())
                                      for k, v in params.items() if k.startswith("decoder.")})
        self.parameters = list(self.lstm.parameters()) + list(self.decoder.parameters())
        self.opt = torch.optim.Adam(self.parameters, lr=lr)
        self.reset_state(B)

    def reset_state(self, B):
        zeros = self.torch.zeros(self.L, B, self.H)
        self.state = (zeros, zeros.clone())

    def step(self, x, y) -> float:
        torch, F = self.torch, self.torch.nn.functional
        onehot = F.one_hot(torch.from_numpy(x), self.V).float()
        out, (h, c) = self.lstm(onehot, self.state)
        logits = self.decoder(out)
        loss = F.cross_entropy(logits.reshape(-1, self.V), torch.from_numpy(y).reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.parameters, CLIP)
        self.opt.step()
        self.state = (h.detach(), c.detach())
        return loss.item()

    def params_numpy(self) -> dict:
        out = {f"lstm.{k}": v.detach().numpy() for k, v in self.lstm.state_dict().items()}
        out.update({f"decoder.{k}": v.detach().numpy()
                    for k, v in self.decoder.state_dict().items()})
        return out


def torch_eval(trainer: TorchTrainer, ids, B, T) -> float:
    """The same evaluation in PyTorch under no_grad."""
    torch, F = trainer.torch, trainer.torch.nn.functional
    total, count, state = 0.0, 0, None
    with torch.no_grad():
        for x, y, mask in eval_windows(ids, B, T):
            onehot = F.one_hot(torch.from_numpy(x), trainer.V).float()
            out, state = trainer.lstm(onehot, state)
            logits = trainer.decoder(out)
            nll = F.cross_entropy(logits.reshape(-1, trainer.V), torch.from_numpy(y).reshape(-1),
                                  reduction="none")
            m = torch.from_numpy(mask.reshape(-1))
            total += float(nll[m].double().sum())
            count += int(m.sum())
    return total / count


def torch_step_fn(trainer: TorchTrainer):
    """PyTorch as a sampling backend: (B,) ids, state -> (B, V) logits, state."""
    torch, F = trainer.torch, trainer.torch.nn.functional

    def step_fn(ids, state):
        with torch.no_grad():
            onehot = F.one_hot(torch.from_numpy(ids)[None, :], trainer.V).float()
            out, state = trainer.lstm(onehot, state)
            return trainer.decoder(out[0]).numpy(), state

    return step_fn
