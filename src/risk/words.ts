// A word list compiled into an Aho-Corasick automaton over UTF-16 code
// units: one pass over a text finds every occurrence of every word, whatever
// the list's size (10,000 words cost what 10 do, per character of text).
//
// Built for the send path, where it runs on every message: no allocation per
// character, no grapheme segmentation (the texts it sees are normalised by
// matcher.ts first). The trie is built from the sorted words straight into
// typed arrays (no Map per state: 100,000 words compile in a fraction of a
// second) and kept flat:
// - the root's transitions in a table indexed by code unit (most steps
//   start over at the root);
// - every other state's transitions as a sorted run of (code unit, target)
//   pairs (CSR), searched linearly when short, by halving when long;
// - `fail`: the longest proper suffix of the state's string that is a state;
// - `dict`: the nearest state on the fail chain where a word ends (0: none),
//   so matches are listed without walking every fail link.

const ROOT = 0;
/** Past this many transitions a state's run is searched by halving. */
const LINEAR_MAX = 8;

/** An occurrence of a word: [start, end) in code units of the text searched. */
export interface WordMatch {
  start: number;
  end: number;
}

export class WordAutomaton {
  /** Words compiled (distinct, non-empty). */
  readonly size: number;
  private readonly rootNext = new Int32Array(65536);
  private readonly offsets: Int32Array;
  private readonly codes: Uint16Array;
  private readonly targets: Int32Array;
  private readonly fail: Int32Array;
  private readonly dict: Int32Array;
  /** Length of the word ending at a state, 0 where none ends. */
  private readonly wordLength: Int32Array;

  constructor(words: Iterable<string>) {
    // The trie, built from the words in code-unit order: a word shares with the one before it the path of
    // their common prefix, and each state's children are made in the order of their code units (no Map per state).
    const sorted = [...new Set(words)].filter((w) => w !== '').sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    this.size = sorted.length;
    let capacity = 1;
    let longest = 0;
    for (const w of sorted) {
      capacity += w.length;
      longest = Math.max(longest, w.length);
    }
    const parentOf = new Int32Array(capacity);
    const codeOf = new Uint16Array(capacity);
    const ends = new Int32Array(capacity);
    const path = new Int32Array(longest + 1); // path[d]: the state at depth d of the word being added
    let states = 1;
    let previous = '';
    for (const word of sorted) {
      let common = 0;
      while (common < previous.length && common < word.length && previous.charCodeAt(common) === word.charCodeAt(common)) common++;
      for (let d = common; d < word.length; d++) {
        const t = states++;
        parentOf[t] = path[d]!;
        codeOf[t] = word.charCodeAt(d);
        path[d + 1] = t;
      }
      ends[path[word.length]!] = word.length;
      previous = word;
    }
    // Flatten: each state's transitions as a run (states were made parent before child, siblings in code order).
    this.offsets = new Int32Array(states + 1);
    for (let t = 1; t < states; t++) this.offsets[parentOf[t]! + 1]!++;
    for (let s = 0; s < states; s++) this.offsets[s + 1]! += this.offsets[s]!;
    const edges = states - 1;
    this.codes = new Uint16Array(edges);
    this.targets = new Int32Array(edges);
    const fill = this.offsets.slice(0, states);
    for (let t = 1; t < states; t++) {
      const at = fill[parentOf[t]!]!++;
      this.codes[at] = codeOf[t]!;
      this.targets[at] = t;
    }
    this.wordLength = ends.slice(0, states);
    this.rootNext.fill(ROOT);
    for (let e = this.offsets[ROOT]!; e < this.offsets[ROOT + 1]!; e++) this.rootNext[this.codes[e]!] = this.targets[e]!;

    // Fail and dictionary links, breadth first (a state's links are known before its children's).
    this.fail = new Int32Array(states);
    this.dict = new Int32Array(states);
    const queue = new Int32Array(states);
    let head = 0;
    let tail = 0;
    for (let e = this.offsets[ROOT]!; e < this.offsets[ROOT + 1]!; e++) queue[tail++] = this.targets[e]!;
    while (head < tail) {
      const s = queue[head++]!;
      for (let e = this.offsets[s]!; e < this.offsets[s + 1]!; e++) {
        const c = this.codes[e]!;
        const t = this.targets[e]!;
        const f = this.step(this.fail[s]!, c);
        this.fail[t] = f;
        this.dict[t] = this.wordLength[f]! > 0 ? f : this.dict[f]!;
        queue[tail++] = t;
      }
    }
  }

  /** Whether any word occurs in `text`. */
  test(text: string): boolean {
    let s = ROOT;
    for (let i = 0; i < text.length; i++) {
      s = this.step(s, text.charCodeAt(i));
      if (this.wordLength[s]! > 0 || this.dict[s]! !== ROOT) return true;
    }
    return false;
  }

  /** Every occurrence of every word in `text`, by where it ends. */
  search(text: string): WordMatch[] {
    const out: WordMatch[] = [];
    let s = ROOT;
    for (let i = 0; i < text.length; i++) {
      s = this.step(s, text.charCodeAt(i));
      for (let w = this.wordLength[s]! > 0 ? s : this.dict[s]!; w !== ROOT; w = this.dict[w]!) {
        out.push({ start: i + 1 - this.wordLength[w]!, end: i + 1 });
      }
    }
    return out;
  }

  /** The state after reading `c` in state `s` (following fail links where `s` has no transition on it). */
  private step(s: number, c: number): number {
    for (;;) {
      if (s === ROOT) return this.rootNext[c]!;
      const t = this.transition(s, c);
      if (t !== -1) return t;
      s = this.fail[s]!;
    }
  }

  /** `s`'s own transition on `c`, or -1. */
  private transition(s: number, c: number): number {
    let lo = this.offsets[s]!;
    let hi = this.offsets[s + 1]!;
    if (hi - lo <= LINEAR_MAX) {
      for (; lo < hi; lo++) if (this.codes[lo] === c) return this.targets[lo]!;
      return -1;
    }
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const m = this.codes[mid]!;
      if (m === c) return this.targets[mid]!;
      if (m < c) lo = mid + 1;
      else hi = mid;
    }
    return -1;
  }
}
