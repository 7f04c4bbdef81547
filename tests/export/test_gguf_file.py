"""A GGUF copy with replaced tensors: key-values and untouched tensors byte for byte, the rest as given."""

import numpy as np
import pytest

from lensml.errors import LensError
from lensml.export.gguf_file import GGUFFile, nbytes, write_copy


def _tiny_gguf(path, alignment=None):
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    if alignment:
        w.data_alignment = alignment
        w.add_uint32("general.alignment", alignment)
    w.add_block_count(2)
    w.add_string("general.name", "tiny ✓")
    w.add_array("tokenizer.ggml.tokens", ["<s>", "a", "ab", "中文"])
    w.add_array("tokenizer.ggml.scores", [0.0, -1.5, -2.5, -3.0])
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_tensor("output_norm.weight", np.arange(5, dtype=np.float32))  # 20 bytes: the next tensor needs padding
    w.add_tensor("blk.0.ffn_up.weight", np.arange(96, dtype=np.float32).reshape(3, 32))
    w.add_tensor("blk.1.ffn_up.weight", np.ones((2, 32), dtype=np.float16))
    q8 = gguf.quants.quantize(np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32), gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("blk.1.ffn_down.weight", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("alignment", [None, 64])
def test_copy_replaces_only_the_named_tensors(tmp_path, alignment):
    from gguf import GGMLQuantizationType as Q, GGUFReader

    src_path = _tiny_gguf(tmp_path / "src.gguf", alignment)
    src = GGUFFile(src_path)
    assert src.architecture == "llama" and src.alignment == (alignment or 32)
    assert [t.name for t in src.tensors] == ["output_norm.weight", "blk.0.ffn_up.weight", "blk.1.ffn_up.weight",
                                             "blk.1.ffn_down.weight"]
    assert src.tensors[1].dims == (32, 3) and src.tensors[3].type == Q.Q8_0
    new = np.full((3, 32), 0.5, dtype=np.float16)  # F32 -> F16: the tensor shrinks, later offsets move
    write_copy(src, tmp_path / "out.gguf", {"blk.0.ffn_up.weight": (new.tobytes(), int(Q.F16))})
    src.close()
    before, after = GGUFReader(str(src_path)), GGUFReader(str(tmp_path / "out.gguf"))
    assert list(before.fields) == list(after.fields)
    for name, field in before.fields.items():
        if not name.startswith("GGUF."):
            assert after.fields[name].contents() == field.contents(), name
    old, out = {t.name: t for t in before.tensors}, {t.name: t for t in after.tensors}
    assert out["blk.0.ffn_up.weight"].tensor_type == Q.F16 and np.all(out["blk.0.ffn_up.weight"].data == 0.5)
    for name in ("output_norm.weight", "blk.1.ffn_up.weight", "blk.1.ffn_down.weight"):
        assert out[name].tensor_type == old[name].tensor_type
        assert bytes(out[name].data.tobytes()) == bytes(old[name].data.tobytes()), name
    for t in after.tensors:
        assert t.data_offset % (alignment or 32) == 0


def test_copy_refuses_bytes_that_do_not_fit_the_shape_and_non_gguf(tmp_path):
    src = GGUFFile(_tiny_gguf(tmp_path / "src.gguf"))
    with pytest.raises(LensError, match="its shape needs 192"):
        write_copy(src, tmp_path / "out.gguf", {"blk.0.ffn_up.weight": (b"\0" * 10, 1)})
    assert nbytes(96, 1) == 192 and nbytes(64, 8) == 68  # F16; Q8_0 blocks of 32 in 34 bytes
    src.close()
    (tmp_path / "bad.gguf").write_bytes(b"NOPE" + b"\0" * 40)
    with pytest.raises(LensError, match="not a little-endian GGUF"):
        GGUFFile(tmp_path / "bad.gguf")
