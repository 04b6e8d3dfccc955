"""The inference package on real (tiny, random) models, loaded through the production code.

No database: these tests only need the models that ``describer.inference.tiny`` builds.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from django.core.management import call_command
from PIL import Image, ImageDraw

from describer.inference.errors import GenerationTimeout, InferenceError, ModelUnavailable, OutOfMemory
from describer.inference.loading import load_clip, load_vlm, resolve_model_sources
from describer.inference.runtime import DescriberRuntime, GenerationRequest
from describer.inference.tiny import build_tiny_models, ensure_tiny_models, is_tiny_model
from tests.conftest import SMALL_IMAGE_PIXELS

MAX_PIXELS = SMALL_IMAGE_PIXELS
RUSSIAN = "Опиши диаграмму: блок «Старт» → узел «Проверка», затем ёлка и Съешь ещё булок!"


@pytest.fixture
def runtime(small_image_runtime) -> DescriberRuntime:
    return small_image_runtime


def diagram(label: str = "Start", size: tuple[int, int] = (640, 400)) -> Image.Image:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((40, 40, 240, 120), outline="black", width=3)
    draw.text((60, 70), label, fill="black")
    draw.line((240, 80, 400, 80), fill="black", width=3)
    return image


def describe_request(image: Image.Image | None = None, *, max_new_tokens: int = 24, min_new_tokens: int = 16):
    content: list[dict] = [{"type": "image", "image": image}] if image is not None else []
    content.append({"type": "text", "text": "Describe this diagram."})
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "You describe diagrams."}]},
        {"role": "user", "content": content},
    ]
    return GenerationRequest(messages=messages, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens)


def generate_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "describer-generate" and thread.is_alive()]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- Building the tiny models ------------------------------------------------------------------


def test_it_builds_the_same_models_every_time(tiny_paths, tmp_path):
    again = build_tiny_models(tmp_path)

    for name in ("model.safetensors", "tokenizer.json"):
        assert digest(again.vlm / name) == digest(tiny_paths.vlm / name)
        assert digest(again.clip / name) == digest(tiny_paths.clip / name)
    assert is_tiny_model(again.vlm) and is_tiny_model(again.clip)


def test_it_builds_missing_models_only_once(tmp_path):
    built = ensure_tiny_models(tmp_path)
    before = (built.vlm / "model.safetensors").stat().st_mtime_ns

    assert ensure_tiny_models(tmp_path) == built
    assert (built.vlm / "model.safetensors").stat().st_mtime_ns == before


def test_the_command_builds_both_models_and_warns_they_write_nonsense(tmp_path):
    out = io.StringIO()
    call_command("make_tiny_models", str(tmp_path), stdout=out)

    assert str(tmp_path / "qwen2_5_vl") in out.getvalue()
    assert str(tmp_path / "clip") in out.getvalue()
    assert "nonsense" in out.getvalue()
    assert is_tiny_model(tmp_path / "qwen2_5_vl") and is_tiny_model(tmp_path / "clip")


# --- Tokenizer and chat template ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text", [RUSSIAN, "A flowchart: Start --> Check {valid?} 12.5%", "Смешанный mixed текст\n\tok"]
)
def test_it_round_trips_russian_and_english_text_through_the_tokenizer(runtime, text):
    tokenizer = runtime.processor.tokenizer
    ids = tokenizer(text)["input_ids"]

    assert tokenizer.decode(ids) == text
    assert len(ids) < len(text.encode())  # merges were learned for both languages


def test_it_keeps_qwen_special_tokens_whole(runtime):
    tokenizer = runtime.processor.tokenizer

    for token in ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>"):
        assert tokenizer.convert_ids_to_tokens(tokenizer(token)["input_ids"]) == [token]
    assert runtime.model.config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")


def test_it_renders_prompts_with_qwens_chat_template(runtime):
    messages = [{"role": "user", "content": [{"type": "image", "image": diagram()}, {"type": "text", "text": "Hi"}]}]

    prompt = runtime.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    assert prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Hi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


# --- Embeddings ----------------------------------------------------------------------------------


def test_it_embeds_an_image_as_a_normalised_512_vector(runtime):
    vector = runtime.embed_image(diagram())

    assert len(vector) == 512
    assert all(isinstance(value, float) for value in vector)
    assert sum(value * value for value in vector) == pytest.approx(1.0, abs=1e-5)


def test_it_embeds_the_same_image_the_same_way(runtime):
    first = runtime.embed_image(diagram("Start"))

    assert runtime.embed_image(diagram("Start")) == pytest.approx(first, abs=1e-6)
    assert runtime.embed_image(diagram("Start").convert("L")) == pytest.approx(first, abs=1e-6)
    assert runtime.embed_image(Image.new("RGB", (640, 400), "navy")) != pytest.approx(first, abs=1e-3)


def test_it_embeds_text_in_the_same_512_space(runtime):
    vector = runtime.embed_text("a flowchart with two boxes")

    assert len(vector) == 512
    assert sum(value * value for value in vector) == pytest.approx(1.0, abs=1e-5)
    assert runtime.embed_text("a flowchart with two boxes") == pytest.approx(vector, abs=1e-6)


# --- Generation ----------------------------------------------------------------------------------


def test_it_streams_non_empty_text_chunks(runtime):
    chunks = list(runtime.stream(describe_request(diagram())))

    assert chunks and all(isinstance(chunk, str) and chunk for chunk in chunks)
    assert "".join(chunks).strip()


def test_it_decodes_greedily_so_two_runs_are_equal(runtime):
    request = describe_request(diagram(), max_new_tokens=20, min_new_tokens=20)

    assert "".join(runtime.stream(request)) == "".join(runtime.stream(request))


def test_it_streams_answers_to_text_only_requests(runtime):
    assert "".join(runtime.stream(describe_request(None))).strip()


def test_it_bounds_the_pixels_the_model_sees(runtime):
    inputs = runtime.prepare_inputs([describe_request(diagram(size=(4000, 3000)))])

    patches = int(inputs["image_grid_thw"].prod())  # one patch covers 14x14 pixels
    assert patches * 14 * 14 <= MAX_PIXELS
    assert patches * 14 * 14 > MAX_PIXELS // 2


def test_it_left_pads_a_batch_of_requests(runtime):
    short = describe_request(None)
    long = GenerationRequest(
        messages=[{"role": "user", "content": [{"type": "text", "text": "Describe " * 30}]}], max_new_tokens=8
    )

    inputs = runtime.prepare_inputs([short, long, describe_request(diagram())])

    mask = inputs["attention_mask"]
    assert mask.shape[0] == 3
    assert mask[0, 0] == 0 and mask[:, -1].all()  # every row ends where generation continues
    assert inputs["image_grid_thw"].shape[0] == 1


def test_it_raises_a_timeout_for_a_deadline_in_the_past(runtime):
    with pytest.raises(GenerationTimeout, match="time limit"):
        list(runtime.stream(describe_request(diagram()), deadline=time.monotonic() - 1))


@pytest.mark.timeout(60)
def test_it_stops_at_the_deadline_after_streaming_what_it_had(runtime):
    request = describe_request(None, max_new_tokens=1000, min_new_tokens=1000)
    chunks: list[str] = []
    started = time.monotonic()

    with pytest.raises(GenerationTimeout) as raised:
        for chunk in runtime.stream(request, deadline=started + 0.5):
            chunks.append(chunk)

    assert time.monotonic() - started < 10
    assert chunks
    assert isinstance(raised.value, InferenceError)
    assert not generate_threads()


@pytest.mark.timeout(60)
def test_it_raises_errors_from_the_generate_thread_instead_of_hanging(runtime):
    invalid = describe_request(diagram(), max_new_tokens=0, min_new_tokens=0)

    with pytest.raises(ValueError, match="max_new_tokens"):
        list(runtime.stream(invalid))
    assert not generate_threads()


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [{"role": "user", "content": 42}],
        [{"role": "user", "content": [{"type": "image", "image": "file:///tmp/diagram.png"}]}],
    ],
)
def test_it_rejects_malformed_messages(runtime, messages):
    with pytest.raises(ValueError):
        list(runtime.stream(GenerationRequest(messages=messages, max_new_tokens=8)))


@pytest.mark.timeout(60)
def test_it_stops_generating_when_the_consumer_stops_reading(runtime):
    stream = runtime.stream(describe_request(None, max_new_tokens=1000, min_new_tokens=1000))

    assert next(stream)
    stream.close()

    assert not generate_threads()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_it_turns_cuda_out_of_memory_into_a_readable_error_and_recovers(runtime):
    outcomes = []
    for spare_mib in (64, 32, 16, 8, 4):  # where exactly it runs out depends on the card
        torch.cuda.empty_cache()
        free, _ = torch.cuda.mem_get_info()
        blocker = torch.empty(free - spare_mib * 2**20, dtype=torch.uint8, device="cuda")
        try:
            "".join(runtime.stream(describe_request(diagram(size=(4000, 3000)))))
            outcomes.append("ok")
        except OutOfMemory as error:
            outcomes.append("out of memory")
            assert "MODEL_MAX_VRAM" in str(error)
        finally:
            del blocker

    assert "out of memory" in outcomes
    assert "".join(runtime.stream(describe_request(diagram())))
    assert not generate_threads()


# --- Loading and settings -----------------------------------------------------------------------


def test_it_reports_a_missing_model_path_by_name(tmp_path):
    missing = tmp_path / "no-such-model"

    with pytest.raises(ModelUnavailable) as vlm_error:
        load_vlm(str(missing), max_vram="1GiB", max_ram="1GiB", quantization="nf4", cache_dir="")
    with pytest.raises(ModelUnavailable) as clip_error:
        load_clip(str(missing), cache_dir="")

    assert str(missing) in str(vlm_error.value) and "DESCRIBER_MODEL" in str(vlm_error.value)
    assert str(missing) in str(clip_error.value) and "CLIP_MODEL" in str(clip_error.value)
    assert "make_tiny_models" in str(vlm_error.value)


def test_it_reports_an_unloadable_folder_in_one_line(tmp_path):
    (tmp_path / "config.json").write_text("{not json")

    with pytest.raises(ModelUnavailable) as raised:
        load_vlm(str(tmp_path), max_vram="1GiB", max_ram="1GiB", quantization="nf4", cache_dir="")

    assert str(tmp_path) in str(raised.value)
    assert "\n" not in str(raised.value) and "Traceback" not in str(raised.value)


def test_it_refuses_a_model_of_another_architecture(tiny_paths):
    with pytest.raises(ModelUnavailable, match="'clip' model, not 'qwen2_5_vl'"):
        load_vlm(str(tiny_paths.clip), max_vram="1GiB", max_ram="1GiB", quantization="nf4", cache_dir="")


def test_it_uses_the_hub_models_by_default(settings):
    settings.DESCRIBER_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"
    settings.CLIP_MODEL = "clip-ViT-B-32"

    assert resolve_model_sources() == ("Qwen/Qwen2.5-VL-3B-Instruct", "clip-ViT-B-32")


def test_it_loads_the_tiny_models_when_settings_say_tiny(settings, tmp_path):
    settings.DESCRIBER_MODEL = "tiny"
    settings.TINY_MODELS_DIR = tmp_path

    loaded = DescriberRuntime.from_settings()

    assert resolve_model_sources() == (str(tmp_path / "qwen2_5_vl"), str(tmp_path / "clip"))
    assert loaded.is_tiny and "tiny" in loaded.model_name
    assert loaded.device == "cpu"
    assert len(loaded.embed_image(diagram())) == 512


def test_it_keeps_torch_out_of_the_web_process():
    code = (
        "import sys, describer.inference, describer.inference.errors; "
        "heavy = [name for name in ('torch', 'transformers') if name in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)
