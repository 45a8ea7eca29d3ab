"""MkDocs hooks: pages generated at build time from the sources they document.

* ``index.md`` — the README, its links into ``docs/`` made relative to the site and
  its other relative links pointed at the repository on GitHub;
* ``benchmarks.md`` — ``benchmarks/RESULTS.md``, links rewritten the same way;
* ``cli-reference.md`` — ``unetseg --help`` and ``unetseg COMMAND --help`` for every
  command, rendered from the parser itself;
* ``api-reference.md`` — one mkdocstrings block per public name of ``napari_unetseg``.

Nothing is written into ``docs/``: the pages exist only in the build.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPO = "https://github.com/napari-unetseg/napari-unetseg/blob/main/"
_LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")


def rewrite_links(markdown: str, source_dir: str) -> str:
    """Make the relative links of a Markdown file outside ``docs/`` work in the site.

    ``source_dir`` is the file's folder relative to the repository root ("" for the
    root). Links into ``docs/`` become site-relative; other relative links point at the
    file on GitHub; absolute URLs and anchors are kept.
    """

    def fix(match: re.Match) -> str:
        target = match.group(2)
        if re.match(r"^[a-z]+:", target) or target.startswith(("#", "/")):
            return match.group(0)
        path = os.path.normpath(os.path.join(source_dir, target)).replace(os.sep, "/")
        if path.startswith("docs/"):
            new = path[len("docs/") :]
        else:
            new = REPO + path
        return match.group(1) + new + match.group(3)

    return _LINK.sub(fix, markdown)


def cli_reference() -> str:
    """Markdown with the help text of ``unetseg`` and of each of its commands."""
    import argparse

    sys.path.insert(0, str(ROOT / "src"))
    from napari_unetseg.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "88"  # argparse wraps to the terminal width
    try:
        parser = build_parser()
        parts = [
            "# Command reference",
            "",
            "Generated from the `unetseg` parser when the site is built, so it is always the",
            "help of this version. The walk-through of the commands is [cli.md](cli.md); every",
            "setting is explained in [settings.md](settings.md).",
            "",
            "## unetseg",
            "",
            "```text",
            parser.format_help().rstrip(),
            "```",
        ]
        subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        for name, sub in subs.choices.items():
            parts += ["", f"## unetseg {name}", "", "```text", sub.format_help().rstrip(), "```"]
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    return "\n".join(parts) + "\n"


def public_api() -> dict[str, str]:
    """Public name of ``napari_unetseg`` -> dotted path of the object that defines it."""
    sys.path.insert(0, str(ROOT / "src"))
    import napari_unetseg

    renamed = getattr(napari_unetseg, "_RENAMED", {})
    return {
        name: f"napari_unetseg.{module}.{renamed.get(name, name)}"
        for name, module in napari_unetseg._API.items()
    }


def api_reference() -> str:
    """Markdown with one mkdocstrings block per public name."""
    parts = [
        "# API reference",
        "",
        "Generated from the docstrings of the public names of `napari_unetseg`",
        "(`from napari_unetseg import ...`). A worked example is [api.md](api.md).",
    ]
    for name, path in public_api().items():
        parts += ["", f"## {name}", "", f"::: {path}", "    options:", "      heading_level: 3"]
        parts += ["      show_root_heading: false"]
    return "\n".join(parts) + "\n"


def generated_pages() -> dict[str, str]:
    """Site path -> Markdown of every page the hooks add."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    return {
        "index.md": rewrite_links(readme, ""),
        "benchmarks.md": rewrite_links(results, "benchmarks"),
        "cli-reference.md": cli_reference(),
        "api-reference.md": api_reference(),
    }


def on_files(files, config):
    """Add the generated pages to the build (MkDocs >= 1.6)."""
    from mkdocs.structure.files import File

    for path, text in generated_pages().items():
        old = files.get_file_from_path(path)
        if old is not None:
            files.remove(old)
        files.append(File.generated(config, path, content=text))
    return files
