// Structured logs: one JSON object per line on stderr (pino), with the node
// id and role on every line. stdout stays free for what a person reads (the
// start-up lines of `longlink start`); a log shipper reads stderr, where every
// line parses.
//
// Modules import the shared logger and take a child per component:
//   import { log } from '../observability/log.js';
//   const logger = log.child({ component: 'store' });
//   logger.warn({ err }, 'delivery cursor write failed');
// A role's start function calls configureLogging() once (node id, role,
// level). `log` and its children are facades that follow the latest
// configuration, so a child taken at import time logs with the node id and
// level set later. Several roles in one process (tests) share it: the last
// configuration wins.
//
// Never in a line: secrets (token, admin key, token secret, Authorization
// headers, passwords in URLs, anything that looks like a JWT) and message
// bodies (`text` fields), at any level. A message is followed through the
// system by the fields of messageTrace() at debug level.
import pino from 'pino';
import type { LogLevel } from '../config.js';

export interface LogSetup {
  level: LogLevel;
  /** This node's id, on every line as `node`. */
  node?: string;
  /** `embedded`, `gateway` or `logic`, on every line as `role`. */
  role?: string;
}

const CENSOR = '[redacted]';

/** Field paths whose values never reach a line (fast-redact syntax: `*` is one level of any key). */
const REDACT = [
  'token', '*.token', 'adminKey', '*.adminKey', 'admin_key', '*.admin_key', 'tokenSecret', '*.tokenSecret',
  'previousTokenSecrets', '*.previousTokenSecrets', 'password', '*.password', 'secret', '*.secret',
  'authorization', '*.authorization', 'headers.authorization', '*.headers.authorization', 'headers.cookie', '*.headers.cookie',
  'metricsKey', '*.metricsKey',
  // message bodies
  'text', '*.text', '*.*.text',
];

/** user:password@ in URLs, bearer tokens and JWTs inside free text (error messages, URLs). */
export function scrub(s: string): string {
  if (s.includes('@')) s = s.replace(/([a-z][a-z0-9+.-]*:\/\/[^/\s:@]*):[^@\s/]*@/gi, `$1:${CENSOR}@`);
  if (s.includes('eyJ')) s = s.replace(/eyJ[\w-]*\.[\w-]+\.[\w-]+/g, CENSOR);
  if (/bearer/i.test(s)) s = s.replace(/(bearer\s+)\S+/gi, `$1${CENSOR}`);
  return s;
}

/** pino's error serializer, with message and stack scrubbed. */
function serializeError(err: Error): pino.SerializedError {
  // A string or anything else logged under an error key is kept as a message.
  if (typeof err !== 'object' || err === null) return { type: typeof err, message: scrub(String(err)), stack: '', raw: new Error(String(err)) };
  const out = pino.stdSerializers.err(err);
  out.message = scrub(String(out.message ?? ''));
  if (out.stack) out.stack = scrub(out.stack);
  return out;
}

/** Scrubs the string arguments of a call, and the top-level string fields of its object. */
function scrubArgs(args: unknown[]): unknown[] {
  return args.map((a) => {
    if (typeof a === 'string') return scrub(a);
    if (a === null || typeof a !== 'object' || a instanceof Error || Array.isArray(a)) return a;
    let copy: Record<string, unknown> | undefined;
    for (const [k, v] of Object.entries(a)) {
      if (typeof v !== 'string') continue;
      const clean = scrub(v);
      if (clean !== v) (copy ??= { ...(a as Record<string, unknown>) })[k] = clean;
    }
    return copy ?? a;
  });
}

let destination: pino.DestinationStream | undefined;
let setup: LogSetup = { level: 'info' };
let root: pino.Logger = make();
/** Bumped by each (re)configuration; facades re-derive their pino child when it moved. */
let generation = 0;

