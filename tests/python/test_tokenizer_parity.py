"""Token ids of `relayllm tokenize` against the reference `tokenizers` package, on the real
tokenizer files in RELAYLLM_SHARED_DIR/tokenizers and the corpus in tests/data."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

tokenizers = pytest.importorskip("tokenizers")

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "data" / "tokenizer_corpus.jsonl"
SHARED = Path(os.environ.get("RELAYLLM_SHARED_DIR", ROOT.parent / "shared"))
BIN = os.environ.get("RELAYLLM_BIN", "")
NAMES = ["llama2", "llama3", "qwen3"]


def corpus_texts():
    with open(CORPUS, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def test_corpus_is_varied():
    assert len(corpus_texts()) >= 150


@pytest.fixture(scope="module")
def binary():
    if not BIN or not os.access(BIN, os.X_OK):
        pytest.skip("RELAYLLM_BIN is not an executable relayllm binary")
    return BIN


@pytest.mark.parametrize("add_special", [True, False], ids=["special", "no-special"])
@pytest.mark.parametrize("name", NAMES)
def test_ids_match_reference(binary, tmp_path, name, add_special):
    source = SHARED / "tokenizers" / name
    if not (source / "tokenizer.json").exists():
        pytest.skip(f"no tokenizer files at {source}")
    # A folder with only the tokenizer files: the tokenize command needs nothing else.
    model_dir = tmp_path / name
    model_dir.mkdir()
    for file in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(source / file, model_dir / file)

    texts = corpus_texts()
    reference = tokenizers.Tokenizer.from_file(str(source / "tokenizer.json"))
    expected = [reference.encode(t, add_special_tokens=add_special).ids for t in texts]

    cmd = [binary, "tokenize", "--model", str(model_dir)] + ([] if add_special else ["--no-special"])
    # The command skips blank lines, and every corpus line is a JSON object, so output lines pair up.
    stdin = "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)
    proc = subprocess.run(cmd, input=stdin.encode("utf-8"), capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
    got = [json.loads(line)["ids"] for line in proc.stdout.decode("utf-8").splitlines()]
    assert len(got) == len(texts)

    mismatches = [(t, e, g) for t, e, g in zip(texts, expected, got) if e != g]
    report = "\n".join(f"text={t!r}\n  expected={e}\n  got     ={g}" for t, e, g in mismatches[:5])
    print(f"{name} add_special_tokens={add_special}: {len(texts) - len(mismatches)}/{len(texts)} lines match")
    assert not mismatches, f"{len(mismatches)} of {len(texts)} lines differ:\n{report}"


def test_bad_line_stops_with_code_2(binary, tmp_path):
    source = SHARED / "tokenizers" / "qwen3"
    if not (source / "tokenizer.json").exists():
        pytest.skip(f"no tokenizer files at {source}")
    model_dir = tmp_path / "qwen3"
    model_dir.mkdir()
    shutil.copy(source / "tokenizer.json", model_dir / "tokenizer.json")
    stdin = '{"text": "ok"}\n{"txt": "bad"}\n{"text": "never"}\n'
    proc = subprocess.run([binary, "tokenize", "--model", str(model_dir)], input=stdin.encode(),
                          capture_output=True, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stdout.decode().splitlines()) == 1
    assert "line 2" in proc.stderr.decode()
