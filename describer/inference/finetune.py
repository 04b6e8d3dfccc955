"""LoRA fine-tuning of the vision-language model (`manage.py finetune`), with peft.

On CUDA the base model is loaded in 4-bit NF4 as the worker loads it and the adapter trains on
top (QLoRA), with gradient checkpointing, batch 1; on the CPU it trains in float32. Each sample
is the worker's short adapter prompt (describer/prompts.py: the image, no retrieved examples) and
the description as the answer; the loss counts the answer's tokens only, and the output head is
applied to those positions alone (the full logits of a 1,500-token sequence over Qwen's 151,936
ids would take ~0.9 GB more).

A run lives in `vNNNN.partial/` (describer/adapters.py) until it ends: after each epoch the
adapter is scored on the validation split with the `evaluate` metrics, the best one is kept, and
a checkpoint (adapter, optimiser, schedule, history) is written, so a killed run resumes from its
last finished epoch. The finished folder is renamed into place with its report written last.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from PIL import Image

from describer import adapters, prompts
from describer.graph.model import ProcessGraph
from describer.model_input import load_for_model
from describer.inference.loading import DEFAULT_MAX_IMAGE_PIXELS, is_cuda_oom, load_vlm

log = logging.getLogger("describer.inference")

# LoRA on every projection of the language model; the vision tower stays as it is.
LANGUAGE_PROJECTIONS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "trainer_state.pt"
BEST_DIR = "best"


@dataclass(frozen=True)
class Sample:
    """One training or validation pair: an image and the description it should get."""

    name: str
    image: Path
    text: str
    language: str
    truth: ProcessGraph | None  # for the validation metrics; None: trained on, never scored


@dataclass
class TrainingSettings:
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    learning_rate: float = 2e-4
    epochs: int = 3
    repeats: int = 1  # passes over the training split per epoch (a small set learns in few epochs)
    patience: int = 2  # epochs without a better validation score before stopping
    seed: int = 0
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_answer_tokens: int = 1024
    gradient_checkpointing: bool = True  # CUDA only
    quantization: str = "nf4"  # CUDA: QLoRA on the 4-bit model ("bf16": plain LoRA); the CPU trains in float32
    max_vram: str = "7GiB"
    max_ram: str = "16GiB"
    cache_dir: str = ""

    def as_report(self, device: str) -> dict:
        report = asdict(self)
        report["method"] = "QLoRA (4-bit NF4 base)" if device == "cuda" and self.quantization == "nf4" else (
            "LoRA, bf16 base" if device == "cuda" else "LoRA, float32 base on the CPU")
        report["batch_size"] = 1
        report["target_modules"] = LANGUAGE_PROJECTIONS
        report["prompt"] = adapters.PROMPT_STYLE
        return report


@dataclass
class RunState:
    """What a checkpoint keeps besides the weights."""

    epoch: int = 0
    best_score: tuple[float, float] = (-1.0, 0.0)
    best_epoch: int = 0
    epochs_since_best: int = 0
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    samples_seen: int = 0


class TrainingStopped(Exception):
    """Training cannot go on (bad data or settings), with the reason in words."""


def train(
    source: str,
    training: list[Sample],
    validation: list[Sample],
    settings: TrainingSettings,
    run_dir: Path,
    *,
    data_sha256: str,
    resume: bool = False,
    progress_file=sys.stderr,
    on_epoch: Callable[[dict], None] = lambda figures: None,
) -> dict:
    """Train into `run_dir` (a `.partial` folder) and return the report; the caller moves the
    folder into place (`finish_run`)."""
    torch.manual_seed(settings.seed)
    model, processor = load_for_training(source, settings)
    state = RunState()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate)
    steps = settings.epochs * settings.repeats * len(training)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_then_linear(steps))
    if resume:
        state = _restore(run_dir, model, optimizer, schedule)
    started = time.monotonic() - state.seconds
    encoder = _Encoder(processor, settings)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    stopped = "epochs"
    for epoch in range(state.epoch + 1, settings.epochs + 1):
        try:
            loss = _train_epoch(model, encoder, training, optimizer, schedule, settings, epoch, progress_file)
        except Exception as error:
            if not is_cuda_oom(error):
                raise
            raise TrainingStopped(
                f"The GPU ran out of memory in epoch {epoch}. Lower DESCRIBER_MAX_PIXELS (fewer image tokens) or "
                "--rank, or free the GPU (stop the worker while training on a small card); the finished epochs "
                "are kept: run again with --resume."
            ) from error
        state.samples_seen += settings.repeats * len(training)
        figures = {"epoch": epoch, "train_loss": round(loss, 4), "validation": validate(model, processor, validation, settings)}
        figures["validation"]["loss"] = round(validation_loss(model, encoder, validation), 5)
        score = _score(figures["validation"])
        state.epoch, state.seconds = epoch, round(time.monotonic() - started, 1)
        figures["seconds"] = state.seconds
        state.history.append(figures)
        if score > state.best_score:
            state.best_score, state.best_epoch, state.epochs_since_best = score, epoch, 0
            _save_adapter(model, run_dir / BEST_DIR)
        else:
            state.epochs_since_best += 1
        _checkpoint(run_dir, model, optimizer, schedule, state)
        on_epoch(figures)
        if state.epochs_since_best >= settings.patience:
            stopped = f"early stopping: no better validation score for {settings.patience} epochs"
            break
    return _report(source, settings, state, stopped, data_sha256, len(training), len(validation), model)


def load_for_training(source: str, settings: TrainingSettings):
    """The base model as the worker loads it (describer/inference/loading.py), with a fresh LoRA
    adapter on its language model's projections."""
    from peft import LoraConfig, get_peft_model

    model, processor = load_vlm(
        source, max_vram=settings.max_vram, max_ram=settings.max_ram, quantization=settings.quantization,
        cache_dir=settings.cache_dir, max_pixels=settings.max_pixels,
    )  # fmt: skip
    if model.device.type == "cuda" and settings.gradient_checkpointing:
        # Recompute activations in the backward pass: the memory of one layer instead of all 36.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    config = LoraConfig(
        r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=LANGUAGE_PROJECTIONS
    )
    return get_peft_model(model, config), processor


