// Regex rules run on every message a user sends, so no text should make one
// backtrack without bound. V8 has a linear-time engine beside its
// backtracking one; with these flags (set once per process, by the first
// regex rule compiled or checked: boundRegexes), a
// regex that backtracks more than BACKTRACKS_BEFORE_FALLBACK times in one
// match is run again on the linear-time engine, when that engine can run the
// pattern: Node 20's cannot run case-insensitive (i) or Unicode (u) patterns,
// backreferences, lookaround or large counted repetitions. For those, rules.ts
// refuses a repetition inside a repetition (safe-regex2), the catastrophic
// case, and a polynomial one remains possible: keep such patterns simple.
// Ordinary patterns keep the backtracking engine's speed; a pathological one
// the linear engine takes over costs time linear in the text (about 10 µs per
// character per rule at worst, measured on this machine).
import v8 from 'node:v8';

/** Backtracks in one match before V8 runs it on the linear-time engine. */
export const BACKTRACKS_BEFORE_FALLBACK = 2000;

let enabled = false;

/** Turn the fallback on in this process (once): called where regex rules are compiled, so other processes (gateways) keep V8's defaults. */
export function boundRegexes(): void {
  if (enabled) return;
  enabled = true;
  v8.setFlagsFromString('--enable-experimental-regexp-engine');
  v8.setFlagsFromString('--enable-experimental-regexp-engine-on-excessive-backtracks');
  v8.setFlagsFromString(`--regexp-backtracks-before-fallback=${BACKTRACKS_BEFORE_FALLBACK}`);
}

/** Whether the linear-time engine can run this pattern (the `l` flag compiles it), so its matches are bounded. */
export function runsInLinearTime(pattern: string, flags: string): boolean {
  boundRegexes();
  try {
    new RegExp(pattern, `${flags}l`);
    return true;
  } catch {
    return false;
  }
}
