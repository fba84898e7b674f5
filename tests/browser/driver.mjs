// Drives one headless Chromium for the Rust tests (tests/harness/browser.rs): one JSON command
// per line on stdin, one JSON answer per line on stdout, in order. A line-protocol child keeps
// the tests in Rust while the browser is driven by playwright-core, which has no Rust port.
//
// Command: {"id": 1, "cmd": "goto", "url": "...", "timeout_ms": 10000}
// Answer:  {"id": 1, "ok": true, "value": ..., "at_ms": 1700000000000}
//          {"id": 1, "ok": false, "error": "..."}
// The first line out is {"ready": true, "version": "<chromium version>"} once the browser runs.
// stdin closing (the test ended or died) closes the browser and ends the process.
//
// Commands (every one takes an optional timeout_ms, default 10000):
//   goto {url, wait_until?}          -> {status, url}          (loopback URLs only)
//   eval {js}                        -> the expression's JSON value (promises awaited)
//   wait_for {selector, state?}      -> null, at_ms, already   (CSS selector, first match;
//                                                                state attached|detached|visible|hidden)
//   wait_for_function {js}           -> the truthy value, at_ms, already (js is an expression)
//     already: the condition held when the wait began; at_ms is then that moment
//   click {selector}                 -> null, at_ms            (after the click was dispatched)
//   fill {selector, value}           -> null
//   text {selector}                  -> innerText
//   count {selector}                 -> number of matches now
//   attr {selector, name}            -> string or null
//   cookies                          -> [{name, value, domain, path, expires, httpOnly, secure, sameSite}]
//   request {method, url, headers?, body?} -> {status, headers, body} (the context's cookies)
//   screenshot {path, full_page?}    -> {bytes}
//   set_viewport {width, height}     -> null
//   url                              -> the page's URL
//   errors                           -> page errors, console errors, refused requests so far
//   close                            -> null, then the driver exits
// click, fill, text and attr take Playwright selectors (CSS, text=..., ...) that must match
// exactly one element.
import { createRequire } from 'node:module';
import path from 'node:path';
import readline from 'node:readline';

const PLAYWRIGHT_DIR = process.env.ROLLWATCH_PLAYWRIGHT_DIR || '/var/lib/rollwatch-testbed/browser';
const CHROMIUM = process.env.ROLLWATCH_CHROMIUM || '/usr/bin/chromium';
const DEFAULT_TIMEOUT_MS = 10_000;

function send(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function fail(message) {
  process.stderr.write(`driver: ${message}\n`);
  process.exit(1);
}

let playwright;
try {
  // playwright-core lives in a cache outside the repository (scripts/setup installs it there).
  playwright = createRequire(path.join(PLAYWRIGHT_DIR, 'package.json'))('playwright-core');
} catch (e) {
  fail(`playwright-core not found under ${PLAYWRIGHT_DIR} (run scripts/setup): ${e.message}`);
}

// Tests may only reach loopback: anything else the page asks for is refused before it leaves
// the browser and noted, so a page that calls out is visible in `errors`.
function loopback(url) {
  try {
    const u = new URL(url);
    if (u.protocol === 'data:' || u.protocol === 'blob:' || u.protocol === 'about:') return true;
    const host = u.hostname.replace(/^\[|\]$/g, '');
    return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
  } catch {
    return false;
  }
}

const problems = [];
let browser;
try {
  browser = await playwright.chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox'],
  });
} catch (e) {
  fail(`cannot launch ${CHROMIUM}: ${e.message}`);
}
const context = await browser.newContext();
await context.route('**/*', (route) => {
  const url = route.request().url();
  if (loopback(url)) return route.continue();
  problems.push(`blocked request to ${url}`);
  return route.abort('blockedbyclient');
});
const page = await context.newPage();
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.on('console', (m) => {
  if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
});

// Waits inside the page until `check` (a function body) returns something truthy, and answers
// {v, t, already}: its value and the page's Date.now() at that moment; `already` when it held at
// the first check, so `t` is when the wait began, later than the change itself. The page re-checks on every DOM
// mutation, so `t` is the moment a script changed the page, not the next poll; a 20 ms timer
// catches what no mutation shows (layout, timers, globals). Playwright's own waits poll at
// intervals growing to 500 ms, too coarse to time the page's updates; and its waitForFunction
// compiles with eval(), which a page whose Content-Security-Policy forbids eval refuses, while
// this source is compiled by the debugger protocol, outside the page's policy.
async function waitInPage(check, timeout, what) {
  const until = Date.now() + timeout;
  for (;;) {
    const left = Math.max(0, until - Date.now());
    const source = `new Promise((resolve) => {
      const check = () => { ${check} };
      let done = false, observer, poll, timer;
      const finish = (r) => {
        if (done) return;
        done = true;
        if (observer) observer.disconnect();
        clearInterval(poll);
        clearTimeout(timer);
        resolve(r);
      };
      let first = true;
      const tick = () => {
        let v;
        try { v = check(); } catch (e) { finish({ error: String((e && e.message) || e) }); return; }
        if (v) finish({ v, t: Date.now(), already: first });
        first = false;
      };
      tick();
      if (done) return;
      observer = new MutationObserver(tick);
      observer.observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
      poll = setInterval(tick, 20);
      timer = setTimeout(() => finish(null), ${left});
    })`;
    let r;
    try {
      r = await page.evaluate(source);
    } catch (e) {
      // A navigation replaced the page's context: wait in the new one.
      if (!/context was destroyed|navigat/i.test(String(e && e.message))) throw e;
      if (Date.now() >= until) throw new Error(`${what}: not true within ${timeout} ms`);
      await new Promise((res) => setTimeout(res, 20));
      continue;
    }
    if (r && r.error) throw new Error(`${what}: ${r.error}`);
    if (r) return r;
    throw new Error(`${what}: not true within ${timeout} ms`);
  }
}

