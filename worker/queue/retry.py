"""How long a failed job waits before its next try: one backoff for every job kind."""


def backoff_seconds(job_try: int) -> float:
    """1, 2, 4 … capped at 5 minutes."""
    return float(min(2 ** max(job_try - 1, 0), 300))


class RetryLater(Exception):
    """Raised by a job to run again after ``defer_seconds`` (any other exception is final)."""

    def __init__(self, defer_seconds: float) -> None:
        super().__init__(f"retry in {defer_seconds} s")
        self.defer_seconds = defer_seconds
