"""Synthetic diagrams with ground truth, for training and evaluating the describer
(`manage.py make_diagram_set`).

An item is planned from (seed, index) alone: a random `ProcessGraph` with business labels
(describer/graph/vocabulary.py), its canonical text, a drawing style, a list of degradations and
a split. Planning needs no browser, so graphs, texts and the manifest are the same for the same
seed on every machine; only the pixels depend on the Chromium that draws them.

Drawing goes through the vendored Mermaid in one headless Chromium page (no reload per item),
with the site's settings (strict, SVG text labels); Pillow then degrades the screenshot the way
phone photos and scans are degraded.
"""

from __future__ import annotations

import io
import json
import random
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageChops, ImageFilter

from describer.graph.mermaid import read_mermaid, render_mermaid
from describer.graph.model import Edge, Lane, Node, NodeKind, Pool, ProcessGraph
from describer.graph.text import render_text
from describer.graph.vocabulary import DOMAINS, LANGUAGES, VOCABULARIES, Vocabulary

SIZE_BUCKETS = {"small": (3, 8), "medium": (9, 20), "large": (21, 40)}
SIZE_WEIGHTS = (0.35, 0.4, 0.25)
SPLITS = (("train", 0.8), ("validation", 0.9), ("test", 1.0))  # cumulative shares
DIRECTIONS = ("TD", "LR")
THEMES = ("default", "neutral", "forest")
FONTS = ("DejaVu Sans", "DejaVu Serif", "DejaVu Sans Mono", "DejaVu Sans Condensed")  # all have Cyrillic
START_WORDS = {"en": "Start", "ru": "Начало"}
MAX_DEPTH = 2  # decisions inside decisions inside decisions, no deeper: past that nobody draws them
MAX_SIDE_PX = 2400  # a 40-step LR chart would otherwise be ~6000 px wide and slow everything down
MERMAID_JS = Path(__file__).resolve().parents[2] / "static" / "vendor" / "mermaid.min.js"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


# Graphs ----------------------------------------------------------------------------------

Pending = list[tuple[str, str]]  # edges still to be drawn to the next node: (source id, label)


