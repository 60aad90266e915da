// The public messaging surface: broker publishers, topology helpers, inboxes and consumers.
export * from './types.js';
export * from './rabbitmq.js';
export * from './jetstream.js';
export * from './inbox/index.js';
export * from './consumers.js';
export * from './outbox/index.js';
