// DTM-compatible API under /api/dtmsvr (filled in by the DTM compatibility work).
import type { FastifyInstance } from 'fastify';
import type { ApiDeps } from './native-api.js';
import { newGid } from './native-api.js';

export function registerDtmApi(app: FastifyInstance, _deps: ApiDeps): void {
  app.get('/api/dtmsvr/newGid', async () => ({ gid: newGid(), dtm_result: 'SUCCESS' }));
}
