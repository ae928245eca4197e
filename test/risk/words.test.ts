// The word automaton against the obvious definition (every occurrence of
// every word, by indexOf), on random words and texts over small alphabets
// where words overlap, nest and share suffixes (what fail and dictionary
// links are for), and on astral characters.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { WordAutomaton } from '../../src/risk/words.js';

function naive(words: readonly string[], text: string): string[] {
  const out: string[] = [];
  for (const w of new Set(words)) {
    if (w === '') continue;
    for (let i = text.indexOf(w); i !== -1; i = text.indexOf(w, i + 1)) out.push(`${i}-${i + w.length}`);
  }
  return out.sort();
}

test('search finds exactly the occurrences indexOf finds; test says whether there is one', () => {
  const alphabet = fc.constantFrom('a', 'b', 'c', '中', '😀');
  const word = fc.array(alphabet, { minLength: 1, maxLength: 5 }).map((cs) => cs.join(''));
  fc.assert(fc.property(fc.array(word, { minLength: 1, maxLength: 30 }), fc.array(alphabet, { maxLength: 60 }).map((cs) => cs.join('')), (words, text) => {
    const automaton = new WordAutomaton(words);
    const found = automaton.search(text).map((m) => `${m.start}-${m.end}`).sort();
    const expected = naive(words, text);
    assert.deepEqual(found, expected);
    assert.equal(automaton.test(text), expected.length > 0);
  }), { numRuns: 500 });
});

test('a root with many transitions (searched by halving) and words sharing suffixes', () => {
  const words = Array.from({ length: 3000 }, (_, i) => `w${i.toString(36)}`).concat(['she', 'he', 'hers', 'his']);
  const automaton = new WordAutomaton(words);
  assert.equal(automaton.size, words.length);
  const text = 'ushers say w2bz and wzz';
  assert.deepEqual(automaton.search(text).map((m) => text.slice(m.start, m.end)).sort(), naive(words, text).map((r) => text.slice(...r.split('-').map(Number) as [number, number])).sort());
  assert.equal(new WordAutomaton(['']).test('anything'), false);
});
