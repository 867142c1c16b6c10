"""Publishing: write the folder a Hub repo holds (weights, config with its pruning schedule, code, tokenizer,
feature extractor, card, plots) and upload it with `huggingface_hub` when a token and the network are there.

Without a token, with `HF_HUB_OFFLINE=1`, or with `dry_run=True`, the folder is written and the upload is only
described. A pruned variant (`depth=k`) is its own, smaller repo with its own card.
"""

import os
import shutil
from typing import List, Optional

# Files of a trained model folder that travel with it, besides what save_pretrained writes.
COMPANION_FILES = ("vocab.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "preprocessor_config.json", "processor_config.json", "depth_report.json", "depth_report.md",
                   "per_depth_metrics.json", "pruning_schedules.json", "wer_vs_depth.png", "rtf_vs_depth.png",
                   "svcca_heatmap.png")


def write_repo_folder(model_dir: str, output_dir: str, card_kwargs: dict, depth: Optional[int] = None,
                      strategy: Optional[str] = None) -> List[str]:
    """Write everything a Hub repo for this model holds into `output_dir`; return the relative file names.

    `output_dir` must be new, empty, or a folder this package wrote before (see `hub.output_folder`); anything
    else, or an `output_dir` that is or contains `model_dir`, raises `OutputFolderError` before anything is
    written. The folder is built next to `output_dir` and moved into place, so an interrupted run leaves no half
    folder.
    """
    from .hub.output_folder import write_output_folder
    from .model_card import build_model_card
    from .modeling_prunable_ctc import PrunableCTCForCTC

    def fill(staging: str) -> None:
        model = PrunableCTCForCTC.from_pretrained(model_dir)
        if depth is not None:
            model.prune_to(depth, strategy=strategy)
        model.save_pretrained(staging)
        has_report = os.path.exists(os.path.join(model_dir, "depth_report.json"))
        for name in COMPANION_FILES:
            # The card's numbers come from the depth report when there is one; training's per_depth_metrics.json
            # may have measured a subset, and two tables that disagree would only confuse.
            if name == "per_depth_metrics.json" and has_report:
                continue
            if os.path.exists(os.path.join(model_dir, name)):
                shutil.copy(os.path.join(model_dir, name), staging)
        card = build_model_card(staging, results_dir=model_dir, **card_kwargs)
        card.save(os.path.join(staging, "README.md"))

    return write_output_folder(output_dir, fill, sources=[model_dir])


def can_upload(token: Optional[str] = None) -> bool:
    from huggingface_hub import get_token

    return os.environ.get("HF_HUB_OFFLINE", "0") in ("0", "", "false") and (token or get_token()) is not None


def publish(model_dir: str, output_dir: str, repo_id: str, card_kwargs: dict, depth: Optional[int] = None,
            strategy: Optional[str] = None, dry_run: bool = False, private: bool = False,
            token: Optional[str] = None) -> dict:
    """Write the repo folder and upload it to `repo_id`, or describe the upload when dry or offline."""
    files = write_repo_folder(model_dir, output_dir, dict(card_kwargs, repo_id=repo_id), depth, strategy)
    sizes = {name: os.path.getsize(os.path.join(output_dir, name)) for name in files}
    upload = not dry_run and can_upload(token)
    if upload:
        from huggingface_hub import HfApi

        from .hub.output_folder import MARKER

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=output_dir, ignore_patterns=[MARKER],
                          commit_message=f"Upload prunable CTC model{f' pruned to {depth} layers' if depth else ''}")
    return {"repo_id": repo_id, "folder": output_dir, "files": sizes, "uploaded": upload}


def outcome(result: dict) -> str:
    """One line saying what `publish` did with the folder, for the CLI and the training script alike."""
    if result["uploaded"]:
        return f"uploaded {result['folder']} to https://huggingface.co/{result['repo_id']}"
    return (f"not uploaded (dry run, offline or no token): {result['folder']} is what would be uploaded to "
            f"{result['repo_id']}")
