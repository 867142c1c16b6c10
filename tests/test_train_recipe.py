"""Command lines: `train.py RECIPE.json [--flag value ...]`, and `evaluate_depths.py`
checking its splits before loading anything."""

import csv
import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
sys.path.insert(0, str(ROOT / "training"))

import evaluate_depths  # noqa: E402  (training/evaluate_depths.py)
import train  # noqa: E402  (training/train.py)
from hf_prunable_ctc.training.trainer import recipe_arguments  # noqa: E402


def test_recipe_flags_override_the_file(tmp_path):
    """The recipe's values are defaults that command-line flags override."""
    recipe = ROOT / "training" / "recipes" / "demo.json"
    _, (model_args, data_args, args, _) = train.parse_arguments(
        [str(recipe), "--max_steps", "20", "--output_dir", str(tmp_path / "x"), "--load_best_model_at_end", "false",
         "--eval_depths", "2", "6"])
    assert args.max_steps == 20 and args.output_dir == str(tmp_path / "x") and not args.load_best_model_at_end
    assert data_args.eval_depths == [2, 6]
    file = json.loads(recipe.read_text())
    assert args.num_train_epochs == file["num_train_epochs"] and args.learning_rate == file["learning_rate"]
    assert model_args.model_config == file["model_config"] and data_args.feature_mode == file["feature_mode"]
    assert args.ddp_find_unused_parameters is False


@pytest.mark.parametrize("name", ["demo.json", "reference.json", "reference_continued.json"])
def test_every_recipe_parses_and_states_ddp_find_unused_parameters(name):
    """Recipes say how DDP treats parameters stochastic depth leaves unused."""
    recipe = ROOT / "training" / "recipes" / name
    assert "ddp_find_unused_parameters" in json.loads(recipe.read_text())
    train.parse_arguments([str(recipe)])


def test_recipe_arguments_types_and_errors(tmp_path):
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"a": [1, 2], "b": True, "c": {"k": 1}, "d": None, "e": 0.5}))
    assert recipe_arguments([str(recipe), "--e", "1"]) == ["--a", "1", "2", "--b", "true", "--c", '{"k": 1}',
                                                          "--e", "0.5", "--e", "1"]
    assert recipe_arguments(["--x", "y"]) == ["--x", "y"]
    with pytest.raises(FileNotFoundError, match="no recipe file"):
        recipe_arguments([str(tmp_path / "missing.json")])
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(ValueError, match="JSON object"):
        recipe_arguments([str(tmp_path / "list.json")])
    recipe.write_text(json.dumps({"not_an_argument": 1}))
    with pytest.raises(ValueError, match="not_an_argument"):
        train.parse_arguments([str(recipe), "--dataset_name", "x", "--output_dir", str(tmp_path)])


@pytest.fixture(scope="module")
def model_and_test_only_corpus(tmp_path_factory):
    """A tiny saved model and an audiofolder corpus with a test split only (6 demo utterances)."""
    from conftest import tiny_model
    from hf_prunable_ctc.data.features import make_feature_extractor, save_processor
    from hf_prunable_ctc.data.vocabulary import make_tokenizer

    root = tmp_path_factory.mktemp("evaluate")
    tokenizer = make_tokenizer()
    model_dir = root / "model"
    tiny_model(vocab_size=len(tokenizer), num_hidden_layers=2, interctc_layers=[1]).save_pretrained(model_dir)
    save_processor(make_feature_extractor(num_mel_bins=16), tokenizer, model_dir)
    test = root / "corpus" / "test"
    test.mkdir(parents=True)
    with open(DEMO / "test" / "metadata.csv") as f:
        rows = list(csv.DictReader(f))[:6]
    with open(test / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            shutil.copy(DEMO / "test" / row["file_name"], test / row["file_name"])
            writer.writerow(row)
    return model_dir, root / "corpus"


def evaluate_args(model_dir, corpus, output_dir, *extra):
    return ["--model", str(model_dir), "--data_dir", str(corpus), "--output_dir", str(output_dir), "--device", "cpu",
            "--rtf_utterances", "1", "--repeats", "1", *extra]


def test_evaluate_depths_without_a_search_split_runs_the_data_free_strategies(model_and_test_only_corpus, tmp_path,
                                                                               capsys):
    """No validation split: top and uniform run, greedy and svcca are left out and it says so."""
    model_dir, corpus = model_and_test_only_corpus
    evaluate_depths.main(evaluate_args(model_dir, corpus, tmp_path / "report"))
    out = capsys.readouterr().out
    assert "no 'validation' split to search on" in out and "greedy" in out
    schedules = json.loads((tmp_path / "report" / "pruning_schedules.json").read_text())
    assert set(schedules) == {"top", "uniform"}


def test_evaluate_depths_checks_splits_before_loading_anything(model_and_test_only_corpus, tmp_path):
    """A missing split is reported at once (here the model folder does not even exist)."""
    _, corpus = model_and_test_only_corpus
    with pytest.raises(SystemExit, match="--split 'dev' is not in the dataset \\(splits: test\\)"):
        evaluate_depths.main(evaluate_args(tmp_path / "no_model", corpus, tmp_path / "r", "--split", "dev"))
    with pytest.raises(SystemExit, match="--allow_search_on_test"):
        evaluate_depths.main(evaluate_args(tmp_path / "no_model", corpus, tmp_path / "r", "--search_split", "test"))
    with pytest.raises(SystemExit, match="--store_schedule greedy: that strategy does not run"):
        evaluate_depths.main(evaluate_args(tmp_path / "no_model", corpus, tmp_path / "r", "--store_schedule",
                                           "greedy"))
    assert not (tmp_path / "r").exists()


def test_evaluate_depths_searches_on_the_test_split_only_when_allowed(model_and_test_only_corpus, tmp_path):
    """--allow_search_on_test lets --search_split equal --split."""
    model_dir, corpus = model_and_test_only_corpus
    evaluate_depths.main(evaluate_args(model_dir, corpus, tmp_path / "report", "--search_split", "test",
                                       "--allow_search_on_test", "--strategies", "top,greedy"))
    schedules = json.loads((tmp_path / "report" / "pruning_schedules.json").read_text())
    assert set(schedules) == {"top", "greedy"} and len(schedules["greedy"]["1"]) == 1
