// Exiting a CLI command without losing output: writes to a pipe may still be
// queued when process.exit() runs, and would be dropped (`longlink send
// --count 500 | wc -l` printed fewer than 500 lines). Exit once both streams
// have flushed everything written before.
export function exitAfterFlush(code: number): void {
  process.exitCode = code;
  process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
}
