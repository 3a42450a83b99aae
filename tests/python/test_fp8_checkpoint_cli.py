"""FP8 compressed-tensors checkpoints through `relayllm generate`, written here by an
independent writer (raw safetensors bytes; e4m3 values decoded from the format's definition,
not by relayllm's code). The checkpoint is built from codes, with one code per row at 448 and
power-of-two per-channel scales, so its dequantized weights (scale * value, written as F32) are
exact and `--quantization fp8` on them finds the same scales and codes again: the two runs must
agree bit for bit. A refused variant ends the command with one line naming the field."""
import json
import random
import struct
from pathlib import Path

import pytest

from byte_tokenizer import make_tokenizer
from test_generate_cli import FIXTURES, binary, generate  # noqa: F401

safetensors_numpy = pytest.importorskip("safetensors.numpy")
np = pytest.importorskip("numpy")

LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def e4m3_value(code: int) -> float:
    sign = -1.0 if code & 0x80 else 1.0
    e, m = (code >> 3) & 15, code & 7
    assert not (e == 15 and m == 7), "NaN"
    return sign * (m / 512.0 if e == 0 else (1 + m / 8.0) * 2.0 ** (e - 7))


def write_safetensors(path: Path, tensors: dict):
    """tensors: name -> (dtype string, shape, bytes)."""
    header, offset, blobs = {}, 0, []
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def quant_config():
    return {"quant_method": "compressed-tensors", "format": "float-quantized",
            "ignore": ["lm_head"], "kv_cache_scheme": None,
            "config_groups": {"group_0": {
                "targets": ["Linear"],
                "weights": {"num_bits": 8, "type": "float", "strategy": "channel",
                            "symmetric": True, "dynamic": False},
                "input_activations": {"num_bits": 8, "type": "float", "strategy": "token",
                                      "symmetric": True, "dynamic": True}}}}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(fp8 checkpoint folder, the same weights dequantized as F32)."""
    src = FIXTURES / "llama3"
    config = json.loads((src / "config.json").read_text())
    weights = safetensors_numpy.load_file(str(src / "model.safetensors"))
    rng = random.Random(5)
    fp8, f32 = {}, {}
    for name, array in weights.items():
        array = np.ascontiguousarray(array, dtype=np.float32)
        fp8[name] = ("F32", array.shape, array.tobytes())
        f32[name] = ("F32", array.shape, array.tobytes())
    for layer in range(config["num_hidden_layers"]):
        for linear in LINEARS:
            base = f"model.layers.{layer}.{linear}"
            rows, cols = weights[base + ".weight"].shape
            codes = [[rng.choice([c for c in range(256) if c & 0x7f != 0x7f]) for _ in range(cols)]
                     for _ in range(rows)]
            scales = []
            for r in range(rows):
                codes[r][rng.randrange(cols)] = 0x7e | (0x80 if rng.random() < 0.5 else 0)
                scales.append(2.0 ** -rng.randint(9, 13))
            code_bytes = bytes(c for row in codes for c in row)
            deq = np.array([[scales[r] * e4m3_value(c) for c in codes[r]] for r in range(rows)],
                           dtype=np.float32)
            # BF16 scales: a power of two is exact in BF16 (the top 16 bits of its F32).
            scale_bf16 = b"".join(struct.pack("<f", s)[2:] for s in scales)
            fp8[base + ".weight"] = ("F8_E4M3", (rows, cols), code_bytes)
            fp8[base + ".weight_scale"] = ("BF16", (rows, 1), scale_bf16)
            f32[base + ".weight"] = ("F32", (rows, cols), deq.tobytes())
    out = []
    for kind, tensors in (("fp8", fp8), ("f32", f32)):
        folder = tmp_path_factory.mktemp(f"llama3_{kind}")
        cfg = dict(config)
        if kind == "fp8":
            cfg["quantization_config"] = quant_config()
        (folder / "config.json").write_text(json.dumps(cfg))
        write_safetensors(folder / "model.safetensors", tensors)
        make_tokenizer(folder, config["vocab_size"], config["bos_token_id"], config["eos_token_id"][0])
        out.append(folder)
    return out


def test_fp8_checkpoint_equals_quantizing_its_dequantized_weights(binary, folders):
    fp8_dir, f32_dir = folders
    lines = [{"prompt": "Hello, my name is", "prompt_logprobs": 3, "logprobs": 2},
             {"prompt": "1 2 3 4 5 6 7 8"}]
    args = ["--temperature", "0", "--max-tokens", "6", "--ignore-eos", "--dtype", "float32"]
    proc, from_checkpoint = generate(binary, fp8_dir, args, lines)
    assert "quantized to" not in proc.stderr.decode()  # read as FP8, nothing quantized at load
    proc, at_load = generate(binary, f32_dir, args + ["--quantization", "fp8"], lines)
    assert "--quantization fp8: 14 weight tensors quantized to FP8 at load" in proc.stderr.decode()
    assert from_checkpoint[0]["prompt_logprobs"] and len(from_checkpoint) == 2
    for a, b in zip(from_checkpoint, at_load):
        assert a["token_ids"] == b["token_ids"]
        assert a.get("prompt_logprobs") == b.get("prompt_logprobs")
        assert a.get("logprobs") == b.get("logprobs")
    # The value of the flag that names the format is accepted, and changes nothing.
    _, named = generate(binary, fp8_dir, args + ["--quantization", "compressed-tensors"], lines)
    assert [r["token_ids"] for r in named] == [r["token_ids"] for r in from_checkpoint]


def test_unsupported_fp8_variant_is_refused_with_one_line(binary, folders, tmp_path):
    fp8_dir, _ = folders
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in fp8_dir.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((bad / "config.json").read_text())
    cfg["quantization_config"]["config_groups"]["group_0"]["weights"]["strategy"] = "block"
    (bad / "config.json").write_text(json.dumps(cfg))
    proc, _ = generate(binary, bad, ["--max-tokens", "1", "--prompt", "x"], check=False)
    assert proc.returncode != 0
    last = proc.stderr.decode().strip().splitlines()[-1]
    assert 'quantization_config.config_groups.group_0.weights.strategy is string "block"' in last
