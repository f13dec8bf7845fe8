"""The Markdown view of a run's results (bench/results/*.md): differences and ratios against
the direct-to-stub baseline measured in the same run, and the targets of performance.md."""

from __future__ import annotations

from typing import Any

TARGET_CPU_MS = 10.0
TARGET_QUERIES = 15
TARGET_RSS_MIB = 150.0
TARGET_FIRST_DELTA_MS = 10.0


def _get(row: dict[str, Any] | None, *path: str) -> Any:
    value: Any = row
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _diff(a: Any, b: Any) -> float | None:
    if a is None or b is None:
        return None
    return round(a - b, 2)


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        value = f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
    return f"{value}{unit}"


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "**not met**")


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The figures the targets are about, computed from the raw results."""
    s1 = results.get("scenarios", {}).get("1", {})
    c1, c16 = s1.get("c1", {}), s1.get("c16", {})
    figures: dict[str, Any] = {}
    figures["added_p50_c1"] = _diff(
        _get(c1, "pantheon", "latency_ms", "p50"), _get(c1, "direct_stream", "latency_ms", "p50")
    )
    figures["added_p99_c1"] = _diff(
        _get(c1, "pantheon", "latency_ms", "p99"), _get(c1, "direct_stream", "latency_ms", "p99")
    )
    figures["litellm_added_p50_c1"] = _diff(
        _get(c1, "litellm", "latency_ms", "p50"), _get(c1, "direct_json", "latency_ms", "p50")
    )
    figures["litellm_added_p99_c1"] = _diff(
        _get(c1, "litellm", "latency_ms", "p99"), _get(c1, "direct_json", "latency_ms", "p99")
    )
    figures["cpu_ms_c1"] = _get(c1, "pantheon", "cpu_ms_per_request_server")
    figures["cpu_ms_c16"] = _get(c16, "pantheon", "cpu_ms_per_request_server")
    figures["db_cpu_ms_c1"] = _get(c1, "pantheon", "cpu_ms_per_request_db")
    figures["litellm_cpu_ms_c1"] = _get(c1, "litellm", "cpu_ms_per_request_server")
    figures["litellm_cpu_ms_c16"] = _get(c16, "litellm", "cpu_ms_per_request_server")
    figures["rps_c16"] = _get(c16, "pantheon", "requests_per_s")
    figures["litellm_rps_c16"] = _get(c16, "litellm", "requests_per_s")
    # From the c=1 load: at c=16 failed requests (cheap 5xx) would flatter the figure.
    cpu = figures["cpu_ms_c1"] or figures["cpu_ms_c16"]
    figures["capacity_per_core"] = round(1000 / cpu, 1) if cpu else None
    lcpu = figures["litellm_cpu_ms_c1"] or figures["litellm_cpu_ms_c16"]
    figures["litellm_capacity_per_core"] = round(1000 / lcpu, 1) if lcpu else None
    figures["rss_peak_mib"] = _get(results, "server_rss_end", "peak_mib")
    figures["rss_after_s1_mib"] = _get(s1, "rss_after", "peak_mib")
    figures["pss_per_worker_mib"] = {
        count: row.get("pss_per_worker_mib") for count, row in (results.get("memory") or {}).items()
    }
    s3 = results.get("scenarios", {}).get("3", {})
    if s3.get("available"):
        figures["first_delta_added_p50"] = _diff(
            _get(s3, "pantheon", "first_event_ms", "p50"),
            _get(s3, "direct_stream", "first_event_ms", "p50"),
        )
        figures["stream_total_added_p50"] = _diff(
            _get(s3, "pantheon", "latency_ms", "p50"),
            _get(s3, "direct_stream", "latency_ms", "p50"),
        )
    queries = _get(results, "scenarios", "4", "queries", "by_history") or {}
    figures["queries"] = {name: row.get("turn_queries") for name, row in queries.items()}
    return figures


def render(results: dict[str, Any]) -> str:
    meta = results.get("meta", {})
    machine = meta.get("machine", {})
    scenarios = results.get("scenarios", {})
    h = headline(results)
    lines = [
        f"# Pantheon bench — run {meta.get('started_at', '?')}",
        "",
        f"Machine: {machine.get('cpus')} CPUs ({machine.get('cpu_model')}), Python "
        f"{machine.get('python')}, PostgreSQL {machine.get('postgresql')}, commit "
        f"{machine.get('git_commit')}. Server: {meta.get('server')}. Scale {meta.get('scale')}, "
        f"time cap {meta.get('time_cap_s')} s per load, {meta.get('total_s')} s in all. "
        f"Load average at start {machine.get('load_average_at_start')}, at end "
        f"{machine.get('load_average_at_end')} (other processes on the machine share its cores: "
        "compare figures within a run, not across runs).",
        "",
    ]
    if results.get("failed"):
        lines += [f"**The run failed:** `{results['failed']}`", ""]

    litellm = _get(scenarios, "1", "litellm") or {}
    ran_litellm = bool(litellm.get("available"))
    lines += [
        "## Targets (performance.md)",
        "",
        "| measure | Pantheon | target | verdict |",
        "|---|---|---|---|",
    ]
    if ran_litellm and h["added_p50_c1"] is not None and h["litellm_added_p50_c1"]:
        half = h["litellm_added_p50_c1"] / 2
        ok: bool | None = h["added_p50_c1"] <= half
        target = f"≤ {half:.1f} ms (half of LiteLLM's {h['litellm_added_p50_c1']:.1f} ms)"
    else:
        ok, target = None, "≤ half of LiteLLM's (LiteLLM not run)"
    lines.append(
        f"| added latency p50, c=1 | {_fmt(h['added_p50_c1'], ' ms')} | {target} | {_verdict(ok)} |"
    )
    cpu = h["cpu_ms_c1"]
    lines.append(
        f"| server CPU per turn (c=1 / c=16) | {_fmt(cpu, ' ms')} / "
        f"{_fmt(h['cpu_ms_c16'], ' ms')} | ≤ {TARGET_CPU_MS:.0f} ms | "
        f"{_verdict(None if cpu is None else cpu <= TARGET_CPU_MS)} |"
    )
    if ran_litellm and h["capacity_per_core"] and h["litellm_capacity_per_core"]:
        ratio = h["capacity_per_core"] / h["litellm_capacity_per_core"]
        lines.append(
            f"| throughput per worker (CPU-bound capacity: 1000 / CPU ms per request at c=1) | "
            f"{h['capacity_per_core']} req/s ({ratio:.2f}x LiteLLM's "
            f"{h['litellm_capacity_per_core']}) | ≥ 2x LiteLLM's | {_verdict(ratio >= 2)} |"
        )
        rps, lrps = h["rps_c16"], h["litellm_rps_c16"]
        lines.append(
            f"| throughput per worker, measured at c=16 (2 cores shared with the load "
            f"generator, stub and PostgreSQL) | {rps} req/s ({rps / lrps:.2f}x LiteLLM's {lrps}) "
            f"| ≥ 2x LiteLLM's | {_verdict(rps / lrps >= 2)} |"
        )
    else:
        lines.append(
            f"| throughput per worker (CPU-bound capacity) | "
            f"{_fmt(h['capacity_per_core'], ' req/s')} | ≥ 2x LiteLLM's "
            f"(LiteLLM not run) | - |"
        )
    if "first_delta_added_p50" in h:
        fd = h["first_delta_added_p50"]
        lines.append(
            f"| streaming: added time to first delta p50 | {_fmt(fd, ' ms')} | "
            f"≤ {TARGET_FIRST_DELTA_MS:.0f} ms | "
            f"{_verdict(None if fd is None else fd <= TARGET_FIRST_DELTA_MS)} |"
        )
    else:
        reason = _get(scenarios, "3", "reason") or "not run"
        lines.append(
            f"| streaming: added time to first delta p50 | not available ({reason}) | "
            f"≤ {TARGET_FIRST_DELTA_MS:.0f} ms | - |"
        )
    q = h["queries"]
    if q:
        counts = [c for name in ("10", "10000") for c in (q.get(name) or [])]
        flat = (q.get("10") == q.get("10000")) if counts else None
        small = max(counts) <= TARGET_QUERIES if counts else None
        shown = ", ".join(f"{name}: {'/'.join(map(str, v or []))}" for name, v in q.items())
        lines.append(
            f"| DB queries per single-agent turn (by prior messages) | {shown} | "
            f"≤ {TARGET_QUERIES}, same at 10 and 10,000 | "
            f"{_verdict(None if small is None else bool(small and flat))} |"
        )
    rss = h["rss_peak_mib"]
    lines.append(
        f"| resident memory, web worker (peak after s1 / whole run) | "
        f"{_fmt(h['rss_after_s1_mib'], ' MiB')} / {_fmt(rss, ' MiB')} | "
        f"≤ {TARGET_RSS_MIB:.0f} MiB | "
        f"{_verdict(None if rss is None else rss <= TARGET_RSS_MIB)} |"
    )
    pss = {count: v for count, v in h["pss_per_worker_mib"].items() if v is not None}
    if pss:
        lines.append(
            "| memory per web worker, PSS with the preloaded master's share "
            f"({' / '.join(f'{c} workers' for c in pss)}) | "
            f"{' / '.join(_fmt(v, ' MiB') for v in pss.values())} | "
            f"≤ {TARGET_RSS_MIB:.0f} MiB | "
            f"{_verdict(max(pss.values()) <= TARGET_RSS_MIB)} |"
        )
    lines.append("")
    lines += _memory_section(results)

    if "1" in scenarios:
        s1 = scenarios["1"]
        lines += [
            "## Scenario 1 — single-agent turn, short history",
            "",
            "Latencies are client-side (loopback). *direct stream* is the call Pantheon itself "
            "makes upstream (`stream: true` with usage, read whole); *direct JSON* is the "
            "non-streaming call LiteLLM makes. CPU is the serving process's utime+stime per "
            "request sent (failed ones included); *db* is the PostgreSQL backends of the bench "
            "database.",
            "",
            "| c | target | p50 ms | p90 ms | p99 ms | req/s | server CPU ms/req | "
            "db CPU ms/req | stub CPU ms/req | ok/done |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in ("c1", "c16"):
            for name in ("direct_json", "direct_stream", "pantheon", "litellm"):
                row = _get(s1, c, name)
                if not row:
                    continue
                lat = row.get("latency_ms") or {}
                lines.append(
                    f"| {c[1:]} | {name.replace('_', ' ')} | {_fmt(lat.get('p50'))} | "
                    f"{_fmt(lat.get('p90'))} | {_fmt(lat.get('p99'))} | "
                    f"{_fmt(row.get('requests_per_s'))} | "
                    f"{_fmt(row.get('cpu_ms_per_request_server'))} | "
                    f"{_fmt(row.get('cpu_ms_per_request_db'))} | "
                    f"{_fmt(row.get('cpu_ms_per_request_stub'))} | "
                    f"{row.get('requests_ok')}/{row.get('requests_done')} |"
                )
        lines.append("")
        for c in ("c1", "c16"):
            added50 = _diff(
                _get(s1, c, "pantheon", "latency_ms", "p50"),
                _get(s1, c, "direct_stream", "latency_ms", "p50"),
            )
            added99 = _diff(
                _get(s1, c, "pantheon", "latency_ms", "p99"),
                _get(s1, c, "direct_stream", "latency_ms", "p99"),
            )
            text = f"- c={c[1:]}: Pantheon adds **{_fmt(added50)} ms** p50, {_fmt(added99)} ms p99"
            l50 = _diff(
                _get(s1, c, "litellm", "latency_ms", "p50"),
                _get(s1, c, "direct_json", "latency_ms", "p50"),
            )
            if l50 is not None:
                l99 = _diff(
                    _get(s1, c, "litellm", "latency_ms", "p99"),
                    _get(s1, c, "direct_json", "latency_ms", "p99"),
                )
                text += f"; LiteLLM adds **{_fmt(l50)} ms** p50, {_fmt(l99)} ms p99"
                if added50 and l50:
                    text += f" (Pantheon/LiteLLM = {added50 / l50:.2f})"
            lines.append(text + ".")
        if litellm.get("available"):
            lines.append(
                f"- LiteLLM {litellm.get('version')}: peak RSS "
                f"{_fmt(litellm.get('peak_rss_mib'), ' MiB')}."
            )
        elif litellm.get("requested"):
            lines.append(f"- LiteLLM skipped: {litellm.get('skipped')}")
        else:
            lines.append("- LiteLLM not requested (`--with-litellm`).")
        lines.append("")

    if "2" in scenarios:
        s2 = scenarios["2"]
        p = _get(s2, "pantheon", "latency_ms", "p50")
        d = _get(s2, "direct_stream_x3", "latency_ms", "p50")
        per_call = round((p - d) / 3, 2) if p is not None and d is not None else None
        lines += [
            "## Scenario 2 — round table, 3 agents (3 upstream calls per turn)",
            "",
            f"- Pantheon turn p50 {_fmt(p)} ms "
            f"(p99 {_fmt(_get(s2, 'pantheon', 'latency_ms', 'p99'))} ms), "
            f"3 direct calls in a row p50 {_fmt(d)} ms → **added per agent call: "
            f"{_fmt(per_call)} ms** (p50).",
            f"- Server CPU per turn {_fmt(_get(s2, 'pantheon', 'cpu_ms_per_request_server'))} ms "
            f"(per agent call "
            f"{_fmt(_per3(_get(s2, 'pantheon', 'cpu_ms_per_request_server')))} ms); "
            f"{_get(s2, 'pantheon', 'requests_ok')}/{_get(s2, 'pantheon', 'requests_done')} ok.",
            "",
        ]

    if "3" in scenarios:
        s3 = scenarios["3"]
        lines += ["## Scenario 3 — streaming turn (SSE)", ""]
        if s3.get("available"):
            lines += [
                f"- Time to first `agent.delta` p50 "
                f"{_fmt(_get(s3, 'pantheon', 'first_event_ms', 'p50'))} ms vs first upstream "
                f"delta direct {_fmt(_get(s3, 'direct_stream', 'first_event_ms', 'p50'))} ms → "
                f"**added {_fmt(h.get('first_delta_added_p50'))} ms**; total p50 "
                f"{_fmt(_get(s3, 'pantheon', 'latency_ms', 'p50'))} ms vs "
                f"{_fmt(_get(s3, 'direct_stream', 'latency_ms', 'p50'))} ms → added "
                f"{_fmt(h.get('stream_total_added_p50'))} ms.",
                f"- Server CPU per streamed turn "
                f"{_fmt(_get(s3, 'pantheon', 'cpu_ms_per_request_server'))} ms.",
                "",
            ]
        else:
            lines += [
                f"- Not available: {s3.get('reason')}. The scenario runs by itself once "
                "the server answers `Accept: text/event-stream` with SSE.",
                "",
            ]

    if "4" in scenarios:
        s4 = scenarios["4"]
        lines += [
            "## Scenario 4 — history growth",
            "",
            "Sessions with 10, 1,000 and 10,000 prior messages (bulk-written turns and messages "
            "plus a ready summary covering all but the last 4 turns). HTTP latency over the "
            "served app; queries and preparation time in-process (`bench/queries.py`, Django "
            "test client under `CaptureQueriesContext`).",
            "",
            "| prior messages | HTTP p50 ms | HTTP p99 ms | server CPU ms/turn | "
            "queries per turn | queries to prepare the prompt | prepare ms (median) | "
            "history messages in prompt |",
            "|---|---|---|---|---|---|---|---|",
        ]
        byq = _get(s4, "queries", "by_history") or {}
        for size in ("short", "10", "1000", "10000"):
            row = s4.get(size) or {}
            q = byq.get(size) or {}
            if not row and not q:
                continue
            lat = row.get("latency_ms") or {}
            lines.append(
                f"| {size} | {_fmt(lat.get('p50'))} | {_fmt(lat.get('p99'))} | "
                f"{_fmt(row.get('cpu_ms_per_request_server'))} | "
                f"{'/'.join(map(str, q.get('turn_queries') or [])) or '-'} | "
                f"{'/'.join(map(str, q.get('prepare_queries') or [])) or '-'} | "
                f"{_fmt(q.get('prepare_ms_median'))} | "
                f"{'/'.join(map(str, q.get('history_messages_in_prompt') or [])) or '-'} |"
            )
        if _get(s4, "queries", "error"):
            lines.append(f"\nqueries.py failed: `{_get(s4, 'queries', 'error')[-300:]}`")
        lines.append("")

    if "5" in scenarios:
        s5 = scenarios["5"]
        one = s5["one_session_50_posts"]
        many = s5["fifty_users"]
        ledger = s5["verify_ledger"]
        lines += [
            "## Scenario 5 — concurrency correctness",
            "",
            f"- 50 simultaneous POSTs on one session: statuses {one['statuses']} "
            f"(409 codes {one['conflict_codes']}); turn indexes {one['turn_indexes']}; "
            f"no 5xx: {one['no_5xx']}; no duplicate index: {one['no_duplicate_turn_index']}; "
            f"gap-free: {one['gap_free']}.",
            f"- 50 users x 1 session, simultaneous: statuses {many['statuses']}; all 201: "
            f"{many['all_201']}.",
            f"- `manage.py verify_ledger`: {ledger['output']} (exit {ledger['exit_code']})"
            + (f"; problems: {ledger['problems']}" if ledger["problems"] else "")
            + ".",
            f"- **{'passed' if s5['passed'] else 'FAILED'}**.",
            "",
        ]
    return "\n".join(lines)


def _memory_section(results: dict[str, Any]) -> list[str]:
    """Per-process memory: the bench's server after scenario 1, and the preloaded servers of
    the memory step (2 and 4 workers, each worker warmed by a few turns)."""
    servers = []
    after_s1 = _get(results, "scenarios", "1", "memory_after")
    if after_s1:
        servers.append(("after scenario 1", after_s1))
    for count, row in (results.get("memory") or {}).items():
        warm = row.get("warm_up") or {}
        servers.append(
            (
                f"{count} workers, warmed ({warm.get('turns')} turns, "
                f"statuses {warm.get('statuses')})",
                row,
            )
        )
    if not servers:
        return []
    lines = [
        "## Memory per process (gunicorn --preload)",
        "",
        "From `/proc/<pid>/smaps_rollup`. RSS counts every resident page, shared or not; PSS "
        "divides each shared page among the processes that share it (what a process costs "
        "with its siblings running); USS is its private pages. *PSS per worker* = PSS of the "
        "master and all workers / workers.",
        "",
        "| server | process | RSS MiB | PSS MiB | USS MiB | peak RSS MiB |",
        "|---|---|---|---|---|---|",
    ]
    for label, row in servers:
        processes = [("master", row.get("master"))]
        processes += [(f"worker {w['pid']}", w) for w in row.get("workers", [])]
        for name, m in processes:
            m = m or {}
            lines.append(
                f"| {label} | {name} | {_fmt(m.get('rss_mib'))} | {_fmt(m.get('pss_mib'))} | "
                f"{_fmt(m.get('uss_mib'))} | {_fmt(m.get('peak_rss_mib'))} |"
            )
        lines.append(
            f"| {label} | **PSS per worker** | | **{_fmt(row.get('pss_per_worker_mib'))}** "
            f"(total {_fmt(row.get('pss_total_mib'))}) | | |"
        )
    lines.append("")
    return lines


def _per3(value: Any) -> float | None:
    return None if value is None else round(value / 3, 2)
