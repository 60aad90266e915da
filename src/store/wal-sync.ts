// Makes SQLite WAL commits durable off the event loop. SQLite runs with synchronous = NORMAL
// (in WAL mode it still syncs around every checkpoint); after each commit this fsyncs the WAL
// on libuv's thread pool, one fsync at a time, each covering every commit made before it
// started. A commit's writes are acknowledged only once an fsync covers it, and a read of a
// key waits until the last commit that wrote the key is covered, so nothing not yet on disk is
// ever shown to anyone (a participant's recovery, say) who could act on it.
import fs from 'node:fs';
import path from 'node:path';

interface Waiter {
  seq: number;
  resolve: () => void;
  reject: (error: Error) => void;
}

export class WalSyncer {
  private committedSeq = 0;
  private syncedSeq = 0;
  private running = false;
  private waiters: Waiter[] = [];
  /** Key → the last commit that wrote it, for commits not yet covered by an fsync. */
  private readonly pendingByKey = new Map<string, number>();
  private fd: number | null = null;
  private failure: Error | null = null;

  constructor(
    private readonly walPath: string,
    /** Builds the error that every later write gets once an fsync has failed. */
    private readonly fatal: (cause: Error) => Error,
  ) {}

  /** The fsync failure that made the store unusable, if any. */
  get failed(): Error | null {
    return this.failure;
  }

  /** Records a commit that wrote `keys`; resolves once the commit is on disk. */
  committed(keys: Iterable<string>): Promise<void> {
    this.committedSeq += 1;
    const seq = this.committedSeq;
    for (const key of keys) this.pendingByKey.set(key, seq);
    return this.until(seq);
  }

  /** Resolves once the last commit that wrote `key` is on disk (at once when it is). */
  async durable(key: string): Promise<void> {
    for (;;) {
      const seq = this.pendingByKey.get(key);
      if (seq === undefined || seq <= this.syncedSeq) return;
      await this.until(seq);
    }
  }

  /** Resolves once every commit made so far is on disk. */
  all(): Promise<void> {
    return this.until(this.committedSeq);
  }

  async close(): Promise<void> {
    try {
      await this.all();
    } finally {
      if (this.fd !== null) fs.closeSync(this.fd);
      this.fd = null;
    }
  }

  private until(seq: number): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (seq <= this.syncedSeq) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ seq, resolve, reject });
      this.kick();
    });
  }

  private kick(): void {
    if (this.running || this.failure || this.syncedSeq >= this.committedSeq) return;
    this.running = true;
    const target = this.committedSeq;
    let fd: number;
    try {
      fd = this.open();
    } catch (error) {
      return this.fail(error as Error);
    }
    fs.fdatasync(fd, (error) => {
      this.running = false;
      if (error) return this.fail(error);
      this.synced(target);
      this.kick();
    });
  }

  /**
   * The WAL exists once a commit wrote it. Its directory entry is fsynced once too, so that a
   * WAL created since the last checkpoint cannot vanish with a power loss.
   */
  private open(): number {
    if (this.fd !== null) return this.fd;
    const fd = fs.openSync(this.walPath, 'r');
    const directory = fs.openSync(path.dirname(this.walPath), 'r');
    try {
      fs.fsyncSync(directory);
    } finally {
      fs.closeSync(directory);
    }
    this.fd = fd;
    return fd;
  }

  private synced(target: number): void {
    this.syncedSeq = target;
    for (const [key, seq] of this.pendingByKey) if (seq <= target) this.pendingByKey.delete(key);
    const ready = this.waiters.filter((waiter) => waiter.seq <= target);
    this.waiters = this.waiters.filter((waiter) => waiter.seq > target);
    for (const waiter of ready) waiter.resolve();
  }

  /**
   * After a failed fsync the kernel may have dropped the dirty pages, so a later fsync could
   * succeed over a WAL with holes: like PostgreSQL, stop accepting writes instead of retrying.
   */
  private fail(cause: Error): void {
    this.running = false;
    this.failure = this.fatal(cause);
    const waiting = this.waiters;
    this.waiters = [];
    for (const waiter of waiting) waiter.reject(this.failure);
  }
}
