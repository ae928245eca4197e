// CPU the whole machine has used (every tenant's), from /proc/stat: what a
// measurement's own processes did not use of it was someone else's.
import { readFileSync } from 'node:fs';

/** CPU seconds the machine has spent busy since boot, all cores together (user, nice, system, irq, softirq, steal; 100 ticks a second). */
export function cpuOfMachine(): number {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
    const [user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number);
    return ((user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0)) / 100;
  } catch {
    return NaN;
  }
}
