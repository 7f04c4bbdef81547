"""Reading GGUF files through transformers without paying for it several times.

transformers' GGUF loading parses the file with gguf-py's GGUFReader once for the
config, once for the tokenizer and once for the weights (each parse about 7 s on
SmolLM2's 49k-token vocabulary: gguf-py views its memory map element by element),
and rebuilds gguf-py's tensor-name map for each of the model's ~400 submodules
(another 7 s). Inside `reading_once()` a file is parsed once and the name map is
built once per (architecture, layers): both are pure functions of their inputs, so
what transformers gets is the same.

The one parse left is also cheaper: gguf-py slices its np.memmap some 250,000 times,
and every slice of a memmap runs numpy's Python-level memmap hooks; ArrayReader reads
the same mapped bytes through a plain ndarray view of the map (2.5-2.8 s -> 0.7-1.0 s
on SmolLM2's file, same fields and tensors).
"""

from __future__ import annotations

import functools
import os
from contextlib import contextmanager

import gguf
import numpy as np


class ArrayReader(gguf.GGUFReader):
    """gguf-py's reader over a plain ndarray view of its memory map: same bytes, no per-slice memmap hooks."""

    @property
    def data(self) -> np.ndarray:
        return self._data

    @data.setter
    def data(self, value: np.ndarray) -> None:
        # The view keeps the map alive (its .base) and is read-only when the map is.
        self._data = value.view(np.ndarray) if isinstance(value, np.memmap) else value


@contextmanager
def reading_once():
    """While active, gguf.GGUFReader(path) parses each file once (ArrayReader) and the tensor-name map is cached."""
    original_reader, original_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict = {}

    def reader(path, mode: str = "r"):
        key = (os.path.realpath(path), mode)
        if key not in readers:
            readers[key] = ArrayReader(path, mode)
        return readers[key]

    gguf.GGUFReader = reader
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(original_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = original_reader, original_map
        readers.clear()
