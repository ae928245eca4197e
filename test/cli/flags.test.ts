// Every command of the real binary refuses what it does not understand:
// an unknown flag (naming the flag it probably meant), a flag without its
// value, a number that is not one, a stray argument. Exit 2, the reason and
// that command's usage on stderr, and nothing done: no message sent, no
// server or cluster started.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, Proc } from './cli-helpers.js';
import { ADMIN_KEY } from '../helpers/server.js';

// A command that wrongly ran anyway must not touch anything outside: its
// data folder is here, its ports are free ones, and it is killed after a while.
const cwd = mkdtempSync(join(tmpdir(), 'longlink-flags-'));
after(() => rmSync(cwd, { recursive: true, force: true }));
/** Refusing takes a node start-up; running instead (a server, a cluster) is cut short here. */
const DEADLINE_MS = 15_000;

/** Nothing listens on port 9 (discard): a client command that did not refuse its flags would fail to connect (exit 1), not reach some server. */
const NOWHERE = ['--server', 'http://127.0.0.1:9'];

function longlink(args: string[]): Proc {
  const p = new Proc(spawn(process.execPath, [BIN, ...args], {
    cwd,
    env: { ...process.env, LONGLINK_ADMIN_KEY: ADMIN_KEY, LONGLINK_HTTP_PORT: '0', LONGLINK_TCP_PORT: '0', LONGLINK_DATA_DIR: join(cwd, 'data') },
    stdio: ['ignore', 'pipe', 'pipe'],
  }));
  // SIGINT first: a server or cluster stops what it started.
  const timer = setTimeout(() => void p.kill('SIGINT'), DEADLINE_MS);
  const kill = setTimeout(() => void p.kill('SIGKILL'), DEADLINE_MS + 15_000);
  void p.exited.then(() => [timer, kill].forEach(clearTimeout));
  return p;
}

interface Refusal {
  args: string[];
  /** What stderr says. */
  says: RegExp;
  /** The usage it prints: that command's. */
  usage: RegExp;
}

const REFUSED: Refusal[] = [
  { args: ['send', '--user', 'alice', '--to', 'bob', '--text', 'hi', '--cout', '5', ...NOWHERE], says: /unknown flag --cout \(did you mean --count\?\)/, usage: /usage: longlink send / },
  { args: ['send', '--user', 'alice', '--to', 'bob', '--text=hi', '--cout=5', ...NOWHERE], says: /unknown flag --cout \(did you mean --count\?\)/, usage: /usage: longlink send / },
  { args: ['send', '--user', 'alice', '--to', 'bob', '-c', '5', '--text', 'hi', ...NOWHERE], says: /unknown flag -c\b/, usage: /usage: longlink send / },
  { args: ['listen', '--user', 'bob', '--wacth', 'carol', ...NOWHERE], says: /unknown flag --wacth \(did you mean --watch\?\)/, usage: /usage: longlink listen / },
  { args: ['group', 'create', '--user', 'alice', '--nmae', 'Team', ...NOWHERE], says: /unknown flag --nmae \(did you mean --name\?\)/, usage: /usage: longlink group create / },
  { args: ['conversations', '--usr', 'bob', ...NOWHERE], says: /unknown flag --usr \(did you mean --user\?\)/, usage: /usage: longlink conversations / },
  { args: ['read', '--user', 'bob', '--conv', 'u:alice:bob', ...NOWHERE], says: /unknown flag --conv \(did you mean --conversation\?\)/, usage: /usage: longlink read / },
  { args: ['chat', '--user', 'alice', '--sever', 'http://127.0.0.1:9'], says: /unknown flag --sever \(did you mean --server\?\)/, usage: /usage: longlink chat / },
  { args: ['dead', 'list', '--limt', '5', ...NOWHERE], says: /unknown flag --limt \(did you mean --limit\?\)/, usage: /usage: longlink dead list/ },
  { args: ['start', '--htp-port', '0', '--tcp-port', '0'], says: /unknown flag --htp-port \(did you mean --http-port\?\)/, usage: /usage: longlink start / },
  { args: ['gateway', '--redis-ulr', 'redis://127.0.0.1:9'], says: /unknown flag --redis-ulr \(did you mean --redis-url\?\)/, usage: /usage: longlink gateway / },
  { args: ['logic', '--node-di', 'logic-1'], says: /unknown flag --node-di \(did you mean --node-id\?\)/, usage: /usage: longlink logic / },
  { args: ['cluster', '--gatways', '1', '--base-port', '0'], says: /unknown flag --gatways \(did you mean --gateways\?\)/, usage: /usage: longlink cluster / },
  { args: ['send', '--user', 'alice', '--to', 'bob', '--xyzzy', '1', '--text', 'hi', ...NOWHERE], says: /unknown flag --xyzzy\n/, usage: /usage: longlink send / },
  // A flag without its value: at the end, or followed by another flag.
  { args: ['send', '--user', 'alice', '--to', 'bob', ...NOWHERE, '--text'], says: /--text needs a value/, usage: /usage: longlink send / },
  { args: ['send', '--user', '--to', 'bob', '--text', 'hi', ...NOWHERE], says: /--user needs a value/, usage: /usage: longlink send / },
  // Numbers that are not.
  { args: ['send', '--user', 'alice', '--to', 'bob', '--text', 'hi', '--count', 'five', ...NOWHERE], says: /--count must be a whole number, got "five"/, usage: /usage: longlink send / },
  { args: ['send', '--user', 'alice', '--to', 'bob', '--text', 'hi', '--rate', 'fast', ...NOWHERE], says: /--rate must be a number, got "fast"/, usage: /usage: longlink send / },
  { args: ['read', '--user', 'bob', '--conversation', 'u:alice:bob', '--seq', '1.5', ...NOWHERE], says: /--seq must be a whole number, got "1\.5"/, usage: /usage: longlink read / },
  { args: ['dead', 'list', '--limit', 'all', ...NOWHERE], says: /--limit must be a whole number, got "all"/, usage: /usage: longlink dead list/ },
  { args: ['cluster', '--logic', 'two', '--base-port', '0'], says: /--logic must be a whole number, got "two"/, usage: /usage: longlink cluster / },
  // A word the command does not take (an unquoted text with a space).
  { args: ['send', '--user', 'alice', '--to', 'bob', '--text', 'hello', 'world', ...NOWHERE], says: /unexpected argument "world"/, usage: /usage: longlink send / },
];

