// The content rules on their own (no server): the rules document's validation
// (each error names what is wrong and where; defaults are filled in; a parsed
// document parses to itself), the normalisation that catches look-alikes, and
// ContentRules.check — block and mask with full-width, Cyrillic, leetspeak,
// zero-width and accented spellings, block over mask, regex rules, the link
// allow-list, CJK substrings — plus the cost of 10,000 words (printed, not
// asserted).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_RULES_BYTES, RulesError, parseRules, type RulesDocument } from '../../src/risk/rules.js';
import { ContentRules, linksIn, normalize } from '../../src/risk/matcher.js';

/** parseRules(json) throws a RulesError whose message is `message` (exactly, or matching it). */
function refused(json: unknown, message: string | RegExp): void {
  assert.throws(() => parseRules(json), (err: unknown) => {
    assert.ok(err instanceof RulesError, `a RulesError, not ${String(err)}`);
    if (typeof message === 'string') assert.equal(err.message, message);
    else assert.match(err.message, message);
    return true;
  });
}

const check = (doc: RulesDocument, text: string) => new ContentRules(parseRules(doc)).check(text);

describe('parseRules', () => {
  test('fills the defaults, keeps what was given, and parses its own output to the same document', () => {
    const input = {
      block_words: ['evil'],
      mask_words: ['bad', '坏蛋'],
      regex_rules: [{ id: 'phone', pattern: '\\d{3}-\\d{4}', action: 'mask' }, { id: 'Spam-1', pattern: 'buy now', flags: 'i', action: 'block' }],
      links: { mode: 'allowlist', allow_domains: ['Example.COM', 'bücher.de.'] },
      before_send_webhook: { url: 'https://hooks.example.com/before' },
      webhooks: { url: 'http://hooks.example.com/after' },
      spam: { same_text: { conversations: 5, window_ms: 60_000 }, actions: ['flag', 'mute'] },
    };
    const doc = parseRules(input);
    assert.deepEqual(doc, {
      block_words: ['evil'],
      mask_words: ['bad', '坏蛋'],
      regex_rules: [
        { id: 'phone', pattern: '\\d{3}-\\d{4}', flags: '', action: 'mask' },
        { id: 'Spam-1', pattern: 'buy now', flags: 'i', action: 'block' },
      ],
      links: { mode: 'allowlist', allow_domains: ['example.com', 'xn--bcher-kva.de'], action: 'block' },
      before_send_webhook: { url: 'https://hooks.example.com/before', timeout_ms: 500, on_failure: 'allow' },
      webhooks: { url: 'http://hooks.example.com/after', events: ['after-send', 'after-group-change', 'after-recall', 'after-edit', 'after-delete'] },
      spam: { same_text: { conversations: 5, window_ms: 60_000 }, actions: ['flag', 'mute'] },
    });
    assert.deepEqual(parseRules(JSON.parse(JSON.stringify(doc))), doc);
    doc.block_words?.push('more');
    assert.deepEqual(input.block_words, ['evil'], 'the copy shares nothing with the input');
  });

  test('an empty document is valid, and so is every optional part left out', () => {
    assert.deepEqual(parseRules({}), {});
    assert.deepEqual(parseRules({ links: { mode: 'none', action: 'mask' } }), { links: { mode: 'none', action: 'mask' } });
    assert.deepEqual(parseRules({ before_send_webhook: { url: 'http://h/', timeout_ms: 10_000, on_failure: 'deny' } }).before_send_webhook,
      { url: 'http://h/', timeout_ms: 10_000, on_failure: 'deny' });
    assert.deepEqual(parseRules({ webhooks: { url: 'https://h/', events: ['after-recall'] } }).webhooks, { url: 'https://h/', events: ['after-recall'] });
  });

  test('the document itself: an object, no unknown keys, no nulls, at most MAX_RULES_BYTES', () => {
    refused([], 'the rules document: must be a JSON object, not a list');
    refused('{}', 'the rules document: must be a JSON object, not a string');
    refused(null, 'the rules document: must be a JSON object, not null');
    refused({ block_word: ['x'] }, /^block_word: unknown key; the keys here are block_words, mask_words, regex_rules, links, before_send_webhook, webhooks, spam$/);
    refused({ links: { mode: 'none', colour: 'red' } }, /^links\.colour: unknown key; the keys here are mode, allow_domains, action$/);
    refused({ regex_rules: [{ id: 'a', pattern: 'x', action: 'block', why: 1 }] }, /^regex_rules\[0\]\.why: unknown key/);
    refused({ spam: { same_text: { conversations: 2, window_ms: 1, n: 1 }, actions: ['flag'] } }, /^spam\.same_text\.n: unknown key/);
    refused({ links: null }, 'links: null; leave the key out instead');
    const words = Array.from({ length: 50_000 }, (_, i) => `word-number-${i}-padding-padding-padding-padding-padding`);
    assert.ok(JSON.stringify({ block_words: words }).length > MAX_RULES_BYTES);
    refused({ block_words: words }, /^the rules document: \d+ bytes as JSON; at most 2097152 \(2 MiB\)$/);
  });

  test('word lists: not empty, words non-empty strings of at most 100 characters that leave something to match', () => {
    refused({ block_words: [] }, 'block_words: an empty list; leave it out instead');
    refused({ mask_words: [] }, 'mask_words: an empty list; leave it out instead');
    refused({ block_words: 'bad' }, 'block_words: must be a list, not a string');
    refused({ mask_words: ['ok', 7] }, 'mask_words[1]: must be a string, not a number');
    refused({ mask_words: ['ok', ''] }, 'mask_words[1]: an empty word');
    refused({ block_words: ['x'.repeat(101)] }, 'block_words[0]: 101 characters; at most 100');
    assert.deepEqual(parseRules({ block_words: ['😀'.repeat(100)] }).block_words, ['😀'.repeat(100)], '100 code points are fine');
    refused({ block_words: ['\u200b\u200d'] }, /^block_words\[0\]: "\\u200b\\u200d" is only spaces, invisible characters or marks/);
    refused({ block_words: ['  '] }, /^block_words\[0\]: " {2}" is only spaces/);
  });

  test('regex rules: compile, are bounded in time, have unique non-built-in ids, allowed flags, and an action', () => {
    const rule = (over: Record<string, unknown>) => ({ id: 'r', pattern: 'x', action: 'block', ...over });
    refused({ regex_rules: [rule({ id: 'ok' }), rule({ pattern: '(unclosed' })] }, /^regex_rules\[1\]\.pattern: invalid regular expression: .*Unterminated group/);
    // Nested repetition is refused where the linear-time engine cannot take over (case-insensitive, Unicode, lookaround).
    refused({ regex_rules: [rule({ pattern: '(a+)+$', flags: 'i' })] }, /^regex_rules\[0\]\.pattern: may take catastrophic \(exponential\) time on some texts: a repetition inside a repetition such as \(a\+\)\+/);
    refused({ regex_rules: [rule({ pattern: '^(\\w+\\s?)*$', flags: 'u' })] }, /^regex_rules\[0\]\.pattern: may take catastrophic/);
    refused({ regex_rules: [rule({ pattern: '(?<=x)(a+)+' })] }, /^regex_rules\[0\]\.pattern: may take catastrophic/);
    // Where it can, any pattern is bounded: accepted.
    assert.equal(parseRules({ regex_rules: [rule({ pattern: '(a+)+$' })] }).regex_rules?.length, 1);
    refused({ regex_rules: [rule({ id: 'phone' }), rule({ id: 'Phone' })] }, 'regex_rules[1].id: "Phone" is already the id of regex_rules[0]; ids must be unique');
    refused({ regex_rules: [rule({ id: 'links' })] }, /^regex_rules\[0\]\.id: "links" is the id of a built-in rule/);
    refused({ regex_rules: [rule({ id: 'no spaces' })] }, `regex_rules[0].id: "no spaces" is not an id: 1 to 64 letters, digits, '_' or '-'`);
    refused({ regex_rules: [rule({ id: 'x'.repeat(65) })] }, /^regex_rules\[0\]\.id: "x+…" is not an id/);
    refused({ regex_rules: [rule({ flags: 'gi' })] }, /^regex_rules\[0\]\.flags: 'g' is not allowed/);
    refused({ regex_rules: [rule({ flags: 'y' })] }, /^regex_rules\[0\]\.flags: 'y' is not allowed/);
    refused({ regex_rules: [rule({ flags: 'd' })] }, `regex_rules[0].flags: "d" is not a flag a rule may use; use any of 'imsu'`);
    refused({ regex_rules: [rule({ flags: 'ii' })] }, `regex_rules[0].flags: 'i' is given twice`);
    refused({ regex_rules: [rule({ action: 'drop' })] }, `regex_rules[0].action: "drop" is not one of 'block', 'mask'`);
    refused({ regex_rules: [{ id: 'r', pattern: 'x' }] }, 'regex_rules[0].action: required');
    refused({ regex_rules: [rule({ pattern: 'a'.repeat(501) })] }, 'regex_rules[0].pattern: 501 characters; at most 500');
    refused({ regex_rules: [rule({ pattern: 'a*' })] }, 'regex_rules[0].pattern: matches the empty text, so it would trip on every message');
    refused({ regex_rules: Array.from({ length: 201 }, (_, i) => rule({ id: `r${i}` })) }, 'regex_rules: 201 items; at most 200');
    assert.equal(parseRules({ regex_rules: [rule({ pattern: '\\p{Script=Han}{4}', flags: 'u' })] }).regex_rules?.[0]?.flags, 'u');
  });

  test('links: a mode; domains required (and only allowed) with allowlist, each a hostname', () => {
    refused({ links: {} }, 'links.mode: required');
    refused({ links: { mode: 'some' } }, `links.mode: "some" is not one of 'any', 'allowlist', 'none'`);
    refused({ links: { mode: 'allowlist' } }, "links.allow_domains: required: mode 'allowlist' needs the domains it allows");
    refused({ links: { mode: 'allowlist', allow_domains: [] } }, 'links.allow_domains: an empty list; leave it out instead');
    refused({ links: { mode: 'none', allow_domains: ['example.com'] } }, `links.allow_domains: only used with mode 'allowlist', and mode is 'none'; leave it out`);
    refused({ links: { mode: 'allowlist', allow_domains: ['https://example.com/'] } }, /^links\.allow_domains\[0\]: "https:\/\/example\.com\/" is not a hostname; give one such as example\.com/);
    refused({ links: { mode: 'allowlist', allow_domains: ['*.example.com'] } }, /^links\.allow_domains\[0\]: "\*\.example\.com" is not a hostname/);
    refused({ links: { mode: 'none', action: 'warn' } }, `links.action: "warn" is not one of 'block', 'mask'`);
  });

  test('webhooks: http(s) URLs, timeout_ms 1..10000, known events and policies', () => {
    refused({ before_send_webhook: {} }, 'before_send_webhook.url: required');
    refused({ before_send_webhook: { url: 'not a url' } }, 'before_send_webhook.url: "not a url" is not a URL');
    refused({ webhooks: { url: 'ftp://files.example.com/' } }, 'webhooks.url: "ftp://files.example.com/" is not an http: or https: URL');
    refused({ before_send_webhook: { url: 'http://h/', timeout_ms: 0 } }, 'before_send_webhook.timeout_ms: must be an integer from 1 to 10000 (milliseconds), not 0');
    refused({ before_send_webhook: { url: 'http://h/', timeout_ms: 10_001 } }, /^before_send_webhook\.timeout_ms: must be an integer from 1 to 10000/);
    refused({ before_send_webhook: { url: 'http://h/', timeout_ms: '500' } }, /timeout_ms: must be an integer from 1 to 10000 \(milliseconds\), not a string$/);
    refused({ before_send_webhook: { url: 'http://h/', on_failure: 'retry' } }, `before_send_webhook.on_failure: "retry" is not one of 'allow', 'deny'`);
    refused({ webhooks: { url: 'http://h/', events: [] } }, 'webhooks.events: an empty list; leave it out instead');
    refused({ webhooks: { url: 'http://h/', events: ['after-read'] } }, `webhooks.events[0]: "after-read" is not one of 'after-send', 'after-group-change', 'after-recall', 'after-edit', 'after-delete'`);
    refused({ webhooks: { url: 'http://h/', events: ['after-send', 'after-send'] } }, `webhooks.events[1]: 'after-send' is listed twice`);
  });

  test('spam: positive integers, windows of at most 24 h, at least one rule, actions not empty', () => {
    refused({ spam: { same_text: { conversations: 3, window_ms: 1000 } } }, 'spam.actions: required: say what is done when a spam rule trips');
    refused({ spam: { same_text: { conversations: 3, window_ms: 1000 }, actions: [] } }, 'spam.actions: an empty list; leave it out instead');
    refused({ spam: { actions: ['flag'] } }, 'spam: no rule: give at least one of same_text, new_conversations, links_from_new_users');
    refused({ spam: { same_text: { conversations: 0, window_ms: 1000 }, actions: ['flag'] } }, /^spam\.same_text\.conversations: must be an integer from 1 to \d+, not 0$/);
    refused({ spam: { new_conversations: { count: 2.5, window_ms: 1000 }, actions: ['flag'] } }, /^spam\.new_conversations\.count: must be an integer .*, not 2\.5$/);
    refused({ spam: { new_conversations: { count: 2, window_ms: 86_400_001 }, actions: ['flag'] } },
      'spam.new_conversations.window_ms: must be an integer from 1 to 86400000 (milliseconds, 24 h at most), not 86400001');
    refused({ spam: { links_from_new_users: { count: 2, window_ms: 1000 }, actions: ['flag'] } }, 'spam.links_from_new_users.account_age_ms: required');
    refused({ spam: { new_conversations: { count: 2, window_ms: 1000 }, actions: ['ban'] } }, `spam.actions[0]: "ban" is not one of 'flag', 'recall', 'mute', 'revoke'`);
    const spam = { same_text: { conversations: 3, window_ms: 1000 }, new_conversations: { count: 20, window_ms: 3_600_000 },
      links_from_new_users: { account_age_ms: 86_400_000, count: 3, window_ms: 600_000 }, actions: ['recall', 'revoke'] };
    assert.deepEqual(parseRules({ spam }).spam, spam);
  });
});

