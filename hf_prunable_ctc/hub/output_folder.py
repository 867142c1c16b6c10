"""Output folders that commands (`publish`, `prune`) write without ever deleting what they did not write.

A command builds its folder in a fresh staging folder next to the target and moves it into place, so an interrupted
run leaves no half-written folder. The target must be new, empty, or a folder this package wrote before: such a
folder holds a marker file (`MARKER`) listing the files written, and only those files are replaced. Anything else
in the way is refused with a message naming it.
"""

import json
import os
import shutil
import tempfile
from typing import Callable, Iterable, List

# Hidden so it stays out of listings, and left out of Hub uploads (see publish.upload).
MARKER = ".hf-prunable-ctc-folder.json"


class OutputFolderError(ValueError):
    """The output folder cannot be written without touching files this package did not write."""


def _inside(path: str, folder: str) -> bool:
    """Whether `path` is `folder` or lies somewhere under it (both resolved, symlinks followed)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _relative_files(folder: str, with_folders: bool = False) -> List[str]:
    """Every file under `folder` (and every sub-folder, with a trailing "/", if asked), sorted, relative to it."""
    entries = []
    for root, dirs, names in os.walk(folder):
        entries += [os.path.relpath(os.path.join(root, name), folder) for name in names]
        if with_folders:
            entries += [os.path.relpath(os.path.join(root, name), folder) + "/" for name in dirs]
    return sorted(entries)


def _with_parents(files: List[str]) -> set:
    """The files and each folder ("a/", "a/b/") that holds one of them."""
    entries = set(files)
    for name in files:
        parts = name.split("/")[:-1]
        entries |= {"/".join(parts[:i]) + "/" for i in range(1, len(parts) + 1)}
    return entries


def written_files(folder: str) -> List[str]:
    """The files this package wrote into `folder` (from its marker); `[]` when it has no marker."""
    marker = os.path.join(folder, MARKER)
    if not os.path.isfile(marker):
        return []
    with open(marker) as f:
        return list(json.load(f)["files"])


def check_output_folder(output_dir: str, sources: Iterable[str] = ()) -> None:
    """Raise `OutputFolderError` unless `output_dir` can be (re)written without losing anyone's files.

    Allowed: a path that does not exist, an empty folder, or a folder holding only files this package wrote
    there (listed in its marker). `sources` are folders the command reads: the output may lie inside one of them
    (e.g. `runs/model/hub_repo`) but may not be one of them or contain one.
    """
    for source in sources:
        if os.path.exists(source) and _inside(source, output_dir):
            raise OutputFolderError(
                f"output folder {output_dir!r} {'is' if _inside(output_dir, source) else 'contains'} the source "
                f"model folder {source!r}: choose a new folder for the output, e.g. {output_dir.rstrip('/')}-hub")
    if not os.path.exists(output_dir):
        return
    if not os.path.isdir(output_dir):
        raise OutputFolderError(f"output path {output_dir!r} is a file, not a folder: choose a new folder")
    present = _relative_files(output_dir, with_folders=True)
    if not present:
        return
    ours = _with_parents(written_files(output_dir)) | {MARKER}
    foreign = [name for name in present if name not in ours]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        reason = ("it was not written by hf-prunable-ctc" if MARKER not in present
                  else "it holds files hf-prunable-ctc did not write there")
        raise OutputFolderError(
            f"will not write into {output_dir!r}: {reason} ({shown}). Nothing was changed. Choose a new or empty "
            f"folder, or move those files away.")


def _remove_written(folder: str) -> None:
    """Delete the files the marker of `folder` lists, the marker, and then the folder if that emptied it."""
    written = written_files(folder)
    for name in written + [MARKER]:
        path = os.path.join(folder, name)
        if os.path.isfile(path) or os.path.islink(path):
            os.remove(path)
    # Sub-folders that held listed files, deepest first; rmdir refuses any that is not empty.
    for name in sorted((e for e in _with_parents(written) if e.endswith("/")), key=len, reverse=True):
        if os.path.isdir(os.path.join(folder, name)):
            os.rmdir(os.path.join(folder, name))
    os.rmdir(folder)  # fails, deleting nothing more, if anything unlisted appeared since the check


def _give_normal_permissions(folder: str) -> None:
    """Give `folder`, its sub-folders and files the permissions new ones get here: 0o777 (folders, executables) or
    0o666 (files) less the umask. The staging folder comes from `mkdtemp`, which makes it 0o700, and files written
    through a temporary file (safetensors) can be 0o600: moved into place as they are, the output would be private
    to its owner, unlike anything else the user creates."""
    umask = os.umask(0)
    os.umask(umask)
    for root, _, names in os.walk(folder):
        os.chmod(root, 0o777 & ~umask)
        for name in names:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                executable = os.stat(path).st_mode & 0o111
                os.chmod(path, (0o777 if executable else 0o666) & ~umask)


def write_output_folder(output_dir: str, fill: Callable[[str], None], sources: Iterable[str] = ()) -> List[str]:
    """Call `fill(staging_dir)` to write the folder's contents, then move them to `output_dir`.

    Checks `output_dir` first (`check_output_folder`), writes the marker, and replaces the previous contents only
    if this package wrote them. The folder and its files get the permissions the umask gives new ones. Returns the
    files written, relative to `output_dir`, marker excluded.
    """
    sources = list(sources)
    check_output_folder(output_dir, sources)
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    # A fresh name that cannot collide with a user's folder; removed on failure (it holds only what fill wrote).
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(output_dir))}.", suffix=".partial",
                               dir=parent)
    try:
        fill(staging)
        files = [name for name in _relative_files(staging) if name != MARKER]
        with open(os.path.join(staging, MARKER), "w") as f:
            json.dump({"written_by": "hf-prunable-ctc", "files": files}, f, indent=1)
        _give_normal_permissions(staging)
        check_output_folder(output_dir, sources)  # again: the folder may have changed while fill ran
        if os.path.isdir(output_dir):
            _remove_written(output_dir)
        os.replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return files
