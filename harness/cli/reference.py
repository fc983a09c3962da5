"""``python -m harness reference export|import``: the torch reference logits as a file.

The reference logits of a (weights, preprocessed images, normalization) are computed once, in
the cache (harness.run.reference); ``export`` writes cached entries to one file, ``import``
verifies such a file (format, key, SHA-256, shape) and writes its entries into this machine's
cache under the keys they name, so the next accuracy run on the same images finds them instead
of running torch. docs/reference-logits.md says what the key holds and why.

    python -m harness reference export --model efficientnet_lite0 --out ref.zip
    python -m harness reference import ref.zip

Exit status 0; 2 for bad input (a file that is not a reference file, a wrong checksum, no
cached entry of the model asked for), printed as one ``error:`` line.

A reference file comes from another machine (not trusted): every line printed, error lines
included, shows its fields escaped (harness.safe_names.printable), so a model name holding a
terminal escape code or a newline is printed as ``\\x1b[2J``, ``\\n``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness.options import CACHE_DIR
from harness.safe_names import printable, printable_errors

NAME = "reference"


def add_parser(commands: Any) -> None:
    ref = commands.add_parser(
        NAME, help="export the cached torch reference logits to a file, or import such a file into the cache",
        description="Carry the torch reference logits (cached per weights, preprocessed images and normalization) "
        "to another machine: export writes cached entries to one file with their key inputs and SHA-256; import "
        "verifies it and writes the entries into the cache, where the next accuracy run finds them.",
    )
    actions = ref.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = actions.add_parser("export", help="write cached reference logits to a file")
    export.add_argument("--out", type=Path, required=True, metavar="FILE",
                        help="the file to write (replaced atomically)")
    which = export.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", action="append", metavar="NAME",
                       help="the entries of this model (repeatable; the name the run used, e.g. efficientnet_lite0)")
    which.add_argument("--all", action="store_true", help="every entry in the cache")
    imported = actions.add_parser("import", help="verify a reference file and write its entries into the cache")
    imported.add_argument("file", type=Path, metavar="FILE", help="a file written by 'reference export'")
    for sub in (export, imported):
        CACHE_DIR.add_to(sub)
    ref.set_defaults(main=main)


def _describe(inputs: Any) -> str:
    images = inputs.get("images", {})
    return f"{images.get('shape', ['?'])[0]} images, pixels sha256 {str(images.get('sha256', '?'))[:12]}"


def main(args: argparse.Namespace) -> int:
    with printable_errors():
        return _run(args)


def _say(text: str) -> None:
    print(printable(text))


def _run(args: argparse.Namespace) -> int:
    from harness.cache import ArtifactCache, default_cache_root
    from harness.errors import UsageError
    from harness.run.reference import (
        cached_entries,
        export_references,
        import_references,
    )

    cache = ArtifactCache(args.cache_dir.expanduser() if args.cache_dir else default_cache_root())
    if args.action == "export":
        written = export_references(cache, args.out, None if args.all else args.model)
        for entry in written:
            _say(f"exported {entry.manifest.get('model')} ({_describe(entry.manifest['inputs'])}), key {entry.key}")
        _entries, old = cached_entries(cache)
        if old:
            _say(f"note: {len(old)} older entr{'y' if len(old) == 1 else 'ies'} (keyed by torch version and image "
                  "mtimes) not exported: the next run recomputes them under the new key")
        _say(f"wrote {len(written)} entr{'y' if len(written) == 1 else 'ies'} to {args.out}")
        return 0
    if not args.file.is_file():
        raise UsageError(f"{args.file}: no such file; expected a file written by 'python -m harness reference export'")
    for item, built in import_references(cache, args.file):
        state = "imported" if built else "already in the cache, kept"
        _say(f"{state}: {item.model} ({_describe(item.inputs)}, torch {item.origin.get('torch')} on "
              f"{item.origin.get('computed_host')}), key {item.key}")
    _say(f"cache: {cache.root}")
    return 0
