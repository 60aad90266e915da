// Which commit a bench measured, so that results from different runs can be told apart.
import { execFileSync } from 'node:child_process';

/** The short commit hash of the checkout at `repoRoot`; null outside git. */
export function gitCommit(repoRoot: string): string | null {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repoRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return null;
  }
}
