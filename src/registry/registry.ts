// The coordinator's service registry: instances of a participant service register under a
// name with a TTL and heartbeat by registering again. A branch URL may then name the service
// instead of a host (http://inventory/reserve); the branch caller resolves it here at call
// time, through a round-robin balancer that skips instances ejected after consecutive failures.
//
// On SQLite, registrations are soft state kept in the coordinator's memory: a restarted
// coordinator knows every live instance again within one heartbeat interval of each. On a
// shared store (PostgreSQL, Redis) the store holds them (see shared.ts) and this registry is
// each coordinator's copy, replaced from the store by `sync`; outlier ejection stays local.
import { OutlierDetector, RoundRobinBalancer, type Instance } from '../balance/index.js';

export interface RegistryLimits {
  servicesMax: number;
  instancesPerServiceMax: number;
  registrationTtlMsMin: number;
  registrationTtlMsMax: number;
}

export interface Registration {
  service: string;
  instanceId: string;
  url: string;
  weight: number;
  ttlMs: number;
  expiresAtMs: number;
}

export class RegistryFullError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RegistryFullError';
  }
}

interface ServiceEntry {
  registrations: Map<string, Registration>;
  balancer: RoundRobinBalancer<Instance>;
  outliers: OutlierDetector;
}

/** A service name is a DNS label: it stands where a host name would in a branch URL. */
export const serviceNamePattern = /^[a-z][a-z0-9-]{0,62}$/;

export class ServiceRegistry {
  private readonly services = new Map<string, ServiceEntry>();

  constructor(
    private readonly limits: RegistryLimits,
    /**
     * Registrations live in this process only, so only this process's clock judges them: a
     * monotonic one (epoch-based at start), so a wall-clock step cannot expire them all at once.
     */
    private readonly nowMs: () => number = () => performance.timeOrigin + performance.now(),
  ) {}

  /** Registers or refreshes an instance; a refresh keeps its place and outlier state. */
  register(input: Omit<Registration, 'expiresAtMs'>): Registration {
    const entry = this.services.get(input.service) ?? this.newEntry(input.service);
    if (!entry.registrations.has(input.instanceId) && this.live(entry).length >= this.limits.instancesPerServiceMax) {
      throw new RegistryFullError(`service ${input.service} has instancesPerServiceMax (${this.limits.instancesPerServiceMax}) instances`);
    }
    const registration = { ...input, expiresAtMs: this.nowMs() + input.ttlMs };
    const known = entry.registrations.get(input.instanceId);
    entry.registrations.set(input.instanceId, registration);
    if (!known || known.url !== input.url || known.weight !== input.weight) this.refresh(entry);
    return registration;
  }

  deregister(service: string, instanceId: string): boolean {
    const entry = this.services.get(service);
    if (!entry || !entry.registrations.delete(instanceId)) return false;
    this.refresh(entry);
    return true;
  }

  /** Live registrations by service. */
  list(): Record<string, Registration[]> {
    const out: Record<string, Registration[]> = {};
    for (const [name, entry] of this.services) {
      const live = this.live(entry);
      if (live.length > 0) out[name] = live;
    }
    return out;
  }

  instancesOf(service: string): Registration[] {
    const entry = this.services.get(service);
    return entry ? this.live(entry) : [];
  }

  has(service: string): boolean {
    return this.instancesOf(service).length > 0;
  }

  /** The next instance for a call, skipping `exclude`d and ejected ones; undefined if none. */
  pick(service: string, exclude?: ReadonlySet<string>): Registration | undefined {
    const entry = this.services.get(service);
    if (!entry) return undefined;
    this.dropExpired(entry);
    const instance = entry.balancer.pick(undefined, exclude);
    return instance ? entry.registrations.get(instance.id) : undefined;
  }

  /** Feeds a call's outcome to outlier ejection: consecutive failures take an instance out. */
  report(service: string, instanceId: string, ok: boolean): void {
    const entry = this.services.get(service);
    if (!entry || !entry.registrations.has(instanceId)) return;
    entry.outliers.onResult(instanceId, ok);
  }

  /**
   * Replaces every registration with `live` (the store's view), keeping each instance's place
   * and outlier state when its address is unchanged. `ttlRemainingMs` is by the store's clock.
   */
  sync(live: Array<Omit<Registration, 'expiresAtMs'> & { ttlRemainingMs: number }>): void {
    const nowMs = this.nowMs();
    const byService = new Map<string, typeof live>();
    for (const registration of live) {
      const list = byService.get(registration.service) ?? [];
      list.push(registration);
      byService.set(registration.service, list);
    }
    for (const [name, entry] of this.services) {
      if (byService.has(name)) continue;
      if (entry.registrations.size > 0) {
        entry.registrations.clear();
        this.refresh(entry);
      }
    }
    for (const [name, registrations] of byService) {
      const entry = this.services.get(name) ?? this.newEntry(name);
      let changed = entry.registrations.size !== registrations.length;
      const next = new Map<string, Registration>();
      for (const { ttlRemainingMs, ...registration } of registrations) {
        const known = entry.registrations.get(registration.instanceId);
        if (!known || known.url !== registration.url || known.weight !== registration.weight) changed = true;
        next.set(registration.instanceId, { ...registration, expiresAtMs: nowMs + ttlRemainingMs });
      }
      entry.registrations.clear();
      for (const [id, registration] of next) entry.registrations.set(id, registration);
      if (changed) this.refresh(entry);
    }
  }

  close(): void {
    for (const entry of this.services.values()) entry.outliers.close();
  }

  private newEntry(service: string): ServiceEntry {
    if (this.services.size >= this.limits.servicesMax) {
      for (const [name, entry] of this.services) if (this.live(entry).length === 0) this.services.delete(name);
      if (this.services.size >= this.limits.servicesMax) throw new RegistryFullError(`the registry holds servicesMax (${this.limits.servicesMax}) services`);
    }
    const outliers = new OutlierDetector([], { consecutiveFailures: 3, baseEjectionTimeMs: 10_000, maxEjectionTimeMs: 120_000, maxEjectionPercent: 50 });
    const balancer = new RoundRobinBalancer<Instance>([], { isAvailable: (instance) => !outliers.isEjected(instance.id) });
    const entry = { registrations: new Map<string, Registration>(), balancer, outliers };
    this.services.set(service, entry);
    return entry;
  }

  private live(entry: ServiceEntry): Registration[] {
    this.dropExpired(entry);
    return [...entry.registrations.values()];
  }

  private dropExpired(entry: ServiceEntry): void {
    const nowMs = this.nowMs();
    let dropped = false;
    for (const [id, registration] of entry.registrations) {
      if (registration.expiresAtMs <= nowMs) {
        entry.registrations.delete(id);
        dropped = true;
      }
    }
    if (dropped) this.refresh(entry);
  }

  private refresh(entry: ServiceEntry): void {
    const instances = [...entry.registrations.values()].map((registration) => ({ id: registration.instanceId, url: registration.url, weight: registration.weight }));
    entry.balancer.setInstances(instances);
    entry.outliers.setInstances(instances.map((instance) => instance.id));
  }
}
