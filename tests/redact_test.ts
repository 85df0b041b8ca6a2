/**
 * Command lines under the user's control: `--redact` patterns on tables,
 * then real processes with secrets in their argv, deleting real files,
 * traced by trace.ts (JSON, text, syslog through rsyslogd) and by the
 * library (`for await` and the raw records of `drain`); and `--argv none`
 * and `argv0`, whose bytes never leave the kernel.
 */

import assert from "node:assert/strict";
import {
  ArgvRedactor,
  DEFAULT_REDACT_PATTERNS,
  eventData,
  formatJson,
  UNLINK_F_ARGV_REDACTED,
  type UnlinkEvent,
  unlinkEvent,
  UnlinkTracer,
  type UnlinkTracerOptions,
} from "../lib/unlink/mod.ts";
import { kernelTest, scratch, TEST_MODE, unlinkRecord } from "./_helpers.ts";
import { runScript, traceWhile } from "./_trace.ts";
import { startRsyslog, startService, waitFor } from "./_servers.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const F = unlinkEvent.fields;

/** Redacts a command line written with NULs, as text. */
function redacted(patterns: readonly (string | RegExp)[], argv: string): string | undefined {
  const out = new ArgvRedactor(patterns).redact(encoder.encode(argv));
  return out && decoder.decode(out);
}

Deno.test("the default patterns redact the usual secrets and leave plain command lines alone", () => {
  const table: [string, string | undefined][] = [
    ["mysql\0-uroot\0-pSECRET\0db\0", "mysql\0-uroot\0-p*****\0db\0"],
    // The arguments are joined by spaces, so a space ends [^ ]+: the rest of a secret with a
    // space in it shows. A pattern of your own can take more (-p(.+?)(?= -|$)).
    ["mysqldump\0-px y\0", "mysqldump\0-p***** y\0"],
    ["app\0token=abc123\0", "app\0token=*****\0"],
    ["app\0--password=pw\0--api-key\0k\0", "app\0--password=*****\0--api-key\0*****\0"],
    ["app\0PASSWORD: pw\0", "app\0PASSWORD: *****\0"],
    ["app\0TOKEN=\0abc\0", "app\0TOKEN=\0*****\0"],
    ["app\0--token\0abc\0", "app\0--token\0*****\0"],
    ["app\0client_secret=s&x=1\0", "app\0client_secret=*****\0"],
    [
      "curl\0-H\0Authorization: Bearer xyz\0https://u:pw@h/?access_token=t\0",
      "curl\0-H\0Authorization: Bearer *****\0https://u:*****@h/?access_token=*****\0",
    ],
    ["curl\0-H\0authorization: Basic dXNlcg==\0", "curl\0-H\0authorization: Basic *****\0"],
    ["rm\0-rf\0/tmp/x\0", undefined],
    ["mkdir\0-p\0/tmp/x\0", undefined],
    ["cp\0-preserve=mode\0", "cp\0-p*****\0"], // a false positive: redacts too much, never too little
    ["ls\0", undefined],
    ["", undefined],
  ];
  for (const [argv, want] of table) {
    assert.equal(redacted(DEFAULT_REDACT_PATTERNS, argv), want, argv);
  }
});

Deno.test("a match across an argument boundary redacts its part of each argument, keeping them apart", () => {
  assert.equal(redacted(["b c"], "ab\0cd"), "a*****\0*****d");
  assert.equal(redacted(["(b c)"], "ab\0cd\0"), "a*****\0*****d\0");
  assert.equal(redacted(["x(.*)"], "x1\0\0y"), "x*****\0\0*****", "an empty argument stays");
});

Deno.test("a pattern with no group redacts its whole match; an empty match redacts nothing", () => {
  assert.equal(redacted(["s[e3]cr[e3]t"], "a\0my-s3cret-x\0"), "a\0my-*****-x\0");
  assert.equal(redacted(["(?i:s(e)cret)"], "SECRET"), "S*****CRET");
  assert.equal(redacted(["x*", "(y?)"], "abc"), undefined);
  assert.equal(redacted([/TOKEN=(\S+)/i], "x\0token=1\0"), "x\0token=*****\0", "a RegExp's flags");
});

