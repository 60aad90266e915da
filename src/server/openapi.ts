import type { Limits } from '../config.js';

export function openApiDocument(_limits: Limits): Record<string, unknown> {
  return { openapi: '3.1.0', info: { title: 'Tandem coordinator', version: '0.1.0' }, paths: {} };
}
