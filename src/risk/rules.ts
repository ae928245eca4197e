// The risk-control rules document: one JSON object (snake_case) an admin puts
// at PUT /api/v1/risk/rules — word lists, regexes, a link rule, the
// business's webhooks and the spam thresholds. parseRules validates it
// strictly (an unknown key, an empty list, a regex that does not compile or
// may backtrack catastrophically are all refused, with a RulesError saying
// exactly what and where, e.g. `regex_rules[2].pattern: invalid regular
// expression: ...`) and returns a normalised copy with the defaults filled in.
// parseRules of its own output gives the same document back, so the copy is
// what is stored, and every node parses it again when it loads it.
//
// The content rules are compiled and applied by matcher.ts (ContentRules).
import { domainToASCII } from 'node:url';
import safeRegex from 'safe-regex2';
import { runsInLinearTime } from './regex-engine.js';
import { normalize } from './matcher.js';

/** The whole document, serialised as JSON, in bytes at most. */
export const MAX_RULES_BYTES = 2 * 1024 * 1024;
/** Words per list (block_words, mask_words) at most. */
export const MAX_WORDS = 100_000;
/** A word's length at most, in code points. */
export const MAX_WORD_LENGTH = 100;
/** regex_rules entries at most. */
export const MAX_REGEX_RULES = 200;
/** A regex rule's pattern's length at most, in UTF-16 units. */
export const MAX_PATTERN_LENGTH = 500;
/** Repetitions (`*`, `+`, `{n,m}`...) in one pattern at most (safe-regex2's limit) when the linear-time engine cannot run it. */
export const MAX_PATTERN_REPETITIONS = 25;
/** links.allow_domains entries at most. */
export const MAX_ALLOW_DOMAINS = 10_000;
/** A webhook URL's length at most. */
export const MAX_URL_LENGTH = 2048;
/** before_send_webhook.timeout_ms at most; 1 at least. */
export const MAX_WEBHOOK_TIMEOUT_MS = 10_000;
/** before_send_webhook.timeout_ms when not given. */
export const DEFAULT_WEBHOOK_TIMEOUT_MS = 500;
/** A spam rule's window_ms at most (24 h). */
export const MAX_SPAM_WINDOW_MS = 86_400_000;
/** spam.links_from_new_users.account_age_ms at most (365 days). */
export const MAX_ACCOUNT_AGE_MS = 365 * 86_400_000;

/** The ids the built-in rules report (Verdict, CONTENT_BLOCKED); a regex rule may not take one. */
export const BUILTIN_RULE_IDS = ['block_words', 'mask_words', 'links', 'before_send_webhook'] as const;
/** The after-* events a webhook can be sent; all of them when `events` is left out. */
export const WEBHOOK_EVENTS = ['after-send', 'after-group-change', 'after-recall', 'after-edit', 'after-delete'] as const;
/** What can be done to a user when a spam rule trips. */
export const SPAM_ACTIONS = ['flag', 'recall', 'mute', 'revoke'] as const;

/** A regex rule's id: letters, digits, `_` and `-`, 1 to 64 of them. */
const RULE_ID = /^[a-z0-9_-]{1,64}$/i;
/** The regex flags a rule may use. `g` and `y` are refused: a rule looks at the whole text, once. */
const REGEX_FLAGS = 'imsu';
/** One hostname label in ASCII (IDNA) form; `_` is tolerated, as some real hosts have it. */
const HOST_LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;
/** A hostname's length at most. */
const MAX_HOSTNAME_LENGTH = 253;

export type ContentAction = 'block' | 'mask';
export type WebhookEvent = (typeof WEBHOOK_EVENTS)[number];
export type SpamAction = (typeof SPAM_ACTIONS)[number];

/** A regular expression checked against the original text of every message. */
export interface RegexRule {
  /** Named in verdicts and in CONTENT_BLOCKED; unique, /^[a-z0-9_-]{1,64}$/i, not a built-in id. */
  id: string;
  /** JavaScript RegExp syntax, at most MAX_PATTERN_LENGTH long. */
  pattern: string;
  /** Any of `i`, `m`, `s`, `u`. @default '' */
  flags?: string;
  /** `block` refuses the message; `mask` replaces each match with `*`s. */
  action: ContentAction;
}

