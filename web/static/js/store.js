// The page's durable store, in IndexedDB, one database per signed-in name
// ("parley-history:NAME"): what internal/history is to the terminal client
// (client.MessageStore, SeqStore and Outbox). It keeps
//   messages  every message of every conversation, in and out, keyed by
//             [peer, dir, id]: the history shown after a reload, and the
//             duplicate filter (an incoming id is stored once, for ever,
//             however many ids came since)
//   outbox    what we sent and have no receipt for yet, sent again after a
//             reload under the same id and sequence number
//   meta      per peer: the last sequence number we gave a message to them
//             ("out:" + peer) and the last one of theirs we took ("in:" + peer)
//   drafts    the unsent text of each conversation
// A message we receive is stored before its delivery receipt goes back
// (chat.js), so a receipt always means "kept here".
//
// Where IndexedDB cannot be opened (storage off) MemoryStore does the same
// for the life of the page.

const VERSION = 1;

function promisify(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function done(t) {
  const p = new Promise((resolve, reject) => {
    t.oncomplete = () => resolve();
    t.onerror = () => reject(t.error);
    t.onabort = () => reject(t.error ?? new Error("transaction aborted"));
  });
  // Every request is issued by now: commit at once rather than when the
  // event loop comes round (a page closed or reloaded in between aborts a
  // transaction that has not committed: a call log line written as the
  // person hangs up and reloads was lost on a loaded machine).
  try {
    t.commit?.();
  } catch {
    // already committing or finished
  }
  return p;
}

/** openStore opens name's store: IndexedDB, or memory when that fails. */
export async function openStore(name) {
  try {
    return await IDBStore.open(name);
  } catch (e) {
    console.warn("parley: history is kept for this visit only:", e?.message ?? e);
    return new MemoryStore();
  }
}

/** row is what the store keeps of a message (no transient fields). */
function row(m) {
  const r = { peer: m.peer, dir: m.dir, id: m.id, text: m.text, ts: m.ts, n: m.n, status: m.status, path: m.path || "", error: m.error || "", seq: m.seq || 0 };
  if (m.file) r.file = m.file;
  if (m.call) r.call = m.call;
  return r;
}

export class IDBStore {
  constructor(db) {
    this.db = db;
    this.durable = true;
  }

  static async open(name) {
    const req = indexedDB.open("parley-history:" + name, VERSION);
    req.onupgradeneeded = () => {
      const db = req.result;
      const msgs = db.createObjectStore("messages", { keyPath: ["peer", "dir", "id"] });
      msgs.createIndex("n", "n");
      db.createObjectStore("outbox", { keyPath: "id" });
      db.createObjectStore("meta", { keyPath: "k" });
      db.createObjectStore("drafts", { keyPath: "peer" });
    };
    req.onblocked = () => console.warn("parley: history database upgrade waits for another tab");
    return new IDBStore(await promisify(req));
  }

  close() {
    this.db.close();
  }

  /** history returns the last limit messages, oldest first. */
  async history(limit = 5000) {
    const t = this.db.transaction("messages");
    const out = [];
    await new Promise((resolve, reject) => {
      const req = t.objectStore("messages").index("n").openCursor(null, "prev");
      req.onsuccess = () => {
        const c = req.result;
        if (!c || out.length >= limit) return resolve();
        out.push(c.value);
        c.continue();
      };
      req.onerror = () => reject(req.error);
    });
    return out.reverse();
  }

  /**
   * saveIncoming stores a received message; false when its id from that
   * peer was stored before (a duplicate: acknowledge it, don't show it).
   * For a message with a sequence number, it also records it as the last
   * one taken from the peer.
   */
  async saveIncoming(m) {
    const t = this.db.transaction(["messages", "meta"], "readwrite");
    const msgs = t.objectStore("messages");
    const had = await promisify(msgs.getKey([m.peer, "in", m.id]));
    if (had !== undefined) {
      await done(t);
      return false;
    }
    msgs.add(row(m));
    if (m.seq) {
      const meta = t.objectStore("meta");
      const last = (await promisify(meta.get("in:" + m.peer)))?.v ?? 0;
      if (m.seq > last) meta.put({ k: "in:" + m.peer, v: m.seq });
    }
    await done(t);
    return true;
  }

  /** lastSeq is the last sequence number taken from peer (0: none). */
  async lastSeq(peer) {
    const t = this.db.transaction("meta");
    return (await promisify(t.objectStore("meta").get("in:" + peer)))?.v ?? 0;
  }

  /**
   * queue gives m the next sequence number to its peer and keeps it in the
   * outbox and the history, in one transaction. A file offer (m.file) is
   * numbered and kept in the history but not in the outbox: the file
   * itself does not survive a reload.
   */
  async queue(m) {
    const t = this.db.transaction(["messages", "outbox", "meta"], "readwrite");
    const meta = t.objectStore("meta");
    const seq = ((await promisify(meta.get("out:" + m.peer)))?.v ?? 0) + 1;
    meta.put({ k: "out:" + m.peer, v: seq });
    m.seq = seq;
    if (!m.file) t.objectStore("outbox").put({ id: m.id, peer: m.peer, text: m.text, ts: m.ts, seq, n: m.n });
    t.objectStore("messages").put(row(m));
    await done(t);
    return seq;
  }

  /** requeue puts m back in the outbox under its number (Retry). */
  async requeue(m) {
    const t = this.db.transaction("outbox", "readwrite");
    t.objectStore("outbox").put({ id: m.id, peer: m.peer, text: m.text, ts: m.ts, seq: m.seq, n: m.n });
    await done(t);
  }

  /** unsent returns the outbox, oldest first. */
  async unsent() {
    const t = this.db.transaction("outbox");
    const all = await promisify(t.objectStore("outbox").getAll());
    return all.sort((a, b) => a.n - b.n);
  }

  /** finish takes id out of the outbox (its receipt came, or a refusal). */
  async finish(id) {
    const t = this.db.transaction("outbox", "readwrite");
    t.objectStore("outbox").delete(id);
    await done(t);
  }

  /** update keeps a message's new status (ticks, errors), or a call log line, for the next visit. */
  async update(m) {
    const t = this.db.transaction("messages", "readwrite");
    t.objectStore("messages").put(row(m));
    await done(t);
  }

  async drafts() {
    const t = this.db.transaction("drafts");
    return promisify(t.objectStore("drafts").getAll());
  }

  async saveDraft(peer, text) {
    const t = this.db.transaction("drafts", "readwrite");
    if (text) t.objectStore("drafts").put({ peer, text });
    else t.objectStore("drafts").delete(peer);
    await done(t);
  }
}

/** MemoryStore is the store's interface kept in memory (storage off). */
export class MemoryStore {
  constructor() {
    this.durable = false;
    this.msgs = new Map(); // "peer/dir/id" -> row
    this.out = new Map();
    this.meta = new Map();
    this.draftMap = new Map();
  }

  close() {}

  async history(limit = 5000) {
    return [...this.msgs.values()].sort((a, b) => a.n - b.n).slice(-limit);
  }

  async saveIncoming(m) {
    const k = `${m.peer}/in/${m.id}`;
    if (this.msgs.has(k)) return false;
    this.msgs.set(k, row(m));
    if (m.seq && m.seq > (this.meta.get("in:" + m.peer) ?? 0)) this.meta.set("in:" + m.peer, m.seq);
    return true;
  }

  async lastSeq(peer) {
    return this.meta.get("in:" + peer) ?? 0;
  }

  async queue(m) {
    const seq = (this.meta.get("out:" + m.peer) ?? 0) + 1;
    this.meta.set("out:" + m.peer, seq);
    m.seq = seq;
    if (!m.file) this.out.set(m.id, { id: m.id, peer: m.peer, text: m.text, ts: m.ts, seq, n: m.n });
    this.msgs.set(`${m.peer}/out/${m.id}`, row(m));
    return seq;
  }

  async requeue(m) {
    this.out.set(m.id, { id: m.id, peer: m.peer, text: m.text, ts: m.ts, seq: m.seq, n: m.n });
  }

  async unsent() {
    return [...this.out.values()].sort((a, b) => a.n - b.n);
  }

  async finish(id) {
    this.out.delete(id);
  }

  async update(m) {
    this.msgs.set(`${m.peer}/${m.dir}/${m.id}`, row(m));
  }


  async drafts() {
    return [...this.draftMap].map(([peer, text]) => ({ peer, text }));
  }

  async saveDraft(peer, text) {
    if (text) this.draftMap.set(peer, text);
    else this.draftMap.delete(peer);
  }
}
