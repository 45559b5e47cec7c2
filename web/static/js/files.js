// File transfer, as the Go client does it (client/files.go; the wire
// protocol is proto/files.go):
//
//   offer    a chat message whose `file` is {name, size, type, sha256}
//            (sealed for an offline peer, like any message)
//   accept   {"type":"file","op":"accept","id","offset","hash"} on the
//            chat data channel (or a routed "file" envelope): send me the
//            bytes from offset; hash = SHA-256 of the bytes I have
//   bytes    a data channel "parley-file:<id>" per attempt, reliable and
//            ordered: a text header {id, offset[, reset]}, then binary
//            chunks of at most 64 KiB, paced by bufferedAmount
//   done     the whole file arrived and its SHA-256 matched the offer
//   decline / failed   with a code: declined, too_large, hash_mismatch, cancelled
//
// Received bytes stay in memory (a Blob) and are handed to the person as
// a download link (and a thumbnail for images) only once the SHA-256 of
// the whole file matches. A transfer cut by a lost path resumes from the
// bytes received when the link is back (either side asks again); a page
// reload starts a receiving transfer over (the bytes were in memory).

import { FILE_CHANNEL_PREFIX, FILE_CHANNEL_PROTOCOL, MAX_FILE_CHUNK, fileChannelID, randomID, safeFileName } from "./proto.js";
import { Sha256 } from "./sha256.js";
import { selectedPath } from "./stats.js";

const BUF_HIGH = 4 << 20; // the sender waits while more than this is buffered …
const BUF_LOW = 1 << 20; // … until it drains to this (low-water mark)
const READ_BLOCK = 1 << 20; // bytes read from the file at a time
const SMALL_CHUNK = 8 << 10; // message size when paced below 1 MB/s
const STALL_MS = 10000; // a receiver with no bytes this long asks again
const RELINK_MS = 2000; // a transfer waiting for a link asks for one this often
const OPEN_MS = 20000; // a file channel must open within this
const PROGRESS_MS = 1000;
const DUP_ACCEPT_MS = 5000; // an accept for the running attempt's offset within this is a duplicate
export const DEFAULT_MAX_SIZE = 2 * 2 ** 30; // what a page holds in memory

/** humanBytes writes n as people read it (client.HumanBytes). */
export function humanBytes(n) {
  if (n < 1000) return `${n} B`;
  let div = 1000;
  let exp = 0;
  for (let m = Math.floor(n / 1000); m >= 1000; m = Math.floor(m / 1000)) {
    div *= 1000;
    exp++;
  }
  return `${(n / div).toFixed(1)} ${"kMGTPE"[exp]}B`;
}

/** offerText is the words an offer shows to clients that know no files. */
export function offerText(file) {
  return `📎 ${file.name} (${humanBytes(file.size)})`;
}

/** hashBlob is the SHA-256 (hex) of blob's first `end` bytes, read in blocks; onBytes(n) reports progress. */
export async function hashBlob(blob, end = blob.size, onBytes = () => {}) {
  const h = new Sha256();
  for (let pos = 0; pos < end; ) {
    const n = Math.min(READ_BLOCK, end - pos);
    h.update(new Uint8Array(await blob.slice(pos, pos + n).arrayBuffer()));
    pos += n;
    onBytes(pos);
  }
  return h.hex();
}

const FINAL = new Set(["done", "declined", "failed"]);

/**
 * Files keeps every transfer and emits "change" (detail {id, peer}) when
 * one moves. A transfer is
 *   {id, peer, out, file: {name, size, type, sha256}, state:
 *    "preparing"|"offered"|"active"|"done"|"declined"|"failed",
 *    bytes, rate, eta, path, code, reason, url (a blob: URL when done, or
 *    of the file we send), savedName (receive)}
 * Hooks: online(peer) says whether peer is online; budget({path, via,
 * viaURL}) is how many bytes per second a transfer may send on that path
 * (0: unpaced) — a relayed path keeps under the supernode's per-session
 * budget, far under it while a call shares it.
 */