class _GraphBuilder:
    """Grows a graph block by block: each block takes the pending edges into its first node and
    leaves its own for the next block. The node budget is spent exactly, so the size is chosen."""

    def __init__(self, rng: random.Random, vocabulary: Vocabulary, lanes: list[Lane]) -> None:
        self.rng, self.vocabulary, self.lanes = rng, vocabulary, lanes
        self.nodes: list[Node] = []
        self.edges: list[Edge] = []
        self.tasks = _shuffled(rng, vocabulary.tasks)
        self.ends = _shuffled(rng, vocabulary.ends)
        self.lane = lanes[0].id if lanes else None

    def add(self, kind: NodeKind, label: str, pending: Pending) -> str:
        node_id = f"n{len(self.nodes) + 1}"
        if self.lanes and self.rng.random() < 0.3:
            self.lane = self.rng.choice(self.lanes).id  # work changes hands now and then
        self.nodes.append(Node(id=node_id, kind=kind, label=label, lane=self.lane))
        self.edges += [Edge(source=source, target=node_id, label=label_) for source, label_ in pending]
        return node_id

    def sequence(self, pending: Pending, budget: int, depth: int) -> Pending:
        while budget > 0:
            pending, used = self.block(pending, budget, depth)
            budget -= used
        return pending

    def block(self, pending: Pending, budget: int, depth: int) -> tuple[Pending, int]:
        roll = self.rng.random()
        if budget >= 4 and depth <= MAX_DEPTH and roll < 0.3:
            return self.decision(pending, budget, depth)
        if budget >= 3 and roll < 0.42:
            return self.loop(pending, budget)
        if budget >= 4 and depth <= MAX_DEPTH and roll < 0.54:
            return self.parallel(pending, budget)
        roll = self.rng.random()
        kind = NodeKind.EVENT if roll < 0.07 else NodeKind.SUBPROCESS if roll < 0.12 else NodeKind.TASK
        label = self.rng.choice(self.vocabulary.events) if kind == NodeKind.EVENT else next(self.tasks)
        return [(self.add(kind, label, pending), "")], 1

    def decision(self, pending: Pending, budget: int, depth: int) -> tuple[Pending, int]:
        """2–4 branches; the first carries on, others may stop at an end of their own, and at most
        one is empty (its edge goes straight to whatever follows)."""
        branches = self.rng.choices((2, 3, 4), weights=(0.55, 0.27, 0.18))[0]
        question = self.rng.choice(self.vocabulary.decisions_with(branches))
        node = self.add(NodeKind.DECISION, question.question, pending)
        shares = _branch_shares(self.rng, min(budget - 1, 3 * branches + 2), branches)
        out: Pending = []
        for number, (answer, share) in enumerate(zip(question.answers, shares, strict=True)):
            stops = int(number > 0 and share >= 1 and self.rng.random() < 0.55)
            branch = self.sequence([(node, answer)], share - stops, depth + 1)
            if stops:
                self.add(NodeKind.END, next(self.ends), branch)
            else:
                out += branch
        return out, 1 + sum(shares)

    def loop(self, pending: Pending, budget: int) -> tuple[Pending, int]:
        """Some work, then a check that sends it back ("Is the fix working?" — "No")."""
        steps = self.rng.randint(1, min(3, budget - 1))
        first = self.add(NodeKind.TASK, next(self.tasks), pending)
        last = first
        for _ in range(steps - 1):
            last = self.add(NodeKind.TASK, next(self.tasks), [(last, "")])
        question = self.rng.choice(self.vocabulary.decisions_with(2))
        check = self.add(NodeKind.DECISION, question.question, [(last, "")])
        self.edges.append(Edge(source=check, target=first, label=question.answers[-1]))
        return [(check, question.answers[0])], steps + 1

    def parallel(self, pending: Pending, budget: int) -> tuple[Pending, int]:
        branches = self.rng.randint(2, min(3, budget - 2))
        split = self.add(NodeKind.PARALLEL, "", pending)
        shares = [1 + share for share in _split_budget(self.rng, min(budget - 2, 3 * branches) - branches, branches)]
        ends: Pending = []
        for share in shares:
            ends += self.sequence([(split, "")], share, MAX_DEPTH + 1)  # no gateways inside: keeps joins clean
        return [(self.add(NodeKind.PARALLEL, "", ends), "")], 2 + sum(shares)


def _shuffled(rng: random.Random, phrases: tuple[str, ...]) -> Iterator[str]:
    """Phrases in a random order, again and again: few repeats before the list runs out."""
    while True:
        order = list(phrases)
        rng.shuffle(order)
        yield from order


def _split_budget(rng: random.Random, total: int, parts: int) -> list[int]:
    cuts = sorted(rng.randint(0, total) for _ in range(parts - 1))
    return [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]


def _branch_shares(rng: random.Random, total: int, branches: int) -> list[int]:
    """Nodes per branch: at least one each, but one branch may be empty (two empty ones
    would be two edges from the decision to the same node)."""
    empty = rng.randrange(branches) if rng.random() < 0.6 or total < branches else None
    filled = branches - (empty is not None)
    shares = [1 + share for share in _split_budget(rng, total - filled, filled)]
    if empty is not None:
        shares.insert(empty, 0)
    return shares


def _lanes_and_pools(rng: random.Random, vocabulary: Vocabulary) -> tuple[list[Lane], list[Pool]]:
    names = rng.sample(vocabulary.lanes, rng.randint(2, 4))
    layout = rng.choice(("lanes", "one pool", "two pools")) if len(names) > 2 else rng.choice(("lanes", "one pool"))
    if layout == "lanes":
        return [Lane(id=f"lane{i}", name=name) for i, name in enumerate(names, 1)], []
    # The first pool is the organisation that runs the process; a second one is a partner.
    pool_names = (vocabulary.pools[0], rng.choice(vocabulary.pools[1:]))
    pools = [Pool(id="pool1", name=pool_names[0])]
    cut = len(names) if layout == "one pool" else rng.randint(1, len(names) - 1)
    if layout == "two pools":
        pools.append(Pool(id="pool2", name=pool_names[1]))
    lanes = [Lane(id=f"lane{i}", name=name, pool="pool1" if i <= cut else "pool2") for i, name in enumerate(names, 1)]
    return lanes, pools


