"""OUT/Modelfile: what `ollama create NAME -f OUT/Modelfile` needs to run OUT/model.gguf.

ollama runs no Jinja: a chat template has to be given in Go's template syntax, or ollama guesses one
from the GGUF's Jinja template by likeness. For ChatML (SmolLM2, the default model; Qwen) the Go
template is known, and it is written only after checking that it renders three conversations exactly
as the GGUF's own template does; that template's built-in system prompt becomes SYSTEM, which ollama
sends as the first message when a chat has none (as the Jinja template inserts it). For any other
template the Modelfile holds FROM and the end-of-turn stop token only, and ollama's guess decides.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from transformers.utils.chat_template_utils import render_jinja_template

from lensml.export.gguf_file import GGUFFile
from lensml.io import write_text_atomic
from lensml.runtime.gguf_config import read_metadata

log = logging.getLogger(__name__)

NAME = "Modelfile"
#: ollama renders .Messages with every message of the chat, system ones included (template.collate keeps them).
CHATML_GO = ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
             "<|im_start|>assistant\n")
_SYSTEM = re.compile(r"<\|im_start\|>system\n(.*?)<\|im_end\|>\n", re.S)
_PROBES = (
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Again, in French"}],
)


def _chatml(messages: list[dict]) -> str:
    """What CHATML_GO renders for these messages."""
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + "<|im_start|>assistant\n"


def chatml_system(template: str | None, special: dict[str, str]) -> tuple[bool, str | None]:
    """(whether the Jinja template is ChatML as CHATML_GO renders it, its built-in system prompt or None)."""
    if not template:
        return False, None
    try:
        rendered = [render_jinja_template([probe], chat_template=template, add_generation_prompt=True, **special)[0][0]
                    for probe in _PROBES]
    except Exception as err:  # jinja2's errors, or the template's own raise_exception: then it is not ChatML
        log.info("the chat template does not render plain conversations (%s): no Go template for ollama", err)
        return False, None
    match = _SYSTEM.match(rendered[0])
    system = match.group(1) if match else None
    first = [{"role": "system", "content": system}, *_PROBES[0]] if system is not None else _PROBES[0]
    ok = rendered[0] == _chatml(first) and all(r == _chatml(p) for r, p in zip(rendered[1:], _PROBES[1:]))
    return ok, system if ok else None


def _quoted(text: str) -> str:
    return '"""' + text + '"""' if '"""' not in text else '"' + text.replace('"', '\\"') + '"'


def modelfile_text(gguf: Path) -> str:
    metadata, _ = read_metadata(gguf)
    source = GGUFFile(gguf)
    try:
        special = {f"{kind}_token": source.array_string("tokenizer.ggml.tokens",
                                                         metadata.get(f"tokenizer.ggml.{kind}_token_id", -1)) or ""
                   for kind in ("bos", "eos")}
    finally:
        source.close()
    is_chatml, system = chatml_system(metadata.get("tokenizer.chat_template"), special)
    lines = [f"# ollama create NAME -f {NAME} && ollama run NAME", f"FROM ./{gguf.name}"]
    if is_chatml:
        lines += ["# The GGUF's own chat template (ChatML), in ollama's Go syntax; checked against it when written.",
                  f"TEMPLATE {_quoted(CHATML_GO)}"]
        if system is not None:
            lines.append(f"SYSTEM {_quoted(system)}")
        lines += ['PARAMETER stop "<|im_end|>"', 'PARAMETER stop "<|im_start|>"']
    else:
        lines.append("# No Go template: ollama takes one from the GGUF's chat template by likeness.")
        if special["eos_token"]:
            lines.append('PARAMETER stop "' + special["eos_token"].replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "\n".join(lines) + "\n"


def write_modelfile(gguf: str | Path) -> Path:
    """Write the Modelfile beside the GGUF file; returns its path."""
    gguf = Path(gguf)
    path = gguf.parent / NAME
    write_text_atomic(path, modelfile_text(gguf))
    return path
