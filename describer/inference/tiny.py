"""Tiny random Qwen2.5-VL and CLIP models, built locally for tests and development.

No model weights can be downloaded where this project is developed, so the real loading code
(``loading.py``) is exercised on these models instead: same classes, same file layout, same chat
template as the real ones, but two layers and random weights. **They write nonsense.**
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

if TYPE_CHECKING:
    from transformers import CLIPTokenizer, GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLProcessor, Qwen2Tokenizer

SEED = 1234

# Qwen2.5's added tokens in the order (and so the relative ids) of the real tokenizer.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Added to the real vocabulary too, but not marked special (decoding keeps them).
QWEN_PLAIN_ADDED_TOKENS = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)

# The processor chat template shipped with Qwen/Qwen2.5-VL-3B-Instruct (chat_template.json).
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TOKENIZER_CORPUS = (
    "The diagram shows a flowchart with three boxes connected by arrows.",
    "A user uploads an image; the server stores it and a worker describes it.",
    "The sequence diagram has a client, a web server and a database.",
    "Each arrow points from the request to the response, left to right.",
    "flowchart TD\n    A[Start] --> B{Is it valid?}\n    B -->|Yes| C[Save]\n    B -->|No| D[Reject]",
    "sequenceDiagram\n    Alice->>Bob: Hello\n    Bob-->>Alice: Hi",
    "The chart compares sales in 2023 and 2024: 12%, 45% and 7.5%.",
    "Diagram, chart, table, graph, node, edge, label, legend, axis, title.",
    "На диаграмме показана блок-схема из трёх блоков, соединённых стрелками.",
    "Пользователь загружает изображение, сервер сохраняет его, а обработчик описывает.",
    "Диаграмма последовательности: клиент, веб-сервер и база данных.",
    "Каждая стрелка ведёт от запроса к ответу, слева направо.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Схема, график, таблица, узел, ребро, подпись, легенда, ось, заголовок.",
    "The quick brown fox jumps over the lazy dog. 0123456789",
    # Words of the chat template, so prompts do not fall apart into single bytes.
    "system user assistant You are a helpful assistant. Describe this image. Picture Video",
    "Ты полезный помощник. Опиши это изображение.",
)
TOKENIZER_VOCAB_SIZE = 600  # bytes (256) + merges; the special tokens come on top


# Written into each tiny model's folder: tells the runtime (and a curious human) what it is.
MARKER_FILE = "tiny_model.json"


@dataclass(frozen=True)
class TinyModelPaths:
    vlm: Path
    clip: Path
    # A wider tiny Qwen2.5-VL that fine-tuning can teach (DESCRIBER_MODEL=tiny-trainable): see
    # _trainable_vlm_config for why the default one cannot learn to tell diagrams apart.
    trainable_vlm: Path


def tiny_model_paths(directory: Path) -> TinyModelPaths:
    directory = Path(directory)
    return TinyModelPaths(
        vlm=directory / "qwen2_5_vl", clip=directory / "clip", trainable_vlm=directory / "qwen2_5_vl_trainable"
    )


def is_tiny_model(source: str | Path) -> bool:
    return (Path(source) / MARKER_FILE).is_file()


def ensure_tiny_models(directory: Path) -> TinyModelPaths:
    """Return the tiny models in ``directory``, building them only if one is missing."""
    paths = tiny_model_paths(directory)
    if all(is_tiny_model(path) for path in (paths.vlm, paths.clip, paths.trainable_vlm)):
        return paths
    return build_tiny_models(directory)


def build_tiny_models(directory: Path) -> TinyModelPaths:
    """(Re)build both tiny models into ``directory``; deterministic for a given library version.

    Each model is written to a temporary folder and renamed into place, so a concurrent reader
    sees either no model or a complete one.
    """
    paths = tiny_model_paths(directory)
    paths.vlm.parent.mkdir(parents=True, exist_ok=True)
    # fork_rng: seeding must not change the caller's global random state.
    with torch.random.fork_rng(devices=[]), tempfile.TemporaryDirectory(dir=paths.vlm.parent) as scratch:
        models = ((_save_tiny_vlm, paths.vlm), (_save_tiny_clip, paths.clip), (_save_trainable_vlm, paths.trainable_vlm))
        for save, target in models:
            built = Path(scratch) / target.name
            torch.manual_seed(SEED)
            save(built)
            _write_marker(built)
            _replace_dir(built, target, Path(scratch) / f"{target.name}.old")
    return paths


def _write_marker(target: Path) -> None:
    note = {"built_by": __name__, "seed": SEED, "warning": "Random weights: this model writes nonsense."}
    (target / MARKER_FILE).write_text(json.dumps(note, indent=2) + "\n")


def _replace_dir(source: Path, target: Path, trash: Path) -> None:
    if target.exists():
        target.rename(trash)  # removed with the scratch folder
    try:
        source.rename(target)
    except OSError:
        # A concurrent build put its (identical) model in place first: keep that one.
        if not is_tiny_model(target):
            raise


# --- Tokenizer ---------------------------------------------------------------------------


def _train_byte_level_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a small byte-level BPE on the built-in corpus; return (vocab, merges) without specials."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    # Qwen2Tokenizer's own pre-tokenizer, so the trained merges fit the tokenizer that uses them.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB_SIZE,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(TOKENIZER_CORPUS, trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(merge.split(" ", 1)) if isinstance(merge, str) else tuple(merge) for merge in model["merges"]]
    return model["vocab"], merges


def _qwen_vocab(trained: dict[str, int]) -> dict[str, int]:
    """Qwen's added tokens first (ids 0-21; the real model has them after its 151k tokens), then
    the trained tokens sorted.

    The trainer's id order is not guaranteed between runs; ids must be stable, or saved weights
    would mean different tokens after the next build.
    """
    added = QWEN_SPECIAL_TOKENS + QWEN_PLAIN_ADDED_TOKENS
    ordered = list(added) + sorted(token for token in trained if token not in added)
    return {token: index for index, token in enumerate(ordered)}


def build_tiny_qwen_tokenizer(vocab_size: int | None = None) -> Qwen2Tokenizer:
    """The tiny tokenizer; with ``vocab_size``, padded with filler words (" w123") to that many ids,
    so that every id a full-size random model writes decodes to some text."""
    from transformers import Qwen2Tokenizer

    trained_vocab, merges = _train_byte_level_bpe()
    vocab = _qwen_vocab(trained_vocab)
    for filler in range(vocab_size - len(vocab) if vocab_size else 0):
        vocab[f"\u0120w{filler}"] = len(vocab)  # \u0120 is the byte-level space
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        extra_special_tokens=list(QWEN_SPECIAL_TOKENS[1:]),
        model_max_length=32768,
    )
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False) for token in QWEN_PLAIN_ADDED_TOKENS])
    return tokenizer


# --- Tiny Qwen2.5-VL --------------------------------------------------------------------------


def _tiny_vlm_config(tokenizer: Qwen2Tokenizer) -> Qwen2_5_VLConfig:
    from transformers import Qwen2_5_VLConfig

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 32768,
            # head_dim 16: the three M-RoPE sections (time, height, width) must sum to 16 / 2.
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
            # Larger than the default 0.02: greedy decoding then writes varied nonsense instead
            # of repeating one token, which makes streaming visible in the UI and in tests.
            "initializer_range": 0.2,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [1],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,  # as in the real 3B model
    )


def _tiny_generation_config(tokenizer: Qwen2Tokenizer) -> GenerationConfig:
    from transformers import GenerationConfig

    # Like the real model's generation_config.json: stop at <|im_end|> or <|endoftext|>, and
    # sampling settings that the runtime must override to decode greedily.
    end_of_text = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    return GenerationConfig(
        bos_token_id=end_of_text,
        pad_token_id=end_of_text,
        eos_token_id=[tokenizer.convert_tokens_to_ids("<|im_end|>"), end_of_text],
        do_sample=True,
        temperature=0.1,
        top_p=0.001,
        top_k=1,
        repetition_penalty=1.05,
    )


def _trainable_vlm_config(tokenizer: Qwen2Tokenizer) -> Qwen2_5_VLConfig:
    """The tiny model, 256 wide, with a vision tower whose random features tell diagrams apart.

    The default tiny vision tower (32 wide, weights of std 0.02) gives any two diagrams features
    with a cosine of at least 0.991 (measured on 16 generated ones): the image barely reaches the
    text model, so an adapter learns the descriptions but cannot tell which image is which (node F1
    stayed near 0.6 whatever the rank or rate). 64 wide at std 1.0: at least 0.966, and after
    removing what all share, the images stand apart; 16 diagrams are then learnt in ~30 s.
    """
    config = _tiny_vlm_config(tokenizer)
    text = config.text_config
    text.hidden_size, text.intermediate_size, text.head_dim = 256, 512, 64
    # head_dim 64: the M-RoPE sections must sum to 32.
    text.rope_parameters = {**text.rope_parameters, "mrope_section": [8, 12, 12]}
    text.initializer_range = 0.1
    vision = config.vision_config
    vision.hidden_size, vision.intermediate_size, vision.out_hidden_size = 64, 128, 256
    vision.initializer_range = 1.0
    return config


def _save_tiny_vlm(target: Path, config_of=None) -> None:
    from transformers import Qwen2_5_VLForConditionalGeneration

    tokenizer = build_tiny_qwen_tokenizer()
    model = Qwen2_5_VLForConditionalGeneration((config_of or _tiny_vlm_config)(tokenizer))
    model.generation_config = _tiny_generation_config(tokenizer)
    # transformers 5 ties embeddings only inside from_pretrained: tie before saving.
    model.tie_weights()
    model.save_pretrained(target)
    _qwen_processor(tokenizer).save_pretrained(target)


def _save_trainable_vlm(target: Path) -> None:
    _save_tiny_vlm(target, _trainable_vlm_config)


def _qwen_processor(tokenizer: Qwen2Tokenizer) -> Qwen2_5_VLProcessor:
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    return Qwen2_5_VLProcessor(
        # The real model's bounds; the runtime narrows them at load time (DESCRIBER_MAX_PIXELS).
        image_processor=Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=28 * 28 * 16384),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),  # mandatory for the processor, even unused
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
    )


# --- Tiny CLIP (sentence-transformers layout) -----------------------------------------------


def _tiny_clip_tokenizer() -> CLIPTokenizer:
    from transformers import CLIPTokenizer

    # Byte-level characters with and without the end-of-word suffix, no merges: text still
    # encodes (one token a character), which is all a random model needs.
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = ["<|startoftext|>", "<|endoftext|>", *alphabet, *(char + "</w>" for char in alphabet)]
    return CLIPTokenizer(vocab={token: index for index, token in enumerate(tokens)}, merges=[], model_max_length=77)


def _save_hf_clip(target: Path, text_sizes: dict, vision_sizes: dict, image_processor: Any) -> None:
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    tokenizer = _tiny_clip_tokenizer()
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 77,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            **text_sizes,
        },
        vision_config=vision_sizes,
        # Same width as clip-ViT-B-32, so embeddings fit the same vector(512) column.
        projection_dim=512,
    )
    CLIPModel(config).save_pretrained(target)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(target)


def _save_tiny_clip(target: Path) -> None:
    from transformers import CLIPImageProcessor

    _save_sentence_transformers_clip(
        target,
        text_sizes={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2},
        vision_sizes={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
    )


def _save_sentence_transformers_clip(target: Path, text_sizes: dict, vision_sizes: dict, image_processor: Any) -> None:
    from sentence_transformers import SentenceTransformer

    hf_dir = target.with_name(target.name + "-hf")
    _save_hf_clip(hf_dir, text_sizes, vision_sizes, image_processor)
    # Loading the plain transformers folder lets sentence-transformers pick its CLIP modules;
    # saving writes them in its own layout (modules.json ...), like clip-ViT-B-32.
    SentenceTransformer(str(hf_dir), device="cpu").save(str(target))
    shutil.rmtree(hf_dir)


# --- The real architectures with random weights (benchmarks only) -----------------------------

QWEN2_5_VL_3B_VOCAB = 151936


def qwen2_5_vl_3b_config(tokenizer: Qwen2Tokenizer) -> Qwen2_5_VLConfig:
    """Qwen/Qwen2.5-VL-3B-Instruct's configuration, with the special-token ids of ``tokenizer``."""
    from transformers import Qwen2_5_VLConfig

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": QWEN2_5_VL_3B_VOCAB,
            "hidden_size": 2048,
            "intermediate_size": 11008,
            "num_hidden_layers": 36,
            "num_attention_heads": 16,
            "num_key_value_heads": 2,
            "max_position_embeddings": 128000,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
            "sliding_window": 32768,
            "use_sliding_window": False,
            "max_window_layers": 70,
            "hidden_act": "silu",
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 32,
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "out_hidden_size": 2048,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [7, 15, 23, 31],
            "tokens_per_second": 2,
            "hidden_act": "silu",
            "in_chans": 3,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def build_random_qwen2_5_vl_3b(directory: Path, *, device: str = "cpu") -> Path:
    """Save Qwen2.5-VL-3B's architecture with random weights (bf16) into ``directory``, for benchmarks.

    Same classes, configuration and generation settings as the real model, so loading, memory and
    speed are the real ones; the text is nonsense. ``device="cuda"`` initialises the ~3.75 B weights
    on the GPU, in seconds instead of minutes.
    """
    from transformers import Qwen2_5_VLForConditionalGeneration

    directory = Path(directory)
    tokenizer = build_tiny_qwen_tokenizer(vocab_size=QWEN2_5_VL_3B_VOCAB)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        with torch.device(device):
            model = Qwen2_5_VLForConditionalGeneration(qwen2_5_vl_3b_config(tokenizer))
    model.to(torch.bfloat16)
    model.generation_config = _tiny_generation_config(tokenizer)
    model.tie_weights()
    model.save_pretrained(directory)
    _qwen_processor(tokenizer).save_pretrained(directory)
    return directory


def build_random_clip_vit_b32(directory: Path) -> Path:
    """clip-ViT-B-32's architecture (ViT-B/32 at 224 pixels, 512-wide text tower and projection) with
    random weights, in the sentence-transformers layout, for benchmarks."""
    from transformers import CLIPImageProcessor

    directory = Path(directory)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        _save_sentence_transformers_clip(
            directory,
            text_sizes={
                "vocab_size": 49408,  # the real tokenizer's; the tiny one uses the first few hundred ids
                "hidden_size": 512,
                "intermediate_size": 2048,
                "num_hidden_layers": 12,
                "num_attention_heads": 8,
            },
            vision_sizes={
                "hidden_size": 768,
                "intermediate_size": 3072,
                "num_hidden_layers": 12,
                "num_attention_heads": 12,
                "image_size": 224,
                "patch_size": 32,
            },
            image_processor=CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}),
        )
    return directory