Deno.test("bytes that are not UTF-8 stay exact around a redacted part, even inside the match", () => {
  const argv = new Uint8Array([...encoder.encode("a\0"), 0xff, ...encoder.encode("token=q"), 0xfe]);
  const out = new ArgvRedactor(DEFAULT_REDACT_PATTERNS).redact(argv)!;
  assert.deepEqual(
    out,
    new Uint8Array([...encoder.encode("a\0"), 0xff, ...encoder.encode("token=*****")]),
  );
  const emoji = encoder.encode("x\0\u{1f511}=key\0");
  assert.equal(
    decoder.decode(new ArgvRedactor(["\u{1f511}=(.+)"]).redact(emoji)),
    "x\0\u{1f511}=*****\0",
  );
});

Deno.test("a pattern that is not a regular expression is a TypeError of one line that names it", () => {
  assert.throws(() => new ArgvRedactor(["ok", "Authorization: ("]), {
    name: "TypeError",
    message: 'redact "Authorization: (" is not a valid regular expression (Unterminated group)',
  });
});

Deno.test("trace.ts refuses a bad --redact or --argv in one line, exit 2", async () => {
  for (
    const [args, message] of [
      [
        ["--redact", "a(b"],
        'trace: --redact "a(b" is not a valid regular expression (Unterminated group); see --help\n',
      ],
      [["--argv", "all"], 'trace: --argv must be none, argv0, full; got "all"; see --help\n'],
    ] as const
  ) {
    const run = await runScript([...args]);
    assert.deepEqual([run.code, run.stderr, run.stdout], [2, message, ""]);
  }
});

Deno.test("UnlinkTracer.open refuses a bad redact pattern or argv mode before touching the kernel", () => {
  assert.throws(() => UnlinkTracer.open({ redact: ["ok", "("] }), {
    name: "TypeError",
    message: 'redact "(" is not a valid regular expression (Unterminated group)',
  });
  // @ts-expect-error: not a mode
  assert.throws(() => UnlinkTracer.open({ argv: "all" }), {
    name: "TypeError",
    message: 'Unknown argv "all": use none, argv0, full',
  });
  // @ts-expect-error: a string, not a list
  assert.throws(() => UnlinkTracer.open({ redact: "token=(.+)" }), /redact must be an array/);
});

Deno.test("a redacted event says so in JSON, last, and only then", () => {
  const e = unlinkEvent.decode(unlinkRecord({ argv: encoder.encode("mysql\0-p*****\0") }));
  assert.ok(!("argv_redacted" in eventData(e)));
  const marked: UnlinkEvent = { ...e, flags: e.flags | UNLINK_F_ARGV_REDACTED };
  const data = JSON.parse(formatJson(marked)).data;
  assert.deepEqual(Object.keys(data).slice(-2), ["argv", "argv_redacted"]);
  assert.deepEqual([data.argv, data.argv_redacted], [["mysql", "-p*****"], true]);
});

// ---------------------------------------------------------------------------
// Real processes

/** Each secret the child's command line holds, and the argument that holds it. */
const SECRETS = ["SECRET1", "abc123", "xyz789", "hunter2", "k3y"];
const ARGS = ["-pSECRET1", "token=abc123", "Authorization: Bearer xyz789", "--password", "hunter2"];
const REDACTED_ARGS = [
  "-p*****",
  "token=*****",
  "Authorization: Bearer *****",
  "--password",
  "*****",
];
/** The flags the README recommends for the unit: `=`, as a value may start with `-`. */
const REDACT_FLAGS = DEFAULT_REDACT_PATTERNS.map((p) => `--redact=${p}`);

/**
 * perl deleting `file` with the secrets on its command line:
 * `perl -e "unlink shift" FILE [\xffapi_key=k3y] ARGS...`; with `bad`, an
 * argument starting with the byte 0xff, so the command line is not UTF-8.
 */
async function perlDeletes(file: string, bad: boolean, args = ARGS): Promise<number> {
  const raw = bad ? `"$(printf '\\377')api_key=k3y" ` : "";
  const child = new Deno.Command("sh", {
    args: ["-c", `exec perl -e 'unlink shift' "$0" ${raw}"$@"`, file, ...args],
  }).spawn();
  const { code } = await child.status;
  assert.equal(code, 0);
  return child.pid;
}

/** The command line an event must show for perlDeletes(file, bad), redacted. */
function expectedArgv(file: string, bad: boolean): string[] {
  return [
    "perl",
    "-e",
    "unlink shift",
    file,
    ...(bad ? ["\ufffdapi_key=*****"] : []),
    ...REDACTED_ARGS,
  ];
}

