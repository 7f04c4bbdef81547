"""Reading GGUF files through transformers without paying for it several times.

transformers' GGUF loading parses the file with gguf-py's GGUFReader once for the
config, once for the tokenizer and once for the weights (each parse about 7 s on
SmolLM2's 49k-token vocabulary: gguf-py views its memory map element by element),
and rebuilds gguf-py's tensor-name map for each of the model's ~400 submodules
(another 7 s). Inside `reading_once()` a file is parsed once and the name map is
built once per (architecture, layers): both are pure functions of their inputs, so
what transformers gets is the same.
"""

from __future__ import annotations

import functools
import os
from contextlib import contextmanager

import gguf


@contextmanager
def reading_once():
    """While active, gguf.GGUFReader(path) parses each file once and the tensor-name map is cached."""
    original_reader, original_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict = {}

    def reader(path, mode: str = "r"):
        key = (os.path.realpath(path), mode)
        if key not in readers:
            readers[key] = original_reader(path, mode)
        return readers[key]

    gguf.GGUFReader = reader
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(original_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = original_reader, original_map
        readers.clear()
