/**
 * A real file whose name holds C1 controls and bidi overrides, deleted by a
 * real process and traced by scripts/trace.ts: text shows each of them as
 * the `\xNN` of its UTF-8 bytes, JSON as a `\uXXXX` escape, and neither ever
 * carries them raw.
 */

import assert from "node:assert/strict";
import { kernelTest, scratch, spawnUnlinker } from "./_helpers.ts";
import { traceWhile } from "./_trace.ts";

/** CSI "2J" (clear the screen), NEL, a right-to-left override, an isolate, a mark. */
const NAME = "a\u009b2Jb\u0085c\u202edcba\u2066e\u200ff";
const SHOWN = "a\\xc2\\x9b2Jb\\xc2\\x85c\\xe2\\x80\\xaedcba\\xe2\\x81\\xa6e\\xe2\\x80\\x8ff";
const RAW = /[\u0080-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/;

for (const json of [false, true]) {
  kernelTest(
    `trace.ts ${json ? "--json" : "text"} escapes C1 controls and bidi overrides in a real name`,
    async () => {
      const dir = scratch([NAME]);
      try {
        const child = await spawnUnlinker([`unlink:${dir}/${NAME}`]);
        const run = await traceWhile(
          [...(json ? ["--json"] : []), "-p", String(child.pid), "--path", dir],
          () => child.go().then(() => {}),
        );
        assert.equal(run.code, 0, run.stderr);
        assert.ok(!RAW.test(run.stdout), "no raw C1 or bidi character on stdout");
        const lines = run.stdout.trimEnd().split("\n");
        if (json) {
          const event = lines.find((l) => l.startsWith('{"type":"event"'))!;
          assert.ok(
            event.includes(
              `"filename":"${dir}/a\\u009b2Jb\\u0085c\\u202edcba\\u2066e\\u200ff"`,
            ),
            event,
          );
          assert.equal(JSON.parse(event).data.path, `${dir}/${NAME}`);
          return;
        }
        assert.equal(lines.length, 2, run.stdout);
        assert.match(lines[0], /^TIME\s+PID COMM\s+RET\s+LAT\(us\) FILENAME$/);
        const pid = String(child.pid).padStart(7);
        assert.match(
          lines[1],
          new RegExp(`^\\d\\d:\\d\\d:\\d\\d\\.\\d{3} ${pid} dbpf_unlinker    0 {12}[ \\d.]{9} `),
        );
        assert.equal(lines[1].slice(lines[0].indexOf("FILENAME")), `${dir}/${SHOWN}`);
      } finally {
        Deno.removeSync(dir, { recursive: true });
      }
    },
  );
}