/** Its bytes, for argv_b64. */
function expectedBytes(file: string): Uint8Array {
  const head = encoder.encode(`perl\0-e\0unlink shift\0${file}\0`);
  const tail = encoder.encode(`api_key=*****\0${REDACTED_ARGS.join("\0")}\0`);
  return new Uint8Array([...head, 0xff, ...tail]);
}

function assertNoSecret(what: string, text: string) {
  for (const secret of SECRETS) {
    assert.ok(!text.includes(secret), `${what} holds ${secret}: ${text}`);
  }
}

kernelTest(
  "a secret in argv is redacted in trace.ts's JSON, argv_b64 and syslog, and absent from text",
  async () => {
    const server = await startRsyslog();
    const dir = scratch(["utf8", "bad"]);
    try {
      const service = await startService(["--allow-ffi", "--allow-env"], [
        "--json",
        "-n",
        "perl",
        "--path",
        dir,
        "--syslog",
        `unix://${server.socket}`,
        ...REDACT_FLAGS,
      ]);
      const pids = [await perlDeletes(`${dir}/utf8`, false), await perlDeletes(`${dir}/bad`, true)];
      const events = () =>
        server.lines().filter((l) => l.procid === String(service.pid) && l.msgid === "event");
      const logged = await waitFor(
        "two events in rsyslog's file",
        10_000,
        () => events().length === 2 ? events() : undefined,
      );
      const { code, stdout, stderr } = await service.stop();
      assert.equal(code, 0, stderr);
      const lines = stdout.split("\n").filter((l) => l.startsWith('{"type":"event"'));
      for (
        const [source, datas] of [["stdout", lines.map((l) => JSON.parse(l).data)], [
          "syslog",
          logged.map((l) => l.json.data),
        ]] as const
      ) {
        assert.deepEqual(datas.map((d) => d.pid), pids, source);
        assert.deepEqual(datas[0].argv, expectedArgv(`${dir}/utf8`, false), source);
        assert.equal(datas[0].argv_b64, undefined, source);
        assert.deepEqual(datas[1].argv, expectedArgv(`${dir}/bad`, true), source);
        assert.deepEqual(
          Uint8Array.fromBase64(datas[1].argv_b64),
          expectedBytes(`${dir}/bad`),
          source,
        );
        for (const d of datas) assert.equal(d.argv_redacted, true, source);
      }
      assertNoSecret("stdout", stdout);
      assertNoSecret(
        "syslog",
        Deno.readTextFileSync(`${server.socket.replace(/log$/, "messages")}`),
      );

      // Text shows no argv; the secrets stay out of it all the same.
      Deno.writeTextFileSync(`${dir}/text`, "");
      const text = await traceWhile(["-n", "perl", "--path", dir, ...REDACT_FLAGS], async () => {
        await perlDeletes(`${dir}/text`, true);
      });
      assert.equal(text.code, 0, text.stderr);
      assert.match(text.stdout, new RegExp(` perl +0 +[\\d.]+ ${dir}/text\\n`));
      assertNoSecret("text", text.stdout);
    } finally {
      await server.close();
      Deno.removeSync(dir, { recursive: true });
    }
  },
);

/**
 * Runs `perl` deletions under tracers with each of `options`, at once; returns,
 * per tracer, the events its `for await` yielded and the raw records of a
 * second tracer's `drain` with the same options.
 */
async function traced(
  dir: string,
  options: UnlinkTracerOptions[],
  run: () => Promise<void>,
): Promise<{ events: UnlinkEvent[]; raws: Uint8Array[] }[]> {
  const base: UnlinkTracerOptions = { mode: TEST_MODE, comm: "perl", paths: [dir] };
  const tracers = options.map((o) => ({
    iterated: UnlinkTracer.open({ ...base, ...o }),
    drained: UnlinkTracer.open({ ...base, ...o }),
  }));
  try {
    const results = tracers.map(({ iterated, drained }) => {
      const out = { events: [] as UnlinkEvent[], raws: [] as Uint8Array[] };
      const reading = Promise.all([
        (async () => {
          for await (const e of iterated) out.events.push(e);
        })(),
        (async () => {
          while (await drained.wait()) {
            drained.drain((bytes, offset, length) =>
              out.raws.push(bytes.slice(offset, offset + length))
            );
          }
        })(),
      ]);
      return { out, reading };
    });
    await run();
    await new Promise((r) => setTimeout(r, 300));
    for (const { iterated, drained } of tracers) (iterated.stop(), drained.stop());
    await Promise.all(results.map((r) => r.reading));
    return results.map((r) => r.out);
  } finally {
    for (const { iterated, drained } of tracers) (iterated.close(), drained.close());
  }
}

