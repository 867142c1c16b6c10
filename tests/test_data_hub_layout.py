"""A local dataset in the Hub's layout: parquet shards whose schema carries the `Audio`
feature, read by `datasets.load_dataset(<folder>)` (the code path of a Hub id such as openslr/librispeech_asr), then
2 training steps from it with `train.py --dataset_name <folder>`. No torchcodec: the column is cast to
`Audio(decode=False)` and decoded with soundfile."""

import csv
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
sys.path.insert(0, str(ROOT / "training"))

import train  # noqa: E402  (training/train.py)


def write_hub_layout(folder: Path, shards: dict) -> Path:
    """`folder/data/<split>-0000i-of-0000n.parquet` from demo rows; the audio column holds the encoded file bytes
    under the `Audio` feature (decode on, as on the Hub)."""
    import pyarrow.parquet as pq
    from datasets import Audio, Dataset

    for split, (source_split, count, num_shards) in shards.items():
        with open(DEMO / source_split / "metadata.csv") as f:
            rows = list(csv.DictReader(f))[:count]
        audio = [{"bytes": (DEMO / source_split / r["file_name"]).read_bytes(), "path": r["file_name"]} for r in rows]
        # Built as a plain {bytes, path} struct and cast: encoding through `Audio` itself would need torchcodec.
        table = Dataset.from_dict({"audio": audio, "text": [r["transcription"] for r in rows],
                                   "speaker_id": [r["speaker"] for r in rows]}).cast_column("audio", Audio())
        (folder / "data").mkdir(parents=True, exist_ok=True)
        for index in range(num_shards):
            path = folder / "data" / f"{split}-{index:05d}-of-{num_shards:05d}.parquet"
            table.shard(num_shards, index, contiguous=True).to_parquet(str(path))
            assert b'"_type": "Audio"' in pq.read_schema(path).metadata[b"huggingface"]
    return folder


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory):
    return write_hub_layout(tmp_path_factory.mktemp("hub") / "tiny_librispeech",
                            {"train": ("train", 16, 2), "validation": ("validation", 8, 1)})


def test_hub_layout_loads_through_load_dataset_with_the_audio_feature(hub_folder):
    from datasets import Audio, load_dataset

    from hf_prunable_ctc.data.speech_data import available_splits, load_split

    assert isinstance(load_dataset(str(hub_folder), split="train").features["audio"], Audio)
    assert sorted(available_splits(str(hub_folder))) == ["train", "validation"]
    train_split = load_split(str(hub_folder), "train")
    assert len(train_split) == 16 and set(train_split[0]["audio"]) == {"bytes", "path"}
    with pytest.raises(ValueError, match="split 'test' not in"):
        load_split(str(hub_folder), "test")


@pytest.mark.parametrize("feature_mode", ["on_the_fly", "cached"])
def test_two_training_steps_from_a_hub_layout_folder(hub_folder, tmp_path, feature_mode):
    """`--dataset_name <folder>` trains from parquet shards with an `Audio` column."""
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64, subsampling_conv_channels=32, interctc_layers=[1])))
    out = tmp_path / "run"
    trainer = train.main(["--model_config", str(config), "--dataset_name", str(hub_folder),
                          "--text_column_name", "text", "--output_dir", str(out), "--do_train", "--max_steps", "2",
                          "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8",
                          "--feature_mode", feature_mode, "--report_to", "none", "--use_cpu", "--seed", "1"])
    assert trainer.state.global_step == 2
    record = json.loads((out / "per_depth_metrics.json").read_text())
    assert record["split"] == "validation" and record["utterances_scored"] == 8
    assert set(record["depths"]) == {"1", "2"}
