// Flag parsing shared by the subcommands: --name value / --name=value / --flag.
export interface ParsedArgs {
  command: string | undefined;
  flags: Record<string, string | undefined>;
  positionals: string[];
}

export function parseArgs(argv: readonly string[], booleans: ReadonlySet<string> = new Set()): ParsedArgs {
  const flags: Record<string, string | undefined> = {};
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      const name = eq >= 0 ? arg.slice(2, eq) : arg.slice(2);
      if (eq >= 0) flags[name] = arg.slice(eq + 1);
      else if (booleans.has(name)) flags[name] = 'true';
      else {
        const value = argv[i + 1];
        if (value === undefined || value.startsWith('--')) throw new Error(`--${name} needs a value`);
        flags[name] = value;
        i++;
      }
    } else positionals.push(arg);
  }
  return { command: positionals.shift(), flags, positionals };
}
