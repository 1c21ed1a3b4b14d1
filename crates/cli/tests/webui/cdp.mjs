// A small Chrome DevTools Protocol client: enough to drive one page of a headless Chromium
// that is already running with --remote-debugging-port. Needs Node 20 with
// --experimental-websocket (or Node 22+, where WebSocket is global). Every wait is bounded.

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Fetches JSON from the DevTools HTTP endpoint, retrying until `ms` have passed. */
async function devtoolsJson(port, path, ms) {
  const until = Date.now() + ms;
  let last;
  while (Date.now() < until) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(2000) });
      if (r.ok) return await r.json();
      last = new Error(`${path}: HTTP ${r.status}`);
    } catch (e) {
      last = e;
    }
    await sleep(200);
  }
  throw new Error(`Chromium's DevTools on port ${port} did not answer within ${ms} ms: ${last?.message}`);
}

export class Page {
  /** Connects to the first page target of the browser listening on `port`. */
  static async connect(port, { startMs = 20000, log = () => {} } = {}) {
    let target;
    const until = Date.now() + startMs;
    while (!target) {
      const list = await devtoolsJson(port, "/json/list", Math.max(1, until - Date.now()));
      target = list.find((t) => t.type === "page");
      if (!target) {
        if (Date.now() > until) throw new Error("Chromium has no page target");
        await sleep(200);
      }
    }
    const ws = new WebSocket(target.webSocketDebuggerUrl);
    await new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error("DevTools WebSocket did not open")), 5000);
      ws.addEventListener("open", () => { clearTimeout(t); resolve(); });
      ws.addEventListener("error", () => { clearTimeout(t); reject(new Error("DevTools WebSocket failed")); });
    });
    const page = new Page(ws, log);
    await page.send("Page.enable");
    await page.send("Runtime.enable");
    return page;
  }

  constructor(ws, log) {
    this.ws = ws;
    this.log = log;
    this.seq = 0;
    this.pending = new Map();
    /** Uncaught exceptions and console errors in the page, for the test to assert on. */
    this.errors = [];
    /** Messages of the dialogs accepted so far. */
    this.dialogs = [];
    ws.addEventListener("message", (m) => this.onMessage(JSON.parse(m.data)));
    ws.addEventListener("close", () => {
      for (const { reject } of this.pending.values()) reject(new Error("DevTools connection closed"));
      this.pending.clear();
    });
  }

  onMessage(msg) {
    if (msg.id !== undefined) {
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.error) p.reject(new Error(`${p.method}: ${msg.error.message}`));
      else p.resolve(msg.result);
      return;
    }
    const params = msg.params ?? {};
    switch (msg.method) {
      // confirm() (the Kill button) blocks the page until answered: accept every dialog.
      case "Page.javascriptDialogOpening":
        this.dialogs.push(params.message);
        this.log(`dialog: ${params.message}`);
        this.send("Page.handleJavaScriptDialog", { accept: true }).catch((e) => this.log(`dialog: ${e.message}`));
        break;
      case "Runtime.exceptionThrown": {
        const d = params.exceptionDetails ?? {};
        const text = d.exception?.description ?? d.text ?? "exception";
        this.errors.push(text);
        this.log(`page exception: ${text}`);
        break;
      }
      case "Runtime.consoleAPICalled": {
        const text = (params.args ?? []).map((a) => a.value ?? a.description).join(" ");
        if (params.type === "error") this.errors.push(text);
        this.log(`console.${params.type}: ${text}`);
        break;
      }
      default:
    }
  }

  send(method, params = {}, ms = 10000) {
    const id = ++this.seq;
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${method}: no answer within ${ms} ms`));
      }, ms);
      this.pending.set(id, {
        method,
        resolve: (v) => { clearTimeout(t); resolve(v); },
        reject: (e) => { clearTimeout(t); reject(e); },
      });
      this.ws.send(JSON.stringify({ id, method, params }));
    });
  }

  /** The value of a JavaScript expression in the page (promises awaited). */
  async eval(expression) {
    const r = await this.send("Runtime.evaluate", { expression, awaitPromise: true, returnByValue: true });
    if (r.exceptionDetails) {
      const d = r.exceptionDetails;
      throw new Error(`${expression.slice(0, 80)}: ${d.exception?.description ?? d.text}`);
    }
    return r.result?.value;
  }

  /** Waits until `expression` is truthy, returning its value; throws after `ms`. */
  async until(expression, what, ms = 10000) {
    const end = Date.now() + ms;
    for (;;) {
      const v = await this.eval(expression);
      if (v) return v;
      if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
      await sleep(150);
    }
  }

  async viewport(width, height, mobile = false) {
    await this.send("Emulation.setDeviceMetricsOverride", { width, height, deviceScaleFactor: 1, mobile });
  }

  async colorScheme(value) {
    await this.send("Emulation.setEmulatedMedia", { features: [{ name: "prefers-color-scheme", value }] });
  }

  /** Loads `url`; a change of hash on the same document is a same-document navigation. */
  async goto(url) {
    const r = await this.send("Page.navigate", { url });
    if (r.errorText) throw new Error(`navigate ${url}: ${r.errorText}`);
  }

  /** A real mouse click in the middle of the element `selector` matches. */
  async click(selector) {
    const box = await this.eval(`(() => {
      const el = document.querySelector(${JSON.stringify(selector)});
      if (!el) return null;
      el.scrollIntoView({ block: "center" });
      const r = el.getBoundingClientRect();
      return { x: r.left + r.width / 2, y: r.top + r.height / 2 };
    })()`);
    if (!box) throw new Error(`click: nothing matches ${selector}`);
    const base = { x: box.x, y: box.y, button: "left", clickCount: 1 };
    await this.send("Input.dispatchMouseEvent", { type: "mouseMoved", x: box.x, y: box.y });
    await this.send("Input.dispatchMouseEvent", { type: "mousePressed", ...base });
    await this.send("Input.dispatchMouseEvent", { type: "mouseReleased", ...base });
  }

  /** The viewport as PNG bytes. */
  async screenshot() {
    const r = await this.send("Page.captureScreenshot", { format: "png" }, 20000);
    return Buffer.from(r.data, "base64");
  }

  close() {
    this.ws.close();
  }
}

export { sleep };
