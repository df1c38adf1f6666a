"""How a long-running process (a worker, the control node, beat) ends: exit 0 only when its
supervisor stopped it (SIGTERM from systemd, SIGINT or SIGQUIT from an operator). Celery ends
a worker with exit 0 for other reasons too (a remote `shutdown`, an error it could not recover
from, reported and swallowed), and the shipped units' `Restart=on-failure` does not restart an
exit-0 process: any other end exits EXIT_UNSUPERVISED so systemd starts it again."""
from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

SUPERVISOR_SIGNALS = ("SIGTERM", "SIGINT", "SIGQUIT")
EXIT_UNSUPERVISED = 1


class StopReason:
    """Remembers whether a supervisor's signal arrived, and turns the process's end into its
    exit code."""

    def __init__(self) -> None:
        self.signal: str | None = None

    def note(self, sig: Any) -> None:
        """Called with the signal's name when a shutdown begins (Celery's worker_shutting_down
        passes 'SIGTERM', 'SIGINT' or 'SIGQUIT')."""
        name = sig if isinstance(sig, str) else getattr(sig, "name", str(sig))
        if name in SUPERVISOR_SIGNALS and self.signal is None:
            self.signal = name

    def watch_signals(self) -> None:
        """Wrap the handlers installed now for the supervisor's signals (beat installs its own
        at start): each notes the signal, then does what it did before."""
        for name in SUPERVISOR_SIGNALS:
            number = getattr(signal, name)
            previous = signal.getsignal(number)

            def handler(signum: int, frame: FrameType | None, previous: Any = previous,
                        name: str = name) -> None:
                self.note(name)
                if callable(previous):
                    previous(signum, frame)
                elif previous == signal.SIG_DFL:
                    signal.signal(signum, signal.SIG_DFL)
                    signal.raise_signal(signum)
            signal.signal(number, handler)

    def exit_code(self, role: str, code: int | None) -> int:
        """0 after a supervisor's signal (unless the process reported a failure itself), else
        non-zero with one line saying why."""
        code = code if isinstance(code, int) else 0
        if self.signal is not None:
            return code
        log.error("%s stopped without a signal from its supervisor (exit code %d); exiting %d "
                  "so that its supervisor starts it again", role, code,
                  code or EXIT_UNSUPERVISED)
        return code or EXIT_UNSUPERVISED
