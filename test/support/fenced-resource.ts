// A protected resource for mutual-exclusion checkers: a counter that, like the storage in
// Kleppmann's fencing argument, remembers the highest fencing token it has seen and refuses any
// read or write that carries a lower one. Reads count too: a holder whose lease ran out must
// not write back a value it read before a newer holder read (that would lose an update).
import { EventEmitter } from 'node:events';

export class StaleTokenError extends Error {
  constructor(
    readonly token: number,
    readonly highestToken: number,
  ) {
    super(`token ${token} is older than ${highestToken}`);
    this.name = 'StaleTokenError';
  }
}

export interface AcceptedWrite {
  token: number;
  value: number;
  writer: string;
}

export class FencedCounter extends EventEmitter {
  value = 0;
  highestToken = 0;
  readonly accepted: AcceptedWrite[] = [];
  readonly rejected: Array<{ token: number; writer: string }> = [];

  read(token: number): number {
    this.admit(token);
    return this.value;
  }

  write(token: number, value: number, writer: string): void {
    try {
      this.admit(token);
    } catch (error) {
      this.rejected.push({ token, writer });
      throw error;
    }
    this.value = value;
    this.accepted.push({ token, value, writer });
    this.emit('write', this.accepted.length);
  }

  /** Resolves once a token above `token` has been seen. */
  tokenAbove(token: number): Promise<void> {
    if (this.highestToken > token) return Promise.resolve();
    return new Promise((resolve) => {
      const onToken = (highest: number) => {
        if (highest <= token) return;
        this.off('token', onToken);
        resolve();
      };
      this.on('token', onToken);
    });
  }

  /** Resolves once `count` writes have been accepted. */
  writesReached(count: number): Promise<void> {
    if (this.accepted.length >= count) return Promise.resolve();
    return new Promise((resolve) => {
      const onWrite = (total: number) => {
        if (total < count) return;
        this.off('write', onWrite);
        resolve();
      };
      this.on('write', onWrite);
    });
  }

  /** Accepted writes whose token was not above the previous accepted write's: must be none. */
  orderViolations(): AcceptedWrite[] {
    return this.accepted.filter((write, index) => index > 0 && write.token <= this.accepted[index - 1].token);
  }

  private admit(token: number): void {
    if (token < this.highestToken) throw new StaleTokenError(token, this.highestToken);
    if (token > this.highestToken) {
      this.highestToken = token;
      this.emit('token', token);
    }
  }
}

/**
 * Tracks which checker clients are still running, so a paused holder can wait for an event
 * (a newer holder showed up, or nobody else is left to take the lock) instead of a timer.
 */
export class ClientRoster {
  private running: number;
  private readonly waiters: Array<{ resolve: () => void }> = [];

  constructor(clientCount: number) {
    this.running = clientCount;
  }

  finished(): void {
    this.running -= 1;
    if (this.running <= 1) for (const waiter of this.waiters.splice(0)) waiter.resolve();
  }

  /** Resolves once the caller is the only client still running. */
  othersDone(): Promise<void> {
    if (this.running <= 1) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ resolve }));
  }
}
