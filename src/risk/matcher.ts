// The content rules of a rules document (rules.ts), compiled once and applied
// to every message text on the send path: the word lists, the regex rules and
// the link rule. A text is blocked (the first blocking rule's id), masked (the
// matches replaced by `*`, one per original character) or allowed as it is;
// block wins over mask, and the masks of several rules combine.
//
// Words. Each list is one Aho-Corasick automaton (words.ts), so a check
// costs the length of the text, not the number of words. Words match
// as SUBSTRINGS of the normalised text, not as whole words: Chinese and
// Japanese have no spaces between words, so "bad" also matches in "badge"
// (choose words accordingly). Both the text and the words are normalised
// (normalize below) so that look-alikes are caught: full-width letters,
// capitals, accents, zero-width characters inside a word, Cyrillic and Greek
// letters that look Latin, and leetspeak (`b@d`, `b4d`) all match `bad`.
// Masking maps each match back to the original text and replaces the
// original characters it covers, invisible ones included.
//
// Regexes run on the original text. Links are found by linksIn (http(s)://,
// www., and bare domain.tld forms) and judged by their hostname.
import { WordAutomaton } from './words.js';
import vm from 'node:vm';
import { boundRegexes, runsInLinearTime } from './regex-engine.js';
import { domainToASCII } from 'node:url';
import type { ContentAction, RulesDocument } from './rules.js';

/** What check() decided. */
export type Verdict =
  /** No rule tripped: `text` is the text checked, unchanged. */
  | { action: 'allow'; text: string }
  /** The masked text, and the ids of the rules that masked part of it (in rule order). */
  | { action: 'mask'; text: string; rules: string[] }
  /** Refused by the first blocking rule: `block_words`, a regex rule's id, or `links`. */
  | { action: 'block'; rule: string };

// ---------------------------------------------------------------- normalisation

/** Code points whose folded form is remembered (the cache stops growing past it; every later one is folded each time). */
const FOLD_CACHE_MAX = 65_536;

/**
 * Letters that look like Latin ones, and leetspeak, mapped to the Latin
 * letter (applied after NFKC and lower-casing, so capitals and full-width
 * forms are covered too).
 */
const LOOKALIKES: ReadonlyMap<string, string> = new Map([
  // Cyrillic
  ['а', 'a'], ['е', 'e'], ['о', 'o'], ['р', 'p'], ['с', 'c'], ['х', 'x'], ['у', 'y'], ['і', 'i'], ['ѕ', 's'],
  ['к', 'k'], ['м', 'm'], ['т', 't'], ['н', 'h'], ['в', 'b'],
  // Greek
  ['ο', 'o'], ['α', 'a'], ['ε', 'e'], ['ρ', 'p'], ['ν', 'v'], ['ι', 'i'], ['κ', 'k'],
  // leetspeak
  ['0', 'o'], ['1', 'i'], ['3', 'e'], ['4', 'a'], ['5', 's'], ['7', 't'], ['@', 'a'], ['$', 's'],
]);

/**
 * Dropped from the normalised text: combining marks (after NFD, so "é" →
 * "e"), every format character (zero-width space, joiners, U+2060, U+FEFF,
 * soft hyphen, bidi controls...), skin-tone modifiers (ba🏻d) and the Hangul fillers, which render blank.
 * The kana voicing marks (U+3099, U+309A) are kept: が and か are different
 * letters, not a decorated one.
 */
const DROPPED = /(?![\u3099\u309a])[\p{M}\p{Cf}\p{Emoji_Modifier}\u115f\u1160\u3164\uffa0]/gu;

/** ASCII, folded: lower case and leetspeak. */
const ASCII_FOLDED: readonly string[] = Array.from({ length: 128 }, (_, code) => {
  const c = String.fromCharCode(code).toLowerCase();
  return LOOKALIKES.get(c) ?? c;
});

