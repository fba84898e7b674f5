#!/usr/bin/env python3
"""`scripts/bench scale`: one release rollwatch watching N targets at a 1 s interval.

For each N: N/5 real containers (fewer when memory cannot hold N/5 containerd shims) (a static `pause` binary, no base image) in compose projects of
50 services, five targets per container; every target's /health is the light `health_sink`
server (measured separately), which records each probe's arrival. Over a 60 s window after a
warm-up it reads rollwatch's CPU and RSS, the CPU dockerd and containerd spend beyond their idle
rate, probes/s and missed probes and the p99 deviation of probe intervals (at the receiving end),
the size and render time of /metrics, and the store's growth, and appends the table to
docs/BENCHMARKS.md.

    scripts/bench scale [N ...]        (default: 1000 5000 10000)
"""

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = "127.0.0.1:5000"
IMAGE = f"{REGISTRY}/scale/sleeper:v1"
# Overridable to look for drift over longer runs (the table states what was used).
WINDOW_S = int(os.environ.get("ROLLWATCH_BENCH_WINDOW_S", "60"))
WARM_UP_S = int(os.environ.get("ROLLWATCH_BENCH_WARM_UP_S", "10"))
IDLE_S = 30
SHIM_MIB = 13
PER_PROJECT = 50
TARGETS_PER_CONTAINER = 5
TICKS = os.sysconf("SC_CLK_TCK")


