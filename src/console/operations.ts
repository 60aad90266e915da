// Stuck transactions by branch URL, and the audit log of operator actions.
import { useState } from 'preact/hooks';
import { getJson, query } from './api.js';
import { html } from './html.js';
import { ago, ErrorLine, excerpt, Status, txHref, usePoll } from './util.js';

interface StuckAnswer {
  thresholds: { retryingForMs: number; abortingForMs: number; attemptsMin: number };
  scanned: number;
  complete: boolean;
  transactions: number;
  groups: Array<{
    url: string;
    count: number;
    ops: Array<{ gid: string; mode: string; status: string; phase: string; kinds: string[]; since: string; nextAttemptAt: string | null; branchId: string; op: string; attempts: number; lastError?: string }>;
  }>;
}

export function StuckPage() {
  const [retryingS, setRetryingS] = useState('60');
  const [abortingS, setAbortingS] = useState('60');
  const [attemptsMin, setAttemptsMin] = useState('5');
  const seconds = (text: string) => (text.trim() === '' ? undefined : Math.round(Number(text) * 1000));
  const stuck = usePoll(
    () => getJson<StuckAnswer>(`/v1/stuck${query({ retryingForMs: seconds(retryingS), abortingForMs: seconds(abortingS), attemptsMin })}`),
    5000,
    [retryingS, abortingS, attemptsMin],
  );
  const input = (value: string, set: (text: string) => void, id: string) =>
    html`<input id=${id} type="number" min="0" value=${value} onChange=${(event: Event) => set((event.target as HTMLInputElement).value)} style="width:7em" />`;
  const s = stuck.data;
  return html`<h1>Stuck transactions</h1>
    <div class="card row">
      <label>Retrying longer than (s)${input(retryingS, setRetryingS, 'stuck-retrying')}</label>
      <label>Aborting longer than (s)${input(abortingS, setAbortingS, 'stuck-aborting')}</label>
      <label>Or failed calls at least${input(attemptsMin, setAttemptsMin, 'stuck-attempts')}</label>
      <span class="muted">${s ? `${s.transactions} stuck of ${s.scanned} unfinished read${s.complete ? '' : ' (stopped at stuckScanMax: newest first)'}` : ''}</span>
    </div>
    <${ErrorLine} error=${stuck.error} />
    ${s && s.groups.length === 0 ? html`<p class="card muted" id="stuck-none">Nothing is stuck.</p>` : null}
    ${(s?.groups ?? []).map(
      (group) => html`<div class="card stuck-group">
        <h2 class="mono">${group.url} <span class="muted">(${group.count})</span></h2>
        <table><thead><tr><th>gid</th><th>why</th><th>status</th><th>op</th><th>attempts</th><th>since</th><th>next attempt</th><th>last error</th></tr></thead>
        <tbody>${group.ops.map((op) => html`<tr>
          <td class="mono"><a href=${txHref(op.gid)}>${op.gid}</a></td><td>${op.kinds.join(', ')}</td><td><${Status} status=${op.status} /> ${op.phase}</td>
          <td>${op.branchId}/${op.op}</td><td>${op.attempts}</td><td>${ago(op.since)}</td><td>${ago(op.nextAttemptAt)}</td><td class="excerpt mono">${excerpt(op.lastError, 160)}</td></tr>`)}</tbody></table>
      </div>`,
    )}`;
}

interface AuditAnswer {
  items: Array<{ seq: number; at: string; actor: string | null; remoteAddress: string; action: string; gid: string; reason: string; compensate?: boolean; outcome: string; detail: string }>;
  nextBefore: number | null;
  file: boolean;
}

export function AuditPage() {
  const [before, setBefore] = useState<number | undefined>(undefined);
  const audit = usePoll(() => getJson<AuditAnswer>(`/v1/audit${query({ limit: 50, before })}`), before === undefined ? 5000 : 0, [before]);
  const a = audit.data;
  return html`<h1>Audit log</h1>
    <p class="muted">${a ? (a.file ? 'Kept in memory (the newest auditEntriesMax) and appended to the audit file.' : 'Kept in memory only (the newest auditEntriesMax): start the coordinator with --audit-log to keep a file.') : ''}</p>
    <${ErrorLine} error=${audit.error} />
    <div class="card"><table id="audit-table">
      <thead><tr><th>#</th><th>when</th><th>who</th><th>action</th><th>gid</th><th>reason</th><th>outcome</th></tr></thead>
      <tbody>${(a?.items ?? []).map((entry) => html`<tr>
        <td>${entry.seq}</td><td title=${entry.at}>${new Date(entry.at).toLocaleString()}</td><td>${entry.actor ?? html`<span class="muted">auth off</span>`} <span class="muted">${entry.remoteAddress}</span></td>
        <td>${entry.action}${entry.compensate ? ' (compensate)' : ''}</td><td class="mono"><a href=${txHref(entry.gid)}>${entry.gid}</a></td><td>${entry.reason}</td><td>${entry.outcome}: ${entry.detail}</td></tr>`)}</tbody>
    </table>
    <div class="pager"><button disabled=${before === undefined} onClick=${() => setBefore(undefined)}>Newest</button><button disabled=${!a?.nextBefore} onClick=${() => a?.nextBefore && setBefore(a.nextBefore)}>Older →</button></div>
    </div>`;
}
