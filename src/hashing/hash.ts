// The hash every non-ketama algorithm here builds on: XXH32 (xxHash, 32-bit variant), written
// in plain JavaScript over the key's UTF-8 bytes.
//
// Why XXH32 and why in JavaScript: it is a standard, frozen, widely checked hash with published
// test vectors, fast on short inputs and well mixed in its low and high bits. The xxhash-wasm
// package computes the same function, but for the short keys we route (10–40 bytes) crossing
// into WebAssembly and copying the string there costs more than hashing it: `npm run bench --
// hashing` measures both (`hashFunctions` in bench/results/hashing.json) and the plain
// JavaScript one is several times faster. It is also synchronous, so no structure here needs an
// async init step. The tests check this implementation against xxhash-wasm bit for bit.

const PRIME32_1 = 0x9e3779b1;
const PRIME32_2 = 0x85ebca77;
const PRIME32_3 = 0xc2b2ae3d;
const PRIME32_4 = 0x27d4eb2f;
const PRIME32_5 = 0x165667b1;

const utf8Encoder = new TextEncoder();
let scratchBytes = new Uint8Array(256);

function rotateLeft(value: number, bits: number): number {
  return (value << bits) | (value >>> (32 - bits));
}

function accumulate(accumulator: number, lane: number): number {
  const mixed = (accumulator + Math.imul(lane, PRIME32_2)) | 0;
  return Math.imul(rotateLeft(mixed, 13), PRIME32_1);
}

function avalanche(hash: number): number {
  let h = hash;
  h = Math.imul(h ^ (h >>> 15), PRIME32_2);
  h = Math.imul(h ^ (h >>> 13), PRIME32_3);
  return (h ^ (h >>> 16)) >>> 0;
}

/** XXH32 of a byte array. */
export function xxh32Bytes(bytes: Uint8Array, seed = 0, length = bytes.length): number {
  let offset = 0;
  let hash: number;
  if (length >= 16) {
    let v1 = (seed + PRIME32_1 + PRIME32_2) | 0;
    let v2 = (seed + PRIME32_2) | 0;
    let v3 = seed | 0;
    let v4 = (seed - PRIME32_1) | 0;
    const lastStripe = length - 16;
    while (offset <= lastStripe) {
      v1 = accumulate(v1, readLane(bytes, offset));
      v2 = accumulate(v2, readLane(bytes, offset + 4));
      v3 = accumulate(v3, readLane(bytes, offset + 8));
      v4 = accumulate(v4, readLane(bytes, offset + 12));
      offset += 16;
    }
    hash = (rotateLeft(v1, 1) + rotateLeft(v2, 7) + rotateLeft(v3, 12) + rotateLeft(v4, 18)) | 0;
  } else {
    hash = (seed + PRIME32_5) | 0;
  }
  hash = (hash + length) | 0;
  while (offset + 4 <= length) {
    hash = (hash + Math.imul(readLane(bytes, offset), PRIME32_3)) | 0;
    hash = Math.imul(rotateLeft(hash, 17), PRIME32_4);
    offset += 4;
  }
  while (offset < length) {
    hash = (hash + Math.imul(bytes[offset], PRIME32_5)) | 0;
    hash = Math.imul(rotateLeft(hash, 11), PRIME32_1);
    offset += 1;
  }
  return avalanche(hash);
}

function readLane(bytes: Uint8Array, offset: number): number {
  return bytes[offset] | (bytes[offset + 1] << 8) | (bytes[offset + 2] << 16) | (bytes[offset + 3] << 24);
}

/**
 * XXH32 of the UTF-8 encoding of `text`. ASCII strings (the usual keys) are hashed straight
 * from their code units, which equal their UTF-8 bytes; if any code unit turns out not to be
 * ASCII the string is encoded into a reused buffer and hashed again, so neither path allocates.
 */
export function xxh32(text: string, seed = 0): number {
  const length = text.length;
  let offset = 0;
  let allCodeUnits = 0;
  let hash: number;
  if (length >= 16) {
    let v1 = (seed + PRIME32_1 + PRIME32_2) | 0;
    let v2 = (seed + PRIME32_2) | 0;
    let v3 = seed | 0;
    let v4 = (seed - PRIME32_1) | 0;
    const lastStripe = length - 16;
    while (offset <= lastStripe) {
      for (let lane = 0; lane < 4; lane += 1) {
        const c0 = text.charCodeAt(offset);
        const c1 = text.charCodeAt(offset + 1);
        const c2 = text.charCodeAt(offset + 2);
        const c3 = text.charCodeAt(offset + 3);
        allCodeUnits |= c0 | c1 | c2 | c3;
        const word = c0 | (c1 << 8) | (c2 << 16) | (c3 << 24);
        if (lane === 0) v1 = accumulate(v1, word);
        else if (lane === 1) v2 = accumulate(v2, word);
        else if (lane === 2) v3 = accumulate(v3, word);
        else v4 = accumulate(v4, word);
        offset += 4;
      }
    }
    hash = (rotateLeft(v1, 1) + rotateLeft(v2, 7) + rotateLeft(v3, 12) + rotateLeft(v4, 18)) | 0;
  } else {
    hash = (seed + PRIME32_5) | 0;
  }
  hash = (hash + length) | 0;
  while (offset + 4 <= length) {
    const c0 = text.charCodeAt(offset);
    const c1 = text.charCodeAt(offset + 1);
    const c2 = text.charCodeAt(offset + 2);
    const c3 = text.charCodeAt(offset + 3);
    allCodeUnits |= c0 | c1 | c2 | c3;
    hash = (hash + Math.imul(c0 | (c1 << 8) | (c2 << 16) | (c3 << 24), PRIME32_3)) | 0;
    hash = Math.imul(rotateLeft(hash, 17), PRIME32_4);
    offset += 4;
  }
  while (offset < length) {
    const code = text.charCodeAt(offset);
    allCodeUnits |= code;
    hash = (hash + Math.imul(code, PRIME32_5)) | 0;
    hash = Math.imul(rotateLeft(hash, 11), PRIME32_1);
    offset += 1;
  }
  if (allCodeUnits > 0x7f) return xxh32Utf8(text, seed);
  return avalanche(hash);
}

function xxh32Utf8(text: string, seed: number): number {
  const worstCaseBytes = text.length * 3;
  if (scratchBytes.length < worstCaseBytes) scratchBytes = new Uint8Array(Math.max(worstCaseBytes, scratchBytes.length * 2));
  const { written } = utf8Encoder.encodeInto(text, scratchBytes);
  return xxh32Bytes(scratchBytes, seed, written);
}

/**
 * XXH32 of the 8 bytes `first`, `second` (each little-endian): a standard hash of a pair of
 * 32-bit words, used where a structure needs "hash(node, key)" for many nodes per key (HRW)
 * without building a string per pair.
 */
export function xxh32Pair(first: number, second: number, seed = 0): number {
  let hash = (seed + PRIME32_5 + 8) | 0;
  hash = (hash + Math.imul(first, PRIME32_3)) | 0;
  hash = Math.imul(rotateLeft(hash, 17), PRIME32_4);
  hash = (hash + Math.imul(second, PRIME32_3)) | 0;
  hash = Math.imul(rotateLeft(hash, 17), PRIME32_4);
  return avalanche(hash);
}
