"""Sharded full-parameter training: `accelerate launch` with the shipped FSDP config, two CPU processes (gloo),
trains the same weights as one process while each process holds half of them."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from lensml import methods
from lensml.cli import main
from lensml.methods.base import MethodInputs
from lensml.methods.finetune import IGNORE, PackedExamples, build_examples, encode_pair, pad_labels
from lensml.runtime.models import ModelConfig, load_model
from lensml.training import TrainConfig
from tests.helpers import write_parallel_data

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "accelerate" / "fsdp.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fsdp_two_processes_match_one(tiny_llama, tmp_path):
    # 13 rows, batch 8: two steps, the second of 5 rows, so the processes hold unequal shares of a step
    # (the lighter one runs zero-weight passes to keep FSDP's collectives paired) and rows differ in length.
    data = write_parallel_data(tmp_path / "qa.jsonl", repeat=2, responses=True)
    rows = data.read_text(encoding="utf-8").splitlines()[:13]
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    # The quick evaluation is off: building its language detector takes a minute; the main process evaluates
    # the model the weights were gathered into, the one saved and compared here.
    args = ["run", "--model", str(tiny_llama), "--train-data", str(data), "--langs", "zh", "--method", "xsft",
            "--lr", "1e-3", "--device", "cpu", "--eval.no-enabled"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    env = {k: v for k, v in os.environ.items() if k not in ("LENSML_FSDP", "ACCELERATE_USE_FSDP")}
    env.update(OMP_NUM_THREADS="1", LENSML_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIG), "--num_processes", "2",
           "--main_process_port", str(_free_port()), "-m", "lensml.cli", *args, "--out", str(tmp_path / "two")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]

    one_manifest = json.loads((tmp_path / "one" / "manifest.json").read_text())
    two_manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert "parallel" not in one_manifest["train_resolved"]
    parallel = two_manifest["train_resolved"]["parallel"]
    assert parallel["engine"] == "fsdp2" and parallel["world_size"] == 2
    # Every weight trains (xsft), and the main process held only its half of them while training.
    assert parallel["parameters"] == two_manifest["total_parameters"] == two_manifest["trainable_parameters"]
    assert abs(parallel["parameters_held"] - parallel["parameters"] / 2) <= 0.01 * parallel["parameters"]
    assert len(one_manifest["losses"]) == len(two_manifest["losses"]) == 2
    for a, b in zip(one_manifest["losses"], two_manifest["losses"]):
        assert abs(a["loss"] - b["loss"]) < 1e-5

    one = load_file(tmp_path / "one" / "model" / "model.safetensors")
    two = load_file(tmp_path / "two" / "model" / "model.safetensors")
    base = load_file(tiny_llama / "model.safetensors")
    assert one.keys() == two.keys() == base.keys()
    for k in one:
        # The same steps, summed in another order: 1e-6 apart or less, while Adam moved every weight tensor
        # by about lr (1e-3) per step.
        assert torch.allclose(one[k], two[k], atol=1e-5, rtol=0), (k, (one[k] - two[k]).abs().max().item())
        assert (one[k] - base[k]).abs().max() > 1e-4, k
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_response_tokens_count_what_the_loss_averages_over(tiny_llama):
    """The weight of an item in its step (lensml.training.optimise's sizes) is its labelled next-token count,
    the same for rows held in memory and for streamed (packed) ones."""
    _, tok, _ = load_model(ModelConfig(model=str(tiny_llama)))
    pairs = [[("Why do cats purr?", "They purr when content.")], [("What is a prime?", "A number.")],
             [("Hi", "Hello there, how are you today?")]]
    cfg = TrainConfig()
    examples = build_examples(tok, pairs, cfg, 64)
    packed = PackedExamples()
    for (prompt, response), in pairs:
        packed.add(*encode_pair(tok, prompt, response, cfg.max_length, 64))
    labels = pad_labels([examples.item(i)[1][0] for i in range(len(examples))], 80)
    counted = (labels[:, 1:] != IGNORE).sum(1).tolist()  # what response_loss's mean runs over
    assert examples.response_tokens() == packed.response_tokens() == counted
    assert len(set(counted)) == 3  # unequal, so weighting by items would be wrong


def test_a_step_split_into_micro_batches_trains_as_one_batch(tiny_llama, tmp_path):
    """grad_accum splits each step as processes do; weighted by response tokens, the weights stay those of one batch."""
    rows = [json.loads(line) for line in write_parallel_data(tmp_path / "qa.jsonl", repeat=2, responses=True)
            .read_text(encoding="utf-8").splitlines()]
    inputs = MethodInputs([{k: v for k, v in r.items() if k != "responses"} for r in rows], ["en", "zh"], "en",
                          None, None, [r["responses"] for r in rows])
    trained = []
    for accum in (1, 4):
        model, tok, _ = load_model(ModelConfig(model=str(tiny_llama)))
        methods.get("xsft").train(model, tok, inputs, TrainConfig(lr=1e-3, grad_accum=accum))
        trained.append(model.state_dict())
    for k, v in trained[0].items():
        assert torch.allclose(v, trained[1][k], atol=1e-6, rtol=0), (k, (v - trained[1][k]).abs().max().item())
