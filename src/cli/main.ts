#!/usr/bin/env node
// The `longlink` command: one binary, a subcommand per role or tool. Each
// command declares its flags: an unknown one, a flag without its value or a
// number that is not one is refused with that command's usage (exit 2).
// A command's code is imported when it runs: a client command does not load
// the servers, and a mistyped flag is refused at once.
import { closest, parseArgs, UsageError, type FlagSpec, type ParsedArgs } from './args.js';
import { exitAfterFlush } from './exit.js';

interface Command {
  /** How to call it, one line per form, after `longlink `. */
  synopsis: string[];
  summary: string;
  /** The flags it knows (the server roles': all their settings, read from the configuration). */
  flags: FlagSpec | (() => Promise<FlagSpec>);
  /** Words it takes besides flags (group's action, dead's subcommand and ids). @default 0 */
  positionals?: number;
  /** Flags it shares with other commands, explained once. */
  notes?: string;
  /** The exit code, or undefined while it keeps running (a server, listen). */
  run(args: ParsedArgs): Promise<number | undefined>;
}

const CLIENT_FLAGS: FlagSpec = {
  user: 'text', device: 'text', server: 'text', transport: 'text', gateway: 'text', ca: 'text', 'admin-key': 'text', 'data-dir': 'text',
};

const CLIENT_NOTES = `client flags: --server http(s)://HOST:PORT (default http://127.0.0.1:8080, or LONGLINK_SERVER; several datacenters:
  their APIs comma-separated, this one's first: the client goes on through the next when its own is gone),
  --transport tcp|ws, --device ID, --gateway tcp://HOST:PORT|tls://HOST:PORT|ws://HOST:PORT/ws|wss://HOST:PORT/ws,
  --ca FILE (or LONGLINK_CA): trust this CA (PEM) for https, tls and wss instead of the system's roots,
  admin key from LONGLINK_ADMIN_KEY or --admin-key (for a local quick start: data/dev-secrets.json, or --data-dir DIR).`;

const SERVER_NOTES = `server flags: every setting of the configuration, as a flag or in the environment
  (--http-port 8081 or LONGLINK_HTTP_PORT=8081; flags win).
TLS (every server role): --tls-cert FILE --tls-key FILE (or LONGLINK_TLS_CERT / LONGLINK_TLS_KEY), PEM:
  https and wss on the HTTP port, tls:// on the TCP port.`;

const serverFlags = async () => (await import('./start.js')).SERVER_FLAGS;

const GROUP_CLIENT_FLAGS: FlagSpec = { ...CLIENT_FLAGS, name: 'text', members: 'text', group: 'text', member: 'text', role: 'text' };

/** A service of the logic tier as its own process (src/roles/logic.ts says what each runs). */
function serviceCommand(role: 'auth' | 'message' | 'storage' | 'risk' | 'push' | 'sync', summary: string): Command {
  return {
    synopsis: [`${role} --redis-url URL --postgres-url URL [--node-id ID] [--http-port N]`],
    summary,
    flags: serverFlags,
    notes: SERVER_NOTES,
    run: async ({ flags }) => {
      await (await import('./start.js')).runRole(role, flags);
      return undefined;
    },
  };
}

