#!/usr/bin/env python3
"""`scripts/bench flap` and `scripts/bench soak` (issue 18): rollwatch over long runs.

    scripts/bench flap    one release `rollwatch run` watching one healthy real compose target
                          (the demo image) whose metrics source flaps: it answers, then refuses
                          connections or accepts and never answers, alternating every
                          FLAP_PERIOD_S (default 6) seconds for FLAP_MINUTES (default 10); two
                          good deploys happen during it. Shows no rollback and one log line per
                          change of the source (lost / back); a series every 30 s.
    scripts/bench soak    SOAK_TARGETS (default 100) real compose targets (one demo container
                          each) for SOAK_MINUTES (default 30): a good deploy every
                          SOAK_GOOD_EVERY_S (default 20), a bad one (health down, or crashing)
                          every SOAK_BAD_EVERY_S (default 120), and SOAK_FLAP_TARGETS (default
                          10) targets on the flapping metrics source; the others scrape their own
                          container's /metrics. A series every 60 s: RSS, open fds, store size
                          (sqlite file, -wal and -shm), deploys and rollbacks so far; at the end
                          every bad deploy must have been rolled back and no good one.

Both write their series and summary into docs/RELIABILITY.md's "Long runs" section (each its own
part, replaced at each run; ROLLWATCH_BENCH_NO_APPEND=1 to leave the file alone) and exit 1 when
a check failed. Everything runs on 127.0.0.1, ports from 15000-32000; containers carry the label
rollwatch.bench=soak-<pid> and are removed at the end, pass or fail. While a run goes,
/tmp/rollwatch-bench-running holds its pid (dockerd must not be restarted under it).
"""

import fcntl
import json
import os
import platform
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import cpu_seconds, rss_mib, sh  # noqa: E402  (shared helpers)

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = "127.0.0.1:5000"
# Each run pushes the demo images it needs under its own repository: other runs of
# scripts/build-images (other checkouts, other builds of the demo) re-point demo/backend:<tag>,
# and a container whose tag was re-pointed is listed by Docker with an image ID instead.
REPO = f"{REGISTRY}/rwbench{os.getpid()}"
GOOD_TAGS = ["v1.0.0", "v1.0.1"]
# tag -> what is wrong with it (scripts/build-images bakes the fault into the image).
BAD_TAGS = {"v1.1.0": "health down", "v1.2.0": "crashes after 2 s"}
MARKER = Path("/tmp/rollwatch-bench-running")
LABEL = f"soak-{os.getpid()}"
BAKE_S = 60
COOLDOWN_S = 600  # rollwatch's default; a target gets a second bad deploy only after it


def now():
    return time.strftime("%H:%M:%S", time.gmtime())


