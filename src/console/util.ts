// Hooks and formatting the pages share.
import { useEffect, useRef, useState } from 'preact/hooks';
import { html } from './html.js';

export interface Loaded<T> {
  data: T | null;
  error: string | null;
  reload: () => void;
}

/**
 * Loads with `load` now and every `everyMs` (0: once) while the page is shown, and again when
 * `deps` change; a slow answer never overwrites a newer one.
 */
export function usePoll<T>(load: () => Promise<T>, everyMs: number, deps: unknown[]): Loaded<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [tick, setTick] = useState(0);
  const generation = useRef(0);
  useEffect(() => {
    const mine = ++generation.current;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const run = () => {
      load().then(
        (value) => {
          if (generation.current !== mine) return;
          setData(value);
          setError(null);
        },
        (failure: unknown) => {
          if (generation.current === mine) setError(failure instanceof Error ? failure.message : String(failure));
        },
      ).finally(() => {
        if (generation.current === mine && everyMs > 0) timer = setTimeout(run, everyMs);
      });
    };
    run();
    return () => {
      generation.current += 1;
      if (timer) clearTimeout(timer);
    };
  }, [...deps, tick]);
  return { data, error, reload: () => setTick((value) => value + 1) };
}

export function ago(iso: string | null | undefined, nowMs = Date.now()): string {
  if (!iso) return '—';
  const deltaMs = nowMs - Date.parse(iso);
  const future = deltaMs < 0;
  const seconds = Math.abs(deltaMs) / 1000;
  const text = seconds < 60 ? `${seconds.toFixed(seconds < 10 ? 1 : 0)} s` : seconds < 3600 ? `${(seconds / 60).toFixed(1)} min` : seconds < 86400 ? `${(seconds / 3600).toFixed(1)} h` : `${(seconds / 86400).toFixed(1)} d`;
  return future ? `in ${text}` : `${text} ago`;
}

export function Status({ status }: { status: string }) {
  return html`<span class=${`status ${status}`}>${status}</span>`;
}

export function ErrorLine({ error }: { error: string | null }) {
  return error ? html`<p class="error" role="alert">${error}</p>` : null;
}

export function txHref(gid: string): string {
  return `#/tx/${encodeURIComponent(gid)}`;
}

export function excerpt(text: string | undefined, max = 300): string {
  if (!text) return '';
  return text.length > max ? `${text.slice(0, max)}…` : text;
}
