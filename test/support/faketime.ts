// Runs a child with its wall clock shifted by libfaketime (Debian's `faketime` package). The
// library is preloaded into the node child directly instead of running it under the `faketime`
// command: that command forks and waits, so signals sent to the child's pid would reach the
// wrapper, not node. The multi-threaded build is used because node has threads of its own.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { TestContext } from 'node:test';

const libraryName = 'libfaketimeMT.so.1';

/** Where distributions put libfaketime: /usr/lib/<multiarch>/faketime/, or without the triple. */
function libraryCandidates(): string[] {
  const roots = ['/usr/lib', '/usr/local/lib', '/usr/lib64'];
  const candidates: string[] = [];
  for (const root of roots) {
    candidates.push(path.join(root, 'faketime', libraryName));
    let entries: string[] = [];
    try {
      entries = fs.readdirSync(root);
    } catch {
      continue;
    }
    for (const entry of entries) if (entry.includes('-linux-')) candidates.push(path.join(root, entry, 'faketime', libraryName));
  }
  return candidates;
}

let found: string | null | undefined;

export function faketimeLibrary(): string | null {
  found ??= libraryCandidates().find((candidate) => fs.existsSync(candidate)) ?? null;
  return found;
}

/**
 * Environment that shifts a child's clocks by `offset` in libfaketime's relative form
 * ('+15s', '-15s'): every clock_gettime, gettimeofday and time the child makes, the same way
 * `faketime -f '+15s' node …` would.
 */
export function faketimeEnv(offset: string): Record<string, string> {
  const library = faketimeLibrary();
  if (!library) throw new Error('libfaketime is not installed');
  return { LD_PRELOAD: library, FAKETIME: offset };
}

/** Returns true when libfaketime is there; otherwise skips loudly (outside CI) or throws (in CI). */
export function requireFaketime(t: TestContext): boolean {
  if (faketimeLibrary()) return true;
  const problem = `libfaketime (${libraryName}) is not installed`;
  if (process.env.CI === 'true') throw new Error(`${problem}; CI must install the faketime package (scripts/services.sh)`);
  const message = `!!! SKIPPED: ${problem}; install the faketime package (npm run services does) !!!`;
  console.error(message);
  t.skip(message);
  return false;
}

/** How far ahead of this process's wall clock a node child under `offset` reads Date.now(). */
export function measuredChildOffsetMs(offset: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const before = Date.now();
    execFile(process.execPath, ['-e', 'process.stdout.write(String(Date.now()))'], { env: { ...process.env, ...faketimeEnv(offset) } }, (error, stdout) => {
      if (error) return reject(error);
      const after = Date.now();
      // The child read its clock somewhere between before and after: take the middle.
      resolve(Number(stdout) - (before + after) / 2);
    });
  });
}
