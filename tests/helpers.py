"""Builders for tiny random models and small hand-written data."""

from __future__ import annotations

import json
from pathlib import Path

import torch

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# A few sentences per language, written for these tests.
SENTENCES = {
    "en": ["How do I keep basil fresh?", "Name two planets near the sun.", "Why do cats purr?",
           "Give me a tip for sleeping well.", "What is a prime number?", "Describe a rainy morning.",
           "How long should eggs boil?", "Suggest a name for a small cafe."],
    "zh": ["怎样让罗勒保持新鲜？", "说出两颗靠近太阳的行星。", "猫为什么会发出呼噜声？", "给我一个睡个好觉的建议。",
           "什么是质数？", "描述一个下雨的早晨。", "鸡蛋应该煮多久？", "为一家小咖啡馆起个名字。"],
    "sw": ["Ninawezaje kuweka basil ikiwa mbichi?", "Taja sayari mbili karibu na jua.", "Kwa nini paka hupiga kelele?",
           "Nipe ushauri wa kulala vizuri.", "Namba tasa ni nini?", "Eleza asubuhi ya mvua.",
           "Mayai yachemshwe kwa muda gani?", "Pendekeza jina la mkahawa mdogo."],
}

# Short answers to SENTENCES, same order, for the fine-tuning baselines.
RESPONSES = {
    "en": ["Wrap it in a damp towel.", "Mercury and Venus.", "They purr when content.", "Keep a regular bedtime.",
           "A number with two divisors.", "Grey sky and soft rain.", "About nine minutes.", "Call it Little Bean."],
    "zh": ["用湿毛巾包起来。", "水星和金星。", "满足时会呼噜。", "保持规律的作息。", "只有两个因数的数。", "灰色的天空和细雨。",
           "大约九分钟。", "叫它小豆子。"],
    "sw": ["Ifunge kwa taulo yenye unyevu.", "Zebaki na Zuhura.", "Hupiga kelele wakiridhika.", "Lala saa ileile kila siku.",
           "Namba yenye vigawanyo viwili.", "Anga la kijivu na mvua nyepesi.", "Kama dakika tisa.", "Uite Kahawa Ndogo."],
}


