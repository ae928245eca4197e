// A word list compiled into an Aho-Corasick automaton over UTF-16 code
// units: one pass over a text finds every occurrence of every word, whatever
// the list's size (10,000 words cost what 10 do, per character of text).
//
// Built for the send path, where it runs on every message: no allocation per
// character, no grapheme segmentation (the texts it sees are normalised by
// matcher.ts first). The trie is kept flat, in typed arrays:
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
    // Build the trie with a Map per state, then flatten it.
    const children: Map<number, number>[] = [new Map()];
    const ends: number[] = [0];
    let size = 0;
    for (const word of new Set(words)) {
      if (word === '') continue;
      size++;
      let s = ROOT;
      for (let i = 0; i < word.length; i++) {
        const c = word.charCodeAt(i);
        let t = children[s]!.get(c);
        if (t === undefined) {
          t = children.length;
          children.push(new Map());
          ends.push(0);
          children[s]!.set(c, t);
        }
        s = t;
      }
      ends[s] = word.length;
    }
    this.size = size;
    const states = children.length;
    this.offsets = new Int32Array(states + 1);
    let edges = 0;
    for (let s = 0; s < states; s++) {
      this.offsets[s] = edges;
      edges += children[s]!.size;
    }
    this.offsets[states] = edges;
    this.codes = new Uint16Array(edges);
    this.targets = new Int32Array(edges);
    for (let s = 0; s < states; s++) {
      let at = this.offsets[s]!;
      for (const [c, t] of [...children[s]!].sort((a, b) => a[0] - b[0])) {
        this.codes[at] = c;
        this.targets[at++] = t;
      }
    }
    this.wordLength = Int32Array.from(ends);
    this.rootNext.fill(ROOT);
    for (const [c, t] of children[ROOT]!) this.rootNext[c] = t;

    // Fail and dictionary links, breadth first (a state's links are known before its children's).
    this.fail = new Int32Array(states);
    this.dict = new Int32Array(states);
    const queue = new Int32Array(states);
    let head = 0;
    let tail = 0;
    for (const t of children[ROOT]!.values()) queue[tail++] = t;
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
