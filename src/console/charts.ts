// Charts of throughput, branch-call latency and retries from the coordinator's own /metrics,
// scraped by the browser every few seconds; rates are differences between two scrapes.
import { useEffect, useState } from 'preact/hooks';
import { getText } from './api.js';
import { html } from './html.js';
import { buckets, parsePrometheus, quantileBetween, total, type Sample } from './prometheus.js';
import { ErrorLine } from './util.js';

const sampleEveryMs = 2000;
/** Points kept per chart: three minutes at one scrape every two seconds. */
const pointsMax = 90;

interface Scrape {
  atMs: number;
  ended: number;
  failed: number;
  calls: number;
  callSeconds: number;
  retries: number;
  latencyBuckets: Array<{ le: number; count: number }>;
}

interface Point {
  atMs: number;
  endedPerS: number;
  failedPerS: number;
  callsPerS: number;
  meanCallMs: number | null;
  p95CallMs: number | null;
  retriesPerS: number;
}

function scrapeOf(samples: Sample[], atMs: number): Scrape {
  return {
    atMs,
    ended: total(samples, 'tandem_transactions_ended_total'),
    failed: total(samples, 'tandem_transactions_ended_total', { outcome: 'failed' }),
    calls: total(samples, 'tandem_branch_call_duration_seconds_count'),
    callSeconds: total(samples, 'tandem_branch_call_duration_seconds_sum'),
    retries: total(samples, 'tandem_retries_scheduled_total'),
    latencyBuckets: buckets(samples, 'tandem_branch_call_duration_seconds'),
  };
}

export function pointBetween(before: Scrape, after: Scrape): Point {
  const seconds = Math.max(0.001, (after.atMs - before.atMs) / 1000);
  const calls = after.calls - before.calls;
  const p95 = quantileBetween(before.latencyBuckets, after.latencyBuckets, 0.95);
  return {
    atMs: after.atMs,
    endedPerS: (after.ended - before.ended) / seconds,
    failedPerS: (after.failed - before.failed) / seconds,
    callsPerS: calls / seconds,
    meanCallMs: calls > 0 ? ((after.callSeconds - before.callSeconds) / calls) * 1000 : null,
    p95CallMs: p95 === null ? null : p95 * 1000,
    retriesPerS: (after.retries - before.retries) / seconds,
  };
}

function Chart({ title, unit, points, value }: { title: string; unit: string; points: Point[]; value: (point: Point) => number | null }) {
  const width = 400;
  const height = 160;
  const values = points.map(value);
  const known = values.filter((v): v is number => v !== null && Number.isFinite(v));
  const max = Math.max(1e-9, ...known);
  const top = known.length > 0 ? max * 1.1 : 1;
  const x = (index: number) => 30 + ((width - 40) * index) / Math.max(1, pointsMax - 1);
  const y = (v: number) => height - 18 - ((height - 30) * v) / top;
  const line = values.map((v, index) => (v === null ? null : `${x(index).toFixed(1)},${y(v).toFixed(1)}`)).filter((p) => p !== null).join(' ');
  const last = known.length > 0 ? values[values.length - 1] : null;
  return html`<div class="card"><b>${title}</b> <span class="muted">${last === null || last === undefined ? 'no data yet' : `${last.toFixed(last < 10 ? 2 : 0)} ${unit}`}</span>
    <svg class="chart" viewBox=${`0 0 ${width} ${height}`} preserveAspectRatio="none" role="img" aria-label=${title}>
      <text x="2" y="12">${top.toFixed(top < 10 ? 2 : 0)}</text><text x="2" y=${height - 20}>0</text>
      <line x1="30" x2=${width - 10} y1=${height - 18} y2=${height - 18} stroke="#d9dee7" />
      <polyline points=${line} />
      ${values.map((v, index) => (v === null ? null : html`<circle cx=${x(index).toFixed(1)} cy=${y(v).toFixed(1)} r="2" fill="#2f5bd3" />`))}
      <text x=${width - 90} y=${height - 4}>last ${Math.round((pointsMax * sampleEveryMs) / 60000)} min</text>
    </svg></div>`;
}

export function ChartsPage() {
  const [points, setPoints] = useState<Point[]>([]);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    let previous: Scrape | null = null;
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const scrape = async () => {
      try {
        const current = scrapeOf(parsePrometheus(await getText('/metrics')), Date.now());
        if (previous && !stopped) {
          const point = pointBetween(previous, current);
          setPoints((list) => [...list, point].slice(-pointsMax));
        }
        previous = current;
        setError(null);
      } catch (failure) {
        setError(failure instanceof Error ? failure.message : String(failure));
      }
      if (!stopped) timer = setTimeout(() => void scrape(), sampleEveryMs);
    };
    void scrape();
    return () => {
      stopped = true;
      if (timer) clearTimeout(timer);
    };
  }, []);
  return html`<h1>Charts</h1>
    <p class="muted">From this coordinator's /metrics, sampled every ${sampleEveryMs / 1000} s while this page is open.</p>
    <${ErrorLine} error=${error} />
    <div class="charts" id="charts">
      <${Chart} title="Transactions ended" unit="/s" points=${points} value=${(p: Point) => p.endedPerS} />
      <${Chart} title="Transactions failed" unit="/s" points=${points} value=${(p: Point) => p.failedPerS} />
      <${Chart} title="Branch calls" unit="/s" points=${points} value=${(p: Point) => p.callsPerS} />
      <${Chart} title="Branch call latency, mean" unit="ms" points=${points} value=${(p: Point) => p.meanCallMs} />
      <${Chart} title="Branch call latency, p95" unit="ms" points=${points} value=${(p: Point) => p.p95CallMs} />
      <${Chart} title="Retries scheduled" unit="/s" points=${points} value=${(p: Point) => p.retriesPerS} />
    </div>`;
}
