#!/usr/bin/env node
// A scripted "browser" for the end-to-end sign-in test: set as $BROWSER, it opens the URL it is given in
// headless Chromium, optionally clicks a button like a person would (a real mouse press at the button's
// centre), waits for the page that the sign-in ends on, and records what that page shows:
//
//   node headless_browser.mjs --out DIR --name NAME [--click SELECTOR] [--final-prefix URL]
//                             [--detour URL] [--then URL]... [--profile DIR] [--timeout SECONDS]
//                             [--chromium PATH] URL
//
// --detour URL: once the element to click is there, first opens URL in the same tab, records that page in
// result.detour (NAME.detour.png), goes back to the page to click, and clicks there.
// --then URL (repeatable): after the final page, opens each URL in the same tab (same cookies) and records
// the page it shows in result.then[] (NAME.then-N.png). The cookies the browser holds at the end are in
// result.cookies (name, value, httpOnly, sameSite, secure, path).
//
// It drives Chromium through the DevTools protocol over a pipe (--remote-debugging-pipe: JSON messages, each
// ended by a NUL byte, on file descriptors 3 and 4), so it needs only Node.js (no npm package, no port, no
// browser download). Everything it learns lands in DIR:
//
//   NAME.json          the result, written last and atomically: the test waits for it
//   NAME.png           screenshot of the final page; NAME.consent.png: the page before the click
//   NAME.html          the final DOM (document.documentElement.outerHTML)
//   NAME.chromium.log  Chromium's stderr
//   NAME.pids          this process's pid and Chromium's, for the test to clean up after a crash
//   NAME.steps         each step as it happens (the result has them too, but only once it is written)
//
// Chromium is closed on every path (Browser.close, then SIGKILL), and it exits by itself when this process
// dies, since its end of the control pipe closes. A watchdog ends everything after --timeout seconds.
// SPDX-License-Identifier: MIT

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const started = Date.now();
const elapsed = () => (Date.now() - started) / 1000;

// ---- arguments ---------------------------------------------------------------------------------------------

function parseArgs(argv) {
  const a = { timeout: 40, width: 960, height: 720, chromium: process.env.APS_AUTH_CHROMIUM || '', then: [] };
  const rest = [];
  for (let i = 0; i < argv.length; ++i) {
    const m = /^--([a-z-]+)$/.exec(argv[i]);
    if (!m) { rest.push(argv[i]); continue; }
    if (i + 1 >= argv.length) throw new Error(`option --${m[1]} needs a value`);
    const v = argv[++i];
    switch (m[1]) {
      case 'out': a.out = v; break;
      case 'name': a.name = v; break;
      case 'click': a.click = v; break;
      case 'final-prefix': a.finalPrefix = v; break;
      case 'then': a.then.push(v); break;
      case 'detour': a.detour = v; break;
      case 'profile': a.profile = v; break;
      case 'timeout': a.timeout = Number(v); break;
      case 'chromium': a.chromium = v; break;
      case 'width': a.width = Number(v); break;
      case 'height': a.height = Number(v); break;
      default: throw new Error(`unknown option --${m[1]}`);
    }
  }
  if (rest.length !== 1) throw new Error('exactly one URL expected');
  a.url = rest[0];
  if (!a.out || !a.name) throw new Error('--out and --name are required');
  if (!(a.timeout > 0)) throw new Error('--timeout must be a positive number');
  return a;
}

function findChromium(given) {
  const candidates = given ? [given] : [];
  for (const dir of (process.env.PATH || '/usr/bin:/bin').split(':'))
    for (const n of ['chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable'])
      candidates.push(path.join(dir || '.', n));
  candidates.push('/usr/bin/chromium');
  for (const c of candidates) {
    try {
      fs.accessSync(c, fs.constants.X_OK);
      if (fs.statSync(c).isFile()) return c;
    } catch { /* next */ }
  }
  throw new Error('Chromium not found (Debian: apt-get install chromium); set APS_AUTH_CHROMIUM or --chromium');
}

// ---- the DevTools protocol over a pipe ---------------------------------------------------------------------