const COMMANDS: Readonly<Record<string, Command>> = {
  start: {
    synopsis: ['start [--http-port N] [--tcp-port N] [--data-dir DIR] [--host H]'],
    summary: 'run the embedded server (all roles, SQLite)',
    flags: serverFlags,
    notes: SERVER_NOTES,
    run: async ({ flags }) => {
      await (await import('./start.js')).runStart(flags);
      return undefined;
    },
  },
  gateway: {
    synopsis: ['gateway --redis-url URL [--node-id ID] [--tcp-port N] [--http-port N] [--routing targeted|broadcast] [--public-host H]'],
    summary: 'a cluster gateway: TCP and WebSocket (/ws on the HTTP port); token secret from LONGLINK_TOKEN_SECRET',
    flags: serverFlags,
    notes: SERVER_NOTES,
    run: async ({ flags }) => {
      await (await import('./start.js')).runRole('gateway', flags);
      return undefined;
    },
  },
  logic: {
    synopsis: ['logic --redis-url URL --postgres-url URL [--node-id ID] [--http-port N] [--routing targeted|broadcast]'],
    summary: 'a cluster logic node running every service below in one process; admin key and token secret from LONGLINK_ADMIN_KEY / LONGLINK_TOKEN_SECRET',
    flags: serverFlags,
    notes: SERVER_NOTES,
    run: async ({ flags }) => {
      await (await import('./start.js')).runRole('logic', flags);
      return undefined;
    },
  },
  auth: serviceCommand('auth', 'the auth service: the HTTP API (tokens, revocation, dev login, business push, discovery) and the session reaper'),
  message: serviceCommand('message', 'the message service: the send path (check, filter, dedupe, seq, store, ack), typing and presence, and the push group (fan-out)'),
  storage: serviceCommand('storage', 'the storage service: sync, history, conversation lists, read and delivered cursors, retention'),
  risk: serviceCommand('risk', 'the risk service: its consumer group on the committed stream'),
  push: serviceCommand('push', 'more fan-out: the push group of the committed stream alone (the message service runs it too)'),
  sync: serviceCommand('sync', "the sync-storage service (with LONGLINK_DC_PEERS): copies every other datacenter's commits into this one"),
  cluster: {
    synopsis: [
      'cluster [--gateways N] [--logic M] [--routing targeted|broadcast] [--base-port 7000] [--appendfsync everysec|always|no] [--redis-cluster]',
      'cluster --split [--auth N] [--message N] [--group N] [--storage N] [--risk N] [--push N] [--gateways N] …',
      'cluster --dcs 2 [--delay-ms 20] [--failover-after-ms 10000] [--status FILE] [--gateways N] [--logic M] [--base-port 7000]',
    ],
    summary: 'a local cluster: Redis and PostgreSQL in a temp folder and the processes (--base-port 0: any free ports); '
      + '--split: a process per service instead of combined logic nodes; --redis-cluster: on a Redis Cluster of 3 masters and 3 replicas '
      + 'instead of one Redis; --dcs N: N datacenters joined by delaying links, and a witness '
      + '(a datacenter unheard past --failover-after-ms is failed over by the others)',
    flags: {
      gateways: 'integer', logic: 'integer', routing: 'text', 'base-port': 'integer', appendfsync: 'text',
      split: 'switch', auth: 'integer', message: 'integer', group: 'integer', storage: 'integer', risk: 'integer', push: 'integer',
      dcs: 'integer', 'delay-ms': 'integer', 'failover-after-ms': 'integer', status: 'text', 'redis-cluster': 'switch',
    },
    run: async ({ flags }) => {
      await (await import('./cluster.js')).runCluster(flags);
      return undefined;
    },
  },
  listen: {
    synopsis: ['listen --user U [--device D] [--watch V,W]'],
    summary: 'print messages and events for U as JSON lines, acking each',
    flags: { ...CLIENT_FLAGS, watch: 'text' },
    notes: CLIENT_NOTES,
    run: async ({ flags }) => {
      await (await import('./client-commands.js')).runListen(flags);
      return undefined;
    },
  },
  send: {
    synopsis: [
      'send --user U (--to V | --group G) --text T [--count N] [--rate R] [--timeout SECONDS] [--device D]',
      '     [--payload-type TYPE --payload JSON] [--reply-to SEQ] [--mention V,W] [--mention-all]',
      '     [--forward-conversation C --forward-seq N] [--file PATH]   (--text optional with a payload type, a forward or a file)',
    ],
    summary: 'send and print each ack; exit 0 only if all acked',
    flags: {
      ...CLIENT_FLAGS, to: 'text', group: 'text', text: 'text', count: 'integer', rate: 'number', timeout: 'number',
      'payload-type': 'text', payload: 'text', 'reply-to': 'integer', mention: 'text', 'mention-all': 'switch',
      'forward-conversation': 'text', 'forward-seq': 'integer', file: 'text',
    },
    notes: CLIENT_NOTES,
    run: async ({ flags }) => (await import('./client-commands.js')).runSend(flags),
  },
  search: {
    synopsis: ['search --user U --query Q [--conversation C] [--limit N] [--cursor K]'],
    summary: 'search the messages U may read: every word must match (the last as a prefix), best first; one JSON line per hit, '
      + 'then {"type":"more","cursor":K} when another page follows',
    flags: { ...CLIENT_FLAGS, query: 'text', conversation: 'text', limit: 'integer', cursor: 'text' },
    notes: CLIENT_NOTES,
    run: async ({ flags }) => (await import('./client-commands.js')).runSearch(flags),
  },
  download: {
    synopsis: ['download --user U --file ID [--out PATH] [--preview]'],
    summary: 'download a file of a message U may read (refused FILE_NOT_FOUND otherwise); --preview: an image\'s small preview',
    flags: { ...CLIENT_FLAGS, file: 'text', out: 'text', preview: 'switch' },
    notes: CLIENT_NOTES,
    run: async ({ flags }) => (await import('./client-commands.js')).runDownload(flags),
  },
  notify: {
    synopsis: ['notify --user U --conversation C [--off]'],
    summary: 'mute a conversation\'s push notifications for U (--off: unmute); its messages still arrive',
    flags: { ...CLIENT_FLAGS, conversation: 'text', off: 'switch' },
    notes: CLIENT_NOTES,
    run: async ({ flags }) => (await import('./client-commands.js')).runNotify(flags),
  },
  edit: {
    synopsis: ['edit --user U --conversation C --seq N --text T [--payload-type TYPE --payload JSON] [--mention V,W]'],
    summary: 'edit one of your messages (every device sees the new version); prints {"type":"edited"}',
    flags: { ...CLIENT_FLAGS, conversation: 'text', seq: 'integer', text: 'text', 'payload-type': 'text', payload: 'text', mention: 'text' },
    notes: CLIENT_NOTES,
    run: async ({ flags }) => (await import('./client-commands.js')).runEdit(flags),
  },
  delete: {
    synopsis: ['delete --user U --conversation C --seq N [--for-me]'],
    summary: 'delete a message for everyone, leaving a tombstone (the sender within the recall window; a group\'s owner or admins any time); '
      + '--for-me: only your devices stop showing it',
    flags: { ...CLIENT_FLAGS, conversation: 'text', seq: 'integer', 'for-me': 'switch' },
    notes: CLIENT_NOTES,
    run: async ({ flags }) => (await import('./client-commands.js')).runDelete(flags),
  },
  react: {
    synopsis: ['react --user U --conversation C --seq N --emoji E [--off]'],
    summary: 'react to a message with an emoji (--off: take it back); members\' listen prints {"type":"reaction"} with the message\'s reactions',
    flags: { ...CLIENT_FLAGS, conversation: 'text', seq: 'integer', emoji: 'text', off: 'switch' },
    notes: CLIENT_NOTES,
    run: async ({ flags }) => (await import('./client-commands.js')).runReact(flags),
  },
  profile: {
    synopsis: ['profile --user U [--name N] [--avatar URL]   (set yours: both replace what was there)', 'profile --user U --of V,W   (read theirs)'],
    summary: 'set your display name and avatar, or read others\' profiles (one JSON line each)',
    flags: { ...CLIENT_FLAGS, name: 'text', avatar: 'text', of: 'text' },
    notes: CLIENT_NOTES,
    run: async ({ flags }) => (await import('./client-commands.js')).runProfile(flags),
  },
  block: {
    synopsis: ['block --user U --peer P', 'block --user U --peer P --off   (unblock)', 'block --user U   (list)'],
    summary: 'block a user (its 1:1 messages to you are refused BLOCKED, your presence looks offline to it), unblock it, or list whom you block',
    flags: { ...CLIENT_FLAGS, peer: 'text', off: 'switch' },
    notes: CLIENT_NOTES,
    run: async ({ flags }) => (await import('./client-commands.js')).runBlock(flags),
  },
  group: {
    synopsis: [
      'group create --user U --name NAME --members V,W',
      'group add|remove --user U --group G --members V,W',
      'group leave|dismiss|info --user U --group G',
      'group role --user U --group G --member V --role member|admin|owner',
      'group mute|unmute --user U --group G [--member V]   (no --member: the whole group)',
      'group --redis-url URL --postgres-url URL [--node-id ID] [--http-port N]   (no action: the group service)',
    ],
    summary: 'manage a group, printing the group after the change as JSON; with no action, run the group service (create … dismiss, info)',
    flags: async () => ({ ...await serverFlags(), ...GROUP_CLIENT_FLAGS }),
    positionals: 1,
    notes: `${CLIENT_NOTES}\n${SERVER_NOTES}`,
    run: async ({ flags, positionals }) => {
      if (positionals[0] !== undefined) return (await import('./client-commands.js')).runGroup(positionals[0], flags);
      const clientFlag = Object.keys(flags).find((f) => Object.hasOwn(GROUP_CLIENT_FLAGS, f) && f !== 'admin-key' && f !== 'data-dir');
      if (clientFlag) throw new UsageError(`--${clientFlag} needs an action (group create|add|remove|…); without one, longlink group runs the group service`);
      await (await import('./start.js')).runRole('group', flags);
      return undefined;
    },
  },
  conversations: {
    synopsis: ['conversations --user U'],
    summary: 'one JSON line per conversation, with unread and last',
    flags: CLIENT_FLAGS,
    notes: CLIENT_NOTES,
    run: async ({ flags }) => (await import('./client-commands.js')).runConversations(flags),
  },
  read: {
    synopsis: ['read --user U (--conversation C | --group G) [--seq N]'],
    summary: 'mark read up to the latest message (or N)',
    flags: { ...CLIENT_FLAGS, conversation: 'text', group: 'text', seq: 'integer' },
    notes: CLIENT_NOTES,
    run: async ({ flags }) => (await import('./client-commands.js')).runRead(flags),
  },
  chat: {
    synopsis: ['chat --user U [--device D]'],
    summary: 'interactive terminal chat: /list, /open, type to send (/help inside)',
    flags: CLIENT_FLAGS,
    notes: CLIENT_NOTES,
    run: async ({ flags }) => (await import('./chat.js')).runChat(flags),
  },
  dead: {
    synopsis: ['dead list [--limit N]', 'dead replay [ID...]'],
    summary: 'requests set aside after failing repeatedly: list them (one JSON line each, with its error), or put them back in their partition, each once (no ID: every one)',
    flags: { server: 'text', 'admin-key': 'text', ca: 'text', limit: 'integer' },
    positionals: Infinity,
    notes: 'flags: --server URL (a logic node\'s API), --admin-key KEY (or LONGLINK_ADMIN_KEY), --ca FILE',
    run: async ({ flags, positionals }) => (await import('./dead.js')).runDead(positionals[0], flags, positionals.slice(1)),
  },
  admin: {
    synopsis: ['admin shards', 'admin shards --grow N'],
    summary: 'the bus shards of a cluster: each shard\'s owner, lag and state per uplink service and committed-stream group (one JSON line each); '
      + '--grow N: grow the count to N (a multiple of it) on the live cluster, order kept per conversation',
    flags: { server: 'text', 'admin-key': 'text', ca: 'text', grow: 'integer' },
    positionals: 1,
    notes: 'flags: --server URL (a logic node\'s API), --admin-key KEY (or LONGLINK_ADMIN_KEY), --ca FILE',
    run: async ({ flags, positionals }) => (await import('./admin.js')).runAdmin(positionals[0], flags),
  },
  dc: {
    synopsis: ['dc status', 'dc failover DC [--to DC2]', 'dc failback DC'],
    summary: 'several datacenters: who serves each one\'s homes; fail a lost datacenter\'s homes over to this one (or --to another); '
      + 'hand them back once it is back (it catches up first)',
    flags: { server: 'text', 'admin-key': 'text', ca: 'text', to: 'text' },
    positionals: 2,
    notes: 'flags: --server URL (an API node of a datacenter that is up), --admin-key KEY (or LONGLINK_ADMIN_KEY), --ca FILE',
    run: async ({ flags, positionals }) => (await import('./dc.js')).runDc(positionals[0], positionals[1], flags),
  },
};

