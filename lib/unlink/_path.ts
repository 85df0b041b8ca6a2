/**
 * Lexical normalisation of the paths that bpf/path.h resolves in the kernel:
 * the directory walked there is canonical, but the name is as the caller
 * passed it, so `.` and `..` may remain. Folding them without looking at the
 * file system is right except where a symlinked directory is followed by
 * `..` (`link/../f` names the link target's parent, not the link's).
 *
 * @module
 */

/**
 * Folds `.`, `..` and repeated slashes out of an absolute path, lexically.
 * `..` at the root stays at the root, as the kernel does it. Only for a
 * whole path: one that bpf/path.h flagged partial or truncated has lost its
 * beginning, and its `..` cannot be folded. A relative path is returned as
 * it is.
 *
 * @example
 * ```ts
 * import { normalizePath } from "./_path.ts";
 *
 * console.log(normalizePath("/etc/./ssh/../passwd")); // "/etc/passwd"
 * ```
 */
export function normalizePath(path: string): string {
  if (!path.startsWith("/")) return path;
  const parts: string[] = [];
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") parts.pop();
    else parts.push(part);
  }
  return "/" + parts.join("/");
}
