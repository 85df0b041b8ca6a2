/**
 * The one FFI symbol table of deno_bpf: libbpf 1.x, plus the handful of libc
 * calls libbpf leaves to its caller (epoll, eventfd, mmap, vsnprintf for its
 * log). Both libraries open lazily on first use, so importing `mod.ts` needs
 * neither `--allow-ffi` nor root. The unlink tool's own libc calls (cgroup
 * naming, syslog's sockets) are in its own table, `unlink/_libc.ts`.
 *
 * @module
 */

import { BpfError, type ErrorOptions, LibbpfNotFoundError } from "./errors.ts";

/** libbpf symbols, keyed by their exact C names. */
const LIBBPF = {
  libbpf_major_version: { parameters: [], result: "u32" },
  libbpf_minor_version: { parameters: [], result: "u32" },
  // libbpf_print_fn_t libbpf_set_print(libbpf_print_fn_t fn)
  libbpf_set_print: { parameters: ["function"], result: "pointer" },
  // int libbpf_num_possible_cpus(void)
  libbpf_num_possible_cpus: { parameters: [], result: "i32" },
  // int libbpf_probe_bpf_map_type(enum bpf_map_type, const void *opts)
  libbpf_probe_bpf_map_type: { parameters: ["u32", "pointer"], result: "i32" },

  // struct bpf_object *bpf_object__open_mem(const void *buf, size_t sz, const struct bpf_object_open_opts *)
  bpf_object__open_mem: {
    parameters: ["buffer", "usize", "pointer"],
    result: "pointer",
  },
  // struct bpf_object *bpf_object__open_file(const char *path, const struct bpf_object_open_opts *)
  bpf_object__open_file: { parameters: ["buffer", "pointer"], result: "pointer" },
  // int bpf_object__load(struct bpf_object *)
  bpf_object__load: { parameters: ["pointer"], result: "i32" },
  // void bpf_object__close(struct bpf_object *)
  bpf_object__close: { parameters: ["pointer"], result: "void" },
  // struct bpf_program *bpf_object__next_program(const struct bpf_object *, struct bpf_program *prev)
  bpf_object__next_program: {
    parameters: ["pointer", "pointer"],
    result: "pointer",
  },
  // struct bpf_map *bpf_object__next_map(const struct bpf_object *, const struct bpf_map *prev)
  bpf_object__next_map: { parameters: ["pointer", "pointer"], result: "pointer" },
  // struct btf *bpf_object__btf(const struct bpf_object *)
  bpf_object__btf: { parameters: ["pointer"], result: "pointer" },

  // const char *bpf_program__name(const struct bpf_program *)
  bpf_program__name: { parameters: ["pointer"], result: "pointer" },
  // const char *bpf_program__section_name(const struct bpf_program *)
  bpf_program__section_name: { parameters: ["pointer"], result: "pointer" },
  // int bpf_program__set_autoload(struct bpf_program *, bool)
  bpf_program__set_autoload: { parameters: ["pointer", "bool"], result: "i32" },
  // bool bpf_program__autoload(const struct bpf_program *)
  bpf_program__autoload: { parameters: ["pointer"], result: "bool" },
  // struct bpf_link *bpf_program__attach(const struct bpf_program *)
  bpf_program__attach: { parameters: ["pointer"], result: "pointer" },
  // int bpf_link__destroy(struct bpf_link *)
  bpf_link__destroy: { parameters: ["pointer"], result: "i32" },
  // struct bpf_link *bpf_program__attach_tracepoint(const struct bpf_program *, const char *category, const char *name)
  bpf_program__attach_tracepoint: {
    parameters: ["pointer", "buffer", "buffer"],
    result: "pointer",
  },
  // struct bpf_link *bpf_program__attach_raw_tracepoint(const struct bpf_program *, const char *name)
  bpf_program__attach_raw_tracepoint: { parameters: ["pointer", "buffer"], result: "pointer" },
  // struct bpf_link *bpf_program__attach_kprobe(const struct bpf_program *, bool retprobe, const char *func)
  bpf_program__attach_kprobe: { parameters: ["pointer", "bool", "buffer"], result: "pointer" },
  // struct bpf_link *bpf_program__attach_uprobe_opts(const struct bpf_program *, pid_t pid, const char *binary_path, size_t func_offset, const struct bpf_uprobe_opts *)
  bpf_program__attach_uprobe_opts: {
    parameters: ["pointer", "i32", "buffer", "usize", "buffer"],
    result: "pointer",
  },
  // int bpf_program__set_attach_target(struct bpf_program *, int attach_prog_fd, const char *attach_func_name)
  bpf_program__set_attach_target: { parameters: ["pointer", "i32", "buffer"], result: "i32" },
  // int bpf_link__pin(struct bpf_link *, const char *path)
  bpf_link__pin: { parameters: ["pointer", "buffer"], result: "i32" },
  // int bpf_link__unpin(struct bpf_link *)
  bpf_link__unpin: { parameters: ["pointer"], result: "i32" },
  // struct bpf_link *bpf_link__open(const char *path)
  bpf_link__open: { parameters: ["buffer"], result: "pointer" },

  // const char *bpf_map__name(const struct bpf_map *)
  bpf_map__name: { parameters: ["pointer"], result: "pointer" },
  // int bpf_map__fd(const struct bpf_map *)
  bpf_map__fd: { parameters: ["pointer"], result: "i32" },
  // int bpf_map__pin(struct bpf_map *, const char *path)
  bpf_map__pin: { parameters: ["pointer", "buffer"], result: "i32" },
  // int bpf_map__unpin(struct bpf_map *, const char *path)
  bpf_map__unpin: { parameters: ["pointer", "buffer"], result: "i32" },

  // Maps by fd (libbpf's thin wrappers of the bpf(2) commands): every map
  // operation goes through these, for maps of an object and pinned ones alike.
  // int bpf_obj_get(const char *pathname)
  bpf_obj_get: { parameters: ["buffer"], result: "i32" },
  // int bpf_obj_get_info_by_fd(int bpf_fd, void *info, __u32 *info_len)
  bpf_obj_get_info_by_fd: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  // int bpf_map_lookup_elem(int fd, const void *key, void *value)
  bpf_map_lookup_elem: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  // int bpf_map_update_elem(int fd, const void *key, const void *value, __u64 flags)
  bpf_map_update_elem: { parameters: ["i32", "buffer", "buffer", "u64"], result: "i32" },
  // int bpf_map_delete_elem(int fd, const void *key)
  bpf_map_delete_elem: { parameters: ["i32", "buffer"], result: "i32" },
  // int bpf_map_lookup_and_delete_elem(int fd, const void *key, void *value)
  bpf_map_lookup_and_delete_elem: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  // int bpf_map_get_next_key(int fd, const void *key, void *next_key)
  bpf_map_get_next_key: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  // int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values, __u32 *count, const struct bpf_map_batch_opts *)
  bpf_map_lookup_batch: {
    parameters: ["i32", "buffer", "buffer", "buffer", "buffer", "buffer", "pointer"],
    result: "i32",
  },
  // __u32 bpf_map__max_entries(const struct bpf_map *)
  bpf_map__max_entries: { parameters: ["pointer"], result: "u32" },
  // int bpf_map__set_max_entries(struct bpf_map *, __u32)
  bpf_map__set_max_entries: { parameters: ["pointer", "u32"], result: "i32" },
  // __u32 bpf_map__value_size(const struct bpf_map *)
  bpf_map__value_size: { parameters: ["pointer"], result: "u32" },
  // void *bpf_map__initial_value(struct bpf_map *, size_t *psize)
  bpf_map__initial_value: { parameters: ["pointer", "buffer"], result: "pointer" },

  // __s32 btf__find_by_name_kind(const struct btf *, const char *name, __u32 kind)
  btf__find_by_name_kind: {
    parameters: ["pointer", "buffer", "u32"],
    result: "i32",
  },
  // const struct btf_type *btf__type_by_id(const struct btf *, __u32 id)
  btf__type_by_id: { parameters: ["pointer", "u32"], result: "pointer" },
  // const char *btf__name_by_offset(const struct btf *, __u32 offset)
  btf__name_by_offset: { parameters: ["pointer", "u32"], result: "pointer" },
  // __s64 btf__resolve_size(const struct btf *, __u32 type_id)
  btf__resolve_size: { parameters: ["pointer", "u32"], result: "i64" },

  // int libbpf_probe_bpf_prog_type(enum bpf_prog_type, const void *opts)
  libbpf_probe_bpf_prog_type: { parameters: ["u32", "pointer"], result: "i32" },
  // int libbpf_probe_bpf_helper(enum bpf_prog_type, enum bpf_func_id, const void *opts)
  libbpf_probe_bpf_helper: { parameters: ["u32", "u32", "pointer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** libc symbols that libbpf's ring buffer and log need from its caller. */
const LIBC = {
  __errno_location: { parameters: [], result: "pointer" },
  // int vsnprintf(char *str, size_t size, const char *format, va_list ap)
  vsnprintf: {
    parameters: ["buffer", "usize", "pointer", "pointer"],
    result: "i32",
  },
  epoll_create1: { parameters: ["i32"], result: "i32" },
  // int epoll_ctl(int epfd, int op, int fd, struct epoll_event *event)
  epoll_ctl: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  // int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout)
  epoll_wait: {
    parameters: ["i32", "buffer", "i32", "i32"],
    result: "i32",
    nonblocking: true,
  },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  // int open(const char *path, int flags, ...): the mode is never passed (no O_CREAT)
  open: { parameters: ["buffer", "i32"], result: "i32" },
  // ssize_t read(int fd, void *buf, size_t count)
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  // The same read(2), off the main thread: for fds that block (trace_pipe).
  read_blocking: {
    name: "read",
    parameters: ["i32", "buffer", "usize"],
    result: "isize",
    nonblocking: true,
  },
  // int poll(struct pollfd *fds, nfds_t nfds, int timeout)
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  // The same poll(2), off the main thread, for waits that may last (its errno
  // is another thread's: callers must not read it).
  poll_wait: {
    name: "poll",
    parameters: ["buffer", "u64", "i32"],
    result: "i32",
    nonblocking: true,
  },
  // int uname(struct utsname *buf)
  uname: { parameters: ["buffer"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  // void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset)
  mmap: {
    parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"],
    result: "pointer",
  },
  munmap: { parameters: ["pointer", "usize"], result: "i32" },
  // long syscall(long number, ...), as perf_event_open(2), which glibc does not wrap:
  // syscall(SYS_perf_event_open, struct perf_event_attr *attr, pid_t pid, int cpu, int group_fd, unsigned long flags)
  perf_event_open: {
    name: "syscall",
    parameters: ["i64", "buffer", "i32", "i32", "i32", "u64"],
    result: "i64",
  },
  // int ioctl(int fd, unsigned long request, ...): the one argument, an integer
  ioctl: { parameters: ["i32", "u64", "u64"], result: "i32" },
  getpagesize: { parameters: [], result: "i32" },
  // int malloc_trim(size_t pad)
  malloc_trim: { parameters: ["usize"], result: "i32" },
  // int clock_gettime(clockid_t, struct timespec *)
  clock_gettime: { parameters: ["i32", "buffer"], result: "i32" },
  // int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const void *data)
  mount: {
    parameters: ["buffer", "buffer", "buffer", "u64", "pointer"],
    result: "i32",
  },
} as const satisfies Deno.ForeignLibraryInterface;

export type Libbpf = Deno.DynamicLibrary<typeof LIBBPF>["symbols"];
export type Libc = Deno.DynamicLibrary<typeof LIBC>["symbols"];

/** The oldest libbpf whose API and semantics (errno returns) we rely on. */
export const MIN_LIBBPF = [1, 0] as const;

let libbpf: Deno.DynamicLibrary<typeof LIBBPF> | undefined;
let libc: Deno.DynamicLibrary<typeof LIBC> | undefined;
let libbpfVersion = "";

/** The candidate paths for libbpf, in search order. */
export function libbpfCandidates(): string[] {
  const override = Deno.env.get("LIBBPF_PATH");
  return [
    ...(override ? [override] : []),
    "libbpf.so.1",
    "libbpf.so.0",
    "libbpf.so",
  ];
}

/** libbpf's symbols, opening the library on first use. */
export function bpf(): Libbpf {
  if (libbpf) return libbpf.symbols;
  const tried: string[] = [];
  for (const path of libbpfCandidates()) {
    let lib: Deno.DynamicLibrary<typeof LIBBPF>;
    try {
      lib = Deno.dlopen(path, LIBBPF);
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable) throw error;
      tried.push(`${path} (${firstLine(error)})`);
      continue;
    }
    const major = lib.symbols.libbpf_major_version();
    const minor = lib.symbols.libbpf_minor_version();
    if (major < MIN_LIBBPF[0]) {
      lib.close();
      tried.push(`${path} (version ${major}.${minor} is older than 1.0)`);
      continue;
    }
    libbpf = lib;
    libbpfVersion = `${major}.${minor}`;
    return lib.symbols;
  }
  throw new LibbpfNotFoundError(tried);
}

/** The loaded libbpf's version, e.g. `"1.1"`. Opens libbpf if needed. */
export function libbpfVersionString(): string {
  bpf();
  return libbpfVersion;
}

/** libc's symbols, opening the library on first use. */
export function c(): Libc {
  libc ??= Deno.dlopen("libc.so.6", LIBC);
  return libc.symbols;
}

/**
 * The calling thread's errno. Read it only through {@linkcode checkPtr} or
 * {@linkcode failure}, immediately after the call that failed: any other call
 * in between may overwrite it.
 */
export function errno(): number {
  const where = c().__errno_location();
  return where ? new Deno.UnsafePointerView(where).getInt32() : 0;
}

const encoder = new TextEncoder();

/** A NUL-terminated UTF-8 copy of `s` for C. */
export function cstr(s: string): Uint8Array<ArrayBuffer> {
  return encoder.encode(s + "\0");
}

/** Reads a C string, or `""` for NULL. */
export function readCString(ptr: Deno.PointerValue): string {
  return ptr ? Deno.UnsafePointerView.getCString(ptr) : "";
}

function firstLine(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.split("\n")[0];
}

/**
 * For calls that return NULL (libbpf) or -1 (libc) and set errno: the error
 * for the call that just failed. Call it before any other native call, which
 * could overwrite errno.
 */
export function failure(operation: string, options?: ErrorOptions): BpfError {
  return new BpfError(operation, errno(), options);
}

/** Returns `ptr`, or throws {@linkcode failure} if the call returned NULL. */
export function checkPtr(
  ptr: Deno.PointerValue,
  operation: string,
  options?: ErrorOptions,
): Deno.PointerObject {
  if (ptr !== null) return ptr;
  throw failure(operation, options);
}

/** Returns `ret`, or throws {@linkcode failure} if a libc call returned -1. */
export function checkErrno(ret: number, operation: string, options?: ErrorOptions): number {
  if (ret >= 0) return ret;
  throw failure(operation, options);
}
