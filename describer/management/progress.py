"""A text progress bar for management commands, with no dependency.

On a terminal it redraws one line; on a log (Docker, CI, tests) it writes a line at about
every tenth of the work, so the log stays short.
"""

from __future__ import annotations


class TextProgress:
    def __init__(self, stream, label: str, *, width: int = 30) -> None:
        self.stream = stream  # a command's OutputWrapper (self.stderr)
        self.label = label
        self.width = width
        self.is_terminal = bool(getattr(stream, "isatty", lambda: False)())
        self.last_tenth = -1

    def __call__(self, done: int, total: int, item: str = "") -> None:
        if self.is_terminal:
            filled = self.width * done // max(total, 1)
            bar = "#" * filled + "." * (self.width - filled)
            self.stream.write(f"\r{self.label} [{bar}] {done}/{total} {item[:40]:<40}", ending="")
            if done == total:
                self.stream.write("")
            return
        tenth = 10 * done // max(total, 1)
        if tenth != self.last_tenth or done == total:
            self.last_tenth = tenth
            self.stream.write(f"{self.label}: {done}/{total}")
