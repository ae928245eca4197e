#!/usr/bin/env node
// The `longlink` command: one binary, a subcommand per role or tool.
import { parseArgs } from './args.js';
import { runRole, runStart } from './start.js';
import { runCluster } from './cluster.js';
import { exitAfterFlush } from './exit.js';
import { runConversations, runGroup, runListen, runRead, runSend, UsageError } from './client-commands.js';
import { runChat } from './chat.js';
import { runDead } from './dead.js';
import { ConfigError } from '../config.js';
import { StartError } from '../roles/data-lock.js';
import { LonglinkError } from '../protocol/index.js';

const USAGE = `usage: longlink <command> [flags]

  start                         run the embedded server (all roles, SQLite)
      --http-port N --tcp-port N --data-dir DIR --host H   (or LONGLINK_* env)
  gateway                       a cluster gateway: TCP and WebSocket (/ws on the HTTP port)
      --redis-url URL --node-id ID --tcp-port N --http-port N --routing targeted|broadcast
      --public-host H           token secret from LONGLINK_TOKEN_SECRET
  logic                         a cluster logic node: the HTTP API, storage, routing
      --redis-url URL --postgres-url URL --node-id ID --http-port N --routing targeted|broadcast
                                admin key and token secret from LONGLINK_ADMIN_KEY / LONGLINK_TOKEN_SECRET
  cluster --gateways N --logic M --routing targeted|broadcast [--base-port 7000] [--appendfsync everysec|always|no]
                                a local cluster: Redis and PostgreSQL in a temp folder and the processes
  listen --user U [--device D] [--watch V,W]
                                print messages and events for U as JSON lines, acking each
  send --user U (--to V | --group G) --text T [--count N] [--rate R] [--device D]
                                send and print each ack; exit 0 only if all acked
  group create --user U --name NAME --members V,W     print the group as JSON
  group add|remove --user U --group G --members V,W
  group leave|dismiss|info --user U --group G
  group role --user U --group G --member V --role member|admin|owner
  group mute|unmute --user U --group G [--member V]   (no --member: the whole group)
  conversations --user U        one JSON line per conversation, with unread and last
  read --user U --conversation C [--seq N]            mark read up to the latest (or N)
  chat --user U [--device D]    interactive terminal chat: /list, /open, type to send (/help inside)
  dead list [--limit N]         requests set aside after failing repeatedly: one JSON line each, with its error
  dead replay [ID...]           put them back in their partition, each once (no ID: every one)
client commands: --server http(s)://HOST:PORT (default http://127.0.0.1:8080, or LONGLINK_SERVER),
  --transport tcp|ws, --gateway tcp://HOST:PORT|tls://HOST:PORT|ws://HOST:PORT/ws|wss://HOST:PORT/ws,
  --ca FILE (or LONGLINK_CA): trust this CA (PEM) for https, tls and wss instead of the system's roots,
  admin key from LONGLINK_ADMIN_KEY (for a local quick start: data/dev-secrets.json, or --data-dir DIR).
TLS (every server role): --tls-cert FILE --tls-key FILE (or LONGLINK_TLS_CERT / LONGLINK_TLS_KEY), PEM:
  https and wss on the HTTP port, tls:// on the TCP port.`;

async function main(argv: string[]): Promise<number | undefined> {
  const { command, flags, positionals } = parseArgs(argv, new Set(['help']));
  switch (command) {
    case 'start':
      await runStart(flags);
      return undefined;
    case 'gateway':
    case 'logic':
      await runRole(command, flags);
      return undefined;
    case 'cluster':
      await runCluster(flags);
      return undefined;
    case 'listen':
      await runListen(flags);
      return undefined;
    case 'send':
      return runSend(flags);
    case 'group':
      return runGroup(positionals[0], flags);
    case 'conversations':
      return runConversations(flags);
    case 'read':
      return runRead(flags);
    case 'chat':
      return runChat(flags);
    case 'dead':
      return runDead(positionals[0], flags, positionals.slice(1));
    case undefined:
    case 'help':
      console.log(USAGE);
      return 0;
    default:
      console.error(`unknown command ${command}\n\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== undefined) exitAfterFlush(code);
  },
  (err: unknown) => {
    if (err instanceof UsageError || err instanceof ConfigError) {
      console.error(`longlink: ${err.message}`);
      exitAfterFlush(2);
      return;
    }
    if (err instanceof StartError) {
      console.error(`longlink: ${err.message}`);
      exitAfterFlush(1);
      return;
    }
    if (err instanceof LonglinkError) {
      console.error(JSON.stringify({ type: 'error', code: err.codeName, message: err.message }));
      exitAfterFlush(1);
      return;
    }
    console.error(err);
    exitAfterFlush(1);
  },
);
