"""Publishing: write the folder a Hub repo holds (weights, config with its pruning schedule, code, tokenizer,
feature extractor, card, plots) and upload it with `huggingface_hub` when a token and the network are there.

Without a token, with `HF_HUB_OFFLINE=1`, with `dry_run=True`, or when the Hub cannot be reached, the folder is
written and the upload is only described. A pruned variant (`depth=k`) is its own, smaller repo with its own card
and schedule, and without the source model's report and plots (they describe the source model).
"""

import json
import os
import shutil
from typing import List, Optional, Sequence

from .output_folder import MARKER, write_output_folder

# The tokenizer and feature extractor: a folder without them cannot be used by the pipeline or `transcribe`.
# vocab.json is a character vocabulary's, tokenizer.json a subword one's.
PROCESSOR_FILES = ("vocab.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "preprocessor_config.json", "processor_config.json")
# Measurements of the model in a folder: they travel with that model, never with a pruned copy of it.
RESULT_FILES = ("depth_report.json", "depth_report.md", "per_depth_metrics.json", "wer_vs_depth.png",
                "rtf_vs_depth.png", "svcca_heatmap.png", "conditions.json", "conditions.md", "whisper_comparison.json")
# Further splits' reports (evaluate_depths.py --extra_splits): depth_report_<split>.json / .md.
EXTRA_SPLIT_PREFIX = "depth_report_"
SCHEDULES_FILE = "pruning_schedules.json"
COMPANION_FILES = PROCESSOR_FILES + RESULT_FILES + (SCHEDULES_FILE,)


def check_model_folder(model_dir: str) -> None:
    """Raise `FileNotFoundError` at once unless `model_dir` is a folder holding a saved model's config.json."""
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"no such model folder: {model_dir!r} (publish and prune read a local folder that "
                                "save_pretrained or training/train.py wrote)")
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise FileNotFoundError(f"{model_dir!r} has no config.json: it is not a saved model folder")


def remap_schedules(schedules: dict, source_layers: Sequence[int], kept_layers: Sequence[int]) -> dict:
    """`pruning_schedules.json` ({strategy: {depth: layers}}) of a source model, in the numbering of a copy of it.

    `source_layers` and `kept_layers` are the `config.kept_layers` of the source and of the pruned copy (original
    layer numbers). Entries that need a layer the copy no longer has are dropped, and so are strategies left empty.
    """
    from ..pruning import remap_schedule

    here = {original: i for i, original in enumerate(source_layers, start=1)}
    keep = [here[original] for original in kept_layers]
    remapped = {strategy: {str(d): layers for d, layers in sorted(remap_schedule(schedule, keep).items())}
                for strategy, schedule in schedules.items()}
    return {strategy: schedule for strategy, schedule in remapped.items() if schedule}


def copy_companion_files(model_dir: str, target_dir: str) -> None:
    """Copy the files that travel with the model saved in `target_dir` from its source folder `model_dir`.

    Always the tokenizer and feature extractor, with any remote code of theirs (`*.py` files that
    `save_pretrained` of the model did not write). For the same model, also its depth report, metrics, plots and
    `pruning_schedules.json`; for a pruned copy (fewer layers in `target_dir`), only the schedules, remapped to
    its layers.
    """
    from ..configuration_prunable_ctc import PrunableCTCConfig

    source = PrunableCTCConfig.from_pretrained(model_dir)
    target = PrunableCTCConfig.from_pretrained(target_dir)
    pruned = target.kept_layers != source.kept_layers
    has_report = os.path.exists(os.path.join(model_dir, "depth_report.json"))
    extra_splits = tuple(sorted(n for n in os.listdir(model_dir) if n.startswith(EXTRA_SPLIT_PREFIX)
                                and n.endswith((".json", ".md"))))
    for name in PROCESSOR_FILES + (() if pruned else RESULT_FILES + extra_splits):
        # The card's numbers come from the depth report when there is one; training's per_depth_metrics.json may
        # have measured a subset, and two tables that disagree would only confuse.
        if name == "per_depth_metrics.json" and has_report:
            continue
        if os.path.exists(os.path.join(model_dir, name)):
            shutil.copy(os.path.join(model_dir, name), target_dir)
    for name in os.listdir(model_dir):
        # e.g. feature_extraction_prunable_ctc.py, named by the feature extractor's auto_map
        if name.endswith(".py") and not os.path.exists(os.path.join(target_dir, name)):
            shutil.copy(os.path.join(model_dir, name), target_dir)
    schedules_path = os.path.join(model_dir, SCHEDULES_FILE)
    if os.path.exists(schedules_path):
        with open(schedules_path) as f:
            schedules = json.load(f)
        if pruned:
            schedules = remap_schedules(schedules, source.kept_layers, target.kept_layers)
        with open(os.path.join(target_dir, SCHEDULES_FILE), "w") as f:
            json.dump(schedules, f, indent=2)


WEIGHTS_DTYPES = ("float32", "float16")


