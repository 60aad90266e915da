// tandem/balance: client-side load balancing for calls to replicated services.
//
// - Balancers: RoundRobinBalancer, RandomBalancer, SmoothWeightedRoundRobinBalancer (nginx),
//   LeastRequestBalancer (power of two choices), HashBalancer (ring or Maglev key affinity).
// - OutlierDetector: passive ejection after consecutive failures (Envoy semantics).
// - HealthChecker: active HTTP health checks.
// - RetryBudget: retries limited to a share of active requests.
// - FailoverClient: undici requests that fail over on connection errors and 5xx, feeding the
//   balancer and the outlier detector.

export {
  HashBalancer,
  LeastRequestBalancer,
  RandomBalancer,
  RoundRobinBalancer,
  SmoothWeightedRoundRobinBalancer,
  type Balancer,
  type BalancerOptions,
  type HashAlgorithm,
  type HashBalancerOptions,
  type Instance,
} from './balancers.js';
export { systemClock, type Clock, type TimerHandle } from './clock.js';
export { OutlierDetector, type OutlierDetectorEvents, type OutlierDetectorOptions, type OutlierEjection } from './outlier.js';
export { HealthChecker, type HealthCheckerEvents, type HealthCheckerOptions } from './health.js';
export { RetryBudget, type RetryBudgetOptions } from './retry-budget.js';
export {
  FailoverClient,
  FailoverError,
  NoInstanceAvailableError,
  type AttemptRecord,
  type FailoverOptions,
  type FailoverRequest,
  type FailoverResponse,
} from './failover.js';
