"""SDRRL: its transfer set (exact pairs of every kind, code-switch share, filters), translators, and a training run."""

import json

import pytest
import torch

from lensml import methods
from lensml.data.loaders import load_rows
from lensml.errors import LensError
from lensml.methods.base import MethodInputs
from lensml.methods.sdrrl.config import SDRRLConfig
from lensml.methods.sdrrl.transfer import Answer, Question, build_transfer_set
from lensml.methods.sdrrl.translate import SelfTranslator, check_translator, make_translator
from lensml.runtime.models import ModelConfig, load_model
from lensml.training import TrainConfig
from tests.helpers import build_tokenizer, write_parallel_data

ZH = {"Wrap the stems in a damp paper towel.": "用湿纸巾包住茎。", "Keep it in the fridge.": "放进冰箱。",
      "Use it within a week.": "一周内用完。", "Mercury and Venus.": "水星和金星。"}
ANSWERS = [Answer("Wrap the stems in a damp paper towel. Keep it in the fridge. Use it within a week."),
           Answer("Mercury and Venus.")]


def _questions(tmp_path):
    """The 2-row file: the first row has a Chinese gold answer, the second only an English one."""
    path = tmp_path / "two.jsonl"
    rows = [{"en": "How do I keep basil fresh?", "zh": "怎样让罗勒保持新鲜？",
             "responses": {"en": "Wrap it in a damp towel.", "zh": "用湿毛巾包起来。"}},
            {"en": "Name two planets near the sun.", "zh": "说出两颗靠近太阳的行星。",
             "responses": {"en": "Mercury and Venus."}}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return [Question({k: r[k] for k in ("en", "zh")}, r["responses"]) for r in load_rows(str(path), ["en", "zh"])]


def stub(table):
    calls = []

    def translate(sentences, lang):
        calls.append((list(sentences), lang))
        return [table.get(s) for s in sentences]
    translate.calls = calls
    return translate


def test_transfer_set_has_the_exact_pairs_of_every_kind(tmp_path):
    questions, translate = _questions(tmp_path), stub(ZH)
    cfg = SDRRLConfig(filters=["empty", "echo", "loop", "copy", "length"])
    ts = build_transfer_set(questions, ANSWERS, "en", ["zh"], translate, cfg, seed=0)
    got = [(p.kind, p.lang, p.row, p.prompt, p.response) for p in ts.pairs]
    assert got == [
        ("central", "en", 0, "How do I keep basil fresh?", ANSWERS[0].text),
        ("central", "en", 1, "Name two planets near the sun.", "Mercury and Venus."),
        ("translated", "zh", 0, "怎样让罗勒保持新鲜？", "用湿纸巾包住茎。放进冰箱。一周内用完。"),
        # seed 0 puts sentences 2 and 3 of 3 into Chinese (round(0.5 x 3) = 2; at least one stays English)
        ("code_switched", "zh", 0, "怎样让罗勒保持新鲜？", "Wrap the stems in a damp paper towel. 放进冰箱。一周内用完。"),
        ("gold", "zh", 0, "怎样让罗勒保持新鲜？", "用湿毛巾包起来。"),  # the data's own Chinese answer
        ("translated", "zh", 1, "说出两颗靠近太阳的行星。", "水星和金星。"),
        ("gold", "zh", 1, "说出两颗靠近太阳的行星。", "水星和金星。"),  # no Chinese gold: the English one translated
    ]
    # One sentence cannot be code-switched; every sentence went to the translator once, in one call per language.
    assert ts.dropped == {"code_switched: one sentence": 1}
    assert translate.calls == [(sorted(ZH), "zh")]
    assert ts.summary() == {"pairs": 7, "kept": {"central": 2, "translated": 2, "code_switched": 1, "gold": 2},
                            "dropped": {"code_switched: one sentence": 1}, "trimmed_answers": 0,
                            "code_switch_share": 2 / 3}
    # Another seed, another mix, the same share.
    other = build_transfer_set(questions, ANSWERS, "en", ["zh"], stub(ZH), cfg, seed=7)
    assert [p.response for p in other.pairs if p.kind == "code_switched"] == \
        ["用湿纸巾包住茎。Keep it in the fridge. 一周内用完。"]


def test_filters_drop_what_they_name(tmp_path):
    questions = _questions(tmp_path)
    cfg = SDRRLConfig(filters=["empty", "echo", "loop", "copy", "length"], max_length_ratio=3.0, unfinished="drop")
    # An answer cut at the token budget is not distilled (drop): only row 0 gives self-distilled pairs.
    cut = [ANSWERS[0], Answer("Mercury and Venus.", finished=False)]
    ts = build_transfer_set(questions, cut, "en", ["zh"], stub(ZH), cfg)
    assert ts.kept() == {"central": 1, "translated": 1, "code_switched": 1, "gold": 2}
    assert ts.dropped == {"answer: unfinished": 1}
    # trim (the default): a cut answer keeps its complete sentences, its last (cut) one goes.
    long_cut = [Answer(ANSWERS[0].text + " Also wash", finished=False), Answer("Mercury and Ve", finished=False)]
    ts = build_transfer_set(questions, long_cut, "en", ["zh"], stub(ZH), SDRRLConfig(filters=["empty"]))
    assert [p.response for p in ts.pairs if p.kind in ("central", "translated")] == \
        [ANSWERS[0].text, "用湿纸巾包住茎。放进冰箱。一周内用完。"]
    assert ts.dropped == {"answer: unfinished": 1} and ts.summary()["trimmed_answers"] == 1
    keep = build_transfer_set(questions, long_cut, "en", ["zh"], stub(ZH), SDRRLConfig(filters=["empty"],
                                                                                         unfinished="keep"))
    assert [p.response for p in keep.pairs if p.kind == "central"] == [long_cut[0].text, "Mercury and Ve"]
    # A translation that copies its source, or is far longer than it, drops every pair needing it.
    bad = {**ZH, "Keep it in the fridge.": "Keep it in the fridge.", "Mercury and Venus.": "水" * 40}
    ts = build_transfer_set(questions, ANSWERS, "en", ["zh"], stub(bad), cfg)
    assert ts.kept() == {"central": 2, "gold": 1}
    assert ts.dropped == {"code_switched: a sentence without a kept translation": 2,
                          "gold: a sentence without a kept translation": 1, "sentence: copy": 1,
                          "sentence: length": 1, "translated: a sentence without a kept translation": 2}
    # Without those filters the same translations are kept; a missing one is always dropped.
    loose = SDRRLConfig(filters=["empty"], kinds=["translated"])
    assert build_transfer_set(questions, ANSWERS, "en", ["zh"], stub(bad), loose).kept() == {"translated": 2}
    missing = build_transfer_set(questions, ANSWERS, "en", ["zh"], stub({}), loose)
    assert missing.pairs == [] and missing.dropped == {"sentence: untranslated": 4,
                                                       "translated: a sentence without a kept translation": 2}
    echo = [Answer("How do I keep basil fresh? How do I keep basil fresh?"), Answer("")]
    assert build_transfer_set(questions, echo, "en", ["zh"], stub(ZH), cfg).dropped == {"answer: echo": 1,
                                                                                      "answer: empty": 1}


def test_language_filter_uses_the_identifier(tmp_path):
    questions = _questions(tmp_path)
    cfg = SDRRLConfig(filters=["empty", "language"], kinds=["central", "translated"])
    french = [ANSWERS[0], Answer("Mercure et Vénus.")]
    identify = {ANSWERS[0].text: "en", "Mercure et Vénus.": "fr", "用湿纸巾包住茎。放进冰箱。一周内用完。": "zh"}.get
    ts = build_transfer_set(questions, french, "en", ["zh"], stub(ZH), cfg, identify=identify)
    assert ts.kept() == {"central": 1, "translated": 1} and ts.dropped == {"answer: language": 1}


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory):
    """A random 1-layer T5 translation model with a fast tokenizer, saved as a checkpoint."""
    from transformers import T5Config, T5ForConditionalGeneration

    directory = tmp_path_factory.mktemp("tiny-t5")
    tok = build_tokenizer(directory)
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=len(tok), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1,
                   num_heads=2, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                   decoder_start_token_id=tok.pad_token_id)
    T5ForConditionalGeneration(cfg).save_pretrained(directory)
    return directory


