// The console's entry: hash routing (#/transactions, #/tx/<gid>, #/stuck, …), the navigation
// bar and the API token field for coordinators with authentication on.
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { onUnauthorized, setToken, token } from './api.js';
import { ChartsPage } from './charts.js';
import { html } from './html.js';
import { AuditPage, StuckPage } from './operations.js';
import { KvPage, LocksPage, RegistryPage } from './resources.js';
import { TransactionPage, TransactionsPage } from './transactions.js';

const pages = [
  ['transactions', 'Transactions'],
  ['stuck', 'Stuck'],
  ['locks', 'Locks'],
  ['kv', 'Key-value'],
  ['registry', 'Registry'],
  ['charts', 'Charts'],
  ['audit', 'Audit'],
] as const;

function useHash(): string {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const changed = () => setHash(location.hash);
    addEventListener('hashchange', changed);
    return () => removeEventListener('hashchange', changed);
  }, []);
  return hash;
}

function Login() {
  const [value, setValue] = useState('');
  const [needed, setNeeded] = useState(false);
  const [has, setHas] = useState(token() !== null);
  useEffect(() => onUnauthorized(() => setNeeded(true)), []);
  if (has) return html`<span class="login">token set <button onClick=${() => { setToken(null); setHas(false); }}>Forget</button></span>`;
  return html`<form class="login" onSubmit=${(event: Event) => { event.preventDefault(); setToken(value); setHas(true); setNeeded(false); location.reload(); }}>
    ${needed ? html`<span>This coordinator needs an API token:</span>` : null}
    <input type="password" id="token" placeholder="API token" value=${value} onInput=${(event: Event) => setValue((event.target as HTMLInputElement).value)} />
    <button type="submit">Use</button>
  </form>`;
}

function page(hash: string) {
  const [, name = 'transactions', ...rest] = hash.replace(/^#/, '').split('/');
  if (name === 'tx' && rest.length > 0) return { name: 'transactions', view: html`<${TransactionPage} gid=${decodeURIComponent(rest.join('/'))} />` };
  switch (name) {
    case 'stuck':
      return { name, view: html`<${StuckPage} />` };
    case 'locks':
      return { name, view: html`<${LocksPage} />` };
    case 'kv':
      return { name, view: html`<${KvPage} />` };
    case 'registry':
      return { name, view: html`<${RegistryPage} />` };
    case 'charts':
      return { name, view: html`<${ChartsPage} />` };
    case 'audit':
      return { name, view: html`<${AuditPage} />` };
    default:
      return { name: 'transactions', view: html`<${TransactionsPage} />` };
  }
}

function App() {
  const hash = useHash();
  const current = page(hash);
  return html`<header>
      <strong>Tandem</strong>
      <nav>${pages.map(([name, label]) => html`<a href=${`#/${name}`} class=${current.name === name ? 'active' : ''}>${label}</a>`)}</nav>
      <${Login} />
    </header>
    <main key=${hash}>${current.view}</main>`;
}

const root = document.getElementById('app');
if (root) {
  root.textContent = '';
  render(html`<${App} />`, root);
}
