package web_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/parley-voice/parley/proto"
)

// TestPageLogic runs the page's own modules in Chromium, table-driven:
// wire validation, glare, path and quality from stats, chat receipts and
// duplicate suppression, call glare and timeouts, and the words people see.
// Fakes stand in for the server and peer connections here; the end-to-end
// tests use the real ones.
func TestPageLogic(t *testing.T) {
	srv := startServer(t)
	p := openPage(t, srv.HTTP+"/", "logic")
	const imports = `
		const proto = await import("/js/proto.js");
		const links = await import("/js/links.js");
		const stats = await import("/js/stats.js");
		const words = await import("/js/words.js");
		const { Chat, GAP_WAIT } = await import("/js/chat.js");
		const { MemoryStore } = await import("/js/store.js");
		const { Calls, NO_PATH_MS } = await import("/js/calls.js");
		const tick = () => new Promise((r) => setTimeout(r, 0));
		const fakeSig = (name, fail) => ({
			name, online: true, sent: [],
			send(t, to, b) { this.sent.push([t, to, b?.id ?? b?.call ?? b?.reason ?? ""]); return true; },
			request(t, to, b) { this.sent.push([t, to, b?.id ?? b?.call ?? ""]); return fail ? Promise.reject(fail) : Promise.resolve(); },
		});
		const fakeTrack = () => ({ enabled: true, stopped: false, stop() { this.stopped = true; } });
		const { Identity } = await import("/js/identity.js");
		const sealed = await import("/js/sealed.js");
		const mkIdentity = async () => {
			const kp = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
			const ekp = await crypto.subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
			const raw = async (k) => proto.b64(new Uint8Array(await crypto.subtle.exportKey("raw", k)));
			return new Identity(kp, await raw(kp.publicKey), ekp, await raw(ekp.publicKey));
		};
		const peerOf = async (id, name, status = "offline") => ({ name, status, key: id.publicKey, publicKey: id.publicKey, encKey: id.encPublicKey, encSig: await id.signEncKey(name) });
		const until = async (cond) => { for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 10)); return cond(); };
		const codeOf = async (f) => { try { await f(); return "ok"; } catch (x) { return x.code; } };
		const flip = (s) => { const u = proto.unb64(s); u[u.length - 1] ^= 1; return proto.b64(u); };
		localStorage.removeItem("parley.pins");
	`
	// A well-formed sealed body (zero bytes; validation checks shape only).
	const b32, b64x = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="
	const sealedBody = `{"v":2,"id":"s1","sender_key":"` + b32 + `","sender_enc":"` + b32 + `","sender_enc_sig":"` + b64x +
		`","salt":"AAAAAAAAAAAAAAAAAAAAAA==","nonce":"AAAAAAAAAAAAAAAA","ciphertext":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`
	cases := []struct {
		name string
		js   string // body of an async function; imports above are in scope
		want string // JSON
	}{
		{"name rules", `return ["alice", "a-b.c_9", "Alice", "-x", "", "x".repeat(33), "admin", "bob smith"].map((n) => proto.checkName(n, true) === null)`,
			`[true,true,false,false,false,false,false,false]`},
		{"normalized name", `return proto.normalizeName("  Alice ")`, `"alice"`},
		{"text rules (UTF-8 bytes)", `return ["hi", "", "a".repeat(4000), "a".repeat(4001), "é".repeat(2000), "é".repeat(2001), "\uD800x"].map((s) => proto.checkText(s) === null)`,
			`[true,false,true,false,true,false,false]`},
		{"ids", `return ["abc", "A-b_c.d:1", "", "x".repeat(65), "sp ace", "ü"].map(proto.validID)`, `[true,true,false,false,false,false]`},
		{"random ids are valid and distinct", `const a = proto.randomID(), b = proto.randomID(); return [proto.validID(a), a.length, a !== b]`, `[true,12,true]`},
		{"envelope validation", `return [
			'{"v":2,"type":"ack","body":{"ref":"x"}}',
			'{"v":1,"type":"offer","body":{"session":"s","sdp":"v=0"}}',
			'{"v":1,"type":"offer","from":"bob","body":{"session":"s","sdp":"v=0\\r\\n"}}',
			'not json',
			'{"v":1,"type":"auth","body":{}}',
			'{"v":1,"type":"chat","from":"bob","body":{"id":"bad id!","text":"x"}}',
			'{"v":1,"type":"candidate","from":"bob","body":{"session":"s","candidate":"evil"}}',
			'{"v":1,"type":"welcome","body":{"name":"me","session":"s","online":[{"name":"bob","status":"online"}]}}',
			'{"v":1,"type":"presence","body":{"name":"bob","status":"sleeping"}}',
			'{"v":1,"type":"ring","from":"Bob","body":{"call":"c1"}}',
			'{"v":1,"type":"sealed","id":"s1","from":"dora","body":` + sealedBody + `}',
			'{"v":1,"type":"sealed","id":"s1","body":` + sealedBody + `}',
			'{"v":1,"type":"sealed","id":"s1","from":"dora","body":{"id":"s1","sender_key":"k","nonce":"n","box":"b"}}',
			'{"v":1,"type":"presence","body":{"name":"bob","status":"offline","public_key":"` + b32 + `","enc_key":"` + b32 + `"}}',
			'{"v":1,"type":"supernodes","body":{"supernodes":[{"id":"sn1","turn_udp":"127.0.0.1:3478"}],"ice_servers":[]}}',
			'{"v":1,"type":"supernodes","body":{"supernodes":[{"id":"bad id"}]}}',
		].map((f) => { try { proto.decodeEnvelope(f); return "ok"; } catch (e) { return e.code; } })`,
			`["bad_version","bad_request","ok","bad_frame","unknown_type","bad_request","bad_request","ok","bad_request","bad_request","ok","bad_request","bad_request","bad_request","ok","bad_request"]`},
		{"data channel validation", `return [
			'{"type":"chat","id":"m1","text":"hi","ts":1}', '{"type":"chat","id":"m1"}', '{"type":"zap"}', '[1]', '{"type":"delivered","id":"m1"}',
		].map((f) => { try { proto.decodeDC(f); return "ok"; } catch (e) { return e.code; } })`,
			`["ok","bad_request","unknown_type","bad_frame","ok"]`},
		{"offer decisions (glare)", `const L = (o) => Object.assign(new links.Link("x", "s1", true), o);
			return [
				links.offerAction(null, "alice", "bob", "s2"),
				links.offerAction(L({}), "alice", "bob", "s1"),
				links.offerAction(L({}), "alice", "bob", "s2"),
				links.offerAction(L({}), "carol", "bob", "s2"),
				links.offerAction(L({ remoteSet: true }), "alice", "bob", "s2"),
				links.offerAction(L({ offerer: false }), "alice", "bob", "s2"),
				links.offerAction(L({ offerer: false, remoteSet: true }), "alice", "bob", "s1"),
				links.offerAction(L({ offerer: true, remoteSet: true }), "alice", "bob", "s1"),
			]`, `["accept","duplicate","ignore","replace","replace","replace","restart","duplicate"]`},
		{"ice servers from welcome", `return links.toRTCIceServers([{ urls: ["stun:127.0.0.1:3478"] }, { urls: ["http://x"] }, { urls: ["turn:h:3478"], username: "u", credential: "c" }, null])`,
			`[{"urls":["stun:127.0.0.1:3478"]},{"urls":["turn:h:3478"],"username":"u","credential":"c"}]`},
		{"path from stats", `const base = [
				{ id: "T", type: "transport", selectedCandidatePairId: "P" },
				{ id: "P", type: "candidate-pair", localCandidateId: "L", remoteCandidateId: "R", currentRoundTripTime: 0.012 },
			];
			const with_ = (l, r) => stats.selectedPath([...base, { id: "L", type: "local-candidate", ...l }, { id: "R", type: "remote-candidate", ...r }]);
			return [
				with_({ candidateType: "host", address: "127.0.0.1", port: 1 }, { candidateType: "host" }),
				with_({ candidateType: "relay", address: "10.0.0.1", port: 3478 }, { candidateType: "srflx" }),
				with_({ candidateType: "prflx" }, { candidateType: "relay", address: "fd00::1", port: 9 }),
				stats.selectedPath([{ id: "P", type: "candidate-pair", nominated: true, state: "succeeded", localCandidateId: "L", remoteCandidateId: "R" },
					{ id: "L", type: "local-candidate", candidateType: "srflx" }, { id: "R", type: "remote-candidate", candidateType: "host" }]),
				stats.selectedPath([]),
			].map((s) => [s.path, s.via, s.local, s.remote, s.rttMs === null ? null : Math.round(s.rttMs)])`,
			`[["direct","","host","host",12],["relay","10.0.0.1:3478","relay","srflx",12],["relay","[fd00::1]:9","prflx","relay",12],["direct","","srflx","host",null],["","","","",null]]`},
		{"quality from stats", `const prev = { at: 0, packetsReceived: 100, packetsLost: 0, bytesReceived: 1000, bytesSent: 1000 };
			const s = stats.summarize([
				{ id: "i", type: "inbound-rtp", kind: "audio", packetsReceived: 148, packetsLost: 2, bytesReceived: 5000, jitter: 0.004 },
				{ id: "o", type: "outbound-rtp", kind: "audio", packetsSent: 150, bytesSent: 9000 },
				{ id: "v", type: "inbound-rtp", kind: "video", packetsReceived: 999 },
				{ id: "r", type: "remote-inbound-rtp", kind: "audio", roundTripTime: 0.03 },
			], prev, 1000);
			return [s.packetsReceived, s.packetsSent, s.lossPct, s.recvKbps, s.sendKbps, s.jitterMs, s.rttMs, stats.fmt(null), stats.fmt(1.25, 1, " ms")]`,
			`[148,150,4,32,64,4,30,"–","1.3 ms"]`},
		{"words people read", `return [
				words.serverError("name_taken", "", { name: "carol" }).includes("“carol” already belongs to someone else"),
				words.serverError("offline", "", { peer: "bob", what: "call" }),
				words.mediaError({ name: "NotAllowedError" }).includes("Microphone access was denied"),
				words.mediaError({ name: "NotFoundError" }).startsWith("No microphone"),
				words.serverError("weird_code", "boom"),
				words.duration(65000), words.duration(3723000),
				words.callEnded("bob", "bob hung up", 65000), words.callEnded("bob", "you declined", 0),
			]`, `[true,"bob is offline right now, so the call could not ring.",true,true,"Something went wrong: boom","1:05","1:02:03",
				"Call with bob ended after 1:05 — bob hung up","Call with bob ended — you declined"]`},
		{"chat: exactly once, receipts always; plain chat from the server is not taken", `const sig = fakeSig("me");
			const chat = new Chat({ sig, links: { get: () => null } });
			const env = { type: "chat", from: "bob", body: { id: "m1", text: "hi", ts: 5 } };
			chat.onServer(env); chat.onServer(env);
			const sentDC = [];
			const link = { peer: "bob", dc: { send: (x) => sentDC.push(JSON.parse(x)) } };
			chat.onDCMessage(link, { type: "chat", id: "m2", text: "again" });
			await chat.onDCMessage(link, { type: "chat", id: "m2", text: "again" });
			return [chat.messages("bob").map((m) => m.text), sig.sent, sentDC]`,
			`[["again"],[],[{"type":"delivered","id":"m2"},{"type":"delivered","id":"m2"}]]`},
		{"chat: no receipt on the data channel: sent again sealed through the server", `const a = await mkIdentity(), b = await mkIdentity();
			const sig = fakeSig("alice");
			const bob = await peerOf(b, "bob");
			const sentDC = [];
			const link = { peer: "bob", dcOpen: true, dc: { send: (x) => sentDC.push(JSON.parse(x).type) } };
			const chat = new Chat({ sig, links: { get: () => link }, identity: a, peers: (n) => n === "bob" ? bob : undefined });
			const m = chat.send("bob", "yo");
			await m.queued;
			const s1 = [m.status, m.path, m.seq];
			chat.tick(Date.now() + 1000);
			const n1 = sig.sent.length;
			chat.tick(Date.now() + 3100);
			await until(() => m.status === "stored");
			chat.onServer({ type: "delivered", from: "carol", body: { id: m.id } }); // not the recipient: ignored
			const s2 = m.status;
			chat.onServer({ type: "delivered", from: "bob", body: { id: m.id } });
			chat.tick(Date.now() + 10000);
			return [s1, n1, sig.sent.map((x) => x[0]), s2, m.status, m.path, sentDC]`,
			`[["sent","direct",1],0,["sealed"],"stored","delivered","server",["chat"]]`},
		{"chat: direct when the data channel is open", `const sig = fakeSig("me");
			const sentDC = [];
			const link = { peer: "bob", dcOpen: true, dc: { send: (x) => sentDC.push(JSON.parse(x).type) } };
			const chat = new Chat({ sig, links: { get: () => link } });
			const m = chat.send("bob", "direct?");
			await m.queued;
			chat.onDCMessage(link, { type: "delivered", id: m.id });
			return [sentDC, sig.sent.length, m.status, m.path]`,
			`[["chat"],0,"delivered","direct"]`},
		{"chat: no key to seal to yet: it waits, never in the clear; a refusal fails it in words", `const sig = fakeSig("me");
			const chat = new Chat({ sig, links: { get: () => null } });
			const m = chat.send("bob", "anyone?");
			await tick(); await tick();
			chat.tick(Date.now() + 10000);
			const waiting = [m.status, m.error, sig.sent.length];
			chat.onSealedReceipt({ type: "sealed_receipt", from: "bob", body: { id: m.id, refused: "not_accepted" } });
			return [waiting, m.status, m.error]`,
			`[["sending","waiting for bob’s encryption key",0],"failed","not delivered: bob does not accept messages from you"]`},
		{"sealed: the page seals and opens with WebCrypto; tampering fails", `const a = await mkIdentity(), b = await mkIdentity(), e = await mkIdentity();
			const body = await sealed.seal(a, "alice", await peerOf(b, "bob"), { id: "m1", text: "hi ☎", ts: 5 });
			const valid = proto.decodeEnvelope(JSON.stringify({ v: 1, type: "sealed", id: "m1", from: "alice", body })).type;
			const opened = await sealed.open(b, "bob", "alice", body);
			return [valid, opened, Object.keys(body).sort(),
				await codeOf(() => sealed.open(e, "eve", "alice", body)),
				await codeOf(() => sealed.open(b, "bobby", "alice", body)),
				await codeOf(() => sealed.open(b, "bob", "carol", body)),
				await codeOf(() => sealed.open(b, "bob", "alice", { ...body, ciphertext: flip(body.ciphertext) })),
				await codeOf(() => sealed.open(b, "bob", "alice", { ...body, salt: flip(body.salt) })),
				await codeOf(() => sealed.open(b, "bob", "alice", { ...body, id: "m2" })),
				await codeOf(() => sealed.open(b, "bob", "alice", { ...body, sender_enc: e.encPublicKey })),
				await codeOf(async () => sealed.seal(a, "alice", { ...(await peerOf(b, "bob")), key: e.publicKey }, { id: "m1", text: "x", ts: 1 })),
				await codeOf(async () => sealed.seal(a, "alice", await peerOf(b, "bobby").then((p) => ({ ...p, name: "bob" })), { id: "m1", text: "x", ts: 1 })),
			]`,
			`["sealed",{"id":"m1","text":"hi ☎","ts":5},["ciphertext","id","nonce","salt","sender_enc","sender_enc_sig","sender_key","v"],
				"bad_message","bad_message","bad_key","bad_message","bad_message","bad_message","bad_key","bad_key","bad_key"]`},
		{"chat: to an offline peer the message is sealed, stored (✓), then delivered (✓✓)", `const a = await mkIdentity(), b = await mkIdentity();
			const sig = fakeSig("alice");
			const bob = await peerOf(b, "bob");
			const chat = new Chat({ sig, links: { get: () => null }, identity: a, peers: (n) => n === "bob" ? bob : undefined });
			const m = chat.send("bob", "while you were out");
			await until(() => m.status === "stored");
			const stored = [m.status, m.path, sig.sent.map((x) => x[0])];
			chat.tick(Date.now() + 10000);
			chat.onSealedReceipt({ type: "sealed_receipt", from: "carol", body: { id: m.id } });
			const s2 = m.status;
			chat.onSealedReceipt({ type: "sealed_receipt", from: "bob", body: { id: m.id } });
			const opened = await sealed.open(b, "bob", "alice", m.sealedBody);
			return [stored, sig.sent.length, s2, m.status, opened.text]`,
			`[["stored","server",["sealed"]],1,"stored","delivered","while you were out"]`},
		{"chat: sealed messages open once, in order, receipt once kept; another key is refused", `const a = await mkIdentity(), b = await mkIdentity(), e = await mkIdentity();
			const sig = fakeSig("bob");
			const chat = new Chat({ sig, links: { get: () => null }, identity: b });
			const bob = await peerOf(b, "bob");
			const env = async (id, text, from = a) => ({ type: "sealed", from: "alice", body: await sealed.seal(from, "alice", bob, { id, text, ts: 7 }) });
			const e1 = await env("m1", "first"), e2 = await env("m2", "second");
			const order = [];
			chat.addEventListener("change", () => order.push(chat.messages("alice").length + ":" + sig.sent.length));
			await Promise.all([chat.onSealed(e1), chat.onSealed(e2), chat.onSealed(e1)]);
			const forged = await env("m3", "from someone else", e);
			await chat.onSealed(forged);
			await chat.onSealed(forged);
			const ms = chat.messages("alice");
			return [ms.map((m) => m.dir + ":" + m.text.slice(0, 40)), ms[0].path, sig.sent, order.slice(0, 2)]`,
			`[["in:first","in:second","note:alice left you a sealed message, but it "],"server",
				[["delivered","alice","m1"],["delivered","alice","m2"],["delivered","alice","m1"]],["1:1","2:2"]]`},
		{"chat: a peer's messages are taken in its order (seq); a gap waits GAP_WAIT, then is skipped", `const sig = fakeSig("me");
			const chat = new Chat({ sig, links: { get: () => null } });
			const sentDC = [];
			const link = { peer: "bob", dc: { send: (x) => sentDC.push(JSON.parse(x).id) } };
			const text = () => chat.messages("bob").map((m) => m.text).join(",");
			await chat.onDCMessage(link, { type: "chat", id: "a1", text: "one", seq: 1 });
			await chat.onDCMessage(link, { type: "chat", id: "a3", text: "three", seq: 3 });
			const held = [text(), sentDC.join(",")]; // three waits for two, unacknowledged
			await chat.onDCMessage(link, { type: "chat", id: "a2", text: "two", seq: 2 });
			const filled = [text(), sentDC.join(",")];
			await chat.onDCMessage(link, { type: "chat", id: "a6", text: "six", seq: 6 });
			chat.tick(Date.now() + 1000); await chat.taking;
			const early = text();
			chat.tick(Date.now() + GAP_WAIT + 10); await chat.taking;
			await chat.onDCMessage(link, { type: "chat", id: "a5", text: "five", seq: 5 }); // late: taken at once
			return [held, filled, early, text()]`,
			`[["one","a1"],["one,two,three","a1,a2,a3"],"one,two,three","one,two,three,six,five"]`},
		{"chat: duplicates are caught for good, not only among the last 4,096 ids; strangers can be refused", `const sig = fakeSig("me");
			const store = new MemoryStore();
			let accept = true;
			const chat = new Chat({ sig, links: { get: () => null }, store, accept: (p) => accept || p !== "eve" });
			const link = { peer: "bob", dc: { send: () => {} } };
			for (let i = 0; i < 5000; i++) chat.onDCMessage(link, { type: "chat", id: "id" + i, text: "m" + i });
			await chat.onDCMessage(link, { type: "chat", id: "id0", text: "m0" });
			const again = new Chat({ sig, links: { get: () => null }, store }); // a reload: same store
			await again.load();
			await again.onDCMessage(link, { type: "chat", id: "id1", text: "m1" });
			accept = false;
			const refusals = [];
			const eve = { peer: "eve", dc: { send: (x) => refusals.push(JSON.parse(x)) } };
			await chat.onDCMessage(eve, { type: "chat", id: "e1", text: "hi" });
			return [chat.messages("bob").length, again.messages("bob").length, refusals, chat.messages("eve").length]`,
			`[5000,5000,[{"type":"delivered","id":"e1","code":"not_accepted"}],0]`},
		{"chat: bad text refused", `const chat = new Chat({ sig: fakeSig("me"), links: { get: () => null } });
			try { chat.send("bob", "x".repeat(4001)); return "sent"; } catch (e) { return e.message; }`,
			`"The message is too long (4001 bytes; the limit is 4000)."`},
		{"calls: glare, the larger name answers the smaller's call", `const sig = fakeSig("bob");
			const L = { connected: false, sender: null, closed: false };
			const calls = new Calls({ sig, links: { ensure: () => L, get: () => L }, openMic: async () => fakeTrack() });
			await calls.place("alice");
			calls.onSignal({ type: "ring", from: "alice", body: { call: "A1" } });
			await tick(); await tick();
			const sent = sig.sent.map(([t, to, id]) => [t, to, id !== "A1" && proto.validID(id) && id.length === 12 ? "RANDOM" : id]);
			return [sent, calls.call.id, calls.call.outgoing, calls.call.state]`,
			`[[["ring","alice","RANDOM"],["accept","alice","A1"]],"A1",false,"accepted"]`},
		{"calls: glare, the smaller name's call stands", `const sig = fakeSig("alice");
			const L = { connected: false, sender: null, closed: false };
			const calls = new Calls({ sig, links: { ensure: () => L, get: () => L }, openMic: async () => fakeTrack() });
			await calls.place("bob");
			const id = calls.call.id;
			calls.onSignal({ type: "ring", from: "bob", body: { call: "B1" } });
			calls.onSignal({ type: "accept", from: "bob", body: { call: id } });
			return [sig.sent.length, calls.call.id === id, calls.call.outgoing, calls.call.state]`,
			`[1,true,true,"accepted"]`},
		{"calls: busy, timeout, hang-up reasons", `const sig = fakeSig("me");
			const L = { connected: false, sender: null, closed: false };
			const calls = new Calls({ sig, links: { ensure: () => L, get: () => L }, openMic: async () => fakeTrack() });
			calls.onSignal({ type: "ring", from: "carol", body: { call: "C1" } });
			calls.onSignal({ type: "ring", from: "dave", body: { call: "D1" } });
			calls.tick(Date.now() + 61000);
			const missed = calls.last.reason;
			await calls.place("erin");
			calls.onSignal({ type: "hangup", from: "erin", body: { call: "wrong" } });
			const still = !!calls.call;
			calls.onSignal({ type: "decline", from: "erin", body: { call: calls.call.id, code: "busy" } });
			const busy = calls.last.reason;
			// A peer's own text is its words, never the page's verdict.
			await calls.place("fay");
			calls.onSignal({ type: "hangup", from: "fay", body: { call: calls.call.id, reason: "no network path: \u001b[31mcall your bank" } });
			return [sig.sent.slice(0, 2), missed, still, busy, calls.last.reason, calls.call]`,
			`[[["decline","dave","D1"],["decline","carol","C1"]],"missed call",true,"erin is busy","fay hung up (fay: “no network path: [31mcall your bank”)",null]`},
		{"calls: an answered call whose link finds no path ends within NO_PATH_MS, in words", `const sig = fakeSig("me");
			const L = { connected: false, sender: null, closed: false };
			const calls = new Calls({ sig, links: { ensure: () => L, get: () => L }, openMic: async () => fakeTrack() });
			await calls.place("bob");
			calls.onSignal({ type: "accept", from: "bob", body: { call: calls.call.id } });
			calls.tick(Date.now() + NO_PATH_MS - 1000);
			const waiting = calls.call.state;
			calls.tick(Date.now() + NO_PATH_MS + 600);
			const hangup = sig.sent.find((s) => s[0] === "hangup");
			const reason = calls.last?.reason ?? null;
			// A connected link is never timed out.
			await calls.place("carol");
			calls.onSignal({ type: "accept", from: "carol", body: { call: calls.call.id } });
			L.connected = true;
			calls.tick(Date.now() + NO_PATH_MS + 600);
			return [NO_PATH_MS <= 9000, waiting, reason, !!hangup, !!calls.call]`,
			`[true,"accepted","no network path to bob: the connection failed (firewalls or NATs block it and no relay was usable)",true,true]`},
		{"calls: microphone denied: no ring, words", `const sig = fakeSig("me");
			const L = { connected: false, sender: null, closed: false };
			const calls = new Calls({ sig, links: { ensure: () => L, get: () => L }, openMic: async () => { throw new DOMException("no", "NotAllowedError"); } });
			const errs = [];
			calls.addEventListener("error", (e) => errs.push(e.detail));
			await calls.place("bob");
			return [sig.sent.length, errs.length, errs[0].startsWith("Microphone access was denied"), calls.last.reason]`,
			`[0,1,true,"the microphone could not be used"]`},
		{"calls: media starts only when accepted and connected", `const sig = fakeSig("me");
			const replaced = [];
			const L = { connected: false, closed: false, sender: { replaceTrack: async (t) => replaced.push(t ? "mic" : null) } };
			const calls = new Calls({ sig, links: { ensure: () => L, get: () => L }, openMic: async () => fakeTrack() });
			calls.onSignal({ type: "ring", from: "bob", body: { call: "B1" } });
			await calls.answer();
			const before = replaced.length;
			L.connected = true;
			calls.onLinkState({ peer: "bob" });
			await tick();
			const mic = calls.call.mic;
			calls.setMuted(true);
			const muted = mic.enabled;
			calls.hangup();
			await tick();
			return [before, replaced, muted, mic.stopped, sig.sent.map((s) => s[0])]`,
			`[0,["mic",null],false,true,["accept","hangup"]]`},
	}
	// The page's display-name rules are the Go client's, case by case.
	displays := []string{"Alice Martin", "Zoë 🎻", "Ana 👩\u200d💻", "A", strings.Repeat("é", 40), strings.Repeat("é", 41), strings.Repeat("🎻", 41),
		"", " Alice", "Alice ", "Alice  Martin", "Alice\tMartin", "Alice\nMartin", "Alice\u00a0Martin", "Alice\u202eniltraM", "Al\u200bice", "Al\u0085ice"}
	var goSays []bool
	for _, d := range displays {
		goSays = append(goSays, proto.ValidateDisplayName(d) == nil)
	}
	in, _ := json.Marshal(displays)
	want, _ := json.Marshal(goSays)
	cases = append(cases, struct{ name, js, want string }{"display name rules (Go's)",
		`return ` + string(in) + `.map((s) => proto.checkDisplayName(s) === null && proto.validDisplayName(s) === s)`, string(want)})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw := eval[[]byte](p, `(async () => { `+imports+c.js+` })()`)
			var got, want any
			if err := json.Unmarshal(raw, &got); err != nil {
				t.Fatalf("result %s: %v", raw, err)
			}
			if err := json.Unmarshal([]byte(c.want), &want); err != nil {
				t.Fatalf("bad want %s: %v", c.want, err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %s\nwant %s", raw, c.want)
			}
		})
	}
}