describe('normalize', () => {
  test('folds full-width, capitals, accents, look-alikes and leetspeak; drops invisible characters', () => {
    assert.equal(normalize('ＢＡＤ').text, 'bad');
    assert.equal(normalize('bаd').text, 'bad', 'Cyrillic а');
    assert.equal(normalize('ВАD').text, 'bad', 'Cyrillic capitals В А');
    assert.equal(normalize('ραν ΚΙΟ').text, 'pav kio', 'Greek');
    assert.equal(normalize('b@d $3x 0147').text, 'bad sex oiat');
    assert.equal(normalize('b\u200bad\u00ad\u2060\ufeff').text, 'bad');
    assert.equal(normalize('bád bа\u0301d Ünïcödé').text, 'bad bad unicode');
    assert.equal(normalize('がぎ か').text, 'がぎ か', 'kana voicing marks are kept');
    assert.equal(normalize('坏蛋').text, '坏蛋');
  });

  test('map gives the original index of each normalised UTF-16 unit', () => {
    assert.deepEqual(normalize('A\u200bé😀ﬁ'), { text: 'ae😀fi', map: [0, 2, 3, 3, 5, 5] });
    assert.deepEqual(normalize('e\u0301x'), { text: 'ex', map: [0, 2] });
    assert.deepEqual(normalize(''), { text: '', map: [] });
  });
});

