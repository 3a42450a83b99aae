"""A tokenizer folder for the tiny fixture models (tests/data/hf_fixtures ship none), made with
the `tokenizers` package: shared by the CLI tests here and the package tests."""
import json
from pathlib import Path


def make_tokenizer(folder: Path, vocab_size: int, bos_id: int, eos_id: int) -> None:
    """A byte-level tokenizer whose ids fit the fixture's vocabulary: 256 byte symbols,
    filler tokens, then BOS and EOS as special tokens at the ids config.json names."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: i for i, symbol in enumerate(alphabet)}
    for i in range(len(vocab), min(bos_id, eos_id)):
        vocab[f"<filler_{i}>"] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|bos|>", "<|eos|>"])
    assert tok.token_to_id("<|bos|>") == bos_id and tok.token_to_id("<|eos|>") == eos_id
    tok.post_processor = processors.TemplateProcessing(
        single="<|bos|> $A", special_tokens=[("<|bos|>", bos_id)])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<|bos|>", "eos_token": "<|eos|>"}))
    assert tok.get_vocab_size() <= vocab_size
