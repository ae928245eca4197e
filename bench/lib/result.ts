// The document every scenario produces: printed as a table, written as JSON
// with --json, and kept in bench/RESULTS.md with a chart. Field names are
// fixed (other tools read them): see bench/README.md.

/** One system's figures, e.g. { msgs_per_s, p50_ms, p99_ms, sent, acked, delivered, lost, duplicated }. */
export type SystemResult = Record<string, number>;

export interface Goal {
  /** What is claimed, e.g. "throughput >= 1.0x Socket.IO". */
  name: string;
  /** The measured figure the goal is about, e.g. 1.23 (a ratio) or 4.1 (ms). */
  actual: number;
  /** The bound, e.g. 1.0. */
  target: number;
  /** True when the goal holds. */
  met: boolean;
}

/** Which figure the chart of a scenario shows: one bar per system for each metric. */
export interface ChartSpec {
  title: string;
  metrics: { field: string; label: string }[];
}

export interface BenchResult {
  scenario: string;
  /** Section name in RESULTS.md when one scenario is kept in several forms, e.g. "p2p --rate 5000". */
  section?: string;
  /** The exact command that produced it, e.g. "npm run bench -- p2p --rate 5000". */
  command: string;
  conditions: Record<string, unknown>;
  /** Keyed by system: longlink, raw-ws, raw-net, socketio, longlink-broadcast, ... */
  results: Record<string, SystemResult>;
  /** e.g. { "longlink/socketio msgs_per_s": 1.2 } */
  ratios: Record<string, number>;
  goals: Goal[];
  chart: ChartSpec;
  /** Free-form remarks printed under the table (what limited the run, etc.). */
  notes: string[];
}