describe('ContentRules', () => {
  test('no content rule: empty, and every text is allowed unchanged', () => {
    for (const doc of [{}, { links: { mode: 'any' as const } }, { before_send_webhook: { url: 'http://h/' } }]) {
      const rules = new ContentRules(parseRules(doc));
      assert.equal(rules.empty, true);
      assert.deepEqual(rules.check('anything at all http://x.com'), { action: 'allow', text: 'anything at all http://x.com' });
    }
    assert.equal(new ContentRules(parseRules({ mask_words: ['x'] })).empty, false);
  });

  test('a block word blocks in every look-alike spelling', () => {
    const rules = new ContentRules(parseRules({ block_words: ['bad'] }));
    for (const text of ['ＢＡＤ', 'so bаd', 'b@d!', 'B4D', 'b\u200bad', 'b\u200dа\u00add', 'bád', 'ba\u0301d', 'it is BaD', 'badge']) {
      assert.deepEqual(rules.check(text), { action: 'block', rule: 'block_words' }, JSON.stringify(text));
    }
    for (const text of ['good', 'b a d', 'bed', '']) assert.deepEqual(rules.check(text), { action: 'allow', text });
    assert.deepEqual(check({ block_words: ['Ｂ＠Ｄ'] }, 'so bad'), { action: 'block', rule: 'block_words' }, 'the words are normalised too');
  });

  test('a mask word replaces the original characters of each match, one * per code point, and keeps the rest', () => {
    const rules = new ContentRules(parseRules({ mask_words: ['bad'] }));
    assert.deepEqual(rules.check('a ＢＡＤ day'), { action: 'mask', text: 'a *** day', rules: ['mask_words'] });
    assert.deepEqual(rules.check('so bаd!'), { action: 'mask', text: 'so ***!', rules: ['mask_words'] });
    assert.deepEqual(rules.check('b@d and bad'), { action: 'mask', text: '*** and ***', rules: ['mask_words'] });
    assert.deepEqual(rules.check('x b\u200bad y'), { action: 'mask', text: 'x **** y', rules: ['mask_words'] }, 'the zero-width space inside is masked too');
    assert.deepEqual(rules.check('ba\u0301d.'), { action: 'mask', text: '****.', rules: ['mask_words'] }, 'the combining accent is a code point of its own');
    assert.deepEqual(rules.check('😀bád😀'), { action: 'mask', text: '😀***😀', rules: ['mask_words'] });
    assert.deepEqual(rules.check('\u200bbad\u200b'), { action: 'mask', text: '\u200b***\u200b', rules: ['mask_words'] }, 'invisible characters around a match stay');
    assert.deepEqual(rules.check('fine'), { action: 'allow', text: 'fine' });
    assert.deepEqual(check({ mask_words: ['abc', 'cde'] }, '>abcde<'), { action: 'mask', text: '>*****<', rules: ['mask_words'] }, 'overlapping matches combine');
  });

  test('CJK words match as substrings (no spaces between words)', () => {
    const rules = new ContentRules(parseRules({ mask_words: ['坏蛋', 'ばか'], block_words: ['死ね'] }));
    assert.deepEqual(rules.check('你是坏蛋吗？'), { action: 'mask', text: '你是**吗？', rules: ['mask_words'] });
    assert.deepEqual(rules.check('おまえはばかだ'), { action: 'mask', text: 'おまえは**だ', rules: ['mask_words'] });
    assert.deepEqual(rules.check('はか'), { action: 'allow', text: 'はか' }, 'は is not ば');
    assert.deepEqual(rules.check('もう死ねよ'), { action: 'block', rule: 'block_words' });
  });

  test('block beats mask, whichever rule comes first in the text', () => {
    const doc = { block_words: ['evil'], mask_words: ['bad'], regex_rules: [{ id: 'digits', pattern: '\\d{4}', action: 'mask' as const }] };
    assert.deepEqual(check(doc, 'bad 1234 and 3v1l'), { action: 'block', rule: 'block_words' });
    assert.deepEqual(check({ mask_words: ['bad'], regex_rules: [{ id: 'no-pay', pattern: 'paypal', flags: 'i', action: 'block' }] }, 'bad PayPal'),
      { action: 'block', rule: 'no-pay' });
  });

  test('regex rules run on the original text: block names the first blocking rule; masks combine with the word masks', () => {
    const doc: RulesDocument = {
      mask_words: ['bad'],
      regex_rules: [
        { id: 'phone', pattern: '\\b\\d{3}-\\d{4}\\b', action: 'mask' },
        { id: 'wire', pattern: 'wire (me|us) money', flags: 'i', action: 'block' },
        { id: 'wire-2', pattern: 'money', action: 'block' },
        { id: 'at', pattern: '@\\w+', action: 'mask' },
      ],
    };
    const rules = new ContentRules(parseRules(doc));
    assert.deepEqual(rules.check('Wire me money'), { action: 'block', rule: 'wire' });
    assert.deepEqual(rules.check('money'), { action: 'block', rule: 'wire-2' });
    assert.deepEqual(rules.check('bad: call 555-1234 or 555-9876, ask @bob'),
      { action: 'mask', text: '***: call ******** or ********, ask ****', rules: ['mask_words', 'phone', 'at'] });
    assert.deepEqual(check({ regex_rules: [{ id: 'plain', pattern: 'bad', action: 'block' }] }, 'b@d'), { action: 'allow', text: 'b@d' }, 'no normalisation for regexes');
    assert.deepEqual(check({ regex_rules: [{ id: 'emoji', pattern: '\\p{Extended_Pictographic}', flags: 'u', action: 'mask' }] }, 'hi 😀!'),
      { action: 'mask', text: 'hi *!', rules: ['emoji'] });
  });

  test('links allow-list: allowed domains and their subdomains pass, any other host trips the rule', () => {
    const rules = new ContentRules(parseRules({ links: { mode: 'allowlist', allow_domains: ['example.com', 'Bücher.de'] } }));
    for (const text of ['see https://example.com/a', 'docs: http://docs.EXAMPLE.com:8080/x?y#z', 'www.example.com', 'example.com.', 'go to shop.bücher.de/books', 'no link here', 'index.html and node.js', 'mail bob@gmail.com']) {
      assert.deepEqual(rules.check(text), { action: 'allow', text }, text);
    }
    for (const text of ['see http://evil.com', 'https://example.com.evil.com/', 'notexample.com', 'www.evil.org', 'spam.xyz', 'spam.ru/offer', 'http://user@evil.com:80@example', '访问spam.com吧']) {
      assert.deepEqual(rules.check(text), { action: 'block', rule: 'links' }, text);
    }
    const masked = new ContentRules(parseRules({ links: { mode: 'allowlist', allow_domains: ['example.com'], action: 'mask' } }));
    assert.deepEqual(masked.check('ok example.com/a but not http://evil.com/x?y=1, right'),
      { action: 'mask', text: `ok example.com/a but not ${'*'.repeat('http://evil.com/x?y=1'.length)}, right`, rules: ['links'] });
  });

  test("links mode 'none': any link trips; 'any': none does", () => {
    const none = new ContentRules(parseRules({ links: { mode: 'none' } }));
    for (const text of ['http://example.com', 'www.example.com', 'visit example.com today', 'https://中文.中国/']) {
      assert.deepEqual(none.check(text), { action: 'block', rule: 'links' }, text);
    }
    assert.deepEqual(none.check('version 1.2.3, e.g. README.md, at 3.5'), { action: 'allow', text: 'version 1.2.3, e.g. README.md, at 3.5' });
    assert.deepEqual(check({ links: { mode: 'any' } }, 'http://evil.com'), { action: 'allow', text: 'http://evil.com' });
  });

  test('linksIn finds the host of each link form, lower-cased', () => {
    assert.deepEqual(linksIn('A http://User:pw@Example.COM:8080/path, B https://a.b.example.org. C www.Test.io D example.com E foo.bar/baz F 10.0.0.1:80/x'),
      ['example.com', 'a.b.example.org', 'www.test.io', 'example.com', 'foo.bar', '10.0.0.1']);
    assert.deepEqual(linksIn('请看example.com或者http://例え.jp/パス。谢谢'), ['example.com', '例え.jp']);
    assert.deepEqual(linksIn('bob@example.com, file.txt, node.js, 1.5, v2.0.1, e.g., Mr.Smith'), []);
    assert.deepEqual(linksIn(''), []);
  });

  test('10,000 words compile, and 10,000 checks of a 200-character text finish (times printed)', (t) => {
    const blockWords = Array.from({ length: 10_000 }, (_, i) => `blk${i.toString(36)}x`);
    const maskWords = Array.from({ length: 10_000 }, (_, i) => `msk${i.toString(36)}y`);
    let start = performance.now();
    const rules = new ContentRules(parseRules({
      block_words: blockWords, mask_words: maskWords,
      regex_rules: [{ id: 'phone', pattern: '\\d{3}-\\d{4}', action: 'mask' }], links: { mode: 'allowlist', allow_domains: ['example.com'] },
    }));
    t.diagnostic(`parse + compile of 2 x 10,000 words: ${(performance.now() - start).toFixed(0)} ms`);
    const texts = {
      latin: 'Hello there, this is a perfectly ordinary message about lunch plans and the weather, see example.com/menu. '.repeat(2).slice(0, 200),
      cjk: '这是一条普通的消息，我们明天中午一起吃饭吧，天气很好。'.repeat(8).slice(0, 200),
    };
    for (const [name, text] of Object.entries(texts)) {
      assert.equal(text.length, 200);
      start = performance.now();
      for (let i = 0; i < 10_000; i++) assert.equal(rules.check(text).action, 'allow');
      t.diagnostic(`10,000 checks of 200 ${name} characters: ${(performance.now() - start).toFixed(0)} ms`);
    }
    const masked = maskWords[1234] ?? '';
    assert.deepEqual(rules.check(`x ${masked} y`), { action: 'mask', text: `x ${'*'.repeat(masked.length)} y`, rules: ['mask_words'] });
    assert.deepEqual(rules.check(`x ${blockWords[9999] ?? ''}`), { action: 'block', rule: 'block_words' });
  });
});

