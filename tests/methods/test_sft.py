"""The fine-tuning baselines: xsft, xsft-full and qalign, on a tiny model."""

import pytest
import torch
import torch.nn.functional as F

from lensml import methods
from lensml.data.loaders import load_rows
from lensml.errors import LensError
from lensml.methods.base import MethodInputs
from lensml.methods.qalign import stage_pairs
from lensml.methods.sft import IGNORE, SFTConfig, build_examples, encode_pair, response_loss
from lensml.runtime.models import ModelConfig, load_model
from lensml.runtime.templating import render
from lensml.training import TrainConfig
from tests.helpers import write_parallel_data


@pytest.fixture(scope="module")
def qa_data(tmp_path_factory):
    return write_parallel_data(tmp_path_factory.mktemp("qa") / "qa.jsonl", repeat=2, responses=True)


def _load(path):
    model, tok, _ = load_model(ModelConfig(model=str(path)))
    return model, tok


def test_encode_pair_masks_the_prompt_and_ends_with_the_turn_marker(tiny_llama):
    _, tok = _load(tiny_llama)
    ids, labels = encode_pair(tok, "Why do cats purr?", "They purr when content.", 128, 64)
    prompt = tok(render(tok, "Why do cats purr?"), add_special_tokens=False)["input_ids"]
    full = tok(render(tok, [{"role": "user", "content": "Why do cats purr?"},
                            {"role": "assistant", "content": "They purr when content."}], generation_prompt=False),
               add_special_tokens=False)["input_ids"]
    assert ids == full  # the whole conversation, exactly as the template writes it
    assert labels[:len(prompt)] == [IGNORE] * len(prompt)
    assert labels[len(prompt):] == full[len(prompt):] and labels[-2] == tok.convert_tokens_to_ids("<|im_end|>")
    # A response budget keeps the end: cut from the right but the last token survives.
    ids2, labels2 = encode_pair(tok, "Why do cats purr?", "They purr when content.", 128, 3)
    assert labels2[len(prompt):] == full[len(prompt):len(prompt) + 2] + full[-1:]


def test_response_loss_is_cross_entropy_on_response_tokens_only(tiny_llama):
    model, tok = _load(tiny_llama)
    pairs = [encode_pair(tok, "Why do cats purr?", "They purr when content.", 128, 64),
             encode_pair(tok, "What is a prime number?", "A number with two divisors.", 128, 64)]
    ids, labels = [p[0] for p in pairs], [p[1] for p in pairs]
    with torch.no_grad():
        got = response_loss(model, ids, labels, tok.pad_token_id, torch.device("cpu"))
        # By hand: each sequence alone (no padding), full logits, targets = next token where labelled.
        terms = []
        for seq, lab in zip(ids, labels):
            logits = model(input_ids=torch.tensor([seq])).logits[0]
            for t in range(len(seq) - 1):
                if lab[t + 1] != IGNORE:
                    terms.append(-F.log_softmax(logits[t].float(), -1)[lab[t + 1]])
    want = torch.stack(terms).mean()
    assert torch.allclose(got, want, atol=1e-5), (float(got), float(want))
    # The prompt does not count: changing only the prompt's labels to real ids changes the loss.
    labels_all = [seq[:] for seq in ids]
    with torch.no_grad():
        assert not torch.allclose(response_loss(model, ids, labels_all, tok.pad_token_id, torch.device("cpu")), got)


def _inputs(data, langs=("en", "zh")):
    rows = load_rows(str(data), list(langs), responses=list(langs))
    return MethodInputs(rows, list(langs), "en", None, None, [r["responses"] for r in rows])


def _changed(model, before):
    return {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}


@pytest.mark.parametrize("name", ["xsft", "xsft-full", "qalign"])
def test_the_papers_baselines_change_every_parameter_after_one_step(name, tiny_llama, qa_data):
    """As the LENS paper ran them (Table 5: 100% of the parameters), unless --train.start-layer is given."""
    model, tok = _load(tiny_llama)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    method = methods.get(name)
    cfg = TrainConfig(lr=1e-2, batch_size=16)  # 16 rows: one step (qalign: one per stage)
    result = method.train(model, tok, _inputs(qa_data), cfg)
    assert result.steps == (2 if name == "qalign" else 1) and result.resolved["role"] == "paper"
    assert _changed(model, before) == set(before)  # every tensor, embeddings and norms included
    assert result.trainable_share == 1.0 and result.resolved["trained"] == "every parameter"
    assert set(method.trainable_names(model, cfg)) == {n for n, _ in model.named_parameters()}
    assert "input_cache" not in result.timings_s  # nothing below a trained layer to cache
    assert result.resolved["instruction_rows"] == (32 if name == "qalign" else 16)
    assert not any(p.requires_grad for p in model.parameters())
    if name == "xsft-full":  # no --sft.full-data: the run's own rows, i.e. xsft, and it says so
        assert result.resolved["full_data"] is None and "so this run is xsft" in result.resolved["note"]


