"""Fine-tuned LoRA adapters on disk: their layout, their checks, and which one is served.

`manage.py finetune` (describer/inference/finetune.py) writes each adapter into a versioned folder
of ADAPTERS_DIR:

    v0003/                      a finished adapter
        adapter_config.json     peft's
        adapter_model.safetensors
        report.json             written last: data hash, settings, metrics, time, base model
    v0004.partial/              a run in progress, or one that was killed: never served
        checkpoint/             the last finished epoch (resumed by `finetune --resume`)

An adapter is served only once `check()` passes: the report says it is complete, the weights are
there and readable, and it was made for the base model the worker loads. The admin's choice
(`Adapter.is_active`) wins over DESCRIBER_ADAPTER, which applies while none is marked active.

No torch here: the web process (admin) checks adapters too. Django's settings are read inside the
functions that need them, so the training code also runs on the GPU machine, which has no Django.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

REPORT_FILE = "report.json"
WEIGHTS_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
PARTIAL_SUFFIX = ".partial"
# The prompt an adapter is trained and served with (describer/prompts.py).
PROMPT_STYLE = "short"
# Keys of a model's config.json that say nothing about its weights' shapes or meaning.
VOLATILE_CONFIG_KEYS = {"_name_or_path", "transformers_version", "torch_dtype", "dtype", "quantization_config",
                        "use_cache", "architectures", "output_hidden_states", "return_dict"}  # fmt: skip


class AdapterProblem(Exception):
    """An adapter that must not be served, with the reason in words."""


@dataclass(frozen=True)
class AdapterInfo:
    """A checked adapter: where it is and what its report says."""

    path: Path
    report: dict

    @property
    def name(self) -> str:
        return self.report.get("version") or self.path.name

    @property
    def weights_sha256(self) -> str:
        return self.report["weights_sha256"]

    @property
    def label(self) -> str:
        """How results name it: version and the first digits of its weights' hash."""
        return f"{self.name} ({self.weights_sha256[:12]})"


def check(path: str | Path, *, base_source: str | None = None) -> AdapterInfo:
    """The adapter at `path`, or AdapterProblem saying why it cannot be served."""
    path = Path(path).expanduser()
    if path.name.endswith(PARTIAL_SUFFIX):
        raise AdapterProblem(f"{path} is an unfinished training run (its folder ends in {PARTIAL_SUFFIX}); "
                             "finish it with `manage.py finetune --resume` or delete it.")  # fmt: skip
    if not path.is_dir():
        raise AdapterProblem(f"{path} is not a folder.")
    report = _read_json(path / REPORT_FILE, "its training report")
    if not report.get("complete"):
        raise AdapterProblem(f"{path}: the training report does not say the adapter is complete.")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise AdapterProblem(f"{path}: {name} is missing.")
    _check_safetensors(path / WEIGHTS_FILE)
    if file_sha256(path / WEIGHTS_FILE) != report.get("weights_sha256"):
        raise AdapterProblem(f"{path}: {WEIGHTS_FILE} is not the file the training wrote (its hash differs).")
    _check_base(path, report, base_source)
    return AdapterInfo(path, report)


def _check_base(path: Path, report: dict, base_source: str | None) -> None:
    """Refuse an adapter made for another base model (its layers would not fit, or fit and mean nothing)."""
    base_source = base_source if base_source is not None else configured_base()
    expected = base_fingerprint(base_source)
    if expected is None:
        return  # a hub model not downloaded yet: the worker checks again once it has loaded it
    if report.get("base_fingerprint") != expected:
        raise AdapterProblem(
            f"{path} was trained on {report.get('base_model') or 'another model'}, not on the model this site "
            f"serves ({base_source}); their architectures differ, so it cannot be used with it."
        )


def configured_base() -> str:
    """The base model the worker loads (DESCRIBER_MODEL, "tiny" resolved to its folder)."""
    from django.conf import settings

    source = (getattr(settings, "DESCRIBER_MODEL", "") or "Qwen/Qwen2.5-VL-3B-Instruct").strip()
    if source.lower() in ("tiny", "tiny-trainable"):
        folder = "qwen2_5_vl_trainable" if source.lower() == "tiny-trainable" else "qwen2_5_vl"
        return str(Path(settings.TINY_MODELS_DIR) / folder)
    return source


def base_fingerprint(source: str) -> str | None:
    """A hash of the base model's architecture (its config.json without volatile keys), or None
    when the config cannot be found without downloading."""
    config_path = _config_json(source)
    if config_path is None:
        return None
    config = json.loads(Path(config_path).read_text(encoding="utf-8"))
    return hashlib.sha256(json.dumps(_stable(config), sort_keys=True).encode()).hexdigest()


def _config_json(source: str) -> str | None:
    local = Path(source).expanduser() / "config.json"
    if local.is_file():
        return str(local)
    if Path(source).expanduser().exists():
        return None
    try:
        from django.conf import settings
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(source, "config.json", cache_dir=settings.MODEL_CACHE_DIR or None)
    except Exception:  # noqa: BLE001 - not a hub id, or no cache: nothing to compare against
        return None
    return found if isinstance(found, str) else None


def _stable(value):
    if isinstance(value, dict):
        return {key: _stable(item) for key, item in value.items() if key not in VOLATILE_CONFIG_KEYS}
    return value


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdapterProblem(f"{path.parent}: {path.name} ({what}) is missing; the training did not finish.") from None
    except (OSError, ValueError) as error:
        raise AdapterProblem(f"{path} ({what}) cannot be read: {error}.") from None
    if not isinstance(data, dict):
        raise AdapterProblem(f"{path} ({what}) is not a JSON object.")
    return data


def _check_safetensors(path: Path) -> None:
    """The header of a safetensors file parses and its tensors fit the file (a cut-off copy does not)."""
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            (header_size,) = struct.unpack("<Q", handle.read(8))
            if header_size > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(handle.read(header_size))
        end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, struct.error) as error:
        raise AdapterProblem(f"{path} is not a readable safetensors file ({error}).") from None
    if 8 + header_size + end > size:
        raise AdapterProblem(f"{path} is cut off: its tensors need {8 + header_size + end} bytes, it has {size}.")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def next_version(root: Path) -> str:
    """v0001, v0002, …: one more than any finished or unfinished run in `root`."""
    numbers = [int(name[1:5]) for name in (path.name for path in root.glob("v[0-9][0-9][0-9][0-9]*")) if name[1:5].isdigit()]
    return f"v{max(numbers, default=0) + 1:04d}"


def signature(path: str) -> tuple:
    """What changes when an adapter's files are rewritten (its report and weights)."""
    folder = Path(path)
    stats = []
    for name in (REPORT_FILE, WEIGHTS_FILE):
        try:
            stat = (folder / name).stat()
            stats.append((stat.st_mtime_ns, stat.st_size))
        except OSError:
            stats.append(None)
    return tuple(stats)


def chosen_path() -> str:
    """The folder of the adapter to serve now ("" for the base model): the one marked active in
    the admin, else DESCRIBER_ADAPTER. One cheap query, so the worker asks between jobs."""
    from django.conf import settings

    from describer.models import Adapter

    active = Adapter.objects.filter(is_active=True).values_list("path", flat=True).first()
    return active or getattr(settings, "DESCRIBER_ADAPTER", "")