async function outcome(p: Proc): Promise<{ code: number | null; out: string; err: string }> {
  const code = await p.exited;
  return { code, out: p.lines.join('\n'), err: p.errLines.join('\n') };
}

test('every command refuses an unknown flag, a missing value, a non-number and a stray argument: exit 2 with the reason and its usage', { timeout: 240_000 }, async () => {
  // Two at a time (two cores): each is a node start-up, nothing more.
  const results: { case: Refusal; code: number | null; out: string; err: string }[] = [];
  for (let i = 0; i < REFUSED.length; i += 2) {
    const batch = REFUSED.slice(i, i + 2);
    results.push(...await Promise.all(batch.map(async (c) => ({ case: c, ...await outcome(longlink(c.args)) }))));
  }
  for (const r of results) {
    const what = `longlink ${r.case.args.join(' ')}\nstdout:\n${r.out}\nstderr:\n${r.err}`;
    assert.equal(r.code, 2, what);
    assert.match(r.err, new RegExp(`^longlink: ${r.case.says.source}`), what);
    assert.match(r.err, r.case.usage, what);
    assert.equal(r.out, '', `nothing done, nothing printed on stdout: ${what}`);
  }
});

test('a numeric server setting that is not a number is refused (exit 2), naming the flag and its variable', async () => {
  const p = longlink(['start', '--http-port', 'eighty', '--tcp-port', '0']);
  const r = await outcome(p);
  assert.equal(r.code, 2, r.err);
  assert.match(r.err, /--http-port \/ LONGLINK_HTTP_PORT must be an integer in 0\.\.65535, got "eighty"/);
  assert.doesNotMatch(r.out, /listening/);
});

test('an unknown command names the closest one; --help and help COMMAND print that command\'s usage and exit 0', async () => {
  const [typo, help, helpCommand, overview] = await Promise.all([
    outcome(longlink(['sned', '--user', 'alice'])),
    outcome(longlink(['send', '--help'])),
    outcome(longlink(['help', 'cluster'])),
    outcome(longlink(['--help'])),
  ]);
  assert.equal(typo.code, 2);
  assert.match(typo.err, /^longlink: unknown command sned \(did you mean send\?\)/);
  assert.equal(help.code, 0, help.err);
  assert.match(help.out, /^usage: longlink send --user U \(--to V \| --group G\) --text T/);
  assert.match(help.out, /--server http\(s\):\/\/HOST:PORT/, 'the client flags it shares');
  assert.equal(helpCommand.code, 0, helpCommand.err);
  assert.match(helpCommand.out, /^usage: longlink cluster .*--base-port/);
  assert.equal(overview.code, 0, overview.err);
  for (const command of ['start', 'gateway', 'logic', 'cluster', 'listen', 'send', 'group', 'conversations', 'read', 'chat', 'dead']) {
    assert.match(overview.out, new RegExp(`^  ${command} `, 'm'), `${command} in the overview`);
  }
});
