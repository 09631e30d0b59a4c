"""What the pack supports: the ComfyUI releases its integration suite runs on, and the Pythons.

The oldest and the newest tested ComfyUI are the ends of the version matrix (README, Tests); a ComfyUI
outside them still loads the pack, with one log line saying so."""
from __future__ import annotations

import re
from pathlib import Path

# Oldest and newest ComfyUI the integration suite runs on (tests/fixtures/object_info/ holds their schemas).
TESTED_COMFYUI = ("0.3.64", "0.33.0")
PYTHONS = ("3.10", "3.13")


def version_tuple(version: str) -> tuple[int, ...]:
    """'0.33.0' -> (0, 33, 0); a suffix such as '-rc1' or '+local' is ignored."""
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0].split("-")[0])[:3])


def checkout_version(comfyui: str | Path) -> str | None:
    """The version a ComfyUI checkout declares in its comfyui_version.py; None when it has none."""
    version_file = Path(comfyui) / "comfyui_version.py"
    if not version_file.is_file():
        return None
    found = re.search(r"__version__\s*=\s*[\"']([^\"']+)", version_file.read_text())
    return found.group(1) if found else None


def outside_support(comfyui_version: str | None) -> str | None:
    """A one-line notice when the running ComfyUI is outside the tested range, else None."""
    oldest, newest = TESTED_COMFYUI
    if comfyui_version is None:
        return (f"could not read ComfyUI's version (comfyui_version.py); this pack is tested with ComfyUI "
                f"{oldest} to {newest}")
    if version_tuple(comfyui_version) < version_tuple(oldest):
        return (f"ComfyUI {comfyui_version} is older than {oldest}, the oldest this pack is tested with; "
                f"update ComfyUI if a node fails")
    if version_tuple(comfyui_version) > version_tuple(newest):
        return (f"ComfyUI {comfyui_version} is newer than {newest}, the newest this pack is tested with; "
                f"it should work, and a failure is worth reporting with this version")
    return None
