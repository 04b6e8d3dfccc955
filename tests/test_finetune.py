"""Fine-tuning (`manage.py finetune`, describer/inference/finetune.py) and serving adapters
(describer/adapters.py, the worker), on the tiny trainable model (DESCRIBER_MODEL=tiny-trainable)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.db import connection

from describer import adapters
from describer.graph.generate import manifest_entry, plan_item
from describer.graph.images import render_png
from describer.api.tokens import api_token_create
from describer.models import Adapter, Conversion
from tests.test_api import Api

ROOT = Path(__file__).resolve().parent.parent
# The tiny trainable model learns 16 small diagrams in 72 passes (3 epochs of 24, about 70 s).
LEARN = ["--no-examples", "--validation-share", "0", "--rank", "32", "--alpha", "32", "--learning-rate", "3e-3",
         "--dropout", "0", "--patience", "2"]  # fmt: skip


def write_generated_set(folder: Path, count: int = 16, max_nodes: int = 6) -> list:
    """`count` small generated diagrams drawn by Pillow, in make_diagram_set's layout."""
    folder.mkdir(parents=True, exist_ok=True)
    plans, entries, index = [], [], 0
    while len(plans) < count:
        plan = plan_item(3, index)
        index += 1
        if len(plan.graph.nodes) > max_nodes:
            continue
        (folder / f"{plan.name}.json").write_text(plan.graph.model_dump_json(), encoding="utf-8")
        (folder / f"{plan.name}.txt").write_text(plan.text, encoding="utf-8")
        entry = manifest_entry(plan) | {"image": f"{plan.name}.png", "split": "train"}
        (folder / entry["image"]).write_bytes(render_png(plan.graph, scale=1.0))
        entries.append(entry)
        plans.append(plan)
    (folder / "manifest.json").write_text(json.dumps({"items": entries}), encoding="utf-8")
    return plans


@pytest.fixture
def trainable(settings, tiny_models_dir, tmp_path):
    settings.DESCRIBER_MODEL = "tiny-trainable"
    settings.TINY_MODELS_DIR = Path(tiny_models_dir)
    settings.DESCRIBER_MAX_PIXELS = 64 * 28 * 28
    settings.ADAPTERS_DIR = tmp_path / "adapters"
    settings.DESCRIBER_ADAPTER = ""
    settings.DESCRIBER_OCR = False
    settings.DESCRIBER_MIN_NEW_TOKENS = 0
    settings.DESCRIBER_MAX_NEW_TOKENS = 360  # the longest of the 16 answers is 324 tokens
    settings.DESCRIBER_STREAM_INTERVAL_MS = 50
    return settings


def evaluate(folder: Path, out: Path, *args) -> dict:
    call_command("evaluate", str(folder), "--split", "all", "--json", str(out), *args, stdout=open(os.devnull, "w"))
    return json.loads(out.read_text())["summary"]["overall"]


def finetune(*args) -> str:
    from io import StringIO

    stdout = StringIO()
    call_command("finetune", *args, stdout=stdout, stderr=StringIO())
    return stdout.getvalue()


def run_job(runtime, job_id) -> Conversion:
    from describer.jobs import claim
    from describer.pipeline import JobRunner
    from describer.progress import Broadcaster

    broadcaster = Broadcaster()
    try:
        [job] = claim("test")
        assert job.pk == job_id
        JobRunner(runtime, broadcaster).run(job)
    finally:
        broadcaster.close()
    job.refresh_from_db()
    return job


# --- Point 3: learning 16 diagrams, then serving them -----------------------------------------


