// Runs every test file under test/ with node's test runner, TypeScript through tsx.
// (Node 20's --test takes no globs, so the files are listed here.)
// The TAP stream goes to stdout as it comes; at the end the failures are printed
// again, whole, so that a reader of only the last lines (CI) sees which test
// failed and why, followed by a plain "N passed, N failed" line.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

function find(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...find(path));
    else if (name.endsWith('.test.ts')) out.push(path);
  }
  return out;
}

/**
 * The files that take over 40 s here (mostly waiting out outages and leases the tests are about), longest first.
 * They start first, so that the two workers end together instead of one of them starting a long file last.
 */
const LONGEST = [
  'test/cluster/datacenters.test.ts',
  'test/cluster/dead-letters.test.ts',
  'test/cluster/big-group.test.ts',
  'test/cluster/datacenters-acceptance.test.ts',
  'test/cluster/split.test.ts',
];

const only = process.argv.slice(2);
const all = find('test');
const files = only.length > 0 ? only : [...LONGEST.filter((f) => all.includes(f)), ...all.filter((f) => !LONGEST.includes(f))];
const child = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=2', ...files], {
  stdio: ['inherit', 'pipe', 'inherit'],
});

const failures = []; // each: the lines of one failing leaf test's TAP block
let current = null; // the block being collected, with the indent of its "not ok" line
let pass = null;
let fail = null;
const lines = createInterface({ input: child.stdout });
lines.on('line', (line) => {
  process.stdout.write(line + '\n');
  const notOk = /^(\s*)not ok \d+ - /.exec(line);
  if (notOk) {
    current = { indent: notOk[1].length, lines: [line] };
    return;
  }
  if (current) {
    current.lines.push(line);
    // The YAML block ends with "..." at the test's indent + 2.
    if (line.trim() === '...' && line.length - line.trimStart().length === current.indent + 2) {
      // A suite whose failure is only its subtests' says so; keep the leaves.
      const text = current.lines.join('\n');
      if (!/failureType: 'subtestsFailed'/.test(text)) failures.push(text);
      current = null;
    }
  }
  const count = /^# (pass|fail) (\d+)$/.exec(line);
  if (count) {
    if (count[1] === 'pass') pass = Number(count[2]);
    else fail = Number(count[2]);
  }
});

child.on('close', (code) => {
  if (failures.length > 0) {
    process.stdout.write(`\n# ${failures.length} failing test(s), again:\n`);
    for (const f of failures) process.stdout.write(f + '\n');
  }
  if (pass !== null && fail !== null) process.stdout.write(`${pass} passed, ${fail} failed\n`);
  process.exit(code ?? 1);
});
