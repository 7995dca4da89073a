"""User-facing errors: one line that names the input and says how to fix it."""

from __future__ import annotations


class PicketError(Exception):
    """An error caused by the user's input; the CLI prints it as one line and exits with 2."""

    def __init__(self, subject: object, problem: str, fix: str) -> None:
        self.subject = str(subject)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.subject}: {problem}; {fix}")
