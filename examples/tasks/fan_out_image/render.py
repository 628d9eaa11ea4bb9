#!/usr/bin/env python3
"""Render the frames a ``params.json`` asks for, as Blender's render entrypoint would, into PNG files.

The "scene" (``scene_file``, JSON) names a background colour and a list of discs, each moving by a given step
per frame; every frame is drawn at ``resolution`` into ``OUTPUT_DIR/<outfilebasename><frame:04d>.png``. Only
the standard library is used (PNG is zlib-compressed rows and CRC-32 framed chunks), so the image needs
nothing but Python.
"""

from __future__ import annotations

import json
import struct
import sys
import zlib
from pathlib import Path
from typing import Any


def png(width: int, height: int, rows: list[bytes]) -> bytes:
    """An 8-bit RGB PNG of ``rows`` (each ``3 * width`` bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = b"".join(b"\x00" + row for row in rows)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def render(scene: dict[str, Any], frame: int, width: int, height: int) -> bytes:
    background = bytes(scene.get("background", [16, 16, 32]))
    rows = [bytearray(background * width) for _ in range(height)]
    for disc in scene.get("discs", []):
        x0, y0 = disc["position"]
        dx, dy = disc.get("step", [0, 0])
        cx, cy = (x0 + dx * frame) % width, (y0 + dy * frame) % height
        radius = disc["radius"]
        colour = bytes(disc["colour"])
        for y in range(max(0, cy - radius), min(height, cy + radius + 1)):
            for x in range(max(0, cx - radius), min(width, cx + radius + 1)):
                if (x - cx) ** 2 + (y - cy) ** 2 <= radius * radius:
                    rows[y][3 * x : 3 * x + 3] = colour
    return png(width, height, [bytes(row) for row in rows])


def main(argv: list[str]) -> int:
    params = json.loads(Path(argv[1]).read_text())
    scene = json.loads(Path(params["scene_file"]).read_text())
    width, height = params["resolution"]
    output = Path(params["OUTPUT_DIR"])
    output.mkdir(parents=True, exist_ok=True)
    for frame in params["frames"]:
        for crop in params["crops"]:
            target = output / f"{crop['outfilebasename']}{frame:04d}.png"
            target.write_bytes(render(scene, frame, width, height))
            print(f"rendered frame {frame} into {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