/** A character outside ASCII. */
const NON_ASCII = /[^\p{ASCII}]/u;
/** The ASCII characters that fold to another than their lower case (leetspeak: 0 1 3 4 5 7 @ $). */
const ASCII_LOOKALIKE = new RegExp(`[${ASCII_FOLDED
  .map((folded, code) => (folded !== String.fromCharCode(code).toLowerCase() ? `\\x${code.toString(16).padStart(2, '0')}` : ''))
  .join('')}]`, 'g');

const foldCache = new Map<number, string>();

/** One code point, normalised: possibly several characters (ﬁ → fi), possibly none (a zero-width space). */
function fold(cp: number): string {
  if (cp < 0x80) return ASCII_FOLDED[cp] ?? '';
  let out = foldCache.get(cp);
  if (out !== undefined) return out;
  const plain = String.fromCodePoint(cp).normalize('NFKC').toLowerCase().normalize('NFD').replace(DROPPED, '').normalize('NFC');
  out = '';
  for (const c of plain) out += LOOKALIKES.get(c) ?? c;
  if (foldCache.size < FOLD_CACHE_MAX) foldCache.set(cp, out);
  return out;
}

/**
 * A text as the word lists see it, each code point on its own: NFKC
 * (full-width → ASCII), lower case, combining marks stripped (NFD, then
 * \p{M} dropped, kana voicing marks excepted), zero-width and other format
 * characters dropped, and look-alikes mapped to ASCII (Cyrillic
 * а е о р с х у і ѕ к м т н в, Greek ο α ε ρ ν ι κ, leetspeak 0 1 3 4 5 7 @ $).
 *
 * `map[i]` is, for each UTF-16 index i of the normalised text, the UTF-16
 * index in `text` of the code point it came from (several normalised units
 * may share one: ﬁ → fi, or an astral character's two units).
 */
export function normalize(text: string): { text: string; map: number[] } {
  if (!NON_ASCII.test(text)) {
    // The common case, at native speed: every ASCII character folds to one, so the map is the identity (made only if asked for).
    const out = text.toLowerCase().replace(ASCII_LOOKALIKE, (c) => ASCII_FOLDED[c.charCodeAt(0)]!);
    return { text: out, get map() { return Array.from({ length: out.length }, (_, i) => i); } };
  }
  const map: number[] = [];
  let out = '';
  for (let i = 0; i < text.length;) {
    const cp = text.codePointAt(i) ?? 0;
    const folded = fold(cp);
    for (let k = 0; k < folded.length; k++) map.push(i);
    out += folded;
    i += cp > 0xffff ? 2 : 1;
  }
  return { text: out, map };
}

// ---------------------------------------------------------------- links

/** Ideographs, kana and hangul: they run straight on from a link in CJK text, with no space between. */
const CJK = String.raw`\p{sc=Han}\p{sc=Hiragana}\p{sc=Katakana}\p{sc=Hangul}`;
/** A letter, digit or mark of a hostname as people type one (not CJK, see above). */
const HOST_CHAR = String.raw`[^\s\p{P}\p{S}\p{C}\p{Z}${CJK}]`;
/** A hostname label: HOST_CHARs and '-'. */
const LABEL = String.raw`(?:${HOST_CHAR}|-)+`;
/**
 * Where a link starts: a scheme, or a dotted name (www.example.com,
 * example.com; 例え.jp is missed) not inside a word, a path or an address.
 * Right after CJK text is fine (访问example.com). The lookbehind also keeps
 * the scan linear: a name is only tried from the start of a run.
 */