def generate_graph(rng: random.Random, vocabulary: Vocabulary, *, nodes: int, with_lanes: bool) -> ProcessGraph:
    """A process of exactly `nodes` nodes (3–40): a start, blocks, a final end."""
    lanes, pools = _lanes_and_pools(rng, vocabulary) if with_lanes else ([], [])
    builder = _GraphBuilder(rng, vocabulary, lanes)
    start_label = rng.choice((START_WORDS[vocabulary.language], *vocabulary.events))
    first = builder.add(NodeKind.START, start_label, [])
    pending = builder.sequence([(first, "")], nodes - 2, depth=0)
    builder.add(NodeKind.END, next(builder.ends), pending)
    # A lane nobody works in (or a pool without lanes) is drawn as an empty band: leave it out.
    lanes = [lane for lane in lanes if any(node.lane == lane.id for node in builder.nodes)]
    pools = [pool for pool in pools if any(lane.pool == pool.id for lane in lanes)]
    return ProcessGraph(
        title=rng.choice(vocabulary.titles), language=vocabulary.language,
        pools=pools, lanes=lanes, nodes=builder.nodes, edges=builder.edges,
    )  # fmt: skip


# Plans -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemPlan:
    name: str
    graph: ProcessGraph
    text: str
    domain: str
    split: str
    style: dict
    degradation: dict  # kind → its parameters, in the order they are applied

    @property
    def image_format(self) -> str:
        return "jpg" if "jpeg" in self.degradation else "png"

    def buckets(self) -> dict:
        nodes = len(self.graph.nodes)
        size = next(name for name, (low, high) in SIZE_BUCKETS.items() if low <= nodes <= high)
        return {"size": size, "diagram_type": "bpmn" if self.graph.lanes else "flowchart",
                "language": self.graph.language, "domain": self.domain,
                "degradation": _degradation_bucket(self.degradation)}  # fmt: skip


def plan_item(seed: int, index: int) -> ItemPlan:
    """Everything about item `index` of the set for `seed`, without drawing it."""
    rng = random.Random(f"diagram:{seed}:{index}")  # str seeds hash the same in every process
    domain, language = rng.choice(DOMAINS), rng.choice(LANGUAGES)
    low, high = SIZE_BUCKETS[rng.choices(list(SIZE_BUCKETS), weights=SIZE_WEIGHTS)[0]]
    graph = generate_graph(rng, VOCABULARIES[domain, language], nodes=rng.randint(low, high), with_lanes=rng.random() < 0.45)
    check_round_trip(graph)
    return ItemPlan(
        name=f"s{seed}_{index:05d}", graph=graph, text=render_text(graph, language), domain=domain,
        split=_split(seed, index), style=_style(rng), degradation=_degradation(rng),
    )  # fmt: skip


def check_round_trip(graph: ProcessGraph) -> None:
    """Ground truth that our own Mermaid reader cannot read back would teach the wrong thing."""
    reading = read_mermaid(render_mermaid(graph))
    if reading.graph != graph or reading.unsupported:
        raise ValueError(f"A generated graph does not survive Mermaid: {reading.unsupported or 'it reads differently'}.")


def _split(seed: int, index: int) -> str:
    """From its own stream, so that changing how graphs are drawn never moves items between splits."""
    draw = random.Random(f"split:{seed}:{index}").random()
    return next(name for name, share in SPLITS if draw < share)


def _style(rng: random.Random) -> dict:
    return {"direction": rng.choice(DIRECTIONS), "theme": rng.choice(THEMES), "font": rng.choice(FONTS),
            "font_size": rng.randint(12, 18), "scale": round(rng.uniform(1.0, 2.0), 2)}  # fmt: skip


