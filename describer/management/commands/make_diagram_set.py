"""`python manage.py make_diagram_set DIR --count N --seed S`: synthetic diagrams with ground truth
(NAME.png|jpg, NAME.json, NAME.txt and manifest.json), see describer/graph/generate.py. The same
seed gives the same graphs, texts and manifest."""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from describer.graph.generate import mermaid_drawer, write_set

MAX_COUNT = 1_000_000


class Command(BaseCommand):
    help = "Write COUNT random process diagrams, drawn by Mermaid in Chromium and degraded, with ground truth."

    def add_arguments(self, parser) -> None:
        parser.add_argument("folder", type=Path)
        parser.add_argument("--count", type=int, default=100, help="how many items (default 100)")
        parser.add_argument("--seed", type=int, default=0, help="same seed, same set (default 0)")
        parser.add_argument("--chromium", default="/usr/bin/chromium", help="the Chromium to draw with")

    def handle(self, *args, folder: Path, count: int, seed: int, chromium: str, **options) -> None:
        if not 1 <= count <= MAX_COUNT:
            raise CommandError(f"--count must be between 1 and {MAX_COUNT}; it was {count}.")
        if folder.exists() and not folder.is_dir():
            raise CommandError(f"{folder} exists and is not a folder; give a folder (it is created if missing).")
        # On stderr, so that stdout stays the summary that scripts read.
        with tqdm(total=count, unit="item", file=sys.stderr, disable=options["verbosity"] == 0) as bar:
            with mermaid_drawer(chromium) as drawer:
                report = write_set(folder, count=count, seed=seed, drawer=drawer, progress=bar.update)
        self.stdout.write(
            f"Wrote {report.items} items and manifest.json to {folder} in {report.seconds:.1f} s "
            f"({report.items_per_second:.2f} items/s)."
        )