def log(msg):
    print(f"[{now()}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- marker, ports, processes

def marker(add):
    """Adds or removes this run's line in the marker file, leaving other lines (other benches
    write theirs) as they are; the file goes when no line is left."""
    mine = f"scripts/bench_soak.py pid {os.getpid()} since {time.strftime('%H:%M:%S UTC', time.gmtime())}"
    lock = open("/tmp/rollwatch-bench-running.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        lines = MARKER.read_text().splitlines() if MARKER.exists() else []
        lines = [l for l in lines if not l.startswith(f"scripts/bench_soak.py pid {os.getpid()} ")]
        if add:
            lines.append(mine)
        if lines:
            MARKER.write_text("\n".join(lines) + "\n")
        else:
            MARKER.unlink(missing_ok=True)
    finally:
        lock.close()


_ports_taken = set()


def free_port():
    """A loopback port in 15000-32000 that binds now (below the ephemeral range, as the tests)."""
    start = random.randrange(15000, 32000)
    for i in range(17000):
        port = 15000 + (start - 15000 + i) % 17000
        if port in _ports_taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _ports_taken.add(port)
        return port
    raise RuntimeError("no free port in 15000-32000")


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def store_bytes(work):
    return sum(p.stat().st_size for p in work.glob("rollwatch.db*"))


def store_kib(work):
    """`db/wal` in KiB: the sqlite file, and its -wal (with -shm)."""
    db = work / "rollwatch.db"
    wal = sum(p.stat().st_size for p in work.glob("rollwatch.db-*"))
    return f"{(db.stat().st_size if db.exists() else 0) / 1024:.0f}/{wal / 1024:.0f}"


def build():
    """The release binaries (unless ROLLWATCH_BENCH_BIN names another rollwatch) and the demo
    images in the registry (scripts/build-images skips unchanged work)."""
    rollwatch = os.environ.get("ROLLWATCH_BENCH_BIN")
    if not rollwatch:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bins"], cwd=ROOT, check=True,
                       env={**os.environ, "CARGO_INCREMENTAL": "0"}, timeout=1800)
        rollwatch = str(ROOT / "target/release/rollwatch")
    demo = ROOT / "target/release/rollwatch-demo-service"
    subprocess.run([str(ROOT / "scripts/build-images"), str(demo)], check=True, timeout=600)
    for tag in [*GOOD_TAGS, *BAD_TAGS, "develop", "main"]:
        sh("docker", "tag", f"{REGISTRY}/demo/backend:{tag}", f"{REPO}/backend:{tag}", timeout=60)
        sh("docker", "push", "-q", f"{REPO}/backend:{tag}", timeout=120)
    return rollwatch


def remove_images():
    for tag in [*GOOD_TAGS, *BAD_TAGS, "develop", "main"]:
        subprocess.run(["docker", "rmi", f"{REPO}/backend:{tag}"], capture_output=True, timeout=60)


# ---------------------------------------------------------------- the flapping metrics source

class Flapper:
    """A scrape endpoint (Prometheus text) with healthy, growing counters (0.1% errors) that
    flaps on command: up (answers, `Connection: close`, so no kept-alive connection outlives a
    phase), then down, alternately refusing connections (its listening socket closed) and
    hanging (accepting and never answering; those connections are closed when the phase ends).
    `changes` counts the changes up->down and down->up since flapping began."""

    def __init__(self, period_s):
        self.port = free_port()
        self.period_s = period_s
        self.state = "up"
        self.changes = 0
        self.downs = 0
        self.ups = 0
        self.scrapes = 0
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.flap_ev = threading.Event()
        self.listener = None
        self.hung = []
        self._listen()
        self.threads = [threading.Thread(target=self._serve, daemon=True),
                        threading.Thread(target=self._flap, daemon=True)]
        for t in self.threads:
            t.start()

    def url(self, target):
        return f"http://127.0.0.1:{self.port}/metrics?target={target}"

    def _listen(self):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(256)
        s.settimeout(0.1)
        self.listener = s

    def _body(self):
        requests = int((time.monotonic() - self.t0) * 100)
        errors = requests // 1000
        return ("# TYPE http_requests_total counter\n"
                f'http_requests_total{{code="200"}} {requests - errors}\n'
                f'http_requests_total{{code="500"}} {errors}\n').encode()

    def _answer(self, conn):
        try:
            conn.settimeout(2)
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            body = self._body()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                         b"Connection: close\r\nContent-Length: " + str(len(body)).encode()
                         + b"\r\n\r\n" + body)
            with self.lock:
                self.scrapes += 1
        except OSError:
            pass
        finally:
            conn.close()

    def _serve(self):
        while not self.stop_ev.is_set():
            with self.lock:
                listener, state = self.listener, self.state
            if listener is None:
                time.sleep(0.05)
                continue
            try:
                conn, _ = listener.accept()
            except (socket.timeout, OSError):
                continue
            if state == "hang":
                with self.lock:
                    self.hung.append(conn)
            else:
                threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _set(self, state):
        with self.lock:
            was_up = self.state == "up"
            if state == "refuse" and self.listener is not None:
                self.listener.close()
                self.listener = None
            if state != "refuse" and self.listener is None:
                self._listen()
            if state != "hang":
                for c in self.hung:
                    c.close()
                self.hung = []
            if was_up != (state == "up"):
                self.changes += 1
                if state == "up":
                    self.ups += 1
                else:
                    self.downs += 1
            self.state = state

    def _flap(self):
        self.flap_ev.wait()
        downs = ["refuse", "hang"]
        i = 0
        while not self.stop_ev.wait(self.period_s):
            if not self.flap_ev.is_set():
                self._set("up")
                continue
            self._set(downs[(i // 2) % 2] if i % 2 == 0 else "up")
            i += 1

    def start_flapping(self):
        self.flap_ev.set()

    def stop_flapping(self):
        """No more changes: a down phase running is let run its whole period (cut short, the
        watchers might never see it), then the source stays up."""
        self.flap_ev.clear()
        deadline = time.monotonic() + self.period_s + 2
        while self.state != "up" and time.monotonic() < deadline:
            time.sleep(0.1)
        self._set("up")

    def close(self):
        self.stop_ev.set()
        self.flap_ev.set()
        self._set("up")
        with self.lock:
            if self.listener is not None:
                self.listener.close()
                self.listener = None


# ---------------------------------------------------------------- compose targets

class Target:
    """One compose project `rw<kind><pid>-<i>` with one demo container on its own port."""

    def __init__(self, work, prefix, i, tag):
        self.i = i
        self.role = f"s{i:03d}"
        self.project = f"{prefix}-{i:03d}"
        self.port = free_port()
        self.dir = work / "opt" / self.project
        self.dir.mkdir(parents=True)
        (self.dir / "docker-compose.yml").write_text(
            'version: "3.7"\nservices:\n  backend:\n'
            "    image: ${CONTAINER_REGISTRY}/backend:${IMAGE_TAG}\n"
            "    network_mode: host\n    restart: unless-stopped\n    stop_grace_period: 2s\n"
            f"    labels:\n      rollwatch.bench: {LABEL}\n"
            "    environment:\n      DEMO_PORT: ${APP_PORT}\n")
        self.write_env(tag)
        self.last_deploy = 0.0
        self.last_bad = -1e9
        self.deploy_failed = False

    def write_env(self, tag):
        (self.dir / ".env").write_text(
            f"COMPOSE_PROJECT_NAME={self.project}\nCONTAINER_REGISTRY={REPO}\n"
            f"IMAGE_TAG={tag}\nAPP_PORT={self.port}\n")

    def env_tag(self):
        m = re.search(r"^IMAGE_TAG=(.*)$", (self.dir / ".env").read_text(), re.M)
        return m.group(1).strip() if m else None

    def up(self):
        sh("docker-compose", "--env-file", ".env", "up", "-d", "--remove-orphans", "--no-color",
           cwd=self.dir, timeout=180)

    def deploy(self, tag):
        """As CI does: `.env` gets the tag, then `up -d`."""
        text = (self.dir / ".env").read_text()
        (self.dir / ".env").write_text(re.sub(r"^IMAGE_TAG=.*$", f"IMAGE_TAG={tag}", text,
                                              flags=re.M))
        self.up()
        self.last_deploy = time.monotonic()

    def running_tag(self):
        """The tag of the image the project's newest container was created from (`docker ps`
        shows an image ID instead once the tag was pushed again)."""
        ids = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.project}"],
            capture_output=True, text=True, timeout=30).stdout.split()
        if not ids:
            return None
        out = subprocess.run(["docker", "inspect", "--format", "{{.Created}} {{.Config.Image}}", *ids],
                             capture_output=True, text=True, timeout=30).stdout.split("\n")
        newest = max((l.split() for l in out if l.strip()), default=None)
        return newest[1].rsplit(":", 1)[-1] if newest else None

    def healthy(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def config(self, metrics_url):
        return (f'[[targets]]\nenv = "staging"\nrole = "{self.role}"\n'
                f'selector = {{ compose_project = "{self.project}", compose_service = "backend" }}\n'
                f'health = {{ url = "http://127.0.0.1:{self.port}/health", timeout = "1s", '
                'validation_timeout = "30s" }\n'
                f'watch = {{ bake = "{BAKE_S}s" }}\n'
                f'executor = {{ kind = "compose", registry = "{REPO}", image = "{REPO}/backend", '
                'step_timeout = "2m" }\n'
                '[targets.metrics]\n'
                f'source = {{ kind = "scrape", urls = ["{metrics_url}"], requests = "http_requests_total", '
                "errors = 'http_requests_total{code=~\"5..\"}' }\n"
                'timeout = "2s"\n')


def remove_containers():
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=rollwatch.bench={LABEL}"],
                         capture_output=True, text=True, timeout=60).stdout.split()
    for i in range(0, len(ids), 100):
        subprocess.run(["docker", "rm", "-f", *ids[i:i + 100]], capture_output=True, timeout=300)


def start_targets(targets):
    t0 = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda t: t.up(), targets))
    deadline = time.monotonic() + 120
    for t in targets:
        while not t.healthy():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{t.project} not healthy within 120 s of starting")
            time.sleep(0.2)
    log(f"{len(targets)} targets up and healthy in {time.monotonic() - t0:.0f} s")


