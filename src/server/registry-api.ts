// Service registry routes: instances register (and heartbeat by registering again) under a
// service name with a TTL; branch URLs may then name the service instead of a host.
import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { Limits } from '../config.js';
import { RegistryFullError, serviceNamePattern } from '../registry/registry.js';
import type { RegistryApi } from '../registry/shared.js';
import { notFound, unavailable } from './problem.js';
import { branchIdSchema, httpUrlSchema, parseOrThrow } from './validation.js';

export function registrySchemas(limits: Limits) {
  const service = z.string().regex(serviceNamePattern, 'must be a DNS label: a lowercase letter, then up to 62 lowercase letters, digits or -');
  const registration = z
    .object({
      instanceId: branchIdSchema(limits).optional(),
      url: httpUrlSchema(limits),
      weight: z.number().int('must be a whole number').min(1, 'must be at least 1').max(1000, 'at most 1000').optional(),
      ttlMs: z
        .number()
        .int('must be a whole number')
        .min(limits.registrationTtlMsMin, `at least ${limits.registrationTtlMsMin} (registrationTtlMsMin)`)
        .max(limits.registrationTtlMsMax, `at most ${limits.registrationTtlMsMax} (registrationTtlMsMax)`),
    })
    .strict();
  return { service, registration };
}

export function registerRegistryApi(app: FastifyInstance, registry: RegistryApi, limits: Limits): void {
  const { service, registration } = registrySchemas(limits);

  app.get('/v1/services', async () => ({ services: await registry.list() }));

  app.get<{ Params: { service: string } }>('/v1/services/:service', async (request) => {
    const name = parseOrThrow(service, request.params.service, ['service']);
    const instances = await registry.instancesOf(name);
    if (instances.length === 0) throw notFound(`no live instance of service ${name}`);
    return { service: name, instances };
  });

  app.post<{ Params: { service: string } }>('/v1/services/:service/instances', async (request) => {
    const name = parseOrThrow(service, request.params.service, ['service']);
    const body = parseOrThrow(registration, request.body ?? {});
    try {
      return await registry.register({
        service: name,
        instanceId: body.instanceId ?? randomBytes(6).toString('hex'),
        url: body.url.replace(/\/+$/, ''),
        weight: body.weight ?? 1,
        ttlMs: body.ttlMs,
      });
    } catch (error) {
      if (error instanceof RegistryFullError) throw unavailable(error.message);
      throw error;
    }
  });

  app.delete<{ Params: { service: string; instanceId: string } }>('/v1/services/:service/instances/:instanceId', async (request, reply) => {
    const name = parseOrThrow(service, request.params.service, ['service']);
    if (!(await registry.deregister(name, request.params.instanceId))) throw notFound(`service ${name} has no instance ${request.params.instanceId}`);
    return reply.code(204).send();
  });
}