def test_translators_are_checked_before_the_model_loads(tiny_llama, tiny_t5, tmp_path):
    with pytest.raises(LensError, match=r"is not a translation model \(a llama that is not encoder-decoder\)"):
        check_translator(SDRRLConfig(translator=str(tiny_llama)), "en", ["zh"])
    with pytest.raises(LensError, match="is not a translation model \\(no config.json\\)"):
        check_translator(SDRRLConfig(translator=str(tmp_path)), "en", ["zh"])
    check_translator(SDRRLConfig(translator=str(tiny_t5)), "en", ["zh"])  # a seq2seq checkpoint passes
    with pytest.raises(LensError, match="no code for 'zh'"):
        check_translator(SDRRLConfig(translator=str(tiny_t5), translator_codes="en=<s>"), "en", ["zh"])
    with pytest.raises(LensError, match="has no language token 'zho_Hans'"):
        check_translator(SDRRLConfig(translator=str(tiny_t5), translator_codes="en=<s>,zh=zho_Hans"), "en", ["zh"])
    table = tmp_path / "zh.jsonl"
    table.write_text(json.dumps({"en": "Keep it in the fridge.", "zh": "放进冰箱。"}, ensure_ascii=False) + "\n",
                     encoding="utf-8")
    check_translator(SDRRLConfig(translator=str(table)), "en", ["zh"])
    with pytest.raises(LensError, match="has no 'sw' column"):
        check_translator(SDRRLConfig(translator=str(table)), "en", ["zh", "sw"])
    with pytest.raises(LensError, match="no such file of translations"):
        check_translator(SDRRLConfig(translator=str(tmp_path / "none.jsonl")), "en", ["zh"])
    with pytest.raises(LensError, match="sdrrl.kinds: unknown part 'mixed'"):
        SDRRLConfig(kinds=["mixed"])
    with pytest.raises(LensError, match="code_switch_ratio must be between 0 and 1"):
        SDRRLConfig(code_switch_ratio=1.0)
    with pytest.raises(LensError, match="sdrrl.unfinished must be one of trim, drop, keep"):
        SDRRLConfig(unfinished="cut")
    with pytest.raises(LensError, match="unknown filter 'unfinished'"):
        SDRRLConfig(filters=["unfinished"])