def _degradation(rng: random.Random) -> dict:
    chosen: dict = {}
    if rng.random() < 0.4:
        chosen["rotate"] = {"degrees": round(rng.choice((-1, 1)) * rng.uniform(0.3, 3.0), 2)}
    if rng.random() < 0.35:
        chosen["uneven_light"] = {"strength": round(rng.uniform(0.1, 0.35), 2), "angle": rng.randrange(360)}
    if rng.random() < 0.35:
        chosen["blur"] = {"radius": round(rng.uniform(0.4, 1.6), 2)}
    if rng.random() < 0.35:
        chosen["noise"] = {"sigma": round(rng.uniform(4.0, 18.0), 1)}
    if rng.random() < 0.5:
        chosen["jpeg"] = {"quality": rng.randint(35, 90)}
    return chosen


def _degradation_bucket(degradation: dict) -> str:
    if not degradation:
        return "clean"
    low_quality = degradation.get("jpeg", {}).get("quality", 100) < 60
    return "heavy" if len(degradation) >= 3 or low_quality else "light"


# Degrading ---------------------------------------------------------------------------------


def degrade(image: Image.Image, degradation: dict) -> Image.Image:
    """The image as a photo or scan of it might look; JPEG compression happens when it is saved."""
    image = image.convert("RGB")
    for kind, parameters in degradation.items():
        if kind != "jpeg":
            image = DEGRADERS[kind](image, **parameters)
    return image


def _rotate(image: Image.Image, degrees: float) -> Image.Image:
    # A scanner bed around a skewed page is grey-white, not the diagram's pure white.
    return image.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(236, 236, 232))


def _uneven_light(image: Image.Image, strength: float, angle: int) -> Image.Image:
    darkest = round(255 * (1 - strength))
    # Rotated at twice the size and cut from the middle: no dark corners from the rotation.
    gradient = Image.linear_gradient("L").resize((512, 512)).rotate(angle, resample=Image.Resampling.BILINEAR)
    gradient = gradient.crop((128, 128, 384, 384)).point(lambda value: darkest + value * (255 - darkest) // 255).resize(image.size)
    return ImageChops.multiply(image, Image.merge("RGB", (gradient, gradient, gradient)))


def _blur(image: Image.Image, radius: float) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius))


def _noise(image: Image.Image, sigma: float) -> Image.Image:
    noise = Image.effect_noise(image.size, sigma).convert("RGB")  # centred on 128
    return ImageChops.add(image, noise, scale=1.0, offset=-128)


DEGRADERS: dict[str, Callable[..., Image.Image]] = {
    "rotate": _rotate, "uneven_light": _uneven_light, "blur": _blur, "noise": _noise,
}  # fmt: skip


def encoded(image: Image.Image, degradation: dict) -> bytes:
    buffer = io.BytesIO()
    if "jpeg" in degradation:
        image.save(buffer, "JPEG", quality=degradation["jpeg"]["quality"])
    else:
        image.save(buffer, "PNG", compress_level=3)  # level 6 (the default) costs twice the time
    return buffer.getvalue()


# Drawing -----------------------------------------------------------------------------------

RENDER_JS = """
async ({code, style, maxSide}) => {
  mermaid.initialize({
    startOnLoad: false, securityLevel: "strict", htmlLabels: false, suppressErrorRendering: true,
    flowchart: {htmlLabels: false, wrappingWidth: 200}, theme: style.theme, fontFamily: style.font,
    themeVariables: {fontFamily: style.font, fontSize: style.font_size + "px"},
  });
  window.renders = (window.renders || 0) + 1;
  const {svg} = await mermaid.render("diagram" + window.renders, code);
  const box = document.getElementById("box");
  box.innerHTML = svg;
  const element = box.querySelector("svg");
  const view = element.viewBox.baseVal;
  const scale = Math.min(style.scale, maxSide / Math.max(view.width, view.height));
  element.removeAttribute("style");
  element.setAttribute("width", Math.round(view.width * scale));
  element.setAttribute("height", Math.round(view.height * scale));
  const drawn = box.getBoundingClientRect();
  return {x: 0, y: 0, width: Math.ceil(drawn.width), height: Math.ceil(drawn.height)};
}
"""
PARSE_JS = """
async (code) => {
  mermaid.initialize({startOnLoad: false, securityLevel: "strict", htmlLabels: false});
  try { await mermaid.parse(code); return null; } catch (error) { return String(error.message || error); }
}
"""

