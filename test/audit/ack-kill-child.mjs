// Child process for the strict/async kill -9 test: appends one AuditEvent in the given mode, prints
// "acked <id>" once the append resolved (the point where caregate would release the answer), and
// kills itself with SIGKILL right there, before the event loop takes another turn.
import process from 'node:process';

// Usage: node ack-kill-child.mjs <compiled src dir> <spool dir> <strict|async>
const [srcDir, spoolDir, mode] = process.argv.slice(2);
const { openSpool } = await import(`${srcDir}/audit/spool.js`);

const spool = await openSpool({ dir: spoolDir, mode });
const id = `ack-kill-${mode}`;
await spool.append([{ resourceType: 'AuditEvent', id, type: { code: 'rest' }, recorded: new Date().toISOString(), agent: [], source: { observer: {} } }]);
// Pipes are written synchronously on Linux: the parent reads this line even though we die next.
process.stdout.write(`acked ${id}\n`);
process.kill(process.pid, 'SIGKILL');
