"""Load the describer's models: a Qwen2.5-VL vision-language model and a CLIP embedder.

The same functions load the real models (hub ids, downloaded into the cache on first start)
and the tiny local test models (directories), so tests exercise the production code path.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from describer.inference.errors import ModelUnavailable, OutOfMemory
from describer.inference.tiny import MARKER_FILE as TINY_MARKER
from describer.inference.tiny import ensure_tiny_models

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from transformers import PreTrainedModel, ProcessorMixin

logger = logging.getLogger("describer.inference")

DEFAULT_VLM = "Qwen/Qwen2.5-VL-3B-Instruct"
DEFAULT_CLIP = "clip-ViT-B-32"
TINY = "tiny"
TINY_TRAINABLE = "tiny-trainable"
# One image token covers 28x28 pixels; fewer than 4 tokens per image is useless.
MIN_IMAGE_PIXELS = 4 * 28 * 28
DEFAULT_MAX_IMAGE_PIXELS = 1280 * 28 * 28
QUANTIZATIONS = ("nf4", "bf16")
VLM_MODEL_TYPE = "qwen2_5_vl"


def resolve_model_sources() -> tuple[str, str]:
    """Return (vlm_source, clip_source) from settings: hub ids or local directories.

    DESCRIBER_MODEL=tiny builds the tiny random models once (TINY_MODELS_DIR) and uses both;
    DESCRIBER_MODEL=tiny-trainable the wider tiny model that fine-tuning can teach.
    """
    from django.conf import settings

    vlm_source = getattr(settings, "DESCRIBER_MODEL", DEFAULT_VLM) or DEFAULT_VLM
    clip_source = getattr(settings, "CLIP_MODEL", DEFAULT_CLIP) or DEFAULT_CLIP
    if vlm_source.strip().lower() in (TINY, TINY_TRAINABLE):
        paths = ensure_tiny_models(Path(settings.TINY_MODELS_DIR))
        logger.warning("DESCRIBER_MODEL=%s: using tiny random models from %s; they write nonsense.", vlm_source, paths.vlm.parent)
        vlm = paths.trainable_vlm if vlm_source.strip().lower() == TINY_TRAINABLE else paths.vlm
        return str(vlm), str(paths.clip)
    return vlm_source, clip_source


def load_vlm(
    source: str,
    *,
    max_vram: str,
    max_ram: str,
    quantization: str,
    cache_dir: str,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Load Qwen2.5-VL and its processor; raise ModelUnavailable or OutOfMemory with a readable message.

    On CUDA, ``quantization`` picks 4-bit NF4 (bitsandbytes) or plain bf16, and accelerate keeps
    the weights within ``max_vram`` on GPU 0 and ``max_ram`` on the CPU. Without CUDA the model
    runs in float32 on the CPU.
    """
    from transformers import AutoConfig, AutoProcessor, Qwen2_5_VLForConditionalGeneration

    _check_local_source(source, setting="DESCRIBER_MODEL")
    kwargs = _vlm_load_kwargs(max_vram=max_vram, max_ram=max_ram, quantization=quantization)
    _log_load_start("vision-language model", source, cache_dir, kwargs)
    with _load_errors(source, setting="DESCRIBER_MODEL"):
        config = AutoConfig.from_pretrained(source, cache_dir=cache_dir or None)
        _check_model_type(source, config.model_type)
        if "max_memory" in kwargs:
            check_memory_budget(config, quantization=quantization, max_vram=max_vram, max_ram=max_ram)
        processor = AutoProcessor.from_pretrained(source, cache_dir=cache_dir or None)
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            source, config=config, cache_dir=cache_dir or None, **kwargs
        )
    model.eval()
    configure_processor(processor, max_pixels=max_pixels)
    logger.info("Loaded %s on %s (%s).", source, model.device, _describe_precision(kwargs))
    return model, processor


def merged_with_adapter(source: str, adapter_path: Path, *, cache_dir: str = "") -> str:
    """A folder holding `source` with the LoRA adapter merged into its weights, made once beside
    the adapter (`merged/`) and reused: the worker then loads it like any base model, quantised
    to 4-bit again on CUDA, so the fast decoder and batching serve an adapter at the base
    model's speed. The merge runs on the CPU (bf16 where a GPU will serve it, else float32),
    so an 8 GB card never holds the unquantised weights."""
    from peft import PeftModel
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    target = Path(adapter_path) / "merged"
    if (target / "config.json").is_file():
        return str(target)
    scratch = target.with_name("merged.writing")
    shutil.rmtree(scratch, ignore_errors=True)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    started = time.monotonic()
    with _load_errors(source, setting="DESCRIBER_MODEL"):
        base = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            source, dtype=dtype, device_map="cpu", cache_dir=cache_dir or None
        )
    try:
        merged = PeftModel.from_pretrained(base, str(adapter_path)).merge_and_unload()
    except Exception as error:
        logger.exception("Merging the adapter %s failed.", adapter_path)
        raise ModelUnavailable(f"The adapter {adapter_path} could not be merged into {source}: {short_reason(error)}") from error
    with _load_errors(source, setting="DESCRIBER_MODEL"):
        merged.save_pretrained(scratch)
        AutoProcessor.from_pretrained(source, cache_dir=cache_dir or None).save_pretrained(scratch)
    marker = Path(source) / TINY_MARKER
    if marker.is_file():
        shutil.copyfile(marker, scratch / TINY_MARKER)
    scratch.rename(target)
    logger.info("Merged the adapter %s into %s in %.1f s.", adapter_path, source, time.monotonic() - started)
    return str(target)


