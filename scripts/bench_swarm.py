#!/usr/bin/env python3
"""`scripts/bench swarm` (issue 18): Docker Swarm's own automatic rollback beside rollwatch's,
on the same images and the same fault.

Both sides run the demo service from the same images (scripts/build-images, pushed as
127.0.0.1:5000/swarmbench/backend:<tag>), host networking, one replica on its own loopback port.
The fault is a deploy of v1.1.0, whose /health answers 503; v1.0.0 is the good version.

- Swarm: a one-node swarm on 127.0.0.1 (`docker swarm init`, left again at the end), a service
  with a health check that runs the image's own binary (`/app/demo --probe <url>`: the images
  have no shell, so the check is given in exec form through the Engine API),
  FailureAction=rollback, Order=stop-first; the fault is a service update to v1.1.0.
- rollwatch: a compose project with the same image, watched by a release `rollwatch run`
  (a fresh store and process per run, so no cooldown or known-good state carries over); the fault
  is a deploy as CI does it: .env IMAGE_TAG=v1.1.0, `docker-compose pull`, `up -d`.

Measured per run, all on this machine's clock:
- onset: the engine's `start` event of the v1.1.0 container (the same definition on both sides);
- rollback started: Swarm's service event with updatestate.new=rollback_started (its
  UpdateStatus.State polled every 0.1 s through the API when no event came);
  rollwatch's rollback record `started_at_ms` (the intent written before its first side effect);
- healthy on old: the first GET /health (every 50 ms) answering 200, status ok, version v1.0.0,
  after the bad version was seen.

Two settings rows, runs interleaved (Swarm, rollwatch, Swarm, ...) so drift of the machine
hits both sides alike: identical settings, and each side at its defaults.

    scripts/bench swarm                 RUNS=10 per side and row (RUNS=2 for a quick try)
    ROWS=identical|defaults             one row only
    ROLLWATCH_BENCH_NO_APPEND=1         print the table without appending it to docs/BENCHMARKS.md
    ROLLWATCH_BENCH_NO_BUILD=1          use target/release as it is (no cargo build)

While it runs, /tmp/rollwatch-bench-running exists (dockerd must not be restarted under it).
"""

import http.client
import json
import math
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = "127.0.0.1:5000"
APP = "swarmbench"  # its own image names: other benches rebuild demo/* from their own binaries
IMAGE = f"{REGISTRY}/{APP}/backend"
GOOD, BAD = "v1.0.0", "v1.1.0"
RUNS = int(os.environ.get("RUNS", "10"))
ROWS = os.environ.get("ROWS", "identical,defaults").split(",")
MARKER = Path("/tmp/rollwatch-bench-running")
API = "/v1.41"  # the engine here speaks API 1.41
NS = 1_000_000_000
HEALTH_POLL_S = 0.05

# The settings of each row. Swarm's defaults (docs.docker.com, "HEALTHCHECK" and
# `docker service create`): health interval 30 s, timeout 30 s, 3 retries, start period 0,
# update monitor 5 s, stop grace 10 s, order stop-first, and failure action *pause*: Swarm's
# real default never rolls back. Both rows set FailureAction=rollback.
SETTINGS = {
    "identical": {
        "swarm": dict(interval=1, timeout=1, retries=3, start_period=5, stop_grace=2, monitor=15),
        "rollwatch": dict(interval="1s", failures=3, grace="5s", timeout="1s", stop_grace="2s"),
        "deadline_s": 150,
    },
    "defaults": {
        "swarm": dict(interval=None, timeout=None, retries=None, start_period=None, stop_grace=None,
                      monitor=None),
        "rollwatch": dict(interval=None, failures=None, grace=None, timeout=None, stop_grace=None),
        "deadline_s": 400,
    },
}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S', time.gmtime())}] {msg}", file=sys.stderr, flush=True)


def sh(*args, timeout=300, **kw):
    return subprocess.run(args, check=True, text=True, capture_output=True, timeout=timeout, **kw)


def free_port(taken):
    """A free loopback port in 15000-32000, not one this bench already uses."""
    for _ in range(200):
        port = random.randint(15000, 32000)
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise RuntimeError("no free loopback port in 15000-32000")


