// Flag parsing shared by the subcommands: --name value / --name=value / --switch.
// Each command declares the flags it knows: anything else is refused, so a typo
// (`--cout 5`) is an error rather than a default silently used instead.

/** How a flag takes its value: any text, a whole number, any number, or none (a switch). */
export type FlagKind = 'text' | 'integer' | 'number' | 'switch';

export type FlagSpec = Readonly<Record<string, FlagKind>>;

export interface ParsedArgs {
  /** By name without the dashes; a switch given is 'true'. */
  flags: Record<string, string | undefined>;
  positionals: string[];
}

/** The command was called wrongly: main prints the message and the command's usage, and exits 2. */
export class UsageError extends Error {}

export function parseArgs(argv: readonly string[], known: FlagSpec): ParsedArgs {
  const flags: Record<string, string | undefined> = {};
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '-h') {
      flags.help = 'true';
      continue;
    }
    if (!arg.startsWith('-') || arg === '-') {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const given = eq >= 0 ? arg.slice(0, eq) : arg;
    const name = given.replace(/^--?/, '');
    // Only long flags: `-c` is refused too, with the long one it may have meant.
    const kind = given.startsWith('--') && Object.hasOwn(known, name) ? known[name]! : undefined;
    if (kind === undefined) {
      const near = closest(name, Object.keys(known));
      throw new UsageError(`unknown flag ${given}${near ? ` (did you mean --${near}?)` : ''}`);
    }
    let value: string;
    if (eq >= 0) value = arg.slice(eq + 1);
    else if (kind === 'switch') value = 'true';
    else {
      const next = argv[i + 1];
      if (next === undefined) throw new UsageError(`--${name} needs a value`);
      if (next.startsWith('--')) throw new UsageError(`--${name} needs a value (one that starts with -- goes as --${name}=VALUE)`);
      value = next;
      i++;
    }
    if (kind === 'integer' && !/^-?\d+$/.test(value.trim())) throw new UsageError(`--${name} must be a whole number, got "${value}"`);
    if (kind === 'number' && (value.trim() === '' || !Number.isFinite(Number(value)))) throw new UsageError(`--${name} must be a number, got "${value}"`);
    flags[name] = value;
  }
  return { flags, positionals };
}

/**
 * The known name a mistyped one most likely meant: one it starts (`--conv`),
 * or one a typo or two away (`--cout`, `--srever`), when just one is that close.
 */
export function closest(name: string, known: readonly string[]): string | undefined {
  if (name.length >= 3) {
    const prefixed = known.filter((k) => k.startsWith(name));
    if (prefixed.length === 1) return prefixed[0];
  }
  const allowed = name.length <= 4 ? 1 : 2;
  let best: string | undefined;
  let bestDistance = Infinity;
  let tie = false;
  for (const k of known) {
    const d = editDistance(name, k);
    if (d < bestDistance) [best, bestDistance, tie] = [k, d, false];
    else if (d === bestDistance) tie = true;
  }
  return bestDistance <= allowed && !tie ? best : undefined;
}

/** Edits (insert, delete, replace, swap two neighbours) that turn a into b. */
function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i]![j] = Math.min(d[i]![j]!, d[i - 2]![j - 2]! + 1);
    }
  }
  return d[a.length]![b.length]!;
}