def test_seq2seq_file_and_self_translators_translate(tiny_llama, tiny_t5, tmp_path):
    model, tok, _ = load_model(ModelConfig(model=str(tiny_llama)))
    t5 = make_translator(SDRRLConfig(translator=str(tiny_t5), translator_prefix="translate {src} to {tgt}: "),
                         "en", ["zh"], model, tok)
    out = t5(["Keep it in the fridge.", "Use it within a week."], "zh")
    assert len(out) == 2 and all(isinstance(t, str) for t in out)  # random weights: some text, no meaning
    assert t5.describe() == {"translator": str(tiny_t5), "kind": "seq2seq", "sentences": {"zh": 2},
                             "model_type": "t5", "codes": {}, "prefix": "translate {src} to {tgt}: ",
                             "decoding": "greedy"}
    t5.close()
    table = tmp_path / "zh.csv"
    table.write_text("en,zh\nKeep it in the fridge.,放进冰箱。\n", encoding="utf-8")
    assert make_translator(SDRRLConfig(translator=str(table)), "en", ["zh"], model, tok)(
        [" Keep it in the fridge.", "Unknown."], "zh") == ["放进冰箱。", None]
    own = make_translator(SDRRLConfig(), "en", ["zh"], model, tok)
    assert isinstance(own, SelfTranslator)
    got = own(["Keep it in the fridge."], "zh")  # a random model rarely stops: a cut translation is None
    assert len(got) == 1 and own.describe()["prompt"].startswith("Translate the following {src} text into {tgt}.")


def test_sdrrl_trains_every_parameter_and_records_its_transfer_set(tiny_llama, tiny_t5, tmp_path):
    model, tok, _ = load_model(ModelConfig(model=str(tiny_llama)))
    data = write_parallel_data(tmp_path / "qa.jsonl", langs=("en", "zh"), repeat=1, responses=True)
    rows = load_rows(str(data), ["en", "zh"], responses=["en"])
    inputs = MethodInputs(rows, ["en", "zh"], "en", None, None, [r["responses"] for r in rows])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sd = SDRRLConfig(translator=str(tiny_t5), filters=["empty"], max_new_tokens=6, unfinished="keep")
    method = methods.get("sdrrl")
    assert method.response_languages(["en", "zh"], "en", sd) == ["en"]
    result = method.train(model, tok, inputs, TrainConfig(lr=1e-2, batch_size=64), options=sd)
    record = result.resolved
    assert result.steps == 1 and record["role"] == "paper" and result.trainable_share == 1.0
    assert {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])} == set(before)
    kept = record["transfer_set"]["kept"]
    assert kept["gold"] == 8 and kept["central"] + kept.get("translated", 0) + kept.get("code_switched", 0) > 0
    assert record["instruction_rows"] == record["transfer_set"]["pairs"] == sum(kept.values())
    assert record["translator"]["kind"] == "seq2seq" and record["generation"]["max_new_tokens"] == 6
    assert record["generation"]["answers"] == 8 and record["sdrrl"]["filters"] == ["empty"]
    assert {"self_answers", "translate", "tokenize", "steps"} <= set(result.timings_s)
    # Given --train.start-layer, only those layers train, and the run is a control.
    control = method.train(model, tok, inputs, TrainConfig(lr=1e-2, batch_size=64, start_layer=-1), options=sd)
    assert control.resolved["role"] == "control" and 0 < control.trainable_share < 1