def _warmup_then_linear(steps: int) -> Callable[[int], float]:
    warmup = max(1, steps // 20)
    return lambda step: min(1.0, (step + 1) / warmup) * max(0.0, 1.0 - step / max(steps, 1))


class _Encoder:
    """Samples as model inputs: the prompt the worker sends, then the answer and <|im_end|>."""

    def __init__(self, processor, settings: TrainingSettings) -> None:
        self.processor = processor
        self.settings = settings

    def prompt(self, sample: Sample) -> tuple[str, Image.Image]:
        image = load_for_model(str(sample.image), self.settings.max_pixels)
        messages = prompts.describe_messages(image, [], sample.language, short=True)
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False), image

    def __call__(self, sample: Sample) -> tuple[dict, torch.Tensor]:
        prompt, image = self.prompt(sample)
        inputs = dict(self.processor(text=[prompt], images=[image], return_tensors="pt"))
        prompt_ids = inputs["input_ids"]
        # The text as the grammar wants it: every line ends in a newline, the last one too.
        answer = sample.text.strip("\n") + "\n<|im_end|>"
        answer_ids = self.processor.tokenizer(answer, add_special_tokens=False)["input_ids"]
        answer_ids = torch.tensor([answer_ids[: self.settings.max_answer_tokens]])
        for key, value in inputs.items():  # input_ids, attention_mask, mm_token_type_ids: one per token
            if key != "input_ids" and torch.is_tensor(value) and value.shape == prompt_ids.shape:
                fill = torch.ones_like(answer_ids) if key == "attention_mask" else torch.zeros_like(answer_ids)
                inputs[key] = torch.cat([value, fill], dim=1)
        inputs["input_ids"] = torch.cat([prompt_ids, answer_ids], dim=1)
        # Positions whose next token is an answer token: the only ones the loss looks at.
        start = prompt_ids.shape[1]
        predicting = torch.arange(start - 1, inputs["input_ids"].shape[1] - 1)
        return inputs, predicting


