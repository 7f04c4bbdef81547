"""`lens chat` streams: answers come piece by piece and join to the answer generate_answers() gives."""

import pytest

from lensml.cli import chat, main
from lensml.runtime.generation import generate_answers, stream_answer
from lensml.runtime.models import ModelConfig, load_model
from tests.helpers import SENTENCES

PROMPTS = [SENTENCES["en"][0], SENTENCES["zh"][2], SENTENCES["sw"][4]]


@pytest.fixture(scope="module")
def tiny(tiny_llama):
    model, tok, _ = load_model(ModelConfig(model=str(tiny_llama)))
    return model, tok


@pytest.mark.parametrize("max_new_tokens", [1, 12])
def test_streamed_pieces_join_to_the_batched_answer(tiny, max_new_tokens):
    model, tok = tiny
    batched = generate_answers(model, tok, PROMPTS, max_new_tokens)
    for prompt, expected in zip(PROMPTS, batched):
        pieces = []
        text = stream_answer(model, tok, prompt, pieces.append, max_new_tokens)
        assert "".join(pieces) == text == expected
        assert all(pieces)  # no empty piece is handed over
        if max_new_tokens > 1 and len(expected) > 1:
            assert len(pieces) > 1, pieces  # tokens arrive as they come, not as one answer


class _Tokenizer:
    """Decodes ids by a table: what a byte-level tokenizer gives for a character split over tokens."""

    def __init__(self, table):
        self.table = table

    def decode(self, ids, skip_special_tokens=True):
        return self.table[tuple(ids)]


def test_a_split_character_and_trailing_space_are_held_back():
    import torch

    from lensml.runtime.generation import AnswerStreamer

    table = {(5,): " \ufffd", (5, 6): " 猫", (5, 6, 7): " 猫 ", (5, 6, 7, 8): " 猫 b"}
    pieces = []
    streamer = AnswerStreamer(_Tokenizer(table), [2], 10, pieces.append)
    streamer.put(torch.tensor([[1, 1, 1]]))  # the prompt, not shown
    for token in (5, 6, 7, 8):
        streamer.put(torch.tensor([token]))
    streamer.put(torch.tensor([2]))  # the stop token ends the answer
    streamer.put(torch.tensor([9]))
    streamer.end()
    assert pieces == ["猫", " b"] and streamer.text == "猫 b" and streamer.stopped


def test_chat_compare_prints_base_then_enhanced_streamed(tiny, tiny_llama, capsys, monkeypatch):
    model, tok = tiny
    calls = []

    def counting(*args, **kwargs):
        on_text = args[3]
        return stream_answer(*args[:3], lambda piece: (calls.append(piece), on_text(piece)), *args[4:], **kwargs)

    monkeypatch.setattr(chat, "stream_answer", counting)
    expected = generate_answers(model, tok, PROMPTS[:2], 6)
    capsys.readouterr()
    argv = ["chat", str(tiny_llama), "--compare", "--base", str(tiny_llama), "--max-new-tokens", "6"]
    assert main([*argv, "--prompt", PROMPTS[0], "--prompt", PROMPTS[1]]) == 0
    # one model at a time: the base answers every prompt, then the enhanced model does
    assert capsys.readouterr().out == (
        f"### {PROMPTS[0]}\n--- base\n{expected[0]}\n\n### {PROMPTS[1]}\n--- base\n{expected[1]}\n\n"
        f"### {PROMPTS[0]}\n--- enhanced\n{expected[0]}\n\n### {PROMPTS[1]}\n--- enhanced\n{expected[1]}\n\n")
    assert len(calls) > 4 and "".join(calls) == 2 * "".join(expected)
    assert main([*argv, "--prompt", PROMPTS[0]]) == 0  # one prompt: base, then enhanced, under one heading
    assert capsys.readouterr().out == f"### {PROMPTS[0]}\n--- base\n{expected[0]}\n--- enhanced\n{expected[0]}\n\n"
