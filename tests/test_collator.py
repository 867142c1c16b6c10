"""DataCollatorCTCWithPadding: features padded with 0 + attention mask, labels padded with -100."""

import numpy as np
import pytest
import torch

from hf_prunable_ctc.data.collator import DataCollatorCTCWithPadding
from hf_prunable_ctc.data.features import make_feature_extractor
from hf_prunable_ctc.data.vocabulary import make_tokenizer


@pytest.fixture(scope="module")
def collator():
    return DataCollatorCTCWithPadding(feature_extractor=make_feature_extractor(num_mel_bins=8), tokenizer=make_tokenizer())


def _examples():
    rng = np.random.default_rng(0)
    return [
        {"input_features": rng.standard_normal((5, 8)).astype(np.float32), "labels": [4, 5, 6], "input_length": 5},
        {"input_features": rng.standard_normal((9, 8)).tolist(), "labels": [7]},  # lists, as datasets stores them
        {"input_features": rng.standard_normal((2, 8)), "labels": [8, 9, 10, 11, 12]},
    ]


def test_pads_features_mask_and_labels(collator):
    examples = _examples()
    batch = collator(examples)
    assert set(batch) == {"input_features", "attention_mask", "labels"}
    assert batch["input_features"].shape == (3, 9, 8) and batch["input_features"].dtype == torch.float32
    assert batch["attention_mask"].dtype == torch.long and batch["labels"].dtype == torch.long
    assert batch["attention_mask"].sum(dim=1).tolist() == [5, 9, 2]
    for i, example in enumerate(examples):
        n = len(example["input_features"])
        np.testing.assert_allclose(batch["input_features"][i, :n].numpy(), np.asarray(example["input_features"]), rtol=1e-6)
        assert (batch["input_features"][i, n:] == 0).all()
    assert batch["labels"].tolist() == [
        [4, 5, 6, -100, -100],
        [7, -100, -100, -100, -100],
        [8, 9, 10, 11, 12],
    ]


def test_pad_to_multiple_of():
    collator = DataCollatorCTCWithPadding(
        make_feature_extractor(num_mel_bins=8), make_tokenizer(), pad_to_multiple_of=4, pad_to_multiple_of_labels=8
    )
    batch = collator(_examples())
    assert batch["input_features"].shape == (3, 12, 8)
    assert batch["attention_mask"].sum(dim=1).tolist() == [5, 9, 2]
    assert batch["labels"].shape == (3, 8) and (batch["labels"][:, 5:] == -100).all()


def test_inference_examples_without_labels(collator):
    batch = collator([{"input_features": np.ones((3, 8))}, {"input_features": np.ones((6, 8))}])
    assert set(batch) == {"input_features", "attention_mask"}
    assert batch["input_features"].shape == (2, 6, 8)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0], [1] * 6]


def test_rejects_mixed_and_empty_batches(collator):
    with pytest.raises(ValueError):
        collator([{"input_features": np.ones((3, 8)), "labels": [4]}, {"input_features": np.ones((3, 8))}])
    with pytest.raises(ValueError):
        collator([])
