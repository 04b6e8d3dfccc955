"""`runworker describer-gpu`: Channels' runworker, plus the model runtime, the job loop and the
heartbeat for the describer channel. Other channels run unchanged."""

from __future__ import annotations

import logging
import os
import signal

from channels.management.commands.runworker import Command as ChannelsRunworker
from django.conf import settings
from django.core.management import CommandError

from describer import worker

log = logging.getLogger("describer.worker")


class Command(ChannelsRunworker):
    help = "Run a Channels worker; for the describer-gpu channel, load the models and run conversions."
    worker_class = worker.ResilientWorker

    def handle(self, *args, **options):
        if settings.WORKER_CHANNEL not in options["channels"]:
            return super().handle(*args, **options)
        problems = worker.timing_problems()
        if problems:
            raise CommandError("The worker's timing settings contradict each other:\n- " + "\n- ".join(problems))
        # Only the worker process imports torch, and only here. Expandable segments keep the
        # allocator's reserve close to what is allocated, so MODEL_MAX_VRAM holds (set before CUDA starts).
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
        from describer.inference.errors import InferenceError
        from describer.inference.runtime import DescriberRuntime

        log.info("loading models (DESCRIBER_MODEL=%s, CLIP_MODEL=%s)", settings.DESCRIBER_MODEL, settings.CLIP_MODEL)
        try:
            runtime = DescriberRuntime.from_settings(adapter=worker.initial_adapter())
            worker.note_adapter_served(runtime)
        except InferenceError as error:
            # Stay up and fail each job with the reason, so users see it on their pages.
            log.error("models unavailable: %s", error)
            runtime = worker.UnavailableRuntime(error)
        worker.current_loop = loop = worker.JobLoop(runtime)
        signal.signal(signal.SIGTERM, self.on_sigterm)
        loop.start()
        try:
            super().handle(*args, **options)
        except KeyboardInterrupt:
            pass
        finally:
            # Let the running jobs notice, give them back to the queue, and exit.
            loop.stop()
            loop.join(timeout=30)

    def on_sigterm(self, signum, frame):
        raise KeyboardInterrupt
