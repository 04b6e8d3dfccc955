"""Render retrieval examples' Mermaid sources (NAME.mmd) to images (NAME.png).

    .venv/bin/python scripts/render_examples.py                 # examples/starter
    .venv/bin/python scripts/render_examples.py DIR --force     # every file again

Uses the vendored static/vendor/mermaid.min.js in headless Chromium (Playwright driving
/usr/bin/chromium, or CHROMIUM_PATH), with the settings the site uses for untrusted code
(securityLevel strict) and SVG text labels (htmlLabels false), on white, at 1.5× scale.

Only changed sources are rendered again: each PNG carries the SHA-256 of its source, the
Mermaid version and these render settings in a text chunk, so an unchanged example keeps its
file byte for byte (and so its image_sha256 and its embedding). Standalone: no Django needed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import sys
from pathlib import Path

from PIL import Image, PngImagePlugin
from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
MERMAID_JS = ROOT / "static" / "vendor" / "mermaid.min.js"
VERSIONS = ROOT / "static" / "vendor" / "VERSIONS"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCALE = 1.5
# Wider diagrams are drawn at a smaller scale, so no image gets absurdly wide.
MAX_WIDTH_PX = 2400
# Palette PNGs: diagrams have few colours, and the files stay well under 150 KB.
PALETTE_COLOURS = 128
# Bump when anything below changes the pixels, so every image is rendered again.
RENDER_SETTINGS = f"v3 scale={SCALE} max_width={MAX_WIDTH_PX} colours={PALETTE_COLOURS}"
HASH_KEY = "mermaid-render-sha256"

MERMAID_CONFIG = """{
  startOnLoad: false,
  securityLevel: "strict",
  htmlLabels: false,
  flowchart: {htmlLabels: false, useMaxWidth: false, wrappingWidth: 200},
  theme: "default",
}"""
PAGE = '<!doctype html><html><body style="margin:0;background:#fff"><div id="out" style="display:inline-block;padding:24px;background:#fff"></div></body></html>'
RENDER_JS = (
    """async (code) => {
  mermaid.initialize(%s);
  const {svg} = await mermaid.render("diagram", code);
  document.getElementById("out").innerHTML = svg;
  return document.getElementById("out").getBoundingClientRect().width;
}"""
    % MERMAID_CONFIG
)
# A .mmd holding only comments (an exported example without Mermaid code) has nothing to draw.
COMMENT_OR_BLANK = re.compile(r"^\s*(%%.*)?$")


def mermaid_version() -> str:
    for line in VERSIONS.read_text().splitlines():
        if line.startswith("mermaid "):
            return line.split()[1]
    return "unknown"


def render_key(source: str) -> str:
    material = f"{source}\n{mermaid_version()}\n{RENDER_SETTINGS}"
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def rendered_key(png: Path) -> str | None:
    try:
        with Image.open(png) as image:
            return image.text.get(HASH_KEY)
    except (OSError, ValueError):
        return None


def has_diagram(source: str) -> bool:
    return not all(COMMENT_OR_BLANK.match(line) for line in source.splitlines())


def render(page: Page, source: str) -> Image.Image:
    page.set_content(PAGE)
    page.add_script_tag(path=str(MERMAID_JS))
    width = page.evaluate(RENDER_JS, source)
    if width * SCALE > MAX_WIDTH_PX:
        page.evaluate("(zoom) => { document.body.style.zoom = zoom; }", MAX_WIDTH_PX / (width * SCALE))
    shot = page.locator("#out").screenshot(type="png")
    return Image.open(io.BytesIO(shot)).convert("RGB")


def save(image: Image.Image, png: Path, key: str) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text(HASH_KEY, key)
    palette = image.quantize(colors=PALETTE_COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    palette.save(png, format="PNG", optimize=True, pnginfo=info)


def render_folder(folder: Path, *, force: bool) -> tuple[int, int, list[str]]:
    """Returns (rendered, unchanged, problems). A .mmd without a diagram is passed over."""
    sources = sorted(folder.glob("*.mmd"))
    rendered = unchanged = 0
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(device_scale_factor=SCALE, viewport={"width": 3000, "height": 2000})
        for number, mmd in enumerate(sources, 1):
            source = mmd.read_text(encoding="utf-8")
            png = mmd.with_suffix(".png")
            key = render_key(source)
            if not has_diagram(source):  # an exported example that has no Mermaid code
                print(f"[{number}/{len(sources)}] {mmd.name}: only comments, nothing to draw", flush=True)
                continue
            if not force and png.exists() and rendered_key(png) == key:
                unchanged += 1
                continue
            try:
                save(render(page, source), png, key)
            except Exception as error:  # noqa: BLE001 - Mermaid's parse errors arrive as Playwright errors
                problems.append(f"{mmd.name}: {' '.join(str(error).split())[:400]}")
                continue
            rendered += 1
            print(f"[{number}/{len(sources)}] {png.name} ({png.stat().st_size // 1024} KB)", flush=True)
        browser.close()
    return rendered, unchanged, problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, default=[ROOT / "examples" / "starter"])
    parser.add_argument("--force", action="store_true", help="render every source, changed or not")
    args = parser.parse_args()
    failed = False
    for folder in args.folders:
        rendered, unchanged, problems = render_folder(folder, force=args.force)
        print(f"{folder}: {rendered} rendered, {unchanged} unchanged, {len(problems)} problems")
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
