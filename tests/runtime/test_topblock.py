"""The cached top-block forward must equal the model's full forward."""

import pytest
import torch

from lensml.runtime.models import ModelConfig, load_model
from lensml.runtime.templating import encode_prompts, gather_last, pad
from lensml.runtime.topblock import TopBlock
from tests.helpers import SENTENCES


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_gemma3"])
@pytest.mark.parametrize("start", [-1, -2, 1])
def test_cached_path_equals_full_forward(arch, start, request):
    model, tok, _ = load_model(ModelConfig(model=str(request.getfixturevalue(arch))))
    ids = encode_prompts(tok, SENTENCES["zh"][:3] + SENTENCES["en"][:3])  # unequal lengths: padding
    batch = pad(ids, tok.pad_token_id, "left")
    block = TopBlock(model, start)
    h_in, final = block.full(batch)
    cached = block.forward(batch, h_in)
    mask = batch.attention_mask.bool()
    assert torch.allclose(cached[mask], final[mask], atol=1e-5)
    # The model itself is untouched afterwards: its layers are the real ones again.
    again = block.decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                          position_ids=batch.position_ids).last_hidden_state
    assert torch.allclose(again[mask], final[mask], atol=1e-6)
    # Gradients reach the trained block only through the cached path.
    cached = block.forward(batch, h_in)
    gather_last(cached, batch.attention_mask).sum().backward()
    assert all(p.grad is not None for p in block.parameters())
    assert all(p.grad is None for layer in list(block.decoder.layers)[:block.start] for p in layer.parameters())


def test_cached_path_runs_fewer_layers(tiny_llama):
    model, tok, _ = load_model(ModelConfig(model=str(tiny_llama)))
    batch = pad(encode_prompts(tok, SENTENCES["en"][:2]), tok.pad_token_id)
    block = TopBlock(model, -1)
    h_in, _ = block.full(batch)
    calls = []
    hooks = [layer.register_forward_hook(lambda m, a, o: calls.append(1)) for layer in block.decoder.layers]
    block.forward(batch, h_in)
    for h in hooks:
        h.remove()
    assert len(calls) == 1


def test_start_layer_out_of_range(tiny_llama):
    from lensml.errors import LensError
    model, _, _ = load_model(ModelConfig(model=str(tiny_llama)))
    with pytest.raises(LensError, match="outside the model's 4 decoder layers"):
        TopBlock(model, 4)
