/**
 * UTF-8 at the byte level, for the formatters and the redaction of command
 * lines: where each valid sequence starts and ends, so that the bytes that
 * are not UTF-8 can be shown (or kept) as themselves.
 *
 * @module
 */

/** The length of the valid UTF-8 sequence at `b[i]`, or 0 if none starts there. */
export function sequenceLength(b: Uint8Array, i: number): number {
  const lead = b[i];
  if (lead < 0x80) return 1;
  const cont = (k: number, lo = 0x80, hi = 0xbf) => b[i + k] >= lo && b[i + k] <= hi;
  if (lead >= 0xc2 && lead <= 0xdf) return cont(1) ? 2 : 0;
  if (lead >= 0xe0 && lead <= 0xef) {
    // No overlong forms (E0 80-9F) and no UTF-16 surrogates (ED A0-BF).
    const ok = cont(1, lead === 0xe0 ? 0xa0 : 0x80, lead === 0xed ? 0x9f : 0xbf) && cont(2);
    return ok ? 3 : 0;
  }
  if (lead >= 0xf0 && lead <= 0xf4) {
    // No overlong forms (F0 80-8F) and nothing past U+10FFFF (F4 90-BF).
    const ok = cont(1, lead === 0xf0 ? 0x90 : 0x80, lead === 0xf4 ? 0x8f : 0xbf) &&
      cont(2) && cont(3);
    return ok ? 4 : 0;
  }
  return 0;
}

/**
 * The code point of the valid sequence of `n` bytes at `b[i]`
 * ({@linkcode sequenceLength} says `n`).
 */
export function codePointAt(b: Uint8Array, i: number, n: number): number {
  if (n === 1) return b[i];
  const tail = (k: number) => b[i + k] & 0x3f;
  if (n === 2) return (b[i] & 0x1f) << 6 | tail(1);
  if (n === 3) return (b[i] & 0x0f) << 12 | tail(1) << 6 | tail(2);
  return (b[i] & 0x07) << 18 | tail(1) << 12 | tail(2) << 6 | tail(3);
}
