"""hf-prunable-ctc: CTC speech recognition whose depth can be cut at run time, as a Transformers model.

``import hf_prunable_ctc`` registers the model, its configuration, its feature extractor and its subword CTC
tokenizer with the Auto classes (no remote code needed to load a checkpoint) and the data-driven pruning strategies ("greedy", "svcca"). Importing
the package itself imports neither torch nor transformers: the public names below are loaded on first use
(PEP 562), and the registration happens as soon as transformers is imported (at once if it already is). So
``hf-prunable-ctc --help`` answers in a fraction of a second, and a torch-free runtime can live in the package.
"""

import importlib
import importlib.abc
import sys

# Public name -> the submodule that defines it.
_PUBLIC = {
    "PrunableCTCConfig": "configuration_prunable_ctc",
    "PrunableCTCModel": "modeling_prunable_ctc",
    "PrunableCTCForCTC": "modeling_prunable_ctc",
    "PrunableCTCOutput": "modeling_prunable_ctc",
    "PrunableCTCEncoderOutput": "modeling_prunable_ctc",
    "PrunableCTCPreTrainedModel": "modeling_prunable_ctc",
    "PrunableCTCFeatureExtractor": "feature_extraction_prunable_ctc",
    "SubwordCTCTokenizer": "tokenization_subword_ctc",
    "PRUNING_STRATEGIES": "pruning",
    "register_pruning_strategy": "pruning",
    "make_prunable": "adapters",
    "PrunableStockCTC": "adapters",
    "save_pruned": "hub",
    "PrunableCTCProcessorWithLM": "decoding.processor_with_lm",
}

__all__ = list(_PUBLIC)

_registered = False


def register_auto_classes() -> None:
    """Register the configuration, model, feature extractor and subword tokenizer with the Auto classes, and the
    "greedy" and "svcca" pruning strategies. Idempotent; runs by itself once transformers is imported after this
    package."""
    global _registered
    if _registered:  # also when called again from within (importing transformers below runs the hook)
        return
    _registered = True
    try:
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForCTC, AutoTokenizer

        from .configuration_prunable_ctc import PrunableCTCConfig
        from .evaluation import pruning_search  # noqa: F401  (registers the "greedy" and "svcca" strategies)
        from .feature_extraction_prunable_ctc import PrunableCTCFeatureExtractor
        from .modeling_prunable_ctc import PrunableCTCForCTC, PrunableCTCModel
        from .tokenization_subword_ctc import SubwordCTCTokenizer
    except BaseException:
        _registered = False
        raise
    AutoConfig.register(PrunableCTCConfig.model_type, PrunableCTCConfig, exist_ok=True)
    AutoModel.register(PrunableCTCConfig, PrunableCTCModel, exist_ok=True)
    AutoModelForCTC.register(PrunableCTCConfig, PrunableCTCForCTC, exist_ok=True)
    AutoFeatureExtractor.register(PrunableCTCConfig, PrunableCTCFeatureExtractor, exist_ok=True)
    # Lets a folder whose tokenizer_config.json names SubwordCTCTokenizer load without remote code; a folder that
    # names another class (the character vocabulary's Wav2Vec2CTCTokenizer) still gets that class.
    AutoTokenizer.register(PrunableCTCConfig, SubwordCTCTokenizer, exist_ok=True)
    _register_processor_with_lm(PrunableCTCConfig)


def _register_processor_with_lm(config_class) -> None:
    """Let `AutoProcessor` find `PrunableCTCProcessorWithLM` by the name a folder with an LM stores, without remote
    code. Only where pyctcdecode is installed: the processor needs it, and nothing else in the package does."""
    import importlib.util

    if importlib.util.find_spec("pyctcdecode") is None:
        return
    from transformers import AutoProcessor

    from .decoding.processor_with_lm import PrunableCTCProcessorWithLM

    AutoProcessor.register(config_class, PrunableCTCProcessorWithLM, exist_ok=True)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    register_auto_classes()
    value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))


class _RegisterOnceImported(importlib.abc.MetaPathFinder):
    """Runs `register_auto_classes` once transformers has been imported and no module of this package is halfway
    through its own import.

    The second condition matters when one of this package's modules is what imports transformers (e.g.
    ``from hf_prunable_ctc.modeling_prunable_ctc import ...`` first): registering at that moment would import that
    module again while it is only half defined. This finder only wraps the loaders of transformers and of this
    package's modules, to be told when each has finished executing, and leaves `sys.meta_path` after registering.
    """

    def __init__(self):
        self.executing = set()
        self.transformers_imported = False

    def find_spec(self, name, path, target=None):
        if name != "transformers" and not name.startswith(__name__ + "."):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _NotifyingLoader(spec.loader, self)
                return spec
        return None

    def started(self, name: str) -> None:
        self.executing.add(name)

    def finished(self, name: str, succeeded: bool) -> None:
        self.executing.discard(name)
        self.transformers_imported |= succeeded and name == "transformers"
        if self.transformers_imported and not self.executing and self in sys.meta_path:
            sys.meta_path.remove(self)
            register_auto_classes()


class _NotifyingLoader(importlib.abc.Loader):
    """A module's own loader, telling `_RegisterOnceImported` when the module starts and finishes executing."""

    def __init__(self, loader, hook: _RegisterOnceImported):
        self._loader, self._hook = loader, hook

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        name, succeeded = module.__spec__.name, False
        self._hook.started(name)
        try:
            self._loader.exec_module(module)
            succeeded = True
        finally:
            self._hook.finished(name, succeeded)

    def __getattr__(self, name):  # get_source, get_filename, get_resource_reader, ...: the wrapped loader's
        return getattr(self._loader, name)


if sys.modules.get("transformers") is not None:
    register_auto_classes()
elif not any(isinstance(finder, _RegisterOnceImported) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterOnceImported())