/** The link rule (id `links`). */
export interface LinkRule {
  /** `any`: links are fine; `allowlist`: only links to allow_domains (and their subdomains); `none`: no links at all. */
  mode: 'any' | 'allowlist' | 'none';
  /** Lower-cased ASCII (IDNA) hostnames; required, and only allowed, with mode `allowlist`. */
  allow_domains?: string[];
  /** What a link that trips the rule does: `block` the message or `mask` the link. @default 'block' */
  action?: ContentAction;
}

/** The business's before-send webhook: called on the send path, it allows, denies or replaces each message. */
export interface BeforeSendWebhook {
  /** An http: or https: URL. */
  url: string;
  /** 1 to MAX_WEBHOOK_TIMEOUT_MS. @default 500 */
  timeout_ms?: number;
  /** What a timeout or a bad answer means. @default 'allow' */
  on_failure?: 'allow' | 'deny';
}

/** The business's after-the-fact webhook. */
export interface EventWebhook {
  /** An http: or https: URL. */
  url: string;
  /** @default all of WEBHOOK_EVENTS */
  events?: WebhookEvent[];
}

/** A count of events by one user within a sliding window. */
export interface SpamWindow {
  count: number;
  window_ms: number;
}

/** Thresholds on a user's behaviour, and what is done when one trips. */
export interface SpamRules {
  /** One user sending the same text into `conversations` distinct conversations within window_ms. */
  same_text?: { conversations: number; window_ms: number };
  /** One user opening `count` new 1:1 conversations within window_ms. */
  new_conversations?: SpamWindow;
  /** `count` messages with links within window_ms from a user first seen less than account_age_ms ago. */
  links_from_new_users?: { account_age_ms: number; count: number; window_ms: number };
  /** What is done when a rule trips; not empty. */
  actions: SpamAction[];
}

/** The rules document, as put by an admin at /api/v1/risk/rules. Every part is optional. */
export interface RulesDocument {
  /** A message containing one (after normalisation, see matcher.ts) is refused: rule id `block_words`. */
  block_words?: string[];
  /** Each occurrence is replaced by one `*` per character: rule id `mask_words`. */
  mask_words?: string[];
  regex_rules?: RegexRule[];
  links?: LinkRule;
  before_send_webhook?: BeforeSendWebhook;
  webhooks?: EventWebhook;
  spam?: SpamRules;
}

/** A document refused by parseRules; the message names the place (`regex_rules[2].pattern: ...`). */
export class RulesError extends Error {
  override name = 'RulesError';
}

const TOP_KEYS = ['block_words', 'mask_words', 'regex_rules', 'links', 'before_send_webhook', 'webhooks', 'spam'] as const;

/**
 * Validates a rules document strictly and returns a normalised copy: the
 * defaults filled in (regex flags '', links.action 'block', timeout_ms 500,
 * on_failure 'allow', webhooks.events all three), allow_domains lower-cased
 * in ASCII (IDNA) form. Parts left out stay out. Nothing of `json` is kept by
 * reference. Throws RulesError naming what is wrong, and where.
 */
export function parseRules(json: unknown): RulesDocument {
  const doc = objectOf(json, '', TOP_KEYS);
  let serialised: string | undefined;
  try {
    serialised = JSON.stringify(json);
  } catch (err) {
    fail('', `not JSON: ${(err as Error).message}`);
  }
  const bytes = Buffer.byteLength(serialised ?? '');
  if (bytes > MAX_RULES_BYTES) fail('', `${bytes} bytes as JSON; at most ${MAX_RULES_BYTES} (2 MiB)`);

  const out: RulesDocument = {};
  if (doc.block_words !== undefined) out.block_words = wordsOf(doc.block_words, 'block_words');
  if (doc.mask_words !== undefined) out.mask_words = wordsOf(doc.mask_words, 'mask_words');
  if (doc.regex_rules !== undefined) out.regex_rules = regexRulesOf(doc.regex_rules, 'regex_rules');
  if (doc.links !== undefined) out.links = linksOf(doc.links, 'links');
  if (doc.before_send_webhook !== undefined) out.before_send_webhook = beforeSendOf(doc.before_send_webhook, 'before_send_webhook');
  if (doc.webhooks !== undefined) out.webhooks = webhooksOf(doc.webhooks, 'webhooks');
  if (doc.spam !== undefined) out.spam = spamOf(doc.spam, 'spam');
  return out;
}

// ---------------------------------------------------------------- the parts

