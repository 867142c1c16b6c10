"""MkDocs hook: pages link to the repository's own files (results, reports, benchmarks, the model card) with plain
relative links, the way they read on GitHub. Those files lie outside docs/, where MkDocs would call the links
broken; this hook adds every such file that exists to the site under ``repository/`` (markdown rendered as a
page, anything else copied) and rewrites the links to it. A link to a file that does not exist is left as written,
so ``mkdocs build --strict`` still fails on it.
"""

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File

MIRROR = "repository"
# A markdown link or image target: ](target) or ](target "title"), up to an optional #anchor.
LINK = re.compile(r"(\]\()(?P<target>[^)\s#]+)(?P<rest>[^)]*\))")


def _is_relative_file_link(target: str) -> bool:
    return "://" not in target and not target.startswith(("/", "mailto:", "data:"))


def _linked_paths(page: Path, text: str):
    """The existing files that the relative links in ``text`` (the markdown of ``page``) point to."""
    for match in LINK.finditer(text):
        target = match.group("target")
        if _is_relative_file_link(target):
            path = (page.parent / target).resolve()
            if path.is_file():
                yield path


class _Site:
    """Where each source file of the site came from, set up once per build by ``on_files``."""

    root: Path
    docs_dir: Path
    mirrored: dict  # absolute path outside docs/ -> its src_uri under MIRROR/


def on_files(files, config):
    _Site.docs_dir = Path(config["docs_dir"]).resolve()
    _Site.root = Path(config["config_file_path"]).resolve().parent
    _Site.mirrored = {}
    queue = [Path(f.abs_src_path).resolve() for f in files if f.src_uri.endswith(".md") and f.abs_src_path]
    while queue:
        page = queue.pop()
        for path in _linked_paths(page, page.read_text(encoding="utf-8")):
            outside_docs = not path.is_relative_to(_Site.docs_dir)
            if outside_docs and path.is_relative_to(_Site.root) and path not in _Site.mirrored:
                _Site.mirrored[path] = posixpath.join(MIRROR, path.relative_to(_Site.root).as_posix())
                files.append(File.generated(config, _Site.mirrored[path], abs_src_path=str(path)))
                if path.suffix == ".md":
                    queue.append(path)
    return files


def _site_uri(path: Path):
    if path in _Site.mirrored:
        return _Site.mirrored[path]
    if path.is_relative_to(_Site.docs_dir):
        return path.relative_to(_Site.docs_dir).as_posix()
    return None


def on_page_markdown(markdown, page, config, files):
    source = Path(page.file.abs_src_path).resolve()
    here = posixpath.dirname(page.file.src_uri)

    def rewrite(match):
        target = match.group("target")
        if not _is_relative_file_link(target):
            return match.group(0)
        path = (source.parent / target).resolve()
        uri = _site_uri(path) if path.is_file() else None
        if uri is None:
            return match.group(0)
        return match.group(1) + posixpath.relpath(uri, here or ".") + match.group("rest")

    return LINK.sub(rewrite, markdown)