def _train_epoch(model, encoder, training, optimizer, schedule, settings, epoch, progress_file) -> float:
    from tqdm import tqdm

    model.train()
    order = [sample for _ in range(settings.repeats) for sample in training]
    random.Random(f"{settings.seed}:{epoch}").shuffle(order)
    total, device = 0.0, _input_device(model)
    bar = tqdm(order, desc=f"epoch {epoch}/{settings.epochs}", unit="sample", file=progress_file, leave=True)
    for count, sample in enumerate(bar, 1):
        loss, _ = _answer_loss(model, *encoder(sample), device)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        total += loss.item()
        bar.set_postfix(loss=f"{total / count:.4f}")
    bar.close()
    return total / max(len(order), 1)


def _answer_loss(model, inputs: dict, predicting: torch.Tensor, device) -> tuple[torch.Tensor, int]:
    """The mean loss over the answer's tokens, the output head applied at those positions only;
    and how many tokens that is."""
    inputs = {key: value.to(device) for key, value in inputs.items()}
    predicting = predicting.to(device)
    logits = model(**inputs, logits_to_keep=predicting, use_cache=False).logits[0].float()
    targets = inputs["input_ids"][0, predicting + 1]
    return torch.nn.functional.cross_entropy(logits, targets), len(targets)


def _input_device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def validate(model, processor, validation: list[Sample], settings: TrainingSettings) -> dict:
    """The `evaluate` metrics (describer/evaluation.py) of the adapter's greedy answers."""
    scored = [sample for sample in validation if sample.truth is not None]
    if not scored:
        return {"items": 0}
    from describer.evaluation import result_of_text, summarise  # Django's: not on the GPU bench
    model.eval()
    encoder = _Encoder(processor, settings)
    results = []
    for sample, text in zip(scored, _generate(model, processor, encoder, scored, settings), strict=True):
        results.append(result_of_text(sample.name, sample.truth, text))
    model.train()
    return summarise(results)["overall"]


def _generate(model, processor, encoder: _Encoder, samples: list[Sample], settings: TrainingSettings) -> list[str]:
    """Greedy answers, a few at a time (left-padded like the worker's batches)."""
    texts = []
    longest = max(len(processor.tokenizer(sample.text)["input_ids"]) for sample in samples)
    max_new = min(settings.max_answer_tokens, int(longest * 1.25) + 16)
    for start in range(0, len(samples), 8):
        chunk = samples[start : start + 8]
        prompts_and_images = [encoder.prompt(sample) for sample in chunk]
        inputs = processor(
            text=[prompt for prompt, _ in prompts_and_images], images=[image for _, image in prompts_and_images],
            return_tensors="pt", padding=True,
        ).to(_input_device(model))  # fmt: skip
        # Greedy with the model's own repetition penalty, as the worker decodes (runtime.py): an
        # adapter validated without it flipped items the worker then described wrongly.
        output = model.generate(
            **inputs, max_new_tokens=max_new, do_sample=False, temperature=None, top_p=None, top_k=None, use_cache=True
        )
        new = output[:, inputs["input_ids"].shape[1] :]
        texts += processor.tokenizer.batch_decode(new, skip_special_tokens=True)
    return texts


def _score(validation: dict) -> tuple[float, float]:
    """What early stopping watches: the mean of node and edge F1 on the validation split, then
    (at equal F1, e.g. all 1.0) the lower validation loss: a surer adapter, whose greedy answers
    do not flip on the small numeric differences between training and the served, merged model."""
    f1 = (validation.get("node_f1", 0.0) + validation.get("edge_f1", 0.0)) / 2 if validation.get("items") else 0.0
    return round(f1, 4), -validation.get("loss", 0.0)


@torch.no_grad()
def validation_loss(model, encoder: _Encoder, validation: list[Sample]) -> float:
    """The mean loss per answer token on the validation split, teacher-forced."""
    model.eval()
    total = count = 0.0
    device = _input_device(model)
    for sample in validation:
        loss, tokens = _answer_loss(model, *encoder(sample), device)
        total += loss.item() * tokens
        count += tokens
    model.train()
    return total / count if count else 0.0


