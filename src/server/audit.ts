// The audit log of operator actions: a bounded ring in memory (what GET /v1/audit reads) and,
// when a path is configured, an append-only JSON-lines file that keeps every entry. The file
// is the durable record; on start the ring is refilled from its tail, so a restart does not
// empty the console's view.
import fs from 'node:fs';

export type AuditAction = 'force-stop' | 'retry-now';

export interface AuditEntry {
  /** Increasing within one log (continues from the file's last entry after a restart). */
  seq: number;
  at: string;
  /** The API token's name; null when authentication is off. */
  actor: string | null;
  remoteAddress: string;
  action: AuditAction;
  gid: string;
  reason: string;
  compensate?: boolean;
  outcome: 'applied' | 'refused' | 'not-found';
  /** Status/phase after the action, or why it was refused. */
  detail: string;
}

/** How much of the file's end is read on start: enough for auditEntriesMax entries of typical size. */
const tailBytesPerEntry = 2048;

export class AuditLog {
  private readonly entries: AuditEntry[] = [];
  private nextSeq = 1;
  /** File appends in order, one at a time, so lines never interleave. */
  private writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly entriesMax: number,
    private readonly filePath?: string,
  ) {
    if (filePath) this.loadTail(filePath);
  }

  get path(): string | null {
    return this.filePath ?? null;
  }

  /** Records an entry; resolves once it is in the file (when there is one). */
  async record(entry: Omit<AuditEntry, 'seq' | 'at'>, nowMs = Date.now()): Promise<AuditEntry> {
    const full: AuditEntry = { seq: this.nextSeq++, at: new Date(nowMs).toISOString(), ...entry };
    this.remember(full);
    if (this.filePath) {
      const filePath = this.filePath;
      const line = `${JSON.stringify(full)}\n`;
      const written = this.writing.then(() => fs.promises.appendFile(filePath, line, { encoding: 'utf8', mode: 0o600 }));
      this.writing = written.catch(() => undefined);
      await written;
    }
    return full;
  }

  /** Newest first, entries with seq below `beforeSeq` when given. */
  page(limit: number, beforeSeq?: number): { items: AuditEntry[]; nextBefore: number | null } {
    const items: AuditEntry[] = [];
    for (let index = this.entries.length - 1; index >= 0 && items.length < limit; index--) {
      const entry = this.entries[index];
      if (beforeSeq !== undefined && entry.seq >= beforeSeq) continue;
      items.push(entry);
    }
    const last = items[items.length - 1];
    const more = last !== undefined && this.entries.length > 0 && this.entries[0].seq < last.seq;
    return { items, nextBefore: more ? last.seq : null };
  }

  private remember(entry: AuditEntry): void {
    this.entries.push(entry);
    if (this.entries.length > this.entriesMax) this.entries.splice(0, this.entries.length - this.entriesMax);
  }

  private loadTail(filePath: string): void {
    let handle: number;
    try {
      handle = fs.openSync(filePath, 'r');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw error;
    }
    try {
      const size = fs.fstatSync(handle).size;
      const length = Math.min(size, this.entriesMax * tailBytesPerEntry);
      const buffer = Buffer.alloc(length);
      fs.readSync(handle, buffer, 0, length, size - length);
      const lines = buffer.toString('utf8').split('\n');
      // The first line may be cut by the window, and the last one by a crash mid-append.
      if (length < size) lines.shift();
      for (const line of lines) {
        const entry = parseEntry(line);
        if (!entry) continue;
        this.remember(entry);
        this.nextSeq = Math.max(this.nextSeq, entry.seq + 1);
      }
    } finally {
      fs.closeSync(handle);
    }
  }
}

function parseEntry(line: string): AuditEntry | null {
  if (line.trim().length === 0) return null;
  try {
    const value = JSON.parse(line) as Partial<AuditEntry>;
    return typeof value.seq === 'number' && typeof value.gid === 'string' && typeof value.action === 'string' ? (value as AuditEntry) : null;
  } catch {
    return null;
  }
}
