"""Saving a pruned model as a folder that works on its own: weights, code, tokenizer, feature extractor, its own
pruning schedules and a card that says what it is."""

import os
from typing import List, Optional

from .output_folder import write_output_folder


def save_pruned(model, processor, folder: str, source: Optional[str] = None, strategy: Optional[str] = None,
                card_kwargs: Optional[dict] = None) -> List[str]:
    """Save a model pruned with `prune_to`/`prune_layers` into `folder`, usable by `pipeline(model=folder)`.

    `processor` (a `Wav2Vec2Processor` as `AutoProcessor` loads it, or None when `source` is given) provides the
    tokenizer and feature extractor. `source`: the folder the model was loaded from; its tokenizer and feature
    extractor are copied when `processor` is None, its `pruning_schedules.json` is remapped to the kept layers,
    and its per-depth results go into the card. `card_kwargs` (model_name, dataset_name, dataset_type,
    training_command, ...; see `build_model_card`) with a measured `source` give the full card with a
    `model-index`; without them a short card states the layers, parameters and origin.
    `folder` must be new, empty or written by this package before (`OutputFolderError` otherwise).
    Returns the files written, relative to `folder`.
    """
    from .model_card import basic_pruned_card, build_model_card
    from .publish import copy_companion_files

    if processor is None and source is None:
        raise ValueError("save_pruned needs the processor (AutoProcessor.from_pretrained(<source>)) or the source "
                         "folder to copy the tokenizer and feature extractor from")

    def fill(staging: str) -> None:
        model.save_pretrained(staging)
        if source is not None:
            copy_companion_files(source, staging)
        if processor is not None:
            processor.save_pretrained(staging)
            # transformers 5.x keeps the extractor's settings in processor_config.json only; other readers of the
            # folder (4.x, AutoFeatureExtractor in older releases) look for preprocessor_config.json.
            if getattr(processor, "feature_extractor", None) is not None:
                processor.feature_extractor.save_pretrained(staging)
        if source is None:
            return
        if card_kwargs is not None:
            card = build_model_card(staging, results_dir=source, pruning_strategy=strategy, **card_kwargs)
        else:
            card = basic_pruned_card(staging, source, name=os.path.basename(os.path.abspath(folder)),
                                     strategy=strategy)
        card.save(os.path.join(staging, "README.md"))

    return write_output_folder(folder, fill, sources=[source] if source else [])