@pytest.mark.django_db
def test_fine_tuning_teaches_16_diagrams_and_the_worker_then_writes_them(trainable, tmp_path, client, user):
    from describer import worker
    from describer.inference.runtime import DescriberRuntime

    plans = write_generated_set(tmp_path / "set")
    before = evaluate(tmp_path / "set", tmp_path / "before.json", "--base-model")
    assert before["items"] == 16
    assert before["node_f1"] < 0.2 and before["edge_f1"] < 0.1, before

    output = finetune("--generated", str(tmp_path / "set"), "--epochs", "3", "--repeats", "24", *LEARN)
    assert "epoch 1: loss" in output and "validation node F1" in output
    [adapter] = Adapter.objects.all()
    folder = Path(adapter.path)
    assert folder.name == "v0001" and not adapter.is_active
    report = json.loads((folder / "report.json").read_text())
    assert report["complete"] and report["base_fingerprint"] == adapters.base_fingerprint(adapters.configured_base())
    assert report["data"] == {"sha256": report["data"]["sha256"], "training": 16, "validation": 16,
                              "validation_is_training_set": True}  # fmt: skip
    assert report["settings"]["method"] == "LoRA, float32 base on the CPU" and report["settings"]["rank"] == 32
    assert len(report["epochs"]) >= 1 and report["seconds"] > 0 and report["best"]["validation"]["node_f1"] >= 0.9

    after = evaluate(tmp_path / "set", tmp_path / "after.json", "--adapter", str(folder))
    assert after["node_f1"] >= 0.9 and after["edge_f1"] >= 0.9, after

    # A worker started with DESCRIBER_ADAPTER, and the ordinary job path: upload → page.
    trainable.DESCRIBER_ADAPTER = str(folder)
    runtime = DescriberRuntime.from_settings(adapter=worker.initial_adapter())
    worker.note_adapter_served(runtime)
    client.force_login(user)
    plan = plans[0]
    image = (tmp_path / "set" / f"{plan.name}.png").read_bytes()
    client.post("/upload/", {"image": SimpleUploadedFile("flow.png", image, "image/png"), "language": plan.graph.language})
    job = run_job(runtime, Conversion.objects.get().pk)
    assert job.status == Conversion.Status.DONE, job.error_message
    assert job.adapter_id == adapter.pk and job.adapter_name.startswith("v0001 (")
    assert "tiny" in job.model_name
    labels = [node.label for node in plan.graph.nodes if node.label]
    page = client.get(f"/c/{job.pk}/").content.decode()
    assert all(label in page for label in labels), labels
    assert "with the fine-tuned adapter v0001" in page
    api = Api(api_token_create(user=user, name="tests")[1]).get(f"/conversions/{job.pk}").json()
    assert api["adapter"] == job.adapter_name and api["model_name"] == job.model_name


# --- Point 5: bad input ---------------------------------------------------------------------

QUICK = ["--epochs", "1", "--repeats", "1", *LEARN]


@pytest.fixture
def quick_adapter(trainable, tmp_path):
    """A real adapter of the tiny trainable model, trained for one pass over 4 diagrams."""
    write_generated_set(tmp_path / "four", count=4)
    finetune("--generated", str(tmp_path / "four"), *QUICK)
    return Adapter.objects.get()


@pytest.mark.django_db
def test_too_few_samples_and_missing_images_are_refused_before_any_training(trainable, tmp_path):
    write_generated_set(tmp_path / "three", count=3)
    with pytest.raises(CommandError, match=r"Only 3 sample\(s\) to learn from; fine-tuning needs at least 4"):
        finetune("--generated", str(tmp_path / "three"), *QUICK)
    plans = write_generated_set(tmp_path / "five", count=5)
    (tmp_path / "five" / f"{plans[2].name}.png").unlink()
    with pytest.raises(CommandError, match=rf"1 image\(s\) are missing, so nothing was trained: .*{plans[2].name}\.png"):
        finetune("--generated", str(tmp_path / "five"), *QUICK)
    with pytest.raises(CommandError, match="has no manifest.json"):
        finetune("--generated", str(tmp_path), *QUICK)
    assert not Adapter.objects.exists() and not list((tmp_path / "adapters").glob("v*"))


@pytest.mark.django_db
def test_a_half_written_or_foreign_adapter_never_passes_its_checks(quick_adapter, tmp_path):
    folder = Path(quick_adapter.path)
    assert adapters.check(folder).name == "v0001"

    def broken(change) -> Path:
        copy = tmp_path / f"copy{len(list(tmp_path.glob('copy*')))}"
        shutil.copytree(folder, copy)
        change(copy)
        return copy

    report = json.loads((folder / "report.json").read_text())
    cases = {
        "the training did not finish": broken(lambda copy: (copy / "report.json").unlink()),
        "does not say the adapter is complete": broken(
            lambda copy: (copy / "report.json").write_text(json.dumps({**report, "complete": False}))),
        "is cut off": broken(lambda copy: _truncate(copy / adapters.WEIGHTS_FILE)),
        "adapter_config.json is missing": broken(lambda copy: (copy / adapters.CONFIG_FILE).unlink()),
        "not the file the training wrote": broken(lambda copy: _flip_last_byte(copy / adapters.WEIGHTS_FILE)),
        "was trained on another-model, not on the model this site serves": broken(
            lambda copy: (copy / "report.json").write_text(
                json.dumps({**report, "base_model": "another-model", "base_fingerprint": "0" * 64}))),
    }  # fmt: skip
    for reason, copy in cases.items():
        with pytest.raises(adapters.AdapterProblem, match=reason):
            adapters.check(copy)
    partial = tmp_path / "v0009.partial"
    shutil.copytree(folder, partial)
    with pytest.raises(adapters.AdapterProblem, match="is an unfinished training run"):
        adapters.check(partial)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.django_db(transaction=True)
