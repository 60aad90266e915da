// API tokens and roles. A token is 32 random bytes shown once, when it is made; the
// coordinator keeps only its SHA-256 (a token has the entropy of a key, so a slow password
// hash would buy nothing), read from a tokens file or the environment, one entry per line:
//
//   <name> <role> sha256:<64 hex digits>
//
// Roles nest: `read` looks, `client` also creates and drives transactions and uses locks,
// key-value and the registry, `admin` also forces transactions to an end.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';

export const roles = ['read', 'client', 'admin'] as const;
export type Role = (typeof roles)[number];

export interface TokenEntry {
  name: string;
  role: Role;
  sha256Hex: string;
}

export class TokenFormatError extends Error {}

const entryPattern = /^(\S+)\s+(\S+)\s+sha256:([0-9a-f]{64})$/;

/** Parses tokens-file text; `source` names where it came from in errors (file path or variable). */
export function parseTokenEntries(text: string, source: string): TokenEntry[] {
  const entries: TokenEntry[] = [];
  const lines = text.split(/\r?\n|,/);
  lines.forEach((raw, index) => {
    const line = raw.trim();
    if (line.length === 0 || line.startsWith('#')) return;
    const match = entryPattern.exec(line);
    if (!match) throw new TokenFormatError(`${source}, entry ${index + 1}: expected "<name> <role> sha256:<64 lowercase hex digits>"`);
    const [, name, role, sha256Hex] = match;
    if (!(roles as readonly string[]).includes(role)) throw new TokenFormatError(`${source}, entry ${index + 1}: role must be one of ${roles.join(', ')}, got "${role}"`);
    entries.push({ name, role: role as Role, sha256Hex });
  });
  return entries;
}

export function newToken(): string {
  return `tdm_${randomBytes(32).toString('base64url')}`;
}

export function tokenHashOf(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

export function tokenEntryLine(name: string, role: Role, token: string): string {
  return `${name} ${role} sha256:${tokenHashOf(token)}`;
}

export function roleAllows(held: Role, needed: Role): boolean {
  return roles.indexOf(held) >= roles.indexOf(needed);
}

export class TokenBook {
  private readonly byHash = new Map<string, TokenEntry>();

  constructor(entries: readonly TokenEntry[]) {
    for (const entry of entries) this.byHash.set(entry.sha256Hex, entry);
  }

  get size(): number {
    return this.byHash.size;
  }

  /** The entry the token belongs to, or null. */
  entryOf(token: string): TokenEntry | null {
    const hashHex = tokenHashOf(token);
    const entry = this.byHash.get(hashHex);
    // The map lookup is on a hash the caller cannot steer; the final compare is constant-time anyway.
    if (!entry || !timingSafeEqual(Buffer.from(entry.sha256Hex, 'hex'), Buffer.from(hashHex, 'hex'))) return null;
    return entry;
  }
}

/**
 * What a route needs. Health and the console's static files stay open; looking needs `read`; forcing a
 * transaction to an end needs `admin`; every other write needs `client`.
 */
export function requiredRoleOf(method: string, path: string): Role | null {
  if (path === '/healthz') return null;
  // The console's page and modules hold no data (every read they make is an API call with the
  // token the operator types in); a browser cannot send a bearer token when it navigates.
  if (path === '/ui' || path.startsWith('/ui/')) return null;
  if (/\/force-?stop$/i.test(path)) return 'admin';
  if (method === 'GET' || method === 'HEAD' || method === 'OPTIONS') return 'read';
  return 'client';
}

/** The token a request carries: `Authorization: Bearer <token>`. */
export function bearerTokenOf(authorization: string | undefined): string | null {
  if (authorization === undefined) return null;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
  return match ? match[1] : null;
}

/** Loopback names and addresses; anything else can be reached from another machine. */
export function isLoopbackHost(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, '');
  if (bare === 'localhost') return true;
  if (isIP(bare) === 4) return bare.startsWith('127.');
  if (isIP(bare) === 6) return bare === '::1' || /^::ffff:127\./i.test(bare);
  return false;
}

export type AuthVerdict = { allowed: true; entry: TokenEntry | null } | { allowed: false; status: 401 | 403; detail: string };

export function authorize(book: TokenBook, method: string, path: string, authorization: string | undefined): AuthVerdict {
  const needed = requiredRoleOf(method, path);
  if (needed === null) return { allowed: true, entry: null };
  const token = bearerTokenOf(authorization);
  if (token === null) return { allowed: false, status: 401, detail: 'this coordinator needs an API token: send "Authorization: Bearer <token>"' };
  const entry = book.entryOf(token);
  if (!entry) return { allowed: false, status: 401, detail: 'the API token is not known to this coordinator' };
  if (!roleAllows(entry.role, needed)) {
    return { allowed: false, status: 403, detail: `token "${entry.name}" has role ${entry.role}; ${method} ${path} needs ${needed}` };
  }
  return { allowed: true, entry };
}
