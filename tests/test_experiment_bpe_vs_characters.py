"""The BPE-vs-characters experiment (training/experiments/bpe_vs_characters.py) end to end on tiny random models and
a three-utterance corpus: the record's fields, and a page whose numbers all come from the record."""

import csv
import json
import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("pyctcdecode")
pytest.importorskip("kenlm")

from conftest import tiny_model  # noqa: E402
from hf_prunable_ctc.data.features import make_feature_extractor, save_processor  # noqa: E402
from hf_prunable_ctc.data.vocabulary import make_ctc_tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training" / "experiments"))

import bpe_vs_characters  # noqa: E402

ARPA = """\\data\\
ngram 1=4
ngram 2=2

\\1-grams:
-1.0\t<unk>\t0
-99\t<s>\t-0.3
-0.7\t</s>\t0
-0.5\tTHE\t-0.3

\\2-grams:
-0.2\t<s> THE
-0.2\tTHE </s>

\\end\\
"""


def small_corpus(root: Path) -> Path:
    for split in ("validation", "test"):
        rows = list(csv.DictReader(open(ROOT / "data" / "demo" / split / "metadata.csv")))[:3]
        (root / split).mkdir(parents=True)
        with open(root / split / "metadata.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["file_name", "transcription"])
            writer.writeheader()
            for row in rows:
                shutil.copy(ROOT / "data" / "demo" / split / row["file_name"], root / split / row["file_name"])
                writer.writerow({"file_name": row["file_name"], "transcription": row["transcription"]})
    return root


def model_folder(path: Path, vocabulary: str) -> Path:
    texts = [row["transcription"] for row in csv.DictReader(open(ROOT / "data" / "demo" / "train" / "metadata.csv"))]
    tokenizer = make_ctc_tokenizer(texts[:200], vocabulary)
    tiny_model(num_mel_bins=80, vocab_size=len(tokenizer), num_hidden_layers=2).save_pretrained(path)
    save_processor(make_feature_extractor(), tokenizer, path)
    (path / "train_results.json").write_text(json.dumps({"train_runtime": 1.5}))
    (path / "trainer_state.json").write_text(json.dumps({"global_step": 2, "train_batch_size": 8,
                                                         "num_train_epochs": 1}))
    return path


def test_record_and_page(tmp_path):
    corpus = small_corpus(tmp_path / "corpus")
    lm = tmp_path / "lm"
    lm.mkdir()
    (lm / "lm.arpa").write_text(ARPA)
    (lm / "lm.json").write_text(json.dumps({"order": 1, "sentences": 1, "vocabulary": 1, "command": "build it"}))
    models = [str(model_folder(tmp_path / "characters", "characters")), str(model_folder(tmp_path / "bpe64", "bpe:64"))]
    out = tmp_path / "results"
    assert bpe_vs_characters.main(["--models", *models, "--corpus", str(corpus), "--lm", str(lm), "--beam_width", "4",
                                   "--output_dir", str(out), "--training_command", "train characters",
                                   "--training_command", "train bpe"]) == 0
    record = json.loads((out / "bpe_vs_characters.json").read_text())
    assert list(record["models"]) == ["characters", "bpe64"]
    chars, bpe = record["models"]["characters"], record["models"]["bpe64"]
    assert chars["vocabulary"].startswith("characters") and bpe["vocabulary"] == "subwords (64 tokens)"
    assert bpe["vocab_size"] == 64 and bpe["mean_label_length"] < chars["mean_label_length"]
    for model in (chars, bpe):
        assert model["utterances"] == 3 and len(model["alpha_beta_grid_validation_wer"]) == 12
        for decoder in ("greedy", "beam", "beam_lm"):
            assert set(model[decoder]) == {"1", "2"}
            assert all(0 <= r["wer"] and 0 <= r["cer"] for r in model[decoder].values())
    assert record["commands"][:3] == ["train characters", "train bpe", "build it"]
    page = (out / "bpe_vs_characters.md").read_text()
    assert page == bpe_vs_characters.render_markdown(record)
    assert f"| 2 | {chars['greedy']['2']['wer']:.2f} | {bpe['greedy']['2']['wer']:.2f} |" in page
    changed = json.loads(json.dumps(record))
    changed["models"]["bpe64"]["beam_lm"]["1"]["cer"] = 12.34
    assert "12.34" in bpe_vs_characters.render_markdown(changed)