def configure_processor(processor: ProcessorMixin, *, max_pixels: int) -> None:
    """Bound the image size the model sees and pad batches on the left, as generation needs."""
    from transformers.image_utils import SizeDict

    min_pixels = min(MIN_IMAGE_PIXELS, max_pixels)
    # The image processor reads its bounds from ``size`` (min_pixels/max_pixels are deprecated names).
    processor.image_processor.size = SizeDict(shortest_edge=min_pixels, longest_edge=max_pixels)
    # Decoder-only generation continues from the last position: padding must come first.
    processor.tokenizer.padding_side = "left"


def load_clip(source: str, cache_dir: str) -> SentenceTransformer:
    """Load a sentence-transformers CLIP model (hub name like clip-ViT-B-32, or a directory)."""
    from sentence_transformers import SentenceTransformer

    _check_local_source(source, setting="CLIP_MODEL")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    _log_load_start("CLIP embedder", source, cache_dir, {"device_map": device})
    with _load_errors(source, setting="CLIP_MODEL"):
        model = SentenceTransformer(source, device=device, cache_folder=cache_dir or None)
    model.eval()
    if device == "cpu" and _cpu_runs_bf16_natively():
        # Twice the float32 speed on CPUs with bf16 matrix units (clip-ViT-B-32 on 2 cores: ~55
        # instead of ~100 ms an image); embeddings agree to a cosine of 0.99996.
        model.to(torch.bfloat16)
    logger.info(
        "Loaded %s on %s in %s (%d-dimensional embeddings).",
        source,
        device,
        next(model.parameters()).dtype,
        model.get_embedding_dimension(),
    )
    return model


def unit_vector(values: Iterable[float]) -> list[float]:
    """An embedding as plain floats, L2-normalised in float64 (a bf16 CLIP normalises only to ~1e-3)."""
    floats = [float(value) for value in values]
    norm = math.sqrt(sum(value * value for value in floats)) or 1.0
    return [value / norm for value in floats]


def _cpu_runs_bf16_natively() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _vlm_load_kwargs(*, max_vram: str, max_ram: str, quantization: str) -> dict[str, Any]:
    if not torch.cuda.is_available():
        # No GPU: full precision on the CPU (bf16 and 4-bit kernels are slow or missing there).
        return {"dtype": torch.float32, "device_map": "cpu"}
    if quantization not in QUANTIZATIONS:
        raise ModelUnavailable(
            f"MODEL_QUANTIZATION={quantization!r} is not supported; use one of: {', '.join(QUANTIZATIONS)}."
        )
    compute_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    kwargs: dict[str, Any] = {
        "dtype": compute_dtype,
        "device_map": "auto",
        "max_memory": {0: max_vram, "cpu": max_ram},
    }
    if quantization == "nf4":
        kwargs["quantization_config"] = _nf4_config(compute_dtype)
    return kwargs


def _nf4_config(compute_dtype: torch.dtype) -> Any:
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        # Meant to let 4-bit layers that do not fit stay on the CPU; with double quantisation the
        # dispatch fails in accelerate/bitsandbytes (seen with bitsandbytes 0.50.2, accelerate 1.15),
        # so check_memory_budget refuses such a budget before loading.
        llm_int8_enable_fp32_cpu_offload=True,
    )


def check_memory_budget(config: Any, *, quantization: str, max_vram: str, max_ram: str) -> None:
    """Refuse, with the numbers, a memory budget the weights cannot fit.

    In bf16 what does not fit MODEL_MAX_VRAM is offloaded into MODEL_MAX_RAM (slow, but it runs);
    4-bit layers cannot be offloaded, so in nf4 the weights must fit MODEL_MAX_VRAM.
    """
    from accelerate.utils import convert_file_size_to_int

    try:
        vram, ram = convert_file_size_to_int(max_vram), convert_file_size_to_int(max_ram)
    except ValueError as error:
        raise ModelUnavailable(f"MODEL_MAX_VRAM / MODEL_MAX_RAM must be sizes like 7GiB or 16GiB ({error}).") from None
    needed = estimate_weight_bytes(config, quantization)
    gib = f"about {needed / 2**30:.1f} GiB"
    if quantization == "nf4" and needed > vram:
        raise ModelUnavailable(
            f"MODEL_MAX_VRAM={max_vram} is too small for this model in 4-bit: its weights alone take {gib} "
            "of GPU memory, and 4-bit layers cannot be offloaded to the CPU. Raise MODEL_MAX_VRAM (one "
            "request needs about 1 GiB more), or set MODEL_QUANTIZATION=bf16, which keeps what does not "
            "fit in MODEL_MAX_RAM (much slower)."
        )
    if needed > vram + ram:
        raise ModelUnavailable(
            f"MODEL_MAX_VRAM={max_vram} and MODEL_MAX_RAM={max_ram} together are too small for this model "
            f"in {quantization}: its weights take {gib}. Raise either, or use MODEL_QUANTIZATION=nf4."
        )