# ---------------------------------------------------------------- rollwatch

class Rollwatch:
    def __init__(self, binary, work, targets, metrics_url_of):
        self.work = work
        self.api_port = free_port()
        config = work / "rollwatch.toml"
        config.write_text(f'[controller]\nstore = "rollwatch.db"\nlisten = "127.0.0.1:{self.api_port}"\n\n'
                          + "\n".join(t.config(metrics_url_of(t)) for t in targets))
        self.log_path = work / "rollwatch.log"
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen([binary, "--config", str(config), "run"], cwd=work,
                                     stdout=self.log_file, stderr=subprocess.STDOUT,
                                     env={**os.environ, "RUST_LOG": "info", "NO_COLOR": "1"})
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rollwatch exited ({self.proc.returncode}): see {self.log_path}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}/healthz", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("rollwatch's API not answering within 60 s")
                time.sleep(0.2)

    def alive(self):
        return self.proc.poll() is None

    def get(self, path, timeout=30):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}{path}", timeout=timeout) as r:
            return r.read().decode()

    def counters(self):
        """rollwatch_rollbacks_total by result and rollwatch_deploys_total, from /metrics."""
        rollbacks, deploys = {}, 0.0
        for line in self.get("/metrics").splitlines():
            if line.startswith("rollwatch_rollbacks_total{"):
                m = re.search(r'result="([^"]*)"', line)
                key = m.group(1) if m else "?"
                rollbacks[key] = rollbacks.get(key, 0.0) + float(line.rsplit(None, 1)[1])
            elif line.startswith("rollwatch_deploys_total"):
                deploys += float(line.rsplit(None, 1)[1])
        return rollbacks, int(deploys)

    def rollback_records(self):
        return json.loads(self.get("/api/v1/rollbacks?limit=1000"))

    def source_lines(self, roles=None):
        """(down lines, up lines, other lines mentioning the metrics source) in the log so far,
        of the targets with these roles (all when None)."""
        down = up = other = 0
        with open(self.log_path, errors="replace") as f:
            for line in f:
                if roles is not None:
                    m = re.search(r"target_id=staging/(\S+)", line)
                    if not m or m.group(1) not in roles:
                        continue
                if "metrics_source_down" in line:
                    down += 1
                elif "metrics_source_up" in line:
                    up += 1
                elif "metrics source" in line:
                    other += 1
        return down, up, other

    def warn_lines(self):
        with open(self.log_path, errors="replace") as f:
            return [l.rstrip() for l in f if " WARN " in l or " ERROR " in l]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log_file.close()


