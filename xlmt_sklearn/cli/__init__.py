"""Command line interface: ``xlmt-sklearn embed``, ``cache``, ``converted`` and ``adapted``.

Examples
--------
Embed one text per line into Parquet, resumably (the cache keeps every
finished batch, so an interrupted run restarts where it stopped)::

    xlmt-sklearn embed tweets.txt -o tweets.parquet --cache-dir .xlmt-cache

Embed a CSV column with a local model, keeping the other columns::

    xlmt-sklearn embed data.csv -o out.parquet --text-column body \\
        --model models/e5-small --prefix "query: " --keep-columns

Inspect or empty a cache::

    xlmt-sklearn cache info .xlmt-cache
    xlmt-sklearn cache clear .xlmt-cache

List the models converted for OpenVINO and ONNX Runtime, and delete the ones whose
source folder is gone (deleted fine-tunes) or that were not used for 30 days::

    xlmt-sklearn converted info
    xlmt-sklearn converted prune --orphaned --unused-days 30

List the fine-tuned encoders of ``XLMTFineTunedVectorizer``, and delete interrupted
fine-tunes and the encoders not used for 30 days::

    xlmt-sklearn adapted info
    xlmt-sklearn adapted prune --interrupted --unused-days 30

Every user error (bad option, unreadable file, missing column, unwritable
output, a model that can't be found) prints one ``xlmt-sklearn: error: ...``
line and exits with status 2; an interrupted run exits with 130 and leaves no
partial output. ``embed`` checks everything it can without the model first
(options, formats, the output location, the input's texts), so a mistake is
reported at once; torch and transformers are imported only after that, when
the model is needed, and ``--help`` never loads them.

This module holds the parser and :func:`main` (the ``xlmt-sklearn`` entry
point); the commands live in :mod:`xlmt_sklearn.cli._commands` and reading and
writing the files in :mod:`xlmt_sklearn.cli._table_io`.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .._options import PREPROCESSORS, add_flags
from ._commands import (
    NO_PREPROCESS,
    PROG,
    CLIError,
    cmd_adapted_info,
    cmd_adapted_prune,
    cmd_cache_clear,
    cmd_cache_info,
    cmd_converted_info,
    cmd_converted_prune,
    cmd_embed,
    say,
)
from ._table_io import EMBEDDING_COLUMN, WIDE_PREFIX, TableIOError

__all__ = ["CLIError", "build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting, so ``main`` returns a code."""

    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise CLIError(message)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``xlmt-sklearn`` (exposed for documentation and tests).

    Returns
    -------
    argparse.ArgumentParser
        With the ``embed``, ``cache``, ``converted`` and ``adapted`` commands; each parsed
        namespace has
        a ``func`` attribute, the command to run.
    """
    from .._version import __version__

    parser = _Parser(
        prog=PROG,
        description="Transformer text embeddings (XLM-T by default) from the command line.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _add_embed_parser(sub)
    _add_cache_parser(sub)
    _add_converted_parser(sub)
    _add_adapted_parser(sub)
    return parser


def _add_embed_parser(sub: Any) -> None:
    embed = sub.add_parser(
        "embed",
        help="embed the texts of a file and write the vectors to a file",
        description=(
            "Embed every text of INPUT (csv, tsv, jsonl, parquet, or txt with one text per "
            "line) and write one vector per row to OUTPUT (.parquet, .npy or .csv, chosen by "
            "extension), in input order. With --cache-dir the run is resumable: finished "
            "batches are cached, so rerunning an interrupted command encodes only the rest. "
            "OUTPUT is written atomically (never half-written)."
        ),
    )
    embed.add_argument("input", metavar="INPUT", help="input file (.csv .tsv .jsonl .parquet .txt)")
    embed.add_argument(
        "-o", "--output", required=True, metavar="OUTPUT",
        help="output file: .parquet (list column 'embedding', or --wide), .npy or .csv",
    )  # fmt: skip
    embed.add_argument(
        "--text-column", default="text", metavar="NAME",
        help="column holding the texts (csv/tsv/jsonl/parquet; default: %(default)s)",
    )  # fmt: skip
    embed.add_argument(
        "--keep-columns", action="store_true",
        help="copy the input columns into the output before the embedding (parquet, csv)",
    )  # fmt: skip
    embed.add_argument(
        "--wide",
        action="store_true",
        help=f"parquet: one float column per dimension ({WIDE_PREFIX}0, {WIDE_PREFIX}1, ...) "
        f"instead of one list column '{EMBEDDING_COLUMN}' (csv output is always wide)",
    )
    tok = embed.add_argument_group("token-level output")
    tok.add_argument(
        "--tokens",
        action="store_true",
        help="one row per subword or word (a long table: row, position, token, begin, end, "
        "embedding; parquet or csv) instead of one vector per text",
    )
    groups = {
        "tokens": tok,
        "model": embed.add_argument_group("model"),
        "vectors": embed.add_argument_group("vectors"),
    }
    add_flags(groups)  # the declared options' flags (xlmt_sklearn._options.OPTIONS)
    _add_own_flags(groups)
    run = embed.add_argument_group("run")
    run.add_argument(
        "--cache-dir", default=None, metavar="DIR",
        help="disk cache directory (created if needed): makes the run resumable and reruns "
        "instant",
    )  # fmt: skip
    run.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None,
        help="progress bar with rate and ETA on stderr (default: a bar in a terminal, "
        "else a line every ~10 s)",
    )  # fmt: skip
    embed.set_defaults(func=cmd_embed)


def _add_own_flags(groups: dict[str, Any]) -> None:
    """The flags whose values the command line turns into estimator parameters itself."""
    groups["model"].add_argument(
        "--calibration-file", default=None, metavar="PATH",
        help="with --quantize int8: a UTF-8 text file, one text per line, from which "
        "OpenVINO's static int8 fixes its activation scales (faster; docs/backends.md)",
    )  # fmt: skip
    groups["vectors"].add_argument(
        "--preprocess", default=PREPROCESSORS[0], choices=(*PREPROCESSORS, NO_PREPROCESS),
        help="xlmt: @handles -> @user, links -> http (XLM-T's rule; default); none: as is",
    )  # fmt: skip


def _add_cache_parser(sub: Any) -> None:
    cache = sub.add_parser("cache", help="inspect or clear an embedding cache")
    csub = cache.add_subparsers(dest="cache_command", metavar="ACTION", parser_class=_Parser)
    csub.required = True
    info = csub.add_parser("info", help="print the entries, size and path of a cache")
    info.add_argument("path", metavar="PATH", help="cache file, or the directory holding it")
    info.set_defaults(func=cmd_cache_info)
    clear = csub.add_parser("clear", help="delete every entry of a cache")
    clear.add_argument("path", metavar="PATH", help="cache file, or the directory holding it")
    clear.set_defaults(func=cmd_cache_clear)


def _add_kept_folders_parser(
    sub: Any, name: str, what: str, about: str, env: str, info_help: str,
    prune_about: str, used: str, rule: tuple[str, str], commands: tuple[Callable, Callable],
) -> None:  # fmt: skip
    """``NAME info`` and ``NAME prune`` of the folders the package keeps under
    ``~/.cache/xlmt_sklearn/NAME`` (converted models, adapted encoders)."""
    default = f"{env}, else ~/.cache/xlmt_sklearn/{name}"
    top = sub.add_parser(name, help=f"list or prune the {what}",
                         description=f"The {what} ({default}): {about}")  # fmt: skip
    actions = top.add_subparsers(dest=f"{name}_command", metavar="ACTION", parser_class=_Parser)
    actions.required = True
    where = {"metavar": "DIR", "default": None, "help": f"the folder (default: {default})"}
    info = actions.add_parser("info", help=info_help)
    info.add_argument("--dir", **where)
    info.set_defaults(func=commands[0])
    prune = actions.add_parser(
        "prune", help=f"delete the {what} any of the given rules selects",
        description=f"Delete {what}: {prune_about} Run it while no job uses them.",
    )  # fmt: skip
    prune.add_argument("--unused-days", type=float, metavar="N",
                       help=f"not used ({used}) for more than N days")  # fmt: skip
    prune.add_argument(rule[0], action="store_true", help=rule[1])
    prune.add_argument("--all", action="store_true", help=f"all the {what}")
    prune.add_argument("--dry-run", action="store_true", help="list them, delete nothing")
    prune.add_argument("--dir", **where)
    prune.set_defaults(func=commands[1])


def _add_converted_parser(sub: Any) -> None:
    _add_kept_folders_parser(
        sub, "converted", "models converted for OpenVINO and ONNX Runtime",
        "one folder per model, runtime, layers and precision, kept until deleted. A pruned "
        "model is converted again on its next use.", "XLMT_SKLEARN_CONVERTED_DIR",
        "list each converted model: size, last use, source",
        "those unused for N days, those converted from a local folder that no longer exists "
        "(deleted fine-tunes: --orphaned), or all.", "converted or loaded",
        ("--orphaned", "converted from a local folder that is gone"),
        (cmd_converted_info, cmd_converted_prune),
    )  # fmt: skip


def _add_adapted_parser(sub: Any) -> None:
    _add_kept_folders_parser(
        sub, "adapted", "fine-tuned encoders of XLMTFineTunedVectorizer",
        "one folder per base model, training set and recipe, kept until deleted, and the "
        "work folders of interrupted fine-tunes. A fitted estimator whose encoder is pruned "
        "must be fitted again.", "XLMT_SKLEARN_ADAPTED_DIR",
        "list each adapted encoder: size, last use, base model",
        "those unused for N days, the work folders of interrupted fine-tunes (--interrupted; "
        "one being trained now is kept), or all.", "fitted, reused or unpickled",
        ("--interrupted", "work folders of fine-tunes that did not finish"),
        (cmd_adapted_info, cmd_adapted_prune),
    )  # fmt: skip


# --------------------------------------------------------------------------- entry
#: Options whose value may start with "-" (negative layer indices, as the docs write them).
_NEGATIVE_VALUED = ("--layers",)
_INT_LIST = re.compile(r"-\d+(,\s*-?\d+)*,?")


def join_negative_values(argv: Sequence[str]) -> list[str]:
    """``["--layers", "-4,-3"]`` -> ``["--layers=-4,-3"]``.

    argparse takes a value that starts with "-" and is not one plain negative
    number for an option, so the documented ``--layers -4,-3,-2,-1`` would be
    refused ("expected one argument"); ``--layers=-4,...`` always worked.

    Examples
    --------
    >>> join_negative_values(["embed", "x.txt", "--layers", "-4,-3,-2,-1", "-o", "y.npy"])
    ['embed', 'x.txt', '--layers=-4,-3,-2,-1', '-o', 'y.npy']
    """
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        if args[i] in _NEGATIVE_VALUED and i + 1 < len(args) and _INT_LIST.fullmatch(args[i + 1]):
            out.append(f"{args[i]}={args[i + 1]}")
            i += 2
            continue
        if args[i] == "--":
            out.extend(args[i:])
            break
        out.append(args[i])
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``xlmt-sklearn`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name; ``sys.argv[1:]`` when None.

    Returns
    -------
    int
        The exit status: 0 on success, 2 for a user error (printed as one
        ``xlmt-sklearn: error: ...`` message, no traceback), 130 when
        interrupted, 1 when ``converted prune`` could not delete a folder.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(join_negative_values(sys.argv[1:] if argv is None else argv))
    except CLIError as exc:
        say(f"{PROG}: error: {exc}")
        return 2
    except SystemExit as exc:  # --help, --version
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (CLIError, TableIOError) as exc:
        say(f"{PROG}: error: {exc}")
        return 2
    except KeyboardInterrupt:
        say(f"{PROG}: interrupted")
        return 130
    except BrokenPipeError:  # e.g. `xlmt-sklearn cache info x | head -1`
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
