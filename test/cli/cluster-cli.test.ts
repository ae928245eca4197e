// `longlink cluster` as a user runs it: `npm run cluster | tee log`. The
// commands it prints run as printed, from the repository's folder; and Ctrl-C,
// which the terminal sends to the whole pipeline (tee dies with it, so the
// cluster's output then goes to a pipe nobody reads), still stops every
// process it started and removes its temp folder.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { BIN, Proc } from './cli-helpers.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url)).replace(/\/$/, '');
const T = { timeout: 60_000 };

/** A process's state letter, or undefined once it is gone (a zombie counts as gone: it runs nothing). */
function stateOf(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2)[0];
    return state === 'Z' ? undefined : state;
  } catch {
    return undefined;
  }
}

/** Every live process below `pid` (children, their children…), with its command line. */
function descendants(pid: number): Map<number, string> {
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(name)]);
    } catch {
      // gone meanwhile
    }
  }
  const found = new Map<number, string>();
  const walk = (p: number) => {
    for (const c of children.get(p) ?? []) {
      if (stateOf(c) === undefined) continue;
      let cmd = '?';
      try {
        cmd = readFileSync(`/proc/${c}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
      } catch {
        // gone meanwhile
      }
      found.set(c, cmd);
      walk(c);
    }
  };
  walk(pid);
  return found;
}

async function until(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const start = Date.now();
  while (!check()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A shell with none of the test's LONGLINK_* settings: the printed lines must bring what they need. */
function shell(script: string): Proc {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('LONGLINK_')));
  // Its own process group, so the whole `npx … → node` chain can be stopped at once.
  return new Proc(spawn('bash', ['-c', script], { cwd: ROOT, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] }));
}

describe('longlink cluster | tee', () => {
  const logDir = mkdtempSync(join(tmpdir(), 'longlink-cluster-cli-'));
  const log = join(logDir, 'cluster.log');
  const output = () => (existsSync(log) ? readFileSync(log, 'utf8') : '');
  let pipeline: ChildProcess;
  let pipelineExited: Promise<unknown>;
  const listeners: Proc[] = [];

  before(async () => {
    // The pipeline in a process group of its own, as a terminal runs it: SIGINT to the group is Ctrl-C.
    pipeline = spawn('sh', ['-c', `"${process.execPath}" "${BIN}" cluster --gateways 1 --logic 1 --base-port 0 2>&1 | tee "${log}" > /dev/null`], {
      cwd: ROOT, detached: true, stdio: 'ignore',
    });
    pipelineExited = new Promise((resolve) => pipeline.on('close', resolve));
    await until(() => output().includes('Ctrl-C stops the cluster.') || pipeline.exitCode !== null, 60_000, 'the cluster to start');
    assert.match(output(), /Ctrl-C stops the cluster\./, output());
  });

  after(() => {
    for (const p of [...listeners.map((l) => l.child), pipeline]) {
      try {
        process.kill(-p.pid!, 'SIGKILL'); // the cluster's own children die with it (their parent-death signal)
      } catch {
        // ended already
      }
    }
    rmSync(logDir, { recursive: true, force: true });
  });

  test('the commands it prints run as printed, from the folder it names', T, async () => {
    const printed = output();
    // The hints: an export, then commands to type in another terminal, in the folder named.
    const hintBlock = /^try it \(in another terminal, in (.+)\):\n((?: {2}.*\n)+)Ctrl-C stops/m.exec(printed);
    assert.ok(hintBlock, printed);
    assert.equal(hintBlock[1], ROOT, 'the hints run from the repository');
    const hints = hintBlock[2]!.split('\n').map((l) => l.trim()).filter(Boolean);
    const exported = hints.find((h) => h.startsWith('export LONGLINK_ADMIN_KEY='));
    const listenLine = hints.find((h) => / listen /.test(h));
    const sendLine = hints.find((h) => / send /.test(h));
    assert.ok(exported && listenLine && sendLine, hints.join('\n'));

    // As typed in one terminal: the export, then the command.
    const listen = shell(`${exported}\n${listenLine}`);
    listeners.push(listen);
    await listen.waitFor(() => listen.errLines.some((l) => l.includes('"type":"online"')) || listen.exitCode !== null, 30_000, 'the printed listen command online');
    assert.equal(listen.exitCode, null, `${listenLine}\n${listen.errLines.join('\n')}`);
    const send = shell(`${exported}\n${sendLine}`);
    assert.equal(await send.exited, 0, `${sendLine}\n${send.errLines.join('\n')}`);
    assert.equal(send.json('ack').length, 1, send.lines.join('\n'));
    await listen.waitFor(() => listen.json('message').length > 0, 15_000, 'the message at the listener');
    const [message] = listen.json<{ from: string; text: string }>('message');
    assert.deepEqual([message!.from, message!.text], ['alice', 'hi']);
    process.kill(-listen.child.pid!, 'SIGINT');
    await listen.exited;
  });

  test('Ctrl-C, which ends tee too: every process it started ends and its temp folder is removed', T, async () => {
    // Everything the cluster started: Redis, PostgreSQL (and its workers), the logic node, the gateway.
    const supervisor = [...descendants(pipeline.pid!)].find(([, cmd]) => cmd.includes(' cluster '));
    assert.ok(supervisor, 'the cluster process');
    const started = descendants(supervisor[0]);
    const commands = [...started.values()].join('\n');
    for (const what of [/redis-server/, /postgres/, /longlink\.js logic/, /longlink\.js gateway/]) assert.match(commands, what);
    // The temp folder, from PostgreSQL's data folder inside it.
    const folder = /-D (\S+)\/longlink-pg-/.exec(commands)?.[1];
    assert.ok(folder !== undefined && folder.includes('longlink-cluster-') && existsSync(folder), commands);

    // Ctrl-C: SIGINT to the pipeline's group (tee dies of it; the cluster must not before it stopped).
    process.kill(-pipeline.pid!, 'SIGINT');
    const left = () => [supervisor[0], ...started.keys()].filter((pid) => stateOf(pid) !== undefined);
    await until(() => left().length === 0, 20_000, `every process to end; still running:\n${left().map((p) => `${p} ${started.get(p) ?? 'cluster'}`).join('\n')}`);
    assert.equal(existsSync(folder), false, `${folder} removed`);
    await pipelineExited;
  });
});

test('what the cluster starts ends when the cluster process is killed outright (SIGKILL): the kernel signals it', async () => {
  // Redis, PostgreSQL and the nodes are started this way (src/dev/tied.ts); `sleep` stands for them.
  const tied = pathToFileURL(join(ROOT, 'dist/dev/tied.js')).href;
  const parent = new Proc(spawn(process.execPath, ['--input-type=module', '-e', `
    import { spawnTied } from ${JSON.stringify(tied)};
    const child = spawnTied('sleep', ['60'], { stdio: 'ignore' }, 'SIGTERM');
    console.log(child.pid);
    setInterval(() => undefined, 1000);
  `], { stdio: ['ignore', 'pipe', 'pipe'] }));
  await parent.waitFor(() => parent.lines.length > 0 || parent.exitCode !== null, 10_000, 'the child pid');
  const pid = Number(parent.lines[0]);
  assert.ok(pid > 0 && stateOf(pid) !== undefined, `the child runs: ${parent.lines.join('\n')}${parent.errLines.join('\n')}`);
  await parent.kill('SIGKILL');
  await until(() => stateOf(pid) === undefined, 5000, `the child ${pid} to end with its parent`);
});
