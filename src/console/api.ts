// The console's only way to the coordinator: fetch on the same origin, with the API token the
// operator typed in (kept in sessionStorage, so it goes when the tab closes).
const tokenKey = 'tandem.token';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly problem: Record<string, unknown> | null,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

type Listener = () => void;
const unauthorizedListeners = new Set<Listener>();

export function onUnauthorized(listener: Listener): () => void {
  unauthorizedListeners.add(listener);
  return () => unauthorizedListeners.delete(listener);
}

export function token(): string | null {
  return sessionStorage.getItem(tokenKey);
}

export function setToken(value: string | null): void {
  if (value === null || value.trim() === '') sessionStorage.removeItem(tokenKey);
  else sessionStorage.setItem(tokenKey, value.trim());
}

async function request(path: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  const bearer = token();
  if (bearer) headers.set('authorization', `Bearer ${bearer}`);
  if (init.body !== undefined) headers.set('content-type', 'application/json');
  const response = await fetch(path, { ...init, headers });
  if (response.status === 401) for (const listener of unauthorizedListeners) listener();
  if (!response.ok) {
    const text = await response.text();
    let problem: Record<string, unknown> | null = null;
    try {
      problem = JSON.parse(text) as Record<string, unknown>;
    } catch {
      problem = null;
    }
    const detail = problem && typeof problem.detail === 'string' ? problem.detail : text || response.statusText;
    throw new ApiError(response.status, `${response.status}: ${detail}`, problem);
  }
  return response;
}

export async function getJson<T>(path: string): Promise<T> {
  return (await (await request(path)).json()) as T;
}

export async function postJson<T>(path: string, body: unknown): Promise<T> {
  return (await (await request(path, { method: 'POST', body: JSON.stringify(body) })).json()) as T;
}

export async function getText(path: string): Promise<string> {
  return (await request(path)).text();
}

/** A query string from the defined, non-empty values. */
export function query(params: Record<string, string | number | undefined | null>): string {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) if (value !== undefined && value !== null && value !== '') search.set(name, String(value));
  const text = search.toString();
  return text ? `?${text}` : '';
}