function wordsOf(value: unknown, path: string): string[] {
  const list = listOf(value, path, MAX_WORDS);
  return list.map((word, i) => {
    const at = `${path}[${i}]`;
    const text = stringOf(word, at);
    if (text === '') fail(at, 'an empty word');
    const length = codePoints(text);
    if (length > MAX_WORD_LENGTH) fail(at, `${length} characters; at most ${MAX_WORD_LENGTH}`);
    if (normalize(text).text.trim() === '') {
      fail(at, `${quote(text)} is only spaces, invisible characters or marks: nothing is left of it to match once normalised`);
    }
    return text;
  });
}

function regexRulesOf(value: unknown, path: string): RegexRule[] {
  const list = listOf(value, path, MAX_REGEX_RULES);
  const seen = new Map<string, number>();
  return list.map((item, i) => {
    const at = `${path}[${i}]`;
    const rule = objectOf(item, at, ['id', 'pattern', 'flags', 'action']);

    const id = stringOf(required(rule.id, `${at}.id`), `${at}.id`);
    if (!RULE_ID.test(id)) fail(`${at}.id`, `${quote(id)} is not an id: 1 to 64 letters, digits, '_' or '-'`);
    const key = id.toLowerCase();
    if ((BUILTIN_RULE_IDS as readonly string[]).includes(key)) {
      fail(`${at}.id`, `${quote(id)} is the id of a built-in rule (${BUILTIN_RULE_IDS.join(', ')}); choose another`);
    }
    const earlier = seen.get(key);
    if (earlier !== undefined) fail(`${at}.id`, `${quote(id)} is already the id of ${path}[${earlier}]; ids must be unique`);
    seen.set(key, i);

    const flags = rule.flags === undefined ? '' : stringOf(rule.flags, `${at}.flags`);
    for (const [j, flag] of [...flags].entries()) {
      if (flag === 'g' || flag === 'y') fail(`${at}.flags`, `'${flag}' is not allowed: a rule is applied to the whole text; use any of '${REGEX_FLAGS}'`);
      if (!REGEX_FLAGS.includes(flag)) fail(`${at}.flags`, `${quote(flag)} is not a flag a rule may use; use any of '${REGEX_FLAGS}'`);
      if (flags.indexOf(flag) !== j) fail(`${at}.flags`, `'${flag}' is given twice`);
    }

    const pattern = stringOf(required(rule.pattern, `${at}.pattern`), `${at}.pattern`);
    if (pattern === '') fail(`${at}.pattern`, 'an empty pattern');
    if (pattern.length > MAX_PATTERN_LENGTH) fail(`${at}.pattern`, `${pattern.length} characters; at most ${MAX_PATTERN_LENGTH}`);
    const compiled = compile(pattern, flags, `${at}.pattern`);
    // Bounded when V8's linear-time engine can run it (regex-engine.ts); else (case-insensitive or Unicode patterns,
    // backreferences, lookaround: Node 20's engine runs none of them) at least no repetition inside a repetition.
    if (!runsInLinearTime(pattern, flags) && !safeRegex(pattern, { limit: MAX_PATTERN_REPETITIONS })) {
      fail(
        `${at}.pattern`,
        'may take catastrophic (exponential) time on some texts: a repetition inside a repetition such as (a+)+, '
          + `more than ${MAX_PATTERN_REPETITIONS} repetitions, or syntax the safety check cannot analyse (such as lookbehind); rewrite it`,
      );
    }
    if (compiled.test('')) fail(`${at}.pattern`, 'matches the empty text, so it would trip on every message');

    const action = oneOf(required(rule.action, `${at}.action`), `${at}.action`, ['block', 'mask'] as const);
    return { id, pattern, flags, action };
  });
}

function linksOf(value: unknown, path: string): LinkRule {
  const links = objectOf(value, path, ['mode', 'allow_domains', 'action']);
  const mode = oneOf(required(links.mode, `${path}.mode`), `${path}.mode`, ['any', 'allowlist', 'none'] as const);
  const action = links.action === undefined ? 'block' : oneOf(links.action, `${path}.action`, ['block', 'mask'] as const);
  if (mode !== 'allowlist') {
    if (links.allow_domains !== undefined) fail(`${path}.allow_domains`, `only used with mode 'allowlist', and mode is '${mode}'; leave it out`);
    return { mode, action };
  }
  const domains = listOf(required(links.allow_domains, `${path}.allow_domains`, "mode 'allowlist' needs the domains it allows"), `${path}.allow_domains`, MAX_ALLOW_DOMAINS);
  const allow_domains = domains.map((item, i) => hostnameOf(item, `${path}.allow_domains[${i}]`));
  return { mode, allow_domains, action };
}