def _save_adapter(model, target: Path) -> None:
    scratch = target.with_name(target.name + ".writing")
    shutil.rmtree(scratch, ignore_errors=True)
    model.save_pretrained(str(scratch))
    _swap_in(scratch, target)


def _swap_in(scratch: Path, target: Path) -> None:
    """Put a fully written folder in place of `target`; the old one stays as .old until then,
    so a run killed meanwhile keeps one of the two (_restore looks for it)."""
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    scratch.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _checkpoint(run_dir: Path, model, optimizer, schedule, state: RunState) -> None:
    """The last finished epoch, written beside the old one and swapped in: a run killed while
    writing keeps the previous checkpoint."""
    scratch = run_dir / (CHECKPOINT_DIR + ".writing")
    shutil.rmtree(scratch, ignore_errors=True)
    model.save_pretrained(str(scratch))
    torch.save(
        {"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "state": asdict(state),
         "rng": torch.get_rng_state()},
        scratch / STATE_FILE,
    )  # fmt: skip
    _swap_in(scratch, run_dir / CHECKPOINT_DIR)


def _restore(run_dir: Path, model, optimizer, schedule) -> RunState:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    best, old_best = run_dir / BEST_DIR, run_dir / (BEST_DIR + ".old")
    if not best.exists() and old_best.exists():
        old_best.rename(best)  # killed while swapping in a new best: the checkpoint still names the old one
    checkpoint = run_dir / CHECKPOINT_DIR
    if not (checkpoint / STATE_FILE).is_file():
        checkpoint = run_dir / (CHECKPOINT_DIR + ".old")  # killed between the two renames
    if not (checkpoint / STATE_FILE).is_file():
        raise TrainingStopped(f"{run_dir} has no finished epoch to resume from; start a new run.")
    set_peft_model_state_dict(model, load_file(str(checkpoint / adapters.WEIGHTS_FILE)))
    saved = torch.load(checkpoint / STATE_FILE, weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    torch.set_rng_state(saved["rng"])
    log.info("Resuming %s after epoch %s.", run_dir, saved["state"]["epoch"])
    return RunState(**saved["state"])


def _report(source, settings, state: RunState, stopped, data_sha256, n_train, n_val, model) -> dict:
    device = _input_device(model).type
    best = next((figures for figures in state.history if figures["epoch"] == state.best_epoch), {})
    report = {
        "base_model": source,
        "base_fingerprint": adapters.base_fingerprint(source),
        "data": {"sha256": data_sha256, "training": n_train, "validation": n_val},
        "settings": settings.as_report(device),
        "device": device,
        "epochs": state.history,
        "best": best,
        "stopped": stopped,
        "seconds": state.seconds,
        "samples_per_second": round(state.samples_seen / state.seconds, 3) if state.seconds else None,
    }
    if device == "cuda":
        report["peak_vram_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return report


def finish_run(run_dir: Path, report: dict) -> Path:
    """Move the best adapter into the run's folder, write the report last, and rename the folder
    from `vNNNN.partial` to `vNNNN`: only then can it be served."""
    best = run_dir / BEST_DIR
    if not (best / adapters.WEIGHTS_FILE).is_file():
        raise TrainingStopped(f"{run_dir}: no epoch finished, so there is no adapter to keep.")
    for name in (adapters.CONFIG_FILE, adapters.WEIGHTS_FILE):
        shutil.copyfile(best / name, run_dir / name)
    final = run_dir.with_name(run_dir.name.removesuffix(adapters.PARTIAL_SUFFIX))
    report = {**report, "version": final.name, "complete": True,
              "weights_sha256": adapters.file_sha256(run_dir / adapters.WEIGHTS_FILE),
              "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
    (run_dir / (adapters.REPORT_FILE + ".writing")).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (run_dir / (adapters.REPORT_FILE + ".writing")).rename(run_dir / adapters.REPORT_FILE)
    for leftover in (BEST_DIR, CHECKPOINT_DIR):
        shutil.rmtree(run_dir / leftover, ignore_errors=True)
    run_dir.rename(final)
    return final

