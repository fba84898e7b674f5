#!/usr/bin/env python3
"""Runs `rollwatch demo --serve-for 2m`, waits for its rollback, and drives headless Chromium
(tests/browser/driver.mjs) over the status page it serves, saving PNGs in docs/screenshots/."""

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
SHOTS = [  # (file, path, width)
    ("targets.png", "/", 1100),
    ("target.png", "/ui/targets/staging/backend", 1100),
    ("incident.png", "/ui/incidents/1", 1100),
    ("targets-phone.png", "/", 390),
]


class Driver:
    def __init__(self):
        self.p = subprocess.Popen(["node", str(ROOT / "tests/browser/driver.mjs")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = json.loads(self.p.stdout.readline() or "{}")
        if not ready.get("ready"):
            sys.exit("screenshots: the browser driver did not start (run scripts/setup)")
        self.n = 0

    def __call__(self, cmd, **args):
        self.n += 1
        self.p.stdin.write(json.dumps({"id": self.n, "cmd": cmd, **args}) + "\n")
        self.p.stdin.flush()
        answer = json.loads(self.p.stdout.readline() or "{}")
        if not answer.get("ok"):
            sys.exit(f"screenshots: {cmd} {args}: {answer.get('error', 'no answer')}")
        return answer.get("value")

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=10)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    demo = subprocess.Popen([str(ROOT / "target/debug/rollwatch"), "demo", "--serve-for", "2m"],
                            stdout=subprocess.PIPE, text=True)
    base = None
    for line in demo.stdout:
        print(line, end="", file=sys.stderr)
        m = re.search(r"stays up for .*: (http://\S+)/", line)
        if m:
            base = m.group(1)
            break
    if base is None:
        sys.exit("screenshots: the demo ended without serving its status page")
    browser = Driver()
    try:
        for name, path, width in SHOTS:
            browser("set_viewport", width=width, height=800)
            browser("goto", url=base + path)
            browser("screenshot", path=str(OUT / name), full_page=True)
            print(f"saved docs/screenshots/{name}", file=sys.stderr)
    finally:
        browser.close()
        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=30)


if __name__ == "__main__":
    main()
