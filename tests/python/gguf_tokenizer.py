"""Writes a Hugging Face tokenizer folder (tokenizer.json + tokenizer_config.json) from the
tokenizer a GGUF file carries, so that clients which load the tokenizer by the served model's
name (load generators) can do so offline for a GGUF model. Covers what the default model
needs: the `gpt2` (byte-level BPE) tokenizer model with the `smollm` pre-tokenizer (digits split
one by one) or the plain GPT-2 one."""
import json
import struct
from pathlib import Path

# GGUF metadata value types -> struct codes (8 = string, 9 = array are read apart).
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
            12: "d"}
_CONTROL = 3  # tokenizer.ggml.token_type of special (control) tokens


def read_metadata(path: Path) -> dict:
    """The key/value section of a GGUF file (tensors are not read)."""
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file")
        f.read(4 + 8)  # version, tensor count
        (n_kv,) = struct.unpack("<Q", f.read(8))

        def string():
            (n,) = struct.unpack("<Q", f.read(8))
            return f.read(n).decode("utf-8", "replace")

        def value(kind):
            if kind == 8:
                return string()
            if kind == 9:
                item, n = struct.unpack("<IQ", f.read(12))
                return [value(item) for _ in range(n)]
            code = "<" + _SCALARS[kind]
            return struct.unpack(code, f.read(struct.calcsize(code)))[0]

        meta = {}
        for _ in range(n_kv):
            key = string()
            (kind,) = struct.unpack("<I", f.read(4))
            meta[key] = value(kind)
        return meta


def write_hf_tokenizer(gguf: Path, folder: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    meta = read_metadata(gguf)
    kind, pre = meta.get("tokenizer.ggml.model"), meta.get("tokenizer.ggml.pre", "default")
    if kind != "gpt2" or pre not in ("smollm", "gpt2", "default"):
        raise ValueError(f"{gguf}: tokenizer {kind}/{pre} is not supported here")
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                  byte_level]) if pre == "smollm" else byte_level)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([t for t, ty in zip(tokens, types) if ty == _CONTROL])
    if meta.get("tokenizer.ggml.add_bos_token", False):
        raise ValueError(f"{gguf}: a tokenizer that adds BOS is not supported here")
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": tokens[meta["tokenizer.ggml.bos_token_id"]],
        "eos_token": tokens[meta["tokenizer.ggml.eos_token_id"]],
        "model_max_length": meta.get(f"{meta['general.architecture']}.context_length", 2048)}))
    return folder
