/**
 * What the scripts share: state lines on stderr, one-line errors, and the
 * signals that stop a tool cleanly.
 *
 * @module
 */

/** Signals after which a tool detaches, prints its summary and exits 0. */
export const STOP_SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;

const encoder = new TextEncoder();

/** Writes a state line to stderr; a closed stderr is not worth dying for. */
export function status(line: string): void {
  try {
    Deno.stderr.writeSync(encoder.encode(line + "\n"));
  } catch (error) {
    if (!(error instanceof Deno.errors.BrokenPipe)) throw error;
  }
}

/**
 * One line for any error. A Deno permission refusal names the flag to add
 * and the way to run `script` with the permissions it documents.
 */
export function errorLine(error: unknown, script: string): string {
  if (error instanceof Deno.errors.NotCapable) {
    const flag = /--allow-[a-z]+/.exec(error.message)?.[0] ?? "--allow-ffi --allow-env";
    return `Deno refused a permission this tool needs: add ${flag} ` +
      `(sudo deno run --allow-ffi --allow-env ${script})`;
  }
  return (error instanceof Error ? error.message : String(error)).split("\n")[0];
}

/** The option table `parseArgs` takes, as far as {@linkcode joinDashValues} reads it. */
type OptionTable = Record<string, { type: "string" | "boolean"; short?: string }>;

/**
 * `args` with each dash-led value of a string option joined to its flag
 * (`-p -5` becomes `--pid=-5`), so that the option's own check says what is
 * wrong with it, as it does for `--pid=-5`; `parseArgs` would only call the
 * value "ambiguous". A known option in the value's place means the value is
 * missing, and the error says so.
 *
 * @throws {TypeError} `--count needs a value, got the option "--json"`.
 *
 * @example
 * ```ts
 * import { joinDashValues } from "./_cli.ts";
 *
 * joinDashValues(["-p", "-5", "-x"], {
 *   pid: { type: "string", short: "p" },
 *   failed: { type: "boolean", short: "x" },
 * }); // ["--pid=-5", "-x"]
 * ```
 */
export function joinDashValues(args: readonly string[], options: OptionTable): string[] {
  const takesValue = new Map<string, string>();
  const shorts = new Set<string>();
  for (const [name, option] of Object.entries(options)) {
    if (option.short) shorts.add(option.short);
    if (option.type !== "string") continue;
    takesValue.set(`--${name}`, name);
    if (option.short) takesValue.set(`-${option.short}`, name);
  }
  const isOption = (arg: string) =>
    arg === "--" ||
    (arg.startsWith("--") ? arg.slice(2).split("=")[0] in options : shorts.has(arg[1]));
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const [arg, next] = [args[i], args[i + 1]];
    if (arg === "--") return [...out, ...args.slice(i)];
    const name = takesValue.get(arg);
    if (name === undefined || next === undefined || !next.startsWith("-") || next === "-") {
      out.push(arg);
      continue;
    }
    if (isOption(next)) throw new TypeError(`${arg} needs a value, got the option "${next}"`);
    out.push(`--${name}=${next}`);
    i++;
  }
  return out;
}