def estimate_weight_bytes(config: Any, quantization: str) -> int:
    """Bytes the model's weights take once loaded: bf16, or NF4 for the linear layers that
    bitsandbytes quantises (all but the output head) with one byte of scale per 64 weights."""
    from torch import nn
    from transformers import Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        skeleton = Qwen2_5_VLForConditionalGeneration(config)
    total, counted = 0, set()
    for name, module in skeleton.named_modules():
        quantised = quantization == "nf4" and isinstance(module, nn.Linear) and not name.endswith("lm_head")
        for parameter_name, parameter in module.named_parameters(recurse=False):
            if id(parameter) in counted:
                continue  # tied embeddings count once
            counted.add(id(parameter))
            count = parameter.numel()
            total += count // 2 + count // 64 if quantised and parameter_name == "weight" else count * 2
    return total


def _check_local_source(source: str, *, setting: str) -> None:
    """Fail early and clearly for a path that does not exist (instead of a slow hub lookup error)."""
    looks_like_path = source.startswith(("/", "./", "../", "~")) or Path(source).expanduser().exists()
    if looks_like_path and not Path(source).expanduser().is_dir():
        raise ModelUnavailable.for_source(source, "no such directory", setting=setting)


def _check_model_type(source: str, model_type: str) -> None:
    # from_pretrained would happily load another architecture's folder, leaving every weight random.
    if model_type != VLM_MODEL_TYPE:
        raise ModelUnavailable.for_source(
            source, f"it is a {model_type!r} model, not {VLM_MODEL_TYPE!r} (Qwen2.5-VL)", setting="DESCRIBER_MODEL"
        )


def _log_load_start(what: str, source: str, cache_dir: str, kwargs: dict[str, Any]) -> None:
    if Path(source).expanduser().is_dir():
        logger.info("Loading the %s from the local directory %s (%s).", what, source, _describe_precision(kwargs))
        return
    cache = cache_dir or "the Hugging Face default cache (HF_HOME)"
    logger.info(
        "Loading the %s %s (%s) from the Hugging Face hub via %s. The first start downloads the weights "
        "into that cache (several GB for the describer; progress bars follow); later starts reuse it.",
        what,
        source,
        _describe_precision(kwargs),
        cache,
    )


def _describe_precision(kwargs: dict[str, Any]) -> str:
    if "quantization_config" in kwargs:
        return f"4-bit NF4, max memory {kwargs['max_memory']}"
    if "max_memory" in kwargs:
        return f"{kwargs['dtype']}, max memory {kwargs['max_memory']}"
    return f"{kwargs.get('dtype', 'float32')} on {kwargs['device_map']}"


@contextmanager
def _load_errors(source: str, *, setting: str) -> Iterator[None]:
    """Turn any loading failure into ModelUnavailable/OutOfMemory with a one-line reason.

    The full traceback goes to the log; the message stays short enough to show to a user.
    """
    try:
        yield
    except ModelUnavailable:
        raise
    except Exception as exc:
        if is_cuda_oom(exc):
            logger.exception("Loading %s ran out of GPU memory.", source)
            torch.cuda.empty_cache()
            raise OutOfMemory(
                f"The GPU ran out of memory while loading {source}; "
                "lower MODEL_MAX_VRAM so more stays on the CPU, or use MODEL_QUANTIZATION=nf4."
            ) from exc
        logger.exception("Loading %s failed.", source)
        raise ModelUnavailable.for_source(source, short_reason(exc), setting=setting) from exc


def is_cuda_oom(error: BaseException) -> bool:
    """True for CUDA running out of memory: torch's allocator raises OutOfMemoryError, but
    cuBLAS and kernel launches report it as a plain RuntimeError."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    message = str(error)
    return isinstance(error, RuntimeError) and any(
        marker in message for marker in ("CUDA out of memory", "CUDA error: out of memory", "ALLOC_FAILED")
    )


def short_reason(exc: BaseException, limit: int = 300) -> str:
    """First line of an exception message, trimmed: library errors can be dozens of lines."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = lines[0] if lines else type(exc).__name__
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"
