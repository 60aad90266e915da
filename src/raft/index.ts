// The pure Raft core: see docs/raft.md.
export * from './types.js';
export { RaftNode, type ProposeResult, type ReadRequestResult, type Refusal, type RaftMutations } from './node.js';
export { RaftLog } from './log.js';
export { Progress, type ProgressState } from './progress.js';