def sh(*args, **kw):
    return subprocess.run(args, check=True, text=True, capture_output=True, **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def engine_pids():
    """dockerd, containerd and every containerd shim: the CPU the engine spends."""
    out = sh("ps", "-eo", "pid=,comm=").stdout
    return [int(p) for p, c in (l.split(None, 1) for l in out.splitlines())
            if c.strip().startswith(("dockerd", "containerd"))]


def engine_cpu():
    total = 0.0
    for pid in engine_pids():
        try:
            total += cpu_seconds(pid)
        except OSError:
            pass
    return total


def max_containers():
    """Each container costs a containerd shim of about 13 MiB (measured here): N/5 containers
    for 10,000 targets would need 26 GiB. Capped at what half the available memory holds; the
    table says how many containers each row really had."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024 // 2 // SHIM_MIB
    return 500


def build_sleeper(work):
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode == 0:
        return
    src = work / "pause.c"
    src.write_text("#include <unistd.h>\nint main(void) { for (;;) pause(); }\n")
    root = work / "rootfs"
    root.mkdir()
    sh("gcc", "-static", "-O2", "-o", str(root / "pause"), str(src))
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(["docker", "import", "-c", 'ENTRYPOINT ["/pause"]', "-", IMAGE],
                   stdin=tar.stdout, check=True, capture_output=True)
    tar.wait()


def start_containers(work, containers):
    """`containers` services in compose projects of PER_PROJECT; returns (project, service) pairs."""
    pairs = []
    projects = []
    for p in range((containers + PER_PROJECT - 1) // PER_PROJECT):
        name = f"scale{p:03d}"
        d = work / "opt" / "scale" / "staging" / name
        d.mkdir(parents=True)
        services = [f"s{i:04d}" for i in range(p * PER_PROJECT, min(containers, (p + 1) * PER_PROJECT))]
        body = "version: \"3.7\"\nservices:\n" + "".join(
            f"  {s}:\n    image: {IMAGE}\n    network_mode: host\n    labels:\n      rollwatch.bench: scale\n"
            for s in services)
        (d / "docker-compose.yml").write_text(body)
        (d / ".env").write_text(f"COMPOSE_PROJECT_NAME={name}\nIMAGE_TAG=v1\n")
        projects.append(d)
        pairs += [(name, s) for s in services]
    for d in projects:
        sh("docker-compose", "up", "-d", "--no-color", cwd=d, timeout=600)
    return pairs


def remove_containers():
    ids = sh("docker", "ps", "-aq", "--filter", "label=rollwatch.bench=scale").stdout.split()
    for i in range(0, len(ids), 200):
        subprocess.run(["docker", "rm", "-f", *ids[i:i + 200]], capture_output=True)


def write_config(work, n, pairs, sink_port, api_port):
    lines = [f'[controller]\nstore = "rollwatch.db"\nlisten = "127.0.0.1:{api_port}"\n']
    for t in range(n):
        project, service = pairs[t % len(pairs)]
        env = "staging" if t % 2 == 0 else "production"
        lines.append(
            f'[[targets]]\nenv = "{env}"\nrole = "r{t:05d}"\n'
            f'selector = {{ compose_project = "{project}", compose_service = "{service}" }}\n'
            f'health = {{ url = "http://127.0.0.1:{sink_port}/health?t={t}" }}\n'
            f'executor = {{ kind = "compose", registry = "{REGISTRY}/scale", image = "{REGISTRY}/scale/sleeper" }}\n')
    path = work / "rollwatch.toml"
    path.write_text("\n".join(lines))
    return path


def metrics_render(api_port):
    started = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/metrics", timeout=60) as r:
        body = r.read()
    return len(body), time.monotonic() - started


def store_bytes(work):
    return sum(p.stat().st_size for p in work.glob("rollwatch.db*"))


def stop(rw, sink_p):
    """rollwatch gets SIGTERM and 15 s to stop (then SIGKILL); the health server is killed."""
    rw.send_signal(signal.SIGTERM)
    try:
        rw.wait(timeout=15)
    except subprocess.TimeoutExpired:
        rw.kill()
    if sink_p.poll() is None:
        sink_p.kill()


def one(n, rollwatch, sink):
    work = Path(tempfile.mkdtemp(prefix=f"rollwatch-scale-{n}-"))
    remove_containers()
    build_sleeper(work)
    containers = max(1, min(n // TARGETS_PER_CONTAINER, max_containers()))
    t0 = time.monotonic()
    pairs = start_containers(work, containers)
    print(f"  {containers} containers up in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    sink_port, api_port = free_port(), free_port()
    config = write_config(work, n, pairs, sink_port, api_port)
    # The engine's idle rate with these containers (30 s before rollwatch starts and 30 s after
    # it stops, averaged), to subtract from its rate under rollwatch: the shims alone cost a
    # few percent of a core at 200 containers and drift by about one.
    def idle_rate():
        e0 = engine_cpu()
        time.sleep(IDLE_S)
        return (engine_cpu() - e0) / IDLE_S
    engine_idle = idle_rate()
    summary = work / "sink.json"
    sink_p = subprocess.Popen([sink, str(sink_port), str(n), "1000", str(WINDOW_S), str(summary)])
    log = open(work / "rollwatch.log", "w")
    rw = subprocess.Popen([rollwatch, "--config", str(config), "run"], stdout=log, stderr=log,
                          env={**os.environ, "RUST_LOG": "warn"})
    try:
        time.sleep(WARM_UP_S + 2)
        c0, e0, s0, w0 = cpu_seconds(rw.pid), engine_cpu(), cpu_seconds(sink_p.pid), time.monotonic()
        b0 = store_bytes(work)
        # CPU and RSS every 10 s on stderr, to see drift within the window.
        left, last, t_last = WINDOW_S - 4, c0, w0
        while left > 0:
            time.sleep(min(10, left))
            left -= 10
            c, t = cpu_seconds(rw.pid), time.monotonic()
            print(f"  t={t - w0:4.0f} s  cpu {100 * (c - last) / (t - t_last):5.1f}%  "
                  f"rss {rss_mib(rw.pid):4.0f} MiB", file=sys.stderr)
            last, t_last = c, t
        c1, e1, s1, w1 = cpu_seconds(rw.pid), engine_cpu(), cpu_seconds(sink_p.pid), time.monotonic()
        rss = rss_mib(rw.pid)
        b1 = store_bytes(work)
        size, render = metrics_render(api_port)
        sink_p.wait(timeout=120)
        probes = json.loads(summary.read_text())
        print(f"  missed probes by 5 s of the window: {probes.get('missed_by_5s')}", file=sys.stderr)
    finally:
        stop(rw, sink_p)
    engine_idle = (engine_idle + idle_rate()) / 2
    remove_containers()
    wall = w1 - w0
    return {
        "targets": n,
        "containers": containers,
        "cpu": 100 * (c1 - c0) / wall,
        "rss": rss,
        "engine": 100 * max(0.0, (e1 - e0) / wall - engine_idle),
        "sink": 100 * (s1 - s0) / wall,
        "probes_per_s": probes["probes_per_s"],
        "missed": probes["missed"] + probes["never_probed"],
        "jitter_p99": probes["jitter_p99_ms"],
        "metrics_kib": size / 1024,
        "render_ms": render * 1000,
        "store_mib_h": (b1 - b0) / wall * 3600 / 2**20,
    }


def side_by_side(n, builds, sink):
    """Every build in `builds` ([(name, binary)]) watches the same N targets at the same time,
    each probing its own health server: their CPU and RSS come from one window on one machine
    state, the only fair comparison on a machine whose speed drifts by 3x within an hour."""
    work = Path(tempfile.mkdtemp(prefix=f"rollwatch-ab-{n}-"))
    remove_containers()
    build_sleeper(work)
    containers = max(1, min(n // TARGETS_PER_CONTAINER, max_containers()))
    pairs = start_containers(work, containers)
    procs = []
    try:
        for name, binary in builds:
            d = work / name
            d.mkdir()
            sink_port, api_port = free_port(), free_port()
            config = write_config(d, n, pairs, sink_port, api_port)
            sink_p = subprocess.Popen([sink, str(sink_port), str(n), "1000", str(WINDOW_S),
                                       str(d / "sink.json")])
            log = open(d / "rollwatch.log", "w")
            rw = subprocess.Popen([binary, "--config", str(config), "run"], cwd=d, stdout=log,
                                  stderr=log, env={**os.environ, "RUST_LOG": "warn"})
            procs.append((name, rw, sink_p, d))
        time.sleep(WARM_UP_S + 2)
        start = [(cpu_seconds(rw.pid), cpu_seconds(sk.pid)) for _, rw, sk, _ in procs]
        w0 = time.monotonic()
        time.sleep(WINDOW_S - 4)
        wall = time.monotonic() - w0
        rows = []
        for (name, rw, sk, d), (c0, s0) in zip(procs, start):
            rows.append((name, 100 * (cpu_seconds(rw.pid) - c0) / wall, rss_mib(rw.pid),
                         100 * (cpu_seconds(sk.pid) - s0) / wall, d))
        for _, _, sk, _ in procs:
            sk.wait(timeout=120)
    finally:
        for _, rw, sk, _ in procs:
            stop(rw, sk)
        remove_containers()
    out = []
    for name, cpu, rss, sink_cpu, d in rows:
        probes = json.loads((d / "sink.json").read_text())
        out.append(f"| {name} | {n:,} | {containers} | {cpu:.1f}% | {rss:.0f} MiB | {sink_cpu:.1f}% "
                   f"| {probes['probes_per_s']:,.0f} | {probes['missed'] + probes['never_probed']} "
                   f"| {probes['jitter_p99_ms']} ms |")
    return out


def main_side_by_side(baseline, sizes, sink):
    sh("cargo", "build", "--release", "--quiet", "--bin", "rollwatch", "--example", "health_sink", cwd=ROOT)
    builds = [("baseline", baseline), ("this build", str(ROOT / "target/release/rollwatch"))]
    rows = []
    for n in sizes:
        print(f"side by side: {n} targets", file=sys.stderr)
        rows += side_by_side(n, builds, sink)
    table = (f"\n## Scale, side by side: {baseline} and this build ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n"
             f"Machine: {os.cpu_count()} cores, {platform.system()} {platform.release()}. "
             f"`scripts/bench scale-ab`: both builds watch the same targets in the same {WINDOW_S} s "
             "window (after a warm-up), each probing its own health server.\n\n"
             "| build | targets | containers | rollwatch CPU (one core) | RSS | health server CPU "
             "| probes/s | missed probes | probe interval jitter p99 |\n|" + "---|" * 9 + "\n"
             + "\n".join(rows) + "\n")
    print(table)
    if not os.environ.get("ROLLWATCH_BENCH_NO_APPEND"):
        with open(ROOT / "docs/BENCHMARKS.md", "a") as f:
            f.write(table)


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--side-by-side":
        sink = str(ROOT / "target/release/examples/health_sink")
        return main_side_by_side(sys.argv[2], [int(a) for a in sys.argv[3:]] or [1000], sink)
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 5000, 10000]
    # Another build can be measured the same way (an A/B on this noisy machine): then nothing
    # is built, and the health server is the one next to it if there is one.
    rollwatch = os.environ.get("ROLLWATCH_BENCH_BIN")
    sink = str(ROOT / "target/release/examples/health_sink")
    if rollwatch:
        beside = Path(rollwatch).parent / "health_sink"
        sink = str(beside) if beside.exists() else sink
    else:
        sh("cargo", "build", "--release", "--quiet", "--bin", "rollwatch", "--example", "health_sink", cwd=ROOT)
        rollwatch = str(ROOT / "target/release/rollwatch")
    rows = []
    for n in sizes:
        print(f"scale: {n} targets", file=sys.stderr)
        rows.append(one(n, rollwatch, sink))
    head = ("| targets | containers | rollwatch CPU (one core) | RSS | dockerd+containerd CPU caused "
            "| health server CPU | probes/s | missed probes | probe interval jitter p99 "
            "| /metrics size | /metrics render | store growth |\n|" + "---|" * 12)
    body = "\n".join(
        f"| {r['targets']:,} | {r['containers']:,} | {r['cpu']:.1f}% | {r['rss']:.0f} MiB | {r['engine']:.1f}% "
        f"| {r['sink']:.1f}% | {r['probes_per_s']:,.0f} | {r['missed']} | {r['jitter_p99']} ms "
        f"| {r['metrics_kib']:,.0f} KiB | {r['render_ms']:.0f} ms | {r['store_mib_h']:.1f} MiB/h |"
        for r in rows)
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    table = (f"\n## Scale: N targets at a 1 s interval ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n"
             f"Machine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}. "
             f"`scripts/bench scale`: release build, {WINDOW_S} s window after {WARM_UP_S} s warm-up, "
             f"{TARGETS_PER_CONTAINER} targets per container, compose projects of {PER_PROJECT} services; "
             "probes counted where they arrive (health_sink); engine CPU is dockerd, containerd and shims "
             f"above their idle rate with the same containers ({IDLE_S} s before and after, averaged).\n\n" + head + "\n" + body + "\n")
    print(table)
    if os.environ.get("ROLLWATCH_BENCH_NO_APPEND"):
        return
    with open(ROOT / "docs/BENCHMARKS.md", "a") as f:
        f.write(table)


if __name__ == "__main__":
    main()
