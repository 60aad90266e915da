// The coordinator's versioned key-value store, and read-modify-write with optimistic locking:
// read the value and its version, compute the new value, write it only if the version is still
// the same, and on a conflict read again and retry.
import { setTimeout as sleep } from 'node:timers/promises';
import type { Dispatcher } from 'undici';
import { TandemApiError } from './client.js';
import { backoffMs, JsonHttp, problemType } from './locks.js';

export interface KvClientOptions {
  /** The coordinator, e.g. http://127.0.0.1:8636 */
  url: string;
  dispatcher?: Dispatcher;
  requestTimeoutMs?: number;
  /** API token, sent as `Authorization: Bearer <token>`. */
  token?: string;
}

export interface KvItem<T = unknown> {
  key: string;
  value: T;
  /** Changes on every write; never repeats, even for a key deleted and created again. */
  version: number;
}

/** A put or delete found the key at another version than expected (0: the key does not exist). */
export class KvConflictError extends Error {
  constructor(
    readonly key: string,
    readonly currentVersion: number,
  ) {
    super(`key ${JSON.stringify(key)} is at version ${currentVersion}, not the expected one`);
    this.name = 'KvConflictError';
  }
}

export interface ReadModifyWriteOptions {
  /** Attempts before giving up with the last KvConflictError (default 10). */
  attemptsMax?: number;
}

export class KvClient {
  private readonly http: JsonHttp;

  constructor(options: KvClientOptions) {
    this.http = new JsonHttp(options.url.replace(/\/+$/, ''), options.dispatcher, options.requestTimeoutMs ?? 10_000, options.token);
  }

  /** The value and version of `key`, or null if it does not exist. */
  async get<T = unknown>(key: string): Promise<KvItem<T> | null> {
    try {
      return await this.http.call<KvItem<T>>('GET', `/v1/kv/${encodeKey(key)}`);
    } catch (error) {
      if (error instanceof TandemApiError && error.status === 404) return null;
      throw error;
    }
  }

  /**
   * Writes `value`. With `expectedVersion` the write happens only if the key is at that version
   * (0: only if it does not exist); otherwise throws KvConflictError.
   */
  async put(key: string, value: unknown, options: { expectedVersion?: number } = {}): Promise<{ version: number; created: boolean }> {
    try {
      return await this.http.call<{ version: number; created: boolean }>('PUT', `/v1/kv/${encodeKey(key)}`, {
        value,
        ...(options.expectedVersion !== undefined ? { expectedVersion: options.expectedVersion } : {}),
      });
    } catch (error) {
      throw conflictOf(key, error);
    }
  }

  /** Deletes `key`; false if it did not exist. With `expectedVersion`, throws KvConflictError on a mismatch. */
  async delete(key: string, options: { expectedVersion?: number } = {}): Promise<boolean> {
    const query = options.expectedVersion !== undefined ? `?expectedVersion=${options.expectedVersion}` : '';
    try {
      await this.http.call('DELETE', `/v1/kv/${encodeKey(key)}${query}`);
      return true;
    } catch (error) {
      if (error instanceof TandemApiError && error.status === 404) return false;
      throw conflictOf(key, error);
    }
  }

  /** Keys starting with `prefix`, in key order, a page at a time. */
  list<T = unknown>(options: { prefix?: string; limit?: number; cursor?: string } = {}): Promise<{ items: Array<KvItem<T>>; nextCursor: string | null }> {
    const params = new URLSearchParams();
    if (options.prefix !== undefined) params.set('prefix', options.prefix);
    if (options.limit !== undefined) params.set('limit', String(options.limit));
    if (options.cursor !== undefined) params.set('cursor', options.cursor);
    return this.http.call('GET', `/v1/kv${params.size > 0 ? `?${params}` : ''}`);
  }

  /**
   * Reads `key`, computes its new value with `update` (given undefined when the key is absent)
   * and writes it only if nobody wrote in between; on a conflict, reads again and retries with
   * a jittered backoff. `update` may run several times, so it must have no side effects.
   */
  async readModifyWrite<T>(
    key: string,
    update: (current: T | undefined, version: number) => T | Promise<T>,
    options: ReadModifyWriteOptions = {},
  ): Promise<KvItem<T> & { attempts: number }> {
    const attemptsMax = options.attemptsMax ?? 10;
    for (let attempt = 1; ; attempt++) {
      const current = await this.get<T>(key);
      const version = current?.version ?? 0;
      const value = await update(current?.value, version);
      try {
        const written = await this.put(key, value, { expectedVersion: version });
        return { key, value, version: written.version, attempts: attempt };
      } catch (error) {
        if (!(error instanceof KvConflictError) || attempt >= attemptsMax) throw error;
        await sleep(backoffMs(attempt - 1));
      }
    }
  }
}

function encodeKey(key: string): string {
  // Slashes stay readable: the server takes the rest of the path as the key.
  return key.split('/').map(encodeURIComponent).join('/');
}

function conflictOf(key: string, error: unknown): unknown {
  if (error instanceof TandemApiError && error.status === 409 && problemType(error) === 'version-conflict') {
    const currentVersion = typeof error.problem === 'object' ? Number((error.problem as { currentVersion?: unknown }).currentVersion ?? 0) : 0;
    return new KvConflictError(key, currentVersion);
  }
  return error;
}
