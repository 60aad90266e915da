export * from './client.js';
export * from './registry.js';
export type * from '../shared/views.js';
export { classifyAnswer, ops, branchQuery, branchHeaders } from '../shared/protocol.js';
