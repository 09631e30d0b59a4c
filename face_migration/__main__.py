"""`python -m face_migration <command> ...`: the pack's command-line tools.

Each command lives in its own module, imported only when that command runs (so `generate` never loads
torch). A command module exposes `add_arguments(parser)` and `run(args) -> int` (the exit status)."""
from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module relative to this package, one-line help)
COMMANDS = {
    "generate": (".remote.cli", "generate an image with a face through the MoArk / Gitee AI face-migration API"),
    "check-models": (".check_models", "check the model files ComfyUI needs for local PuLID-FLUX"),
    "download": (".download", "download (and verify) the model files that shipped workflows need"),
    "convert-eva": (".face.convert_eva", "convert the EVA02-CLIP checkpoint to safetensors"),
    "identity": (".pulid.identity_file", "show what a saved face identity file holds (identity info FILE)"),
}
EXIT_USAGE = 2
PROG = "python -m face_migration"


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Face Migration (PuLID-FLUX) tools.",
        epilog="Run '%s <command> --help' for a command's options." % PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="<command>")
    for name, (_, summary) in COMMANDS.items():
        commands.add_parser(name, help=summary, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        parser = _top_parser()
        if not argv or argv[0] in ("-h", "--help"):
            parser.print_help(sys.stderr if not argv else sys.stdout)
            return 0 if argv else EXIT_USAGE
        parser.error(f"unknown command '{argv[0]}'; choose one of: {', '.join(COMMANDS)}")  # exits 2
    name = argv[0]
    module_name, summary = COMMANDS[name]
    package = __package__ or "face_migration"
    try:
        module = importlib.import_module(module_name, package)
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith(package + "."):  # our own module, not a dependency
            print(f"{PROG}: the '{name}' command is not part of this version of the pack "
                  f"({package}{module_name} is missing). Update the pack.", file=sys.stderr)
        else:
            print(f"{PROG} {name}: needs the Python package '{exc.name}', which is not installed. Run: "
                  f"pip install -r requirements.txt (in the pack folder, with the Python you use here).",
                  file=sys.stderr)
        return EXIT_USAGE
    parser = argparse.ArgumentParser(prog=f"{PROG} {name}", description=summary)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])  # exits 2 on bad arguments
    return module.run(args)


if __name__ == "__main__":
    sys.exit(main())
