"""A text progress bar for long management commands, written to stderr so that stdout
keeps only the summary line (and stays easy to parse)."""

from __future__ import annotations

import sys


class Progress:
    def __init__(self, total: int, *, label: str, stream=None, width: int = 30):
        self.total, self.label, self.width = max(total, 0), label, width
        self.stream = stream or sys.stderr
        self.done = 0

    def advance(self, n: int) -> None:
        self.done += n
        shown = min(self.done, self.total) if self.total else self.done
        filled = int(self.width * shown / self.total) if self.total else self.width
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {shown}/{self.total}")
        self.stream.flush()

    def close(self) -> None:
        if self.done:
            self.stream.write("\n")
            self.stream.flush()