@pytest.mark.parametrize("name,start", [("xsft-top", None), ("xsft", -2), ("qalign", -2)])
def test_controls_change_only_their_layers(name, start, tiny_llama, qa_data):
    model, tok = _load(tiny_llama)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    method = methods.get(name)
    cfg = TrainConfig(lr=1e-2, batch_size=4) if start is None else TrainConfig(lr=1e-2, batch_size=4, start_layer=start)
    result = method.train(model, tok, _inputs(qa_data), cfg)
    assert result.steps == (8 if name == "qalign" else 4) and result.resolved["role"] == "control"
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    changed, names = _changed(model, before), set(method.trainable_names(model, cfg))
    assert changed and changed <= names and all(k.startswith(("model.layers.2.", "model.layers.3.")) for k in changed)
    assert {k for k in before if k.startswith(("model.layers.2.", "model.layers.3."))} == changed
    assert result.trainable_parameters == sum(p.numel() for n, p in model.named_parameters() if n in names)
    assert 0 < result.trainable_share < 1 and "input_cache" in result.timings_s  # the frozen layers ran once


def test_xsft_languages_and_include_central(tiny_llama, qa_data):
    method = methods.get("xsft")
    assert method.response_languages(["en", "zh", "sw"], "en") == ["zh", "sw"]
    assert method.response_languages(["en", "zh"], "en", SFTConfig(include_central=True)) == ["en", "zh"]
    assert methods.get("qalign").response_languages(["en", "zh"], "en") == ["en"]
    model, tok = _load(tiny_llama)
    result = method.train(model, tok, _inputs(qa_data), TrainConfig(lr=1e-3, batch_size=8),
                          options=SFTConfig(include_central=True))
    assert result.resolved["languages"] == ["en", "zh"] and result.steps == 2 and result.resolved["instruction_rows"] == 32


def test_qalign_stage_targets_exact_token_ids(tiny_llama, tmp_path):
    _, tok = _load(tiny_llama)
    data = write_parallel_data(tmp_path / "two.jsonl", langs=("en", "zh", "sw"), repeat=1, responses=True)
    rows = load_rows(str(data), ["en", "zh", "sw"])[:2]
    stage1, stage2 = stage_pairs(rows, [r["responses"] for r in rows], "en", ["zh", "sw"])
    assert stage1 == [[("怎样让罗勒保持新鲜？", "How do I keep basil fresh?"),
                       ("Ninawezaje kuweka basil ikiwa mbichi?", "How do I keep basil fresh?")],
                      [("说出两颗靠近太阳的行星。", "Name two planets near the sun."),
                       ("Taja sayari mbili karibu na jua.", "Name two planets near the sun.")]]
    assert stage2 == [[("How do I keep basil fresh?", "Wrap it in a damp towel.")],
                      [("Name two planets near the sun.", "Mercury and Venus.")]]
    ex = build_examples(tok, stage1, TrainConfig(), SFTConfig().max_response_tokens)
    enc = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    # Stage 1, row 0, zh: input = templated zh question + the English question as the assistant turn.
    want = enc("<s><|im_start|>user\n怎样让罗勒保持新鲜？<|im_end|>\n<|im_start|>assistant\n"
               "How do I keep basil fresh?<|im_end|>\n")
    assert ex.ids[0][0] == want
    n_prompt = len(enc("<s><|im_start|>user\n怎样让罗勒保持新鲜？<|im_end|>\n<|im_start|>assistant\n"))
    assert ex.labels[0][0] == [IGNORE] * n_prompt + want[n_prompt:]
    assert tok.decode(want[n_prompt:]) == "How do I keep basil fresh?<|im_end|>\n"


def test_qalign_runs_both_stages(tiny_llama, qa_data):
    model, tok = _load(tiny_llama)
    result = methods.get("qalign").train(model, tok, _inputs(qa_data), TrainConfig(lr=1e-3, batch_size=8))
    assert result.resolved["stage1_steps"] == 2 and result.resolved["stage2_steps"] == 2 and result.steps == 4
    assert result.resolved["role"] == "paper" and result.trainable_share == 1.0
    assert {"stage1", "stage2", "steps"} <= set(result.timings_s)


