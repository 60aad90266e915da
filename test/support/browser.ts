// A real browser for the console tests: Debian's chromium driven by playwright-core (whose own
// browser download cannot run here). Outside CI a missing chromium skips the test loudly;
// with CI=true it fails, because .ci/run installs it.
import fs from 'node:fs';
import type { TestContext } from 'node:test';
import { chromium, type BrowserContext } from 'playwright-core';
import { tempDir } from './coordinator.js';

export const chromiumPath = '/usr/bin/chromium';

const chromiumArgs = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

export function requireChromium(t: TestContext): boolean {
  try {
    fs.accessSync(chromiumPath, fs.constants.X_OK);
    return true;
  } catch {
    if (process.env.CI === 'true') throw new Error(`${chromiumPath} is missing; CI must install chromium (see .ci/run and scripts/services.sh)`);
    const message = `!!! SKIPPED: ${chromiumPath} is missing; install Debian's chromium (npm run services) to run the browser tests !!!`;
    console.error(message);
    t.skip(message);
    return false;
  }
}

/** A browser with a fresh profile of its own, closed (and the profile removed) when the test ends. */
export async function openBrowser(t: TestContext): Promise<BrowserContext> {
  const profile = tempDir('tandem-chromium-profile-');
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    args: chromiumArgs,
    viewport: { width: 1280, height: 800 },
  });
  t.after(async () => {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  });
  return context;
}
