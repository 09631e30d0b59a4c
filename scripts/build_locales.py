"""Write locales/en/nodeDefs.json from the pack's node schemas (the newest /object_info snapshot).

    python scripts/build_locales.py

Run it after scripts/dump_pack_object_info.py whenever a node's name, description, inputs, outputs or tooltips
change, then add the same keys to locales/zh/nodeDefs.json (tests/test_locales.py says which are missing)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from devkit.node_locales import dumps, locale_file, node_defs, pack_schemas  # noqa: E402


def main() -> int:
    target = locale_file("en", "nodeDefs.json")
    target.write_text(dumps(node_defs(pack_schemas())), encoding="utf-8")
    print(f"wrote {target.relative_to(target.parents[2])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
