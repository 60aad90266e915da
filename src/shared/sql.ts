// Error handling that every SQL backend shares (barrier, inbox, outbox, XA participants).

/** True when a driver error carries this code (pg: SQLSTATE string; mysql2: errno number). */
export function hasErrorCode(error: unknown, code: string | number): boolean {
  if (typeof error !== 'object' || error === null) return false;
  const { code: stateCode, errno } = error as { code?: unknown; errno?: unknown };
  return typeof code === 'string' ? stateCode === code : errno === code;
}

/**
 * PostgreSQL's CREATE … IF NOT EXISTS is not atomic: when two processes create a table at once,
 * the loser gets a unique violation on the catalog (23505) or "already exists" (42P07). The
 * table exists either way.
 */
export function lostConcurrentCreate(error: unknown): boolean {
  return hasErrorCode(error, '23505') || hasErrorCode(error, '42P07');
}

/** Runs a rollback; returns its error instead of throwing, so the caller's error wins. */
export async function rollbackQuietly(rollback: () => Promise<unknown>): Promise<Error | undefined> {
  try {
    await rollback();
    return undefined;
  } catch (error) {
    return error instanceof Error ? error : new Error(String(error));
  }
}
