// Call quality from RTCPeerConnection.getStats() (W3C webrtc-stats): the
// selected path, round-trip time, jitter, packet loss and bitrate, plus a
// small canvas graph of the last half-minute.

/**
 * selectedPath finds the selected candidate pair: transport's
 * selectedCandidatePairId, else (older browsers) a pair marked selected or
 * nominated and succeeded. It returns
 *   {path: "direct"|"relay"|"", via, viaURL, relayProtocol, local, remote, rttMs}
 * where via is the relay's address when path is "relay" (RFC 8445 section 5.1.1.2
 * relayed candidates are the TURN allocation; either side's relay counts).
 */
export function selectedPath(stats) {
  const byId = new Map();
  for (const s of stats) byId.set(s.id, s);
  let pair = null;
  for (const s of byId.values()) {
    if (s.type === "transport" && s.selectedCandidatePairId) {
      pair = byId.get(s.selectedCandidatePairId) ?? null;
      if (pair) break;
    }
  }
  if (!pair) {
    for (const s of byId.values()) {
      if (s.type === "candidate-pair" && (s.selected || (s.nominated && s.state === "succeeded"))) {
        pair = s;
        break;
      }
    }
  }
  if (!pair) return { path: "", via: "", viaURL: "", relayProtocol: "", local: "", remote: "", rttMs: null };
  const lc = byId.get(pair.localCandidateId) ?? {};
  const rc = byId.get(pair.remoteCandidateId) ?? {};
  const local = lc.candidateType ?? "";
  const remote = rc.candidateType ?? "";
  let path = "direct";
  let via = "";
  let viaURL = "";
  let relayProtocol = "";
  if (local === "relay") {
    path = "relay";
    via = addr(lc);
    viaURL = lc.url ?? ""; // the TURN server we allocated on
    relayProtocol = lc.relayProtocol ?? ""; // how we reach it: udp, tcp or tls
  } else if (remote === "relay") {
    path = "relay";
    via = addr(rc);
  }
  const rttMs = typeof pair.currentRoundTripTime === "number" ? pair.currentRoundTripTime * 1000 : null;
  return { path, via, viaURL, relayProtocol, local, remote, rttMs };
}

/**
 * supernodeFor names the supernode a relayed path goes through: the one
 * whose TURN address is the URL we allocated on, else (the peer's relay)
 * the one whose TURN host is the relayed address's host. supernodes are
 * proto.SupernodeInfo objects; it returns the matching one or null.
 */
export function supernodeFor(sum, supernodes) {
  if (sum?.path !== "relay" || !Array.isArray(supernodes)) return null;
  const hostPort = (u) => (u ?? "").replace(/^turns?:/, "").replace(/\?.*$/, "");
  const host = (hp) => hp.replace(/:\d+$/, "").replace(/^\[|\]$/g, "");
  const addrs = (n) => [n.turn_udp, n.turn_tcp, n.turn_tls].filter(Boolean);
  if (sum.viaURL) {
    const hp = hostPort(sum.viaURL);
    const n = supernodes.find((n) => addrs(n).includes(hp));
    if (n) return n;
  }
  const h = host(sum.via ?? "");
  return supernodes.find((n) => addrs(n).some((a) => host(a) === h)) ?? null;
}

function addr(c) {
  const ip = c.address ?? c.ip ?? "";
  if (!ip) return "";
  return (ip.includes(":") ? `[${ip}]` : ip) + (c.port ? `:${c.port}` : "");
}

/**
 * summarize turns one getStats() report (any iterable of stats objects)
 * into what the call panel shows. prev is the previous summary (for rates),
 * or null.
 */