# ---------------------------------------------------------------- docs

def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}"


def write_doc(part, text):
    """Replaces this run's part of RELIABILITY.md's "Long runs" section (flap, then soak)."""
    if os.environ.get("ROLLWATCH_BENCH_NO_APPEND"):
        return
    path = ROOT / "docs/RELIABILITY.md"
    lock = open("/tmp/rollwatch-bench-doc.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        doc = path.read_text()
        head, sep, rest = doc.partition("## Long runs\n")
        if not sep:
            head, sep, rest = doc.rstrip("\n") + "\n\n", "## Long runs\n", ""
        nxt = re.search(r"^## ", rest, re.M)
        section, tail = (rest[:nxt.start()], rest[nxt.start():]) if nxt else (rest, "")
        block = f"<!-- long-runs:{part} -->\n{text.strip()}\n<!-- /long-runs:{part} -->\n"
        mine = re.compile(rf"<!-- long-runs:{part} -->\n.*?<!-- /long-runs:{part} -->\n", re.S)
        if mine.search(section):
            # Replaced in place: whatever else the section says (notes, findings) stays.
            body = mine.sub(lambda _: block, section)
        elif "<!-- long-runs:" not in section:
            # The first run: the placeholder goes.
            intro = ("\nBoth are `scripts/bench_soak.py` (release build, real Docker Engine and "
                     "compose targets of the demo image, everything on 127.0.0.1); each run "
                     "replaces its own part below. The flapping metrics source is a scrape "
                     "endpoint that answers, then refuses connections or accepts and never "
                     "answers, alternately.\n\n")
            body = intro + block + "\n"
        elif part == "flap":
            i = section.index("<!-- long-runs:soak -->")
            body = section[:i] + block + "\n" + section[i:]
        else:
            j = section.index("<!-- /long-runs:flap -->\n") + len("<!-- /long-runs:flap -->\n")
            body = section[:j] + "\n" + block + section[j:]
        body = body.rstrip("\n") + "\n"
        path.write_text(head + sep + body + ("\n" + tail if tail else ""))
    finally:
        lock.close()


def table(head, rows):
    return ("| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n"
            + "\n".join("| " + " | ".join(str(c) for c in r) + " |" for r in rows) + "\n")


# ---------------------------------------------------------------- flap

def tear_down(rw, flapper):
    """What either run leaves behind, however it ended: rollwatch, the flapping source, the
    containers and images, and this run's line in the marker file."""
    if rw:
        rw.stop()
    if flapper:
        flapper.close()
    remove_containers()
    remove_images()
    marker(False)


def flap():
    minutes = float(os.environ.get("FLAP_MINUTES", "10"))
    period = float(os.environ.get("FLAP_PERIOD_S", "6"))
    sample_s = 30
    rollwatch = build()
    work = Path(tempfile.mkdtemp(prefix="rollwatch-flap-"))
    log(f"flap: {minutes:g} min, the source changes every {period:g} s; work dir {work}")
    marker(True)
    flapper = rw = None
    try:
        flapper = Flapper(period)
        target = Target(work, f"rwflap{os.getpid()}", 0, GOOD_TAGS[0])
        start_targets([target])
        rw = Rollwatch(rollwatch, work, [target], lambda t: flapper.url(t.role))
        time.sleep(10)  # a few reads of the source while it answers
        flapper.start_flapping()
        t0 = time.monotonic()
        deploys = [(t0 + minutes * 60 * 0.2, GOOD_TAGS[1]), (t0 + minutes * 60 * 0.6, GOOD_TAGS[0])]
        rows = []
        rss0, fd0 = rss_mib(rw.proc.pid), fds(rw.proc.pid)
        cpu0 = cpu_seconds(rw.proc.pid)
        next_sample = t0
        end = t0 + minutes * 60
        deployed = []
        while True:
            t = time.monotonic()
            if not rw.alive():
                raise RuntimeError(f"rollwatch exited ({rw.proc.returncode}): see {rw.log_path}")
            if deploys and t >= deploys[0][0]:
                tag = deploys.pop(0)[1]
                log(f"good deploy {tag}")
                target.deploy(tag)
                deployed.append(tag)
            if t >= next_sample or t >= end:
                down, up, other = rw.source_lines()
                rollbacks, _ = rw.counters()
                row = (f"{(t - t0) / 60:.1f}", flapper.changes, down + up, other,
                       int(sum(rollbacks.values())), f"{rss_mib(rw.proc.pid):.1f}", fds(rw.proc.pid))
                rows.append(row)
                log("t={} min  changes {}  log lines {} (other {})  rollbacks {}  rss {} MiB  fds {}"
                    .format(*row))
                next_sample += sample_s
            if t >= end:
                break
            time.sleep(min(1.0, max(0.05, min(next_sample, end) - time.monotonic())))
        flapper.stop_flapping()
        cpu = 100 * (cpu_seconds(rw.proc.pid) - cpu0) / (time.monotonic() - t0)
        # The last change (back up) must be seen: a read every second, up to 2 s each.
        time.sleep(8)
        down, up, other = rw.source_lines()
        rollbacks, deploys_seen = rw.counters()
        records = rw.rollback_records()
        running = target.running_tag()
        final_tag = deployed[-1] if deployed else GOOD_TAGS[0]
        rss1, fd1 = rss_mib(rw.proc.pid), fds(rw.proc.pid)
        warns = rw.warn_lines()
    finally:
        tear_down(rw, flapper)
    checks = {
        "no rollback": not records and sum(rollbacks.values()) == 0,
        f"still runs {final_tag}": running == final_tag,
        "one 'lost' line per loss": down == flapper.downs,
        "one 'back' line per return": up == flapper.ups,
    }
    summary = (
        f"Source changes {flapper.changes} ({flapper.downs} lost, {flapper.ups} back); rollwatch's "
        f"log lines about it: {down} `metrics_source_down` + {up} `metrics_source_up`, "
        f"{other} other lines naming the metrics source; rollbacks {int(sum(rollbacks.values()))}, "
        f"rollback records {len(records)}; deploys seen {deploys_seen} (good deploys made "
        f"{len(deployed)}: {', '.join(deployed) or 'none'}), the target runs {running}. "
        f"RSS {rss0:.1f} -> {rss1:.1f} MiB, fds {fd0} -> {fd1}, rollwatch CPU {cpu:.1f}% of a core; "
        f"{len(warns)} WARN/ERROR lines.")
    for name, ok in checks.items():
        log(f"{'ok  ' if ok else 'FAIL'} {name}")
    log(summary)
    for w in warns[:10]:
        log(f"  {w}")
    text = (f"### A flapping metrics source, {minutes:g} minutes "
            f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n"
            f"`scripts/bench flap` (`FLAP_MINUTES`, `FLAP_PERIOD_S` to change it). Machine: {machine()}.\n"
            f"One release `rollwatch run` watches one healthy compose target (the demo image, "
            f"interval 1 s, bake {BAKE_S} s) whose metrics source (scrape, 2 s timeout) changes "
            f"every {period:g} s: up, refusing, up, hanging, ...; good deploys at 20% and 60% of the "
            "run. Every 30 s: the source's changes so far, rollwatch's log lines about them "
            "(`metrics_source_down`, `metrics_source_up`; other lines naming the metrics source "
            "beside), rollbacks, RSS, open fds.\n\n"
            + table(["min", "source changes", "log lines (lost + back)", "other source lines",
                     "rollbacks", "RSS MiB", "fds"], rows)
            + "\n" + summary + "\n\nChecks: "
            + "; ".join(f"{name}: {'yes' if ok else '**no**'}" for name, ok in checks.items()) + ".\n")
    write_doc("flap", text)
    print(text)
    return 0 if all(checks.values()) else 1


# ---------------------------------------------------------------- soak

def soak():
    minutes = float(os.environ.get("SOAK_MINUTES", "30"))
    n = int(os.environ.get("SOAK_TARGETS", "100"))
    good_every = float(os.environ.get("SOAK_GOOD_EVERY_S", "20"))
    bad_every = float(os.environ.get("SOAK_BAD_EVERY_S", "120"))
    n_flap = min(n, int(os.environ.get("SOAK_FLAP_TARGETS", "10")))
    period = float(os.environ.get("FLAP_PERIOD_S", "6"))
    sample_s = float(os.environ.get("SOAK_SAMPLE_S", "60"))
    rollwatch = build()
    work = Path(tempfile.mkdtemp(prefix="rollwatch-soak-"))
    log(f"soak: {n} targets for {minutes:g} min, a good deploy every {good_every:g} s, a bad one "
        f"every {bad_every:g} s, {n_flap} targets on a source flapping every {period:g} s; {work}")
    marker(True)
    flapper = rw = None
    rng = random.Random(18)
    good, bad = [], []  # {target, tag, at}; bad ones also previous, env_back, back_s, running
    failed = []  # deploys whose `docker-compose up` failed
    try:
        flapper = Flapper(period)
        targets = [Target(work, f"rwsoak{os.getpid()}", i, GOOD_TAGS[0]) for i in range(n)]
        start_targets(targets)

        def metrics_url(t):
            return flapper.url(t.role) if t.i < n_flap else f"http://127.0.0.1:{t.port}/metrics"

        flap_roles = {x.role for x in targets if x.i < n_flap}
        rw = Rollwatch(rollwatch, work, targets, metrics_url)
        db0 = store_kib(work)
        # What runs at start is watched as a deploy: no target is stable before it baked.
        for x in targets:
            x.last_deploy = time.monotonic()
        time.sleep(10)
        flapper.start_flapping()
        t0 = time.monotonic()
        end = t0 + minutes * 60
        next_good, next_bad = t0, t0 + min(bad_every, BAKE_S + 30)
        pending = {}  # target index -> bad deploy record, until rolled back
        rows = []
        next_sample = t0
        rss0, fd0, store0 = rss_mib(rw.proc.pid), fds(rw.proc.pid), store_bytes(work)
        cpu_last, t_last = cpu_seconds(rw.proc.pid), t0
        while True:
            t = time.monotonic()
            if not rw.alive():
                raise RuntimeError(f"rollwatch exited ({rw.proc.returncode}): see {rw.log_path}")
            for i, rec in list(pending.items()):
                tag = targets[i].env_tag()
                if tag != rec["tag"]:
                    rec["env_back"] = tag
                    rec["back_s"] = t - rec["at"]
                    del pending[i]
            # Stable targets only: their last deploy baked, no bad deploy outstanding.
            stable = [x for x in targets if x.i not in pending and t - x.last_deploy > BAKE_S + 15]
            if t >= next_bad and t < end - 90:
                cands = [x for x in stable if t - x.last_bad > COOLDOWN_S + 30]
                if cands:
                    x = rng.choice(cands)
                    tag = list(BAD_TAGS)[len(bad) % len(BAD_TAGS)]
                    previous = x.env_tag()
                    log(f"bad deploy {x.role} {previous} -> {tag} ({BAD_TAGS[tag]})")
                    x.last_bad = time.monotonic()
                    x.deploy_failed = False
                    try:
                        x.deploy(tag)
                    except (subprocess.SubprocessError, OSError) as e:
                        # The engine can go away under us (another test bed user restarting
                        # dockerd): that deploy is counted apart, the run goes on.
                        failed.append(f"bad {x.role} {tag}: {str(e)[:200]}")
                        log(f"deploy failed: {failed[-1]}")
                        x.deploy_failed = True
                    rec = {"target": x, "tag": tag, "previous": previous, "at": x.last_bad,
                           "up_failed": x.deploy_failed}
                    bad.append(rec)
                    pending[x.i] = rec
                next_bad += bad_every
            elif t >= next_good and t < end - 30:
                cands = [x for x in stable if x.i not in pending]
                if cands:
                    x = rng.choice(cands)
                    tag = GOOD_TAGS[1] if x.env_tag() == GOOD_TAGS[0] else GOOD_TAGS[0]
                    try:
                        x.deploy(tag)
                    except (subprocess.SubprocessError, OSError) as e:
                        failed.append(f"good {x.role} {tag}: {str(e)[:200]}")
                        log(f"deploy failed: {failed[-1]}")
                        x.deploy_failed = True
                        x.last_deploy = time.monotonic()
                    good.append({"target": x, "tag": tag, "at": x.last_deploy})
                next_good += good_every
            if t >= next_sample or t >= end:
                rollbacks, seen = rw.counters()
                down, up, other = rw.source_lines(flap_roles)
                c = cpu_seconds(rw.proc.pid)
                row = (f"{(t - t0) / 60:.1f}", f"{rss_mib(rw.proc.pid):.1f}", fds(rw.proc.pid),
                       store_kib(work), len(good), len(bad), seen,
                       int(rollbacks.get("succeeded", 0)),
                       int(sum(rollbacks.values()) - rollbacks.get("succeeded", 0)),
                       flapper.changes, down + up,
                       f"{100 * (c - cpu_last) / max(1e-3, t - t_last):.1f}")
                cpu_last, t_last = c, t
                rows.append(row)
                log("t={} min  rss {} MiB  fds {}  store {} KiB  good {}  bad {}  deploys seen {}  "
                    "rollbacks ok {} other {}  flaps {}  source lines {}  cpu {}%".format(*row))
                next_sample += sample_s
            if t >= end:
                break
            time.sleep(0.5)
        flapper.stop_flapping()
        # The last bad deploy was at least 90 s before the end; give its rollback up to 120 s more.
        deadline = time.monotonic() + 120
        while pending and time.monotonic() < deadline:
            for i, rec in list(pending.items()):
                tag = targets[i].env_tag()
                if tag != rec["tag"]:
                    rec["env_back"] = tag
                    rec["back_s"] = time.monotonic() - rec["at"]
                    del pending[i]
            time.sleep(1)
        time.sleep(5)
        rss1, fd1, store1 = rss_mib(rw.proc.pid), fds(rw.proc.pid), store_bytes(work)
        db1 = store_kib(work)
        rollbacks, seen = rw.counters()
        down, up, other = rw.source_lines(flap_roles)
        odown, oup, _ = rw.source_lines({x.role for x in targets} - flap_roles)
        records = rw.rollback_records()
        for rec in bad:
            rec["running"] = rec["target"].running_tag()
        # A target that was never bad-deployed runs what was last deployed to it.
        last_good = {}
        for g in good:
            last_good[g["target"].i] = g["tag"]
        drift = []
        bad_targets = {r["target"].i for r in bad}
        for x in targets:
            if x.i in bad_targets or x.deploy_failed:
                continue
            want = last_good.get(x.i, GOOD_TAGS[0])
            got = x.running_tag()
            if got != want:
                drift.append(f"{x.role}: runs {got}, deployed {want}")
        warns = rw.warn_lines()
    finally:
        tear_down(rw, flapper)

    # Every bad deploy rolled back (record from the bad tag, .env and container back on the
    # previous good tag); no record for anything else.
    by_target = {}
    for r in records:
        role = r["target"]["role"] if isinstance(r.get("target"), dict) else str(r.get("target"))
        by_target.setdefault(role.split("/")[-1], []).append(r)
    right, missed, wrong, unjudged = 0, [], [], []
    for rec in bad:
        x = rec["target"]
        rs = [r for r in by_target.get(x.role, []) if r.get("from_tag") == rec["tag"]]
        if rec.get("up_failed") and not rs:
            # Its `docker-compose up` failed (the engine went away): the bad version may never
            # have run, so nothing was there to roll back.
            unjudged.append(f"{x.role} {rec['tag']}: its docker-compose up failed; runs {rec['running']}")
            continue
        # After its rollback a target may get good deploys again: it must end on the last one.
        later = [g["tag"] for g in good if g["target"] is x and g["at"] > rec["at"]]
        rec["expected"] = later[-1] if later else rec["previous"]
        ok = (rs and rec.get("env_back") == rec["previous"] and rec["running"] == rec["expected"]
              and all(str(r.get("state")).lower() == "succeeded" for r in rs) and len(rs) == 1)
        if ok:
            right += 1
        else:
            missed.append(f"{x.role} {rec['tag']}: records {[(r.get('from_tag'), r.get('to_tag'), r.get('state')) for r in rs]}, "
                          f".env back to {rec.get('env_back', rec['tag'])}, runs {rec['running']} (expected {rec['expected']})")
    bad_pairs = {(r["target"].role, r["tag"]) for r in bad}
    for role, rs in by_target.items():
        for r in rs:
            if (role, r.get("from_tag")) not in bad_pairs:
                wrong.append(f"{role}: {r.get('from_tag')} -> {r.get('to_tag')} ({r.get('trigger')}, {r.get('reason')})")
    backs = sorted(r["back_s"] for r in bad if "back_s" in r)
    checks = {
        f"every bad deploy rolled back ({right}/{len(bad) - len(unjudged)})":
            right == len(bad) - len(unjudged) and right > 0,
        "no other rollback": not wrong,
        "every other target runs what was deployed to it": not drift,
    }
    summary = (
        f"{len(good)} good deploys, {len(bad)} bad ({', '.join(sorted(set(r['tag'] for r in bad)))}); "
        f"deploys seen by rollwatch {seen}; rollbacks {dict((k, int(v)) for k, v in rollbacks.items())}, "
        f"records {len(records)}: {right} right, {len(wrong)} wrong, {len(missed)} bad deploys not rolled back. "
        + (f"Bad deploy -> `.env` back (seen by the bench, 0.5 s polls): median "
           f"{backs[len(backs) // 2]:.0f} s, max {backs[-1]:.0f} s. " if backs else "")
        + f"RSS {rss0:.1f} -> {rss1:.1f} MiB, fds {fd0} -> {fd1}, store (db/wal KiB) {db0} -> {db1} "
        f"(all files {store0 / 1024:.0f} -> {store1 / 1024:.0f} KiB). "
        f"Source changes {flapper.changes} on the {n_flap} flapping targets: {down} lost + {up} back "
        f"lines (one per change and target would be {flapper.downs * n_flap} + {flapper.ups * n_flap}), "
        f"{other} other lines naming the metrics source; the other targets' own /metrics (gone "
        f"while a deploy or rollback recreates the container): {odown} lost + {oup} back lines; "
        f"{len(warns)} WARN/ERROR lines."
        + (f" {len(failed)} deploys failed in `docker-compose up`: {'; '.join(failed)}." if failed else ""))
    for name, ok in checks.items():
        log(f"{'ok  ' if ok else 'FAIL'} {name}")
    for m in missed + wrong + drift + unjudged:
        log(f"  {m}")
    log(summary)
    text = (f"### Soak: {n} targets, {minutes:g} minutes "
            f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n"
            f"`scripts/bench soak` (`SOAK_MINUTES`, `SOAK_TARGETS`, `SOAK_GOOD_EVERY_S`, "
            f"`SOAK_BAD_EVERY_S`, `SOAK_FLAP_TARGETS` to change it). Machine: {machine()}.\n"
            f"One release `rollwatch run` watches {n} compose targets, one demo container each "
            f"(interval 1 s, bake {BAKE_S} s, cooldown default 10 min); a good deploy "
            f"(v1.0.0 <-> v1.0.1, `.env` then `docker-compose up -d`, as CI does) every "
            f"{good_every:g} s and a bad one (v1.1.0: health down; v1.2.0: crashes after 2 s) every "
            f"{bad_every:g} s, each on a random target whose last deploy baked; {n_flap} targets "
            f"read a metrics source flapping every {period:g} s, the others their container's own "
            "/metrics. Every minute: RSS, open fds, the store (sqlite file, -wal, -shm), deploys "
            "made, deploys rollwatch saw (`rollwatch_deploys_total`), rollbacks "
            "(`rollwatch_rollbacks_total`, succeeded and other), the flapping source's changes and "
            "the flapping targets' log lines about it, rollwatch's CPU over the minute.\n\n"
            + table(["min", "RSS MiB", "fds", "store KiB (db/wal)", "good deploys", "bad deploys",
                     "deploys seen", "rollbacks ok", "rollbacks other", "source changes",
                     "source log lines", "CPU %"], rows)
            + "\n" + summary + "\n\nChecks: "
            + "; ".join(f"{name}: {'yes' if ok else '**no**'}" for name, ok in checks.items()) + "."
            + ("\n\nNot as expected:\n\n" + "\n".join(f"- {m}" for m in missed + wrong + drift)
               if missed or wrong or drift else "")
            + ("\n\nNot judged (the deploy itself failed):\n\n" + "\n".join(f"- {m}" for m in unjudged)
               if unjudged else "") + "\n")
    write_doc("soak", text)
    print(text)
    return 0 if all(checks.values()) else 1


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what not in ("flap", "soak"):
        print("usage: bench_soak.py flap|soak", file=sys.stderr)
        return 2
    return flap() if what == "flap" else soak()


if __name__ == "__main__":
    sys.exit(main())
