// SHA-256 (FIPS 180-4) that takes its input in pieces. WebCrypto's
// digest() wants the whole input at once, which for a file of a few hundred
// megabytes means holding it twice in memory; a transfer hashes each chunk
// as it arrives (or is read) instead, and the state can be copied to give
// the hash of the bytes so far (a resume checks the prefix it has).
// Checked against crypto/sha256 and WebCrypto by the page tests.

const K = new Int32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);
const IV = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/** Sha256 hashes bytes given to update() in any number of pieces. */
export class Sha256 {
  constructor() {
    this.h = new Int32Array(IV);
    this.buf = new Uint8Array(64); // a partial block
    this.bufView = new DataView(this.buf.buffer);
    this.n = 0; // bytes in buf
    this.len = 0; // bytes hashed in all (a Number: exact to 2^53)
    this.w = new Int32Array(64);
  }

  /** clone is an independent copy of the state. */
  clone() {
    const c = new Sha256();
    c.h.set(this.h);
    c.buf.set(this.buf);
    c.n = this.n;
    c.len = this.len;
    return c;
  }

  /** update hashes bytes (a Uint8Array or ArrayBuffer). */
  update(bytes) {
    const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
    let i = 0;
    this.len += b.length;
    if (this.n > 0) {
      const take = Math.min(64 - this.n, b.length);
      this.buf.set(b.subarray(0, take), this.n);
      this.n += take;
      i = take;
      if (this.n < 64) return this;
      this.#blocks(this.bufView, 0, 64);
      this.n = 0;
    }
    const end = i + ((b.length - i) & ~63);
    if (end > i) this.#blocks(new DataView(b.buffer, b.byteOffset, b.byteLength), i, end);
    i = end;
    if (i < b.length) {
      this.buf.set(b.subarray(i), 0);
      this.n = b.length - i;
    }
    return this;
  }

  /** hex is the digest of everything so far, as lowercase hex; the state is left as it was. */
  hex() {
    const c = this.clone();
    const bits = c.len * 8;
    const pad = new Uint8Array((c.n < 56 ? 56 : 120) - c.n + 8);
    pad[0] = 0x80;
    const dv = new DataView(pad.buffer);
    dv.setUint32(pad.length - 8, Math.floor(bits / 2 ** 32));
    dv.setUint32(pad.length - 4, bits >>> 0);
    c.update(pad);
    let s = "";
    for (const x of c.h) s += (x >>> 0).toString(16).padStart(8, "0");
    return s;
  }

  // #blocks hashes the 64-byte blocks of dv from pos to end, keeping the
  // state in locals (int32 throughout: V8 keeps them unboxed).
  #blocks(dv, pos, end) {
    const w = this.w;
    const h = this.h;
    let h0 = h[0], h1 = h[1], h2 = h[2], h3 = h[3], h4 = h[4], h5 = h[5], h6 = h[6], h7 = h[7];
    for (; pos < end; pos += 64) {
      for (let t = 0; t < 16; t++) w[t] = dv.getInt32(pos + 4 * t);
      for (let t = 16; t < 64; t++) {
        const x = w[t - 15];
        const y = w[t - 2];
        const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
        const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
        w[t] = (w[t - 16] + s0 + w[t - 7] + s1) | 0;
      }
      let a = h0, b = h1, c = h2, d = h3, e = h4, f = h5, g = h6, hh = h7;
      for (let t = 0; t < 64; t++) {
        const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
        const ch = (e & f) ^ (~e & g);
        const t1 = (hh + S1 + ch + K[t] + w[t]) | 0;
        const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
        const maj = (a & b) ^ (a & c) ^ (b & c);
        const t2 = (S0 + maj) | 0;
        hh = g;
        g = f;
        f = e;
        e = (d + t1) | 0;
        d = c;
        c = b;
        b = a;
        a = (t1 + t2) | 0;
      }
      h0 = (h0 + a) | 0;
      h1 = (h1 + b) | 0;
      h2 = (h2 + c) | 0;
      h3 = (h3 + d) | 0;
      h4 = (h4 + e) | 0;
      h5 = (h5 + f) | 0;
      h6 = (h6 + g) | 0;
      h7 = (h7 + hh) | 0;
    }
    h[0] = h0;
    h[1] = h1;
    h[2] = h2;
    h[3] = h3;
    h[4] = h4;
    h[5] = h5;
    h[6] = h6;
    h[7] = h7;
  }
}
