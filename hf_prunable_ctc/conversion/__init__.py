"""Converting pretrained speech models from other formats into Transformers models.

- `ct2_model_file`: reading CTranslate2's `model.bin` into numpy arrays (numpy only).
- `ct2_whisper`: a CTranslate2 Whisper model (e.g. faster-whisper's) -> `WhisperForConditionalGeneration` with
  its processor, so Whisper's pretrained encoder is at hand as a Transformers model.
- `whisper_encoder`: Whisper's encoder with a new CTC head as this package's `PrunableCTCForCTC` (intermediate
  CTC, stochastic depth, depth on demand), and its log-mel feature extractor at the audio's own length.
- `whisper_agreement`: greedy transcripts of the converted model and of CTranslate2 on the same features, compared.

torch and transformers are imported inside the functions that need them.
"""

from .ct2_model_file import CT2FormatError, CT2ModelFile, dequantized, read_ct2_model
from .ct2_whisper import ct2_model_folder, convert_ct2_whisper, load_ct2_whisper, whisper_state_dict
from .whisper_encoder import convert_whisper_to_prunable_ctc, prunable_ctc_from_whisper, whisper_feature_extractor

__all__ = ["CT2FormatError", "CT2ModelFile", "dequantized", "read_ct2_model", "ct2_model_folder",
           "convert_ct2_whisper", "load_ct2_whisper", "whisper_state_dict", "convert_whisper_to_prunable_ctc",
           "prunable_ctc_from_whisper", "whisper_feature_extractor"]
