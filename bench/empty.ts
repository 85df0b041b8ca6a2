// An empty script: bench/run.ts times `deno run` of it to show Deno's own start-up.