function beforeSendOf(value: unknown, path: string): BeforeSendWebhook {
  const hook = objectOf(value, path, ['url', 'timeout_ms', 'on_failure']);
  const url = urlOf(required(hook.url, `${path}.url`), `${path}.url`);
  const timeout_ms = hook.timeout_ms === undefined ? DEFAULT_WEBHOOK_TIMEOUT_MS : integerOf(hook.timeout_ms, `${path}.timeout_ms`, 1, MAX_WEBHOOK_TIMEOUT_MS, 'milliseconds');
  const on_failure = hook.on_failure === undefined ? 'allow' : oneOf(hook.on_failure, `${path}.on_failure`, ['allow', 'deny'] as const);
  return { url, timeout_ms, on_failure };
}

function webhooksOf(value: unknown, path: string): EventWebhook {
  const hook = objectOf(value, path, ['url', 'events']);
  const url = urlOf(required(hook.url, `${path}.url`), `${path}.url`);
  const events = hook.events === undefined ? [...WEBHOOK_EVENTS] : enumListOf(hook.events, `${path}.events`, WEBHOOK_EVENTS);
  return { url, events };
}

function spamOf(value: unknown, path: string): SpamRules {
  const spam = objectOf(value, path, ['same_text', 'new_conversations', 'links_from_new_users', 'actions']);
  const out: Omit<SpamRules, 'actions'> = {};
  if (spam.same_text !== undefined) {
    const at = `${path}.same_text`;
    const rule = objectOf(spam.same_text, at, ['conversations', 'window_ms']);
    out.same_text = {
      conversations: positiveOf(required(rule.conversations, `${at}.conversations`), `${at}.conversations`),
      window_ms: windowOf(required(rule.window_ms, `${at}.window_ms`), `${at}.window_ms`),
    };
  }
  if (spam.new_conversations !== undefined) {
    const at = `${path}.new_conversations`;
    const rule = objectOf(spam.new_conversations, at, ['count', 'window_ms']);
    out.new_conversations = {
      count: positiveOf(required(rule.count, `${at}.count`), `${at}.count`),
      window_ms: windowOf(required(rule.window_ms, `${at}.window_ms`), `${at}.window_ms`),
    };
  }
  if (spam.links_from_new_users !== undefined) {
    const at = `${path}.links_from_new_users`;
    const rule = objectOf(spam.links_from_new_users, at, ['account_age_ms', 'count', 'window_ms']);
    out.links_from_new_users = {
      account_age_ms: integerOf(required(rule.account_age_ms, `${at}.account_age_ms`), `${at}.account_age_ms`, 1, MAX_ACCOUNT_AGE_MS, 'milliseconds'),
      count: positiveOf(required(rule.count, `${at}.count`), `${at}.count`),
      window_ms: windowOf(required(rule.window_ms, `${at}.window_ms`), `${at}.window_ms`),
    };
  }
  const actions = enumListOf(required(spam.actions, `${path}.actions`, 'say what is done when a spam rule trips'), `${path}.actions`, SPAM_ACTIONS);
  if (Object.keys(out).length === 0) fail(path, 'no rule: give at least one of same_text, new_conversations, links_from_new_users');
  return { ...out, actions };
}

// ---------------------------------------------------------------- checks

function fail(path: string, message: string): never {
  throw new RulesError(path === '' ? `the rules document: ${message}` : `${path}: ${message}`);
}

/** `value` as an object with only `keys` (JSON's null and arrays are not objects). */
function objectOf<K extends string>(value: unknown, path: string, keys: readonly K[]): Partial<Record<K, unknown>> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(path, `must be a JSON object, not ${kind(value)}`);
  const record = value as Record<string, unknown>;
  for (const key of Object.keys(record)) {
    if (!(keys as readonly string[]).includes(key)) {
      fail(path === '' ? key : `${path}.${key}`, `unknown key; the keys here are ${keys.join(', ')}`);
    }
    if (record[key] === null) fail(path === '' ? key : `${path}.${key}`, 'null; leave the key out instead');
  }
  return record as Partial<Record<K, unknown>>;
}

