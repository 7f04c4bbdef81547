import torch

from lensml.runtime.models import ModelConfig, load_model
from lensml.lens.probing import last_token_states
from lensml.runtime.templating import encode_prompts, last_token_index, masked_mean, pad, tokenize_rendered
from tests.helpers import SENTENCES


def test_no_duplicated_bos_and_generation_prompt_kept(tiny_llama):
    _, tok, _ = load_model(ModelConfig(model=str(tiny_llama)))
    ids = encode_prompts(tok, ["Why do cats purr?"])[0]
    assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id
    cut = encode_prompts(tok, ["Why do cats purr? " * 20], max_length=12)[0]
    assert len(cut) == 12 and cut[0] == tok.bos_token_id
    tail = tokenize_rendered(tok, "<|im_start|>assistant\n")
    assert cut[-len(tail):] == tail


def test_last_token_index_both_sides():
    mask_left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    mask_right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    assert last_token_index(mask_left).tolist() == [3, 3]
    assert last_token_index(mask_right).tolist() == [1, 3]


def test_masked_mean_ignores_padding():
    h = torch.tensor([[[1.0], [100.0], [3.0]]])
    assert masked_mean(h, torch.tensor([[1, 0, 1]])).item() == 2.0


def test_padding_side_invariance(tiny_gemma3):
    model, tok, _ = load_model(ModelConfig(model=str(tiny_gemma3)))
    ids = encode_prompts(tok, SENTENCES["sw"][:4])
    left = last_token_states(model, pad(ids, tok.pad_token_id, "left"))
    right = last_token_states(model, pad(ids, tok.pad_token_id, "right"))
    single = torch.cat([last_token_states(model, pad([s], tok.pad_token_id)) for s in ids], dim=1)
    assert torch.allclose(left, right, atol=1e-5)
    assert torch.allclose(left, single, atol=1e-5)
