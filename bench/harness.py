"""The bench's plumbing: processes it starts (and stops), what /proc says about them, and a
bounded load generator with its statistics. Loopback only: every URL built here is 127.0.0.1.

Nothing here knows Pantheon; `bench.run` puts the pieces together.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

LOOPBACK = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    """A process this bench started, in its own process group (so stopping it stops its
    children — gunicorn's workers — and nothing else)."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_service(
    name: str, argv: list[str], *, env: dict[str, str], cwd: Path, log_dir: Path
) -> Service:
    log_path = log_dir / f"{name}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(  # noqa: S603  (argv built by the bench, no shell)
        argv,
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    return Service(name=name, process=process, log_path=log_path)


def wait_until_up(service: Service, url: str, *, timeout: float = 60.0) -> None:
    """Poll `url` until it answers below 500; fail with the service's log if it dies first."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        if not service.alive():
            raise RuntimeError(f"{service.name} exited:\n{service.log_tail()}")
        try:
            response = httpx.get(url, timeout=2.0)
            if response.status_code < 500:
                return
            last_error = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last_error = str(exc)
        time.sleep(0.2)
    raise RuntimeError(
        f"{service.name} not up after {timeout}s ({last_error}):\n{service.log_tail()}"
    )


def children_of(pid: int) -> list[int]:
    """Direct children of `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces: fields start after the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def process_tree(pid: int) -> list[int]:
    pids = [pid]
    for child in children_of(pid):
        pids += process_tree(child)
    return pids


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime of these processes, in seconds (a process that is gone counts 0)."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLOCK_TICKS


def memory_kib(pid: int, field_name: str = "VmHWM") -> int | None:
    """A memory figure from /proc/<pid>/status (VmHWM = peak resident set, VmRSS = now)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field_name}:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def process_memory(pid: int) -> dict[str, Any] | None:
    """A process's memory in MiB from /proc/<pid>/smaps_rollup: `rss` (resident, shared pages
    counted in full), `pss` (each shared page divided among the processes sharing it: what the
    process costs when its siblings run too), `uss` (private pages only) and `peak_rss`
    (VmHWM). None when the process is gone."""
    kib: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            name, _, rest = line.partition(":")
            kib[name] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return None
    peak = memory_kib(pid, "VmHWM")

    def mib(value: int | None) -> float | None:
        return None if value is None else round(value / 1024, 1)

    return {
        "pid": pid,
        "rss_mib": mib(kib.get("Rss")),
        "pss_mib": mib(kib.get("Pss")),
        "uss_mib": mib(kib.get("Private_Clean", 0) + kib.get("Private_Dirty", 0)),
        "peak_rss_mib": mib(peak),
    }


# --- load ----------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One request as the client saw it. `first_event_s`: time to the first streamed event
    that matters (a text delta), when the request streams."""

    latency_s: float
    status: int
    ok: bool
    first_event_s: float | None = None
    error: str = ""


RequestFn = Callable[[httpx.Client, int, int], Sample]
"""(client, worker number, request number) -> Sample. Each worker has its own client."""


@dataclass
class CpuProbe:
    """Processes whose CPU time a load is charged with (e.g. the gunicorn worker)."""

    name: str
    pids: Callable[[], list[int]]


@dataclass
class LoadResult:
    label: str
    concurrency: int
    requests_planned: int
    samples: list[Sample] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)
    capped_by_time: bool = False

    @property
    def ok_samples(self) -> list[Sample]:
        return [s for s in self.samples if s.ok]

    def summary(self) -> dict[str, Any]:
        ok = self.ok_samples
        done = len(self.samples)
        result: dict[str, Any] = {
            "label": self.label,
            "concurrency": self.concurrency,
            "requests_planned": self.requests_planned,
            "requests_done": done,
            "requests_ok": len(ok),
            "statuses": dict(sorted(Counter(str(s.status) for s in self.samples).items())),
            "errors": sorted({s.error for s in self.samples if s.error})[:5],
            "wall_s": round(self.wall_s, 3),
            "capped_by_time": self.capped_by_time,
            "requests_per_s": round(done / self.wall_s, 1) if self.wall_s else None,
            "latency_ms": percentiles([s.latency_s for s in ok]),
        }
        first = [s.first_event_s for s in ok if s.first_event_s is not None]
        if first:
            result["first_event_ms"] = percentiles(first)
        for name, seconds in self.cpu_s.items():
            result[f"cpu_ms_per_request_{name}"] = round(seconds * 1000 / done, 2) if done else None
        return result


def percentiles(values_s: list[float]) -> dict[str, float] | None:
    """p50/p90/p99/mean/max in milliseconds (linear interpolation between ranks)."""
    if not values_s:
        return None
    ms = sorted(v * 1000 for v in values_s)

    def rank(p: float) -> float:
        if len(ms) == 1:
            return ms[0]
        k = (len(ms) - 1) * p
        lo = int(k)
        hi = min(lo + 1, len(ms) - 1)
        return ms[lo] + (ms[hi] - ms[lo]) * (k - lo)

    return {
        "p50": round(rank(0.50), 2),
        "p90": round(rank(0.90), 2),
        "p99": round(rank(0.99), 2),
        "mean": round(statistics.fmean(ms), 2),
        "max": round(ms[-1], 2),
        "n": len(ms),
    }


def run_load(
    label: str,
    request: RequestFn,
    *,
    base_url: str,
    requests: int,
    concurrency: int,
    time_cap_s: float,
    warmup: int = 0,
    cpu_probes: Iterable[CpuProbe] = (),
    client_timeout_s: float = 30.0,
) -> LoadResult:
    """Send `requests` requests from `concurrency` threads (each with its own kept-alive
    client), never past `time_cap_s`; `warmup` requests first, outside the measurement. CPU
    time of each probe's processes is read just before and just after the measured part."""
    assert base_url.startswith(f"http://{LOOPBACK}:"), "the bench talks to loopback only"
    probes = list(cpu_probes)
    clients = [
        httpx.Client(base_url=base_url, timeout=client_timeout_s) for _ in range(concurrency)
    ]
    try:
        for n in range(warmup):
            request(clients[n % concurrency], n % concurrency, -1 - n)
        result = LoadResult(label=label, concurrency=concurrency, requests_planned=requests)
        lock = threading.Lock()
        counter = iter(range(requests))
        start_barrier = threading.Barrier(concurrency + 1)
        deadline = [0.0]

        def worker(number: int) -> None:
            client = clients[number]
            start_barrier.wait()
            while True:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                if time.monotonic() > deadline[0]:
                    result.capped_by_time = True
                    return
                try:
                    sample = request(client, number, index)
                except httpx.HTTPError as exc:
                    sample = Sample(latency_s=0.0, status=0, ok=False, error=type(exc).__name__)
                with lock:
                    result.samples.append(sample)

        threads = [
            threading.Thread(target=worker, args=(n,), daemon=True) for n in range(concurrency)
        ]
        for thread in threads:
            thread.start()
        sampler = _CpuSampler(probes)
        started = time.monotonic()
        deadline[0] = started + time_cap_s
        start_barrier.wait()
        for thread in threads:
            thread.join(timeout=time_cap_s + client_timeout_s + 5)
        result.wall_s = time.monotonic() - started
        result.cpu_s = sampler.stop()
        return result
    finally:
        for client in clients:
            client.close()


class _CpuSampler:
    """CPU time of each probe's processes over a load. Processes may come and go during it (a
    database connection per request): the process list is re-read every `interval` seconds and
    each process's last seen figure counts, from zero for one that appeared during the load."""

    def __init__(self, probes: list[CpuProbe], interval: float = 0.05) -> None:
        self.probes = probes
        self.interval = interval
        self.before = {p.name: _per_pid_cpu(p.pids()) for p in probes}
        self.last = {p.name: dict(self.before[p.name]) for p in probes}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        for p in self.probes:
            self.last[p.name].update(_per_pid_cpu(p.pids()))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self._sample()
        return {
            p.name: max(
                0.0,
                sum(self.last[p.name].values()) - sum(self.before[p.name].values()),
            )
            for p in self.probes
        }


def _per_pid_cpu(pids: Iterable[int]) -> dict[int, float]:
    found = {}
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue  # gone: its last seen figure stands
        fields = stat[stat.rindex(")") + 2 :].split()
        found[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return found


def pids_with_cmdline(fragment: str) -> list[int]:
    """Processes whose command line contains `fragment` (PostgreSQL backends show their
    database in their process title: `postgres: postgres pantheon_bench 127.0.0.1(…) idle`)."""
    found = []
    needle = fragment.encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def timed_post(
    client: httpx.Client,
    path: str,
    *,
    json_body: dict[str, Any],
    headers: dict[str, str] | None = None,
    expect: int = 200,
) -> Sample:
    started = time.perf_counter()
    response = client.post(path, json=json_body, headers=headers)
    body = response.content  # read whole
    elapsed = time.perf_counter() - started
    ok = response.status_code == expect
    error = "" if ok else f"HTTP {response.status_code}: {body[:200]!r}"
    return Sample(latency_s=elapsed, status=response.status_code, ok=ok, error=error)


def timed_stream(
    client: httpx.Client,
    path: str,
    *,
    json_body: dict[str, Any],
    headers: dict[str, str],
    is_first_event: Callable[[str, str], bool],
) -> Sample:
    """POST and read a Server-Sent Events answer line by line; `first_event_s` is the time to
    the first event for which `is_first_event(event_name, data)` holds. A non-SSE answer is a
    sample with ok=False and the content type as its error."""
    started = time.perf_counter()
    first: float | None = None
    with client.stream("POST", path, json=json_body, headers=headers) as response:
        content_type = response.headers.get("content-type", "")
        if response.status_code != 200 or not content_type.startswith("text/event-stream"):
            response.read()
            return Sample(
                latency_s=time.perf_counter() - started,
                status=response.status_code,
                ok=False,
                error=f"not SSE: HTTP {response.status_code} {content_type}",
            )
        event = ""
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                if first is None and is_first_event(event, line[5:].strip()):
                    first = time.perf_counter() - started
            elif not line:
                event = ""
    elapsed = time.perf_counter() - started
    return Sample(latency_s=elapsed, status=200, ok=first is not None, first_event_s=first)


def concurrent_posts(
    base_url: str, jobs: list[tuple[str, dict[str, Any], dict[str, str]]], *, timeout_s: float
) -> list[tuple[int, Any]]:
    """Fire every (path, body, headers) POST at the same instant, one thread and one already
    connected client each; answer [(status, JSON body or text)] in job order."""
    assert base_url.startswith(f"http://{LOOPBACK}:"), "the bench talks to loopback only"
    clients = [httpx.Client(base_url=base_url, timeout=timeout_s) for _ in jobs]
    results: list[tuple[int, Any]] = [(0, None)] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def fire(n: int) -> None:
        path, body, headers = jobs[n]
        with contextlib.suppress(httpx.HTTPError):
            clients[n].get("/api/v1/health")  # connect first, so the POSTs really coincide
        barrier.wait()
        try:
            response = clients[n].post(path, json=body, headers=headers)
            try:
                payload: Any = response.json()
            except ValueError:
                payload = response.text[:300]
            results[n] = (response.status_code, payload)
        except httpx.HTTPError as exc:
            results[n] = (0, type(exc).__name__)

    threads = [threading.Thread(target=fire, args=(n,), daemon=True) for n in range(len(jobs))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=timeout_s + 10)
    finally:
        for client in clients:
            client.close()
    return results
