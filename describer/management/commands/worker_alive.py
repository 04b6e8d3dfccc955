"""`manage.py worker_alive`: exit 0 when a worker on this host has reported within
DESCRIBER_STALE_AFTER_S (the worker container's healthcheck), 1 otherwise."""

from __future__ import annotations

import socket

from django.core.management import BaseCommand, CommandError

from describer.models import Worker


class Command(BaseCommand):
    help = "Exit 0 if a worker on this host has reported recently (its heartbeat), 1 if not."

    def handle(self, *args, **options):
        host = socket.gethostname()
        worker = Worker.objects.online().filter(host=host).first()
        if worker is None:
            raise CommandError(f"No worker on {host} has reported recently.")
        self.stdout.write(f"{worker.name}: last seen {worker.last_seen_at:%H:%M:%S}, {worker.jobs_in_hand} jobs in hand")