class Engine:
    """The Engine API over the local socket (the docker CLI cannot give a health check in exec
    form, and the images have no shell for CMD-SHELL)."""

    def request(self, method, path, body=None, timeout=30):
        conn = http.client.HTTPConnection("localhost", timeout=timeout)
        conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.sock.settimeout(timeout)
        conn.sock.connect("/var/run/docker.sock")
        try:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if data else {}
            conn.request(method, API + path, body=data, headers=headers)
            r = conn.getresponse()
            text = r.read().decode()
        finally:
            conn.close()
        if r.status >= 300:
            raise RuntimeError(f"{method} {path}: {r.status} {text.strip()}")
        return json.loads(text) if text.strip() else None


class Events:
    """`docker events` streamed from now on with the given filters; each line is kept."""

    def __init__(self, *filters):
        args = ["docker", "events", "--format", "{{json .}}"]
        for f in filters:
            args += ["--filter", f]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        self.lines = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        time.sleep(0.3)  # the subscription is in place before anything happens

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                pass

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.thread.join(timeout=5)
        return self.lines


def health(port):
    """(code, status, version) of GET /health, or None when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=0.5) as r:
            body, code = r.read(), r.status
    except urllib.error.HTTPError as e:
        body, code = e.read(), e.code
    except (OSError, ValueError):
        return None
    try:
        j = json.loads(body)
        return code, j.get("status"), j.get("version")
    except ValueError:
        return code, None, None


def good(h):
    return h is not None and h[0] == 200 and h[1] == "ok" and h[2] == GOOD


def wait_for(what, pred, deadline_s, every=0.2):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {deadline_s} s")


def onset_of(events, image_tag):
    """Wall time of the first `start` of a container of `image_tag`."""
    for e in events:
        if e.get("Type") == "container" and e.get("Action") == "start" \
                and e.get("Actor", {}).get("Attributes", {}).get("image", "").endswith(":" + image_tag):
            return e["timeNano"] / NS
    return None


def watch_recovery(port, deadline_s, extra=None):
    """Polls /health until the bad version went away and v1.0.0 answers ok again; `extra()` is
    called on every round (Swarm's UpdateStatus poll). Returns the wall time of recovery."""
    end = time.monotonic() + deadline_s
    left_good = False
    while time.monotonic() < end:
        h = health(port)
        now = time.time()
        if not good(h):
            left_good = True
        elif left_good:
            return now
        if extra:
            extra()
        time.sleep(HEALTH_POLL_S)
    raise TimeoutError(f"/health on {port} not back on {GOOD} within {deadline_s} s")


# ---------------------------------------------------------------------------------------------
# Swarm


class SwarmSide:
    def __init__(self, engine, row, port):
        self.engine, self.row, self.port = engine, row, port
        self.s = SETTINGS[row]["swarm"]
        self.deadline = SETTINGS[row]["deadline_s"]
        self.name = f"rwbench-swarm-{row}-{os.getpid()}"
        self.id = None

    def spec(self, tag, version=None):
        s = self.s
        url = f"http://127.0.0.1:{self.port}/health"
        hc = {"Test": ["CMD", "/app/demo", "--probe", url]}
        for key, field in (("interval", "Interval"), ("timeout", "Timeout"),
                           ("start_period", "StartPeriod")):
            if s[key] is not None:
                hc[field] = s[key] * NS
        if s["retries"] is not None:
            hc["Retries"] = s["retries"]
        cs = {"Image": f"{IMAGE}:{tag}", "Env": [f"DEMO_PORT={self.port}", "DEMO_BIND=127.0.0.1"],
              "Healthcheck": hc}
        if s["stop_grace"] is not None:
            cs["StopGracePeriod"] = s["stop_grace"] * NS
        update = {"Parallelism": 1, "FailureAction": "rollback", "Order": "stop-first"}
        if s["monitor"] is not None:
            update["Monitor"] = s["monitor"] * NS
        host_net = self.engine.request("GET", "/networks/host")["Id"]
        return {
            "Name": self.name,
            "Labels": {"rollwatch.bench": "swarm"},
            "TaskTemplate": {"ContainerSpec": cs, "Networks": [{"Target": host_net}]},
            "Mode": {"Replicated": {"Replicas": 1}},
            "UpdateConfig": update,
            # What a rollback does: Swarm's defaults, stop-first as the update.
            "RollbackConfig": {"Parallelism": 1, "Order": "stop-first"},
        }

    def inspect(self):
        return self.engine.request("GET", f"/services/{self.id}")

    def update_state(self):
        return ((self.inspect().get("UpdateStatus") or {}).get("State")) or ""

    def steady(self):
        """No update in flight, one task running, /health ok on v1.0.0."""
        st = self.update_state()
        if st not in ("", "completed", "rollback_completed"):
            return False
        tasks = self.engine.request(
            "GET", "/tasks?filters=" + urllib.request.quote(json.dumps({"service": [self.id]})))
        running = [t for t in tasks if t["Status"]["State"] == "running"
                   and t["DesiredState"] == "running"]
        return len(running) == 1 and good(health(self.port))

    def create(self):
        r = self.engine.request("POST", "/services/create", self.spec(GOOD))
        self.id = r["ID"]
        # At Swarm's defaults the first health check runs 30 s after the start.
        wait_for("swarm service steady on v1.0.0", self.steady, 180, every=0.5)
        log(f"swarm service {self.name} on 127.0.0.1:{self.port} is steady on {GOOD}")

    def run_once(self):
        wait_for("swarm service steady before the fault", self.steady, 240, every=0.5)
        time.sleep(2)
        ev = Events("type=container", "event=start", f"label=com.docker.swarm.service.name={self.name}")
        sev = Events("type=service", f"service={self.name}")
        polled = {}

        def poll_state():
            if "rollback_started" in polled:
                return
            if self.update_state().startswith("rollback"):
                polled["rollback_started"] = time.time()

        try:
            svc = self.inspect()
            spec = svc["Spec"]
            spec["TaskTemplate"]["ContainerSpec"]["Image"] = f"{IMAGE}:{BAD}"
            issued = time.time()
            self.engine.request("POST", f"/services/{self.id}/update?version={svc['Version']['Index']}",
                                spec)
            healthy = watch_recovery(self.port, self.deadline, poll_state)
            # The rest of the rollback (Swarm's rollback monitor) before the next run.
            wait_for("swarm rollback_completed", lambda: self.update_state() == "rollback_completed",
                     120, every=0.5)
        finally:
            lines, slines = ev.stop(), sev.stop()
        onset = onset_of(lines, BAD)
        started = None
        for e in slines:
            if e.get("Actor", {}).get("Attributes", {}).get("updatestate.new") == "rollback_started":
                started = e["timeNano"] / NS
                break
        source = "event"
        if started is None:
            started, source = polled.get("rollback_started"), "poll"
        if onset is None or started is None:
            raise RuntimeError(f"swarm run: onset {onset}, rollback started {started}")
        r = {"issued_to_onset": onset - issued, "rollback": started - onset,
             "healthy": healthy - onset, "source": source, "load": os.getloadavg()[0],
             "poll_minus_event": (polled["rollback_started"] - started)
             if source == "event" and "rollback_started" in polled else None}
        log(f"  swarm/{self.row}: onset->rollback started {r['rollback']:.2f} s ({source}), "
            f"onset->healthy on {GOOD} {r['healthy']:.2f} s "
            f"(update issued->onset {r['issued_to_onset']:.2f} s)")
        return r

    def remove(self):
        if self.id:
            sid, self.id = self.id, None
            try:
                self.engine.request("DELETE", f"/services/{sid}")
            except Exception as e:  # noqa: BLE001 - cleanup goes on
                log(f"removing swarm service: {e}")
            # Its containers go away with it; wait (bounded) so the port is free.
            try:
                wait_for("swarm containers gone", lambda: not sh(
                    "docker", "ps", "-aq", "--filter",
                    f"label=com.docker.swarm.service.name={self.name}").stdout.strip(), 60, every=0.5)
            except Exception as e:  # noqa: BLE001
                log(f"swarm service containers: {e}")


# ---------------------------------------------------------------------------------------------
# rollwatch


class RollwatchSide:
    def __init__(self, rollwatch, row, port, taken, work):
        self.rollwatch, self.row, self.port, self.taken = rollwatch, row, port, taken
        self.s = SETTINGS[row]["rollwatch"]
        self.deadline = SETTINGS[row]["deadline_s"]
        self.project = f"rwbench-rw-{row}-{os.getpid()}"
        self.dir = work / "opt" / APP / "staging" / f"backend-{row}"
        self.work = work
        self.runs = 0
        self.removed = False

    def env(self, tag):
        (self.dir / ".env").write_text(
            f"COMPOSE_PROJECT_NAME={self.project}\nCONTAINER_REGISTRY={REGISTRY}/{APP}\n"
            f"IMAGE_TAG={tag}\nAPP_PORT={self.port}\n")

    def compose(self, *args, timeout=180):
        return sh("docker-compose", "--no-ansi", *args, cwd=self.dir, timeout=timeout)

    def create(self):
        self.dir.mkdir(parents=True)
        stop = f"    stop_grace_period: {self.s['stop_grace']}\n" if self.s["stop_grace"] else ""
        (self.dir / "docker-compose.yml").write_text(
            "version: \"3.7\"\nservices:\n  backend:\n"
            "    image: ${CONTAINER_REGISTRY}/backend:${IMAGE_TAG}\n    network_mode: host\n"
            "    environment:\n      DEMO_PORT: ${APP_PORT}\n      DEMO_BIND: 127.0.0.1\n"
            "    labels:\n      rollwatch.bench: swarm\n" + stop)
        self.env(GOOD)
        self.compose("up", "-d")
        wait_for("compose project healthy on v1.0.0", lambda: good(health(self.port)), 60)
        log(f"compose project {self.project} on 127.0.0.1:{self.port} is healthy on {GOOD}")

    def config(self, d, api_port):
        s = self.s
        health = f'url = "http://127.0.0.1:{self.port}/health"'
        if s["timeout"]:
            health += f', timeout = "{s["timeout"]}"'
        watch = ", ".join(f'{k} = {json.dumps(s[k])}' for k in ("interval", "failures", "grace")
                          if s[k] is not None)
        text = (
            f'[controller]\nstore = "{d}/rollwatch.db"\nlisten = "127.0.0.1:{api_port}"\n\n'
            # No known-good tag exists in a fresh store: the rollback goes to the env's fallback
            # tag, here the good version (the default would be `develop`).
            f'[fallback_tags]\nstaging = "{GOOD}"\nproduction = "main"\n\n'
            f'[[targets]]\nenv = "staging"\nrole = "backend"\n'
            f'selector = {{ compose_project = "{self.project}", compose_service = "backend" }}\n'
            f"health = {{ {health} }}\n"
            + (f"watch = {{ {watch} }}\n" if watch else "")
            + f'executor = {{ kind = "compose", dir = "{self.dir}", registry = "{REGISTRY}/{APP}" }}\n')
        path = d / "rollwatch.toml"
        path.write_text(text)
        return path

    def api(self, api_port, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}{path}", timeout=2) as r:
            return json.loads(r.read())

    def ready(self, api_port):
        try:
            text = json.dumps(self.api(api_port, "/api/v1/targets"))
        except (OSError, ValueError):
            return False
        return GOOD in text

    def rollback_record(self, api_port):
        try:
            recs = self.api(api_port, "/api/v1/rollbacks")
        except (OSError, ValueError):
            return None
        if isinstance(recs, dict):
            recs = recs.get("rollbacks") or recs.get("items") or []
        return recs[0] if recs else None

    def run_once(self):
        self.runs += 1
        d = self.work / f"rollwatch-{self.row}-{self.runs}"
        d.mkdir()
        wait_for("compose project healthy before the fault", lambda: good(health(self.port)), 60)
        api_port = free_port(self.taken)
        config = self.config(d, api_port)
        out = open(d / "rollwatch.log", "w")
        rw = subprocess.Popen([self.rollwatch, "--config", str(config), "run"], cwd=d, stdout=out,
                              stderr=out, env={**os.environ, "RUST_LOG": "info"})
        ev = None
        try:
            wait_for("rollwatch watching v1.0.0", lambda: rw.poll() is None and self.ready(api_port),
                     60)
            time.sleep(2)
            ev = Events("type=container", "event=start", f"label=com.docker.compose.project={self.project}")
            self.env(BAD)
            issued = time.time()
            self.compose("pull", "-q")
            self.compose("up", "-d")
            healthy = watch_recovery(self.port, self.deadline)
            rec = wait_for("rollwatch rollback record finished",
                           lambda: (lambda r: r if r and r.get("finished_at_ms") else None)(
                               self.rollback_record(api_port)), 60)
        finally:
            lines = ev.stop() if ev else []
            rw.send_signal(signal.SIGTERM)
            try:
                rw.wait(timeout=15)
            except subprocess.TimeoutExpired:
                rw.kill()
                rw.wait(timeout=5)
            out.close()
            self.taken.discard(api_port)
        onset = onset_of(lines, BAD)
        if onset is None:
            raise RuntimeError("rollwatch run: no start event of the bad container")
        if rec.get("to_tag") != GOOD or rec.get("state") not in ("succeeded", "Succeeded"):
            log(f"  rollwatch rollback record: {json.dumps(rec)[:400]}")
        started = rec["started_at_ms"] / 1000
        r = {"issued_to_onset": onset - issued, "rollback": started - onset,
             "healthy": healthy - onset,
             # Where the rollback's own time goes: each step's start after the intent, and its length.
             "steps": {st["name"]: [(st["started_at_ms"] - rec["started_at_ms"]) / 1000,
                                    st["duration_ms"] / 1000] for st in rec.get("steps", [])},
             "took": (rec["finished_at_ms"] - rec["started_at_ms"]) / 1000,
             "load": os.getloadavg()[0]}
        log(f"  rollwatch/{self.row}: onset->rollback started {r['rollback']:.2f} s, "
            f"onset->healthy on {GOOD} {r['healthy']:.2f} s "
            f"(pull+up issued->onset {r['issued_to_onset']:.2f} s)")
        return r

    def remove(self):
        if self.dir.exists() and not self.removed:
            self.removed = True
            try:
                self.compose("down", "--remove-orphans", "-t", "2", timeout=120)
            except Exception as e:  # noqa: BLE001 - cleanup goes on
                log(f"compose down: {e}")
        ids = subprocess.run(["docker", "ps", "-aq", "--filter",
                              f"label=com.docker.compose.project={self.project}"],
                             capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


# ---------------------------------------------------------------------------------------------


def network_exists(name):
    return subprocess.run(["docker", "network", "inspect", name], capture_output=True,
                          timeout=60).returncode == 0


def swarm_join():
    """Initialises a one-node swarm on loopback. Returns True when this bench made it.
    `swarm init` also creates the ingress overlay (10.0.0.0/24) and the docker_gwbridge bridge
    (172.x) for its ingress sandbox; nothing of this bench goes through them (host network, no
    published ports), and swarm_leave removes docker_gwbridge again when it was not there before."""
    state = sh("docker", "info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
    if state == "active":
        ctl = sh("docker", "info", "--format", "{{.Swarm.ControlAvailable}}").stdout.strip()
        if ctl == "true":
            log("this engine is already a swarm manager: reusing it (left at the end)")
            return True
        log("this engine is in a swarm as a worker: leaving it first")
        sh("docker", "swarm", "leave", "--force", timeout=120)
    sh("docker", "swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:2377",
       "--data-path-addr", "127.0.0.1", timeout=120)
    log("swarm initialised on 127.0.0.1")
    return True


def swarm_leave(remove_gwbridge):
    r = subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True, text=True,
                       timeout=120)
    log("left the swarm" if r.returncode == 0 else f"swarm leave: {r.stderr.strip()}")
    if remove_gwbridge and network_exists("docker_gwbridge"):
        # The ingress sandbox's endpoint goes with the swarm, a moment after `leave` returns.
        for _ in range(20):
            r = subprocess.run(["docker", "network", "rm", "docker_gwbridge"], capture_output=True,
                               text=True, timeout=60)
            if r.returncode == 0:
                log("removed docker_gwbridge (created by swarm init)")
                break
            time.sleep(0.5)
        else:
            log(f"docker_gwbridge left in place: {r.stderr.strip()}")


def quantile(values, q):
    """Nearest rank, as `rollwatch demo` reports."""
    v = sorted(values)
    rank = min(max(1, math.ceil(q * len(v))), len(v))
    return v[rank - 1]


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}"


def table(results, runs, swarm_version, started_at):
    def cell(v, q):
        return f"{quantile(v, q):.1f} s"

    rows = []
    labels = {"identical": "identical", "defaults": "each at its defaults"}
    for row in ROWS:
        if row not in results:
            continue
        sw, rw = results[row]["swarm"], results[row]["rollwatch"]
        for key, what in (("rollback", "onset -> rollback started"),
                          ("healthy", f"onset -> /health ok on {GOOD} again")):
            a, b = [r[key] for r in sw], [r[key] for r in rw]
            rows.append(f"| {labels[row]} | {what} | {cell(a, .5)} | {cell(a, .95)} | "
                        f"{cell(b, .5)} | {cell(b, .95)} | {quantile(a, .5) / quantile(b, .5):.1f}x "
                        f"| {len(a)} + {len(b)} |")
    event_polls = [r["poll_minus_event"] for row in results.values() for r in row["swarm"]
                   if r.get("poll_minus_event") is not None]
    sources = sorted({r["source"] for row in results.values() for r in row["swarm"]})
    loads = [r["load"] for row in results.values() for side in row.values() for r in side]
    rw_runs = [r for row in results.values() for r in row["rollwatch"]]

    def step(name, i):
        v = [r["steps"][name][i] for r in rw_runs if name in r.get("steps", {})]
        return f"{quantile(v, .5):.1f} s" if v else "-"

    notes = (
        "\nSettings. *identical*: probe every 1 s, 3 consecutive failures, 5 s start grace (Swarm: "
        "health interval 1 s, retries 3, start period 5 s), 1 s probe timeout, stop grace 2 s "
        "(compose `stop_grace_period`, Swarm StopGracePeriod), stop-first on both; Swarm's update "
        "monitor 15 s. *each at its defaults*: Swarm's health check defaults (interval 30 s, timeout "
        "30 s, 3 retries, start period 0), update monitor 5 s, stop grace 10 s, with "
        "FailureAction=rollback; rollwatch's default watch (probe every 1 s, 3 failures, 5 s grace, "
        "2 s probe timeout; bake and cooldown do not enter a run), compose's 10 s stop grace. "
        "rollwatch's defaults differ from its identical row only in the 2 s probe timeout and the "
        "stop grace (the demo exits at once on SIGTERM, so no stop waits the grace out). "
        f"With {runs} runs, p95 is the nearest rank: the slowest run or next to it.\n"
        f"Where rollwatch's rollback time goes (p50 over its {len(rw_runs)} runs, seconds after its "
        f"intent): pull starts at {step('pull', 0)} and takes {step('pull', 1)}, `up -d` starts at "
        f"{step('up', 0)} and takes {step('up', 1)}, /health validated at {step('validate', 0)}: "
        "docker-compose (v1 here) runs as a new process per step, Swarm's rollback runs inside the "
        "engine.\n"
        f"The machine was shared with other benches: 1-minute load average {min(loads):.1f} to "
        f"{max(loads):.1f} on {os.cpu_count()} cores at the ends of the runs; runs interleave "
        "Swarm and rollwatch so both sides see the same load.\n")
    return (
        f"\n## Docker Swarm's automatic rollback beside rollwatch's ({started_at})\n\n"
        f"Machine: {machine()}; engine {swarm_version}. `scripts/bench swarm` (scripts/bench_swarm.py), "
        f"{runs} runs per side and row, interleaved. Same images on both sides "
        f"(scripts/build-images: {IMAGE}:{GOOD} good, :{BAD} whose /health answers 503), one replica, "
        "host network on its own 127.0.0.1 port. Swarm: a one-node swarm on 127.0.0.1, a service whose "
        "health check is the image's own `/app/demo --probe <url>`, update to the bad tag, "
        "FailureAction=rollback, stop-first. rollwatch: a compose project watched by a release "
        "`rollwatch run` (fresh store per run; rollback to the env's fallback tag v1.0.0), the bad tag "
        "deployed as CI does (.env, pull, `up -d`).\n"
        "Onset = the engine's `start` event of the bad container (both sides). Rollback started = "
        "Swarm's service event updatestate.new=rollback_started "
        f"(source: {', '.join(sources)}"
        + (f"; the 0.1 s poll of UpdateStatus saw it {quantile(event_polls, .5):.2f} s later at p50"
           if event_polls else "")
        + "), rollwatch's rollback record started_at_ms (its intent, written before the first "
        "side effect). Healthy = first GET /health (every 50 ms) answering 200, status ok, version "
        f"{GOOD}.\n"
        "Swarm's real default failure action is `pause`: at its true defaults a bad update is not "
        "rolled back at all, only paused (the defaults row sets only FailureAction=rollback).\n\n"
        "| settings | measure | Swarm p50 | Swarm p95 | rollwatch p50 | rollwatch p95 "
        "| Swarm / rollwatch (p50) | runs |\n|" + "---|" * 8 + "\n" + "\n".join(rows) + "\n"
        + notes
    )


DOCS_LINES = """
Computed from their docs, not measured (from the bad version serving to the rollback decision,
for a failure every check sees; none of these run on docker compose):
- Flagger at its defaults: analysis `interval` 60 s (10 s at least) and `threshold` 1
  (GetAnalysisInterval, GetAnalysisThreshold in
  https://github.com/fluxcd/flagger/blob/main/pkg/apis/flagger/v1beta1/canary.go): one failed
  check rolls back, so up to 60 s; its metric checks also read a 1 m window by default
  (GetMetricInterval, same file). With a docs-style `interval: 1m`, `threshold: 5`: about 5 min.
- Argo Rollouts analysis at its defaults: `failureLimit` 0 (the first failed measurement fails
  the AnalysisRun and aborts the rollout) and no `interval` (a single measurement), per
  pkg/apis/rollouts/v1alpha1/analysis_types.go and
  https://argoproj.github.io/argo-rollouts/features/analysis/: the decision comes when the
  rollout's steps reach the analysis, a time the user's steps set, not the analysis.
- Kamal: no automatic rollback after a deploy: `kamal rollback [VERSION]` ("Rollback app to
  VERSION", lib/kamal/cli/main.rb in basecamp/kamal) is run by hand. `kamal deploy` only waits for
  the new container's health check before it switches traffic (`deploy_timeout`, default 30 s:
  `raw_config.deploy_timeout || 30` in lib/kamal/configuration.rb).
"""


def main():
    MARKER.write_text(f"scripts/bench_swarm.py pid {os.getpid()} since {time.strftime('%H:%M:%S UTC', time.gmtime())}\n")
    engine = Engine()
    taken = set()
    work = Path(tempfile.mkdtemp(prefix="rollwatch-swarm-"))
    sides = []
    joined = False
    had_gwbridge = True
    results = {}
    started_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        if not os.environ.get("ROLLWATCH_BENCH_NO_BUILD"):
            log("cargo build --release --bins")
            sh("cargo", "build", "--release", "--quiet", "--bins", cwd=ROOT, timeout=3600)
        demo = ROOT / "target/release/rollwatch-demo-service"
        rollwatch = str(ROOT / "target/release/rollwatch")
        sh(str(ROOT / "scripts/build-images"), str(demo), APP, "backend", cwd=ROOT, timeout=600)
        # Swarm pulls through the registry; compose's pull too: both find the images there.
        swarm_version = sh("docker", "version", "--format", "{{.Server.Version}}").stdout.strip()
        had_gwbridge = network_exists("docker_gwbridge")
        joined = swarm_join()
        for row in ROWS:
            if row not in SETTINGS:
                raise SystemExit(f"ROWS: unknown row {row!r} (identical, defaults)")
            sw = SwarmSide(engine, row, free_port(taken))
            rw = RollwatchSide(rollwatch, row, free_port(taken), taken, work)
            sides += [sw, rw]
            sw.create()
            rw.create()
            results[row] = {"swarm": [], "rollwatch": []}
            for i in range(RUNS):
                log(f"{row}: run {i + 1}/{RUNS}")
                results[row]["swarm"].append(sw.run_once())
                results[row]["rollwatch"].append(rw.run_once())
            sw.remove()
            rw.remove()
        (work / "results.json").write_text(json.dumps(results, indent=1))
        log(f"raw results: {work / 'results.json'}")
        text = table(results, RUNS, swarm_version, started_at) + DOCS_LINES
        print(text)
        if not os.environ.get("ROLLWATCH_BENCH_NO_APPEND"):
            with open(ROOT / "docs/BENCHMARKS.md", "a") as f:
                f.write(text)
    finally:
        for side in sides:
            side.remove()
        if joined:
            swarm_leave(remove_gwbridge=not had_gwbridge)
        MARKER.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