const LINK_START = new RegExp(String.raw`(?<!${HOST_CHAR}|[_.@/\\-])(?:(https?):\/\/|(${LABEL}(?:\.${LABEL})+))`, 'giu');
/** Ends the host or path of a link: spaces, quotes and brackets, CJK punctuation and full-width forms. */
const LINK_STOP = /[\s<>"'`\u3000-\u303f\uff00-\uffef]/u;
/** A CJK letter (see CJK). */
const CJK_LETTER = new RegExp(`[${CJK}]`, 'u');
/** Left off the end of a link: the sentence's punctuation after it. */
const TRAILING = /[.,;:!?'")\]}]+$/;
/**
 * Top-level domains of three letters or more that make a bare name.tld a
 * link (so that "index.html" or "node.json" are not). Two-letter ones all do
 * (country codes) but FILE_EXTENSIONS. With a scheme, www. or a path
 * (example.anything/), any name is a link.
 */
const COMMON_TLDS = new Set([
  'com', 'net', 'org', 'info', 'biz', 'edu', 'gov', 'mil', 'int', 'name', 'pro', 'mobi', 'asia', 'tel', 'xyz', 'top', 'online',
  'site', 'website', 'space', 'app', 'dev', 'page', 'blog', 'cloud', 'tech', 'store', 'shop', 'club', 'vip', 'live', 'life', 'link',
  'click', 'win', 'bid', 'loan', 'work', 'buzz', 'icu', 'cyou', 'lol', 'fun', 'monster', 'rest', 'quest', 'sbs', 'cfd', 'bond',
  'best', 'world', 'today', 'email', 'news', 'one', 'ltd', 'group', 'cam', 'bet', 'casino', 'games', 'xxx', 'porn', 'sex', 'chat',
]);
/** Two-letter endings that are far more often a file's than a country's. */
const FILE_EXTENSIONS = new Set(['js', 'ts', 'md', 'py', 'sh', 'rs', 'cs', 'rb', 'go', 'kt', 'hs', 'mk', 'so', 'db', 'gz', 'xz']);

interface LinkSpan {
  /** UTF-16 range of the whole link (host and path) in the text. */
  start: number;
  end: number;
  /** Lower-cased, trailing dots removed, as written (not IDNA). */
  host: string;
}

/** The links in a text, left to right. */
function linkSpans(text: string): LinkSpan[] {
  const out: LinkSpan[] = [];
  const re = new RegExp(LINK_START);
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    const found = m[1] !== undefined ? schemeLink(text, m.index, m.index + m[0].length) : bareLink(text, m.index, m[2] ?? '');
    if (found) {
      out.push(found);
      re.lastIndex = Math.max(found.end, m.index + 1);
    } else {
      re.lastIndex = m.index + m[0].length;
    }
  }
  return out;
}

/** `http(s)://authority/path...`: the host is the authority's, with no user and port. */
function schemeLink(text: string, start: number, afterScheme: number): LinkSpan | undefined {
  // A CJK host (http://例え.jp) runs on over CJK letters; an ASCII one stops at the first.
  const cjkHost = CJK_LETTER.test(String.fromCodePoint(text.codePointAt(afterScheme) ?? 0));
  let i = afterScheme;
  while (i < text.length) {
    const c = String.fromCodePoint(text.codePointAt(i) ?? 0);
    if (LINK_STOP.test(c) || '/?#\\'.includes(c) || (!cjkHost && CJK_LETTER.test(c))) break;
    i += c.length;
  }
  const authority = text.slice(afterScheme, i);
  let host = authority.slice(authority.lastIndexOf('@') + 1);
  host = host.startsWith('[') ? host.slice(0, host.indexOf(']') + 1) : host.replace(/:.*$/, '');
  host = host.replace(TRAILING, '').replace(/\.+$/, '').toLowerCase();
  if (host === '') return undefined;
  return { start, end: pathEnd(text, i, cjkHost), host };
}

/** `www.example.com`, `example.com`, `example.org/path`: a dotted name that looks like a domain. */
function bareLink(text: string, start: number, name: string): LinkSpan | undefined {
  const end = start + name.length;
  const next = text[end] ?? '';
  const withPath = (next !== '' && '/?#'.includes(next)) || /^:\d/.test(text.slice(end, end + 2));
  const host = name.toLowerCase();
  const tld = host.slice(host.lastIndexOf('.') + 1);
  let link: boolean;
  if (/^\d{1,3}(?:\.\d{1,3}){3}$/.test(host)) link = withPath; // an IPv4 address
  else if (!/^\p{L}{2,63}$/u.test(tld)) link = false; // 1.5, v2.0.1, e.g
  else if (withPath || host.startsWith('www.')) link = true;
  else if (/^[a-z]{2}$/.test(tld)) link = !FILE_EXTENSIONS.has(tld);
  else link = COMMON_TLDS.has(tld) || /[^a-z]/.test(tld); // a non-ASCII TLD (рф, 中国 is CJK and not reached)
  if (!link) return undefined;
  let i = end;
  if (text[i] === ':') for (i++; i < text.length && /\d/.test(text[i] ?? ''); i++);
  return { start, end: pathEnd(text, i), host };
}

/** Where the path, query and fragment starting at `i` end (none: i); CJK letters end it unless the host is CJK. */
function pathEnd(text: string, i: number, cjk = false): number {
  const from = i;
  while (i < text.length) {
    const c = String.fromCodePoint(text.codePointAt(i) ?? 0);
    if (LINK_STOP.test(c) || (!cjk && CJK_LETTER.test(c))) break;
    i += c.length;
  }
  return from + text.slice(from, i).replace(TRAILING, '').length;
}

/**
 * The hostnames of the links in a text, left to right, lower-cased (trailing
 * dots removed; IDN hosts as written, not in punycode): http(s)://host...
 * (user and port left out), www.host..., and bare name.tld forms such as
 * example.com or example.org/path. A bare name counts when it has a path or
 * port, starts with www., or ends in a two-letter (country) TLD that is not
 * a usual file extension (.js, .md...) or in a common gTLD (.com, .net,
 * .xyz...; COMMON_TLDS), so "index.html" is not a link. E-mail addresses are
 * not links. Look-alike tricks ("example . com", "example(dot)com") are not
 * recognised.
 */
export function linksIn(text: string): string[] {
  return linkSpans(text).map((link) => link.host);
}

// ---------------------------------------------------------------- the rules

interface CompiledRegex {
  id: string;
  action: ContentAction;
  /** For block: one test, no state. */
  once: RegExp;
  /** For mask: every match (matchAll copies it, so it keeps no state either). */
  all: RegExp;
  /** V8's linear-time engine cannot take it over (regex-engine.ts): it runs within a time budget (RegexGuard). */
  guarded: boolean;
}

/** What a regex rule found in a text: a block rule's verdict, a mask rule's matches, or no answer within its budget. */
type RegexOutcome = { hit: boolean; spans: [number, number][] } | { timedOut: true };

function runRegex(regex: CompiledRegex, text: string): RegexOutcome {
  if (regex.action === 'block') return { hit: regex.once.test(text), spans: [] };
  const spans: [number, number][] = [];
  for (const m of text.matchAll(regex.all)) if (m[0].length > 0) spans.push([m.index ?? 0, (m.index ?? 0) + m[0].length]);
  return { hit: spans.length > 0, spans };
}

interface CompiledLinks {
  action: ContentAction;
  /** ASCII (IDNA) domains allowed with their subdomains; empty: none (mode 'none'). */
  allow: ReadonlySet<string>;
}

/** The automaton of a word list, the words normalised (duplicates and words with nothing left dropped); undefined for none. */
function automaton(words: readonly string[] | undefined): WordAutomaton | undefined {
  const normalised = new Set<string>();
  for (const word of words ?? []) {
    const text = normalize(word).text;
    if (text !== '') normalised.add(text);
  }
  return normalised.size === 0 ? undefined : new WordAutomaton(normalised);
}

/** A host in the form allow-list domains are kept in (lower-case ASCII, punycode); as written when it is not a valid domain. */
function asciiHost(host: string): string {
  return domainToASCII(host) || host;
}

/** The time all the budgeted regex rules may take over one batch of texts before they are run text by text. */
export const REGEX_BATCH_BUDGET_MS = 100;
/** The time they may take over one text: past it REGEX_TEXT_TRIES times in a row, the text is refused by the rule that was running. */
export const REGEX_TEXT_BUDGET_MS = 20;
/**
 * The deadline is wall-clock time: on a busy machine the process can be
 * descheduled for longer than the budget while running an innocent text. A
 * text is refused only when every one of these runs is past the budget (a
 * text that stalls a regex costs this many budgets).
 */
export const REGEX_TEXT_TRIES = 3;

/**
 * Runs code under a deadline: V8 stops it (a regex included, mid-match)
 * when the time is up. One vm context for the process; each run costs about
 * 0.1 ms (the deadline's watchdog), so texts are run in batches.
 */
const guard = {
  context: vm.createContext({ job: undefined as (() => unknown) | undefined, out: undefined as unknown }),
  script: new vm.Script('out = job()'),
  /** The regex running when the deadline struck (set by the job as it goes). */
  current: undefined as CompiledRegex | undefined,
  within<T>(ms: number, job: () => T): T | undefined {
    this.context.job = job;
    try {
      this.script.runInContext(this.context, { timeout: ms });
      return this.context.out as T;
    } catch (err) {
      if ((err as { code?: unknown }).code === 'ERR_SCRIPT_EXECUTION_TIMEOUT') return undefined;
      throw err;
    } finally {
      this.context.job = undefined;
      this.context.out = undefined;
    }
  },
};

/** The budgeted regexes' outcomes for each text (see ContentRules.checkMany). */
function guardedOutcomes(regexes: readonly CompiledRegex[], texts: readonly string[]): Map<CompiledRegex, RegexOutcome>[] {
  const run = (text: string) => {
    const out = new Map<CompiledRegex, RegexOutcome>();
    for (const regex of regexes) {
      guard.current = regex;
      out.set(regex, runRegex(regex, text));
    }
    return out;
  };
  const all = guard.within(REGEX_BATCH_BUDGET_MS, () => texts.map(run));
  if (all) return all;
  return texts.map((text) => {
    for (let i = 0; i < REGEX_TEXT_TRIES; i++) {
      const out = guard.within(REGEX_TEXT_BUDGET_MS, () => run(text));
      if (out) return out;
    }
    return new Map([[guard.current!, { timedOut: true } as const]]);
  });
}

/**
 * The content rules of one rules document, compiled: an Aho-Corasick
 * automaton per word list, the regexes, the link rule. Immutable; build a new
 * one when the document changes. Expects a document from parseRules (an
 * unchecked one may throw here).
 */
export class ContentRules {
  /** No content rule at all: check() then allows every text without looking at it. */
  readonly empty: boolean;
  private readonly blockWords: WordAutomaton | undefined;
  private readonly maskWords: WordAutomaton | undefined;
  private readonly regexes: readonly CompiledRegex[];
  /** The regexes that run within a time budget. */
  private readonly guarded: readonly CompiledRegex[];
  private readonly links: CompiledLinks | undefined;

  constructor(doc: RulesDocument) {
    this.blockWords = automaton(doc.block_words);
    this.maskWords = automaton(doc.mask_words);
    // Before any rule's regex is compiled: V8's fallback to its linear-time engine (regex-engine.ts).
    if ((doc.regex_rules ?? []).length > 0) boundRegexes();
    this.regexes = (doc.regex_rules ?? []).map((rule) => {
      const flags = (rule.flags ?? '').replace(/[gy]/g, '');
      return {
        id: rule.id, action: rule.action, once: new RegExp(rule.pattern, flags), all: new RegExp(rule.pattern, `${flags}g`),
        guarded: !runsInLinearTime(rule.pattern, flags),
      };
    });
    this.guarded = this.regexes.filter((r) => r.guarded);
    const links = doc.links;
    if (links && links.mode !== 'any') {
      const allow = links.mode === 'allowlist' ? (links.allow_domains ?? []).map((d) => asciiHost(d.toLowerCase().replace(/\.$/, ''))) : [];
      this.links = { action: links.action ?? 'block', allow: new Set(allow) };
    }
    this.empty = !this.blockWords && !this.maskWords && this.regexes.length === 0 && !this.links;
  }

  /**
   * Applies the rules to a text. Blocking first, in document order
   * (block_words, the regex rules with action block, links with action
   * block): the first that trips decides. Otherwise every masking rule
   * (mask_words, regex rules with action mask, links with action mask)
   * replaces what it matched, each original code point by one `*`; the rest
   * of the text is kept as it is.
   */
  check(text: string): Verdict {
    return this.checkMany([text])[0]!;
  }

  /** Whether some regex rules run within a time budget: checkMany then pays the budget's cost once for all its texts. */
  get budgeted(): boolean {
    return this.guarded.length > 0;
  }

  /**
   * check() of several texts. The regex rules V8's linear-time engine cannot
   * take over run for all of them at once within REGEX_BATCH_BUDGET_MS; past
   * it, text by text within REGEX_TEXT_BUDGET_MS each, and a text that runs a
   * rule past that REGEX_TEXT_TRIES times is refused by that rule (a text crafted to stall a rule is
   * no text to let through).
   */
  checkMany(texts: readonly string[]): Verdict[] {
    if (this.empty) return texts.map((text) => ({ action: 'allow', text }));
    const guarded = this.guarded.length > 0 ? guardedOutcomes(this.guarded, texts) : undefined;
    return texts.map((text, i) => this.decide(text, guarded?.[i]));
  }

  private decide(text: string, guarded: Map<CompiledRegex, RegexOutcome> | undefined): Verdict {
    const norm = this.blockWords || this.maskWords ? normalize(text) : undefined;
    // A budgeted regex runs only under the guard: its outcome is in `guarded` (a text past its budget has only that).
    for (const [regex, found] of guarded ?? []) if ('timedOut' in found) return { action: 'block', rule: regex.id };
    const outcome = (regex: CompiledRegex): RegexOutcome => guarded?.get(regex) ?? runRegex(regex, text);

    if (this.blockWords && norm && this.blockWords.test(norm.text)) return { action: 'block', rule: 'block_words' };
    for (const regex of this.regexes) {
      if (regex.action !== 'block') continue;
      const found = outcome(regex);
      if (!('timedOut' in found) && found.hit) return { action: 'block', rule: regex.id };
    }
    const tripped = this.links ? linkSpans(text).filter((link) => this.trips(link.host)) : [];
    if (this.links?.action === 'block' && tripped.length > 0) return { action: 'block', rule: 'links' };

    const masked = new Uint8Array(text.length);
    const rules: string[] = [];
    if (this.maskWords && norm) {
      const found = this.maskWords.search(norm.text);
      if (found.length > 0) {
        const map = norm.map;
        for (const { start, end } of found) {
          const first = map[start] ?? 0;
          const last = map[end - 1] ?? first;
          masked.fill(1, first, last + ((text.codePointAt(last) ?? 0) > 0xffff ? 2 : 1));
        }
        rules.push('mask_words');
      }
    }
    for (const regex of this.regexes) {
      if (regex.action !== 'mask') continue;
      const found = outcome(regex);
      if ('timedOut' in found || !found.hit) continue;
      for (const [start, end] of found.spans) masked.fill(1, start, end);
      rules.push(regex.id);
    }
    if (this.links?.action === 'mask' && tripped.length > 0) {
      for (const link of tripped) masked.fill(1, link.start, link.end);
      rules.push('links');
    }
    if (rules.length === 0) return { action: 'allow', text };
    return { action: 'mask', text: stars(text, masked), rules };
  }

  /** Whether a link to `host` trips the link rule: any host with mode 'none'; one outside the allowed domains with 'allowlist'. */
  private trips(host: string): boolean {
    const allow = this.links?.allow;
    if (!allow || allow.size === 0) return true;
    // The host, then each parent domain: a.b.example.com, b.example.com, example.com, com.
    for (let name = asciiHost(host); ; name = name.slice(name.indexOf('.') + 1)) {
      if (allow.has(name)) return false;
      if (!name.includes('.')) return true;
    }
  }
}

/** `text` with each code point that has a masked unit replaced by one `*`. */
function stars(text: string, masked: Uint8Array): string {
  let out = '';
  let from = 0;
  for (let i = 0; i < text.length;) {
    const width = (text.codePointAt(i) ?? 0) > 0xffff ? 2 : 1;
    if (masked[i] || (width === 2 && masked[i + 1])) {
      out += text.slice(from, i) + '*';
      from = i + width;
    }
    i += width;
  }
  return out + text.slice(from);
}
