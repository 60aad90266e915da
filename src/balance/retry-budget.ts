// Retry budget, after Envoy's: retries in flight may not exceed
// max(minRetryConcurrency, budgetPercent% of active requests). Unlike a fixed retry count per
// request, the budget scales with traffic and stops retry storms: when most requests fail, most
// retries are refused instead of multiplying the load on an already failing backend.
//
// "Active requests" counts logical requests in progress (from requestStarted to
// requestFinished), each once however many attempts it makes. Defaults: 20%, at least 3.

export interface RetryBudgetOptions {
  readonly budgetPercent?: number;
  readonly minRetryConcurrency?: number;
}

export class RetryBudget {
  readonly budgetPercent: number;
  readonly minRetryConcurrency: number;
  private active = 0;
  private retrying = 0;

  constructor(options: RetryBudgetOptions = {}) {
    this.budgetPercent = options.budgetPercent ?? 20;
    this.minRetryConcurrency = options.minRetryConcurrency ?? 3;
    if (!(this.budgetPercent >= 0)) throw new RangeError('retry budget: budgetPercent must be ≥ 0');
    if (!(this.minRetryConcurrency >= 0)) throw new RangeError('retry budget: minRetryConcurrency must be ≥ 0');
  }

  get activeRequests(): number {
    return this.active;
  }

  get activeRetries(): number {
    return this.retrying;
  }

  /** How many retries may be in flight right now. */
  get limit(): number {
    return Math.max(this.minRetryConcurrency, Math.floor((this.budgetPercent * this.active) / 100));
  }

  requestStarted(): void {
    this.active += 1;
  }

  requestFinished(): void {
    if (this.active > 0) this.active -= 1;
  }

  /** Takes a retry slot if the budget allows; pair a true answer with retryFinished(). */
  tryAcquireRetry(): boolean {
    if (this.retrying >= this.limit) return false;
    this.retrying += 1;
    return true;
  }

  retryFinished(): void {
    if (this.retrying > 0) this.retrying -= 1;
  }
}
