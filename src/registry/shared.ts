// The service registry on a shared store (PostgreSQL, Redis): registrations are written to the
// store with their TTL counted on the store's clock, so every coordinator resolves
// http://inventory/... to the same live instances and a restarted coordinator forgets nothing.
// Each coordinator keeps a copy (the ServiceRegistry it resolves branch URLs from, with no
// store round trip per call), reloaded from the store every `registrySyncMs` and right after
// each of its own writes. Outlier ejection stays in that copy: each coordinator ejects the
// instances that fail its own calls, because one coordinator's network trouble with an
// instance says nothing about another's.
import { RegistryFullError, type Registration, type ServiceRegistry } from './registry.js';

export interface StoredRegistration extends Omit<Registration, 'expiresAtMs'> {
  /** What is left of the TTL by the store's clock. */
  ttlRemainingMs: number;
}

export interface RegistryLimitsShared {
  servicesMax: number;
  instancesPerServiceMax: number;
}

export type RegisterResult = { ok: true; registration: StoredRegistration } | { ok: false; full: 'services' | 'instances' };

export interface RegistryStore {
  /** Writes (or refreshes) a registration expiring `ttlMs` from the store's now, within the limits. */
  register(input: Omit<Registration, 'expiresAtMs'>, limits: RegistryLimitsShared): Promise<RegisterResult>;
  deregister(service: string, instanceId: string): Promise<boolean>;
  /** Every live registration, by the store's clock. */
  list(): Promise<StoredRegistration[]>;
  close(): Promise<void>;
}

/** What the registry routes need; the in-memory registry and the shared one both give it. */
export interface RegistryApi {
  register(input: Omit<Registration, 'expiresAtMs'>): Promise<Registration>;
  deregister(service: string, instanceId: string): Promise<boolean>;
  list(): Promise<Record<string, Registration[]>>;
  instancesOf(service: string): Promise<Registration[]>;
}

/** The coordinator-local registry behind the same routes (SQLite stores). */
export function localRegistryApi(registry: ServiceRegistry): RegistryApi {
  return {
    register: async (input) => registry.register(input),
    deregister: async (service, instanceId) => registry.deregister(service, instanceId),
    list: async () => registry.list(),
    instancesOf: async (service) => registry.instancesOf(service),
  };
}

export interface SharedRegistryOptions {
  store: RegistryStore;
  /** The copy branch calls resolve from. */
  local: ServiceRegistry;
  limits: RegistryLimitsShared & { registrySyncMs: number };
  onError?: (error: unknown, context: string) => void;
}

export class SharedRegistry implements RegistryApi {
  private timer: NodeJS.Timeout | null = null;
  private closed = false;

  private constructor(private readonly options: SharedRegistryOptions) {}

  /** Loads the store's registrations before answering anything, then keeps the copy fresh. */
  static async open(options: SharedRegistryOptions): Promise<SharedRegistry> {
    const shared = new SharedRegistry(options);
    await shared.sync();
    shared.timer = setInterval(() => {
      shared.sync().catch((error: unknown) => options.onError?.(error, 'reloading the service registry from the store failed; resolving from the last copy'));
    }, options.limits.registrySyncMs);
    shared.timer.unref();
    return shared;
  }

  async register(input: Omit<Registration, 'expiresAtMs'>): Promise<Registration> {
    const result = await this.options.store.register(input, this.options.limits);
    if (!result.ok) {
      throw new RegistryFullError(
        result.full === 'services'
          ? `the registry holds servicesMax (${this.options.limits.servicesMax}) services`
          : `service ${input.service} has instancesPerServiceMax (${this.options.limits.instancesPerServiceMax}) instances`,
      );
    }
    await this.sync();
    const { ttlRemainingMs, ...registration } = result.registration;
    return { ...registration, expiresAtMs: Date.now() + ttlRemainingMs };
  }

  async deregister(service: string, instanceId: string): Promise<boolean> {
    const removed = await this.options.store.deregister(service, instanceId);
    await this.sync();
    return removed;
  }

  async list(): Promise<Record<string, Registration[]>> {
    await this.sync();
    return this.options.local.list();
  }

  async instancesOf(service: string): Promise<Registration[]> {
    await this.sync();
    return this.options.local.instancesOf(service);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    await this.options.store.close();
  }

  private async sync(): Promise<void> {
    if (this.closed) return;
    this.options.local.sync(await this.options.store.list());
  }
}
