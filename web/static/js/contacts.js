// Contacts-scoped presence (proto/contacts.go). The server tells the page
// only about the people it asks for, so the page keeps its contacts —
// everyone picked from the directory, messaged, or who messaged or called
// — in localStorage per name, sends them after each sign-in, and follows
// a watched page of the people online from the server's directory: on a
// small server that page holds everyone online and stays live; on a big
// one it is a snapshot, and the search box finds the rest.

import { MAX_CONTACTS_PER_FRAME, MAX_DIRECTORY_LIMIT, checkName } from "./proto.js";

const MAX_KEPT = 500; // contacts kept per name (the oldest go)

function load(key) {
  try {
    const v = JSON.parse(localStorage.getItem(key) || "[]");
    return Array.isArray(v) ? v.filter((n) => checkName(n) === null) : [];
  } catch {
    return [];
  }
}

export class Contacts {
  /** sig is the Signaling; me the signed-in name. */
  constructor({ sig, me }) {
    this.sig = sig;
    this.me = me;
    this.key = `parley.contacts.${me}`;
    this.names = load(this.key); // oldest first
  }

  has(name) {
    return this.names.includes(name);
  }

  #save() {
    try {
      localStorage.setItem(this.key, JSON.stringify(this.names));
    } catch {
      // storage disabled: the contacts last for this visit
    }
  }

  /** add makes name a contact (and asks the server for its presence now). */
  add(name) {
    if (name === this.me || checkName(name) !== null) return;
    const i = this.names.indexOf(name);
    if (i >= 0) {
      this.names.splice(i, 1);
      this.names.push(name);
      this.#save();
      return;
    }
    this.names.push(name);
    if (this.names.length > MAX_KEPT) this.names.shift();
    this.#save();
    if (this.sig.online) this.sig.request("contacts", "", { add: [name] }).catch(() => {});
  }

  /**
   * sync sends the contacts and asks for the watched page of people
   * online (when the server has a directory). It resolves when every
   * answer is in; the presence frames come as messages before that.
   */
  async sync(welcome) {
    const jobs = [];
    const names = this.names.slice(-(welcome.max_contacts || MAX_KEPT));
    for (let i = 0; i < names.length; i += MAX_CONTACTS_PER_FRAME) {
      jobs.push(this.sig.request("contacts", "", { replace: i === 0, add: names.slice(i, i + MAX_CONTACTS_PER_FRAME) }));
    }
    let page = null;
    if (welcome.directory) {
      jobs.push(this.sig.query("directory", { online: true, watch: true, limit: MAX_DIRECTORY_LIMIT }).then((p) => (page = p)));
    }
    await Promise.allSettled(jobs);
    return page;
  }

  /** search lists the directory's names starting with prefix (no watch). */
  search(prefix) {
    return this.sig.query("directory", { prefix, limit: 20 });
  }
}
