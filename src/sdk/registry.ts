// Registers a participant instance with the coordinator's service registry and keeps it
// alive: a heartbeat (the same registration again) every third of its TTL. Branch URLs may
// then name the service (http://inventory/reserve) and the coordinator picks a live instance.
import { randomBytes } from 'node:crypto';
import { TandemClient } from './client.js';

export interface InstanceRegistrationOptions {
  /** The coordinator, e.g. http://127.0.0.1:8636 */
  coordinatorUrl: string;
  /** Service name: a DNS label such as `inventory`. */
  service: string;
  /** This instance's base URL, e.g. http://10.0.0.5:8081 */
  url: string;
  instanceId?: string;
  weight?: number;
  /** Gone from the registry this long after the last heartbeat (default 10 s). */
  ttlMs?: number;
  /** Told about failed heartbeats; the next one is tried anyway. */
  onError?: (error: unknown) => void;
  /** API token, sent as `Authorization: Bearer <token>`. */
  token?: string;
}

export interface InstanceRegistration {
  readonly instanceId: string;
  /** Stops heartbeating and removes the instance from the registry. */
  stop(): Promise<void>;
}

export async function registerInstance(options: InstanceRegistrationOptions): Promise<InstanceRegistration> {
  const client = new TandemClient({ url: options.coordinatorUrl, requestTimeoutMs: 5000, token: options.token });
  const instanceId = options.instanceId ?? randomBytes(6).toString('hex');
  const ttlMs = options.ttlMs ?? 10_000;
  const path = `/v1/services/${encodeURIComponent(options.service)}/instances`;
  const body = { instanceId, url: options.url, ttlMs, ...(options.weight ? { weight: options.weight } : {}) };
  await client.call('POST', path, body);
  const timer = setInterval(() => {
    client.call('POST', path, body).catch((error: unknown) => options.onError?.(error));
  }, Math.max(100, Math.floor(ttlMs / 3)));
  timer.unref();
  return {
    instanceId,
    async stop() {
      clearInterval(timer);
      await client.call('DELETE', `${path}/${encodeURIComponent(instanceId)}`).catch(() => undefined);
    },
  };
}
