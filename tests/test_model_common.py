"""Transformers' own common model tests (`ModelTesterMixin`, `ConfigTester`) on both classes and encoder types.

The common tests are Transformers' code, so they are not committed: they
come from the transformers source distribution of the installed version, fetched from PyPI with `pip download` on
first use into a cache folder (`$HF_PRUNABLE_CTC_TEST_CACHE`, default `~/.cache/hf-prunable-ctc`). When that is not
possible (offline, no `parameterized`), the module skips with the reason.

The sdist ships `tests/test_modeling_common.py` and `tests/test_configuration_common.py` but not three modules they
import; these are replaced by stubs: `exporters/test_export.py` (torch.export tests: an empty mixin, so those tests do
not run), `generation/test_utils.py` (generation tests: empty, the model does not generate) and
`utils/test_configuration_utils.py` (`config_common_kwargs`: the common keyword arguments that `ConfigTester` checks
every config keeps, a subset of upstream's).
"""

import os
import subprocess
import sys
import tarfile
import tempfile
import unittest
from pathlib import Path

import pytest
import torch
import transformers

from hf_prunable_ctc import PrunableCTCConfig, PrunableCTCForCTC, PrunableCTCModel

VERSION = transformers.__version__
CACHE = Path(os.environ.get("HF_PRUNABLE_CTC_TEST_CACHE", Path.home() / ".cache" / "hf-prunable-ctc"))
PACKAGE = f"transformers_common_tests_{VERSION.replace('.', '_')}"
STUBS = {
    "exporters/test_export.py": "class ExportTesterMixin:\n    pass\n",
    "generation/test_utils.py": "class GenerationTesterMixin:\n    pass\n",
    "utils/test_configuration_utils.py": (
        "config_common_kwargs = {\n"
        "    'return_dict': False, 'output_hidden_states': True, 'output_attentions': True, 'dtype': 'float16',\n"
        "    'architectures': ['PrunableCTCForCTC'], 'id2label': {0: 'label'}, 'label2id': {'label': '0'},\n"
        "    'problem_type': 'regression',\n"
        "}\n"
    ),
}


def fetch_common_tests() -> Path:
    """The folder holding `PACKAGE` (Transformers' common tests + stubs), downloading the sdist if needed."""
    target = CACHE / PACKAGE
    if (target / "test_modeling_common.py").exists():
        return CACHE
    with tempfile.TemporaryDirectory() as download:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
             f"transformers=={VERSION}", "-d", download],
            capture_output=True, text=True, timeout=600,
        )
        if result.returncode != 0:
            raise RuntimeError(f"pip download transformers=={VERSION} failed: {result.stderr.strip()[-300:]}")
        archive = next(Path(download).glob("transformers-*.tar.gz"))
        wanted = {f"transformers-{VERSION}/tests/{name}" for name in
                  ("test_modeling_common.py", "test_configuration_common.py")}
        partial = CACHE / f"{PACKAGE}.partial"
        partial.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                if member.name in wanted:
                    (partial / Path(member.name).name).write_bytes(tar.extractfile(member).read())
        if len(list(partial.glob("test_*_common.py"))) != 2:
            raise RuntimeError(f"the transformers {VERSION} sdist lacks tests/test_modeling_common.py")
        for name, text in STUBS.items():
            (partial / name).parent.mkdir(parents=True, exist_ok=True)
            (partial / name).write_text(text)
        for folder in [partial] + [(partial / name).parent for name in STUBS]:
            (folder / "__init__.py").touch()
        partial.rename(target)  # complete or absent: an interrupted download is fetched again
    return CACHE


try:
    import parameterized  # noqa: F401  (test_modeling_common needs it)

    sys.path.insert(0, str(fetch_common_tests()))
    common = __import__(f"{PACKAGE}.test_modeling_common", fromlist=["ModelTesterMixin"])
    config_common = __import__(f"{PACKAGE}.test_configuration_common", fromlist=["ConfigTester"])
except Exception as error:  # offline, no parameterized, or a layout this module does not know
    pytest.skip(f"Transformers' common tests for {VERSION} are not available: {error}", allow_module_level=True)

