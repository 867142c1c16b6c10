"""Make the CTC models users already have prunable: intermediate CTC + stochastic depth + depth on demand for
stock `Wav2Vec2ForCTC`, `HubertForCTC`, `Wav2Vec2ConformerForCTC` and `ParakeetForCTC`, pruned back to the stock
class. See `make_prunable`."""

from .families import SUPPORTED_CLASSES, CTCFamily, family_of
from .prunable_stock import CONFIG_KEY, PrunableStockCTC, make_prunable

__all__ = ["make_prunable", "PrunableStockCTC", "CTCFamily", "family_of", "SUPPORTED_CLASSES", "CONFIG_KEY"]
