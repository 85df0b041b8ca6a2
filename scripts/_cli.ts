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