ModelTesterMixin, ConfigTester = common.ModelTesterMixin, config_common.ConfigTester
floats_tensor = common.floats_tensor

pytestmark = pytest.mark.slow


class PrunableCTCModelTester:
    """Builds a small config and inputs, the way Transformers' model testers do (see the Parakeet tester)."""

    def __init__(self, parent, encoder_type, batch_size=3, seq_length=40, num_mel_bins=16, hidden_size=32,
                 num_hidden_layers=2, num_attention_heads=4, vocab_size=12, is_training=True):
        self.parent = parent
        self.encoder_type = encoder_type
        self.batch_size = batch_size
        self.input_frames = seq_length
        self.num_mel_bins = num_mel_bins
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.vocab_size = vocab_size
        self.is_training = is_training
        # Common tests compare hidden states and attentions with `seq_length`: the frames after 4x subsampling.
        self.seq_length = self.encoder_seq_length = self.key_length = -(-(-(-seq_length // 2)) // 2)

    def get_config(self):
        return PrunableCTCConfig(
            vocab_size=self.vocab_size, num_mel_bins=self.num_mel_bins, hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers, num_attention_heads=self.num_attention_heads,
            intermediate_size=64, conv_kernel_size=5, subsampling_conv_channels=16, encoder_type=self.encoder_type,
            interctc_layers=[1], interctc_weight=0.3, hidden_dropout=0.0, attention_dropout=0.0,
            activation_dropout=0.0,
        )

    def prepare_config_and_inputs(self):
        features = floats_tensor([self.batch_size, self.input_frames, self.num_mel_bins])
        attention_mask = torch.ones(self.batch_size, self.input_frames, dtype=torch.long)
        attention_mask[-1, self.input_frames // 2:] = 0  # one padded utterance
        return self.get_config(), features, attention_mask

    def prepare_config_and_inputs_for_common(self):
        config, features, attention_mask = self.prepare_config_and_inputs()
        return config, {"input_features": features, "attention_mask": attention_mask}


class CommonTests(ModelTesterMixin):
    all_model_classes = (PrunableCTCModel, PrunableCTCForCTC)
    pipeline_model_mapping = {}
    test_resize_embeddings = False
    test_torch_exportable = False
    encoder_type = None
    _is_composite = False

    def setUp(self):
        self.model_tester = PrunableCTCModelTester(self, self.encoder_type)
        self.config_tester = ConfigTester(self, config_class=PrunableCTCConfig, has_text_modality=False,
                                          hidden_size=32)

    def test_config(self):
        self.config_tester.run_common_tests()

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = dict(inputs_dict)
        if return_labels and model_class is PrunableCTCForCTC:
            # Deterministic: some tests prepare inputs twice and compare the two outputs.
            batch, vocab = self.model_tester.batch_size, self.model_tester.vocab_size
            inputs_dict["labels"] = torch.arange(batch * 4).view(batch, 4) % (vocab - 1) + 1
        return inputs_dict

    def run_on_the_ctc_model_only(self, test_name):
        """Training tests need a loss: the encoder alone has none (upstream skips base models it knows by name)."""
        self.all_model_classes = (PrunableCTCForCTC,)
        getattr(ModelTesterMixin, test_name)(self)

    def test_training(self):
        self.run_on_the_ctc_model_only("test_training")

    def test_training_gradient_checkpointing(self):
        self.run_on_the_ctc_model_only("test_training_gradient_checkpointing")

    def test_training_gradient_checkpointing_use_reentrant_false(self):
        self.run_on_the_ctc_model_only("test_training_gradient_checkpointing_use_reentrant_false")

    def test_training_gradient_checkpointing_use_reentrant_true(self):
        self.run_on_the_ctc_model_only("test_training_gradient_checkpointing_use_reentrant_true")

    @unittest.skip("speech input: there are no token embeddings to get or set")
    def test_model_get_set_embeddings(self):
        pass


class TransformerEncoderTest(CommonTests, unittest.TestCase):
    encoder_type = "transformer"


class ConformerEncoderTest(CommonTests, unittest.TestCase):
    encoder_type = "conformer"