function describeCommand(c: Command): string {
  return `${c.synopsis.map((s) => `  ${s}`).join('\n')}\n      ${c.summary}`;
}

const USAGE = `usage: longlink <command> [flags]     (longlink <command> --help: its usage)

${Object.values(COMMANDS).map(describeCommand).join('\n')}

${CLIENT_NOTES}
${SERVER_NOTES}`;

function usageOf(c: Command): string {
  return `usage: ${c.synopsis.map((s) => `longlink ${s}`).join('\n       ')}\n  ${c.summary}${c.notes ? `\n\n${c.notes}` : ''}`;
}

function commandNamed(name: string): Command | undefined {
  return Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
}

async function main(argv: string[]): Promise<number | undefined> {
  const [name, ...rest] = argv;
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    const about = rest[0] === undefined ? undefined : commandNamed(rest[0]);
    console.log(about ? usageOf(about) : USAGE);
    return 0;
  }
  const command = commandNamed(name);
  if (!command) {
    const near = closest(name, Object.keys(COMMANDS));
    const what = name.startsWith('-') ? `the command comes first, before ${name}` : `unknown command ${name}${near ? ` (did you mean ${near}?)` : ''}`;
    console.error(`longlink: ${what}\n\n${USAGE}`);
    return 2;
  }
  try {
    const known = typeof command.flags === 'function' ? await command.flags() : command.flags;
    const args = parseArgs(rest, { ...known, help: 'switch' });
    if (args.flags.help) {
      console.log(usageOf(command));
      return 0;
    }
    const extra = args.positionals[command.positionals ?? 0];
    if (extra !== undefined) throw new UsageError(`unexpected argument "${extra}" (quote a value that has spaces)`);
    return await command.run(args);
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`longlink: ${err.message}\n\n${usageOf(command)}`);
      return 2;
    }
    throw err;
  }
}

/** Says what went wrong, and returns the exit code. */
async function report(err: unknown): Promise<number> {
  // Loaded already when one of them threw.
  const [{ ConfigError }, { StartError }, { LonglinkError }] = await Promise.all([
    import('../config.js'), import('../roles/data-lock.js'), import('../protocol/index.js'),
  ]);
  if (err instanceof ConfigError) {
    console.error(`longlink: ${err.message}`);
    return 2;
  }
  if (err instanceof StartError) {
    console.error(`longlink: ${err.message}`);
    return 1;
  }
  if (err instanceof LonglinkError) {
    console.error(JSON.stringify({ type: 'error', code: err.codeName, message: err.message }));
    return 1;
  }
  console.error(err);
  return 1;
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== undefined) exitAfterFlush(code);
  },
  async (err: unknown) => exitAfterFlush(await report(err)),
);