class Cdp {
  constructor(writable, readable) {
    this.out = writable;
    this.nextId = 1;
    this.pending = new Map();
    this.handlers = [];
    this.closed = false;
    let buf = Buffer.alloc(0);
    readable.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      for (let end = buf.indexOf(0); end >= 0; end = buf.indexOf(0)) {
        const text = buf.subarray(0, end).toString('utf8');
        buf = buf.subarray(end + 1);
        this.dispatch(JSON.parse(text));
      }
    });
    const onClose = () => {
      this.closed = true;
      for (const { reject } of this.pending.values()) reject(new Error('Chromium closed the DevTools pipe'));
      this.pending.clear();
    };
    readable.on('close', onClose);
    readable.on('error', onClose);
    writable.on('error', onClose);
  }
  dispatch(msg) {
    if (msg.id !== undefined) {
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.error) p.reject(new Error(`${p.method}: ${msg.error.message}${msg.error.data ? ' ' + msg.error.data : ''}`));
      else p.resolve(msg.result);
    } else {
      for (const h of this.handlers) h(msg);
    }
  }
  send(method, params = {}, sessionId = undefined) {
    if (this.closed) return Promise.reject(new Error(`${method}: Chromium closed the DevTools pipe`));
    const id = this.nextId++;
    const msg = { id, method, params };
    if (sessionId) msg.sessionId = sessionId;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, method });
      this.out.write(JSON.stringify(msg) + '\0');
    });
  }
  on(handler) { this.handlers.push(handler); }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- main --------------------------------------------------------------------------------------------------

let args;
try {
  args = parseArgs(process.argv.slice(2));
} catch (e) {
  process.stderr.write(`headless_browser: ${e.message}\n`);
  process.exit(2);
}

fs.mkdirSync(args.out, { recursive: true });
const file = (suffix) => path.join(args.out, `${args.name}${suffix}`);
for (const s of ['.json', '.png', '.consent.png', '.html', '.error.png', '.steps'])
  fs.rmSync(file(s), { force: true });

const result = {
  ok: false,
  error: null,
  url: args.url,
  steps: [],          // [seconds since start, what happened]
  consent: null,      // the page clicked on
  final: null,        // the page the sign-in ended on
  detour: null,       // the page of --detour
  then: [],           // the pages of --then, in order
  cookies: [],        // the cookies held at the end
  navigations: [],    // main-frame URLs, in order
  requests: [],       // every URL the page asked for
  dialogs: [],        // alert/confirm/prompt opened by the page (none expected)
  console: [],        // console messages and uncaught exceptions of the page
  chromium: null,
  seconds: 0,
};
const step = (what) => {
  const at = Number(elapsed().toFixed(3));
  result.steps.push([at, what]);
  fs.appendFileSync(file('.steps'), `${at} ${what}\n`);
};
step(`driver started (node ${process.version})`);

let chromium = null;
let profile = args.profile;
let ownProfile = false;
let finished = false;
let pageSession = null;  // the DevTools session of the page, once attached

function writeResult() {
  result.seconds = Number(elapsed().toFixed(3));
  const tmp = file('.json.tmp');
  fs.writeFileSync(tmp, JSON.stringify(result, null, 2) + '\n');
  fs.renameSync(tmp, file('.json'));
}

async function stopChromium(cdp) {
  if (!chromium || chromium.exitCode !== null || chromium.signalCode !== null) return;
  const exited = new Promise((r) => chromium.once('exit', r));
  if (cdp && !cdp.closed) cdp.send('Browser.close').catch(() => {});
  const t = setTimeout(() => { try { chromium.kill('SIGKILL'); } catch { /* gone */ } }, 5000);
  await exited;
  clearTimeout(t);
}

async function finish(cdp, code) {
  if (finished) return;
  finished = true;
  await stopChromium(cdp);
  step('chromium stopped');
  if (ownProfile && profile) fs.rmSync(profile, { recursive: true, force: true });
  writeResult();
  process.exit(code);
}

// The watchdog: whatever hangs, Chromium is killed and the result says why.
const watchdog = setTimeout(() => {
  result.error = result.error || `timed out after ${args.timeout} s (last step: ${JSON.stringify(result.steps.at(-1))})`;
  if (chromium) try { chromium.kill('SIGKILL'); } catch { /* gone */ }
  finish(null, 1);
}, args.timeout * 1000);
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'])
  process.on(sig, () => {
    result.error = result.error || `stopped by ${sig}`;
    if (chromium) try { chromium.kill('SIGKILL'); } catch { /* gone */ }
    finish(null, 1);
  });

