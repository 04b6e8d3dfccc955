"""`python manage.py finetune [--generated DIR] [--epochs N] [--resume] [--activate]`: train a LoRA
adapter of the vision-language model on the curated examples (and a `make_diagram_set` folder),
into a versioned folder of ADAPTERS_DIR (describer/adapters.py, describer/inference/finetune.py)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from describer import adapters

# Fewer than this cannot give both a training and a validation split worth the name.
MIN_SAMPLES = 4
RUN_FILE = "run.json"  # in a .partial folder: what the run was started with, checked on --resume


class Command(BaseCommand):
    help = "Fine-tune a LoRA adapter (QLoRA on CUDA, LoRA in float32 on the CPU) on the curated examples."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--generated", type=Path, action="append", default=[],
                            help="a make_diagram_set folder to train on as well (repeatable)")  # fmt: skip
        parser.add_argument("--no-examples", action="store_true", help="leave the curated examples out")
        parser.add_argument("--output", type=Path, default=None, help="where versions go (default: ADAPTERS_DIR)")
        parser.add_argument("--validation-share", type=float, default=0.1,
                            help="share of the samples kept for validation (0: validate on the training set)")  # fmt: skip
        parser.add_argument("--epochs", type=int, default=3)
        parser.add_argument("--repeats", type=int, default=1, help="passes over the training split per epoch")
        parser.add_argument("--patience", type=int, default=2, help="epochs without improvement before stopping")
        parser.add_argument("--rank", type=int, default=16)
        parser.add_argument("--alpha", type=int, default=None, help="LoRA alpha (default: twice the rank)")
        parser.add_argument("--learning-rate", type=float, default=2e-4)
        parser.add_argument("--dropout", type=float, default=0.05)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--no-gradient-checkpointing", action="store_true")
        parser.add_argument("--resume", action="store_true", help="continue the last unfinished run")
        parser.add_argument("--activate", action="store_true", help="serve the new adapter at once")

    def handle(self, *args, **options) -> None:
        # Before torch touches CUDA: growing segments instead of fixed blocks kept QLoRA's peak
        # reservation at 6.0 GiB instead of 11.4 GiB (bench/results/finetune-gpu.json), within an 8 GB card.
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
        from describer.inference.errors import InferenceError
        from describer.inference.finetune import TrainingSettings, TrainingStopped, finish_run, train
        from describer.inference.loading import resolve_model_sources

        samples = self.samples(options)
        training, validation = split(samples, options["validation_share"])
        data_sha256 = data_hash(training, validation)
        config = self.training_settings(TrainingSettings, options)
        source, _ = resolve_model_sources()
        root = Path(options["output"] or settings.ADAPTERS_DIR)
        run_dir = self.run_dir(root, options["resume"], data_sha256, config)
        self.stdout.write(
            f"Training {run_dir.name} on {source}: {len(training)} samples, {len(validation) or len(training)} "
            f"for validation{' (the training set)' if not validation else ''}."
        )
        try:
            report = train(
                source, training, validation or training, config, run_dir, data_sha256=data_sha256,
                resume=options["resume"], progress_file=sys.stderr, on_epoch=self.show_epoch,
            )  # fmt: skip
            report["data"]["validation_is_training_set"] = not validation
            final = finish_run(run_dir, report)
        except (TrainingStopped, InferenceError) as error:
            raise CommandError(str(error)) from None
        self.register(final, options["activate"])

    # --- Data ------------------------------------------------------------------------------

    def samples(self, options) -> list:
        samples = [] if options["no_examples"] else curated_samples()
        for folder in options["generated"]:
            samples += generated_samples(folder)
        missing = [str(sample.image) for sample in samples if not sample.image.is_file()]
        if missing:
            raise CommandError(
                f"{len(missing)} image(s) are missing, so nothing was trained: " + ", ".join(missing[:10])
                + (" …" if len(missing) > 10 else "") + ". Restore them or remove their examples."
            )  # fmt: skip
        if len(samples) < MIN_SAMPLES:
            raise CommandError(
                f"Only {len(samples)} sample(s) to learn from; fine-tuning needs at least {MIN_SAMPLES}. Add curated "
                "examples in the admin, or generated diagrams with --generated DIR (manage.py make_diagram_set)."
            )
        return samples

    def training_settings(self, settings_class, options):
        for name in ("epochs", "repeats", "patience", "rank"):
            if options[name] < 1:
                raise CommandError(f"--{name} must be at least 1 (it was {options[name]}).")
        return settings_class(
            rank=options["rank"], alpha=options["alpha"] or 2 * options["rank"], dropout=options["dropout"],
            learning_rate=options["learning_rate"], epochs=options["epochs"], repeats=options["repeats"],
            patience=options["patience"], seed=options["seed"], max_pixels=settings.DESCRIBER_MAX_PIXELS,
            gradient_checkpointing=not options["no_gradient_checkpointing"], quantization=settings.MODEL_QUANTIZATION,
            max_vram=settings.MODEL_MAX_VRAM, max_ram=settings.MODEL_MAX_RAM, cache_dir=settings.MODEL_CACHE_DIR,
        )  # fmt: skip

    # --- Runs ------------------------------------------------------------------------------

    def run_dir(self, root: Path, resume: bool, data_sha256: str, config) -> Path:
        from dataclasses import asdict

        started_with = {"data_sha256": data_sha256, "settings": asdict(config)}
        if resume:
            return resumable_run(root, started_with)
        root.mkdir(parents=True, exist_ok=True)
        run_dir = root / (adapters.next_version(root) + adapters.PARTIAL_SUFFIX)
        run_dir.mkdir()
        (run_dir / RUN_FILE).write_text(json.dumps(started_with, indent=2) + "\n")
        return run_dir

    def show_epoch(self, figures: dict) -> None:
        validation = figures["validation"]
        self.stdout.write(
            f"epoch {figures['epoch']}: loss {figures['train_loss']:.4f}, validation node F1 "
            f"{validation.get('node_f1', 0):.3f}, edge F1 {validation.get('edge_f1', 0):.3f}, parse rate "
            f"{validation.get('parse_rate', 0):.3f} ({figures['seconds']:.0f} s)"
        )
        self.stdout.flush()

    def register(self, final: Path, activate: bool) -> None:
        from describer.models import Adapter

        info = adapters.check(final)
        adapter = Adapter.register(info)
        best = info.report.get("best", {})
        self.stdout.write(self.style.SUCCESS(
            f"Wrote {final} (best epoch {best.get('epoch')}, {info.report['stopped']}, {info.report['seconds']:.0f} s)."
        ))  # fmt: skip
        if activate:
            adapter.activate()
            self.stdout.write("It is now the active adapter: the workers switch to it between jobs.")
        else:
            self.stdout.write("Make it active in the admin (Adapters), or set DESCRIBER_ADAPTER to its folder.")


def resumable_run(root: Path, started_with: dict) -> Path:
    runs = sorted(root.glob("v*" + adapters.PARTIAL_SUFFIX)) if root.is_dir() else []
    if not runs:
        raise CommandError(f"There is no unfinished run in {root} to resume; start one without --resume.")
    run_dir = runs[-1]
    try:
        before = json.loads((run_dir / RUN_FILE).read_text())
    except (OSError, ValueError):
        raise CommandError(f"{run_dir} does not say how it was started ({RUN_FILE}); start a new run.") from None
    if before != json.loads(json.dumps(started_with)):
        changed = "the data" if before.get("data_sha256") != started_with["data_sha256"] else "the settings"
        raise CommandError(f"{run_dir} was started with other {changed.split()[-1]}: resume it with the same "
                           "options and data, or start a new run without --resume.")  # fmt: skip
    return run_dir


def canonical_text(text: str, language: str):
    """A curated description in the canonical layout the grammar allows, with its graph (None
    when the text gives none: it is then trained on as it stands)."""
    from describer import graphs

    result = graphs.from_description(text, language)
    if result.graph is None:
        return text, None
    return graphs.description_text(result.graph, language), result.graph


def curated_samples() -> list:
    from describer.inference.finetune import Sample
    from describer.models import Example

    samples = []
    for example in Example.objects.order_by("pk"):
        text, truth = canonical_text(example.description, example.language)
        samples.append(Sample(f"example-{example.pk}", Path(example.image.path), text, example.language, truth))
    return samples


def generated_samples(folder: Path) -> list:
    from describer.evaluation import load_items
    from describer.inference.finetune import Sample

    if not (folder / "manifest.json").is_file():
        raise CommandError(f"{folder} has no manifest.json: give a folder written by manage.py make_diagram_set.")
    return [Sample(item.name, item.image, item.canonical_text, item.truth.language, item.truth) for item in load_items(folder)]


def split(samples: list, share: float) -> tuple[list, list]:
    """A stable validation split: by a hash of each sample's name, so adding samples moves none."""
    if not 0 <= share < 1:
        raise CommandError(f"--validation-share must be at least 0 and below 1 (it was {share}).")
    if share == 0:
        return samples, []
    ranked = sorted(samples, key=lambda sample: hashlib.sha256(sample.name.encode()).hexdigest())
    count = max(1, round(len(samples) * share))
    validation = {sample.name for sample in ranked[:count]}
    return [s for s in samples if s.name not in validation], [s for s in samples if s.name in validation]


def data_hash(training: list, validation: list) -> str:
    digest = hashlib.sha256()
    for part, samples in (("training", training), ("validation", validation)):
        for sample in sorted(samples, key=lambda sample: sample.name):
            image = hashlib.sha256(sample.image.read_bytes()).hexdigest()
            digest.update(json.dumps([part, sample.name, image, sample.text, sample.language]).encode())
    return digest.hexdigest()

