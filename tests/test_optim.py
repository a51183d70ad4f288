"""The optimizers match torch.optim step for step; clipping matches clip_grad_norm_."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from charlstm.optim import clip_grad_norm, global_norm, make_optimizer

TORCH = {
    "adam": lambda ps, lr: torch.optim.Adam(ps, lr=lr, eps=1e-8),
    "rmsprop": lambda ps, lr: torch.optim.RMSprop(ps, lr=lr, alpha=0.95, eps=1e-8),
    "sgd": lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9),
    "adagrad": lambda ps, lr: torch.optim.Adagrad(ps, lr=lr, eps=1e-10),
}


@pytest.mark.parametrize("name", sorted(TORCH))
def test_matches_torch_optim(name):
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=(4, 3)), "b": rng.normal(size=(3,))}
    tparams = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    opt = make_optimizer(name, params, lr=0.01, momentum=0.9)
    topt = TORCH[name](list(tparams.values()), 0.01)
    for _ in range(5):
        grads = {k: rng.normal(size=v.shape) for k, v in params.items()}
        for k, t in tparams.items():
            t.grad = torch.tensor(grads[k].copy())
        opt.step(params, grads)
        topt.step()
        for k in params:
            # torch's RMSprop adds eps outside the sqrt too; all four share our formulas
            np.testing.assert_allclose(params[k], tparams[k].detach().numpy(), rtol=1e-12,
                                       atol=1e-12, err_msg=f"{name} {k}")


def test_clip_matches_torch_and_returns_pre_clip_norm():
    rng = np.random.default_rng(1)
    grads = {"a": rng.normal(size=(5, 5)), "b": rng.normal(size=(5,))}
    tensors = [torch.zeros(v.shape, dtype=torch.float64, requires_grad=True)
               for v in grads.values()]
    for t, g in zip(tensors, grads.values()):
        t.grad = torch.tensor(g.copy())
    expected = torch.nn.utils.clip_grad_norm_(tensors, 1.0).item()
    norm = clip_grad_norm(grads, 1.0)
    assert norm == pytest.approx(expected, rel=1e-12)
    for t, g in zip(tensors, grads.values()):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-12)
    assert global_norm(grads) == pytest.approx(1.0, rel=1e-5)
    assert clip_grad_norm(grads, 0) == pytest.approx(global_norm(grads))  # 0 disables


def test_weight_decay_skips_biases_and_state_round_trips():
    params = {"w": np.ones((2, 2)), "b": np.ones(2)}
    opt = make_optimizer("adam", params, lr=0.1, weight_decay=0.5)
    zero = {k: np.zeros_like(v) for k, v in params.items()}
    opt.step(params, zero)
    np.testing.assert_allclose(params["w"], 0.95)
    np.testing.assert_allclose(params["b"], 1.0)
    other = make_optimizer("adam", params, lr=0.1)
    other.load_state_arrays(opt.state_arrays(), opt.t)
    assert other.t == 1
    with pytest.raises(ValueError):
        make_optimizer("sgd", params, lr=0.1).load_state_arrays(opt.state_arrays(), 1)