async function run() {
  const exe = findChromium(args.chromium);
  if (!profile) {
    profile = fs.mkdtempSync(path.join(os.tmpdir(), 'aps-auth-chromium-'));
    ownProfile = true;
  }
  const flags = [
    // The flags this machine needs (see the environment notes): no sandbox as root, and no background
    // networking, whose connections a closed network refuses.
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    `--user-data-dir=${profile}`,
    '--no-default-browser-check', '--disable-default-apps', '--disable-extensions', '--mute-audio',
    '--disable-features=Translate,MediaRouter,OptimizationHints', '--password-store=basic',
    '--use-mock-keychain', '--hide-scrollbars', '--force-device-scale-factor=1',
    `--window-size=${args.width},${args.height}`,
    '--remote-debugging-pipe', 'about:blank',
  ];
  const log = fs.openSync(file('.chromium.log'), 'w');
  chromium = spawn(exe, flags, { stdio: ['ignore', log, log, 'pipe', 'pipe'] });
  fs.closeSync(log);
  chromium.on('error', (e) => { result.error = result.error || `cannot start ${exe}: ${e.message}`; });
  chromium.on('exit', (code, sig) => step(`chromium exited (${sig || code})`));
  fs.writeFileSync(file('.pids'), `${process.pid}\n${chromium.pid}\n`);
  step(`started ${exe} (pid ${chromium.pid})`);

  const cdp = new Cdp(chromium.stdio[3], chromium.stdio[4]);
  try {
    await drive(cdp);
    result.ok = true;
  } catch (e) {
    result.error = result.error || e.message;
    step(`failed: ${e.message}`);
  }
  return cdp;
}

