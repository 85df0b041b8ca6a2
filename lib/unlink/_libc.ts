/**
 * The unlink tool's own libc calls, beside the binding's table in
 * `../_ffi.ts`: naming cgroups (file handles and directory walks) and the
 * syslog output's datagram sockets. Like the binding's, the library opens on
 * first use. errno is the calling thread's, so `failure` and `errno` of the
 * binding read it for these calls too.
 *
 * @module
 */

const TOOL_LIBC = {
  // cgroup v2 ids and paths (_cgroup.ts)
  // int name_to_handle_at(int dirfd, const char *path, struct file_handle *handle, int *mount_id, int flags)
  name_to_handle_at: {
    parameters: ["i32", "buffer", "buffer", "buffer", "i32"],
    result: "i32",
  },
  // int open_by_handle_at(int mount_fd, struct file_handle *handle, int flags)
  open_by_handle_at: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  // ssize_t readlink(const char *path, char *buf, size_t bufsiz)
  readlink: { parameters: ["buffer", "buffer", "usize"], result: "isize" },
  // DIR *opendir(const char *name)
  opendir: { parameters: ["buffer"], result: "pointer" },
  // struct dirent *readdir(DIR *dirp)
  readdir: { parameters: ["pointer"], result: "pointer" },
  // int closedir(DIR *dirp)
  closedir: { parameters: ["pointer"], result: "i32" },

  // datagram sockets for syslog (_socket.ts)
  // int socket(int domain, int type, int protocol)
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  // int connect(int fd, const struct sockaddr *addr, socklen_t len)
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  // ssize_t send(int fd, const void *buf, size_t len, int flags)
  send: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
} as const satisfies Deno.ForeignLibraryInterface;

let lib: Deno.DynamicLibrary<typeof TOOL_LIBC> | undefined;

/** The tool's libc symbols, opening the library on first use. */
export function libc(): Deno.DynamicLibrary<typeof TOOL_LIBC>["symbols"] {
  lib ??= Deno.dlopen("libc.so.6", TOOL_LIBC);
  return lib.symbols;
}