function required(value: unknown, path: string, why?: string): unknown {
  if (value === undefined) fail(path, why === undefined ? 'required' : `required: ${why}`);
  return value;
}

/** A non-empty array of at most `max` items. */
function listOf(value: unknown, path: string, max: number): unknown[] {
  if (!Array.isArray(value)) fail(path, `must be a list, not ${kind(value)}`);
  if (value.length === 0) fail(path, 'an empty list; leave it out instead');
  if (value.length > max) fail(path, `${value.length} items; at most ${max}`);
  return value;
}

/** A non-empty list of distinct members of `allowed`. */
function enumListOf<T extends string>(value: unknown, path: string, allowed: readonly T[]): T[] {
  const list = listOf(value, path, allowed.length);
  const out: T[] = [];
  list.forEach((item, i) => {
    const member = oneOf(item, `${path}[${i}]`, allowed);
    if (out.includes(member)) fail(`${path}[${i}]`, `'${member}' is listed twice`);
    out.push(member);
  });
  return out;
}

function stringOf(value: unknown, path: string): string {
  if (typeof value !== 'string') fail(path, `must be a string, not ${kind(value)}`);
  return value;
}

function oneOf<T extends string>(value: unknown, path: string, allowed: readonly T[]): T {
  const text = stringOf(value, path);
  if (!(allowed as readonly string[]).includes(text)) fail(path, `${quote(text)} is not one of ${allowed.map((a) => `'${a}'`).join(', ')}`);
  return text as T;
}

function integerOf(value: unknown, path: string, min: number, max: number, unit = ''): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    fail(path, `must be an integer from ${min} to ${max}${unit === '' ? '' : ` (${unit})`}, not ${typeof value === 'number' ? value : kind(value)}`);
  }
  return value;
}

function positiveOf(value: unknown, path: string): number {
  return integerOf(value, path, 1, Number.MAX_SAFE_INTEGER);
}

function windowOf(value: unknown, path: string): number {
  return integerOf(value, path, 1, MAX_SPAM_WINDOW_MS, 'milliseconds, 24 h at most');
}

/** An http: or https: URL, as given. */
function urlOf(value: unknown, path: string): string {
  const text = stringOf(value, path);
  if (text.length > MAX_URL_LENGTH) fail(path, `${text.length} characters; at most ${MAX_URL_LENGTH}`);
  const url = URL.canParse(text) ? new URL(text) : fail(path, `${quote(text)} is not a URL`);
  if (url.protocol !== 'http:' && url.protocol !== 'https:') fail(path, `${quote(text)} is not an http: or https: URL`);
  if (text.trim() !== text) fail(path, `${quote(text)} has spaces around it`);
  return text;
}

/** A hostname, lower-cased in ASCII (IDNA) form: `Bücher.Example.` → `xn--bcher-kva.example`. */
function hostnameOf(value: unknown, path: string): string {
  const text = stringOf(value, path);
  const hint = `${quote(text)} is not a hostname; give one such as example.com (its subdomains are allowed with it)`;
  const bare = text.toLowerCase().replace(/\.$/, '');
  if (bare === '' || /[\s/:@*?#[\]]/.test(bare)) fail(path, hint);
  const ascii = domainToASCII(bare);
  if (ascii === '' || ascii.length > MAX_HOSTNAME_LENGTH || !ascii.split('.').every((label) => HOST_LABEL.test(label))) fail(path, hint);
  return ascii;
}

function compile(pattern: string, flags: string, path: string): RegExp {
  try {
    return new RegExp(pattern, flags);
  } catch (err) {
    fail(path, `invalid regular expression: ${(err as Error).message}`);
  }
}

function kind(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  switch (typeof value) {
    case 'string': return 'a string';
    case 'number': return 'a number';
    case 'boolean': return 'a boolean';
    case 'object': return 'an object';
    default: return typeof value;
  }
}

/** A value for a message: JSON-quoted (invisible characters show as escapes), cut at 60 characters. */
function quote(text: string): string {
  const cut = text.length > 60 ? `${text.slice(0, 60)}…` : text;
  return JSON.stringify(cut).replace(/[\u00ad\u200b-\u200f\u2060-\u2064\ufeff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function codePoints(text: string): number {
  return text.length <= MAX_WORD_LENGTH ? text.length : [...text].length;
}
