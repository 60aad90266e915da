// Command-line flags for benchmarks. A bad flag is a UsageError: the dispatcher prints its
// message alone, without a stack.
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** True for errors that mean "the command line was wrong" (ours and node:util parseArgs'). */
export function isUsageError(error: unknown): error is Error {
  if (error instanceof UsageError) return true;
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS');
}

export function numberFlag(flag: string, raw: string, rule: { integer: boolean; min: number }): number {
  const value = Number(raw);
  if (!Number.isFinite(value) || value < rule.min || (rule.integer && !Number.isInteger(value))) {
    throw new UsageError(`${flag} must be ${rule.integer ? 'a whole number' : 'a number'} of at least ${rule.min}, got "${raw}"`);
  }
  return value;
}
