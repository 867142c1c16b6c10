"""The package's cache folder: files it can always recompute (latency profiles), kept out of model folders.

Resolved the way huggingface_hub resolves ``HF_HOME``: ``$HF_PRUNABLE_CTC_CACHE`` when set, else
``$XDG_CACHE_HOME/hf-prunable-ctc``, else ``~/.cache/hf-prunable-ctc`` (``~`` expanded).
"""

import os
from pathlib import Path

CACHE_ENV = "HF_PRUNABLE_CTC_CACHE"


def user_cache_dir() -> Path:
    """The package's cache folder (see the module docstring). Read from the environment at each call, so a variable
    set after import (a test, a notebook) is honoured; the folder is not created here."""
    default = os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "hf-prunable-ctc")
    return Path(os.path.expanduser(os.getenv(CACHE_ENV, default)))