/** The 256 bytes of a raw record's argv field, and its argv_len. */
function argvField(raw: Uint8Array): { bytes: Uint8Array; len: number } {
  const len = new DataView(raw.buffer).getUint16(F.argv_len[1], true);
  return { bytes: raw.subarray(F.argv[1], F.argv[1] + 256), len };
}

kernelTest(
  "the library redacts argv in what for await yields and in the raw records drain hands over",
  async () => {
    const dir = scratch(["a", "b"]);
    try {
      const [got] = await traced(dir, [{ redact: DEFAULT_REDACT_PATTERNS }], async () => {
        await perlDeletes(`${dir}/a`, false);
        await perlDeletes(`${dir}/b`, true);
      });
      assert.deepEqual(got.events.map((e) => eventData(e).argv), [
        expectedArgv(`${dir}/a`, false),
        expectedArgv(`${dir}/b`, true),
      ]);
      for (const e of got.events) assert.ok(e.flags & UNLINK_F_ARGV_REDACTED);
      assert.equal(got.raws.length, 2);
      for (const raw of got.raws) {
        const { bytes, len } = argvField(raw);
        assertNoSecret("a raw record", new TextDecoder("latin1").decode(bytes));
        assert.ok(bytes.subarray(len).every((b) => b === 0), "zeros after argv_len");
        assert.ok(unlinkEvent.decode(raw).flags & UNLINK_F_ARGV_REDACTED);
      }
      assert.deepEqual(
        argvField(got.raws[1]).bytes.subarray(0, argvField(got.raws[1]).len),
        expectedBytes(`${dir}/b`),
      );
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
);

kernelTest(
  "a command line that redaction makes longer than 256 bytes is cut there and marked truncated",
  async () => {
    const dir = scratch(["a"]);
    try {
      const many = Array.from({ length: 45 }, () => "-pa"); // 220 bytes in all; 400 redacted
      const [got] = await traced(dir, [{ redact: DEFAULT_REDACT_PATTERNS }], async () => {
        await perlDeletes(`${dir}/a`, false, many);
      });
      const data = eventData(got.events[0]);
      assert.equal(data.argv_truncated, true);
      assert.equal(data.argv_redacted, true);
      const kept = encoder.encode(data.argv.join("\0")).length;
      assert.ok(kept <= 256, `${kept} bytes`);
      const tail = data.argv.slice(4);
      assert.ok(tail.slice(0, -1).every((a) => a === "-p*****"), tail.join(" "));
      assert.ok("-p*****".startsWith(tail.at(-1)!), "the last argument is cut, never leaked");
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
);

kernelTest(
  "argv none and argv0 keep the command line's bytes in the kernel: the raw records never hold them",
  async () => {
    const dir = scratch(["a"]);
    try {
      const [none, first, full] = await traced(
        dir,
        [{ argv: "none" }, { argv: "argv0" }, { argv: "full" }],
        async () => void await perlDeletes(`${dir}/a`, false),
      );
      assert.deepEqual(none.events.map((e) => eventData(e).argv), [[]]);
      assert.deepEqual(first.events.map((e) => eventData(e).argv), [["perl"]]);
      assert.deepEqual(argvField(none.raws[0]), { bytes: new Uint8Array(256), len: 0 });
      const argv0 = new Uint8Array(256);
      argv0.set(encoder.encode("perl\0"));
      assert.deepEqual(argvField(first.raws[0]), { bytes: argv0, len: 5 });
      for (const raw of [...none.raws, ...first.raws]) {
        assert.equal(unlinkEvent.decode(raw).flags & UNLINK_F_ARGV_REDACTED, 0);
      }
      // The same deletion with the whole command line: the bytes were there to keep.
      assert.ok(decoder.decode(argvField(full.raws[0]).bytes).includes("-pSECRET1"));

      Deno.writeTextFileSync(`${dir}/b`, "");
      const run = await traceWhile(
        ["--json", "--argv", "none", "-n", "perl", "--path", dir],
        async () => {
          await perlDeletes(`${dir}/b`, true);
        },
      );
      assert.equal(run.code, 0, run.stderr);
      const event = run.stdout.split("\n").find((l) => l.startsWith('{"type":"event"'))!;
      assert.deepEqual(JSON.parse(event).data.argv, []);
      assertNoSecret("trace.ts --argv none", run.stdout);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
);
