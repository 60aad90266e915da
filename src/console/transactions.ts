// Transactions: the list (filtered by status, mode and gid; paged with the API's cursor, so it
// costs one index range read whatever the store holds) and one transaction with its timeline
// and the operator's actions.
import { useEffect, useRef, useState } from 'preact/hooks';
import { getJson, getText, postJson, query } from './api.js';
import { html } from './html.js';
import { parsePrometheus, total } from './prometheus.js';
import { ago, ErrorLine, excerpt, Status, txHref, usePoll } from './util.js';

const statuses = ['prepared', 'submitted', 'aborting', 'succeeded', 'failed'];
/** The age filter's choices: created at least this long ago. */
const ages: ReadonlyArray<[string, number]> = [['1 min', 60_000], ['10 min', 600_000], ['1 h', 3_600_000], ['1 day', 86_400_000], ['7 days', 604_800_000]];
const modes = ['saga', 'tcc', '2pc', '3pc', 'xa', 'msg'];
const pageSize = 50;
/** The first page and the counts refresh this often; later pages stay put while being read. */
const liveEveryMs = 3000;

interface Summary {
  gid: string;
  mode: string;
  status: string;
  phase: string;
  createdAt: string;
  updatedAt: string;
  nextAttemptAt: string | null;
  branchCount: number;
}

interface Op {
  url: string;
  status: string;
  attempts: number;
  lastError?: string;
}

interface TxDetail {
  gid: string;
  mode: string;
  status: string;
  phase: string;
  reason?: string;
  createdAt: string;
  updatedAt: string;
  nextAttemptAt: string | null;
  options: { retryLimit: number | null; requestTimeoutMs: number; timeoutToFailMs: number; branchHeaderNames: string[] };
  branches: Array<{ branchId: string; dependsOn?: string[]; ops: Record<string, Op> }>;
  history: Array<{ at: string; status: string; phase: string; reason?: string }>;
}

function LiveCounts() {
  const counts = usePoll(async () => {
    const [counts, metrics] = await Promise.all([
      getJson<{ unfinished: { prepared: number; submitted: number; aborting: number } | null; activeInThisCoordinator: number }>('/v1/transaction-counts'),
      getText('/metrics'),
    ]);
    const samples = parsePrometheus(metrics);
    return {
      unfinished: counts.unfinished,
      active: counts.activeInThisCoordinator,
      succeeded: total(samples, 'tandem_transactions_ended_total', { outcome: 'succeeded' }),
      failed: total(samples, 'tandem_transactions_ended_total', { outcome: 'failed' }),
      retries: total(samples, 'tandem_retries_scheduled_total'),
    };
  }, liveEveryMs, []);
  const c = counts.data;
  return html`<div class="card counts" id="live-counts">
    ${c?.unfinished
      ? html`<div><b>${c.unfinished.prepared}</b>prepared</div><div><b>${c.unfinished.submitted}</b>submitted</div><div><b>${c.unfinished.aborting}</b>aborting</div>`
      : null}
    <div><b>${c?.active ?? '…'}</b>being worked on here</div>
    <div><b>${c?.succeeded ?? '…'}</b>succeeded since start</div>
    <div><b>${c?.failed ?? '…'}</b>failed since start</div>
    <div><b>${c?.retries ?? '…'}</b>retries scheduled</div>
    <${ErrorLine} error=${counts.error} />
  </div>`;
}

