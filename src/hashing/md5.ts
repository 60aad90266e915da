// MD5 (RFC 1321) in plain JavaScript, returning the digest as four little-endian 32-bit words.
// Ketama needs exactly those words: a key's position is the first one, a server's four points
// per hash are all four. node:crypto computes the same digest, but for a 10-byte key the trip
// into native code costs about 1 µs, several times the whole JavaScript computation; the tests
// check this against node:crypto on random inputs. MD5 is used here only for placement
// compatibility, never for security.

const SHIFTS = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];
// RFC 1321 §3.4: T[i] = floor(2^32 · |sin(i + 1)|).
const SINE_TABLE = Int32Array.from({ length: 64 }, (_, index) => Math.floor(Math.abs(Math.sin(index + 1)) * 4294967296) | 0);

const blockWords = new Int32Array(16);
const utf8Encoder = new TextEncoder();
let scratchBytes = new Uint8Array(128);

/** Digest words of the last call: A, B, C, D as unsigned 32-bit numbers. */
export const md5Output = new Uint32Array(4);

function rotateLeft(value: number, bits: number): number {
  return (value << bits) | (value >>> (32 - bits));
}

function writeUtf8(text: string): number {
  const worstCaseBytes = text.length * 3 + 72;
  if (scratchBytes.length < worstCaseBytes) scratchBytes = new Uint8Array(Math.max(worstCaseBytes, scratchBytes.length * 2));
  let ascii = true;
  for (let index = 0; index < text.length; index += 1) {
    const code = text.charCodeAt(index);
    if (code > 0x7f) {
      ascii = false;
      break;
    }
    scratchBytes[index] = code;
  }
  if (ascii) return text.length;
  return utf8Encoder.encodeInto(text, scratchBytes).written;
}

/** MD5 of the UTF-8 encoding of `text`; the digest lands in `md5Output`, which is returned. */
export function md5Words(text: string): Uint32Array {
  const length = writeUtf8(text);
  // Padding: 0x80, zeros up to 56 mod 64, then the bit length as a 64-bit little-endian number.
  const paddedLength = (((length + 8) >>> 6) + 1) << 6;
  scratchBytes.fill(0, length, paddedLength);
  scratchBytes[length] = 0x80;
  const bitLength = length * 8;
  const lengthOffset = paddedLength - 8;
  scratchBytes[lengthOffset] = bitLength & 0xff;
  scratchBytes[lengthOffset + 1] = (bitLength >>> 8) & 0xff;
  scratchBytes[lengthOffset + 2] = (bitLength >>> 16) & 0xff;
  scratchBytes[lengthOffset + 3] = (bitLength >>> 24) & 0xff;
  const highBits = Math.floor(length / 0x20000000);
  scratchBytes[lengthOffset + 4] = highBits & 0xff;
  scratchBytes[lengthOffset + 5] = (highBits >>> 8) & 0xff;
  scratchBytes[lengthOffset + 6] = (highBits >>> 16) & 0xff;
  scratchBytes[lengthOffset + 7] = (highBits >>> 24) & 0xff;

  let a0 = 0x67452301;
  let b0 = 0xefcdab89 | 0;
  let c0 = 0x98badcfe | 0;
  let d0 = 0x10325476;
  for (let blockStart = 0; blockStart < paddedLength; blockStart += 64) {
    for (let word = 0; word < 16; word += 1) {
      const at = blockStart + word * 4;
      blockWords[word] = scratchBytes[at] | (scratchBytes[at + 1] << 8) | (scratchBytes[at + 2] << 16) | (scratchBytes[at + 3] << 24);
    }
    let a = a0;
    let b = b0;
    let c = c0;
    let d = d0;
    for (let step = 0; step < 64; step += 1) {
      let mixed: number;
      let wordIndex: number;
      if (step < 16) {
        mixed = (b & c) | (~b & d);
        wordIndex = step;
      } else if (step < 32) {
        mixed = (d & b) | (~d & c);
        wordIndex = (5 * step + 1) & 15;
      } else if (step < 48) {
        mixed = b ^ c ^ d;
        wordIndex = (3 * step + 5) & 15;
      } else {
        mixed = c ^ (b | ~d);
        wordIndex = (7 * step) & 15;
      }
      const sum = (mixed + a + SINE_TABLE[step] + blockWords[wordIndex]) | 0;
      a = d;
      d = c;
      c = b;
      b = (b + rotateLeft(sum, SHIFTS[((step >>> 4) << 2) | (step & 3)])) | 0;
    }
    a0 = (a0 + a) | 0;
    b0 = (b0 + b) | 0;
    c0 = (c0 + c) | 0;
    d0 = (d0 + d) | 0;
  }
  md5Output[0] = a0;
  md5Output[1] = b0;
  md5Output[2] = c0;
  md5Output[3] = d0;
  return md5Output;
}
