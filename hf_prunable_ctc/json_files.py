"""Writing JSON files that a crash cannot leave half-written (reports, training state, checkpoint indexes)."""

import json
import os


def write_json(path: "str | os.PathLike", data, **dump_options) -> None:
    """Write `data` as JSON (`json.dump` with `dump_options`) to a temporary file beside `path`, then rename it into
    place: a reader, or a run resumed after a kill, sees the old file or the new one, never half of one. The folder
    must exist."""
    path = os.fspath(path)
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, **dump_options)
    os.replace(path + ".tmp", path)