export class Files extends EventTarget {
  constructor({ sig, links, chat, online = () => true, budget = () => 0, maxSize = DEFAULT_MAX_SIZE }) {
    super();
    this.sig = sig;
    this.links = links;
    this.chat = chat;
    this.online = online;
    this.budget = budget;
    this.maxSize = maxSize;
    this.transfers = new Map();
  }

  #changed(t) {
    this.dispatchEvent(new CustomEvent("change", { detail: { id: t.id, peer: t.peer } }));
  }

  get(id) {
    return this.transfers.get(id) ?? null;
  }

  /** forPeer lists the transfers with peer, oldest first. */
  forPeer(peer) {
    return [...this.transfers.values()].filter((t) => t.peer === peer);
  }

  // ---- sending ----

  /** send offers file (a File or Blob with a name) to peer; it resolves to the transfer. */
  async send(peer, file) {
    const t = {
      id: randomID(), peer, out: true, blob: file,
      file: { name: file.name || "file", size: file.size, type: (file.type || "").slice(0, 127), sha256: "" },
      state: "preparing", bytes: 0, rate: 0, eta: 0, path: "", code: "", reason: "",
      url: URL.createObjectURL(file), sentTotal: 0, resumed: 0, run: null, pending: null, lastAsk: 0, created: Date.now(),
    };
    if (!/^[\x21-\x7e]*$/.test(t.file.type)) t.file.type = "";
    this.transfers.set(t.id, t);
    this.#changed(t);
    t.file.sha256 = await hashBlob(file, file.size, (n) => {
      t.bytes = n; // hashing progress, shown as "preparing"
    });
    t.bytes = 0;
    t.state = "offered";
    this.chat.send(peer, offerText(t.file), { id: t.id, file: t.file });
    this.#changed(t);
    return t;
  }

  /** #onAccept (sender): start an attempt from offset, unless that attempt already runs. */
  #onAccept(t, offset, hash) {
    if (offset > t.file.size) return this.#end(t, "failed", "bad_request", `asked for byte ${offset} of ${t.file.size}`, true);
    const r = t.run;
    if (r && !r.stopped && r.offset === offset && performance.now() - r.started < DUP_ACCEPT_MS) return;
    t.state = "active";
    t.pending = { offset, hash: hash || "" };
    this.#startSend(t);
  }

  #startSend(t) {
    const req = t.pending;
    if (!req || FINAL.has(t.state)) return;
    const l = this.links.get(t.peer);
    if (!l?.dcOpen) {
      if (this.online(t.peer)) this.links.ensure(t.peer); // started when the link opens
      return;
    }
    t.pending = null;
    t.run?.stop();
    const run = {
      offset: req.offset, sent: 0, started: performance.now(), stopped: false, dc: null,
      stop() {
        this.stopped = true;
        try {
          this.dc?.close();
        } catch {
          // already closed
        }
      },
    };
    if (req.offset > 0) t.resumed++;
    t.run = run;
    t.lastProgress = 0;
    this.#push(t, run, l, req.hash).catch((e) => {
      if (run.stopped) return;
      if (t.run === run) t.run = null;
      if (e?.permanent) this.#end(t, "failed", "cancelled", e.message, true);
      else console.info("parley: file attempt ended; waiting for the receiver to ask again:", e?.message ?? e);
    });
    this.#changed(t);
  }

  async #push(t, run, l, prefixHash) {
    let offset = run.offset;
    let reset = false;
    if (offset > 0 && (await hashBlob(t.blob, offset)) !== prefixHash) {
      offset = 0;
      reset = true;
      run.offset = 0;
    }
    if (run.stopped) return;
    t.pace = this.budget(await this.#notePath(t, l)) || 0; // paced from the first byte
    const dc = l.pc.createDataChannel(FILE_CHANNEL_PREFIX + t.id, { ordered: true, protocol: FILE_CHANNEL_PROTOCOL });
    run.dc = dc;
    dc.binaryType = "arraybuffer";
    dc.bufferedAmountLowThreshold = BUF_LOW;
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("file channel did not open")), OPEN_MS);
      dc.onopen = () => {
        clearTimeout(timer);
        resolve();
      };
      dc.onclose = () => {
        clearTimeout(timer);
        reject(new Error("file channel closed"));
      };
    });
    const closed = new Promise((resolve) => {
      dc.onclose = resolve;
    });
    dc.send(JSON.stringify(reset ? { id: t.id, offset: 0, reset: true } : { id: t.id, offset }));
    let tokens = 0;
    let last = performance.now();
    for (let pos = offset; pos < t.file.size; ) {
      const block = new Uint8Array(await t.blob.slice(pos, Math.min(pos + READ_BLOCK, t.file.size)).arrayBuffer());
      if (block.length === 0) throw Object.assign(new Error(`${t.file.name} can no longer be read`), { permanent: true });
      for (let i = 0; i < block.length; ) {
        if (run.stopped) return;
        if (dc.readyState !== "open") throw new Error("file channel closed");
        const rate = t.pace > 0 ? t.pace : 0;
        const n = Math.min(rate > 0 && rate < 1e6 ? SMALL_CHUNK : MAX_FILE_CHUNK, block.length - i);
        while (dc.bufferedAmount > BUF_HIGH) {
          await Promise.race([new Promise((r) => dc.addEventListener("bufferedamountlow", r, { once: true })), closed, sleep(250)]);
          if (dc.readyState !== "open") throw new Error("file channel closed");
        }
        if (rate > 0) {
          // A token bucket of one message: wait until the pace allows n bytes.
          const now = performance.now();
          tokens = Math.min(n, tokens + ((now - last) / 1000) * rate);
          last = now;
          if (tokens < n) {
            await sleep(((n - tokens) / rate) * 1000);
            tokens = n;
            last = performance.now();
          }
          tokens -= n;
        }
        dc.send(block.subarray(i, i + n));
        run.sent += n;
        t.sentTotal += n;
        i += n;
      }
      pos += block.length;
    }
  }

  // ---- receiving ----

  /**
   * onOffer handles an offer of file id from peer: a chat message that
   * carries one, or the sender's re-sync (op offer). A known id gets our
   * state back.
   */
  onOffer(peer, id, file) {
    const known = this.transfers.get(id);
    if (known) {
      if (!known.out && known.peer === peer) this.#replyState(known);
      return;
    }
    const t = {
      id, peer, out: false, file: { name: file.name, size: file.size, type: file.type ?? "", sha256: file.sha256 },
      state: "offered", bytes: 0, rate: 0, eta: 0, path: "", code: "", reason: "", url: "", savedName: safeFileName(file.name),
      parts: null, hash: null, have: 0, dc: null, skip: 0, lastData: 0, lastAsk: 0, created: Date.now(),
    };
    this.transfers.set(id, t);
    if (file.size > this.maxSize) {
      this.#end(t, "failed", "too_large", `${file.name} (${humanBytes(file.size)}) is over this page’s limit of ${humanBytes(this.maxSize)}`, true);
      return;
    }
    this.#changed(t);
  }

  #replyState(t) {
    switch (t.state) {
      case "active":
        return this.#ask(t);
      case "done":
        return this.#ctl(t.peer, { op: "done", id: t.id });
      case "declined":
        return this.#ctl(t.peer, { op: "decline", id: t.id, code: t.code, reason: t.reason });
      case "failed":
        return this.#ctl(t.peer, { op: "failed", id: t.id, code: t.code, reason: t.reason });
    }
  }

  /** accept starts receiving offer id. */
  accept(id) {
    const t = this.transfers.get(id);
    if (!t || t.out || t.state !== "offered") return false;
    t.state = "active";
    t.parts = [];
    t.hash = new Sha256();
    t.have = 0;
    this.#ask(t);
    this.#changed(t);
    return true;
  }

  /** decline refuses offer id. */
  decline(id, reason = "") {
    const t = this.transfers.get(id);
    if (!t || t.out || t.state !== "offered") return false;
    this.#end(t, "declined", "declined", reason || `declined by ${this.sig.name}`, true);
    return true;
  }

  /** cancel stops transfer id, either way. */
  cancel(id) {
    const t = this.transfers.get(id);
    if (!t || FINAL.has(t.state)) return false;
    this.#end(t, "failed", "cancelled", `cancelled by ${this.sig.name}`, true);
    return true;
  }

  /** #ask (receiver) asks the sender for the bytes from what we have on. */
  #ask(t) {
    const c = { op: "accept", id: t.id, offset: t.have };
    if (t.have > 0) c.hash = t.hash.hex();
    t.dc = null; // bytes count again from the next channel's header
    t.lastAsk = t.lastData = performance.now();
    this.#ctl(t.peer, c);
  }

  /** onDataChannel takes a file channel the peer opened (links hook). */
  onDataChannel(link, dc) {
    const t = this.transfers.get(fileChannelID(dc.label));
    if (!t || t.out || t.peer !== link.peer) {
      dc.close();
      return;
    }
    dc.binaryType = "arraybuffer";
    dc.onmessage = (ev) => this.#onData(t, dc, ev.data);
  }

  #onData(t, dc, data) {
    if (t.state !== "active" || !t.parts) return;
    if (typeof data === "string") {
      let h;
      try {
        h = JSON.parse(data);
      } catch {
        h = null;
      }
      if (!h || h.id !== t.id || !Number.isSafeInteger(h.offset) || h.offset < 0 || h.offset > t.have || (h.reset && h.offset !== 0)) {
        dc.close();
        this.#ask(t); // a gap, or nonsense: ask again
        return;
      }
      if (h.reset && t.have > 0) {
        t.parts = [];
        t.hash = new Sha256();
        t.have = 0;
      }
      if (t.dc && t.dc !== dc) t.dc.close();
      t.dc = dc;
      const l = this.links.get(t.peer);
      if (l) this.#notePath(t, l);
      t.skip = t.have - h.offset;
      t.lastData = performance.now();
      if (t.have === t.file.size) this.#finish(t);
      return;
    }
    if (dc !== t.dc) return; // an older channel's tail
    let b = new Uint8Array(data);
    if (t.skip > 0) {
      const n = Math.min(t.skip, b.length);
      b = b.subarray(n);
      t.skip -= n;
    }
    if (b.length === 0) return;
    if (t.have + b.length > t.file.size) {
      this.#end(t, "failed", "bad_request", `the sender sent more than the ${t.file.size} bytes offered`, true);
      return;
    }
    t.parts.push(b);
    t.hash.update(b);
    t.have += b.length;
    t.bytes = t.have;
    t.lastData = performance.now();
    if (t.have === t.file.size) this.#finish(t);
  }

  #finish(t) {
    const got = t.hash.hex();
    if (got !== t.file.sha256) {
      this.#end(t, "failed", "hash_mismatch", `${t.file.name} arrived with SHA-256 ${got.slice(0, 12)}…, not the ${t.file.sha256.slice(0, 12)}… offered; it was not kept`, true);
      return;
    }
    const blob = new Blob(t.parts, { type: t.file.type || "application/octet-stream" });
    t.parts = null;
    t.url = URL.createObjectURL(blob);
    t.blob = blob;
    this.#end(t, "done", "", "", true);
  }

  // ---- control ----

  /** onControl handles a FileControl from peer (chat data channel or server). */
  onControl(peer, c) {
    if (c.op === "offer") return this.onOffer(peer, c.id, c.file);
    const t = this.transfers.get(c.id);
    if (!t || t.peer !== peer) {
      if (c.op === "accept") this.#ctl(peer, { op: "failed", id: c.id, code: "not_found", reason: "the sender no longer has this transfer" });
      return;
    }
    if (FINAL.has(t.state)) {
      if (t.out && c.op === "accept" && t.state !== "done") this.#ctl(peer, { op: "failed", id: t.id, code: t.code, reason: t.reason });
      return;
    }
    if (t.out && c.op === "accept") this.#onAccept(t, c.offset ?? 0, c.hash);
    else if (t.out && c.op === "done") this.#end(t, "done", "", "", false);
    else if (t.out && c.op === "decline") this.#end(t, "declined", c.code || "declined", c.reason || `declined by ${peer}`, false);
    else if (c.op === "failed") this.#end(t, "failed", c.code || "cancelled", c.reason || `failed at ${peer}`, false);
  }

  #ctl(peer, c) {
    const l = this.links.get(peer);
    if (l?.dcOpen) {
      try {
        l.dc.send(JSON.stringify({ type: "file", ...c }));
        return;
      } catch {
        // fall through to the server
      }
    }
    if (this.online(peer)) {
      this.sig.send("file", peer, c);
      this.links.ensure(peer);
    }
  }

  #end(t, state, code, reason, tell) {
    if (FINAL.has(t.state)) return;
    t.state = state;
    t.code = code;
    t.reason = reason;
    t.run?.stop();
    t.run = null;
    t.pending = null;
    if (!t.out) {
      t.dc?.close();
      t.dc = null;
      if (state !== "done") t.parts = null;
    }
    if (state === "done") t.bytes = t.file.size;
    t.rate = 0;
    t.pace = 0;
    if (tell) {
      if (state === "declined") this.#ctl(t.peer, { op: "decline", id: t.id, code, reason });
      else if (state === "failed") this.#ctl(t.peer, { op: "failed", id: t.id, code, reason });
      else if (state === "done") this.#ctl(t.peer, { op: "done", id: t.id });
    }
    this.#changed(t);
  }

  /** #notePath records the link's selected path on t ("direct" or "relay") and returns it (null if unknown). */
  async #notePath(t, l) {
    try {
      const p = selectedPath([...(await l.pc.getStats()).values()]);
      if (p.path) t.path = p.path;
      return p;
    } catch {
      return null; // stats unavailable: keep the last path
    }
  }

  // ---- link hooks and the tick ----

  /** onLinkOpen: peer's chat data channel opened; transfers resume. */
  onLinkOpen(link) {
    for (const t of this.transfers.values()) {
      if (t.peer !== link.peer || FINAL.has(t.state) || t.state === "preparing") continue;
      if (t.out && t.pending) this.#startSend(t);
      else if (t.out) {
        t.lastAsk = performance.now();
        this.#ctl(t.peer, { op: "offer", id: t.id, file: t.file });
      } else if (t.state === "active") this.#ask(t);
    }
  }

  /** tick (twice a second): links for waiting transfers, stalled receivers, pace, progress. */
  async tick(now = performance.now()) {
    for (const t of this.transfers.values()) {
      if (FINAL.has(t.state) || t.state === "preparing" || (!t.out && t.state === "offered")) continue;
      const l = this.links.get(t.peer);
      if (!l?.dcOpen) {
        if (this.online(t.peer) && now - t.lastAsk > RELINK_MS) {
          t.lastAsk = now;
          this.links.ensure(t.peer);
        }
        continue;
      }
      if (!t.out && t.state === "active" && now - t.lastData > STALL_MS && now - t.lastAsk > STALL_MS) this.#ask(t);
      if (t.state !== "active" || now - (t.lastProgress ?? 0) < PROGRESS_MS) continue;
      const bytes = t.out ? (t.run ? Math.max(t.run.offset, t.run.offset + t.run.sent - (t.run.dc?.bufferedAmount ?? 0)) : t.bytes) : t.have;
      if (t.lastProgress && bytes >= t.bytes) {
        const dt = (now - t.lastProgress) / 1000;
        const r = (bytes - t.lastBytes) / dt;
        t.rate = r;
        t.eta = r > 0 ? (t.file.size - bytes) / r : 0;
      }
      t.lastProgress = now;
      t.lastBytes = bytes;
      t.bytes = bytes;
      const p = await this.#notePath(t, l);
      if (t.out && p) t.pace = this.budget(p) || 0;
      this.#changed(t);
    }
  }
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}
