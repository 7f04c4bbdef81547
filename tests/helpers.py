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


def build_tokenizer(directory: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [s for texts in SENTENCES.values() for s in texts] + ["user assistant system"]
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="<|im_end|>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(directory)
    return fast


def build_tiny_model(directory: Path, arch: str, sliding_window: int = 6) -> Path:
    """A 4-layer random model of the given family, saved with a tokenizer."""
    tok = build_tokenizer(directory)
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
    else:
        raise ValueError(arch)
    model.save_pretrained(directory)
    return directory


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