function need(c, field) {
  if (c[field] === undefined || c[field] === null) throw new Error(`${c.cmd}: missing "${field}"`);
  return c[field];
}

// Each handler returns {value, at_ms?}. `timeout` is the command's deadline in ms.
const handlers = {
  async goto(c, timeout) {
    const url = need(c, 'url');
    if (!loopback(url)) throw new Error(`goto: ${url} is not a loopback address`);
    const res = await page.goto(url, { timeout, waitUntil: c.wait_until || 'load' });
    return { value: { status: res ? res.status() : null, url: page.url() } };
  },
  async eval(c) {
    const v = await page.evaluate(need(c, 'js'));
    return { value: v === undefined ? null : v };
  },
  async wait_for(c, timeout) {
    const state = c.state || 'visible';
    const test = {
      attached: 'el',
      detached: '!el',
      visible: 'visible(el)',
      hidden: '!visible(el)',
    }[state];
    if (!test) throw new Error(`wait_for: unknown state ${JSON.stringify(state)}`);
    const check = `const el = document.querySelector(${JSON.stringify(need(c, 'selector'))});
      const visible = (e) => { if (!e) return false; const r = e.getBoundingClientRect();
        return r.width > 0 && r.height > 0 && getComputedStyle(e).visibility !== 'hidden'; };
      return ${test};`;
    const { t, already } = await waitInPage(check, timeout, `${c.selector} ${state}`);
    return { value: null, at_ms: t, already };
  },
  async wait_for_function(c, timeout) {
    const js = need(c, 'js');
    const { v, t, already } = await waitInPage(`return (${js});`, timeout, js);
    return { value: v, at_ms: t, already };
  },
  async click(c, timeout) {
    await page.locator(need(c, 'selector')).click({ timeout });
    return { value: null, at_ms: Date.now() };
  },
  async fill(c, timeout) {
    await page.locator(need(c, 'selector')).fill(String(need(c, 'value')), { timeout });
    return { value: null };
  },
  async text(c, timeout) {
    return { value: await page.locator(need(c, 'selector')).innerText({ timeout }) };
  },
  async count(c) {
    return { value: await page.locator(need(c, 'selector')).count() };
  },
  async attr(c, timeout) {
    return { value: await page.locator(need(c, 'selector')).getAttribute(need(c, 'name'), { timeout }) };
  },
  async cookies() {
    return { value: await context.cookies() };
  },
  async request(c, timeout) {
    const url = need(c, 'url');
    if (!loopback(url)) throw new Error(`request: ${url} is not a loopback address`);
    // context.request shares the context's cookie jar: the request carries the page's cookies.
    const res = await context.request.fetch(url, {
      method: c.method || 'GET',
      headers: c.headers || {},
      data: c.body === undefined || c.body === null ? undefined : String(c.body),
      timeout,
      maxRedirects: 0,
      failOnStatusCode: false,
    });
    const value = { status: res.status(), headers: res.headers(), body: await res.text() };
    await res.dispose();
    return { value };
  },
  async screenshot(c, timeout) {
    const buf = await page.screenshot({ path: need(c, 'path'), fullPage: !!c.full_page, timeout });
    return { value: { bytes: buf.length } };
  },
  async set_viewport(c) {
    await page.setViewportSize({ width: need(c, 'width'), height: need(c, 'height') });
    return { value: null };
  },
  async url() {
    return { value: page.url() };
  },
  async errors() {
    return { value: problems.slice() };
  },
  async close() {
    await browser.close();
    return { value: null };
  },
};

async function run(c) {
  const handler = Object.hasOwn(handlers, c.cmd) ? handlers[c.cmd] : null;
  if (!handler) throw new Error(`unknown command ${JSON.stringify(c.cmd)}`);
  const timeout = Number.isFinite(c.timeout_ms) ? c.timeout_ms : DEFAULT_TIMEOUT_MS;
  // Playwright's own timeouts cover most commands; this one also covers `eval` and `count`,
  // which have none, with a little slack so Playwright's clearer message wins when it has one.
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${c.cmd}: no result within ${timeout} ms`)), timeout + 250);
  });
  try {
    return await Promise.race([handler(c, timeout), deadline]);
  } finally {
    clearTimeout(timer);
  }
}

async function shutdown(code) {
  const guard = setTimeout(() => process.exit(code), 3000);
  guard.unref();
  await browser.close().catch(() => {});
  process.exit(code);
}

send({ ready: true, version: browser.version() });

// Commands run one at a time, in the order they came: answers keep the same order.
let queue = Promise.resolve();
const lines = readline.createInterface({ input: process.stdin, terminal: false });
lines.on('line', (line) => {
  if (!line.trim()) return;
  queue = queue.then(async () => {
    let c;
    try {
      c = JSON.parse(line);
    } catch (e) {
      send({ id: null, ok: false, error: `not JSON: ${e.message}` });
      return;
    }
    try {
      const { value, at_ms, already } = await run(c);
      const extra = { ...(at_ms === undefined ? {} : { at_ms }), ...(already === undefined ? {} : { already }) };
      send({ id: c.id ?? null, ok: true, value, ...extra });
      if (c.cmd === 'close') await shutdown(0);
    } catch (e) {
      send({ id: c.id ?? null, ok: false, error: String(e && e.message ? e.message : e) });
    }
  });
});
lines.on('close', () => {
  queue.then(() => shutdown(0));
});
process.on('SIGTERM', () => shutdown(143));
