// htm bound to Preact's h: JSX-like templates in plain template literals, so the console needs
// no JSX compiler and no bundler.
import { h, type VNode } from 'preact';
import htm from 'htm';

/**
 * htm's typings are CommonJS-shaped, so under NodeNext TypeScript sees its default import as
 * the module object; the browser loads htm's ES module, whose default export is the function.
 */
interface Htm {
  bind<R>(factory: typeof h): (strings: TemplateStringsArray, ...values: unknown[]) => R | R[];
}

export const html = (htm as unknown as Htm).bind<VNode>(h);
