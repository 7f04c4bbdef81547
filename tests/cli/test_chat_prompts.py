"""`lens chat` prompts: --prompt '' and empty stdin are the same thing, no question, refused before any model loads."""

import io

import pytest

from lensml.cli import chat, main


@pytest.fixture
def no_model(monkeypatch):
    monkeypatch.setattr(chat, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded a model")))


@pytest.mark.parametrize("argv, stdin, what", [
    (["--prompt", ""], "ignored\n", "every --prompt is empty"),
    (["--prompt", "  ", "--prompt", "\n"], "", "every --prompt is empty"),
    ([], "\n   \n", "stdin held no prompt"),
])
def test_an_empty_turn_is_refused_alike(argv, stdin, what, no_model, tiny_llama, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    assert main(["chat", str(tiny_llama), *argv]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: no prompt given ({what}): pass --prompt TEXT or pipe prompts on stdin, one per line")


def test_blank_prompts_are_skipped_from_either_source(monkeypatch):
    assert chat.read_prompts(["", " Why do cats purr? ", "  "]) == ["Why do cats purr?"]
    monkeypatch.setattr("sys.stdin", io.StringIO("What is a prime number?\n\n  Hi  \n"))
    assert chat.read_prompts(None) == ["What is a prime number?", "Hi"]
