/**
 * Redaction of command lines (`--redact`): secrets passed as arguments
 * (`mysql -pSECRET`, `curl -H 'Authorization: Bearer …'`, `token=` in a URL)
 * replaced with {@linkcode REDACTED} before a record leaves the tracer, so
 * that no output (text, JSON, syslog, metrics, the library's records) sees
 * them.
 *
 * A pattern is a JavaScript regular expression, compiled with the `u` flag
 * (so `(?i:...)` modifiers work, and a pattern that is not valid is refused
 * at once). It is matched against the command line as the arguments joined
 * by single spaces, the way a shell shows it; each capture group's match (the
 * whole match if the pattern has no group) becomes `*****`, mapped back onto
 * the arguments: a match that spans an argument boundary redacts the part in
 * each. The bytes that are not part of the matches, valid UTF-8 or not, are
 * kept as they were.
 *
 * @example Redact a password attached to -p
 * ```ts
 * import { ArgvRedactor } from "./redact.ts";
 *
 * const redactor = new ArgvRedactor(["(?:^| )-p([^ ]+)"]);
 * const argv = new TextEncoder().encode("mysql\0-uroot\0-phunter2\0");
 * const out = redactor.redact(argv)!;
 * console.assert(new TextDecoder().decode(out) === "mysql\0-uroot\0-p*****\0");
 * console.assert(redactor.redact(new TextEncoder().encode("ls\0-l\0")) === undefined);
 * ```
 *
 * @module
 */

import { codePointAt, sequenceLength } from "./_utf8.ts";

/** What replaces each redacted part of an argument. */
export const REDACTED = "*****";
const REDACTED_BYTES = new TextEncoder().encode(REDACTED);

/**
 * Patterns for the secrets most often passed on command lines, for
 * `--redact` (the systemd unit passes them). `[^ ]+` rather than `\S+`:
 * the arguments are joined by single spaces, so it runs to the end of the
 * argument, and it needs no backslash in a unit file. A space ends a match
 * too: a secret with a space in it (`'-pmy secret'`) shows the part after
 * the space. In order:
 *
 * - a password attached to `-p`, as mysql and mysqldump take it: `-pSECRET`;
 * - `password=`, `passwd:`, `token=`, `secret=`, `api_key=`, `apikey:`… in
 *   any case, with or without one space after the separator: `token=abc`,
 *   `--password=x`, `PGPASSWORD=x`, `?access_token=…` in a URL;
 * - an `Authorization:` header's credentials, after `Bearer ` or `Basic `;
 * - `--password`, `--passwd`, `--token`, `--secret`, `--api-key` followed by
 *   the next argument: `--token abc`;
 * - the password of a URL's user info: `https://user:SECRET@host/`.
 */
export const DEFAULT_REDACT_PATTERNS: readonly string[] = [
  "(?:^| )-p([^ ]+)",
  "(?i:password|passwd|token|secret|api[_-]?key)[=:] ?([^ ]+)",
  "(?i:authorization): ?(?:(?i:bearer|basic) )?([^ ]+)",
  "(?:^| )--(?:password|passwd|token|secret|api-key) ([^ ]+)",
  "://[^/:@ ]*:([^/@ ]+)@",
];

interface Pattern {
  re: RegExp;
  /** Whether the whole match is redacted (the pattern has no capture group). */
  whole: boolean;
}

/** Compiles one pattern, or throws a TypeError that says which and why. */
function compile(pattern: string | RegExp): Pattern {
  const source = typeof pattern === "string" ? pattern : pattern.source;
  const own = typeof pattern === "string" ? "" : pattern.flags.replace(/[dgyu]/g, "");
  const flags = `dg${own.includes("v") ? "" : "u"}${own}`;
  let re: RegExp;
  try {
    re = new RegExp(source, flags);
  } catch (error) {
    // V8 says "Invalid regular expression: /SOURCE/FLAGS: why".
    const message = error instanceof Error ? error.message : String(error);
    const tail = message.lastIndexOf(`/${flags}: `);
    const why = tail < 0 ? message : message.slice(tail + flags.length + 3);
    throw new TypeError(`redact "${source}" is not a valid regular expression (${why})`);
  }
  // An alternative that matches the empty string shows how many groups there are.
  const groups = new RegExp(`${source}|`, flags).exec("")!.length - 1;
  return { re, whole: groups === 0 };
}

/**
 * Redacts command lines with a list of patterns (see the module's doc).
 * Compiling checks every pattern: a bad one is a TypeError, in one line.
 */
export class ArgvRedactor {
  readonly #patterns: Pattern[];

  /**
   * Compiles the patterns.
   *
   * @param patterns Regular expressions, as strings (compiled with `u`) or RegExp objects.
   * @throws {TypeError} for a pattern that is not a valid regular expression.
   */
  constructor(patterns: readonly (string | RegExp)[]) {
    this.#patterns = patterns.map(compile);
  }

  /** The patterns' sources, in order. */
  get patterns(): string[] {
    return this.#patterns.map((p) => p.re.source);
  }

  /**
   * The command line `argv` (NUL-separated arguments, as the record holds
   * them, with or without a final NUL) with each match redacted; `undefined`
   * when no pattern matched anything. The result can be longer than `argv`:
   * each redacted part becomes the 5 bytes of {@linkcode REDACTED}.
   */
  redact(argv: Uint8Array): Uint8Array | undefined {
    const end = argv.length > 0 && argv[argv.length - 1] === 0 ? argv.length - 1 : argv.length;
    const { text, at } = joined(argv, end);
    let mask: Uint8Array | undefined;
    for (const { re, whole } of this.#patterns) {
      for (const m of text.matchAll(re)) {
        const spans = m.indices!;
        for (let g = whole ? 0 : 1; g < (whole ? 1 : spans.length); g++) {
          const span = spans[g];
          if (!span || span[0] === span[1]) continue;
          mask ??= new Uint8Array(end);
          mask.fill(1, at[span[0]], at[span[1]]);
        }
      }
    }
    if (!mask) return undefined;
    const out: number[] = [];
    for (let i = 0; i < end; i++) {
      const b = argv[i];
      if (!mask[i] || b === 0) {
        out.push(b); // an argument boundary stays one, even inside a match
        continue;
      }
      // A masked run within one argument becomes one mark.
      if (i === 0 || !mask[i - 1] || argv[i - 1] === 0) out.push(...REDACTED_BYTES);
    }
    if (end < argv.length) out.push(0);
    return Uint8Array.from(out);
  }
}

/**
 * The command line as text, its arguments joined by spaces (bytes that are
 * not UTF-8 as U+FFFD), and the byte offset of each UTF-16 unit (`at[i]`;
 * `at[text.length]` is `end`), so that a match maps back onto the bytes.
 */
function joined(argv: Uint8Array, end: number): { text: string; at: number[] } {
  const parts: string[] = [];
  const at: number[] = [];
  for (let i = 0; i < end;) {
    if (argv[i] === 0) {
      parts.push(" ");
      at.push(i++);
      continue;
    }
    const n = sequenceLength(argv, i);
    if (n === 0 || i + n > end) {
      parts.push("\ufffd");
      at.push(i++);
      continue;
    }
    const cp = codePointAt(argv, i, n);
    parts.push(String.fromCodePoint(cp));
    at.push(i);
    if (cp > 0xffff) at.push(i); // its low surrogate: the u flag never splits the pair
    i += n;
  }
  at.push(end);
  return { text: parts.join(""), at };
}