def save_weights(model, folder: str, weights_dtype: str = "float32") -> None:
    """`model.save_pretrained(folder)` with its weights stored as `weights_dtype`.

    float16 halves the download; the saved config still says float32, so `from_pretrained` widens the weights on
    load and the model computes in float32 as it was measured (float16 compute on CPU is slower and untested).
    """
    if weights_dtype not in WEIGHTS_DTYPES:
        raise ValueError(f"weights_dtype must be one of {WEIGHTS_DTYPES}, not {weights_dtype!r}")
    if weights_dtype == "float32":
        model.save_pretrained(folder)
        return
    import torch

    model.to(torch.float16).save_pretrained(folder)
    config_path = os.path.join(folder, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    config["dtype"] = "float32"
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")


def write_repo_folder(model_dir: str, output_dir: str, card_kwargs: dict, depth: Optional[int] = None,
                      strategy: Optional[str] = None, weights_dtype: str = "float32") -> List[str]:
    """Write everything a Hub repo for this model holds into `output_dir`; return the relative file names.

    `weights_dtype="float16"` stores the weights in half precision (see `save_weights`).

    `output_dir` must be new, empty, or a folder this package wrote before (see `hub.output_folder`); anything
    else, or an `output_dir` that is or contains `model_dir`, raises `OutputFolderError` before anything is
    written. The folder is built next to `output_dir` and moved into place, so an interrupted run leaves no half
    folder.
    """
    from ..modeling_prunable_ctc import PrunableCTCForCTC
    from .model_card import build_model_card

    check_model_folder(model_dir)

    def fill(staging: str) -> None:
        model = PrunableCTCForCTC.from_pretrained(model_dir)
        if depth is not None:
            model.prune_to(depth, strategy=strategy)
        save_weights(model, staging, weights_dtype)
        copy_companion_files(model_dir, staging)
        card = build_model_card(staging, results_dir=model_dir, pruning_strategy=strategy, **card_kwargs)
        card.save(os.path.join(staging, "README.md"))

    return write_output_folder(output_dir, fill, sources=[model_dir])


def can_upload(token: Optional[str] = None) -> bool:
    """Whether an upload can be tried: not offline (`HF_HUB_OFFLINE`) and a token given or stored."""
    from huggingface_hub import get_token

    return os.environ.get("HF_HUB_OFFLINE", "0") in ("0", "", "false") and (token or get_token()) is not None


def upload(output_dir: str, repo_id: str, depth: Optional[int], private: bool, token: Optional[str]) -> Optional[str]:
    """Upload `output_dir` to `repo_id`; return None on success, else why it did not happen (one line).

    Connection failures and Hub errors (bad token, no permission) are reported, not raised: the folder is written
    either way, and the caller says what was and was not done.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=output_dir, ignore_patterns=[MARKER],
                          commit_message=f"Upload prunable CTC model{f' pruned to {depth} layers' if depth else ''}")
    except Exception as error:  # noqa: BLE001 (filtered just below)
        # huggingface_hub's HTTP client is httpx (or a fork of it, httpx2) or requests depending on the version:
        # recognise a transport error by the module that defines it rather than by one class.
        client_modules = {cls.__module__.split(".")[0] for cls in type(error).__mro__}
        if not (isinstance(error, (OSError, HfHubHTTPError)) or
                client_modules & {"httpx", "httpx2", "httpcore", "requests", "urllib3"}):
            raise
        first_line = (str(error).strip().splitlines() or [""])[0]
        return f"{type(error).__name__}: {first_line}"
    return None


def publish(model_dir: str, output_dir: str, repo_id: str, card_kwargs: dict, depth: Optional[int] = None,
            strategy: Optional[str] = None, dry_run: bool = False, private: bool = False,
            token: Optional[str] = None, weights_dtype: str = "float32") -> dict:
    """Write the repo folder and upload it to `repo_id`, or describe the upload when dry, offline or unreachable.

    Returns {"repo_id", "folder", "files": {name: bytes}, "uploaded": bool, "upload_error": str | None}.
    """
    files = write_repo_folder(model_dir, output_dir, dict(card_kwargs, repo_id=repo_id), depth, strategy,
                              weights_dtype)
    sizes = {name: os.path.getsize(os.path.join(output_dir, name)) for name in files}
    error = upload(output_dir, repo_id, depth, private, token) if not dry_run and can_upload(token) else None
    uploaded = not dry_run and can_upload(token) and error is None
    return {"repo_id": repo_id, "folder": output_dir, "files": sizes, "uploaded": uploaded, "upload_error": error}


def outcome(result: dict) -> str:
    """One line saying what `publish` did with the folder, for the CLI and the training script alike."""
    if result["uploaded"]:
        return f"uploaded {result['folder']} to https://huggingface.co/{result['repo_id']}"
    if result.get("upload_error"):
        return (f"not uploaded: the upload to {result['repo_id']} failed ({result['upload_error']}); "
                f"{result['folder']} is written: run the same command again to upload it")
    return (f"not uploaded (dry run, offline or no token): {result['folder']} is what would be uploaded to "
            f"{result['repo_id']}")
