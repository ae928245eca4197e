// What the benchmark ran on: recorded in every result's conditions and in
// RESULTS.md, so figures from different machines are not compared blindly.

import { readFileSync } from 'node:fs';
import os from 'node:os';

/** The soft "Max open files" limit of this process, from /proc/self/limits (Linux only). */
function openFilesLimit(): number | string | undefined {
  let text: string;
  try {
    text = readFileSync('/proc/self/limits', 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    if (!line.startsWith('Max open files')) continue;
    const soft = line.slice('Max open files'.length).trim().split(/\s+/)[0];
    if (soft === undefined || soft === '') return undefined;
    const n = Number(soft);
    return Number.isFinite(n) ? n : soft; // "unlimited" stays a string
  }
  return undefined;
}

export function machineInfo(): Record<string, string | number> {
  const cpu = os.cpus()[0]?.model.replace(/\s+/g, ' ').trim() || 'unknown';
  const info: Record<string, string | number> = {
    cpu,
    cores: os.availableParallelism(),
    mem_gib: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
  };
  const nofile = openFilesLimit();
  if (nofile !== undefined) info.open_files = nofile;
  return info;
}
