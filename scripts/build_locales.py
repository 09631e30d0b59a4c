"""Write locales/en/nodeDefs.json from the pack's node schemas (the newest /object_info snapshot).

    python scripts/build_locales.py
    python scripts/build_locales.py --translated zh

Run it after scripts/dump_pack_object_info.py whenever a node's name, description, inputs, outputs or tooltips
change, then bring locales/zh/ up to date: tests/test_locales.py names the keys that are missing and the texts
whose English changed since they were translated. Once the Chinese says what the English says now,
`--translated zh` records the current English as what the Chinese was translated from."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from devkit.node_locales import (LANGUAGES, dumps, locale_file, node_defs, pack_schemas,  # noqa: E402
                                 record_translated)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--translated", choices=LANGUAGES, metavar="LANG",
                        help="record the current English as what LANG's texts were translated from")
    args = parser.parse_args(argv)
    target = locale_file("en", "nodeDefs.json")
    target.write_text(dumps(node_defs(pack_schemas())), encoding="utf-8")
    print(f"wrote {target.relative_to(target.parents[2])}")
    if args.translated:
        folder = record_translated(args.translated)
        print(f"recorded the English of {args.translated} in {folder.relative_to(target.parents[2])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
