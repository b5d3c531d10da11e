// docs/configuration.md is what `fleetd config --markdown` prints, byte for byte: the docs cannot drift
// from the settings table in lib/core/config.c.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { describeRun, runFleetd, SOURCE_DIR, TEST_TIMEOUT_MS } from './lib/harness.mjs';

test('docs/configuration.md equals `fleetd config --markdown`', { timeout: TEST_TIMEOUT_MS }, async () => {
    const path = join(SOURCE_DIR(), 'docs', 'configuration.md');
    assert.ok(existsSync(path), `${path} is missing: generate it with \`fleetd config --markdown > docs/configuration.md\``);
    const run = await runFleetd(['config', '--markdown']);
    assert.equal(run.code, 0, describeRun(run));
    assert.equal(run.stderr, '', 'nothing on stderr');
    const doc = readFileSync(path, 'utf8');
    if (run.stdout !== doc) {
        // Name the first differing line: a whole-file diff of a wide table is unreadable.
        const a = run.stdout.split('\n');
        const b = doc.split('\n');
        let i = 0;
        while (i < a.length && i < b.length && a[i] === b[i]) i++;
        assert.fail(
            `docs/configuration.md differs from \`fleetd config --markdown\` at line ${i + 1}:\n` +
                `  fleetd: ${JSON.stringify(a[i])}\n  docs:   ${JSON.stringify(b[i])}\n` +
                'regenerate it with `fleetd config --markdown > docs/configuration.md`',
        );
    }
});
