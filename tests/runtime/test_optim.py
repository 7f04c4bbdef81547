import torch

from lensml.runtime.optim import LowPrecisionAdamW, make_optimizer, stochastic_round_to_bf16


def test_stochastic_rounding_is_unbiased_and_exact_on_bf16_values():
    x = torch.full((200_000,), 1.0 + 2 ** -10)  # between the bf16 neighbours 1 and 1 + 2^-7
    r = stochastic_round_to_bf16(x, torch.Generator().manual_seed(0)).float()
    assert set(r.unique().tolist()) == {1.0, 1.0 + 2 ** -7}
    assert abs(r.mean().item() - (1.0 + 2 ** -10)) < 2e-5
    exact = torch.tensor([0.5, -3.0, 1024.0])
    assert torch.equal(stochastic_round_to_bf16(exact).float(), exact)


def test_small_updates_survive_in_bf16():
    torch.manual_seed(0)
    w0 = torch.randn(4096) * 0.02
    p_bf16 = torch.nn.Parameter(w0.to(torch.bfloat16))
    p_fp32 = torch.nn.Parameter(p_bf16.detach().float().clone())
    opts = [LowPrecisionAdamW([p_bf16], lr=1e-5, weight_decay=0.1), torch.optim.AdamW([p_fp32], lr=1e-5, weight_decay=0.1)]
    for _ in range(20):
        for p, opt in zip((p_bf16, p_fp32), opts):
            p.grad = torch.ones_like(p)
            opt.step()
    moved_fp32 = (p_fp32.detach() - w0.to(torch.bfloat16).float()).mean()
    moved_bf16 = (p_bf16.detach().float() - w0.to(torch.bfloat16).float()).mean()
    # Plain bf16 rounding would leave most weights unchanged; stochastic rounding tracks fp32 AdamW on average.
    assert abs(moved_bf16 - moved_fp32) < 0.1 * abs(moved_fp32)


def test_fp32_weights_use_torch_adamw():
    p = torch.nn.Parameter(torch.zeros(3))
    assert isinstance(make_optimizer([p], 1e-3, 0.1), torch.optim.AdamW)
    q = torch.nn.Parameter(torch.zeros(3, dtype=torch.bfloat16))
    assert isinstance(make_optimizer([q], 1e-3, 0.1), LowPrecisionAdamW)


def test_matches_torch_adamw_in_fp32_math():
    torch.manual_seed(1)
    a = torch.nn.Parameter(torch.randn(64, dtype=torch.float32))
    b = torch.nn.Parameter(a.detach().clone())
    mine, ref = LowPrecisionAdamW([a], lr=1e-2, weight_decay=0.1), torch.optim.AdamW([b], lr=1e-2, weight_decay=0.1)
    for _ in range(5):
        g = torch.randn(64)
        a.grad, b.grad = g.clone(), g.clone()
        mine.step()
        ref.step()
    assert torch.allclose(a, b, atol=1e-6)


def test_closure_is_evaluated_and_its_loss_returned():
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.bfloat16))
    opt = LowPrecisionAdamW([p], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p.float() ** 2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == 3.0 and p.float().sum().item() < 3.0
