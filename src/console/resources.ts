// Locks, the key-value store and the service registry, through their existing read APIs.
// The locks API inspects one lock by name (it has no list), so the page looks locks up by name.
import { useState } from 'preact/hooks';
import { getJson, query } from './api.js';
import { html } from './html.js';
import { ago, ErrorLine, usePoll } from './util.js';

interface LockView {
  name: string;
  kind: string;
  permits: number;
  holders: Array<{ owner: string; mode: string; token: number; sessionBound: boolean; grantedAt: string; expiresAt: string; ttlRemainingMs: number }>;
  waiters: Array<{ owner: string; mode: string; fair: boolean; waitedMs: number; waitRemainingMs: number }>;
}

export function LocksPage() {
  const [name, setName] = useState('');
  const [shown, setShown] = useState('');
  const lock = usePoll(async () => (shown ? getJson<LockView>(`/v1/locks/${encodeURIComponent(shown)}`) : null), shown ? 2000 : 0, [shown]);
  const l = lock.data;
  return html`<h1>Locks</h1>
    <form class="card row" onSubmit=${(event: Event) => { event.preventDefault(); setShown(name.trim()); }}>
      <label>Lock name<input id="lock-name" value=${name} onInput=${(event: Event) => setName((event.target as HTMLInputElement).value)} /></label><button type="submit">Inspect</button>
    </form>
    <${ErrorLine} error=${lock.error} />
    ${l ? html`<div class="card" id="lock-view">
      <b class="mono">${l.name}</b> · ${l.kind} · permits ${l.permits}
      <h2>Holders</h2>
      <table><thead><tr><th>owner</th><th>mode</th><th>fencing token</th><th>session</th><th>granted</th><th>expires</th></tr></thead>
      <tbody>${l.holders.map((holder) => html`<tr><td>${holder.owner}</td><td>${holder.mode}</td><td class="mono">${holder.token}</td><td>${holder.sessionBound ? 'yes' : 'no'}</td><td>${ago(holder.grantedAt)}</td><td>in ${(holder.ttlRemainingMs / 1000).toFixed(1)} s</td></tr>`)}</tbody></table>
      ${l.holders.length === 0 ? html`<p class="muted">Free.</p>` : null}
      <h2>Queue</h2>
      <table><thead><tr><th>owner</th><th>mode</th><th>fair</th><th>waited</th><th>gives up in</th></tr></thead>
      <tbody>${l.waiters.map((waiter) => html`<tr><td>${waiter.owner}</td><td>${waiter.mode}</td><td>${waiter.fair ? 'yes' : 'no'}</td><td>${(waiter.waitedMs / 1000).toFixed(1)} s</td><td>${(waiter.waitRemainingMs / 1000).toFixed(1)} s</td></tr>`)}</tbody></table>
      ${l.waiters.length === 0 ? html`<p class="muted">Nobody waits.</p>` : null}
    </div>` : null}`;
}

interface KvPage {
  items: Array<{ key: string; value: unknown; version: number }>;
  nextCursor: string | null;
}

export function KvPage() {
  const [prefix, setPrefix] = useState('');
  const [cursors, setCursors] = useState<Array<string | null>>([null]);
  const cursor = cursors[cursors.length - 1];
  const page = usePoll(() => getJson<KvPage>(`/v1/kv${query({ prefix, cursor, limit: 50 })}`), 0, [prefix, cursor]);
  return html`<h1>Key-value</h1>
    <div class="card row"><label>Key prefix<input id="kv-prefix" value=${prefix} onChange=${(event: Event) => { setPrefix((event.target as HTMLInputElement).value); setCursors([null]); }} /></label>
      <button onClick=${page.reload}>Refresh</button></div>
    <${ErrorLine} error=${page.error} />
    <div class="card"><table id="kv-table"><thead><tr><th>key</th><th>version</th><th>value</th></tr></thead>
      <tbody>${(page.data?.items ?? []).map((item) => html`<tr><td class="mono">${item.key}</td><td>${item.version}</td><td class="mono excerpt">${JSON.stringify(item.value)}</td></tr>`)}</tbody></table>
      ${page.data && page.data.items.length === 0 ? html`<p class="muted">No keys${prefix ? ' with this prefix' : ''}.</p>` : null}
      <div class="pager"><button disabled=${cursors.length <= 1} onClick=${() => setCursors(cursors.slice(0, -1))}>← Back</button>
      <button disabled=${!page.data?.nextCursor} onClick=${() => page.data?.nextCursor && setCursors([...cursors, page.data.nextCursor])}>Next →</button></div>
    </div>`;
}

interface Registration {
  service: string;
  instanceId: string;
  url: string;
  weight: number;
  ttlMs: number;
  expiresAtMs: number;
}

export function RegistryPage() {
  const services = usePoll(() => getJson<{ services: Record<string, Registration[]> }>('/v1/services'), 3000, []);
  const entries = Object.entries(services.data?.services ?? {});
  return html`<h1>Service registry</h1>
    <${ErrorLine} error=${services.error} />
    ${services.data && entries.length === 0 ? html`<p class="card muted">No service has a live instance.</p>` : null}
    ${entries.map(([name, instances]) => html`<div class="card"><h2 class="mono">${name} <span class="muted">(${instances.length} live)</span></h2>
      <table><thead><tr><th>instance</th><th>URL</th><th>weight</th><th>TTL</th><th>expires</th></tr></thead>
      <tbody>${instances.map((instance) => html`<tr><td class="mono">${instance.instanceId}</td><td class="mono">${instance.url}</td><td>${instance.weight}</td><td>${instance.ttlMs} ms</td><td>${ago(new Date(instance.expiresAtMs).toISOString())}</td></tr>`)}</tbody></table></div>`)}`;
}
