// Child processes that die with their parent. A supervisor (`longlink
// cluster`, a test) that is killed, crashes or exits without stopping its
// children would leave Redis, PostgreSQL and node processes running, holding
// ports and temp folders. On Linux, util-linux's setpriv sets a child's
// parent-death signal, which the kernel sends when the parent dies, however.
import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';

let setprivWorks: boolean | undefined;

function canTie(): boolean {
  setprivWorks ??= spawnSync('setpriv', ['--pdeathsig', 'TERM', '--', 'true'], { stdio: 'ignore' }).status === 0;
  return setprivWorks;
}

/**
 * spawn(), tied to this process: the child gets `signal` when this process
 * dies. A tied child runs in a process group of its own, so the terminal's
 * Ctrl-C reaches only its parent, which stops its children in order (a logic
 * node finishes its work while Redis and PostgreSQL are still up). Without
 * setpriv, a plain spawn in this process's group: Ctrl-C then reaches them all.
 */
export function spawnTied(command: string, args: readonly string[], options: SpawnOptions, signal: NodeJS.Signals): ChildProcess {
  if (!canTie()) return spawn(command, args, options);
  return spawn('setpriv', ['--pdeathsig', signal.replace(/^SIG/, ''), '--', command, ...args], { ...options, detached: true });
}
