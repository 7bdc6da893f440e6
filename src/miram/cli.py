"""The ``miram`` command: a thin dispatcher over plain typed functions and LightningCLI entry points.

Each command names ``module:function``; modules are imported only when their command runs, so
``miram --help`` stays fast. Plain functions are exposed through jsonargparse (typed signature = schema,
``--help`` with defaults, ``--print_config``, ``--config``, unknown keys are errors); training commands
receive the raw argument list and build their own LightningCLI. Both parsers share one convention:

- ``--run``: the trained run (a run directory, a checkpoint file, or an exported ``.safetensors``) a command
  reads; ``--out``: where it writes;
- booleans are ``--flag true|false``; option names may be written with ``-`` or ``_``.

An error is one line, ``miram: error: ...``; ``--debug`` (anywhere on the line) shows the traceback instead.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jsonargparse

from miram import __version__

# command -> "module:function", or command -> {subcommand -> "module:function"}.
# Entries ending in "!" take the raw argument list (LightningCLI-based commands).
COMMANDS: dict[str, str | dict[str, str]] = {
    "demo": "miram.demo:demo",
    "prepare": {
        "phantoms": "miram.data.phantom:prepare_phantoms",
        "cbis-ddsm": "miram.data.cbis_ddsm.prepare:prepare_cbis_ddsm",
        "folder": "miram.data.folder:prepare_folder",
        "npz": "miram.data.npz:prepare_npz",
        "vindr-mammo": "miram.data.collections.vindr:prepare_vindr",
        "cmmd": "miram.data.collections.cmmd:prepare_cmmd",
        "rsna": "miram.data.collections.rsna:prepare_rsna",
        "inbreast": "miram.data.collections.inbreast:prepare_inbreast",
        "embed": "miram.data.collections.embed:prepare_embed",
        "mini-mias": "miram.data.collections.mias:prepare_mias",
        "cdd-cesm": "miram.data.collections.cdd_cesm:prepare_cdd_cesm",
    },
    "pretrain": "miram.train.cli:pretrain!",
    "probe": "miram.eval.cli:probe!",
    "finetune": "miram.eval.cli:finetune!",
    "compare": "miram.eval.compare:compare",
    "bench": {
        "attention": "miram.bench.attention:bench_attention",
        "loader": "miram.bench.loader:bench_loader",
        "step": "miram.bench.step:bench_step",
    },
    "reconstruct": "miram.train.reconstruct:reconstruct_command",
    "predict": "miram.eval.predict:predict",
    "export": "miram.checkpoints:export",
}

HELP = """usage: miram COMMAND [SUBCOMMAND] [options]

commands:
  demo                                  end-to-end MAE vs MIRAM on built-in phantoms (CPU, minutes)
  prepare phantoms|cbis-ddsm|folder|npz build a training cache (with a report of skipped inputs)
  prepare vindr-mammo|cmmd|rsna|inbreast|embed|mini-mias|cdd-cesm   whole films of a public collection
  pretrain --config FILE [overrides]    pre-train MIRAM, MAE or MoCo-v3 (LightningCLI)
  probe | finetune --config FILE --run RUN   evaluate an encoder (linear probe / fine-tuning)
  compare --run RUN_DIR                 paper-style table and figure from runs' summary.json
  bench attention|step|loader           measured scaling tables
  reconstruct | predict | export --run RUN   use a trained model

--run is the trained run a command reads (run directory, checkpoint or exported .safetensors);
--out is where it writes. Booleans are `--flag true|false`. --debug shows tracebacks.
`miram COMMAND --help` describes each command.
"""


def _resolve(target: str) -> tuple[Callable[..., Any], bool]:
    raw = target.endswith("!")
    module, func = target.rstrip("!").split(":")
    return getattr(importlib.import_module(module), func), raw


def _underscore_options(args: list[str]) -> list[str]:
    """``--csv-dir X`` -> ``--csv_dir X``: option names are Python names, and both spellings are accepted."""
    out = []
    for arg in args:
        if arg.startswith("--") and len(arg) > 2:
            name, sep, value = arg[2:].partition("=")
            arg = "--" + name.replace("-", "_") + sep + value
        out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``miram`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    if not args or args[0] in ("-h", "--help"):
        print(HELP)
        return 0
    if args[0] == "--version":
        print(__version__)
        return 0
    command, rest = args[0], args[1:]
    entry = COMMANDS.get(command)
    if entry is None:
        print(f"miram: unknown command '{command}'\n\n{HELP}", file=sys.stderr)
        return 2
    if isinstance(entry, dict):
        if not rest or rest[0] not in entry:
            print(f"usage: miram {command} {{{'|'.join(entry)}}} [options]", file=sys.stderr)
            return 0 if rest and rest[0] in ("-h", "--help") else 2
        entry, rest = entry[rest[0]], rest[1:]
    prog = "miram " + " ".join(args[: len(args) - len(rest)])
    rest = _underscore_options(rest)
    func, raw = _resolve(entry)
    try:
        if raw:
            # sys.argv stays as typed: Lightning's DDP launcher starts the other ranks by re-running it. The
            # LightningCLI gets its options explicitly, so its warning about args next to sys.argv is moot.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
                func(rest)
        else:
            jsonargparse.CLI(func, args=rest, as_positional=False, prog=prog)  # type: ignore[attr-defined]
    except Exception as err:  # every failure reaches the user as one line unless --debug
        if debug:
            raise
        print(f"miram: error: {err}  (--debug shows the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
