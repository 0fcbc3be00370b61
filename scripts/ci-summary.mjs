// Prints the closing line of a CI run, "N passed, N failed", from vitest's JSON report and the
// pack-and-install test's own count (passed as arguments: packPassed packFailed).
import { readFileSync } from 'node:fs';

const report = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const packPassed = Number(process.argv[3] ?? 0);
const packFailed = Number(process.argv[4] ?? 0);
const passed = report.numPassedTests + packPassed;
const failed = report.numFailedTests + packFailed;
const skipped = report.numPendingTests + report.numTodoTests;
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed ? 1 : 0);