export function TransactionsPage() {
  const [status, setStatus] = useState('');
  const [mode, setMode] = useState('');
  const [gid, setGid] = useState('');
  // Fixed when chosen, so the pages of one listing agree on where they start.
  const [createdBefore, setCreatedBefore] = useState<string | null>(null);
  const [gidError, setGidError] = useState<string | null>(null);
  // Cursors of the pages before this one; the last is this page's.
  const [cursors, setCursors] = useState<Array<string | null>>([null]);
  const cursor = cursors[cursors.length - 1];
  const list = usePoll(
    () => getJson<{ items: Summary[]; nextCursor: string | null }>(`/v1/transactions${query({ status, mode, limit: pageSize, cursor, createdBefore: cursor === null ? createdBefore : null })}`),
    cursor === null ? liveEveryMs : 0,
    [status, mode, cursor, createdBefore],
  );
  const filter = (set: (value: string) => void) => (event: Event) => {
    set((event.target as HTMLSelectElement).value);
    setCursors([null]);
  };
  const openGid = async (event: Event) => {
    event.preventDefault();
    const wanted = gid.trim();
    if (!wanted) return;
    try {
      await getJson(`/v1/transactions/${encodeURIComponent(wanted)}`);
      location.hash = txHref(wanted);
    } catch (error) {
      setGidError(error instanceof Error ? error.message : String(error));
    }
  };
  return html`<h1>Transactions</h1>
    <${LiveCounts} />
    <div class="card">
      <div class="row">
        <label>Status<select id="filter-status" value=${status} onChange=${filter(setStatus)}><option value="">any</option>${statuses.map((value) => html`<option value=${value}>${value}</option>`)}</select></label>
        <label>Mode<select id="filter-mode" value=${mode} onChange=${filter(setMode)}><option value="">any</option>${modes.map((value) => html`<option value=${value}>${value}</option>`)}</select></label>
        <label>Age<select id="filter-age" onChange=${(event: Event) => {
          const ms = Number((event.target as HTMLSelectElement).value);
          setCreatedBefore(ms > 0 ? new Date(Date.now() - ms).toISOString() : null);
          setCursors([null]);
        }}><option value="0">any</option>${ages.map(([label, ms]) => html`<option value=${ms}>older than ${label}</option>`)}</select></label>
        <form class="row" onSubmit=${openGid}>
          <label>Gid<input id="filter-gid" value=${gid} onInput=${(event: Event) => setGid((event.target as HTMLInputElement).value)} placeholder="exact gid" /></label>
          <button type="submit">Open</button>
        </form>
        <span class="muted">${cursor === null ? 'live: refreshes every 3 s' : `page ${cursors.length}`}</span>
      </div>
      <${ErrorLine} error=${gidError} />
    </div>
    <div class="card">
      <${ErrorLine} error=${list.error} />
      <table id="tx-table">
        <thead><tr><th>gid</th><th>mode</th><th>status</th><th>phase</th><th>created</th><th>updated</th><th>next attempt</th><th>branches</th></tr></thead>
        <tbody>
          ${(list.data?.items ?? []).map(
            (item) => html`<tr>
              <td class="mono"><a href=${txHref(item.gid)}>${item.gid}</a></td><td>${item.mode}</td><td><${Status} status=${item.status} /></td><td>${item.phase}</td>
              <td title=${item.createdAt}>${ago(item.createdAt)}</td><td title=${item.updatedAt}>${ago(item.updatedAt)}</td><td>${ago(item.nextAttemptAt)}</td><td>${item.branchCount}</td>
            </tr>`,
          )}
        </tbody>
      </table>
      ${list.data && list.data.items.length === 0 ? html`<p class="muted">No transactions match.</p>` : null}
      <div class="pager">
        <button disabled=${cursors.length <= 1} onClick=${() => setCursors(cursors.slice(0, -1))}>← Newer</button>
        <button disabled=${!list.data?.nextCursor} onClick=${() => list.data?.nextCursor && setCursors([...cursors, list.data.nextCursor])}>Older →</button>
      </div>
    </div>`;
}

type Action = { kind: 'force-stop' } | { kind: 'retry-now' };

/** A modal confirmation: nothing is sent until the operator confirms. */
function ConfirmDialog({ action, gid, onDone, onCancel }: { action: Action; gid: string; onDone: (message: string) => void; onCancel: () => void }) {
  const dialog = useRef<HTMLDialogElement>(null);
  const [reason, setReason] = useState('');
  const [compensate, setCompensate] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    dialog.current?.showModal();
  }, []);
  const forceStop = action.kind === 'force-stop';
  const confirm = async (event: Event) => {
    event.preventDefault();
    if (forceStop && reason.trim() === '') {
      setError('Say why: the reason goes into the audit log.');
      return;
    }
    setBusy(true);
    try {
      const body = forceStop ? { reason, compensate } : reason.trim() ? { reason } : {};
      const answer = await postJson<{ transaction: { status: string; phase: string }; audit: { seq: number } }>(`/v1/transactions/${encodeURIComponent(gid)}/${action.kind}`, body);
      dialog.current?.close();
      onDone(`${action.kind} done: now ${answer.transaction.status}/${answer.transaction.phase} (audit entry #${answer.audit.seq})`);
    } catch (failure) {
      setError(failure instanceof Error ? failure.message : String(failure));
      setBusy(false);
    }
  };
  return html`<dialog ref=${dialog} id="confirm-dialog" onCancel=${onCancel}>
    <form onSubmit=${confirm}>
      <h2>${forceStop ? 'Force-stop' : 'Retry now'} ${gid}?</h2>
      <p>${forceStop
        ? 'The transaction ends as failed. Without compensation nothing more is called: branches that ran stay as they are. With compensation it rolls back the way its mode does, where it still can.'
        : 'Pending calls go out now and the backoff starts over.'}</p>
      <label>Reason${forceStop ? ' (required, recorded in the audit log)' : ' (optional)'}<textarea id="confirm-reason" rows="3" value=${reason} onInput=${(event: Event) => { setReason((event.target as HTMLTextAreaElement).value); setError(null); }}></textarea></label>
      ${forceStop ? html`<p><label style="flex-direction:row;gap:.4rem"><input type="checkbox" id="confirm-compensate" checked=${compensate} onChange=${(event: Event) => setCompensate((event.target as HTMLInputElement).checked)} />Compensate (roll back) instead of stopping at once</label></p>` : null}
      <${ErrorLine} error=${error} />
      <div class="row">
        <button type="button" onClick=${() => { dialog.current?.close(); onCancel(); }}>Cancel</button>
        <button type="submit" id="confirm-ok" class=${forceStop ? 'danger' : 'primary'} disabled=${busy}>${forceStop ? 'Force-stop' : 'Retry now'}</button>
      </div>
    </form>
  </dialog>`;
}

