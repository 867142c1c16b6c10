"""hf-prunable-ctc: CTC speech recognition whose depth can be cut at run time, as a Transformers model."""

from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForCTC

from .configuration_prunable_ctc import PrunableCTCConfig
from .feature_extraction_prunable_ctc import PrunableCTCFeatureExtractor
from .modeling_prunable_ctc import (
    PrunableCTCEncoderOutput,
    PrunableCTCForCTC,
    PrunableCTCModel,
    PrunableCTCOutput,
    PrunableCTCPreTrainedModel,
)
from .pruning import PRUNING_STRATEGIES, register_pruning_strategy
from .evaluation import pruning_search  # noqa: F401  (registers the "greedy" and "svcca" strategies)
from .adapters import PrunableStockCTC, make_prunable
from .hub import save_pruned

# In-process registration: with the package imported, no remote code is needed to load a checkpoint.
AutoConfig.register(PrunableCTCConfig.model_type, PrunableCTCConfig, exist_ok=True)
AutoModel.register(PrunableCTCConfig, PrunableCTCModel, exist_ok=True)
AutoModelForCTC.register(PrunableCTCConfig, PrunableCTCForCTC, exist_ok=True)
AutoFeatureExtractor.register(PrunableCTCConfig, PrunableCTCFeatureExtractor, exist_ok=True)

__all__ = [
    "PrunableCTCConfig",
    "PrunableCTCModel",
    "PrunableCTCForCTC",
    "PrunableCTCOutput",
    "PrunableCTCEncoderOutput",
    "PrunableCTCPreTrainedModel",
    "PrunableCTCFeatureExtractor",
    "PRUNING_STRATEGIES",
    "register_pruning_strategy",
    "make_prunable",
    "PrunableStockCTC",
    "save_pruned",
]