async function drive(cdp) {
  const version = await cdp.send('Browser.getVersion');
  result.chromium = version.product;
  step(`connected to ${version.product}`);

  const { targetInfos } = await cdp.send('Target.getTargets');
  let page = targetInfos.find((t) => t.type === 'page');
  const targetId = page ? page.targetId : (await cdp.send('Target.createTarget', { url: 'about:blank' })).targetId;
  const { sessionId } = await cdp.send('Target.attachToTarget', { targetId, flatten: true });
  const S = (method, params) => cdp.send(method, params, sessionId);
  pageSession = sessionId;

  cdp.on((msg) => {
    if (msg.sessionId !== sessionId) return;
    const p = msg.params || {};
    switch (msg.method) {
      case 'Network.requestWillBeSent':
        result.requests.push({ url: p.request.url, method: p.request.method, type: p.type || '' });
        break;
      case 'Page.frameNavigated':
        if (!p.frame.parentId) result.navigations.push(p.frame.url);
        break;
      case 'Page.javascriptDialogOpening':
        result.dialogs.push({ type: p.type, message: p.message });
        S('Page.handleJavaScriptDialog', { accept: false }).catch(() => {});
        break;
      case 'Runtime.consoleAPICalled':
        result.console.push(`${p.type}: ${(p.args || []).map((x) => x.value ?? x.description ?? '').join(' ')}`);
        break;
      case 'Runtime.exceptionThrown':
        result.console.push(`exception: ${p.exceptionDetails.exception?.description || p.exceptionDetails.text}`);
        break;
      default:
        break;
    }
  });
  await S('Page.enable');
  await S('Runtime.enable');
  await S('Network.enable');
  await S('Emulation.setDeviceMetricsOverride',
    { width: args.width, height: args.height, deviceScaleFactor: 1, mobile: false });

  // Evaluates an expression in the page; undefined while the page is between documents.
  const evaluate = async (expression) => {
    try {
      const r = await S('Runtime.evaluate', { expression, returnByValue: true, awaitPromise: true });
      return r.exceptionDetails ? undefined : r.result.value;
    } catch (e) {
      if (cdp.closed) throw e;
      return undefined;
    }
  };
  // Waits leave 3 s of the --timeout for a screenshot of where it stopped and a clean close.
  const giveUpAt = started + Math.max(1, args.timeout - 3) * 1000;
  const waitFor = async (what, expression) => {
    for (;;) {
      const v = await evaluate(expression);
      if (v) return v;
      if (cdp.closed) throw new Error(`Chromium went away while waiting for ${what}`);
      if (Date.now() > giveUpAt) {
        const where = await evaluate('location.href + \' "\' + document.title + \'"\'');
        throw new Error(`timed out waiting for ${what}; the page is ${where}`);
      }
      await sleep(50);
    }
  };
  const snapshot = () => evaluate(`(async () => {
    await document.fonts.ready;
    return {
      url: location.href,
      title: document.title,
      text: document.body ? document.body.innerText : '',
      textContent: document.body ? document.body.textContent : '',
      scripts: document.scripts.length,
      images: document.images.length,
      html: document.documentElement.outerHTML,
      card: (() => {
        const c = document.querySelector('.card');
        if (!c) return null;
        const r = c.getBoundingClientRect();
        return { x: r.x, y: r.y, width: r.width, height: r.height,
                 viewportWidth: innerWidth, viewportHeight: innerHeight };
      })(),
    };
  })()`);
  // Opens url in the tab and returns what the new document shows.
  const visit = async (url) => {
    step(`navigate ${url}`);
    const before = await evaluate('performance.timeOrigin');
    const n = await S('Page.navigate', { url });
    if (n.errorText) throw new Error(`navigation to ${url} failed: ${n.errorText}`);
    await waitFor(`the page of ${url}`,
      `performance.timeOrigin !== ${JSON.stringify(before)} && document.readyState === 'complete'`);
    const page = await snapshot();
    delete page.html;
    step(`page ${page.url} "${page.title}"`);
    return page;
  };
  const screenshot = async (to) => {
    const { data } = await S('Page.captureScreenshot', { format: 'png' });
    fs.writeFileSync(to, Buffer.from(data, 'base64'));
  };

  step(`navigate ${args.url}`);
  const nav = await S('Page.navigate', { url: args.url });
  if (nav.errorText) throw new Error(`navigation to ${args.url} failed: ${nav.errorText}`);
  await waitFor('the first page', `location.href !== 'about:blank' && document.readyState === 'complete'`);
  step(`loaded ${await evaluate('location.href')}`);

  if (args.click) {
    const sel = JSON.stringify(args.click);
    await waitFor(`the element ${args.click}`, `!!document.querySelector(${sel})`);
    if (args.detour) {
      const back = await evaluate('location.href');
      result.detour = await visit(args.detour);
      await screenshot(file('.detour.png'));
      await visit(back);
      await waitFor(`the element ${args.click} again`, `!!document.querySelector(${sel})`);
    }
    const consent = await snapshot();
    delete consent.html;
    result.consent = consent;
    await screenshot(file('.consent.png'));
    // Where a person would click: the centre of the element, scrolled into view.
    const at = await evaluate(`(() => {
      const e = document.querySelector(${sel});
      e.scrollIntoView({ block: 'center' });
      const r = e.getBoundingClientRect();
      return { x: r.x + r.width / 2, y: r.y + r.height / 2, label: e.textContent.trim() };
    })()`);
    step(`click "${at.label}" at ${Math.round(at.x)},${Math.round(at.y)}`);
    const base = { x: at.x, y: at.y, button: 'left', clickCount: 1 };
    await S('Input.dispatchMouseEvent', { type: 'mouseMoved', x: at.x, y: at.y });
    await S('Input.dispatchMouseEvent', { type: 'mousePressed', ...base });
    await S('Input.dispatchMouseEvent', { type: 'mouseReleased', ...base });
  }

  if (args.finalPrefix) {
    const prefix = JSON.stringify(args.finalPrefix);
    await waitFor(`a page under ${args.finalPrefix}`,
      `location.href.startsWith(${prefix}) && document.readyState === 'complete'`);
  }
  const fin = await snapshot();
  if (!fin) throw new Error('could not read the final page');
  fs.writeFileSync(file('.html'), fin.html);
  delete fin.html;
  result.final = fin;
  await screenshot(file('.png'));
  step(`final page ${fin.url} "${fin.title}"`);

  for (const [i, url] of args.then.entries()) {
    result.then.push(await visit(url));
    await screenshot(file(`.then-${i + 1}.png`));
  }
  const { cookies } = await S('Network.getCookies', {});
  result.cookies = cookies.map((c) => ({ name: c.name, value: c.value, httpOnly: c.httpOnly,
    sameSite: c.sameSite || '', secure: c.secure, path: c.path }));
}

run()
  .then(async (cdp) => {
    clearTimeout(watchdog);
    if (!result.ok && cdp && !cdp.closed && pageSession) {  // a picture of where it stopped helps more than the message
      try {
        const { data } = await Promise.race([
          cdp.send('Page.captureScreenshot', { format: 'png' }, pageSession),
          sleep(3000).then(() => ({ data: '' })),
        ]);
        if (data) fs.writeFileSync(file('.error.png'), Buffer.from(data, 'base64'));
      } catch { /* no page to show */ }
    }
    await finish(cdp, result.ok ? 0 : 1);
  })
  .catch(async (e) => {
    clearTimeout(watchdog);
    result.error = result.error || e.message;
    await finish(null, 1);
  });