PAGE_HTML = (
    '<html><body style="margin:0;background:#fff">'
    '<div id="box" style="display:inline-block;padding:24px"></div></body></html>'
)


class MermaidDrawer:
    """One Chromium page with Mermaid loaded once; each drawing replaces the previous SVG."""

    def __init__(self, page) -> None:
        self.page = page
        page.set_content(PAGE_HTML)
        page.add_script_tag(path=str(MERMAID_JS))

    def parse_error(self, code: str) -> str | None:
        """Mermaid's own parser on `code` (as the site's editor runs it): None when it parses,
        else its message."""
        return self.page.evaluate(PARSE_JS, code)

    def draw(self, graph: ProcessGraph, style: dict) -> Image.Image:
        clip = self.page.evaluate(RENDER_JS, {"code": styled_code(graph, style), "style": style, "maxSide": MAX_SIDE_PX})
        # A clip of the full page: a third faster than an element screenshot, which waits for stability.
        return Image.open(io.BytesIO(self.page.screenshot(type="png", clip=clip, full_page=True)))


def styled_code(graph: ProcessGraph, style: dict) -> str:
    """render_mermaid's code with the item's direction (the ground truth does not depend on it)."""
    lines = render_mermaid(graph).split("\n")
    header = next(i for i, line in enumerate(lines) if line.startswith("flowchart "))
    lines[header] = f"flowchart {style['direction']}"
    return "\n".join(lines)


@contextmanager
def mermaid_drawer(chromium_path: str = "/usr/bin/chromium") -> Iterator[MermaidDrawer]:
    from playwright.sync_api import sync_playwright  # only the command needs a browser

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
            yield MermaidDrawer(page)
        finally:
            browser.close()


# Writing -----------------------------------------------------------------------------------


@dataclass
class SetReport:
    items: int = 0
    seconds: float = 0.0
    entries: list[dict] = field(default_factory=list)

    @property
    def items_per_second(self) -> float:
        return self.items / self.seconds if self.seconds else 0.0


def write_ground_truth(folder: Path, plan: ItemPlan) -> None:
    (folder / f"{plan.name}.json").write_text(plan.graph.model_dump_json(indent=2) + "\n", encoding="utf-8")
    (folder / f"{plan.name}.txt").write_text(plan.text, encoding="utf-8")


def manifest_entry(plan: ItemPlan) -> dict:
    return {
        "name": plan.name, "image": f"{plan.name}.{plan.image_format}", "graph": f"{plan.name}.json",
        "text": f"{plan.name}.txt", "split": plan.split, "buckets": plan.buckets(), "nodes": len(plan.graph.nodes),
        "style": plan.style, "degradation": plan.degradation,
    }  # fmt: skip


def write_set(
    folder: Path, *, count: int, seed: int, drawer: MermaidDrawer, progress: Callable[[], None] = lambda: None
) -> SetReport:
    """Items 0…count-1 and manifest.json. Pillow works on one item in a thread while Chromium
    draws the next (Pillow releases the GIL); one item in flight keeps memory flat."""
    folder.mkdir(parents=True, exist_ok=True)
    report, started = SetReport(), time.monotonic()
    with ThreadPoolExecutor(max_workers=1) as pillow:
        in_flight: Future | None = None
        for index in range(count):
            plan = plan_item(seed, index)
            write_ground_truth(folder, plan)
            image = drawer.draw(plan.graph, plan.style)
            if in_flight is not None:
                in_flight.result()  # raises what the thread raised
                progress()
            in_flight = pillow.submit(_write_image, folder, plan, image)
            report.entries.append(manifest_entry(plan))
        if in_flight is not None:
            in_flight.result()
            progress()
    report.items = count
    manifest = {"seed": seed, "count": count, "splits": dict(SPLITS), "items": report.entries}
    (folder / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    report.seconds = time.monotonic() - started
    return report


def _write_image(folder: Path, plan: ItemPlan, image: Image.Image) -> None:
    degraded = degrade(image, plan.degradation)
    (folder / f"{plan.name}.{plan.image_format}").write_bytes(encoded(degraded, plan.degradation))
