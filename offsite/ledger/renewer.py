"""A run's host lease kept alive for as long as the run lives, whatever it is doing.

rq keeps a job alive from its worker's monitor loop, not from inside the job; so does this: a
`LeaseKeeper` thread, started when a run takes its host lease and ended when it releases it,
renews the lease every `lease_ttl / RENEWALS_PER_TTL` seconds. Hashing staging, listing and
tagging the target, duplicity, a drill's compare and its clean-up all run under the same
renewal, with or without a child process.

What the keeper does when a renewal does not succeed:
- the lease store cannot be reached: logged once, tried again at the next period (a broker
  blip must not kill a healthy upload; the lease outlives up to RENEWALS_PER_TTL - 1 missed
  renewals);
- the lease is gone and nobody holds it (this process stalled, Redis restarted without its
  data): re-taken, if the run's record is still running, and said in the log;
- another run holds it, or the run's record is already final (the watchdog settled it): the
  keeper stops for good and `lost` says why. The run's next check (`renew`, called at each
  step, each tick of a child and each batch of hashed files) then fails, so the run stops
  where it is instead of writing over another run's work.

`RenewingLease` is the HostLease a process hands its runs: acquire starts a keeper, release
ends it, renew answers from the keeper without a round trip.
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager, nullcontext
from typing import Callable, ContextManager, Iterator

from offsite.constants import LEASE_RENEWALS_PER_TTL, RunState
from offsite.errors import OffsiteError
from offsite.ledger.lease import HostLease

log = logging.getLogger(__name__)

RENEWALS_PER_TTL = LEASE_RENEWALS_PER_TTL

RunStateOf = Callable[[str], "RunState | None"]   # a run's current state (None: no record)


class LeaseLost(OffsiteError):
    """The run no longer holds its host lease (another run took the host, or its record was
    made final meanwhile): it must stop where it is and write nothing more."""

    failure_class = "run_lost"


def renewal_period(ttl_s: float) -> float:
    return max(0.2, ttl_s / RENEWALS_PER_TTL)


class LeaseKeeper:
    """A daemon thread renewing one run's lease until stopped (see the module's docstring)."""

    def __init__(self, lease: HostLease, host: str, run_id: str, ttl_s: float,
                 state_of: RunStateOf | None = None,
                 idle_s: Callable[[], float] | None = None) -> None:
        self.lease = lease
        self.ttl_s = ttl_s
        self.idle_s = idle_s
        self.host = host
        self.run_id = run_id
        self.period_s = renewal_period(ttl_s)
        self.state_of = state_of
        self.lost: str | None = None
        self.renewals = 0
        self.retaken = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{run_id}", daemon=True)

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.period_s + 5)

    @property
    def alive(self) -> bool:
        return self.lost is None

    def check(self, step: str | None = None) -> None:
        """Raises LeaseLost once the keeper has given the lease up."""
        if self.lost is not None:
            raise LeaseLost(f"run {self.run_id} {self.lost}", host=self.host, step=step)

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self.period_s):
            if self.idle_s is not None and self.idle_s() > self.ttl_s:
                self.lost = ("ran no step in this process for lease_ttl (its next task never "
                             "came?): its lease is left to lapse")
                log.error("run %s: %s", self.run_id, self.lost)
                return
            try:
                self.renew_once()
                if failing:
                    log.info("run %s: host lease renewed again", self.run_id)
                failing = False
            except Exception as exc:  # the lease's store is unreachable: tried at the next period
                if not failing:
                    log.warning("run %s: cannot renew the host lease: %s", self.run_id, exc)
                failing = True
            if self.lost is not None:
                log.error("run %s: %s; the run stops", self.run_id, self.lost)
                return

    def renew_once(self) -> None:
        """One renewal; sets `lost` when the lease cannot be kept."""
        if self.lease.renew(self.host, self.run_id):
            self.renewals += 1
            return
        holder = self.lease.holder(self.host)
        if holder is not None and holder != self.run_id:
            self.lost = f"lost its host lease to run {holder}"
            return
        state = self.state_of(self.run_id) if self.state_of else None
        if state is not None and state not in (RunState.QUEUED, RunState.RUNNING):
            self.lost = f"is already {state.value}"
            return
        if self.lease.acquire(self.host, self.run_id):
            self.retaken += 1
            log.warning("run %s: the host lease had lapsed and nobody held it: re-taken",
                        self.run_id)
        else:
            self.lost = f"lost its host lease to run {self.lease.holder(self.host)}"


class RenewingLease:
    """A HostLease whose acquire starts a LeaseKeeper for the run and release ends it; renew
    is the keeper's word (no round trip). A run adopted by this process after a restart (its
    lease still held) gets a keeper at its first renew. Safe to share between threads."""

    def __init__(self, inner: HostLease, ttl_s: float,
                 state_of: RunStateOf | None = None) -> None:
        self.inner = inner
        self.ttl_s = ttl_s
        self.state_of = state_of
        self._keepers: dict[tuple[str, str], LeaseKeeper] = {}
        self._busy: dict[tuple[str, str], int] = {}
        self._idle_since: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def keeper(self, host: str, run_id: str) -> LeaseKeeper | None:
        with self._lock:
            return self._keepers.get((host, run_id))

    def _keep(self, host: str, run_id: str) -> None:
        with self._lock:
            current = self._keepers.get((host, run_id))
            if current is not None and current.alive:
                return
            self._idle_since.setdefault((host, run_id), time.monotonic())
            self._keepers[(host, run_id)] = LeaseKeeper(
                self.inner, host, run_id, self.ttl_s, self.state_of,
                lambda: self.idle_s(host, run_id)).start()

    @contextmanager
    def working(self, host: str, run_id: str) -> Iterator[None]:
        """While inside, the run is working in this process: its keeper renews whatever the
        work does. Between two of its tasks (a step ended, the next not begun) the keeper
        renews for at most lease_ttl: a run whose next task never comes is left to lapse and
        the watchdog finds it lost, as before keepers."""
        key = (host, run_id)
        with self._lock:
            self._busy[key] = self._busy.get(key, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._busy[key] -= 1
                if not self._busy[key]:
                    del self._busy[key]
                    self._idle_since[key] = time.monotonic()

    def idle_s(self, host: str, run_id: str) -> float:
        """How long the run has not been working here (0 while it is)."""
        with self._lock:
            if (host, run_id) in self._busy:
                return 0.0
            return time.monotonic() - self._idle_since.get((host, run_id), time.monotonic())

    def acquire(self, host: str, run_id: str) -> bool:
        if not self.inner.acquire(host, run_id):
            return False
        self._keep(host, run_id)
        return True

    def renew(self, host: str, run_id: str) -> bool:
        current = self.keeper(host, run_id)
        if current is not None:
            return current.alive
        if not self.inner.renew(host, run_id):
            return False
        self._keep(host, run_id)
        return True

    def release(self, host: str, run_id: str) -> None:
        with self._lock:
            current = self._keepers.pop((host, run_id), None)
            self._idle_since.pop((host, run_id), None)
        if current is not None:
            current.stop()
        self.inner.release(host, run_id)   # only deletes the lease while it is this run's

    def holder(self, host: str) -> str | None:
        return self.inner.holder(host)

    def running(self) -> int:
        """How many keepers this process runs (for tests and the log)."""
        with self._lock:
            return sum(1 for keeper in self._keepers.values() if keeper.alive)


def keep_working(lease: HostLease, host: str, run_id: str) -> ContextManager[None]:
    """`RenewingLease.working` for a lease that keeps runs alive (itself, or one it holds as
    `shared`, as a local command's lease does); nothing for the others."""
    for candidate in (lease, getattr(lease, "shared", None)):
        if isinstance(candidate, RenewingLease):
            return candidate.working(host, run_id)
    return nullcontext()