# Chat templates of each family's shape (special tokens, system role or none, default system turn), written for
# these tests after the families' own: (template, special tokens, bos, eos). Families not listed use CHAT_TEMPLATE.
_NO_SYSTEM = "{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
FAMILY_TEMPLATES = {
    "phi3": (("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
              "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"),
             ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"], "<s>", "<|end|>"),
    "llama3.1": (("{{ bos_token }}{% if messages[0]['role'] != 'system' %}"
                  "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>{% endif %}"
                  "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}"
                  "<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>"
                  "\n\n{% endif %}"),
                 ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], "<|begin_of_text|>",
                 "<|eot_id|>"),
    "qwen2": (("{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
               "{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
               "{% endfor %}"
               "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"),
              ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None, "<|im_end|>"),
    "qwen3": (("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
               "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"),
              ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None, "<|im_end|>"),
    "mistral": (("{{ bos_token }}{% for m in messages %}" + _NO_SYSTEM + "{% if m['role'] == 'user' %}[INST] "
                 "{{ m['content'] }} [/INST]{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"),
                ["<s>", "</s>", "[INST]", "[/INST]"], "<s>", "</s>"),
    "gemma": (("{{ bos_token }}{% for m in messages %}" + _NO_SYSTEM + "<start_of_turn>"
               "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
               "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"),
              ["<bos>", "<eos>", "<unk>", "<start_of_turn>", "<end_of_turn>"], "<bos>", "<end_of_turn>"),
    "olmo2": (("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
               "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"),
              ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>"], "<|endoftext|>", "<|endoftext|>"),
    "granite": (("{% if messages[0]['role'] != 'system' %}<|start_of_role|>system<|end_of_role|>"
                 "You are Granite, developed by IBM.<|end_of_text|>\n{% endif %}{% for m in messages %}<|start_of_role|>{{ m['role'] }}"
                 "<|end_of_role|>{{ m['content'] }}<|end_of_text|>\n{% endfor %}{% if add_generation_prompt %}"
                 "<|start_of_role|>assistant<|end_of_role|>{% endif %}"),
                ["<|end_of_text|>", "<|start_of_role|>", "<|end_of_role|>"], None, "<|end_of_text|>"),
}
FAMILY_TEMPLATES["gemma2"] = FAMILY_TEMPLATES["gemma"]
FAMILY_TEMPLATES["qwen3_moe"] = FAMILY_TEMPLATES["qwen3"]


def build_tokenizer(directory: Path, family: str | None = None):
    """A byte-level BPE trained on SENTENCES; with a family, that family's special tokens and template shape."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    template, bos, eos = CHAT_TEMPLATE, "<s>", "<|im_end|>"
    special = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    if family is not None:
        template, extra, bos, eos = FAMILY_TEMPLATES[family]
        special = ["<pad>", *extra] + (["<s>"] if bos == "<s>" and "<s>" not in extra else [])
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [s for texts in SENTENCES.values() for s in texts] + ["user assistant system"]
    tok.train_from_iterator(corpus, trainer)
    unk = {"unk_token": "<unk>"} if "<unk>" in special else {}  # Gemma's tokenizer class needs one
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token="<pad>", **unk)
    fast.chat_template = template
    fast.save_pretrained(directory)
    return fast


def build_tiny_model(directory: Path, arch: str, sliding_window: int = 6) -> Path:
    """A 4-layer random model of the given family, saved with a tokenizer (the family's template shape for the
    families of tests/families; llama and gemma3 keep the ChatML test template)."""
    tok = build_tokenizer(directory, None if arch in ("llama", "gemma3") else arch)
    torch.manual_seed(0)
    common = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if arch == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM
        model = LlamaForCausalLM(LlamaConfig(**common))
    elif arch == "gemma3":
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig
        cfg = Gemma3TextConfig(**common, head_dim=8, sliding_window=sliding_window,
                               layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"])
        model = Gemma3ForCausalLM(cfg)
    elif arch in FAMILY_CONFIGS:
        model = _family_model(arch, common)
    else:
        raise ValueError(arch)
    model.save_pretrained(directory)
    return directory


#: The family matrix (tests/families): each family's tiny shape with its real quirks switched on.
FAMILY_WINDOW = {"mistral": 24, "gemma2": 32}  # sliding windows shorter than the longer test prompts
FAMILY_CONFIGS = {
    # Llama-3.1: the "llama3" rope scaling, here with an original context of 64 so that it moves some frequencies.
    "llama3.1": ("LlamaConfig", "LlamaForCausalLM", dict(rope_parameters={
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64})),
    # Phi-3.5-mini: fused qkv_proj and gate_up_proj, LongRoPE short/long factors (the long ones past 64 positions).
    "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(original_max_position_embeddings=64, rope_parameters={
        "rope_type": "longrope", "rope_theta": 10000.0, "short_factor": [1.0, 1.2, 1.6, 2.5],
        "long_factor": [1.0, 3.0, 6.0, 12.0]})),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),  # q/k/v with biases
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(head_dim=8)),  # per-head q/k RMS norms
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(head_dim=8, sliding_window=FAMILY_WINDOW["mistral"])),
    # Gemma-2: attention and final-logit soft-capping low enough to bite on random weights, alternating windows.
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(
        head_dim=8, query_pre_attn_scalar=8, sliding_window=FAMILY_WINDOW["gemma2"], attn_logit_softcapping=0.5,
        final_logit_softcapping=0.2, layer_types=["sliding_attention", "full_attention"] * 2)),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", {}),  # post-norms, q/k norms over all heads
    "granite": ("GraniteConfig", "GraniteForCausalLM", dict(  # Granite-3's multipliers
        embedding_multiplier=12.0, logits_scaling=8.0, residual_multiplier=0.22, attention_multiplier=0.125)),
    "qwen3_moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM", dict(  # 4 experts, 2 a token, every layer sparse
        head_dim=8, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1,
        norm_topk_prob=True)),
}


def _family_model(arch: str, common: dict):
    import transformers

    config_name, model_name, quirks = FAMILY_CONFIGS[arch]
    config = getattr(transformers, config_name)(**{**common, **quirks})
    return getattr(transformers, model_name)(config)


def write_parallel_data(path: Path, langs=("en", "zh", "sw"), repeat: int = 3, responses: bool = False) -> Path:
    """JSONL rows {lang: text}, the sentences repeated with a counter to get more rows (and responses if asked)."""
    n = len(SENTENCES["en"])
    with open(path, "w", encoding="utf-8") as f:
        for r in range(repeat):
            for i in range(n):
                row = {lang: SENTENCES[lang][i] + ("" if r == 0 else f" ({r})") for lang in langs}
                if responses:
                    row["responses"] = {lang: RESPONSES[lang][i] for lang in langs}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def assert_caches_match(cache, reference, langs, exact: bool = False, label: tuple = ()) -> None:
    """Every stored tensor of a reference cache (start-layer inputs, last and mean final states) equals the
    other cache's: bit for bit when exact, else the same shape and equal within 1e-5."""
    for lang in langs:
        for store in ("hidden", "last", "mean"):
            for a, b in zip(getattr(cache, store)[lang], getattr(reference, store)[lang]):
                if exact:
                    assert torch.equal(a, b), (*label, lang, store)
                else:
                    assert a.shape == b.shape, (*label, lang, store)
                    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
