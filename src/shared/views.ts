// The JSON shapes the native API answers with; the SDK and the CLI read them.

export type TxMode = 'saga' | 'tcc' | '2pc' | '3pc' | 'xa' | 'msg' | 'workflow';
export type TxStatus = 'prepared' | 'submitted' | 'aborting' | 'succeeded' | 'failed';

export interface OpView {
  url: string;
  status: 'pending' | 'succeeded' | 'failed';
  attempts: number;
  lastError?: string;
}

export interface BranchView {
  branchId: string;
  payload?: unknown;
  dependsOn?: string[];
  ops: Record<string, OpView>;
}

export interface TxView {
  gid: string;
  mode: TxMode;
  status: TxStatus;
  phase: string;
  reason?: string;
  createdAt: string;
  updatedAt: string;
  nextAttemptAt: string | null;
  options: {
    timeoutToFailMs: number;
    requestTimeoutMs: number;
    retryIntervalMs: number;
    retryIntervalMsMax: number;
    retryLimit: number | null;
    /** Names of the headers sent on every branch call; their values are never shown. */
    branchHeaderNames: string[];
    concurrent: boolean;
  };
  branches: BranchView[];
  history?: Array<{ at: string; status: TxStatus; phase: string; reason?: string }>;
}

export interface TxSummaryView {
  gid: string;
  mode: TxMode;
  status: TxStatus;
  phase: string;
  createdAt: string;
  updatedAt: string;
  nextAttemptAt: string | null;
  branchCount: number;
}

export interface TxListView {
  items: TxSummaryView[];
  nextCursor: string | null;
}