def test_methods_that_need_responses_refuse_data_without(tiny_llama, parallel_data):
    model, tok = _load(tiny_llama)
    rows = load_rows(str(parallel_data), ["en", "zh"])
    with pytest.raises(LensError, match="needs a response per prompt"):
        methods.get("xsft").train(model, tok, MethodInputs(rows, ["en", "zh"], "en", None), TrainConfig())
    with pytest.raises(LensError, match="has no responses"):
        load_rows(str(parallel_data), ["en", "zh"], responses=["zh"])


def test_cached_block_loss_equals_full_forward(tiny_llama):
    from lensml.runtime.topblock import TopBlock
    from lensml.methods.sft import Examples, cache_inputs, cached_response_loss

    model, tok = _load(tiny_llama)
    pairs = [encode_pair(tok, "Why do cats purr?", "They purr when content.", 128, 64),
             encode_pair(tok, "什么是质数？", "只有两个因数的数。", 128, 64),
             encode_pair(tok, "Describe a rainy morning.", "Grey sky and soft rain.", 128, 64)]
    ex = Examples([[p[0]] for p in pairs], [[p[1]] for p in pairs])
    block = TopBlock(model, -2)
    hidden = cache_inputs(block, ex, tok.pad_token_id, torch.device("cpu"), batch_size=2)
    ids, labels = [p[0] for p in pairs], [p[1] for p in pairs]
    with torch.no_grad():
        full = response_loss(model, ids, labels, tok.pad_token_id, torch.device("cpu"))
        cached = cached_response_loss(model, block, [h[0] for h in hidden], ids, labels, tok.pad_token_id,
                                      torch.device("cpu"))
    assert torch.allclose(full, cached, atol=1e-5), (float(full), float(cached))
    # And the gradient reaches the top block's weights the same way.
    grads = []
    for fn in (lambda: response_loss(model, ids, labels, tok.pad_token_id, torch.device("cpu")),
               lambda: cached_response_loss(model, block, [h[0] for h in hidden], ids, labels, tok.pad_token_id,
                                            torch.device("cpu"))):
        w = model.model.layers[3].mlp.down_proj.weight
        w.requires_grad_(True)
        fn().backward()
        grads.append(w.grad.clone())
        w.grad = None
        w.requires_grad_(False)
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_xsft_full_streams_all_the_given_data(tiny_llama, qa_data, tmp_path):
    """--sft.full-data: every parameter, on the given sources' target-language pairs (not the run's rows)."""
    import json

    from lensml.methods.finetune import PackedExamples

    alpaca = tmp_path / "bx_zh.jsonl"
    alpaca.write_text("".join(json.dumps({"instruction": f"问题{i}", "input": "", "output": f"回答{i}。"},
                                         ensure_ascii=False) + "\n" for i in range(10)), encoding="utf-8")
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "嗨"},
                                             {"role": "user", "content": "再见"},
                                             {"role": "assistant", "content": "再见！"}]}, ensure_ascii=False) + "\n"
                    + json.dumps({"messages": [{"role": "user", "content": "无"}]}) + "\n", encoding="utf-8")
    model, tok = _load(tiny_llama)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sft = SFTConfig(full_data=f"{alpaca} + {chat}")
    method = methods.get("xsft-full")
    assert method.response_languages(["en", "zh"], "en", sft) == []  # the run's own rows are not trained on
    result = method.train(model, tok, _inputs(qa_data), TrainConfig(lr=1e-2, batch_size=11), options=sft)
    assert result.steps == 1 and result.resolved["instruction_rows"] == 11 and result.resolved["role"] == "paper"
    record = result.resolved["full_data"]
    assert record["sources"] == f"{alpaca} + {chat}" and record["kept"] == {"zh": 11}
    assert record["skipped"] == {"no prompt or response": 1} and record["tokens"] > 11 * 10
    assert _changed(model, before) == set(before)
    # The packed store gives back exactly what encode_pair made; a chat row's loss is on its last turn only.
    packed, conv = PackedExamples(), [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "嗨"},
                                      {"role": "user", "content": "再见"}]
    ids, labels = encode_pair(tok, conv, "再见！", 128, 64)
    packed.add(ids, labels)
    packed.add(*encode_pair(tok, "问题1", "回答1。", 128, 64))
    assert packed.item(0) == ([ids], [labels]) and len(packed) == 2 and packed.tokens == len(ids) + len(packed.item(1)[0][0])
    answer = [t for t in labels if t != IGNORE]
    assert tok.decode(answer) == "再见！<|im_end|>\n"
    assert tok.decode(ids[:len(ids) - len(answer)]).endswith("再见<|im_end|>\n<|im_start|>assistant\n")
    with pytest.raises(LensError, match="gave no \\(prompt, response\\) pair in zh"):
        method.train(model, tok, _inputs(qa_data), TrainConfig(lr=1e-2),
                     options=SFTConfig(full_data=f"{chat}#messages=messages,language=sw"))
