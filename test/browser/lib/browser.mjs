// Shared by the browser tests: Debian's chromium, headless through playwright-core, that reaches only
// this machine's fleetd, with a screenshot kept as a test artifact whatever the outcome.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { chromium } from 'playwright-core';
import { FLEETD_BIN } from '../../integration/lib/harness.mjs';

const CHROMIUM = process.env.FLEETD_CHROMIUM || '/usr/bin/chromium';

function artifactPath(name) {
    const dir = join(process.env.FLEETD_BUILD_DIR || dirname(FLEETD_BIN()), 'test-artifacts');
    mkdirSync(dir, { recursive: true });
    return join(dir, name);
}

/**
 * Headless chromium that can reach this machine's fleetd and nothing else (no tiles, no updates).
 * When the test ends, a screenshot of the page goes to <build>/test-artifacts/NAME (whatever happened:
 * the picture is what tells a failure apart), then the browser closes.
 */
export async function openBrowser(t, name) {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: install Debian's chromium (scripts/test does) or set FLEETD_CHROMIUM`);
    const browser = await chromium.launch({
        executablePath: CHROMIUM,
        headless: true,
        // chromium's sandbox refuses to start as root
        args: process.getuid && process.getuid() === 0 ? ['--no-sandbox'] : [],
    });
    const context = await browser.newContext({ viewport: { width: 1280, height: 760 } });
    const outside = [];
    await context.route('**/*', (route) => {
        const url = route.request().url();
        if (/^(https?|wss?):\/\/127\.0\.0\.1[:/]/.test(url)) return route.continue();
        outside.push(url);
        return route.abort();
    });
    const page = await context.newPage();
    t.after(async () => {
        try {
            const shot = artifactPath(name);
            await page.screenshot({ path: shot });
            console.log(`screenshot: ${shot}`);
        } finally {
            await browser.close();
        }
    });
    const problems = [];
    page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
    page.on('console', (msg) => {
        if (/Content Security Policy/i.test(msg.text())) problems.push(`CSP: ${msg.text()}`);
    });
    return { browser, page, problems, outside };
}

/**
 * until(page, fn, what, arg, timeout): page.waitForFunction with a failure that says what was awaited
 * and what the page showed (describe runs in the page and returns what is worth showing).
 */
export function makeUntil(describe) {
    return async function until(page, fn, what, arg = null, timeout = 10_000) {
        try {
            await page.waitForFunction(fn, arg, { timeout });
        } catch (err) {
            const shown = await page.evaluate(describe).catch(() => ({}));
            throw new Error(`timed out after ${timeout} ms waiting for ${what}; the page shows ${JSON.stringify(shown)}`, { cause: err });
        }
    };
}