function make(): pino.Logger {
  const base: Record<string, unknown> = { pid: process.pid };
  if (setup.node !== undefined) base.node = setup.node;
  if (setup.role !== undefined) base.role = setup.role;
  destination ??= pino.destination({ dest: 2, sync: true });
  return pino({
    level: setup.level,
    base,
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: REDACT, censor: CENSOR },
    serializers: { err: serializeError, error: serializeError },
    hooks: {
      logMethod(args, method) {
        method.apply(this, scrubArgs(args) as Parameters<typeof method>);
      },
    },
  }, destination);
}

/** Set the node id, role and level of every line from now on (a role's start function calls it once). */
export function configureLogging(next: LogSetup): void {
  setup = { ...next };
  root = make();
  generation++;
}

/** Write lines to `stream` instead of stderr (tests); undefined goes back to stderr. */
export function logTo(stream: pino.DestinationStream | undefined): void {
  destination = stream;
  root = make();
  generation++;
}

type LogMethod = {
  (obj: object, msg?: string): void;
  (msg: string): void;
};

/** A logger that follows the current configuration; `child()` adds fields (e.g. `component`). */
export class Log {
  private cached: pino.Logger | undefined;
  private cachedGeneration = -1;

  constructor(
    private readonly bindings?: pino.Bindings,
    private readonly parent?: Log,
  ) {}

  /** The pino logger behind this facade now. */
  get pino(): pino.Logger {
    if (this.cachedGeneration !== generation) {
      this.cached = this.parent ? this.parent.pino.child(this.bindings ?? {}) : root;
      this.cachedGeneration = generation;
    }
    return this.cached!;
  }

  child(bindings: pino.Bindings): Log {
    return new Log(bindings, this);
  }

  /** For work only worth doing when its line is written (a trace per message). */
  isLevelEnabled(level: LogLevel): boolean {
    return this.pino.isLevelEnabled(level);
  }

  readonly fatal: LogMethod = (a: object | string, msg?: string) => write(this.pino, 'fatal', a, msg);
  readonly error: LogMethod = (a: object | string, msg?: string) => write(this.pino, 'error', a, msg);
  readonly warn: LogMethod = (a: object | string, msg?: string) => write(this.pino, 'warn', a, msg);
  readonly info: LogMethod = (a: object | string, msg?: string) => write(this.pino, 'info', a, msg);
  readonly debug: LogMethod = (a: object | string, msg?: string) => write(this.pino, 'debug', a, msg);
  readonly trace: LogMethod = (a: object | string, msg?: string) => write(this.pino, 'trace', a, msg);
}

function write(logger: pino.Logger, level: Exclude<LogLevel, 'silent'>, a: object | string, msg?: string): void {
  if (typeof a === 'string') logger[level](a);
  else if (msg === undefined) logger[level](a);
  else logger[level](a, msg);
}

/** The process's logger. */
export const log = new Log();

/** What a message is, as seen at some step of its path. */
export interface MessageRef {
  /** The sender's user id. */
  fromUser?: string;
  /** The client's id of the message (the idempotency key): the trace id from the first step on. */
  clientMsgId?: string;
  serverMsgId?: string;
  conversationId?: string;
  seq?: number;
}

/**
 * The fields that let a message be followed through the system at debug
 * level: `trace` (the client's message id, with `from` its sender: unique
 * together), then `msg_id` (the server's id), `conv` and `seq` once known.
 * Grep `"trace":"<client msg id>"` across nodes: gateway → logic → store →
 * gateway. Absent parts are left out.
 */
export function messageTrace(m: MessageRef): Record<string, string | number> {
  const out: Record<string, string | number> = {};
  if (m.clientMsgId) out.trace = m.clientMsgId;
  if (m.fromUser) out.from = m.fromUser;
  if (m.serverMsgId) out.msg_id = m.serverMsgId;
  if (m.conversationId) out.conv = m.conversationId;
  if (m.seq !== undefined) out.seq = m.seq;
  return out;
}