def test_a_run_killed_halfway_is_never_served_and_resumes_from_its_last_epoch(trainable, tmp_path):
    write_generated_set(tmp_path / "four", count=4)
    args = ["--generated", str(tmp_path / "four"), "--epochs", "3", "--repeats", "2", *LEARN]
    env = {**os.environ, "DESCRIBER_MODEL": "tiny-trainable", "TINY_MODELS_DIR": str(trainable.TINY_MODELS_DIR),
           "DESCRIBER_MAX_PIXELS": str(trainable.DESCRIBER_MAX_PIXELS), "ADAPTERS_DIR": str(trainable.ADAPTERS_DIR),
           "POSTGRES_DB": connection.settings_dict["NAME"], "DJANGO_SETTINGS_MODULE": "diagramsite.settings"}  # fmt: skip
    process = subprocess.Popen([sys.executable, "manage.py", "finetune", *args], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    state = trainable.ADAPTERS_DIR / "v0001.partial" / "checkpoint" / "trainer_state.pt"
    try:
        deadline = time.monotonic() + 120
        while not state.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert state.exists(), "the run wrote no checkpoint"
    finally:
        process.send_signal(signal.SIGKILL)  # killed halfway: after its first epoch, before its last
        process.wait()
    run_dir = state.parent.parent
    assert not (trainable.ADAPTERS_DIR / "v0001").exists()
    with pytest.raises(adapters.AdapterProblem, match="unfinished training run"):
        adapters.check(run_dir)
    assert not Adapter.objects.exists()

    with pytest.raises(CommandError, match="was started with other settings"):
        finetune(*args[:-len(LEARN)], *LEARN[:-2], "--patience", "3", "--resume")
    output = finetune(*args, "--resume")
    report = json.loads((trainable.ADAPTERS_DIR / "v0001" / "report.json").read_text())
    assert [figures["epoch"] for figures in report["epochs"]][0] == 1  # from the killed run
    assert "epoch 1:" not in output  # not trained again
    assert Adapter.objects.get().name == "v0001" and not run_dir.exists()
    with pytest.raises(CommandError, match="no unfinished run"):
        finetune(*args, "--resume")


# --- Point 2: staff switch the adapter; running workers follow between jobs --------------------


@pytest.mark.django_db
def test_staff_switch_the_adapter_in_the_admin_and_the_worker_follows_between_jobs(
    quick_adapter, trainable, client, staff_user, user, tmp_path
):
    from describer import worker
    from describer.inference.runtime import DescriberRuntime
    from describer.pipeline import JobRunner
    from describer.progress import Broadcaster

    runtime = DescriberRuntime.from_settings(adapter=worker.initial_adapter())
    assert runtime.adapter is None  # none active, no DESCRIBER_ADAPTER: the base model
    loop = worker.JobLoop(runtime)
    runner = JobRunner(runtime, Broadcaster())
    loop.follow_adapter_choice(runner)
    assert runtime.adapter is None

    client.force_login(staff_user)
    changelist = "/admin/describer/adapter/"
    response = client.post(changelist, {"action": "make_active", "_selected_action": [quick_adapter.pk]}, follow=True)
    assert "v0001 is now active" in response.content.decode().lower()  # the admin capitalises messages
    loop.follow_adapter_choice(runner)
    assert runtime.adapter.name == "v0001" and runtime.adapter_id == quick_adapter.pk
    assert runtime.load_seconds["merge_s"] >= 0 and (Path(quick_adapter.path) / "merged" / "config.json").is_file()

    client.force_login(user)
    client.post("/upload/", {"image": SimpleUploadedFile("flow.png", render_png(plan_item(3, 1).graph, scale=1.0), "image/png")})
    job = run_job(runtime, Conversion.objects.get().pk)
    assert job.status == Conversion.Status.DONE and job.adapter_id == quick_adapter.pk
    assert not job.examples_used.exists()  # the adapter's short prompt has no retrieved examples

    client.force_login(staff_user)
    client.post(changelist, {"action": "serve_base_model", "_selected_action": [quick_adapter.pk]})
    loop.follow_adapter_choice(runner)
    assert runtime.adapter is None and runtime.adapter_id is None

    # An adapter made for another model is refused in the admin, and changes nothing.
    foreign = tmp_path / "foreign"
    shutil.copytree(quick_adapter.path, foreign, ignore=shutil.ignore_patterns("merged"))
    report = json.loads((foreign / "report.json").read_text())
    (foreign / "report.json").write_text(json.dumps({**report, "base_model": "Qwen/Other", "base_fingerprint": "f" * 64}))
    other = Adapter.objects.create(name="foreign", path=str(foreign), base_model="Qwen/Other", weights_sha256="f" * 64)
    response = client.post(changelist, {"action": "make_active", "_selected_action": [other.pk]}, follow=True)
    assert "foreign was not made active" in response.content.decode().lower()
    assert "trained on qwen/other" in response.content.decode().lower()
    other.refresh_from_db()
    assert not other.is_active and "trained on Qwen/Other" in other.problem

    # One whose checks pass but whose weights do not load: the model before it comes back.
    quick_adapter.activate()
    loop.follow_adapter_choice(runner)
    assert runtime.adapter.name == "v0001"
    unloadable = tmp_path / "unloadable"
    shutil.copytree(quick_adapter.path, unloadable, ignore=shutil.ignore_patterns("merged"))
    config = json.loads((unloadable / adapters.CONFIG_FILE).read_text())
    (unloadable / adapters.CONFIG_FILE).write_text(json.dumps({**config, "target_modules": "no_such_layer"}))
    Adapter.register(adapters.check(unloadable)).activate()
    loop.follow_adapter_choice(runner)
    assert runtime.adapter.name == "v0001" and runtime.adapter_id == quick_adapter.pk and runtime.model is not None
    assert not Adapter.objects.get(path=str(unloadable)).is_active
    assert Adapter.objects.get(path=str(unloadable)).problem.startswith(f"The adapter {unloadable} could not be merged into")
    client.post(changelist, {"action": "serve_base_model", "_selected_action": [quick_adapter.pk]})
    loop.follow_adapter_choice(runner)

    # One that breaks after it was made active: the worker refuses it and goes on serving.
    quick_adapter.activate()
    _truncate(Path(quick_adapter.path) / adapters.WEIGHTS_FILE)
    loop.follow_adapter_choice(runner)
    assert runtime.adapter is None
    quick_adapter.refresh_from_db()
    assert not quick_adapter.is_active and "is cut off" in quick_adapter.problem
    runner.broadcaster.close()


@pytest.mark.django_db
def test_the_admin_shows_the_training_report(quick_adapter, client, staff_user):
    client.force_login(staff_user)
    page = client.get(f"/admin/describer/adapter/{quick_adapter.pk}/change/").content.decode()
    assert "LoRA, float32 base on the CPU" in page and "epoch 1" in page and quick_adapter.weights_sha256 in page
    assert 'name="_save"' not in page and 'name="_continue"' not in page  # nothing on it can be edited


@pytest.mark.django_db
def test_running_out_of_gpu_memory_stops_with_advice_and_keeps_the_finished_epochs(trainable, tmp_path, monkeypatch):
    import torch

    from describer.inference import finetune as training

    write_generated_set(tmp_path / "four", count=4)
    real_epoch, calls = training._train_epoch, []

    def second_epoch_runs_out(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(training, "_train_epoch", second_epoch_runs_out)
    with pytest.raises(CommandError, match="The GPU ran out of memory in epoch 2.*run again with --resume"):
        finetune("--generated", str(tmp_path / "four"), "--epochs", "2", *LEARN)
    assert (trainable.ADAPTERS_DIR / "v0001.partial" / "checkpoint" / "trainer_state.pt").is_file()
    assert not Adapter.objects.exists()
