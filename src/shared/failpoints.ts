// Failpoints for crash tests: TANDEM_FAILPOINTS names places where the process kills itself
// with SIGKILL, exactly as `kill -9` would, e.g. TANDEM_FAILPOINTS=after-persist:submitted/commit.
// Unset (always, outside tests) this costs one Set lookup.

const armed = new Set((process.env.TANDEM_FAILPOINTS ?? '').split(',').map((name) => name.trim()).filter(Boolean));

export function failpointsArmed(): boolean {
  return armed.size > 0;
}

export function failpoint(name: string): void {
  if (armed.has(name)) {
    process.stderr.write(`failpoint ${name}: SIGKILL\n`);
    process.kill(process.pid, 'SIGKILL');
  }
}