describe('regex rules on crafted texts', () => {
  // Patterns that backtrack exponentially (or polynomially) on these texts: without the linear-time fallback
  // each check would run for years and hold the process; here each returns (the test's own timeout is the bound).
  test('a pathological pattern on a crafted text ends, with the right answer', { timeout: 20_000 }, () => {
    const cases: [string, string, boolean][] = [
      ['(a+)+$', `${'a'.repeat(60)}!`, false],
      ['(\\w|\\d)*!', '1'.repeat(60), false],
      ['(?:a|a)*b', 'a'.repeat(60), false],
      ['^(\\w+\\s?)+$', `${'word '.repeat(30)}!`, false],
      ['(a+)+$', 'a'.repeat(60), true],
    ];
    for (const [pattern, text, blocked] of cases) {
      const rules = new ContentRules(parseRules({ regex_rules: [{ id: 'bad', pattern, action: 'block' }] }));
      assert.equal(rules.check(text).action, blocked ? 'block' : 'allow', pattern);
    }
  });
});

describe('regex rules the linear-time engine cannot run (case-insensitive, Unicode)', () => {
  test('run within a time budget: a text that stalls one is refused by that rule; other texts of the batch get their own verdicts', { timeout: 20_000 }, () => {
    const rules = new ContentRules(parseRules({
      regex_rules: [
        { id: 'stall', pattern: 'a*a*a*a*b', flags: 'i', action: 'block' },
        { id: 'shout', pattern: 'hello', flags: 'i', action: 'mask' },
      ],
    }));
    assert.equal(rules.budgeted, true);
    const verdicts = rules.checkMany(['HELLO there', 'a'.repeat(20_000), 'aab', 'nothing']);
    assert.deepEqual(verdicts, [
      { action: 'mask', text: '***** there', rules: ['shout'] },
      { action: 'block', rule: 'stall' },
      { action: 'block', rule: 'stall' },
      { action: 'allow', text: 'nothing' },
    ]);
    assert.deepEqual(rules.check('a'.repeat(20_000)), { action: 'block', rule: 'stall' });
    assert.equal(new ContentRules(parseRules({ regex_rules: [{ id: 'plain', pattern: 'x+y', action: 'block' }] })).budgeted, false);
  });
});