export function TransactionPage({ gid }: { gid: string }) {
  const [action, setAction] = useState<Action | null>(null);
  const [message, setMessage] = useState<string | null>(null);
  const tx = usePoll(() => getJson<TxDetail>(`/v1/transactions/${encodeURIComponent(gid)}`), 2000, [gid]);
  const t = tx.data;
  const ended = t?.status === 'succeeded' || t?.status === 'failed';
  return html`<h1>Transaction <span class="mono">${gid}</span></h1>
    <${ErrorLine} error=${tx.error} />
    ${message ? html`<p class="card" id="action-result">${message}</p>` : null}
    ${t
      ? html`<div class="card">
          <div class="row" style="justify-content:space-between">
            <div>
              <span id="tx-status"><${Status} status=${t.status} /></span> <b>${t.mode}</b> · phase <b id="tx-phase">${t.phase}</b>
              ${t.reason ? html`<div>Reason: <span id="tx-reason">${t.reason}</span></div>` : null}
              <div class="muted">created ${ago(t.createdAt)} · updated ${ago(t.updatedAt)} · ${ended ? 'ended' : t.nextAttemptAt ? `next attempt ${ago(t.nextAttemptAt)}` : 'waits for its application'}</div>
              <div class="muted">retry limit ${t.options.retryLimit ?? 'none'} · request timeout ${t.options.requestTimeoutMs} ms · deadline ${t.options.timeoutToFailMs ? `${t.options.timeoutToFailMs} ms` : 'none'}${t.options.branchHeaderNames.length ? ` · headers: ${t.options.branchHeaderNames.join(', ')}` : ''}</div>
            </div>
            <div class="row">
              <button id="retry-now" disabled=${ended || !t.nextAttemptAt} onClick=${() => setAction({ kind: 'retry-now' })}>Retry now</button>
              <button id="force-stop" class="danger" disabled=${ended} onClick=${() => setAction({ kind: 'force-stop' })}>Force stop…</button>
            </div>
          </div>
        </div>
        <h2>Timeline</h2>
        <div class="card"><ul class="timeline" id="timeline">
          ${t.history.map((entry) => html`<li><b>${entry.status}</b> / ${entry.phase} <span class="muted" title=${entry.at}>${new Date(entry.at).toLocaleString()} (${ago(entry.at)})</span>${entry.reason ? html`<div class="excerpt">${entry.reason}</div>` : null}</li>`)}
        </ul></div>
        <h2>Branch calls</h2>
        <div class="card"><table id="ops-table">
          <thead><tr><th>branch</th><th>op</th><th>status</th><th>attempts</th><th>last error / answer</th><th>URL</th></tr></thead>
          <tbody>${t.branches.flatMap((branch) =>
            Object.entries(branch.ops).map(([name, op]) => html`<tr>
              <td>${branch.branchId}${branch.dependsOn?.length ? html`<div class="muted">after ${branch.dependsOn.join(', ')}</div>` : null}</td><td>${name}</td><td><${Status} status=${op.status} /></td><td>${op.attempts}</td>
              <td class="excerpt mono">${excerpt(op.lastError)}</td><td class="mono">${op.url}</td></tr>`),
          )}</tbody>
        </table></div>`
      : null}
    ${action ? html`<${ConfirmDialog} action=${action} gid=${gid} onCancel=${() => setAction(null)} onDone=${(text: string) => { setAction(null); setMessage(text); tx.reload(); }} />` : null}`;
}
