"""Build the tiny random Qwen2.5-VL and CLIP models used by tests and DESCRIBER_MODEL=tiny."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = (
        "Build tiny random models (Qwen2.5-VL and CLIP) into DIR (default: TINY_MODELS_DIR). "
        "They load through the real code path but write nonsense."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", nargs="?", type=Path, help="Target folder (default: TINY_MODELS_DIR).")

    def handle(self, *args: Any, directory: Path | None = None, **options: Any) -> None:
        # Imported here: torch must not load when Django merely lists or imports commands.
        from describer.inference.tiny import build_tiny_models

        paths = build_tiny_models(directory or Path(settings.TINY_MODELS_DIR))
        if options["verbosity"] < 1:
            return
        self.stdout.write(f"Vision-language model: {paths.vlm}")
        self.stdout.write(f"CLIP embedder:         {paths.clip}")
        self.stdout.write(f"Trainable (finetune):  {paths.trainable_vlm}")
        self.stdout.write(
            self.style.WARNING(
                "These models have random weights and write nonsense. Use them for tests and development "
                "(DESCRIBER_MODEL=tiny), never for real descriptions."
            )
        )