export function summarize(stats, prev, nowMs) {
  const list = [...stats];
  const sum = {
    at: nowMs,
    ...selectedPath(list),
    packetsReceived: 0,
    packetsSent: 0,
    packetsLost: 0,
    bytesReceived: 0,
    bytesSent: 0,
    jitterMs: null,
    audioLevelIn: null,
    audioLevelOut: null,
    lossPct: null,
    recvKbps: null,
    sendKbps: null,
  };
  let remoteRtt = null;
  for (const s of list) {
    if (s.kind && s.kind !== "audio") continue;
    switch (s.type) {
      case "inbound-rtp":
        sum.packetsReceived += s.packetsReceived ?? 0;
        sum.packetsLost += Math.max(0, s.packetsLost ?? 0);
        sum.bytesReceived += s.bytesReceived ?? 0;
        if (typeof s.jitter === "number") sum.jitterMs = s.jitter * 1000;
        if (typeof s.audioLevel === "number") sum.audioLevelIn = s.audioLevel;
        break;
      case "outbound-rtp":
        sum.packetsSent += s.packetsSent ?? 0;
        sum.bytesSent += s.bytesSent ?? 0;
        break;
      case "remote-inbound-rtp":
        if (typeof s.roundTripTime === "number") remoteRtt = s.roundTripTime * 1000;
        break;
      case "media-source":
        if (typeof s.audioLevel === "number") sum.audioLevelOut = s.audioLevel;
        break;
    }
  }
  if (sum.rttMs === null) sum.rttMs = remoteRtt;
  if (prev && nowMs > prev.at) {
    const dt = (nowMs - prev.at) / 1000;
    const dRecv = sum.packetsReceived - prev.packetsReceived;
    const dLost = sum.packetsLost - prev.packetsLost;
    if (dRecv >= 0 && dLost >= 0 && dRecv + dLost > 0) sum.lossPct = (100 * dLost) / (dRecv + dLost);
    else if (dRecv >= 0 && dLost >= 0) sum.lossPct = prev.lossPct;
    const dIn = sum.bytesReceived - prev.bytesReceived;
    const dOut = sum.bytesSent - prev.bytesSent;
    if (dIn >= 0) sum.recvKbps = (dIn * 8) / 1000 / dt;
    if (dOut >= 0) sum.sendKbps = (dOut * 8) / 1000 / dt;
  }
  return sum;
}

/** fmt formats a number for the panel, or "–" when unknown. */
export function fmt(v, digits = 0, unit = "") {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  return v.toFixed(digits) + unit;
}

/**
 * QualityGraph draws the last `span` samples (one a second) of round-trip time and
 * received bitrate on a canvas, each line on its own scale.
 */
export class QualityGraph {
  constructor(canvas, span = 30) {
    this.canvas = canvas;
    this.span = span;
    this.samples = [];
  }

  clear() {
    this.samples = [];
    this.draw();
  }

  push(sum) {
    this.samples.push({ rtt: sum.rttMs, kbps: sum.recvKbps, loss: sum.lossPct });
    if (this.samples.length > this.span) this.samples.shift();
    this.draw();
  }

  draw() {
    const c = this.canvas;
    const dpr = globalThis.devicePixelRatio || 1;
    const w = c.clientWidth || 300;
    const h = c.clientHeight || 80;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const g = c.getContext("2d");
    if (!g) return;
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const css = getComputedStyle(c);
    g.strokeStyle = css.getPropertyValue("--grid").trim() || "#ddd";
    g.lineWidth = 1;
    for (let i = 1; i < 4; i++) {
      const y = Math.round((h * i) / 4) + 0.5;
      g.beginPath();
      g.moveTo(0, y);
      g.lineTo(w, y);
      g.stroke();
    }
    const series = [
      { key: "kbps", color: css.getPropertyValue("--kbps").trim() || "#2a7", min: 64 },
      { key: "rtt", color: css.getPropertyValue("--rtt").trim() || "#36c", min: 20 },
    ];
    for (const s of series) {
      const vals = this.samples.map((x) => x[s.key]);
      const max = Math.max(s.min, ...vals.filter((v) => Number.isFinite(v))) * 1.15;
      g.strokeStyle = s.color;
      g.lineWidth = 2;
      g.beginPath();
      let pen = false;
      vals.forEach((v, i) => {
        if (!Number.isFinite(v)) {
          pen = false;
          return;
        }
        const x = (w * (i + this.span - vals.length)) / (this.span - 1);
        const y = h - 2 - ((h - 4) * v) / max;
        if (pen) g.lineTo(x, y);
        else g.moveTo(x, y);
        pen = true;
      });
      g.stroke();
    }
  }
}
